// Instantiates the SYRK micro-kernel once per instruction set and picks one at run time, so a
// portable build (no -march) still uses AVX2/AVX-512 where the CPU has them.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "stats.hpp"

// Generic: whatever the compiler's baseline is (SSE2 on x86-64, NEON on aarch64), 16-byte vectors.
#define DR_NS generic
#define DR_TARGET
#define DR_VBYTES 16
#define DR_MR_D 4
#define DR_NR_D 6
#define DR_MR_F 8
#define DR_NR_F 6
#include "microkernel.inc"  // #undefs its parameters at the end

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(DR_NO_X86_DISPATCH)
#define DR_X86 1
#define DR_NS avx2
#define DR_TARGET __attribute__((target("avx2,fma")))
#define DR_VBYTES 32
#define DR_MR_D 8
#define DR_NR_D 6
#define DR_MR_F 16
#define DR_NR_F 6
#include "microkernel.inc"  // #undefs its parameters at the end

// AVX-512: 24 x 8 tiles (24 accumulators; 3 vector loads + 8 broadcasts per 24 FMAs). NR divides
// MR, so the B panels are slices of the A panels and only one packed copy of x is made. Measured
// against 16 x 12 with a packed B (919 x 480 float64, 1 thread, min of 31): 9.58 vs 10.22 ms; at
// 2002 x 960 the same within noise. 32 x 6 and 16 x 8 were no better.
#define DR_NS avx512
#define DR_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
#define DR_VBYTES 64
#define DR_MR_D 24
#define DR_NR_D 8
#define DR_MR_F 48
#define DR_NR_F 8
#include "microkernel.inc"  // #undefs its parameters at the end
#endif

namespace dr {

namespace {
enum Isa { GENERIC = 0, AVX2 = 1, AVX512 = 2 };

bool cpu_has(Isa i) {
    if (i == GENERIC) return true;
#ifdef DR_X86
    __builtin_cpu_init();
    if (i == AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (i == AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
    return false;
}

Isa best() {
    if (cpu_has(AVX512)) return AVX512;
    if (cpu_has(AVX2)) return AVX2;
    return GENERIC;
}

Isa parse(const std::string& s) {
    if (s == "generic") return GENERIC;
    if (s == "avx2") return AVX2;
    if (s == "avx512") return AVX512;
    if (s == "auto" || s.empty()) return best();
    throw std::invalid_argument("unknown instruction set '" + s + "' (auto, avx512, avx2, generic)");
}

Isa initial() {
    const char* env = std::getenv("DEEPRESOLVE_ISA");
    if (env == nullptr) return best();
    try {
        Isa i = parse(env);
        return cpu_has(i) ? i : best();
    } catch (...) {
        return best();
    }
}

Isa g_isa = initial();
const char* names[] = {"generic", "avx2", "avx512"};
}  // namespace

std::string isa() { return names[g_isa]; }

std::string available_isas() {
    std::string s = "generic";
    if (cpu_has(AVX2)) s += ",avx2";
    if (cpu_has(AVX512)) s += ",avx512";
    return s;
}

void set_isa(const std::string& name) {
    Isa i = parse(name);
    if (!cpu_has(i)) throw std::invalid_argument("this CPU (or this build) does not support " + name);
    g_isa = i;
}

KernelInfo<double> kernel_double() {
#ifdef DR_X86
    if (g_isa == AVX512) return {&avx512::ukernel<double, avx512::MR_D, avx512::NR_D>, avx512::MR_D, avx512::NR_D};
    if (g_isa == AVX2) return {&avx2::ukernel<double, avx2::MR_D, avx2::NR_D>, avx2::MR_D, avx2::NR_D};
#endif
    return {&generic::ukernel<double, generic::MR_D, generic::NR_D>, generic::MR_D, generic::NR_D};
}

KernelInfo<float> kernel_float() {
#ifdef DR_X86
    if (g_isa == AVX512) return {&avx512::ukernel<float, avx512::MR_F, avx512::NR_F>, avx512::MR_F, avx512::NR_F};
    if (g_isa == AVX2) return {&avx2::ukernel<float, avx2::MR_F, avx2::NR_F>, avx2::MR_F, avx2::NR_F};
#endif
    return {&generic::ukernel<float, generic::MR_F, generic::NR_F>, generic::MR_F, generic::NR_F};
}

}  // namespace dr
