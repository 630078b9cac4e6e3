// The shared-prefix switch and what a plan says about it: the one place that names the engine setting
// `sharedPrefix` and the plan's uniqueKvBytes / sharedTasks / sharedRows, so that a library without
// them fails here with one clear message.
import type { DecodeEngineOptions, Plan, Runtime } from "persistentkv";

type EngineSettings = NonNullable<DecodeEngineOptions["settings"]>;

/** "auto": the planner decides per step; "off": every row reads its own pages; "always": share what is shared. */
export type SharedPrefix = "auto" | "off" | "always";

/** Engine settings that turn shared-prefix decode to `mode`. */
export function sharingSettings(mode: SharedPrefix): EngineSettings {
  return { sharedPrefix: mode } as EngineSettings & { sharedPrefix: SharedPrefix };
}

/** Whether this library accepts the sharedPrefix setting (a CPU engine is made with it and dropped). */
export function sharingSupported(rt: Runtime): boolean {
  try {
    rt.createDecodeEngine({
      numQoHeads: 4,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      settings: sharingSettings("off"),
    }).dispose();
    return true;
  } catch {
    return false;
  }
}

export interface PlanSharing {
  /** Bytes of K/V one layer reads: kvBytes less what shared tasks read once for several rows. */
  uniqueKvBytes: number;
  sharedTasks: number;
  sharedRows: number;
}

/** The plan's shared-prefix counts; throws where the plan has none (a library without shared tasks). */
export function planSharing(plan: Plan): PlanSharing {
  const p = plan as Plan & Partial<PlanSharing>;
  if (p.uniqueKvBytes === undefined || p.sharedTasks === undefined || p.sharedRows === undefined)
    throw new Error(
      "this library's plans carry no uniqueKvBytes/sharedTasks/sharedRows: build one with shared-prefix decode",
    );
  return { uniqueKvBytes: p.uniqueKvBytes, sharedTasks: p.sharedTasks, sharedRows: p.sharedRows };
}
