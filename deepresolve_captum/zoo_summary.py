"""DeepResolve over a zoo of single-output TF models, in one batched ascent.

* :func:`summarize_zoo` -- every model of an ENCODE-style zoo (``zoo.load_encode_zoo``) through
  one ascent of the stacked network (:class:`zoo.EncodeZooStack`) and one ``summarize`` call:
  an ``EnsembleSummary`` whose targets are the models.
* :func:`zoo_filter_table` -- the per-filter table a zoo script wants: each model's filters by
  OFIV, with their category and, given a JASPAR collection, their best match and the known
  motif's TOMTOM p-value and rank.
* ``deepresolve zoo FOLDER --out DIR`` -- both, from the command line (``add_arguments`` /
  ``run_from_args``).

Shapes: M models, T starts, K filters per model (16 for the authors' models).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .cli import int_at_least, positive_float
from .optimizer import LayerFeatureOptimizer
from .summary import CATEGORY_NAMES, summarize
from .zoo import EncodeTFModel, EncodeZooStack, load_encode_zoo

__all__ = ["summarize_zoo", "zoo_filter_table"]


def summarize_zoo(zoo, n_starts=10, l2=2.8, seed=0, random_state=0, verbose=False):
    """DeepResolve at the input of ``fc1`` (the pooled filter activations) of every model.

    The zoo runs as one network whose output is the sum of the models' logits: the objective
    sum_m [S_m(H_m) - l2 ||H_m||^2] is separable, so one batched ascent of the (M * K) values
    optimises every model's H_m on its own, and each start is weighted by its own model's score.

    Parameters
    ----------
    zoo: dict name -> :class:`EncodeTFModel` (e.g. ``load_encode_zoo(folder)``), all with the
        same filter count and width.
    n_starts: T random starts per model.
    l2: lambda, a positive number (default 2.8, what the authors' saved OFIVs imply). One lambda
        serves the whole stack, so ``"auto"`` is not offered here: run ``LayerFeatureOptimizer``
        per model for that.
    seed: seed of the starts. random_state: seed of the GMMs (``summarize``).
    verbose: progress bar.

    Returns
    -------
    EnsembleSummary with M targets (fiv (M, T, K), ofiv (M, K), ...), ``settings["models"]`` the
    names in order, ``settings["l2"]``, ``["n_starts"]``, ``["seed"]``, and the ascent's
    ``["steps_median"]``, ``["steps_max"]`` and ``["converged"]`` (every start).
    """
    if not isinstance(zoo, dict) or not zoo:
        raise TypeError("zoo must be a non-empty dict name -> EncodeTFModel (see load_encode_zoo)")
    if not all(isinstance(m, EncodeTFModel) for m in zoo.values()):
        raise TypeError("every model of the zoo must be an EncodeTFModel")
    if isinstance(l2, str):
        raise ValueError("summarize_zoo takes one numeric l2 for the whole zoo; for l2='auto' run "
                         "LayerFeatureOptimizer on each model")
    names = list(zoo)
    M = len(names)
    stack = EncodeZooStack(zoo, sum_outputs=True).eval()
    opt = LayerFeatureOptimizer(stack, stack.fc1)
    # the input only fixes the path to fc1: after global max-pooling any length gives (M * K,)
    fims = opt.attribute(torch.zeros(1, 4, 101), target=0, n_starts=n_starts, l2=l2,
                         seed=seed, attribute_to_layer_input=True, verbose=verbose)
    with torch.no_grad():
        scores = stack.head_scores(fims[0]).T                      # (M, T)
    fims = fims[0].reshape(n_starts, M, -1).transpose(0, 1)        # (M, T, K)
    s = summarize(fims, scores, random_state=random_state)
    steps = opt.diagnostics.steps
    s.settings.update(models=names, l2=float(l2), n_starts=int(n_starts), seed=int(seed),
                      layer="fc1 input", steps_median=float(np.median(steps)),
                      steps_max=int(steps.max()), converged=bool(opt.diagnostics.converged.all()))
    return s


def zoo_filter_table(summary, zoo, jaspar=None, known=None, top=None):
    """One row per (model, filter), filters ranked by OFIV within each model.

    Parameters
    ----------
    summary: from :func:`summarize_zoo` (its ``settings["models"]`` name the targets).
    zoo: the same dict name -> EncodeTFModel (its filters give the PWMs).
    jaspar: optional :class:`motifs.MotifSet` (e.g. ``load_jaspar("JASPAR2016")``): adds each
        filter's best match (paper's PWM rule, TOMTOM) ``best_id``, ``best_name``, ``best_p``.
    known: optional dict model name -> JASPAR id or name of the model's TF (needs ``jaspar``):
        adds ``known_p`` and ``known_rank`` (the known motif's rank among the filter's matches).
    top: keep only the ``top`` best filters of each model (None: all K).

    Returns
    -------
    pandas DataFrame with columns ``model``, ``rank`` (1 = highest OFIV), ``filter``, ``ofiv``,
    ``il``, ``category``, ``n_components`` and the match columns above.
    """
    import pandas as pd

    from .motifs import filter_pwms, known_motif_hits, tomtom

    models = summary.settings.get("models")
    if models is None or len(models) != summary.n_targets:
        raise ValueError("summary has no settings['models'] matching its targets: make it with "
                         "summarize_zoo")
    missing = [n for n in models if n not in zoo]
    if missing:
        raise ValueError(f"{len(missing)} model(s) of the summary are not in zoo: {missing[:3]}")
    if known is not None and jaspar is None:
        raise ValueError("known needs jaspar (the collection the known motif is ranked in)")
    rows = []
    for i, name in enumerate(models):
        order = summary.channels(i)
        if top is not None:
            order = order[:int(top)]
        part = pd.DataFrame({
            "model": name, "rank": np.arange(1, len(order) + 1), "filter": order,
            "ofiv": summary.ofiv[i, order], "il": summary.il[i, order],
            "category": [CATEGORY_NAMES[c] for c in summary.category[i, order]],
            "n_components": int(summary.n_components[i])})
        if jaspar is not None:
            pwms = filter_pwms(zoo[name].conv.weight)[order]
            hits = None
            if known is not None and isinstance(known.get(name), str):
                # one TOMTOM run gives both each filter's best match and the known motif's hit
                hits = known_motif_hits(pwms, jaspar, known[name])
                best = hits[["best_id", "best_name", "best_p"]].to_numpy()
            else:
                best = tomtom(pwms, jaspar, n_nearest=1)[["target_id", "target_name",
                                                          "p_value"]].to_numpy()
            part["best_id"], part["best_name"], part["best_p"] = best.T
            part["best_p"] = part["best_p"].astype(float)
            if hits is not None:
                part["known_p"] = hits["p_value"].to_numpy()
                part["known_rank"] = hits["rank"].to_numpy()
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


# ------------------------------------------------------------------ command line
def add_arguments(parser):
    """``deepresolve zoo`` options."""
    parser.add_argument("folder", help="a folder of ENCODE-style model npz files (or the "
                        "encode422 folder, with models/ and models.csv inside)")
    parser.add_argument("--out", required=True, help="folder for summary.npz, ofiv.csv, filters.csv")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--first", type=int_at_least(1), default=None,
                       help="only the first N models (sorted)")
    which.add_argument("--models", nargs="+", default=None, help="only these model names")
    parser.add_argument("--starts", type=int_at_least(1), default=10,
                        help="random starts per model (default 10)")
    parser.add_argument("--l2", type=positive_float, default=2.8,
                        help="lambda (default 2.8, the authors')")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="seed of the starts (default 0)")
    parser.add_argument("--jaspar", default=None, metavar="RELEASE",
                        help="match each model's top filters against this JASPAR CORE vertebrates "
                             "release (e.g. JASPAR2016; the first call compiles TOMTOM, ~1 min)")
    parser.add_argument("--top", type=int_at_least(0), default=3, help="filters per model in filters.csv "
                        "(default 3; 0: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return parser


def run_from_args(args):
    import pandas as pd

    from .motifs import load_jaspar

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise SystemExit(f"deepresolve zoo: error: no such folder: {folder}")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"deepresolve zoo: error: --out {out} exists and is not a folder")
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    zoo = load_encode_zoo(folder, names=args.models if args.models else args.first)
    say(f"{len(zoo)} models loaded")
    s = summarize_zoo(zoo, n_starts=args.starts, l2=args.l2, seed=args.seed, verbose=not args.quiet)
    say(f"DeepResolve on {len(zoo)} models (T = {args.starts}, l2 = {args.l2:g}): "
        f"{time.perf_counter() - t0:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    s.save(out / "summary.npz")
    K = s.n_channels
    pd.DataFrame(s.ofiv, index=pd.Index(s.settings["models"], name="model"),
                 columns=[f"ofiv_{k}" for k in range(K)]).to_csv(out / "ofiv.csv")
    jaspar = known = None
    if args.jaspar:
        jaspar = load_jaspar(args.jaspar, collection="CORE", tax_group="vertebrates")
        table = folder / "models.csv" if (folder / "models.csv").is_file() else None
        if table is not None:
            meta = pd.read_csv(table)
            if {"name", "jaspar2016_id"} <= set(meta.columns) and args.jaspar == "JASPAR2016":
                known = dict(zip(meta["name"], meta["jaspar2016_id"]))
    ft = zoo_filter_table(s, zoo, jaspar=jaspar, known=known, top=args.top or None)
    ft.to_csv(out / "filters.csv", index=False)
    say(f"wrote summary.npz, ofiv.csv and filters.csv to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(prog="python -m deepresolve_captum.zoo_summary",
                                                   description=__doc__.split("\n\n")[0]))
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
