// Native kernels for deepresolve_captum._C (CPU). No Python here: module.cpp binds them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace dr {

// ---- micro-kernel selection (microkernel.cpp) --------------------------------------------
template <class T>
using UKernel = void (*)(const T* a, const T* b, long ldb, long K, long kc, double* tile);

template <class T>
struct KernelInfo {
    UKernel<T> fn;
    int MR;
    int NR;
};

// The instruction set in use: "avx512", "avx2" or "generic".
std::string isa();
// Force an instruction set (for tests); throws std::invalid_argument if the CPU lacks it.
// "auto" picks the best one the CPU supports.
void set_isa(const std::string& name);
std::string available_isas();  // comma-separated
KernelInfo<double> kernel_double();
KernelInfo<float> kernel_float();

// ---- kernels (stats.cpp) -------------------------------------------------------------------
// fiv: C x T x K C-contiguous; w: C x T with element strides (ws0, ws1); mean/var: C x K contiguous.
// Returns 0 on success, 1 if a weight row is invalid (bad_class set), 2 if a result is not finite.
template <class T>
int weighted_moments(const T* fiv, const double* w, long ws0, long ws1, long C, long Tn, long K,
                     T* mean, T* var, long* bad_class);

// x: n x K with element strides (xs0, xs1); out: n x n rows of stride ldo (elements), unit inner stride.
// Fills the whole of out (symmetric, unit diagonal, clipped to [-1, 1]), computing only the upper
// triangle with the packed kernel, block_rows rows at a time, and writing each value at (i, j) and
// (j, i). Scratch: one or two packed copies of x (n x K each; one when the tile's NR divides MR),
// kept for reuse; nothing n x n.
// Any finite x works (each row is scaled by a power of two near its spread: no overflow or
// underflow of its squares). Returns 0 on success, 2 if x has a NaN/inf (bad_row set).
template <class T>
int pearson_into(const T* x, long xs0, long xs1, long n, long K, bool clip_negative, T* out, long ldo,
                 long block_rows, long* bad_row);

// Scratch kept between calls for speed (the packed copies of x; at most scratch_limit() in all):
// scratch_bytes() tells how much, release_scratch() frees it (returns the bytes freed).
size_t scratch_bytes();
size_t release_scratch();
// The most scratch kept between calls (64 MiB by default); set_scratch_limit returns the old one.
size_t set_scratch_limit(size_t bytes);
size_t scratch_limit();

// Worker threads per call: DEEPRESOLVE_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process
// may run on (its affinity mask). set_num_threads(n > 4096) throws std::invalid_argument.
int parse_threads(const char* value, bool omp_list);  // -1: not a thread count
int num_threads();
void set_num_threads(int n);  // n <= 0: back to the default

}  // namespace dr
