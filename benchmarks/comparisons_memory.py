"""Peak memory of the class x class comparisons (label_correlation, weight_cosine,
class_relationships, association_index), by tracemalloc, as multiples of one C x C float64 matrix.

    python benchmarks/comparisons_memory.py [--sizes 2000,6000] [--before REV] [--rows 2000]

Each size runs in a fresh subprocess. Inputs (made before tracing starts, so not counted):
  ofiv    (C, 64) float64          labels  (--rows, C) uint8, 5% positives
  weight  (C, 256) float32         sim     class_similarity of a float32 OFIV: (C, C) float32
Cases:
  label_correlation(labels)                              result: one C x C float64
  weight_cosine(weight)                                  result: one C x C float64
  class_relationships(ofiv, labels, weight)              result: four C x C float64
  association_index(sim, 0..99, 100..C-1, "all")         result: a 100-row DataFrame
  association_index(sim, 0..99, 100..C-1, "block")       (the default quantiles)

"peak" is tracemalloc's peak during the call minus what was traced before it, the result
included (numpy registers its buffers with tracemalloc, the native Pearson allocates its output
through numpy, so both are seen; BLAS's own work buffers are not). "x CxC" divides it by one
C x C float64 (C^2 * 8 bytes; 31 MiB at 2,000 classes, 275 MiB at 6,000; MB below = MiB).

--before REV also measures the package as it was at git revision REV (``git archive`` of
deepresolve_captum/ into a temporary folder, with this checkout's compiled ``_C`` extension
copied in, imported ahead of the installed one) and prints the two side by side. The extension
must still match REV's Python code, so use it for recent revisions.

30-45 s on 2 cores for both sizes with --before (the old class_relationships at 6,000
classes peaks at ~1.8 GB beside the inputs).

Measured (2-core VM; ``--before 84b6b50``, the last revision before the in-place rewrite), x one
C x C float64 at 6,000 classes (2,000 classes in brackets):
  label_correlation          4.46 -> 1.33 (5.13 -> 2.00)   result + one float64 chunk, 2000 x C
  weight_cosine              2.09 -> 1.04 (2.26 -> 1.13)
  class_relationships        6.46 -> 4.04 (7.13 -> 4.13)   four results
  association_index "all"    3.02 -> 0.27 (3.05 -> 0.36)   float32 input = 0.5
  association_index "block"  1.13 -> 0.04 (1.14 -> 0.10)
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

from deepresolve_captum.cli import int_at_least

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: association_index's cases take classes 0..99 as rows and 100..C-1 as columns
MIN_CLASSES = 101


def _sizes(text):
    """argparse type of --sizes: comma-separated class counts, each >= MIN_CLASSES."""
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 2000,6000), "
                                         f"got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("no class count given")
    small = [c for c in sizes if c < MIN_CLASSES]
    if small:
        raise argparse.ArgumentTypeError(
            f"each class count must be >= {MIN_CLASSES} (association_index takes classes 0-99 as "
            f"rows and the rest as columns), got {small}")
    return sizes


def _worker(C, rows):
    """Measure every case at C classes in this process; one JSON line per case on stdout."""
    import warnings

    import numpy as np

    import deepresolve_captum
    from deepresolve_captum import class_similarity
    from deepresolve_captum.clustering import association_index, class_relationships
    from deepresolve_captum.similarity import label_correlation, weight_cosine

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    ofiv = rng.standard_normal((C, 64))
    labels = (rng.random((rows, C)) < 0.05).astype(np.uint8)
    weight = rng.standard_normal((C, 256)).astype(np.float32)
    sim = class_similarity(ofiv.astype(np.float32))
    r, c = np.arange(100), np.arange(100, C)
    cases = [
        ("label_correlation", lambda: label_correlation(labels)),
        ("weight_cosine", lambda: weight_cosine(weight)),
        ("class_relationships", lambda: class_relationships(ofiv, labels, weight)),
        ("association_index(all)", lambda: association_index(sim, r, c, quantiles_of="all")),
        ("association_index(block)", lambda: association_index(sim, r, c)),
    ]
    one = C * C * 8
    for name, f in cases:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        res = f()
        secs = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        print(json.dumps(dict(case=name, C=C, peak=peak, x=peak / one, secs=secs,
                              module=os.path.dirname(deepresolve_captum.__file__))), flush=True)
        del res


def _measure(C, rows, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", str(C),
                          "--rows", str(rows)], env=env, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    if out.returncode:
        sys.exit(f"worker for C={C} failed:\n{out.stderr}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _checkout(rev, dest):
    """deepresolve_captum/ at ``rev`` into ``dest``, with this checkout's compiled extension."""
    import deepresolve_captum
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "deepresolve_captum"],
                         capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=tar, check=True)
    for so in glob.glob(os.path.join(os.path.dirname(deepresolve_captum.__file__), "_C*.so")):
        shutil.copy(so, os.path.join(dest, "deepresolve_captum"))


def parse_args(argv=None):
    """The command line; a class count <= 100 (the worker's 'class index out of range'
    traceback) or not an integer ('2k') is a usage error."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--sizes", type=_sizes, default="2000,6000",
                   help=f"class counts, comma-separated, each >= {MIN_CLASSES} (default 2000,6000)")
    p.add_argument("--rows", type=int_at_least(2), default=2000, help="label rows (N, default 2000)")
    p.add_argument("--before", metavar="REV", help="also measure the package at this git revision")
    p.add_argument("--_worker", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a._worker:
        return _worker(a._worker, a.rows)
    sizes = a.sizes
    with tempfile.TemporaryDirectory() as tmp:
        if a.before:
            _checkout(a.before, tmp)
        for C in sizes:
            one = C * C * 8 / 2 ** 20
            after = _measure(C, a.rows)
            before = _measure(C, a.rows, tmp) if a.before else None
            print(f"\nC = {C:,}: one C x C float64 = {one:.0f} MB; labels ({a.rows}, {C}) uint8")
            if before:
                assert before[0]["module"].startswith(tmp), before[0]["module"]
                print(f"  before = {a.before} ({before[0]['module']}), after = "
                      f"{after[0]['module']}")
                print(f"  {'function':26s} {'before':>18s} {'after':>18s}   {'s before':>8s} "
                      f"{'s after':>8s}")
                for b, n in zip(before, after):
                    print(f"  {n['case']:26s} {b['peak'] / 2**20:7.0f} MB {b['x']:5.2f}x "
                          f"{n['peak'] / 2**20:7.0f} MB {n['x']:5.2f}x   {b['secs']:8.2f} "
                          f"{n['secs']:8.2f}")
            else:
                print(f"  {after[0]['module']}")
                for n in after:
                    print(f"  {n['case']:26s} {n['peak'] / 2**20:7.0f} MB {n['x']:5.2f}x CxC "
                          f"{n['secs']:8.2f} s")


if __name__ == "__main__":
    main()
