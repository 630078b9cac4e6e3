// The byte layouts of the ABI structs that TypeScript packs or unpacks (cuda/include/persistentkv.h), in
// one place. Offsets follow C's natural alignment, so each layout is its header struct field for field;
// test/ffi/layouts.test.ts checks every one against the header text and against the native *_size().
type Scalar = "i32" | "f32" | "i64";
/** A field's C type: int32_t, float, int64_t, or a NUL-terminated char array of the given length. */
export type FieldType = Scalar | { chars: number };
type Fields = Record<string, FieldType>;
type ValueOf<T extends FieldType> = T extends { chars: number } ? string : number;
export type StructValues<F extends Fields> = { [K in keyof F]: ValueOf<F[K]> };

const SCALAR_BYTES: Record<Scalar, number> = { i32: 4, f32: 4, i64: 8 };
const utf8 = { encoder: new TextEncoder(), decoder: new TextDecoder() };

function sizeAndAlign(type: FieldType): [size: number, align: number] {
  return typeof type === "string" ? [SCALAR_BYTES[type], SCALAR_BYTES[type]] : [type.chars, 1];
}

export class StructLayout<F extends Fields> {
  /** Field name -> byte offset. */
  readonly offsets: { readonly [K in keyof F]: number };
  readonly size: number;
  readonly #entries: [name: keyof F & string, type: FieldType, offset: number][] = [];
  #read: ((view: DataView, text: typeof readText) => unknown) | undefined;

  constructor(
    /** The C struct's name, e.g. "pkv_plan_info". */
    readonly name: string,
    readonly fields: F,
  ) {
    let offset = 0,
      align = 1;
    const offsets: Record<string, number> = {};
    for (const [field, type] of Object.entries(fields)) {
      const [size, fieldAlign] = sizeAndAlign(type);
      offset = Math.ceil(offset / fieldAlign) * fieldAlign;
      offsets[field] = offset;
      this.#entries.push([field, type, offset]);
      offset += size;
      align = Math.max(align, fieldAlign);
    }
    this.offsets = offsets as { [K in keyof F]: number };
    this.size = Math.ceil(offset / align) * align;
  }

  /** A zeroed buffer of the struct's size, for the library to fill. */
  alloc(): Uint8Array {
    return new Uint8Array(this.size);
  }

  /** The struct's bytes for `values`; pass the result to the native call itself (not ptr(): it is small). */
  encode(values: StructValues<F>): Uint8Array {
    const bytes = this.alloc();
    const view = new DataView(bytes.buffer);
    for (const [field, type, offset] of this.#entries) {
      const value = values[field];
      if (type === "i32") view.setInt32(offset, value as number, true);
      else if (type === "f32") view.setFloat32(offset, value as number, true);
      else if (type === "i64") view.setBigInt64(offset, BigInt(value as number), true);
      else {
        const text = utf8.encoder.encode(value as string);
        if (text.length >= type.chars)
          throw new RangeError(`${this.name}.${field}: "${value}" exceeds ${type.chars - 1} bytes`);
        bytes.set(text, offset);
      }
    }
    return bytes;
  }

  /** The values in `bytes` (a buffer of at least `size` bytes that the library filled). */
  decode(bytes: Uint8Array): StructValues<F> {
    return this.decoder(bytes)();
  }

  /**
   * A reader of the values in `bytes`, for a buffer the library fills again and again (the plan info of
   * every step): it keeps the view, and reads every field in one generated object literal. A loop over
   * the fields with BigInt conversions cost about 0.2 us per call; this costs a few tens of ns.
   */
  decoder(bytes: Uint8Array): () => StructValues<F> {
    if (bytes.byteLength < this.size)
      throw new RangeError(`${this.name} needs ${this.size} bytes, got ${bytes.byteLength}`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#read ??= this.#compileRead();
    const read = this.#read;
    return () => read(view, readText) as StructValues<F>;
  }

  // The generated source holds only quoted field names and numbers (offsets, lengths).
  #compileRead(): (view: DataView, text: typeof readText) => unknown {
    const fields = this.#entries.map(([field, type, o]) => {
      let read: string;
      if (type === "i32") read = `v.getInt32(${o}, true)`;
      else if (type === "f32") read = `v.getFloat32(${o}, true)`;
      // Exact below 2^53 (sizes and counts), without a BigInt per field.
      else if (type === "i64") read = `v.getUint32(${o}, true) + v.getInt32(${o + 4}, true) * 4294967296`;
      else read = `text(v, ${o}, ${Number(type.chars)})`;
      return `${JSON.stringify(field)}: ${read}`;
    });
    return new Function("v", "text", `return { ${fields.join(", ")} };`) as (
      view: DataView,
      text: typeof readText,
    ) => unknown;
  }
}

/** A NUL-terminated UTF-8 string of at most `length` bytes at `offset`. */
function readText(view: DataView, offset: number, length: number): string {
  const chars = new Uint8Array(view.buffer, view.byteOffset + offset, length);
  const end = chars.indexOf(0);
  return utf8.decoder.decode(end < 0 ? chars : chars.subarray(0, end));
}

// Field names are the header's, in camelCase; the order is the header's.

export const DEVICE_INFO = new StructLayout("pkv_device_info", {
  name: { chars: 256 },
  totalMemory: "i64",
  l2Bytes: "i64",
  backend: "i32",
  device: "i32",
  multiprocessors: "i32",
  ccMajor: "i32",
  ccMinor: "i32",
  maxSharedPerBlock: "i32",
  maxSharedPerSm: "i32",
  maxThreadsPerSm: "i32",
});

export const ATTENTION_SHAPE = new StructLayout("pkv_attention_shape", {
  numQoHeads: "i32",
  numKvHeads: "i32",
  headDim: "i32",
  pageSize: "i32",
  dtype: "i32",
  smScale: "f32",
});

export const KV_CONFIG = new StructLayout("pkv_kv_config", {
  numLayers: "i32",
  numPages: "i32",
  pageSize: "i32",
  numKvHeads: "i32",
  headDim: "i32",
  dtype: "i32",
  maxSequences: "i32",
  maxPagesPerSequence: "i32",
  swapPages: "i32",
  reserved: "i32",
});

export const DECODE_CONFIG = new StructLayout("pkv_decode_config", {
  numQoHeads: "i32",
  numKvHeads: "i32",
  headDim: "i32",
  pageSize: "i32",
  dtype: "i32",
  policy: "i32",
  maxBatch: "i32",
  smScale: "f32",
});

export const PLAN_INFO = new StructLayout("pkv_plan_info", {
  totalTokens: "i64",
  kvBytes: "i64",
  planId: "i32",
  kernel: "i32",
  batch: "i32",
  numTasks: "i32",
  maxSplits: "i32",
  grid: "i32",
  uniqueKvBytes: "i64",
  sharedTasks: "i32",
  sharedRows: "i32",
  loader: "i32",
});

export const ENGINE_SETTINGS = new StructLayout("pkv_engine_settings", {
  size: "i32",
  math: "i32",
  loader: "i32",
  tailPercent: "i32",
  tailMinSplits: "i32",
  tailEndTiles: "i32",
  claimMinTiles: "i32",
  sharedPrefix: "i32",
});

// Interop: where one layer of a pool keeps its pages (pkv_kvpool_layout_get).
export const KVPOOL_LAYOUT = new StructLayout("pkv_kvpool_layout", {
  k: "i64",
  v: "i64",
  pageBytes: "i64",
  headBytes: "i64",
  tokenBytes: "i64",
  numPages: "i32",
  pageSize: "i32",
  numKvHeads: "i32",
  headDim: "i32",
  elemBytes: "i32",
  dtype: "i32",
});

/** Every layout above, for the checks against the header. */
export const LAYOUTS = [
  DEVICE_INFO,
  ATTENTION_SHAPE,
  KV_CONFIG,
  DECODE_CONFIG,
  PLAN_INFO,
  ENGINE_SETTINGS,
  KVPOOL_LAYOUT,
] as const;

/** Throws when the library's sizeof(struct) differs from the layout's (a library built from another header). */
export function checkNativeSize(layout: StructLayout<Fields>, nativeSize: number): void {
  if (nativeSize !== layout.size)
    throw new Error(
      `${layout.name} is ${nativeSize} bytes in the library and ${layout.size} in lib/ffi/layouts.ts: rebuild it`,
    );
}
