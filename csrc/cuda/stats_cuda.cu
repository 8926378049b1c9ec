// CUDA kernels for deepresolve_captum._C: weighted moments over starts (the IL) and the Pearson
// correlation between rows (class similarity). Plain CUDA C++, no torch, no cuBLAS: the Python
// wrapper passes device pointers and the current torch stream.
#include <cuda_runtime.h>

#include <cstdint>

#include "stats_cuda.h"

namespace {

// ---------------------------------------------------------------------------------------------
// Weighted moments: one thread per (class, channel); consecutive threads read consecutive
// channels, so the loads over starts are coalesced. Two passes over T (small: ~10) per thread.
template <class T>
__global__ void wm_kernel(const T* __restrict__ fiv, const double* __restrict__ w, T* __restrict__ mean,
                          T* __restrict__ var, long C, long Tn, long K) {
    const long c = blockIdx.y;
    const long k = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C || k >= K) return;
    const double* wc = w + c * Tn;
    double wsum = 0.0;
    for (long t = 0; t < Tn; ++t) wsum += wc[t];
    // Weights normalised first (wc[t] / wsum, as csrc/stats.cpp weighted_moments does), and the
    // variance term is (w * d) * d: then whether a sum overflows does not depend on the weights'
    // scale, and a finite variance whose d * d alone overflows (|d| > 1.3e154) stays finite.
    const T* f = fiv + c * Tn * K + k;
    double m = 0.0;
    for (long t = 0; t < Tn; ++t) m += (wc[t] / wsum) * (double)f[t * K];
    double v = 0.0;
    for (long t = 0; t < Tn; ++t) {
        const double d = (double)f[t * K] - m;
        v += (wc[t] / wsum) * d * d;
    }
    mean[c * K + k] = (T)m;
    var[c * K + k] = (T)v;
}

// ---------------------------------------------------------------------------------------------
// Pearson, step 1: one block per row. Clip, mean, centred sum of squares (double), then write the
// centred, unit-norm row to work. An exactly constant row (max == min) becomes all zeros.
constexpr int PREP_THREADS = 256;

__device__ double block_sum(double v, double* sh) {
    const int tid = threadIdx.x;
    sh[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) sh[tid] += sh[tid + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

__device__ double block_min(double v, double* sh) {
    const int tid = threadIdx.x;
    sh[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) sh[tid] = fmin(sh[tid], sh[tid + s]);
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

template <class T>
__global__ void prep_kernel(const T* __restrict__ x, T* __restrict__ z, long n, long K, int clip) {
    __shared__ double sh[PREP_THREADS];
    const long i = blockIdx.x;
    if (i >= n) return;
    const T* xi = x + i * K;
    double s = 0.0, lo = INFINITY, nhi = INFINITY;  // nhi = -max
    for (long p = threadIdx.x; p < K; p += blockDim.x) {
        double v = (double)xi[p];
        if (clip && v < 0.0) v = 0.0;
        s += v;
        lo = fmin(lo, v);
        nhi = fmin(nhi, -v);
    }
    s = block_sum(s, sh);
    lo = block_min(lo, sh);
    const double hi = -block_min(nhi, sh);
    // As row_stats in csrc/stats.cpp: the row scaled by a power of two near 1 / its spread (no
    // overflow or underflow of the squares at any scale; exact), and the mean corrected by the
    // centred values' own mean where a large offset left it off by more than rounding noise.
    // All branches below depend on block-wide values only (uniform within the block).
    double inv = 1.0, mh = 0.0, ml = 0.0, scale = 0.0;
    if (hi > lo) {
        const long e = (long)ilogb(hi * 0.5 - lo * 0.5) + 1;
        inv = ldexp(1.0, (int)max(-1022L, min(1023L, -e)));
        mh = (s / (double)K) * inv;
        if (!isfinite(s)) {  // finite values near DBL_MAX whose sum overflows
            double s2 = 0.0;
            for (long p = threadIdx.x; p < K; p += blockDim.x) {
                double v = (double)xi[p];
                if (clip && v < 0.0) v = 0.0;
                s2 += v * inv;
            }
            mh = block_sum(s2, sh) / (double)K;
        }
        double ss = 0.0, sd = 0.0;
        for (long p = threadIdx.x; p < K; p += blockDim.x) {
            double v = (double)xi[p];
            if (clip && v < 0.0) v = 0.0;
            const double d = v * inv - mh;
            sd += d;
            ss += d * d;
        }
        ss = block_sum(ss, sh);
        sd = block_sum(sd, sh);
        if (sd * sd > (double)K * ss * 0x1p-53) {  // kMeanCorrection in stats.cpp
            ml = sd / (double)K;
            ss -= sd * ml;
        }
        scale = ss > 0.0 ? 1.0 / sqrt(ss) : 0.0;
    }
    T* zi = z + i * K;
    for (long p = threadIdx.x; p < K; p += blockDim.x) {
        double v = (double)xi[p];
        if (clip && v < 0.0) v = 0.0;
        zi[p] = (T)(((v * inv - mh) - ml) * scale);
    }
}

// Pearson, step 2: out = Z Z^T on the upper triangle of 64 x 64 tiles (a tile strictly below the
// diagonal returns at once); each value is written at (i, j) and mirrored at (j, i).
// 16 x 16 threads, 4 x 4 outputs each, K in chunks of 16 through shared memory.
// float: products are summed in float over at most 128 steps of K, then added into double.
constexpr int TILE = 64, KCH = 16, SUB = 4;

template <class T>
__global__ void syrk_kernel(const T* __restrict__ z, T* __restrict__ out, long n, long K) {
    const long bi = blockIdx.y, bj = blockIdx.x;
    if (bi > bj) return;
    __shared__ T As[KCH][TILE + 1];
    __shared__ T Bs[KCH][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;  // 16 x 16
    const int tid = ty * 16 + tx;
    const long i0 = bi * TILE, j0 = bj * TILE;
    T acc[SUB][SUB];
    double accd[SUB][SUB];
#pragma unroll
    for (int a = 0; a < SUB; ++a)
#pragma unroll
        for (int b = 0; b < SUB; ++b) {
            acc[a][b] = (T)0;
            accd[a][b] = 0.0;
        }
    int since_flush = 0;
    for (long k0 = 0; k0 < K; k0 += KCH) {
        // 64 rows x 16 columns per tile = 1024 values, 4 per thread; consecutive threads take
        // consecutive columns of a row.
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int e = tid + l * 256;
            const int r = e / KCH, kk = e % KCH;
            const long gi = i0 + r, gj = j0 + r, gk = k0 + kk;
            As[kk][r] = (gi < n && gk < K) ? z[gi * K + gk] : (T)0;
            Bs[kk][r] = (gj < n && gk < K) ? z[gj * K + gk] : (T)0;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < KCH; ++kk) {
            T a[SUB], b[SUB];
#pragma unroll
            for (int s = 0; s < SUB; ++s) {
                a[s] = As[kk][ty + 16 * s];
                b[s] = Bs[kk][tx + 16 * s];
            }
#pragma unroll
            for (int p = 0; p < SUB; ++p)
#pragma unroll
                for (int q = 0; q < SUB; ++q) acc[p][q] += a[p] * b[q];
        }
        __syncthreads();
        since_flush += KCH;
        if (sizeof(T) == 4 && since_flush >= 128) {
#pragma unroll
            for (int p = 0; p < SUB; ++p)
#pragma unroll
                for (int q = 0; q < SUB; ++q) {
                    accd[p][q] += (double)acc[p][q];
                    acc[p][q] = (T)0;
                }
            since_flush = 0;
        }
    }
#pragma unroll
    for (int p = 0; p < SUB; ++p)
#pragma unroll
        for (int q = 0; q < SUB; ++q) {
            const long i = i0 + ty + 16 * p, j = j0 + tx + 16 * q;
            if (i >= n || j >= n || j < i) continue;
            double r = accd[p][q] + (double)acc[p][q];
            r = r > 1.0 ? 1.0 : (r < -1.0 ? -1.0 : r);
            if (i == j) r = 1.0;
            out[i * n + j] = (T)r;
            out[j * n + i] = (T)r;
        }
}

struct DeviceGuard {
    int prev = -1;
    cudaError_t err = cudaSuccess;
    explicit DeviceGuard(int device) {
        err = cudaGetDevice(&prev);
        if (err == cudaSuccess && prev != device) err = cudaSetDevice(device);
    }
    ~DeviceGuard() {
        int cur = -1;
        if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
    }
};

template <class T>
int wm_launch(const void* fiv, const double* w, void* mean, void* var, long C, long Tn, long K, int device,
              cudaStream_t stream) {
    DeviceGuard g(device);
    if (g.err != cudaSuccess) return (int)g.err;
    if (C > 65535) {  // grid.y limit: launch in chunks of classes
        for (long c0 = 0; c0 < C; c0 += 65535) {
            const long cn = (C - c0 < 65535) ? C - c0 : 65535;
            int e = wm_launch<T>((const T*)fiv + c0 * Tn * K, w + c0 * Tn, (T*)mean + c0 * K, (T*)var + c0 * K,
                                 cn, Tn, K, device, stream);
            if (e) return e;
        }
        return 0;
    }
    const int threads = 128;
    dim3 grid((unsigned)((K + threads - 1) / threads), (unsigned)C);
    wm_kernel<T><<<grid, threads, 0, stream>>>((const T*)fiv, w, (T*)mean, (T*)var, C, Tn, K);
    return (int)cudaGetLastError();
}

template <class T>
int pearson_launch(const void* x, void* work, void* out, long n, long K, int clip, int device,
                   cudaStream_t stream) {
    DeviceGuard g(device);
    if (g.err != cudaSuccess) return (int)g.err;
    prep_kernel<T><<<(unsigned)n, PREP_THREADS, 0, stream>>>((const T*)x, (T*)work, n, K, clip);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return (int)e;
    const unsigned nb = (unsigned)((n + TILE - 1) / TILE);
    syrk_kernel<T><<<dim3(nb, nb), dim3(16, 16), 0, stream>>>((const T*)work, (T*)out, n, K);
    return (int)cudaGetLastError();
}

}  // namespace

extern "C" int dr_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device / insufficient driver" error
        return 0;
    }
    return n;
}

extern "C" const char* dr_cuda_error_string(int err) { return cudaGetErrorString((cudaError_t)err); }

extern "C" int dr_cuda_weighted_moments(const void* fiv, const double* w, void* mean, void* var, long C, long T,
                                        long K, int is_double, int device, void* stream) {
    cudaStream_t s = (cudaStream_t)stream;
    return is_double ? wm_launch<double>(fiv, w, mean, var, C, T, K, device, s)
                     : wm_launch<float>(fiv, w, mean, var, C, T, K, device, s);
}

extern "C" int dr_cuda_pearson(const void* x, void* work, void* out, long n, long K, int is_double,
                               int clip_negative, int device, void* stream) {
    cudaStream_t s = (cudaStream_t)stream;
    return is_double ? pearson_launch<double>(x, work, out, n, K, clip_negative, device, s)
                     : pearson_launch<float>(x, work, out, n, K, clip_negative, device, s);
}
