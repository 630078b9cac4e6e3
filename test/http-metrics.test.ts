// GET /metrics read as Prometheus reads it: a parser of the text format (0.0.4) that refuses any line it
// cannot parse, a sample without a declared family, or a histogram whose buckets are not cumulative or
// disagree with its count; and the values move as requests run (gauges while running, counters and
// histograms after).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type RunningServer, startServer } from "../lib/http/server";
import { postJson, readSse, waitFor } from "./support/http-client";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)/y;

function parseValue(text: string, line: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  if (text === "NaN") return Number.NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value in: ${line}`);
  return Number(text);
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const start = LABEL.lastIndex;
    const m = LABEL.exec(text);
    if (!m || m.index !== start) throw new Error(`bad labels in: ${line}`);
    if (m[1]! in labels) throw new Error(`label ${m[1]} repeated in: ${line}`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    if (m[3] === "") break;
  }
  return labels;
}

/** The families of an exposition; throws on the first line Prometheus would reject. */
function parsePrometheus(text: string): Map<string, Family> {
  if (!text.endsWith("\n")) throw new Error("the exposition must end with a newline");
  const families = new Map<string, Family>();
  const familyOf = (sample: string) => {
    for (const suffix of ["_bucket", "_sum", "_count", ""]) {
      const base = suffix && sample.endsWith(suffix) ? sample.slice(0, -suffix.length) : sample;
      const f = families.get(base);
      if (f && (suffix === "" || f.type === "histogram")) return f;
    }
    throw new Error(`sample ${sample} has no # TYPE line before it`);
  };
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("# HELP ") || line.startsWith("# TYPE ")) {
      const [, kind, name, ...rest] = line.split(" ");
      if (!NAME.test(name!)) throw new Error(`bad metric name in: ${line}`);
      const f = families.get(name!) ?? { type: "untyped", help: "", samples: [] };
      if (kind === "TYPE") {
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest.join(" ")))
          throw new Error(`bad type in: ${line}`);
        if (f.samples.length > 0) throw new Error(`# TYPE after samples in: ${line}`);
        f.type = rest.join(" ");
      } else f.help = rest.join(" ");
      families.set(name!, f);
      continue;
    }
    if (line.startsWith("#") || line.trim() === "") continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`unparsable line: ${line}`);
    const family = familyOf(m[1]!);
    family.samples.push({ name: m[1]!, labels: m[2] ? parseLabels(m[2], line) : {}, value: parseValue(m[3]!, line) });
  }
  for (const [name, f] of families) {
    if (f.samples.length === 0) throw new Error(`family ${name} has no samples`);
    if (f.type === "counter" && !name.endsWith("_total")) throw new Error(`counter ${name} does not end in _total`);
    if (f.type === "counter" && f.samples.some((s) => s.value < 0)) throw new Error(`counter ${name} is negative`);
    if (f.type === "histogram") checkHistogram(name, f);
  }
  return families;
}

function checkHistogram(name: string, f: Family): void {
  const buckets = f.samples.filter((s) => s.name === `${name}_bucket`);
  const bounds = buckets.map((b) => parseValue(b.labels.le ?? "missing", `${name}_bucket`));
  for (let i = 1; i < buckets.length; i++) {
    if (!(bounds[i]! > bounds[i - 1]!)) throw new Error(`${name}: le bounds not increasing`);
    if (buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${name}: buckets not cumulative`);
  }
  if (bounds.at(-1) !== Number.POSITIVE_INFINITY) throw new Error(`${name}: no +Inf bucket`);
  const count = f.samples.find((s) => s.name === `${name}_count`);
  const sum = f.samples.find((s) => s.name === `${name}_sum`);
  if (!count || !sum) throw new Error(`${name}: _count or _sum missing`);
  if (count.value !== buckets.at(-1)!.value) throw new Error(`${name}: +Inf bucket differs from _count`);
}

let server: RunningServer;
beforeAll(() => {
  // Small enough that concurrent requests preempt each other.
  server = startServer({ port: 0, sizes: { numPages: 48, swapPages: 8, maxBatch: 16 } });
});
afterAll(() => server.stop());

async function scrape() {
  const r = await fetch(new URL("/metrics", server.url));
  expect(r.status).toBe(200);
  expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const families = parsePrometheus(await r.text());
  const value = (name: string, labels: Record<string, string> = {}) => {
    const f = families.get(name.replace(/_(bucket|sum|count)$/, "")) ?? families.get(name);
    const s = f?.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    if (!s) throw new Error(`no sample ${name} ${JSON.stringify(labels)}`);
    return s.value;
  };
  return { families, value };
}

describe("the parser in this test", () => {
  test("refuses what Prometheus refuses", () => {
    const good = "# HELP a_total x\n# TYPE a_total counter\na_total 3\n";
    expect(parsePrometheus(good).get("a_total")!.samples[0]!.value).toBe(3);
    for (const broken of [
      "a_total 3\n", // no TYPE
      "# TYPE a_total counter\na_total three\n",
      "# TYPE a_total counter\na_total 3", // no final newline
      '# TYPE a gauge\na{x="1",x="2"} 1\n',
      "# TYPE a gauge\na{x=1} 1\n",
      "# TYPE a counter\na 1\n", // counter not _total
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    ])
      expect(() => parsePrometheus(broken), broken).toThrow();
  });
});

describe("GET /metrics", () => {
  test("every line parses, and every family the brief names is there with the right type", async () => {
    const { families } = await scrape();
    const expected: Record<string, string> = {
      pkv_requests_running: "gauge",
      pkv_requests_waiting: "gauge",
      pkv_requests_swapped: "gauge",
      pkv_kv_pages_used: "gauge",
      pkv_kv_pages_free: "gauge",
      pkv_kv_pages_shared: "gauge",
      pkv_kv_pages_cached: "gauge",
      pkv_kv_pages_total: "gauge",
      pkv_prefix_hit_tokens_total: "counter",
      pkv_preemptions_total: "counter",
      pkv_generation_tokens_total: "counter",
      pkv_requests_finished_total: "counter",
      pkv_step_duration_seconds: "histogram",
      pkv_time_to_first_token_seconds: "histogram",
      pkv_inter_token_latency_seconds: "histogram",
    };
    for (const [name, type] of Object.entries(expected)) {
      expect(families.get(name)?.type, name).toBe(type);
      expect(families.get(name)!.help.length, name).toBeGreaterThan(0);
    }
  });

  test("gauges follow a running request; counters and histograms count what ran", async () => {
    const before = await scrape();
    expect(before.value("pkv_requests_running")).toBe(0);
    expect(before.value("pkv_kv_pages_used")).toBe(0);
    const total = before.value("pkv_kv_pages_total");
    expect(before.value("pkv_kv_pages_free") + before.value("pkv_kv_pages_cached")).toBe(total);

    // One long request: while it streams, it is running and holds pages.
    const response = await postJson(server.url, "/v1/completions", {
      prompt_length: 100,
      max_tokens: 400,
      stream: true,
    });
    const events = readSse(response);
    await events.next();
    const during = await scrape();
    expect(during.value("pkv_requests_running")).toBe(1);
    expect(during.value("pkv_kv_pages_used")).toBeGreaterThan(0);
    expect(during.value("pkv_kv_pages_free")).toBeLessThan(before.value("pkv_kv_pages_free"));
    let tokens = 1;
    for await (const e of events)
      if (e.data !== "[DONE]" && JSON.parse(e.data).choices[0].finish_reason === null) tokens++;
    expect(tokens).toBe(400);

    // Many at once, two sharing a 40-token prefix (two full pages), in a pool too small for all of them.
    const shared = Array.from({ length: 40 }, (_, i) => 7000 + i);
    await postJson(server.url, "/v1/completions", { prompt: [...shared, 1], max_tokens: 2 }).then((r) => r.json());
    const bodies = Array.from({ length: 16 }, (_, i) => ({
      prompt: i === 0 ? [...shared, 2] : Array.from({ length: 30 + 5 * i }, (_, j) => 100 * i + j),
      max_tokens: 20 + i,
    }));
    const results = await Promise.all(
      bodies.map((b) =>
        postJson(server.url, "/v1/completions", b).then(
          (r) => r.json() as Promise<{ choices: { token_ids: number[] }[] }>,
        ),
      ),
    );
    const generated = 400 + 2 + results.reduce((n, r) => n + r.choices[0]!.token_ids.length, 0);
    await waitFor(() => !server.stack.scheduler.busy);

    const after = await scrape();
    const moved = (name: string, labels?: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels);
    expect(after.value("pkv_requests_running")).toBe(0);
    expect(after.value("pkv_kv_pages_used")).toBe(0);
    expect(moved("pkv_generation_tokens_total")).toBe(generated);
    expect(moved("pkv_requests_finished_total", { finish_reason: "length" })).toBe(18);
    expect(moved("pkv_prefix_hit_tokens_total")).toBeGreaterThanOrEqual(32);
    expect(
      moved("pkv_preemptions_total", { mode: "swap" }) + moved("pkv_preemptions_total", { mode: "recompute" }),
    ).toBeGreaterThan(0);
    expect(moved("pkv_time_to_first_token_seconds_count")).toBe(18);
    expect(moved("pkv_inter_token_latency_seconds_count")).toBe(generated - 18);
    expect(moved("pkv_inter_token_latency_seconds_sum")).toBeGreaterThan(0);
    expect(moved("pkv_step_duration_seconds_count")).toBeGreaterThan(400);
    expect(moved("pkv_steps_total")).toBeGreaterThanOrEqual(moved("pkv_step_duration_seconds_count"));
    expect(after.value("pkv_server_draining")).toBe(0);
  });

  test("a cancelled request counts under finish_reason cancelled", async () => {
    const before = await scrape();
    const abort = new AbortController();
    const response = await postJson(server.url, "/generate", { promptLength: 20, maxTokens: 500 }, abort.signal);
    const reader = response.body!.getReader();
    await reader.read();
    abort.abort();
    await waitFor(
      async () =>
        (await scrape()).value("pkv_requests_finished_total", { finish_reason: "cancelled" }) >
        before.value("pkv_requests_finished_total", { finish_reason: "cancelled" }),
    );
    expect((await scrape()).value("pkv_kv_pages_used")).toBe(0);
  });
});
