// Ownership of native objects: explicit dispose (or `using`), with a FinalizationRegistry only as a
// safety net. A runtime's disposal frees its children natively; their wrappers then refuse all use.
import type { Pointer } from "bun:ffi";
import { BadStateError, Status } from "./errors";

interface Token {
  handle: Pointer;
  alive: boolean;
  destroy: (handle: Pointer) => number;
  release?: () => void; // drops what depends on the native memory (views), without touching the wrapper
}

const safetyNet = new FinalizationRegistry<Token>((token) => {
  if (!token.alive) return;
  token.alive = false;
  token.release?.();
  token.destroy(token.handle);
});

/** Where children register so that their owner's disposal can retire them. */
export interface Owner {
  adopt(token: Token): void;
  forget(token: Token): void;
}

export abstract class NativeObject {
  readonly #token: Token;
  readonly #owner: Owner | undefined;
  readonly #what: string;

  protected constructor(
    handle: Pointer,
    destroy: (handle: Pointer) => number,
    what: string,
    owner?: Owner,
    release?: () => void,
  ) {
    this.#token = { handle, alive: true, destroy, release };
    this.#owner = owner;
    this.#what = what;
    owner?.adopt(this.#token);
    safetyNet.register(this, this.#token, this);
  }

  /** The native handle; throws BadStateError once disposed (or once its runtime was). */
  get handle(): Pointer {
    if (!this.#token.alive) throw new BadStateError(Status.BAD_STATE, `${this.#what} was disposed`);
    return this.#token.handle;
  }

  get disposed(): boolean {
    return !this.#token.alive;
  }

  /** Frees the native object. Calling it again does nothing. */
  dispose(): void {
    if (!this.#token.alive) return;
    this.#token.alive = false;
    this.#token.release?.();
    safetyNet.unregister(this);
    this.#owner?.forget(this.#token);
    this.#token.destroy(this.#token.handle);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Retires a token without freeing natively (its owner already did). */
  static retire(token: Token): void {
    token.alive = false;
    token.release?.();
  }
}

export type { Token };
