// An OpenAI-style completions server over the Scheduler: many HTTP clients, one continuous batch.
//
//   bun examples/serve.ts                      # PORT=3000 by default
//   curl -N localhost:3000/v1/completions -d '{"prompt_length": 100, "max_tokens": 20, "stream": true}'
//   curl localhost:3000/metrics                # Prometheus text
//
// POST /v1/completions takes {"prompt": [token ids]} or {"prompt_length": n}, "max_tokens", "stop"
// (token ids) and "stream"; GET /v1/models, /health and /metrics answer as serving stacks do; the
// first demo route, POST /generate (named events per token), stays. A client that disconnects has its
// request cancelled and its pages freed; SIGTERM (or Ctrl-C) stops admitting, lets the streams in
// flight finish, then exits. The model is synthetic (deterministic activations, no weights, no
// tokenizer: text is token ids): the point is the serving loop, not the text.
import {
  type Backend,
  type DemoParts,
  DeviceStepRunner,
  type RunningServer,
  type ServeOptions,
  SyntheticDeviceModel,
  readEnv,
  startServer,
} from "persistentkv";

export { type RunningServer, type ServeOptions, startServer };

/** The device path: the synthetic model writes q and K/V on the device, and a step syncs once. */
export function deviceRunner({ rt, cache, engine, model }: DemoParts) {
  const device = new SyntheticDeviceModel(rt, model);
  const runner = new DeviceStepRunner({ runtime: rt, cache, engine, model: device });
  const close = runner.dispose.bind(runner);
  return Object.assign(runner, {
    dispose() {
      close();
      device.dispose();
    },
  });
}

if (import.meta.main) {
  // CUDA if a device is visible, else the CPU reference backend; PKV_BACKEND=cpu forces the CPU.
  const backend = (readEnv("PKV_BACKEND") ?? "auto") as Backend | "auto";
  // PKV_PATH=host keeps the host-array path (a round trip per layer) for comparison.
  const path = readEnv("PKV_PATH") ?? "device";
  if (path !== "device" && path !== "host") throw new Error(`PKV_PATH must be device or host, not ${path}`);
  const runner = path === "device" ? deviceRunner : undefined;
  const server = startServer({ port: Number(readEnv("PORT") ?? 3000), backend, runner });
  const { numLayers, numPages, pageSize } = server.stack.sizes;
  console.log(
    `serving on ${server.url} (${numLayers} layers, ${numPages} pages of ${pageSize} tokens, synthetic model, ${path} path)`,
  );
  console.log(`try: curl -N ${server.url}v1/completions -d '{"prompt_length": 100, "max_tokens": 20, "stream": true}'`);
  for (const signal of ["SIGTERM", "SIGINT"] as const)
    process.once(signal, () => {
      console.log(`${signal}: draining (no new requests; the streams in flight finish)`);
      server.drain().then(
        () => process.exit(0),
        (error) => {
          console.error("drain failed:", error);
          process.exit(1);
        },
      );
    });
}
