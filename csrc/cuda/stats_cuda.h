// C interface of the CUDA kernels (stats_cuda.cu), called by module.cpp with raw device pointers
// taken from __cuda_array_interface__ on the Python side: no torch C++ ABI involved.
// Every function returns 0 or a cudaError_t value (see dr_cuda_error_string).
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

// Devices visible to this build's (statically linked) runtime; 0 when there is no GPU or the
// driver is older than the toolkit that built it.
int dr_cuda_device_count(void);
const char* dr_cuda_error_string(int err);

// fiv (C, T, K) and mean/var (C, K) contiguous, float32 (is_double = 0) or float64;
// w (C, T) contiguous float64, non-negative with a positive sum per class (checked by the caller);
// normalised per class here.
int dr_cuda_weighted_moments(const void* fiv, const double* w, void* mean, void* var, long C, long T, long K,
                             int is_double, int device, void* stream);

// x (n, K) contiguous; work (n, K) scratch of x's dtype; out (n, n) contiguous, x's dtype.
// Fills all of out: symmetric, unit diagonal, clipped to [-1, 1], constant rows 0 off the diagonal.
// Any finite x works (rows are scaled by a power of two near their spread, as on the CPU).
int dr_cuda_pearson(const void* x, void* work, void* out, long n, long K, int is_double, int clip_negative,
                    int device, void* stream);

#ifdef __cplusplus
}
#endif
