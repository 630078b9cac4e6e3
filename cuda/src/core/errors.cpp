// Thread-local last error and status names.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "internal.h"

namespace {
thread_local char last_error[1024] = "";
thread_local const char *serving = "";  // the entry point this thread is in (begin_call)
}  // namespace

namespace pkv {

void begin_call(const char *func) {
  serving = func;
  last_error[0] = '\0';
}

const char *current_call() { return serving; }

pkv_status fail(pkv_status code, const char *fmt, ...) {
  // "<entry point>: " first unless the message already starts with it.
  size_t at = 0;
  const size_t name = strlen(serving);
  char text[sizeof last_error];
  va_list args;
  va_start(args, fmt);
  vsnprintf(text, sizeof text, fmt, args);
  va_end(args);
  if (name > 0 && strncmp(text, serving, name) != 0) at = (size_t)snprintf(last_error, sizeof last_error, "%s: ", serving);
  if (at >= sizeof last_error) at = sizeof last_error - 1;
  snprintf(last_error + at, sizeof last_error - at, "%s", text);
  return code;
}

pkv_status fail_cuda(cudaError_t err, const char *call, const char *where) {
  pkv_status code = err == cudaErrorMemoryAllocation ? PKV_ERR_OUT_OF_MEMORY : PKV_ERR_CUDA;
  cudaGetLastError();  // clear a sticky non-fatal error so later calls start clean
  return fail(code, "%s failed: %s (%s) at %s", call, cudaGetErrorName(err), cudaGetErrorString(err), where);
}

// Library code throws only by accident of the standard library (an allocation, a container size);
// each kind maps to the status that says what went wrong, and the message names the call.
pkv_status exception_status(const char *func) {
  try {
    throw;
  } catch (const std::bad_alloc &) {
    return fail(PKV_ERR_OUT_OF_MEMORY, "%s: host allocation failed (out of memory)", func);
  } catch (const std::length_error &e) {
    return fail(PKV_ERR_OUT_OF_MEMORY, "%s: a host array is too large to allocate (%s)", func, e.what());
  } catch (const std::out_of_range &e) {
    return fail(PKV_ERR_OUT_OF_RANGE, "%s: an index is out of range (%s)", func, e.what());
  } catch (const std::invalid_argument &e) {
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: invalid argument (%s)", func, e.what());
  } catch (const std::exception &e) {
    return fail(PKV_ERR_INTERNAL, "%s: internal error: %s", func, e.what());
  } catch (...) {
    return fail(PKV_ERR_INTERNAL, "%s: internal error: an unknown exception", func);
  }
}

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
