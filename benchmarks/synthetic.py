"""Does DeepResolve see the paper's synthetic logic on more than one lucky model?

Retrains the paper's CNN on synthetic set I and set II with different data and initialisation
seeds (10 models per set by default), runs DeepResolve at ``model.pool`` with ``l2="auto"``, and
counts how many models satisfy each of the paper's claims (``demo.check_set_one`` /
``demo.check_set_two`` define them):

  set I  (Fig. 2): the GCTCAT / CGCTTG detectors are non-additive; every (GCTCAT detector,
         CGCTTG detector) pair has FIVs of opposite sign in every weighted start; the top
         non-additive channel is one of them; the CAGGTC detectors are additive and the top additive channel is one; BIC
         picks > 1 component. Reported beside them: whether both strongest detectors change
         sign across the starts, and whether BIC picks exactly 3 (the paper's count).
  set II (Fig. 4): class similarity ranks (1,2), (1,3), (2,3) above every pair with class 4; the
         last-layer cosine does not; each class's top OFIV channel detects one of its own
         patterns (set I's detector rule); BIC picks 1 component for every class. Reported beside them: whether
         the signed-OFIV correlation fails the order too, and each class's most negative OFIV
         relative to its largest |OFIV| (the paper sees "strong negative terms" in all classes).

    python benchmarks/synthetic.py                       # 10 + 10 models at the demo's sizes
    python benchmarks/synthetic.py --models 3 --sets one --n-sequences 30000

Prints one line per model, then a table per set; ``--json PATH`` also saves every number: the
per-model rows under "one" / "two", and under "settings" what made them (the arguments as used,
the command line, ``demo.DEFAULTS``, the sequence length per set, package / torch / numpy /
scikit-learn versions, the git commit). Every argument, ``--json``'s path included, is checked
before any work starts.
AUCs: ``val`` is measured on the 20% validation split whose loss chose the kept epoch (slightly
optimistic); ``test`` on an independent test set of 20% of the dataset's size drawn from the
same generator with ``demo.test_seed`` (``--test-fraction``). The paper's AUCs are test AUCs.
For set I it also reports, outside the claims, how the network itself uses each channel:
``demo.xor_ablation`` zeroes one channel at a time in sequences holding CAGGTC with one or both
XOR patterns, and for the XOR detectors DeepResolve leaves additive it prints whether their FIV
still changes sign and whether the network uses them in its XOR.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepresolve_captum.cli import (SEED_BELOW, check_output_file, int_at_least,  # noqa: E402
                                    positive_float)
from deepresolve_captum.demo import (CLASS4_PAIRS, DEFAULTS, SEQ_LEN, SET_ONE_CLAIMS,  # noqa: E402
                                     SET_TWO_CLAIMS, SHARING_PAIRS, TEST_FRACTION, run_synthetic)


#: model i's weights are seeded with INIT_OFFSET + first_seed + i, its data with first_seed + i
INIT_OFFSET = 10_000

REPO = Path(__file__).resolve().parents[1]


def _fraction(text):
    """argparse type: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def check_sizes(parser, args):
    """The dataset and model sizes, by the generators' and the CNN's own checks on a tiny draw
    (set I needs seq_len >= 18 * max_copies, set II >= 10, the CNN >= 11): a usage error now,
    not a traceback."""
    from deepresolve_captum.datasets import synthetic_set_one, synthetic_set_two
    from deepresolve_captum.zoo import PaperCNN
    for dataset in args.sets:
        L = args.seq_len or SEQ_LEN[dataset]
        try:
            if dataset == "one":
                synthetic_set_one(n_sequences=8, n_random=0, seq_len=L, max_copies=args.max_copies,
                                  random_state=0)
            else:
                synthetic_set_two(n_sequences=8, seq_len=L, random_state=0)
            PaperCNN(seq_len=L)
        except ValueError as e:
            parser.error(f"set {dataset} at --seq-len {L}"
                         + (f" and --max-copies {args.max_copies}" if dataset == "one" else "")
                         + f": {e}")


def _git_commit():
    """This checkout's commit, with "+dirty" when tracked files differ from it (None without git)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        # --no-optional-locks: a read-only status, which never refreshes (rewrites) .git/index
        # under .git/index.lock while a git command of the user's may run in the same checkout
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), "status",
                                "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_settings(args, argv):
    """What the run was: the parsed arguments (``lr`` and ``n_random`` as used), the command line,
    the fixed settings it takes from ``demo.DEFAULTS``, the sequence length per set, versions and
    the checkout's commit. Saved under "settings" in the --json file, beside the per-set rows."""
    from deepresolve_captum._io import provenance
    return dict(args=dict(vars(args)), argv=list(argv), init_offset=INIT_OFFSET,
                seq_len={d: args.seq_len or SEQ_LEN[d] for d in args.sets},
                defaults=dict(DEFAULTS), provenance=provenance(), git_commit=_git_commit(),
                python=platform.python_version(),
                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    return x


def model_line(dataset, i, run):
    c = run.checks
    auc = "val " + " ".join(f"{a:.3f}" for a in run.train.val_auc)
    if run.train.test_auc is not None:
        auc += " test " + " ".join(f"{a:.3f}" for a in run.train.test_auc)
    if dataset == "one":
        a, b = c["strongest_xor"]
        detail = (f"BIC {c['n_components']}  xor ch {c['xor_channels']} and ch {c['and_channels']} "
                  f"nonadd ch {c['nonadditive_channels']}  strongest GCTCAT/CGCTTG ch {a}/{b} "
                  f"opposite {c['opposite_fraction']:.0%} (all {c['opposite_pairs']} pairs: min "
                  f"{c['opposite_min_fraction']:.0%}, ch {c['opposite_weakest_pair'][0]}/"
                  f"{c['opposite_weakest_pair'][1]})  starts GCTCAT:CGCTTG mode "
                  f"{c['mode_split'][0]}:{c['mode_split'][1]}  top nonadd {c['top_nonadditive']} "
                  f"top add {c['top_additive']}")
        if "xor_captured" in c:
            detail += f"  XOR share on non-additive ch {c['xor_captured']:.2f}"
        if c.get("xor_additive"):
            detail += (f"  xor ch left additive {c['xor_additive']} (FIV flips {c['xor_additive_flip']}, "
                       f"used in the XOR by ablation {c['xor_additive_used']}, "
                       f"respond to both XOR patterns {c['xor_additive_both']})")
        names = SET_ONE_CLAIMS
    else:
        sim, cos = np.asarray(c["similarity"]), np.asarray(c["cosine"])
        pairs = SHARING_PAIRS + CLASS4_PAIRS
        detail = (f"BIC {c['n_components']}  sim " + " ".join(f"{sim[p]:+.2f}" for p in pairs)
                  + "  cos " + " ".join(f"{cos[p]:+.2f}" for p in pairs)
                  + f"  top {[f'{k}:{m}' + ('' if d else ' (weak)') for (k, m), d in zip(c['top_channels'], c['top_detects'])]}")
        names = SET_TWO_CLAIMS
    flags = "".join("Y" if c[n] else "." for n in names)
    if dataset == "one":
        flags += f"|flip {'Y' if c['xor_sign_flip'] else '.'}|xor learnt {'Y' if c['xor_learned'] else '.'}"
        t = c["logic_table"]
        detail += ("  logits c+a/c+b/c+a+b/c " + "/".join(f"{t[k]:+.1f}" for k in (
            "CAGGTC+GCTCAT", "CGCTTG+CAGGTC", "CGCTTG+CAGGTC+GCTCAT", "CAGGTC")))
    return (f"set {dataset} model {i}: AUC {auc}  claims [{flags}] {'PASS' if c['all'] else 'fail'}  "
            f"({run.seconds['train']:.0f}+{run.seconds['deepresolve']:.0f} s)  {detail}")


def auc_line(val_auc, test_auc):
    """Median and range over the models of each output's validation and test AUC."""
    def cells(a):
        a = np.asarray(a, dtype=float)              # (models, outputs)
        return " ".join(f"{m:.3f} ({lo:.3f}-{hi:.3f})" for m, lo, hi in
                        zip(np.median(a, 0), a.min(0), a.max(0)))
    line = f"  AUC per output, median (range): validation {cells(val_auc)}"
    if all(t is not None for t in test_auc):
        line += f"; test {cells(test_auc)}"
    return line + ("  (validation rows chose the epoch; the test set is independent, the paper's "
                   "figure is a test AUC)")


def table(dataset, checks, val_auc=None, test_auc=None):
    names = SET_ONE_CLAIMS if dataset == "one" else SET_TWO_CLAIMS
    n = len(checks)
    lines = [f"set {'I' if dataset == 'one' else 'II'}: {sum(c['all'] for c in checks)}/{n} models satisfy "
             f"every claim"]
    if val_auc is not None:
        lines.append(auc_line(val_auc, test_auc))
    for name in names:
        lines.append(f"  {name:26s} {sum(c[name] for c in checks)}/{n}")
    if dataset == "one":
        om = np.array([c["opposite_min_fraction"] for c in checks])
        lines.append(f"  (opposite FIV signs, share of weighted starts, lowest over the GCTCAT x CGCTTG "
                     f"detector pairs: median {np.median(om):.2f}, range {om.min():.2f}-{om.max():.2f}; "
                     f"strongest pair opposite in >= half the starts, the claim before audit d: "
                     f"{sum(c['opposite_fraction'] >= 0.5 for c in checks)}/{n}; not part of the claims)")
        for name in ("strongest_xor_nonadditive", "selective_xor_nonadditive", "xor_sign_flip", "xor_learned",
                     "bic_three"):
            lines.append(f"  ({name:24s} {sum(c[name] for c in checks)}/{n}, not part of the claims)")
        if all("xor_additive" in c for c in checks):
            cap = np.array([c["xor_captured"] for c in checks])
            lines.append(f"  (ablation_top_nonadditive {sum(c['ablation_top_nonadditive'] for c in checks)}/{n}, "
                         "not part of the claims: the channel the network uses most in its XOR, by "
                         "ablation, is flagged non-additive)")
            lines.append(f"  (share of the network's XOR, by ablation strength, on channels flagged "
                         f"non-additive: median {np.median(cap):.2f}, range {cap.min():.2f}-{cap.max():.2f})")
            left = [k for c in checks for k in c["xor_additive"]]
            lines.append(
                f"  (XOR detectors flagged additive: {len(left)} in "
                f"{sum(bool(c['xor_additive']) for c in checks)} models; of these, FIV changes sign: "
                f"{sum(len(c['xor_additive_flip']) for c in checks)}, used in the XOR by ablation: "
                f"{sum(len(c['xor_additive_used']) for c in checks)}, respond to both XOR patterns: "
                f"{sum(len(c['xor_additive_both']) for c in checks)})")
        alt = sum(c["selective_xor_nonadditive"] and all(c[k] for k in SET_ONE_CLAIMS if k != "xor_nonadditive")
                  for c in checks)
        lines.append(f"  (every claim, with selective_xor_nonadditive for xor_nonadditive: {alt}/{n})")
    else:
        lines.append(f"  ({'signed_fails':24s} {sum(c['signed_fails'] for c in checks)}/{n}, not part of the "
                     "claims: the Pearson of signed OFIVs misorders the pairs too, as the paper reads Fig. 4c)")
        share = np.array([c["negative_share"] for c in checks])        # (models, 4)
        lines.append("  (most negative OFIV / largest |OFIV| per class, median over models: "
                     + " ".join(f"class {i + 1} {v:.2f}" for i, v in enumerate(np.median(share, axis=0)))
                     + f"; lowest {share.min():.2f}; the paper sees strong negative terms in all classes)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int_at_least(1), default=10, help="models per set (default 10)")
    p.add_argument("--sets", nargs="+", default=["one", "two"], choices=["one", "two"])
    p.add_argument("--n-sequences", type=int_at_least(100), default=100_000,
                   help="planted sequences per dataset (default 100000; at least 100)")
    p.add_argument("--n-random", type=int_at_least(0), default=None,
                   help="set I only (default: a fifth of --n-sequences, the paper's ratio)")
    p.add_argument("--seq-len", type=int_at_least(1), default=None,
                   help=f"sequence length (default: each set's own, {SEQ_LEN})")
    p.add_argument("--max-copies", type=int_at_least(1), default=DEFAULTS["max_copies"],
                   help="set I copies per pattern")
    p.add_argument("--epochs", type=int_at_least(1), default=DEFAULTS["epochs"])
    p.add_argument("--optimizer", choices=("adam", "adadelta"), default="adam",
                   help="adam (default) or adadelta, the authors' Keras-1.2 recipe (give it more --epochs)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"learning rate (default {DEFAULTS['lr']} for Adam, 1.0 for Adadelta)")
    p.add_argument("--test-fraction", type=_fraction, default=TEST_FRACTION,
                   help=f"independent test set, as a share of the dataset size (default {TEST_FRACTION}, "
                        "the paper's 20%%; 0: none)")
    p.add_argument("--first-seed", type=int_at_least(0), default=0,
                   help=f"model i (from 0) uses data seed first_seed + i and weight-initialisation seed "
                        f"{INIT_OFFSET} + first_seed + i (default 0: data seeds 0-9, init seeds "
                        f"{INIT_OFFSET}-{INIT_OFFSET + 9}; the demo's --seed S uses S for both)")
    p.add_argument("--threads", type=int_at_least(1), default=1, help="torch threads (default 1)")
    p.add_argument("--json", type=str, default=None,
                   help="write every number here, with the run's settings (arguments, command line, "
                        "versions, git commit) under \"settings\"; checked, and its folder "
                        "created, before any work")
    args = p.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    if INIT_OFFSET + args.first_seed + args.models - 1 >= SEED_BELOW:
        p.error(f"--first-seed: the last model's init seed {INIT_OFFSET} + {args.first_seed} + "
                f"{args.models - 1} must be < 2**63")
    if args.n_random is None:
        args.n_random = args.n_sequences // 5
    check_sizes(p, args)
    if args.lr is None:
        args.lr = 1.0 if args.optimizer == "adadelta" else DEFAULTS["lr"]   # run_synthetic's rule
    if args.json is not None:       # --json '' is refused, not ignored
        check_output_file(p, "--json", args.json)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)   # once every check passed
    torch.set_num_threads(args.threads)
    settings = run_settings(args, argv)     # after set_num_threads: provenance records threads

    t0 = time.perf_counter()
    results = {}
    length = (f"{args.seq_len} bp" if args.seq_len else
              ", ".join(f"{SEQ_LEN[d]} bp (set {'I' if d == 'one' else 'II'})" for d in args.sets))
    print(f"# benchmarks/synthetic.py {' '.join(argv)}", flush=True)
    print(f"# sizes: {args.n_sequences} sequences (+{args.n_random} random for set I, <= {args.max_copies} "
          f"copies per pattern), {length}, "
          f"{args.epochs} epochs, {args.optimizer} lr {args.lr}, batch {DEFAULTS['batch_size']}, "
          f"{DEFAULTS['n_starts']} starts, l2='auto'", flush=True)
    for dataset in args.sets:
        checks, rows = [], []
        for i in range(args.models):
            seed = args.first_seed + i
            run = run_synthetic(dataset, n_sequences=args.n_sequences, n_random=args.n_random,
                                seq_len=args.seq_len, max_copies=args.max_copies, epochs=args.epochs, lr=args.lr,
                                optimizer=args.optimizer, data_seed=seed,
                                init_seed=INIT_OFFSET + seed, test_fraction=args.test_fraction)
            checks.append(run.checks)
            rows.append(dict(seed=seed, init_seed=INIT_OFFSET + seed, val_auc=run.train.val_auc, test_auc=run.train.test_auc,
                             n_test=run.train.settings["n_test"], l2=run.l2, checks=run.checks,
                             seconds=run.seconds, ofiv=run.summary.ofiv, il=run.summary.il,
                             category=run.summary.category, response=run.response))
            print(model_line(dataset, i, run), flush=True)
        results[dataset] = rows
        print(table(dataset, checks, [r["val_auc"] for r in rows], [r["test_auc"] for r in rows]),
              flush=True)
    total = time.perf_counter() - t0
    print(f"# total {total:.0f} s", flush=True)
    if args.json is not None:
        # the per-set rows stay at the top level ("one", "two") where readers find them
        settings["total_seconds"] = total
        Path(args.json).write_text(json.dumps(_jsonable(dict(settings=settings, **results))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
