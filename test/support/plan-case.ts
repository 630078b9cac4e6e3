// Runs one decode case on the CPU backend in its own process and prints the persistent plan's result as
// JSON: the planner's measurement settings (PKV_PLAN_*) are read from the environment when an engine is
// created, and a test can only set a child's environment.
import { openRuntime } from "../../lib/runtime";
import { type DecodeCase, runCase } from "../../lib/testing/decode-check";

const rt = openRuntime({ backend: "cpu" });
const [result] = runCase(rt, JSON.parse(process.argv[2]!) as DecodeCase, ["persistent"]);
console.log(JSON.stringify(result));
rt.dispose();
