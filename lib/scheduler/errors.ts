// Errors the scheduler delivers to one request (through its handle), never thrown out of the loop.
import { OutOfPagesError, PkvError, Status } from "../errors";

/** The request needs more pages than the pool (or one block-table row) holds, or more context than the model takes: it could never run. */
export class RequestTooLargeError extends OutOfPagesError {
  constructor(message: string) {
    super(Status.OUT_OF_PAGES, message);
  }
}

/** A step failed outside PersistentKV (the model callback threw); every request of that step gets it. */
export class StepFailedError extends PkvError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Status.INTERNAL, message);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** The model returned something the step cannot use (sample() gave too few, too many or invalid tokens). */
export class ModelOutputError extends StepFailedError {}
