// What the HTTP tests use as a client would: a server-sent-events parser that reads a response body as it
// arrives (events, comments, data lines joined), and helpers to post completions and wait for a state.

/** One SSE event: its name (if any), its data lines joined by "\n"; `comments` counts the comment lines before it. */
export interface SseEvent {
  event: string | undefined;
  data: string;
  comments: number;
}

/** Parses a text/event-stream body incrementally (lines may end in \n, \r\n or \r; blank lines end events). */
export async function* readSse(response: Response): AsyncGenerator<SseEvent> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data: string[] = [];
  let event: string | undefined;
  let comments = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    for (let eol = buffer.search(/\r\n|\r|\n/); eol >= 0; eol = buffer.search(/\r\n|\r|\n/)) {
      const line = buffer.slice(0, eol);
      buffer = buffer.slice(eol + (buffer.startsWith("\r\n", eol) ? 2 : 1));
      if (line === "") {
        // A blank line after comments alone dispatches nothing: those comments count toward the next event.
        if (data.length > 0 || event !== undefined) {
          yield { event, data: data.join("\n"), comments };
          comments = 0;
        }
        data = [];
        event = undefined;
      } else if (line.startsWith(":")) comments++;
      else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(text);
        else if (field === "event") event = text;
      }
    }
    if (done) break;
  }
  if (buffer !== "") throw new Error(`the stream ended inside a line: ${JSON.stringify(buffer)}`);
}

export async function collectSse(response: Response): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const e of readSse(response)) events.push(e);
  return events;
}

export function postJson(url: URL, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(new URL(path, url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal,
  });
}

export async function waitFor(condition: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
}

/** The completion chunks of a streamed /v1/completions answer: every data event but [DONE], parsed. */
export interface CompletionChunk {
  id: string;
  object: string;
  model: string;
  choices: { index: number; text: string; token_ids: number[]; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  error?: { message: string; type: string };
}

/** Starts `bun examples/serve.ts` on a free port and waits for its banner; the caller kills it. */
export async function spawnExampleServer(env: Record<string, string> = {}) {
  const root = new URL("../..", import.meta.url).pathname;
  const proc = Bun.spawn([process.execPath, "examples/serve.ts"], {
    cwd: root,
    env: { ...process.env, PORT: "0", ...env },
    stdout: "pipe",
  });
  const reader = proc.stdout.getReader();
  let banner = "";
  while (!banner.includes("try: curl")) {
    const { value, done } = await reader.read();
    if (done) break;
    banner += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const url = banner.match(/serving on (http:\/\/\S+)/)?.[1];
  return { proc, banner, url: url === undefined ? undefined : new URL(url) };
}
