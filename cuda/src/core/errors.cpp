// Thread-local last error and status names.
#include <cstdarg>
#include <cstdio>

#include "internal.h"

namespace {
thread_local char last_error[1024] = "";
}

namespace pkv {

pkv_status fail(pkv_status code, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, args);
  va_end(args);
  return code;
}

pkv_status fail_cuda(cudaError_t err, const char *call, const char *where) {
  pkv_status code = err == cudaErrorMemoryAllocation ? PKV_ERR_OUT_OF_MEMORY : PKV_ERR_CUDA;
  cudaGetLastError();  // clear a sticky non-fatal error so later calls start clean
  return fail(code, "%s failed: %s (%s) at %s", call, cudaGetErrorName(err), cudaGetErrorString(err), where);
}

void clear_error() { last_error[0] = '\0'; }

}  // namespace pkv

extern "C" {

int32_t pkv_abi_version(void) { return PKV_ABI_VERSION; }
const char *pkv_version(void) { return "0.1.0"; }
const char *pkv_last_error(void) { return last_error; }

const char *pkv_status_name(pkv_status status) {
  switch (status) {
#define PKV_NAME(code) \
  case code: \
    return #code;
    PKV_NAME(PKV_OK)
    PKV_NAME(PKV_ERR_INVALID_ARGUMENT)
    PKV_NAME(PKV_ERR_NULL_POINTER)
    PKV_NAME(PKV_ERR_INVALID_HANDLE)
    PKV_NAME(PKV_ERR_UNSUPPORTED)
    PKV_NAME(PKV_ERR_OUT_OF_MEMORY)
    PKV_NAME(PKV_ERR_NO_DEVICE)
    PKV_NAME(PKV_ERR_CUDA)
    PKV_NAME(PKV_ERR_OUT_OF_RANGE)
    PKV_NAME(PKV_ERR_VERSION_MISMATCH)
    PKV_NAME(PKV_ERR_STALE_PLAN)
    PKV_NAME(PKV_ERR_OUT_OF_PAGES)
    PKV_NAME(PKV_ERR_SWAP_FULL)
    PKV_NAME(PKV_ERR_BAD_STATE)
    PKV_NAME(PKV_ERR_INTERNAL)
#undef PKV_NAME
    default:
      return "PKV_UNKNOWN_STATUS";
  }
}

}  // extern "C"
