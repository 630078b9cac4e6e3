// Kernel launches that may overlap the grid before them in the stream (programmatic dependent launch,
// compute capability 9.0+). The kernels order whatever depends on that grid themselves (griddepcontrol,
// decode_vec.cuh); without `overlap` this is an ordinary launch.
#pragma once
#include <cuda_runtime.h>

namespace pkv {

template <typename... Params, typename... Args>
cudaError_t launch_kernel(bool overlap, void (*kernel)(Params...), int32_t grid, int32_t threads, size_t smem,
                          cudaStream_t stream, Args &&...args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3((unsigned)grid);
  config.blockDim = dim3((unsigned)threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = overlap ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Args &&>(args)...);
}

}  // namespace pkv
