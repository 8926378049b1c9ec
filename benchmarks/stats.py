"""Benchmark the native ensemble statistics (deepresolve_captum._C) against numpy, side by side.

    python benchmarks/stats.py [--repeats 11] [--big-repeats 3] [--no-big] [--dtypes float32,float64]
                               [--tmpdir DIR] [--threads N] [--cuda] [--gap 0.2] [--warm N]

Cases (issue 3):
  IL       weighted_moments at (919, 10, 480)               native vs weighted_moments_numpy
  Pearson  (919, 480) and (2,002, 960), clip_negative=True  native vs pearson_numpy
  Pearson  (21,907, 960) into a memmap (blocked)            native vs pearson_numpy(out=memmap)
           float32 only by default (a 21,907^2 float64 matrix is 3.8 GB per side)
  --cuda   the CUDA kernels vs the same torch ops on the GPU (pearson_torch /
           weighted_moments_torch on CUDA tensors), when a GPU and a CUDA build are there.

"native" is deepresolve_captum._C on the CPU: for Pearson, one pass over x for the row statistics
and the packing, a hand-written SYRK micro-kernel on the upper triangle (the ISA's tile picked at
run time, "native ISA" below), the lower triangle written from the tiles and the upper one by a
blocked transpose, on its own std::thread pool; no BLAS. "numpy" is the float64
reference (pearson_numpy: numpy preparation, then f @ f.T in numpy's OpenBLAS with its own threads,
clip, diagonal, astype), so for float32 input numpy multiplies in float64 and native in float32
(summed in float64 every 128 products), both within the tests' 1e-5.

Threads: ``--threads N`` sets both sides to N, the native pool (``_C.set_num_threads``) and
numpy's BLAS (``threadpoolctl.threadpool_limits``); without it each side keeps its own default
(the native pool: DEEPRESOLVE_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs it may use; OpenBLAS:
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the CPU count). The header prints both counts as
the run uses them.

Both sides run on the same inputs, alternating (native, numpy, numpy, native, ...) within one
run, so load from other processes hits both alike; medians over the repeats. By default each
timed call starts after --gap idle seconds: OpenBLAS's threads spin after a BLAS call, and back
to back that spinning lands on (and slows) whichever call comes next. Such a cold call also
pays for CPUs that idled (on our 2-core VM the native (919, 480) float64 Pearson took 6.6-7.9 ms
after 0.2 s idle and 4.6-4.9 ms back to back), which weighs more on the shorter call. --warm N
measures the other regime, the one of a pipeline that calls these right after other work: turns
of N calls of one side back to back. Either way numpy's own time there is bimodal (about 7 ms,
or 13-15 ms when the guest scheduler packs OpenBLAS's two threads onto one CPU), so quote
ratios from several runs. Timings include
each side's argument checks and output allocation (not the memmap file's creation). The ratio
is numpy / native wall-clock medians: above 1 the native kernel is faster. For the in-memory
Pearson cases a third callable runs in the same rotation: numpy's bare ``f @ f.T`` on the
prepared float64 matrix, which numpy hands to BLAS SYRK (it spots a matrix times its own
transpose and computes one triangle). The "ceiling" it prints, numpy / that product, is the
ratio a kernel would reach if it multiplied exactly as fast as OpenBLAS and spent nothing on the
row statistics, the clip, the mirror or the output: the native kernel cannot beat it by skipping
work, only by out-multiplying OpenBLAS's SYRK (for float32 input it multiplies in float32, twice
the lanes per instruction, which is how it gets past that line). "CPU" is the median
process CPU time per call (all threads; OpenBLAS's waiting threads spin, so it counts them): on a
machine shared with other work it shows the cost when wall-clock time mostly shows the neighbours.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deepresolve_captum import _stats
from deepresolve_captum.cli import int_at_least

DTYPES = ("float32", "float64")


def _load():
    try:
        return "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:
        return "n/a"


def side_by_side(native, reference, repeats, gap, sync=None, warm=0, product=None):
    """Alternate the two callables, each timed call after ``gap`` idle seconds; returns
    {"n"/"r": wall seconds per call, "cpu_n"/"cpu_r": process CPU seconds per call (all threads)}.

    With ``warm`` > 0, each turn is one untimed call and then ``warm`` timed calls of the same
    side back to back (the gap only between turns): the steady state of repeated calls on warm
    CPUs, with no spinning OpenBLAS threads left over from the other side.

    ``product``, if given, is a third callable timed in the same rotation under "p"/"cpu_p"
    (the bare matrix product inside the reference, for the ceiling in ``report``)."""
    sides = [("n", native), ("r", reference)] + ([("p", product)] if product is not None else [])
    t = {k: [] for tag, _ in sides for k in (tag, "cpu_" + tag)}
    for _, fn in sides:  # warm-up (pools, first-touch, lazy imports), not timed
        fn()
    for i in range(repeats):
        order = sides if i % 2 == 0 else sides[::-1]
        for tag, fn in order:
            if sync:
                sync()
            time.sleep(gap)
            if warm:
                fn()
            for _ in range(max(warm, 1)):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                if sync:
                    sync()
                t[tag].append(time.perf_counter() - t0)
                t["cpu_" + tag].append(time.process_time() - c0)
    return t


def report(name, t, ref_name="numpy"):
    """Print one case from ``side_by_side``'s timings: medians, the ratio, minima, CPU time."""
    med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    ratio = med["r"] / med["n"]
    print(f"{name:<44} native {med['n']:10.2f} ms   {ref_name} {med['r']:10.2f} ms   "
          f"{ref_name}/native {ratio:5.2f}x   (min {min(t['n']) * 1e3:.2f} / {min(t['r']) * 1e3:.2f} ms; "
          f"CPU {med['cpu_n']:.1f} / {med['cpu_r']:.1f} ms; n={len(t['n'])})")
    if "p" in t:
        print(f"{'':<44}   ceiling: numpy's f @ f.T alone {med['p']:.2f} ms, so a kernel that multiplies as "
              f"fast as OpenBLAS and does nothing else would be {med['r'] / med['p']:.2f}x numpy")
    return ratio


def blas_threads():
    """numpy's BLAS libraries as threadpoolctl sees them: a list of (library, version, threads)
    (empty when threadpoolctl finds none)."""
    from threadpoolctl import threadpool_info
    return [(i.get("internal_api"), i.get("version"), i.get("num_threads"))
            for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_text():
    """The header's description of numpy's BLAS threads."""
    libs = blas_threads()
    if not libs:
        return "numpy's BLAS: threadpoolctl sees none"
    return "numpy BLAS " + ", ".join(f"{name} {ver}: {n} threads" for name, ver, n in libs)


def _dtypes(text):
    """argparse type of --dtypes: a comma-separated subset of DTYPES."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in names if d not in DTYPES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(DTYPES)}, "
                                         f"got {text!r}")
    return list(dict.fromkeys(names))


def _seconds(text):
    """argparse type of --gap: a finite number of seconds >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def _threads(v):
    """argparse type of --threads: 0 (each side's default) to 4096."""
    n = int_at_least(0)(v)
    if n > 4096:
        raise argparse.ArgumentTypeError(f"must be 0 to 4096, got {n}")
    return n


def cuda_skip_reason():
    """Why ``--cuda`` cannot run here (a line for the output), or None when it can.
    cuda_native_available() alone is also False without the DEEPRESOLVE_CUDA_KERNELS=1 opt-in,
    which the skip message used to leave out."""
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU here"
    C = _stats._C
    if C is None or not getattr(C, "has_cuda", False):
        return ("_C was built without CUDA (DEEPRESOLVE_CUDA=0, or nvcc missing or failing at "
                "build time)")
    if not _stats._cuda_kernels_opted_in():
        return "the CUDA kernels are opt-in: set DEEPRESOLVE_CUDA_KERNELS=1"
    if not _stats.native_available():
        return "the native kernels are switched off (DEEPRESOLVE_NO_NATIVE)"
    if not _stats.cuda_native_available():
        return ("_C's CUDA runtime sees no GPU (a driver older than the CUDA toolkit _C was built "
                "with?)")
    return None


def parse_args(argv=None):
    """The command line; out-of-range values are usage errors (--repeats 0 ended in
    StatisticsError, --dtypes foo in a numpy TypeError, --gap -1 in time.sleep's ValueError)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int_at_least(1), default=11)
    ap.add_argument("--big-repeats", type=int_at_least(1), default=3)
    ap.add_argument("--no-big", action="store_true", help="skip the 21,907 x 960 case")
    ap.add_argument("--big-dtype", default="float32", choices=DTYPES)
    ap.add_argument("--dtypes", type=_dtypes, default="float32,float64",
                    help=f"comma-separated subset of {','.join(DTYPES)} (default: both)")
    ap.add_argument("--tmpdir", default=None, help="where the 21,907^2 memmaps go (default: system temp)")
    ap.add_argument("--threads", type=_threads, default=0, metavar="N",
                    help="threads of both sides, 1 to 4096: the native pool and numpy's BLAS "
                         "(threadpoolctl); 0 (default): each side's own default, printed in the header")
    ap.add_argument("--cuda", action="store_true", help="also the CUDA kernels vs torch on the GPU")
    ap.add_argument("--gap", type=_seconds, default=0.2,
                    help="idle seconds before each timed call (default 0.2), so that OpenBLAS's "
                         "worker threads, which spin for a while after each BLAS call, are asleep "
                         "again and do not eat the next call's CPU (0: back to back)")
    ap.add_argument("--warm", type=int_at_least(0), default=0,
                    help="steady state instead: each turn is one untimed call, then this many timed "
                         "calls back to back (default 0: every timed call starts after --gap idle "
                         "seconds, a cold call)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    C = _stats._C
    if C is None or not _stats.native_available():
        raise SystemExit("deepresolve_captum._C is not built or is switched off (DEEPRESOLVE_NO_NATIVE)")
    if args.threads:
        from threadpoolctl import threadpool_limits
        C.set_num_threads(args.threads)
        # kept for the whole run (not a with-block): both sides of every ratio at N threads
        threadpool_limits(limits=args.threads, user_api="blas")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; native ISA {C.isa()} "
          f"(of {C.available_isas()}), {C.num_threads()} native threads; numpy {np.__version__}, "
          f"{blas_text()}" + ("" if args.threads else " (each side's default; --threads N sets both)")
          + f"; load {_load()}")
    print(f"# timing: " + (f"steady state, turns of 1 untimed + {args.warm} timed calls back to back, "
                           f"{args.gap} s idle between turns (IL and Pearson 919 / 2,002; the "
                           f"memmap and CUDA cases stay cold)" if args.warm else
                           f"cold calls, each after {args.gap} s idle"))
    rng = np.random.default_rng(0)
    dtypes = [np.dtype(d) for d in args.dtypes]

    for dt in dtypes:
        fiv = rng.standard_normal((919, 10, 480)).astype(dt)
        w = rng.random((919, 10)) + 0.01
        t = side_by_side(lambda: _stats.weighted_moments(fiv, w),
                         lambda: _stats.weighted_moments_numpy(fiv, w), args.repeats, args.gap,
                         warm=args.warm)
        report(f"IL weighted_moments (919, 10, 480) {dt.name}", t)

    for shape in ((919, 480), (2002, 960)):
        for dt in dtypes:
            x = (rng.standard_normal(shape) + 0.2).astype(dt)
            f = np.ascontiguousarray(x, dtype=np.float64)  # the reference multiplies in float64
            t = side_by_side(lambda: _stats.pearson(x, clip_negative=True),
                             lambda: _stats.pearson_numpy(x, clip_negative=True), args.repeats, args.gap,
                             warm=args.warm, product=lambda: f @ f.T)
            report(f"Pearson {shape} {dt.name}", t)

    if not args.no_big:
        dt = np.dtype(args.big_dtype)
        n, k = 21907, 960
        x = (rng.standard_normal((n, k)) + 0.2).astype(dt)
        with tempfile.TemporaryDirectory(dir=args.tmpdir) as d:
            mm_n = np.lib.format.open_memmap(Path(d) / "native.npy", mode="w+", dtype=dt, shape=(n, n))
            mm_r = np.lib.format.open_memmap(Path(d) / "numpy.npy", mode="w+", dtype=dt, shape=(n, n))
            block = 2048
            print(f"# {n} x {n} {dt.name} = {n * n * dt.itemsize / 2**30:.2f} GiB per memmap, in {d}; "
                  f"block_size {block}; load {_load()}")
            t = side_by_side(
                lambda: _stats.pearson(x, clip_negative=True, out=mm_n, block_size=block),
                lambda: _stats.pearson_numpy(x, clip_negative=True, out=mm_r, block_size=block),
                args.big_repeats, args.gap)
            report(f"Pearson ({n}, {k}) {dt.name} -> memmap", t)
            rows = rng.choice(n, size=64, replace=False)
            diff = float(np.abs(mm_n[rows].astype(np.float64) - mm_r[rows]).max())
            print(f"# max |native - numpy| over 64 sampled rows of the memmaps: {diff:.2e}")
            del mm_n, mm_r

    if args.cuda:
        import torch
        reason = cuda_skip_reason()
        if reason:
            print(f"# --cuda: {reason}; skipped")
        else:
            dev = torch.device("cuda")
            print(f"# GPU: {torch.cuda.get_device_name(dev)}")
            sync = torch.cuda.synchronize
            for dt in (torch.float32, torch.float64):
                fiv = torch.randn(919, 10, 480, dtype=dt, device=dev)
                w = torch.rand(919, 10, dtype=torch.float64, device=dev) + 0.01
                t = side_by_side(lambda: _stats.weighted_moments(fiv, w),
                                 lambda: _stats.weighted_moments_torch(fiv, w),
                                 args.repeats, args.gap, sync=sync)
                report(f"CUDA IL (919, 10, 480) {str(dt)[6:]}", t, ref_name="torch")
                for shape in ((919, 480), (2002, 960), (21907, 960)):
                    x = torch.randn(*shape, dtype=dt, device=dev) + 0.2
                    t = side_by_side(lambda: _stats.pearson(x, clip_negative=True),
                                     lambda: _stats.pearson_torch(x, clip_negative=True),
                                     args.repeats, args.gap, sync=sync)
                    report(f"CUDA Pearson {shape} {str(dt)[6:]}", t, ref_name="torch")
    print(f"# load at the end {_load()}")


if __name__ == "__main__":
    main()
