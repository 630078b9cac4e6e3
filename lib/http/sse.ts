// Server-sent events from a request's handle: one block per token in the route's format, then its end
// (or its error). While no token comes (the request waits for pages, or is swapped out) a comment line
// goes out every keepAliveMs, so proxies and clients with idle timeouts keep the stream open.
// A client that goes away cancels the request: its pages are freed now, not when it would have ended.
import type { RequestHandle, RequestResult, TokenEvent } from "../scheduler/request";

/** How a route spells its events; each returns whole SSE blocks (see sseData, sseEvent). */
export interface SseFormat {
  token(event: TokenEvent): string;
  end(result: RequestResult): string;
  error(error: Error): string;
}

export const KEEP_ALIVE = ": keep-alive\n\n";

export function sseData(data: unknown): string {
  return `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\n${sseData(data)}`;
}

export const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache" };

export interface SseOptions {
  keepAliveMs: number;
  /** Called once the stream has ended, whichever way (drain waits for it). */
  onClose?: () => void;
}

export function sseStream(handle: RequestHandle, format: SseFormat, options: SseOptions): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  let open = true;
  return new ReadableStream({
    async start(controller) {
      const send = (text: string) => {
        if (open) controller.enqueue(encoder.encode(text));
      };
      const tokens = handle[Symbol.asyncIterator]();
      try {
        for (;;) {
          const next = await pinging(tokens.next(), options.keepAliveMs, () => send(KEEP_ALIVE));
          if (next.done) break;
          send(format.token(next.value));
        }
        send(format.end(await handle.done));
      } catch (error) {
        send(format.error(error as Error));
      }
      if (open) {
        open = false;
        controller.close();
      }
      options.onClose?.();
    },
    cancel() {
      open = false;
      handle.cancel(); // ends the handle, so start()'s loop ends too
    },
  });
}

/** Awaits `promise`, calling ping every `ms` until it settles. */
async function pinging<T>(promise: Promise<T>, ms: number, ping: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    timer = setTimeout(() => {
      ping();
      arm();
    }, ms);
  };
  arm();
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
  }
}
