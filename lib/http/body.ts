// Reading a request's JSON body with a size bound: a body longer than any request the pool could hold
// is refused from its declared length, before it is read.
import { ApiError } from "./api-error";

export async function readJson(req: Request, maxBytes: number): Promise<unknown> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > maxBytes)
    throw new ApiError(400, `a body of ${declared} bytes is longer than any prompt the pool can hold`, {
      code: "body_too_long",
    });
  try {
    return await req.json();
  } catch (error) {
    throw new ApiError(400, `the body is not JSON: ${(error as Error).message}`, { code: "invalid_json" });
  }
}

/** The longest body a request that fits a pool of `tokens` can need: ids of up to 10 digits and a comma each, plus the other fields. */
export function maxBodyBytes(tokens: number): number {
  return 4096 + 11 * tokens;
}
