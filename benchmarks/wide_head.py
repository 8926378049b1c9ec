"""Benchmark ``target_only_head``: a wide final nn.Linear computed for each row's target only.

    python benchmarks/wide_head.py [--targets 32] [--starts 4] [--steps 6] [--repeats 3]
                                   [--threads 2] [--seq-len 1000] [--outputs 919 21907]
                                   [--layers conv3_input conv3_output fc2_input]

Model: DeepSEA (``zoo.DeepSEA``, random weights) with 919 outputs (DeepSEA, Beluga-like) and
21,907 outputs (Sei's target count), at three layers: the input of conv3 (the paper's layer,
480 x 60), the flattened conv3 output (960 x 53 -> fc1) and the input of the final Linear (925).
Every row runs exactly ``--steps`` ascent steps (tol=0, no early stop), so both sides do the
same work; the two sides alternate within each repeat. Prints the median seconds per step
(steps 2 to n, timed by the ``callback``) of the full head and of the target-only head, their
ratio, the median seconds of the whole call (probes, the memory estimate and the target-only
head's check included), and the largest relative difference of the FIVs (both sides keep FIVs
only, ``fiv_only=True``). All rows run in one chunk.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from deepresolve_captum import LayerFeatureOptimizer
from deepresolve_captum.cli import int_at_least
from deepresolve_captum.zoo import DeepSEA


#: --layers choice: (printed name, DeepSEA attribute, attribute_to_layer_input)
LAYERS = {"conv3_input": ("conv3 input (paper)", "conv3", True),
          "conv3_output": ("conv3 output (-> fc1)", "relu3", False),
          "fc2_input": ("fc2 input (925)", "relu4", False)}


def random_onehot(n, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 4, (n, L), generator=g)
    return torch.nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()


def parse_args(argv=None):
    """The command line; out-of-range numbers are usage errors (--steps 1 ended in
    ZeroDivisionError, --repeats 0 in StatisticsError, --targets 0 in a library ValueError)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int_at_least(1), default=32)
    ap.add_argument("--starts", type=int_at_least(1), default=4)
    ap.add_argument("--steps", type=int_at_least(2), default=6,
                    help="ascent steps per row, at least 2 (steps 2 to n are timed; default 6)")
    ap.add_argument("--repeats", type=int_at_least(1), default=3)
    ap.add_argument("--threads", type=int_at_least(1), default=2)
    ap.add_argument("--seq-len", type=int_at_least(163), default=1000,
                    help="DeepSEA input length, at least 163 (default 1000)")
    ap.add_argument("--outputs", type=int_at_least(64), nargs="+", default=[919, 21907],
                    help="output counts of the DeepSEA heads, each at least 64 (below that the "
                         "engine keeps the full head; default 919 21907)")
    ap.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    x = random_onehot(16, args.seq_len)
    print(f"DeepSEA at {args.seq_len} bp, {args.targets} targets x {args.starts} starts, "
          f"{args.steps} steps per row, median of {args.repeats}, {args.threads} threads")
    print(f"{'outputs':>8s} {'layer':24s} {'full s/step':>12s} {'target-only':>12s} "
          f"{'ratio':>7s} {'call full':>9s} {'narrow':>9s} {'max rel diff':>13s}")
    for n_out in args.outputs:
        torch.manual_seed(0)
        model = DeepSEA(n_outputs=n_out, seq_len=args.seq_len).eval()
        targets = torch.linspace(0, n_out - 1, args.targets).round().long().tolist()
        for key in args.layers:
            name, attr, on_input = LAYERS[key]
            layer = getattr(model, attr)
            times = {False: [], True: []}
            calls = {False: [], True: []}
            fims = {}
            for _ in range(args.repeats):
                for fast in (False, True):
                    stamps = []
                    opt = LayerFeatureOptimizer(model, layer)
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():   # every row stops at max_steps on purpose
                        warnings.simplefilter("ignore", RuntimeWarning)
                        fims[fast] = opt.attribute(
                            x, target=targets, n_starts=args.starts, l2=1.0, seed=0,
                            attribute_to_layer_input=on_input, max_steps=args.steps, tol=0.0,
                            patience=10**6, target_only_head=fast, fiv_only=True,
                            chunk_size=len(targets) * args.starts,
                            callback=lambda *a: stamps.append(time.perf_counter()))
                    calls[fast].append(time.perf_counter() - t0)
                    # steps 2..n: the first step also holds the call's setup
                    times[fast].append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
                    assert opt.diagnostics.target_only_head == fast
                    assert len(stamps) == args.steps
            full, narrow = statistics.median(times[False]), statistics.median(times[True])
            diff = float((fims[True] - fims[False]).abs().max() / fims[False].abs().max())
            call_full, call_narrow = statistics.median(calls[False]), statistics.median(calls[True])
            print(f"{n_out:8d} {name:24s} {full:12.3f} {narrow:12.3f} {full / narrow:6.2f}x "
                  f"{call_full:9.2f} {call_narrow:9.2f} {diff:13.2e}")


if __name__ == "__main__":
    main()
