// GET /metrics: the scheduler's and the cache's state in Prometheus's text format (version 0.0.4):
// gauges for requests and KV pages now, counters since start (names end in _total), and histograms of
// step time, time to first token and inter-token latency in seconds (_bucket{le}, _sum, _count).
import type { CacheStats } from "../scheduler/ports";
import type { LatencyHistogram, SchedulerTotals } from "../scheduler/stats";

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** What the metrics read: a Scheduler and a cache have it all. */
export interface MetricsSource {
  scheduler: { running: number; waiting: number; swapped: number; totals: SchedulerTotals };
  cache: { stats(): CacheStats };
  draining: boolean;
}

type Labels = Record<string, string>;

class Exposition {
  readonly #lines: string[] = [];

  family(name: string, type: "gauge" | "counter" | "histogram", help: string): void {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }

  sample(name: string, value: number, labels: Labels = {}): void {
    const entries = Object.entries(labels);
    const text = entries.length ? `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
    this.#lines.push(`${name}${text} ${formatValue(value)}`);
  }

  metric(name: string, type: "gauge" | "counter", help: string, value: number): void {
    this.family(name, type, help);
    this.sample(name, value);
  }

  histogram(name: string, help: string, h: LatencyHistogram): void {
    this.family(name, "histogram", help);
    const cumulative = h.cumulative();
    h.boundsMs.forEach((ms, i) => this.sample(`${name}_bucket`, cumulative[i]!, { le: formatValue(ms / 1000) }));
    this.sample(`${name}_bucket`, h.count, { le: "+Inf" });
    this.sample(`${name}_sum`, h.sumMs / 1000);
    this.sample(`${name}_count`, h.count);
  }

  toString(): string {
    return `${this.#lines.join("\n")}\n`;
  }
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

export function renderMetrics({ scheduler, cache, draining }: MetricsSource): string {
  const m = new Exposition();
  const t = scheduler.totals;
  const s = cache.stats();
  m.metric("pkv_requests_running", "gauge", "Requests in the running batch.", scheduler.running);
  m.metric(
    "pkv_requests_waiting",
    "gauge",
    "Requests queued for admission (new or preempted by recompute).",
    scheduler.waiting,
  );
  m.metric(
    "pkv_requests_swapped",
    "gauge",
    "Requests preempted with their pages in host swap space.",
    scheduler.swapped,
  );
  m.metric("pkv_kv_pages_total", "gauge", "Pages in the KV pool.", s.pagesTotal);
  m.metric("pkv_kv_pages_used", "gauge", "Pages held by at least one sequence.", s.pagesUsed);
  m.metric("pkv_kv_pages_free", "gauge", "Pages on the free list.", s.pagesFree);
  m.metric("pkv_kv_pages_shared", "gauge", "Pages held by more than one sequence.", s.pagesShared);
  m.metric("pkv_kv_pages_cached", "gauge", "Unheld pages kept for prefix-cache hits.", s.pagesCached);
  m.metric("pkv_kv_pages_swapped", "gauge", "Pages in host swap space.", s.pagesSwapped);
  m.metric("pkv_kv_waste_fraction", "gauge", "Reserved but empty slots over reserved slots.", s.wasteFraction);
  m.metric("pkv_prefix_hit_tokens_total", "counter", "Prompt tokens found in the prefix cache.", t.prefixHitTokens);
  m.metric(
    "pkv_prefill_tokens_total",
    "counter",
    "Prompt (or recomputed) tokens whose K and V were written.",
    t.prefillTokens,
  );
  m.metric("pkv_generation_tokens_total", "counter", "Tokens generated.", t.generatedTokens);
  m.family("pkv_preemptions_total", "counter", "Requests preempted for pages, by how.");
  m.sample("pkv_preemptions_total", t.preemptedBySwap, { mode: "swap" });
  m.sample("pkv_preemptions_total", t.preemptedByRecompute, { mode: "recompute" });
  m.family("pkv_requests_finished_total", "counter", "Requests that ended, by finish reason.");
  m.sample("pkv_requests_finished_total", t.finished - t.stopped, { finish_reason: "length" });
  m.sample("pkv_requests_finished_total", t.stopped, { finish_reason: "stop" });
  m.sample("pkv_requests_finished_total", t.cancelled, { finish_reason: "cancelled" });
  m.sample("pkv_requests_finished_total", t.failed, { finish_reason: "error" });
  m.metric("pkv_steps_total", "counter", "Scheduler steps run.", t.steps);
  m.histogram("pkv_step_duration_seconds", "Wall time of a step that decoded a batch.", t.stepTime);
  m.histogram("pkv_time_to_first_token_seconds", "From submit to a request's first token.", t.ttft);
  m.histogram("pkv_inter_token_latency_seconds", "Between consecutive tokens of a request.", t.itl);
  m.metric("pkv_server_draining", "gauge", "1 while the server finishes its streams before exiting.", draining ? 1 : 0);
  return m.toString();
}
