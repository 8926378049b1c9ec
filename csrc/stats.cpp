// Weighted moments over starts (the inconsistency level) and Pearson correlation over rows
// (class similarity). CPU; threads from a small std::thread parallel_for (see below).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <pthread.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <sched.h>
#endif
#include <thread>
#include <utility>
#include <vector>

#include "stats.hpp"

namespace dr {

// The most worker threads per call: DEEPRESOLVE_NUM_THREADS / OMP_NUM_THREADS above it are ignored,
// set_num_threads above it is refused.
constexpr int kMaxThreads = 4096;

// A positive whole number, blanks around it allowed (OMP_NUM_THREADS may go on with ",inner
// levels", of which the first is ours); anything else ("2abc", "0", "") is -1 and the variable is
// skipped. deepresolve_captum._stats warns about a DEEPRESOLVE_NUM_THREADS it cannot read.
int parse_threads(const char* e, bool omp_list) {
    static_assert(kMaxThreads == 4096, "the Python warning and the docs say 1 to 4096");
    if (!e) return -1;
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(e, &end, 10);
    if (end == e || errno == ERANGE || v <= 0 || v > kMaxThreads) return -1;
    while (*end == ' ' || *end == '\t' || *end == '\n') ++end;
    return (*end == '\0' || (omp_list && *end == ',')) ? (int)v : -1;
}

// ---- threads ---------------------------------------------------------------------------------
// A small persistent pool with dynamic chunks, not OpenMP. Why: torch's wheel ships its own
// libgomp.so.1 and, loaded first, it is the one our extension binds to; its spinning barriers
// (OMP_WAIT_POLICY cannot be changed once it is loaded) made these kernels 5-7x slower than
// single-threaded on a loaded 2-core machine. Here idle workers sleep on a condition variable, and
// the caller works too and waits only for chunks that some thread has *claimed*: a worker the OS
// has not scheduled yet costs nothing (it finds the work gone when it wakes).
//
// A worker woken after a long sleep may be queued on the caller's own CPU and stay there (it then
// only time-shares that CPU with the caller): measured on this project's 2-vCPU VM, whose guest
// kernel packs wakeups onto busy vCPUs (sched_vcpu_pack) so that idle ones can sleep on the host.
// Pearson 919 x 480 float64 with 2 threads, quiet machine: 5.0 ms per call back to back, but
// 10 ms (CPU time == wall time, the worker on the caller's CPU in the traces) with 0.2 s of
// idling between calls. So a worker that finds itself on the caller's CPU moves off it: it drops
// that CPU from its affinity mask (the kernel migrates it at once) and restores the mask (which
// does not move it back). Linux only; a mask with no other CPU is left alone.
namespace {
#ifdef __linux__
int current_cpu() { return sched_getcpu(); }
void move_off_cpu(int cpu) {
    if (cpu < 0 || sched_getcpu() != cpu) return;
    cpu_set_t mask, other;
    if (sched_getaffinity(0, sizeof mask, &mask) != 0 || cpu >= CPU_SETSIZE) return;
    other = mask;
    CPU_CLR(cpu, &other);
    if (CPU_COUNT(&other) == 0) return;
    if (sched_setaffinity(0, sizeof other, &other) == 0) sched_setaffinity(0, sizeof mask, &mask);
}
#else
int current_cpu() { return -1; }
void move_off_cpu(int) {}
#endif

// The CPUs this process may run on (taskset, a container's cpuset), not all online CPUs: two
// workers on one allowed CPU only time-share it.
int usable_cpus() {
#ifdef __linux__
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0) {
        const int n = CPU_COUNT(&mask);
        if (n > 0) return n;
    }
#endif
    const unsigned h = std::thread::hardware_concurrency();
    return h ? (int)h : 1;
}

int initial_threads() {
    int n = parse_threads(std::getenv("DEEPRESOLVE_NUM_THREADS"), false);
    if (n > 0) return n;
    n = parse_threads(std::getenv("OMP_NUM_THREADS"), true);
    if (n > 0) return n;
    return std::min(usable_cpus(), kMaxThreads);
}
std::atomic<int> g_threads{initial_threads()};

struct Job {
    std::function<void(long, long, int)> f;
    long n = 0, chunk = 1, nchunks = 0;
    int nworkers = 0;  // pool workers allowed to join (the caller is one more)
    int caller_cpu = -1;
    std::atomic<long> next{0}, done{0};
    std::mutex mu;
    std::condition_variable cv;
    std::exception_ptr err;

    void run(int tid) {  // claim chunks until none is left
        for (;;) {
            const long b = next.fetch_add(chunk);
            if (b >= n) return;
            try {
                f(b, std::min(n, b + chunk), tid);
            } catch (...) {
                std::lock_guard<std::mutex> g(mu);
                if (!err) err = std::current_exception();
            }
            if (done.fetch_add(1) + 1 == nchunks) {
                std::lock_guard<std::mutex> g(mu);
                cv.notify_all();
            }
        }
    }
};

class Pool {
  public:
    // Runs job with up to `workers` pool threads plus the caller; returns when every chunk is done.
    // Returns false (and runs nothing) if another caller holds the pool: run serially then.
    bool run(const std::shared_ptr<Job>& job, int workers) {
        std::unique_lock<std::mutex> busy(busy_mu_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        {
            std::lock_guard<std::mutex> g(mu_);
            while ((int)threads_.size() < workers) {
                const int idx = (int)threads_.size();
                threads_.emplace_back([this, idx] { loop(idx); });
            }
            job->nworkers = workers;
            job->caller_cpu = current_cpu();
            job_ = job;
            ++generation_;
        }
        cv_.notify_all();
        job->run(0);
        {
            std::unique_lock<std::mutex> g(job->mu);
            job->cv.wait(g, [&] { return job->done.load() >= job->nchunks; });
        }
        {
            std::lock_guard<std::mutex> g(mu_);
            job_.reset();
        }
        return true;
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> g(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.detach();  // never join at exit: workers may be mid-sleep
    }

  private:
    void loop(int idx) {
        long seen = 0;
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock<std::mutex> g(mu_);
                cv_.wait(g, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                job = job_;
            }
            if (job && idx < job->nworkers) {
                if (job->next.load() < job->n) move_off_cpu(job->caller_cpu);  // see above
                job->run(idx + 1);
            }
        }
    }
    std::mutex busy_mu_, mu_;
    std::condition_variable cv_;
    std::vector<std::thread> threads_;
    std::shared_ptr<Job> job_;
    long generation_ = 0;
    bool stop_ = false;
};

// Created on first use and leaked on purpose (no teardown-order issues at exit). After fork() the
// child gets fresh ones (see after_fork_in_child, below the scratch pool).
std::atomic<Pool*> g_pool{nullptr};

Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (!p) {
        Pool* fresh = new Pool();  // no threads yet: deleting a loser costs nothing
        if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) p = fresh;
        else delete fresh;
    }
    return *p;
}

// f(begin, end, worker) over [0, n) in chunks of `chunk`.
template <class F>
void parallel_for(long n, long chunk, F&& f) {
    if (n <= 0) return;
    chunk = std::max<long>(1, chunk);
    const long nchunks = (n + chunk - 1) / chunk;
    const int nt = (int)std::min<long>(g_threads.load(), nchunks);
    if (nt > 1) {
        auto job = std::make_shared<Job>();
        job->f = f;
        job->n = n;
        job->chunk = chunk;
        job->nchunks = nchunks;
        if (pool().run(job, nt - 1)) {
            if (job->err) std::rethrow_exception(job->err);
            return;
        }
    }
    f(0L, n, 0);
}
}  // namespace

int num_threads() { return g_threads.load(); }
void set_num_threads(int n) {
    // Workers, once started, stay (asleep) for the life of the process: bound them.
    if (n > kMaxThreads)
        throw std::invalid_argument("set_num_threads: n must be at most " + std::to_string(kMaxThreads) + ", got " +
                                    std::to_string(n));
    g_threads.store(n > 0 ? n : initial_threads());
}

namespace {

// 64-byte aligned scratch buffer (not zeroed: its one user clears what it uses, per use).
template <class T>
struct Aligned {
    T* p = nullptr;
    explicit Aligned(size_t n) {
        size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
        if (bytes == 0) bytes = 64;
        p = static_cast<T*>(std::aligned_alloc(64, bytes));
        if (!p) throw std::bad_alloc();
    }
    ~Aligned() { std::free(p); }
    Aligned(const Aligned&) = delete;
    Aligned& operator=(const Aligned&) = delete;
};

// Large scratch (the packed copies of x) is kept between calls: a fresh multi-megabyte allocation
// is mmap'ed and page-faulted in on every call, which costs more than the packing itself (a VM's
// page faults are slow). A small pool, so concurrent callers (the GIL is released) never share.
// It keeps at most 4 buffers and limit() bytes in all (64 MiB unless set_limit; freeing the
// oldest first); a bigger buffer is freed when its call ends, so a process that once correlated a
// big matrix no longer holds up to 4 GiB for its lifetime (review 14e F4: 785 MiB stayed
// resident after a (1000, 50000) float64 Pearson). Re-faulting a buffer above the limit costs
// little against a call with many rows (n^2 K / 2 multiply-adds), but repeated calls with few
// rows and many columns pay it each time: 1.2-1.55x slower at (500, 24000) to (100, 88000)
// float64 (review r3), where _C.set_scratch_limit(bytes) keeps them. release() frees everything
// kept (_C.release_scratch).
class ScratchPool {
  public:
    static constexpr size_t kDefaultKeepBytes = size_t(64) << 20;
    size_t limit() const { return limit_.load(std::memory_order_relaxed); }
    size_t set_limit(size_t bytes) {   // -> the previous limit; kept buffers above it are freed
        const size_t old = limit_.exchange(bytes, std::memory_order_relaxed);
        std::lock_guard<std::mutex> g(mu_);
        trim_locked();
        return old;
    }
    struct Lease {
        ScratchPool* pool;
        void* p;
        size_t bytes;
        ~Lease() { pool->give_back(p, bytes); }
    };
    std::unique_ptr<Lease> take(size_t bytes) {
        bytes = ((bytes + 4095) / 4096) * 4096;
        {
            std::lock_guard<std::mutex> g(mu_);
            for (size_t i = 0; i < free_.size(); ++i)
                if (free_[i].second >= bytes) {
                    auto e = free_[i];
                    free_.erase(free_.begin() + (long)i);
                    kept_ -= e.second;
                    return std::unique_ptr<Lease>(new Lease{this, e.first, e.second});
                }
        }
        void* p = std::aligned_alloc(4096, bytes);
        if (!p) throw std::bad_alloc();
        return std::unique_ptr<Lease>(new Lease{this, p, bytes});
    }
    void give_back(void* p, size_t bytes) {
        std::lock_guard<std::mutex> g(mu_);
        if (bytes > limit()) {
            std::free(p);
            return;
        }
        free_.push_back({p, bytes});
        kept_ += bytes;
        trim_locked();
    }
    size_t release() {
        std::lock_guard<std::mutex> g(mu_);
        const size_t n = kept_;
        for (auto& e : free_) std::free(e.first);
        free_.clear();
        kept_ = 0;
        return n;
    }
    size_t kept() {
        std::lock_guard<std::mutex> g(mu_);
        return kept_;
    }
    ~ScratchPool() {
        for (auto& e : free_) std::free(e.first);
    }

  private:
    void trim_locked() {   // mu_ held
        while (!free_.empty() && (free_.size() > 4 || kept_ > limit())) {
            kept_ -= free_.front().second;
            std::free(free_.front().first);
            free_.erase(free_.begin());
        }
    }
    std::mutex mu_;
    std::vector<std::pair<void*, size_t>> free_;
    size_t kept_ = 0;  // bytes in free_
    std::atomic<size_t> limit_{kDefaultKeepBytes};
};

std::atomic<ScratchPool*> g_scratch{nullptr};

ScratchPool& scratch() {
    ScratchPool* p = g_scratch.load(std::memory_order_acquire);
    if (!p) {
        ScratchPool* fresh = new ScratchPool();  // leaked on purpose, like the Pool
        if (g_scratch.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) p = fresh;
        else delete fresh;
    }
    return *p;
}

// fork() copies one thread into the child, and every mutex as it was: another Python thread in a
// native call (the GIL is released there) may hold the Pool's or the ScratchPool's lock, and its
// owner does not exist in the child, so the child's first native call would wait forever
// (reproduced: 1 fork in ~300 hung in ScratchPool::take). The child starts with fresh pools and
// leaks the old ones (their buffers stay as copy-on-write pages; nothing in the child refers to
// them: leases live only inside a native call, and the forking thread was not in one). Registered
// when the module loads, so a fork before the first threaded call is covered too.
void after_fork_in_child() {
    g_pool.store(nullptr, std::memory_order_release);
    g_scratch.store(nullptr, std::memory_order_release);
}
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);

template <class T>
KernelInfo<T> kernel_for();
template <>
KernelInfo<double> kernel_for<double>() { return kernel_double(); }
template <>
KernelInfo<float> kernel_for<float>() { return kernel_float(); }

// How many products a float accumulator may sum before it is added into double.
template <class T>
constexpr long kc_for() { return sizeof(T) == 4 ? 128 : (1L << 40); }  // float: <= 128 products

}  // namespace

// ------------------------------------------------------------------------------------------
template <class T>
int weighted_moments(const T* fiv, const double* w, long ws0, long ws1, long C, long Tn, long K,
                     T* mean, T* var, long* bad_class) {
    int status = 0;
    long first_bad = -1;
    std::mutex mu;
    auto flag = [&](int st, long c) {  // status 1 (bad weights) wins over 2 (non-finite), then class
        std::lock_guard<std::mutex> g(mu);
        if (status == 0 || st < status || (st == status && c < first_bad)) {
            status = st;
            first_bad = c;
        }
    };
    parallel_for(C, 8, [&](long cb, long ce, int) {
        std::vector<double> m(K), v(K), wn(Tn);
        for (long c = cb; c < ce; ++c) {
            double sum = 0.0;
            bool ok = true;
            for (long t = 0; t < Tn; ++t) {
                const double wt = w[c * ws0 + t * ws1];
                if (!(wt >= 0.0) || !std::isfinite(wt)) ok = false;
                wn[t] = wt;
                sum += wt;
            }
            if (!ok || !(sum > 0.0) || !std::isfinite(sum)) {
                flag(1, c);
                continue;
            }
            for (long t = 0; t < Tn; ++t) wn[t] /= sum;
            const T* base = fiv + c * Tn * K;
            std::fill(m.begin(), m.end(), 0.0);
            std::fill(v.begin(), v.end(), 0.0);
            double* __restrict mp = m.data();
            double* __restrict vp = v.data();
            for (long t = 0; t < Tn; ++t) {
                const double wt = wn[t];
                const T* __restrict row = base + t * K;
                for (long k = 0; k < K; ++k) mp[k] += wt * (double)row[k];
            }
            // Second pass over the class's T x K block (still in cache): centred squares.
            for (long t = 0; t < Tn; ++t) {
                const double wt = wn[t];
                const T* __restrict row = base + t * K;
                for (long k = 0; k < K; ++k) {
                    const double d = (double)row[k] - mp[k];
                    vp[k] += wt * d * d;
                }
            }
            // A NaN/inf anywhere in the class's FIVs poisons its mean (0 * inf is NaN too).
            // Checked after the cast to T: a float32 variance can overflow there only.
            bool finite = true;
            for (long k = 0; k < K; ++k) {
                const T mk = (T)mp[k], vk = (T)vp[k];
                finite &= std::isfinite(mk) && std::isfinite(vk);
                mean[c * K + k] = mk;
                var[c * K + k] = vk;
            }
            if (!finite) flag(2, c);
        }
    });
    if (bad_class) *bad_class = first_bad;
    return status;
}

template int weighted_moments<double>(const double*, const double*, long, long, long, long, long, double*,
                                      double*, long*);
template int weighted_moments<float>(const float*, const double*, long, long, long, long, long, float*,
                                     float*, long*);

// ------------------------------------------------------------------------------------------
// Pearson: row statistics in one fused pass per row (clip, NaN/inf check, min/max, mean, then the
// centred norm from the row still in cache), the normalised rows packed into MR- and NR-row panels,
// then the packed upper-triangle product, each tile written to the lower triangle and transposed.
namespace {

typedef double v2 __attribute__((vector_size(16)));

// The normalised rows, packed: MR-row panels (A) and NR-row panels (B). When NR divides MR, there
// is no B: an NR-row panel is a slice of an A panel, read with stride ldb = MR.
template <class T>
struct Packed {
    long n, K, MR, NR, nA, nB;  // nA/nB: number of MR/NR panels
    bool b_in_a;                // B read from A (NR | MR)
    std::unique_ptr<ScratchPool::Lease> A, B;
    T* a() const { return static_cast<T*>(A->p); }
    T* b() const { return static_cast<T*>(B->p); }
    const T* apanel(long i) const { return a() + i * MR * K; }
    const T* bpanel(long j) const {
        return b_in_a ? apanel(j * NR / MR) + (j * NR) % MR : b() + j * NR * K;
    }
    long ldb() const { return b_in_a ? MR : NR; }
};

// A power of two 2^k near 1 / (hi - lo), the spread of a non-constant row: the row's statistics
// are computed on v * 2^k, so that the centred values are below 8 in magnitude and their squares
// neither overflow (|v| > 1e154) nor underflow (|v| < 1e-154) whatever the row's scale; Pearson
// does not depend on it. Multiplying by a power of two is exact (short of subnormal results), and
// so are the sums, the division by K, the square root and 1 / sqrt of the scaled values (each is
// the unscaled result times a power of two), so at ordinary scales every normalised value is bit
// for bit what it was without the scaling. The half spread is finite even where hi - lo is not;
// k is clamped so that 2^k is a normal number (spreads below 2^-1023 get 2^1023).
inline double spread_scale(double lo, double hi) {
    const long e = (long)std::ilogb(hi * 0.5 - lo * 0.5) + 1;  // ilogb(0) is INT_MIN (or -INT_MAX)
    return std::ldexp(1.0, (int)std::min(1023L, std::max(-1022L, -e)));
}

// The correction of the mean below is applied only when it changes a correlation by more than
// about 2^-53 (half an ulp of 1): sd^2 / (K * ss) is the relative size of the mean's error in the
// row's norm. Below that it is rounding noise, and skipping it keeps every other row bit for bit
// as before. Counted (a copy of this arithmetic in numpy, K 480 and 4000): no row of N(0.3, 1)
// values, nor at offset / sd ratios up to 1e6; about half the rows at 1e8, all at 1e9.
constexpr double kMeanCorrection = 0x1p-53;

// One row's statistics in one pass (clip, NaN/inf check, min/max, sum), then the centred sums
// from the row still in cache. rp gets the row as double, clipped and scaled by
// spread_scale(lo, hi). Sets mh, ml and sc so that ((rp[p] - mh) - ml) * sc is the normalised
// value (all 0 for an exactly constant row: it stays all-zero, 0 against the others).
// The mean is mh + ml: mh = s / K (scaled) from the first pass, and ml, when the sums show mh to
// be off (a naive sum of K values near a large offset: 1e8 +- 1e-3 gave correlations off by 4e-9),
// the centred values' own mean, with the centred sum of squares corrected to match (the
// corrected two-pass algorithm of Chan, Golub & LeVeque); ml is 0 otherwise. Returns false for a
// NaN/inf only: finite values never overflow the scaled sums.
template <class T>
bool row_stats(const T* xi, long xs1, long K, bool clip, double* __restrict rp, double& mh_out,
               double& ml_out, double& sc_out) {
    if (xs1 == 1)
        for (long p = 0; p < K; ++p) rp[p] = (double)xi[p];
    else
        for (long p = 0; p < K; ++p) rp[p] = (double)xi[p * xs1];
    // Explicit 16-byte vectors (GCC/Clang extensions; the baseline SSE2/NEON width, wider ones
    // spill when compiled without -mavx): reductions vectorise without -ffast-math.
    // poison: 0 * v is 0 for finite v and NaN for NaN/inf; checked before clipping.
    const v2 zero2 = {0, 0};
    v2 sa = zero2, sb = zero2, za = zero2, zb = zero2;
    v2 loa = {INFINITY, INFINITY}, lob = loa, hia = -loa, hib = -loa;
    long p = 0;
    for (; p + 4 <= K; p += 4) {
        v2 va, vb;
        __builtin_memcpy(&va, rp + p, sizeof va);
        __builtin_memcpy(&vb, rp + p + 2, sizeof vb);
        za += va * 0.0;
        zb += vb * 0.0;
        if (clip) {
            va = va < zero2 ? zero2 : va;
            vb = vb < zero2 ? zero2 : vb;
            __builtin_memcpy(rp + p, &va, sizeof va);
            __builtin_memcpy(rp + p + 2, &vb, sizeof vb);
        }
        sa += va;
        sb += vb;
        loa = va < loa ? va : loa;
        lob = vb < lob ? vb : lob;
        hia = va > hia ? va : hia;
        hib = vb > hib ? vb : hib;
    }
    sa += sb;
    za += zb;
    loa = lob < loa ? lob : loa;
    hia = hib > hia ? hib : hia;
    double s = sa[0] + sa[1], z = za[0] + za[1];
    double lo = std::min(loa[0], loa[1]), hi = std::max(hia[0], hia[1]);
    for (; p < K; ++p) {
        double v = rp[p];
        z += v * 0.0;
        v = (clip && v < 0.0) ? 0.0 : v;
        rp[p] = v;
        s += v;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    mh_out = 0.0;
    ml_out = 0.0;
    sc_out = 0.0;
    if (z != 0.0) return false;  // NaN/inf
    if (!(hi > lo)) return true;  // an exactly constant row
    const double inv = spread_scale(lo, hi);
    double mh = (s / (double)K) * inv;  // exactly the scaled s / K (when s is finite)
    if (!std::isfinite(s)) {  // finite values (|v| near DBL_MAX) whose sum overflows: rare, scalar
        double s2 = 0.0;
        for (long q = 0; q < K; ++q) s2 += rp[q] * inv;
        mh = s2 / (double)K;
    }
    // Second pass: scale the row in place, then the centred sums.
    v2 qa = zero2, qb = zero2, da = zero2, db = zero2;
    long q = 0;
    for (; q + 4 <= K; q += 4) {
        v2 va, vb;
        __builtin_memcpy(&va, rp + q, sizeof va);
        __builtin_memcpy(&vb, rp + q + 2, sizeof vb);
        va *= inv;
        vb *= inv;
        __builtin_memcpy(rp + q, &va, sizeof va);
        __builtin_memcpy(rp + q + 2, &vb, sizeof vb);
        va -= mh;
        vb -= mh;
        da += va;
        db += vb;
        qa += va * va;
        qb += vb * vb;
    }
    qa += qb;
    da += db;
    double ss = qa[0] + qa[1], sd = da[0] + da[1];
    for (; q < K; ++q) {
        rp[q] *= inv;
        const double d = rp[q] - mh;
        sd += d;
        ss += d * d;
    }
    double ml = 0.0;
    if (sd * sd > (double)K * ss * kMeanCorrection) {
        ml = sd / (double)K;
        ss -= sd * ml;
    }
    mh_out = mh;
    ml_out = ml;
    sc_out = ss > 0.0 ? 1.0 / std::sqrt(ss) : 0.0;
    return true;
}

// rows x K doubles (row stride K) -> P-row panels, element [p * P + r]; rows >= `rows` are 0.
// Written in destination order (sequential stores; the P source rows stay in L1 across p).
template <class T>
void to_panels(const double* buf, long rows, long K, long P, long npanels, T* dst) {
    for (long ip = 0; ip < npanels; ++ip) {
        T* __restrict d = dst + ip * P * K;
        const double* src = buf + ip * P * K;
        const long nr = std::max(0L, std::min(P, rows - ip * P));
        for (long p = 0; p < K; ++p, d += P) {
            for (long r = 0; r < nr; ++r) d[r] = (T)src[r * K + p];
            for (long r = nr; r < P; ++r) d[r] = (T)0;
        }
    }
}

// The rows, L = lcm(MR, NR) at a time (one chunk per task): each row's statistics and normalised
// values into a chunk buffer (x is read once), then the chunk's MR-row panels (A) and NR-row
// panels (B) from the buffer. Returns the first row with a NaN/inf, or -1.
template <class T>
long pack_rows(const T* x, long xs0, long xs1, long n, long K, bool clip, Packed<T>& P) {
    const long MR = P.MR, NR = P.NR;
    long L = MR;
    while (L % NR) L += MR;  // lcm(MR, NR)
    const long nchunks = (n + L - 1) / L;
    long bad = -1;
    std::mutex bad_mu;
    parallel_for(nchunks, 1, [&](long cb, long ce, int) {
        auto lease = scratch().take(sizeof(double) * (size_t)std::min(L, n) * K);  // rows used
        double* buf = static_cast<double*>(lease->p);
        for (long c = cb; c < ce; ++c) {
            const long r0 = c * L, rows = std::min(L, n - r0);
            for (long r = 0; r < rows; ++r) {
                double* __restrict rp = buf + r * K;
                double mh, ml, sc;
                if (!row_stats(x + (r0 + r) * xs0, xs1, K, clip, rp, mh, ml, sc)) {
                    std::lock_guard<std::mutex> g(bad_mu);
                    if (bad < 0 || r0 + r < bad) bad = r0 + r;
                    continue;
                }
                for (long p = 0; p < K; ++p) rp[p] = ((rp[p] - mh) - ml) * sc;  // ml: mostly 0
            }
            to_panels(buf, rows, K, MR, std::min(L / MR, P.nA - r0 / MR), P.a() + r0 * K);
            if (!P.b_in_a)
                to_panels(buf, rows, K, NR, std::min(L / NR, P.nB - r0 / NR), P.b() + r0 * K);
        }
    });
    return bad;
}

inline double clip1(double r) { return r > 1.0 ? 1.0 : (r < -1.0 ? -1.0 : r); }

// K is cut into slices of kslice() steps; each slice's partial tile is added into the double
// accumulators in memory. Measured on the AVX-512 EPYC (1 thread, 2002 x 960 float64, 10 row panels
// per task): kc 96: 89.2 ms, 192: 86.7, 384: 81.3, 512: 81.5, 960 (no slicing): 82.3, 2048: 82.0;
// at 919 x 480 within 2% of each other. Streaming the panels from L2 keeps up with the FMAs here,
// so slices that keep a column panel in L1 (kc ~ 128-192) only add tile traffic. float32: 128 to
// 512 all the same (its products are summed in float for at most kc_for<float>() = 128 steps).
template <class T>
long kslice() {
    static const long v = [] {
        const char* e = std::getenv("DEEPRESOLVE_KC");  // tuning knob, not a user setting
        long k = e ? std::atol(e) : 0;
        return k > 0 ? k : (sizeof(T) == 4 ? 256L : 512L);
    }();
    return v;
}

// Rows [r0, r1) of the upper triangle: out[i, j] for j >= i, and their mirror out[j, i]. The
// tiles (column-major) are written to the lower triangle only, as contiguous runs of the group's
// rows in each row j; the task then fills its rows' upper part by a blocked transpose of the strip
// it wrote. (Writing each tile both ways wrote 12-value pieces of rows i that were evicted before
// the next tile completed their cache lines: 1.4 of 9.2 ms at 919 x 480 float64, now 0.7.)
// `out` is row 0 of the whole matrix. Every pair (a < b) is owned by the task holding row a: no
// write races.
template <class T>
void upper_rows(const Packed<T>& P, const KernelInfo<T>& ki, long r0, long r1, T* out, long ldo) {
    const long n = P.n, K = P.K, MR = ki.MR, NR = ki.NR;
    const long p0 = r0 / MR, p1 = (r1 + MR - 1) / MR;  // row panels
    // Row panels per task: more reuse of each column panel (and longer runs of out rows) with
    // more, but enough tasks for every thread (>= 4 each, for balance: the tasks shrink along
    // the triangle). Measured, 1 thread, 2002 x 960 float64: 4 panels 92.9 ms, 6: 88.8, 8: 87.4,
    // 12: 84.7 (20: 85.3); 919 x 480 and float32: no difference. Results do not depend on it.
    const long group = std::max(4L, std::min(12L, (p1 - p0) / (4L * std::max(1, g_threads.load()))));
    const long ntasks = (p1 - p0 + group - 1) / group;
    const long kc = kslice<T>();
    const long kf = kc_for<T>();
    const long ldb = P.ldb();
    constexpr long TB = 48;
    parallel_for(ntasks, 1, [&](long tb, long te, int) {
        Aligned<double> acc((size_t)group * MR * NR);
        for (long task = tb; task < te; ++task) {
            const long ga = p0 + task * group, gb = std::min(p1, ga + group);
            const long row_lo = ga * MR, row_hi = std::min(r1, gb * MR);  // the task's rows
            long done_to = row_lo;  // columns [row_lo, done_to) of its upper part are written
            for (long jp = row_lo / NR; jp < P.nB; ++jp) {
                const long c0 = jp * NR, c1 = std::min(n, c0 + NR);
                // Row panels of the group with a tile on or above the diagonal: those whose first
                // row is <= the panel's last column (a tile wholly below it is never needed: its
                // values are the mirror of tiles some task computes above the diagonal).
                const long ip_end = std::min(gb, (c1 - 1) / MR + 1);
                if (ip_end <= ga) continue;
                std::memset(acc.p, 0, sizeof(double) * (ip_end - ga) * MR * NR);
                for (long k0 = 0; k0 < K; k0 += kc) {
                    const long kn = std::min(kc, K - k0);
                    const T* b = P.bpanel(jp) + k0 * ldb;
                    for (long ip = ga; ip < ip_end; ++ip)
                        ki.fn(P.apanel(ip) + k0 * MR, b, ldb, kn, kf, acc.p + (ip - ga) * MR * NR);
                }
                // Lower triangle only, row j of out: (j, i) for i <= j, the group's rows i being
                // contiguous in each tile column (GROUP * MR values per row j, vectorised).
                for (long j = c0; j < c1; ++j) {
                    T* mrow = out + j * ldo;
                    for (long ip = ga; ip < ip_end; ++ip) {
                        const long i0 = ip * MR, ie = std::min(std::min(r1, i0 + MR), j);
                        const double* tcol = acc.p + (ip - ga) * MR * NR + (j - c0) * MR - i0;
                        for (long i = i0; i < ie; ++i) mrow[i] = (T)clip1(tcol[i]);
                    }
                    if (j >= row_lo && j < row_hi) mrow[j] = (T)1;
                }
                // Upper triangle of the group's rows: a transpose of the strip just written (only
                // this task writes out[j, i] for i in its rows), every TB columns while the strip
                // is still in cache, so rows i get runs of >= TB values rather than NR-value pieces.
                if (c1 - done_to >= TB || c1 == n) {
                    for (long i = row_lo; i < row_hi; ++i) {
                        T* __restrict orow = out + i * ldo;
                        const T* __restrict col = out + i;
                        for (long j = std::max(done_to, i + 1); j < c1; ++j) orow[j] = col[j * ldo];
                    }
                    done_to = c1;
                }
            }
        }
    });
}

}  // namespace

template <class T>
int pearson_into(const T* x, long xs0, long xs1, long n, long K, bool clip_negative, T* out, long ldo,
                 long block_rows, long* bad_row) {
    const KernelInfo<T> ki = kernel_for<T>();
    Packed<T> P;
    P.n = n;
    P.K = K;
    P.MR = ki.MR;
    P.NR = ki.NR;
    P.nA = (n + ki.MR - 1) / ki.MR;
    P.nB = (n + ki.NR - 1) / ki.NR;
    P.A = scratch().take(sizeof(T) * (size_t)P.nA * ki.MR * K);  // pack_rows writes it all
    P.b_in_a = ki.MR % ki.NR == 0;
    if (!P.b_in_a) P.B = scratch().take(sizeof(T) * (size_t)P.nB * ki.NR * K);
    const long bad = pack_rows(x, xs0, xs1, n, K, clip_negative, P);
    if (bad >= 0) {
        if (bad_row) *bad_row = bad;
        return 2;
    }
    // Row blocks are whole multiples of MR so that panels never straddle two blocks.
    long br = block_rows <= 0 ? n : std::min(block_rows, n);  // (rounding up LONG_MAX overflowed)
    br = std::max<long>(ki.MR, (br + ki.MR - 1) / ki.MR * ki.MR);
    for (long r0 = 0; r0 < n; r0 += br) {
        const long r1 = std::min(n, r0 + br);
        upper_rows(P, ki, r0, r1, out, ldo);
    }
    return 0;
}

size_t scratch_bytes() { return scratch().kept(); }

size_t set_scratch_limit(size_t bytes) { return scratch().set_limit(bytes); }

size_t scratch_limit() { return scratch().limit(); }

size_t release_scratch() {
    const size_t n = scratch().release();
#ifdef __GLIBC__
    malloc_trim(0);  // buffers below glibc's mmap threshold went back to an arena, not the OS
#endif
    return n;
}

template int pearson_into<double>(const double*, long, long, long, long, bool, double*, long, long, long*);
template int pearson_into<float>(const float*, long, long, long, long, bool, float*, long, long, long*);

}  // namespace dr
