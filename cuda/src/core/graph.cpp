// CUDA graph capture of a stream's work, and replay. A decode step (plan upload + every layer's run)
// becomes one launch, removing per-kernel launch gaps from the synchronized step time.
#include <algorithm>

#include "internal.h"

struct pkv_graph {
  pkv_runtime *rt;
  cudaGraphExec_t exec;
  std::vector<uint64_t> uses;  // tokens of the buffers, pools and engines its work touches
};

namespace {

void destroy_graph(void *object) {
  auto *graph = static_cast<pkv_graph *>(object);
  pkv::disown(graph->rt, graph);
  cudaGraphExecDestroy(graph->exec);
  delete graph;
}

pkv_status require_cuda(pkv_runtime *rt, const char *func) {
  if (!pkv::on_cuda(rt)) return pkv::fail(PKV_ERR_UNSUPPORTED, "%s: graphs need the CUDA backend", func);
  return PKV_OK;
}

}  // namespace

extern "C" {

pkv_status pkv_capture_begin(pkv_runtime *rt, pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_TRY(pkv::check_stream(rt, stream, __func__));
  PKV_TRY(require_cuda(rt, __func__));
  cudaStreamCaptureStatus status;
  PKV_CUDA_TRY(cudaStreamIsCapturing(pkv::stream_of(rt, stream), &status));
  if (status != cudaStreamCaptureStatusNone)
    return pkv::fail(PKV_ERR_BAD_STATE, "%s: the stream is already capturing", __func__);
  // Thread-local mode: only this thread's unsafe calls (a sync inside the capture) are refused.
  PKV_CUDA_TRY(cudaStreamBeginCapture(pkv::stream_of(rt, stream), cudaStreamCaptureModeThreadLocal));
  rt->capturing.push_back(pkv::stream_of(rt, stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_capture_end(pkv_runtime *rt, pkv_stream *stream, pkv_graph **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_TRY(pkv::check_stream(rt, stream, __func__));
  PKV_NOT_NULL(out);
  *out = nullptr;
  PKV_TRY(require_cuda(rt, __func__));
  cudaStreamCaptureStatus status;
  PKV_CUDA_TRY(cudaStreamIsCapturing(pkv::stream_of(rt, stream), &status));
  if (status == cudaStreamCaptureStatusNone)
    return pkv::fail(PKV_ERR_BAD_STATE, "%s: the stream is not capturing", __func__);
  cudaGraph_t graph = nullptr;
  cudaError_t ended = cudaStreamEndCapture(pkv::stream_of(rt, stream), &graph);
  auto &capturing = rt->capturing;  // the capture is over even if it was invalidated
  const cudaStream_t ended_stream = pkv::stream_of(rt, stream);
  capturing.erase(std::remove(capturing.begin(), capturing.end(), ended_stream), capturing.end());
  std::vector<uint64_t> uses;
  auto &noted = rt->capture_uses;
  for (const auto &[s, token] : noted)
    if (s == ended_stream) uses.push_back(token);
  // Every layer notes the same buffers again: each launch checks each object once.
  std::sort(uses.begin(), uses.end());
  uses.erase(std::unique(uses.begin(), uses.end()), uses.end());
  noted.erase(std::remove_if(noted.begin(), noted.end(), [&](const auto &u) { return u.first == ended_stream; }),
              noted.end());
  PKV_CUDA_TRY(ended);
  cudaGraphExec_t exec = nullptr;
  cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) return pkv::fail_cuda(e, "cudaGraphInstantiate", __func__);
  pkv_graph *g = nullptr;
  try {
    g = new pkv_graph{rt, exec, std::move(uses)};
  } catch (...) {
    cudaGraphExecDestroy(exec);
    throw;
  }
  *out = pkv::handle_of<pkv_graph>(pkv::adopt(rt, g, pkv::Kind::Graph, destroy_graph));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_graph_launch(pkv_graph *graph, pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(graph, Graph);
  PKV_TRY(pkv::check_stream(graph->rt, stream, __func__));
  for (uint64_t token : graph->uses)
    if (!pkv::token_is_live(token))
      return pkv::fail(PKV_ERR_BAD_STATE, "%s: the graph's work uses a %s freed or destroyed after the capture", __func__,
                       pkv::kind_name(pkv::token_kind(token)));
  PKV_CUDA_TRY(cudaGraphLaunch(graph->exec, pkv::stream_of(graph->rt, stream)));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_graph_destroy(pkv_graph *graph) {
  PKV_API_BEGIN
  PKV_CHECK(graph, Graph);
  PKV_TRY(pkv::check_not_capturing(graph->rt));
  cudaStreamSynchronize(graph->rt->stream);
  destroy_graph(graph);
  return PKV_OK;
  PKV_API_END
}

}  // extern "C"
