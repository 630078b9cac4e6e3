// Draws a decode benchmark's achieved bandwidth per step and policy as an SVG bar chart, with the
// streaming-read ceiling as a line and FlashInfer best path (bench/workloads/peers-<gpu>.md) as ticks.
//   bun bench/chart.ts bench/results/decode-<date>-h100.json [--out chart.svg]
import { readFileSync, writeFileSync } from "node:fs";
import { type DecodeResult, flashInferSteps, peersPath } from "./report";

const COLORS: Record<string, string> = { baseline: "#9aa5b1", persistent: "#3b7dd8", adaptive: "#e07b39" };

export function chart(result: DecodeResult, peers: Map<string, { us: number; pct: number }>): string {
  const steps = [...new Set(result.rows.map((r) => `${r.workload}/${r.step}`))];
  const policies = [...new Set(result.rows.map((r) => r.policy))];
  const bar = 5,
    gap = 6,
    left = 48,
    top = 40,
    height = 260;
  const groupWidth = policies.length * bar + gap;
  const width = Math.max(left + steps.length * groupWidth + 20, left + 5 * 185);
  const y = (pct: number) => top + height - (pct / 100) * height;
  const parts: string[] = [];
  parts.push(`<text x="${left}" y="16" font-size="13" font-weight="bold">Decode attention on ${result.device}</text>`);
  parts.push(
    `<text x="${left}" y="31" font-size="11">achieved bandwidth as % of the streaming-read ceiling measured in the same run (${result.ceiling_gbps.toFixed(0)} GB/s)</text>`,
  );
  for (const pct of [0, 25, 50, 75, 90, 100]) {
    parts.push(
      `<line x1="${left}" x2="${width - 10}" y1="${y(pct)}" y2="${y(pct)}" stroke="${pct === 90 ? "#c33" : "#ddd"}" stroke-dasharray="${pct === 90 ? "4 3" : ""}"/>`,
    );
    parts.push(`<text x="${left - 6}" y="${y(pct) + 4}" font-size="10" text-anchor="end">${pct}%</text>`);
  }
  steps.forEach((key, i) => {
    const x0 = left + i * groupWidth;
    policies.forEach((policy, p) => {
      const row = result.rows.find((r) => `${r.workload}/${r.step}` === key && r.policy === policy);
      if (!row) return;
      const pct = Math.min(100, row.pct_ceiling);
      parts.push(
        `<rect x="${x0 + p * bar}" y="${y(pct)}" width="${bar - 1}" height="${y(0) - y(pct)}" fill="${COLORS[policy] ?? "#555"}"><title>${key} ${policy}: ${row.kernel_us} us, ${row.pct_ceiling}%</title></rect>`,
      );
    });
    const peer = peers.get(key)?.pct;
    if (peer !== undefined)
      parts.push(
        `<line x1="${x0 - 1}" x2="${x0 + policies.length * bar}" y1="${y(peer)}" y2="${y(peer)}" stroke="#000" stroke-width="2"/>`,
      );
    const [workload, step] = key.split("/");
    if (step === "0") parts.push(`<text x="${x0}" y="${top + height + 14}" font-size="10">${workload}</text>`);
  });
  const legend = [
    ...policies.map((p) => [COLORS[p] ?? "#555", p]),
    ["#000", "FlashInfer, best path"],
    ["#c33", "90% bar"],
  ];
  legend.forEach(([color, name], i) => {
    const x = left + i * 185;
    parts.push(
      `<rect x="${x}" y="${top + height + 26}" width="10" height="10" fill="${color}"/><text x="${x + 14}" y="${top + height + 35}" font-size="11">${name}</text>`,
    );
  });
  parts.push(
    `<text x="${left}" y="${top + height + 56}" font-size="10" fill="#555">commit ${result.commit.slice(0, 10)}; one bar per workload step and policy; kernel time, CUDA events, L2 flushed before each launch</text>`,
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + height + 66}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join("\n")}\n</svg>\n`;
}

if (import.meta.main) {
  const [input, ...rest] = process.argv.slice(2);
  if (!input) throw new Error("usage: bun bench/chart.ts <decode results .json> [--out file.svg]");
  const out = rest[0] === "--out" && rest[1] ? rest[1] : input.replace(/\.json$/, ".svg");
  const result = JSON.parse(readFileSync(input, "utf8")) as DecodeResult;
  const peers = flashInferSteps(readFileSync(peersPath(result.device), "utf8"));
  writeFileSync(out, chart(result, peers));
  console.log(`wrote ${out}`);
}
