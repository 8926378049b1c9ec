"""Memory and time of plot_clustered_heatmap (build + savefig) on a float32 similarity matrix,
for the current plot.py and, with ``--before REV``, the plot.py of a git revision (default: the
commit before block means, e21f350, which copied the matrix to float64, reordered it whole and
let matplotlib shrink a C x C image to ~640 pixels).

    python benchmarks/heatmap_memory.py                  # C = 2,000 and 6,000, before and after
    python benchmarks/heatmap_memory.py --sizes 12000 --before ""   # the current code only

Each (version, C) runs in a fresh process, twice: once for the wall time and peak RSS (sampled
every 20 ms; "+MB" is over the RSS just before the call, when the matrix and its clustering
exist), once under tracemalloc (peak of the Python and numpy allocations during the call). The
matrix: class_similarity of 64 random features in 40 planted groups, clustered beforehand
(hierarchical_clustering, 40 flat clusters); the figure is saved at 150 dpi (save_figure's), by
every run of both versions alike: to os.devnull, or with ``--png DIR`` to DIR/heatmap_C.png
(the current plot.py) and DIR/heatmap_C_before.png (REV's), so the two sides' times hold the
same file writing. DIR is taken relative to the folder the command is run from and is created
before any work.
Takes ~1 minute on 2 cores for the defaults. Measured there (before -> after, 6,000 classes,
137 MB float32): 8.0 s -> 0.8 s, RSS +2,510 MB -> +75 MB, tracemalloc peak 2,507 -> 115 MB (~100
MB of it matplotlib saving at 150 dpi, whatever C). 2,000 classes are drawn cell by cell as before
(+335 MB, most of it matplotlib shrinking the 2,000 x 2,000 image).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from deepresolve_captum.cli import int_at_least

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(C, plot_path, mode, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from deepresolve_captum.clustering import hierarchical_clustering
    from deepresolve_captum.similarity import class_similarity

    if plot_path:   # an older plot.py, loaded as a module of the package (its relative imports)
        spec = importlib.util.spec_from_file_location("deepresolve_captum._plot_before", plot_path)
        P = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(P)
    else:
        import deepresolve_captum.plot as P
    rng = np.random.default_rng(0)
    groups = rng.standard_normal((40, 64))[rng.integers(0, 40, C)]
    sim = class_similarity((groups + 1.5 * rng.standard_normal((C, 64))).astype(np.float32))
    sim = np.asarray(sim, dtype=np.float32)
    cl = hierarchical_clustering(sim, n_clusters=40)
    out = {"C": C, "matrix_mb": sim.nbytes / 2 ** 20, "dtype": str(sim.dtype)}

    def call():
        fig = P.plot_clustered_heatmap(sim, cl)
        fig.savefig(png or os.devnull, dpi=150, format="png")
        plt.close(fig)

    if mode == "trace":
        import tracemalloc
        tracemalloc.start()
        call()
        out["trace_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    else:
        base = _rss_mb()
        peak = [base]
        done = threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.02)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        t0 = time.perf_counter()
        call()
        out["seconds"] = time.perf_counter() - t0
        done.set()
        t.join()
        peak[0] = max(peak[0], _rss_mb())
        out.update(rss_base_mb=base, rss_peak_mb=peak[0], rss_added_mb=peak[0] - base)
    print(json.dumps(out))


def run(C, plot_path, mode, png=""):
    """One child process; ``png`` must be absolute (the child runs in the checkout)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(C), "--mode", mode,
           "--plot-path", plot_path or "", "--png", png]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        return {"error": (res.stderr or res.stdout).strip().splitlines()[-1:] or res.returncode}
    return json.loads(res.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    """The command line. ``--png`` becomes an absolute path, resolved against the folder the
    command is run from (the children run in the checkout, where a relative one used to land),
    and the folder is created now (a usage error when it cannot be)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--sizes", type=int_at_least(40), nargs="+", default=[2000, 6000],
                    help="class counts, each at least 40 (the matrix is cut into 40 clusters; "
                         "default 2000 6000)")
    ap.add_argument("--before", default="e21f350",
                    help="git revision whose plot.py to compare with ('' for none)")
    ap.add_argument("--png", default="",
                    help="folder to save both versions' PNGs in (relative to the current folder; "
                         "created if missing); default: none, the figures go to os.devnull")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="rss", help=argparse.SUPPRESS)
    ap.add_argument("--plot-path", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.png and not a.child:
        a.png = os.path.abspath(a.png)
        if os.path.exists(a.png) and not os.path.isdir(a.png):
            ap.error(f"--png: {a.png} exists and is not a folder")
        try:
            os.makedirs(a.png, exist_ok=True)
        except OSError as e:
            ap.error(f"--png: cannot create {a.png}: {e.strerror or e}")
        if not os.access(a.png, os.W_OK | os.X_OK):
            ap.error(f"--png: cannot write to {a.png}")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.child:
        return child(a.child, a.plot_path, a.mode, a.png)

    versions = [("after", "")]
    tmp = None
    if a.before:
        src = subprocess.run(["git", "show", f"{a.before}:deepresolve_captum/plot.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        tmp = tempfile.NamedTemporaryFile("w", suffix="_plot_before.py", delete=False)
        tmp.write(src)
        tmp.close()
        versions.insert(0, (f"before ({a.before})", tmp.name))
    print(f"{'version':>20} {'C':>6} {'matrix MB':>9} {'seconds':>8} {'RSS peak MB':>11} "
          f"{'RSS +MB':>8} {'tracemalloc peak MB':>19}")
    try:
        for C in a.sizes:
            for name, path in versions:
                # both versions save alike (a file, or os.devnull), in both runs
                png = (os.path.join(a.png, f"heatmap_{C}{'_before' if path else ''}.png")
                       if a.png else "")
                r = run(C, path, "rss", png)
                t = run(C, path, "trace", png)
                if "error" in r or "error" in t:
                    print(f"{name:>20} {C:>6} failed: {r.get('error') or t.get('error')}")
                    continue
                print(f"{name:>20} {C:>6} {r['matrix_mb']:>9.0f} {r['seconds']:>8.2f} "
                      f"{r['rss_peak_mb']:>11.0f} {r['rss_added_mb']:>8.0f} "
                      f"{t['trace_peak_mb']:>19.1f}", flush=True)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)


if __name__ == "__main__":
    main()
