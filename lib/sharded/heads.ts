// Which KV heads each device holds. Heads split evenly (device s holds heads s*h .. s*h+h-1, h = Hkv/N);
// with more devices than KV heads each head is replicated on N/Hkv devices, as vLLM does when tensor
// parallelism exceeds the KV head count: every device still holds one head and its share of the query
// heads, attention still needs no communication, and the pools hold no more tokens than one head's
// device would. Any other count would leave devices with unequal heads (unequal plans, unequal memory),
// so it is refused.
import { InvalidArgumentError, Status } from "../errors";

export interface HeadLayout {
  readonly shards: number;
  readonly numKvHeads: number;
  /** KV heads each device's pool holds. */
  readonly kvHeadsPerShard: number;
  /** Devices holding each KV head: 1 when heads are split, N / numKvHeads when replicated. */
  readonly replicas: number;
}

export function layoutHeads(op: string, numKvHeads: number, shards: number): HeadLayout {
  const fits = shards <= numKvHeads ? numKvHeads % shards === 0 : shards % numKvHeads === 0;
  if (!fits)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${op}: ${numKvHeads} KV heads neither split evenly over ${shards} devices nor replicate evenly onto them; ` +
        "use a device count that divides the KV heads, or a multiple of them",
    );
  return shards <= numKvHeads
    ? { shards, numKvHeads, kvHeadsPerShard: numKvHeads / shards, replicas: 1 }
    : { shards, numKvHeads, kvHeadsPerShard: 1, replicas: shards / numKvHeads };
}

/** The model's KV head that device `shard` holds as its local head `local`. */
export function kvHeadOf(layout: HeadLayout, shard: number, local: number): number {
  return layout.replicas > 1 ? Math.floor(shard / layout.replicas) : shard * layout.kvHeadsPerShard + local;
}

/**
 * Query heads per device (the caller's tensor-parallel layout: device s takes query heads
 * s*q .. s*q+q-1). Each device's query heads must all attend to its own KV heads.
 */
export function queryHeadsPerShard(op: string, layout: HeadLayout, numQoHeads: number): number {
  const group = numQoHeads / layout.numKvHeads;
  if (!Number.isInteger(group) || numQoHeads % layout.shards !== 0 || !Number.isInteger(group / layout.replicas))
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${op}: ${numQoHeads} query heads over ${layout.numKvHeads} KV heads do not split over ${layout.shards} devices ` +
        "(the query heads must be a multiple of the KV heads and of the device count, each device's within its KV heads' groups)",
    );
  return numQoHeads / layout.shards;
}

/**
 * Copies head-major blocks between a whole [rows][heads][width] array and one device's
 * [rows][headsPerShard][width] part, which holds the model's heads headOf(0..headsPerShard-1).
 */
export function copyHeads(
  whole: Uint16Array,
  part: Uint16Array,
  rows: number,
  heads: number,
  headsPerShard: number,
  width: number,
  headOf: (local: number) => number,
  toPart: boolean,
): void {
  for (let r = 0; r < rows; r++)
    for (let l = 0; l < headsPerShard; l++) {
      const at = (r * heads + headOf(l)) * width;
      const partAt = (r * headsPerShard + l) * width;
      if (toPart) part.set(whole.subarray(at, at + width), partAt);
      else whole.set(part.subarray(partAt, partAt + width), at);
    }
}
