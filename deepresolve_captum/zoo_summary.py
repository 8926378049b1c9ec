"""DeepResolve over a zoo of single-output TF models, in one batched ascent.

* :func:`summarize_zoo` -- every model of an ENCODE-style zoo (``zoo.load_encode_zoo``) through
  one batched ascent of the models' heads (:class:`zoo.EncodeZooHeads`) and one ``summarize``
  call: an ``EnsembleSummary`` whose targets are the models.
* :func:`zoo_filter_table` -- the per-filter table a zoo script wants: each model's filters by
  OFIV, with their category and, given a JASPAR collection, their best match and the known
  motif's TOMTOM p-value and rank.
* ``deepresolve zoo FOLDER --out DIR`` -- both, from the command line (``add_arguments`` /
  ``run_from_args``).

Shapes: M models, T starts, K filters per model (16 for the authors' models).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ._io import provenance
from .cli import (L2_MAX, _bound_text, add_threads_argument, int_at_least, l2_value, out_path,
                  output_folder, replaced_note, seed_argument, torch_threads, write_errors,
                  write_together)
from .optimizer import (LayerFeatureOptimizer, _check_positive_int, _collapsed, _resolve_seed,
                        start_draw)
from .summary import CATEGORY_NAMES, _gmm_seed, summarize
from .zoo import (HEAD_LAYERS, EncodeTFModel, EncodeZooHeads, _bad_lines, _load_zoo,
                  _same_shape_models, _skipped_text, encode_models_folder, load_encode_model)

__all__ = ["summarize_zoo", "zoo_filter_table"]

#: the category column of the filter table: CATEGORY_NAMES without "unimportant" (a rank-1
#: filter of an all-additive model is additive, not unimportant)
_CSV_CATEGORY = ("additive",) + tuple(CATEGORY_NAMES[1:])


def summarize_zoo(zoo, n_starts=10, l2=2.8, seed=0, random_state=0, verbose=False, group_size=32,
                  max_steps=2000):
    """DeepResolve at the input of ``fc1`` (the pooled filter activations) of every model.

    The models' heads run as one network on a shared input (:class:`zoo.EncodeZooHeads`), a
    group of models at a time: one batched ascent per group with one row per (model, start),
    each with its own step control. Start t of
    every model is the draw a single-model run makes with the same ``seed`` (target 0, start t),
    so a model's result is the one ``LayerFeatureOptimizer(model, model.fc1).attribute(x,
    target=0, n_starts=n_starts, l2=l2, seed=seed, attribute_to_layer_input=True)`` gives, and
    does not depend on the other models of the zoo.

    Parameters
    ----------
    zoo: dict name (a str) -> :class:`EncodeTFModel` (e.g. ``load_encode_zoo(folder)``), all
        with the same filter count and width, dtype and device (the models' own: float64 models
        run in float64, models on a GPU on it).
    n_starts: T random starts per model, an integer >= 1.
    l2: lambda, a positive number (default 2.8, what the authors' saved OFIVs imply). One lambda
        serves the whole zoo, so ``"auto"`` is not offered here: run ``LayerFeatureOptimizer``
        per model for that.
    seed: seed of the starts, an int >= 0, or None to draw one from torch's global generator
        (as ``LayerFeatureOptimizer.attribute`` does; it is kept in ``settings["seed"]``).
    random_state: seed of the GMMs (``summarize``'s: an int in [0, 2**32 - 1], a numpy
        Generator or RandomState, or None), checked, and for the latter three one seed drawn
        from it, before any ascent; ``settings["random_state"]`` records the int used.
    verbose: progress bars: one counting the models whose every start has converged (or
        stopped at ``max_steps``), then ``summarize``'s over the GMM fits.
    group_size: models per batched ascent. Every row evaluates the heads of its whole group, so
        smaller groups do less work in total and larger ones fewer steps of Python; the results
        depend on it only through float rounding, which can move where a slowly converging start
        stops (all 276 ENCODE models, groups of 1 vs 32: FIVs within 0.004, 1% of the model's
        largest; OFIVs within 4e-4; rankings and categories unchanged).
    max_steps: step limit of each start's ascent (``LayerFeatureOptimizer.attribute``'s), an
        integer >= 1. A start that reaches it has not converged: one RuntimeWarning names the
        models that have such starts.

    Returns
    -------
    EnsembleSummary with M targets (fiv (M, T, K), ofiv (M, K), ...), ``settings["models"]`` the
    names in order, ``settings["l2"]``, ``["n_starts"]``, ``["seed"]``, ``["max_steps"]``, the
    ascent's ``["steps_median"]``, ``["steps_max"]`` and ``["converged"]`` (every start of every
    model), and per model, in the order of ``["models"]``: ``["model_converged"]`` (every start
    of the model converged), ``["model_open_starts"]`` (how many did not) and
    ``["model_steps_max"]`` (the most steps one of its starts took).
    """
    if not isinstance(zoo, dict) or not zoo:
        raise TypeError("zoo must be a non-empty dict name -> EncodeTFModel (see load_encode_zoo)")
    not_str = [k for k in zoo if not isinstance(k, str)]
    if not_str:  # the names become settings["models"] and the filter table's model column
        raise TypeError(f"zoo: model names must be strings, got {len(not_str)} that are not: "
                        f"{not_str[:3]} (e.g. {{str(k): m for k, m in zoo.items()}})")
    odd = [f"{k!r} ({type(m).__name__})" for k, m in zoo.items() if not isinstance(m, EncodeTFModel)]
    if odd:
        raise TypeError(f"every model of the zoo must be an EncodeTFModel; {len(odd)} are not: "
                        f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}")
    n_starts = _check_positive_int(n_starts, "n_starts")
    max_steps = _check_positive_int(max_steps, "max_steps")
    seed = _resolve_seed(seed)  # None: drawn once, shared by every group, kept in settings
    if isinstance(l2, str):
        raise ValueError("summarize_zoo takes one numeric l2 for the whole zoo; for l2='auto' run "
                         "LayerFeatureOptimizer on each model")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    # summarize's own rule (an int as it is; one int drawn from a Generator, RandomState or
    # None), applied before the ascent: a bad random_state fails now, not after every group
    gmm_seed = _gmm_seed(random_state)
    _same_shape_models(zoo, HEAD_LAYERS)  # all groups (shape, dtype, device), before any ascent
    names = list(zoo)
    M = len(names)
    w = next(iter(zoo.values())).fc1.weight
    K = w.shape[1]
    probe = torch.zeros(1, K, dtype=w.dtype, device=w.device)  # the heads' dtype and device
    starts = torch.stack([start_draw(seed, 0, t, (K,)) for t in range(n_starts)])
    fims, scores, steps, converged, flat = [], [], [], [], []
    bar = None
    if verbose:
        from tqdm.auto import tqdm
        bar = tqdm(total=M, desc="DeepResolve on the zoo", unit="model")
    try:
        for lo in range(0, M, int(group_size)):
            part = names[lo:lo + int(group_size)]
            heads = EncodeZooHeads([zoo[n] for n in part]).eval()
            opt = LayerFeatureOptimizer(heads, heads.input)
            # both name positions in the group: told below, once, by model name
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"the FIMs of target\(s\) .* are all zero")
                warnings.filterwarnings("ignore", message=r"\d+ of \d+ starts stopped at max_steps")
                try:
                    f, sc = opt.attribute(probe, target=list(range(len(part))), n_starts=n_starts,
                                          l2=l2, seed=seed, init=starts.expand(len(part), -1, -1),
                                          max_steps=max_steps, return_scores=True,
                                          callback=_models_done(bar, len(part), n_starts))
                except (ValueError, RuntimeError) as e:
                    named = _name_the_model(e, part)
                    if named is None:
                        raise
                    raise named from e
            if bar is not None:   # every model of the group is done now
                bar.update(lo + len(part) - bar.n)
            peak = f.detach().abs().flatten(2).amax(2).float().cpu().numpy()
            flat += [n for n, z in zip(part, _collapsed(peak, opt.diagnostics.settings["init_scale"]))
                     if z]
            fims.append(f)
            scores.append(sc)
            steps.append(opt.diagnostics.steps)
            converged.append(opt.diagnostics.converged)
    finally:
        if bar is not None:
            bar.close()
    steps, converged = np.concatenate(steps), np.concatenate(converged)   # (M, T)
    open_starts = (~converged).sum(1)
    if flat:
        warnings.warn(
            f"the FIMs of model(s) {flat[:10]}{' ...' if len(flat) > 10 else ''} are all zero: at "
            f"l2 = {float(l2):g} no start found a direction that raises the model's score. Their "
            "OFIV will be 0 and their similarity to other models undefined; try a smaller l2.",
            RuntimeWarning, stacklevel=2)
    if open_starts.any():
        late = [(n, int(k)) for n, k in zip(names, open_starts) if k]
        warnings.warn(
            f"{len(late)} of {M} model(s) have starts that stopped at max_steps={max_steps} "
            "before converging: "
            + ", ".join(f"{n} ({k} of {n_starts} starts)" for n, k in late[:10])
            + (f" and {len(late) - 10} more" if len(late) > 10 else "")
            + ". Their FIMs are not at an optimum: raise max_steps (summarize_zoo's max_steps=, "
            "deepresolve zoo --max-steps), or l2 if the objective keeps growing; "
            "settings['model_converged'] and ['model_open_starts'] say which models.",
            RuntimeWarning, stacklevel=2)
    s = summarize(torch.cat(fims), torch.cat(scores), random_state=gmm_seed,
                  target_names=names,   # its warnings name the models, not positions
                  verbose=verbose)      # the GMM fits: most of the time at small T
    s.settings.update(models=names, l2=float(l2), n_starts=n_starts, seed=seed,
                      layer="fc1 input", group_size=int(group_size), max_steps=max_steps,
                      steps_median=float(np.median(steps)), steps_max=int(steps.max()),
                      converged=bool(converged.all()),
                      model_converged=[bool(k == 0) for k in open_starts],
                      model_open_starts=[int(k) for k in open_starts],
                      model_steps_max=[int(v) for v in steps.max(1)])
    return s


def _models_done(bar, n_models, n_starts):
    """An ascent ``callback`` that moves ``bar`` (counting models) on, at most 5 times a second,
    by the models of the group whose every start has left the ascent; None without a bar.
    Rows run in chunks, in order: a row below the highest row still running that is not
    running is done (rows of a later chunk are above it)."""
    if bar is None:
        return None
    start, last = bar.n, [0.0]

    def callback(step, rows, objective):
        now = time.perf_counter()
        if now - last[0] < 0.2 or not len(rows):
            return
        last[0] = now
        done = np.arange(n_models * n_starts) <= rows.max()
        done[rows] = False
        n_done = int(done.reshape(n_models, n_starts).all(1).sum())
        if start + n_done > bar.n:
            bar.update(start + n_done - bar.n)
    return callback


#: where the optimizer's errors name a row: "target i, start t" (i = the position in the group)
_ROW = re.compile(r"\btarget (\d+), start (\d+)")


def _name_the_model(e, part):
    """``e`` (an ascent's error naming "target i, start t") again, naming model ``part[i]``;
    None when ``e`` names no row (an argument error: raised as it is)."""
    text = str(e)
    m = _ROW.search(text)
    if m is None or int(m.group(1)) >= len(part):
        return None
    text = f"{text[:m.start()]}model {part[int(m.group(1))]}, start {m.group(2)}{text[m.end():]}"
    try:
        return type(e)(text)
    except Exception:   # an exception class that takes other arguments
        return RuntimeError(text) if isinstance(e, RuntimeError) else ValueError(text)


def zoo_filter_table(summary, zoo, jaspar=None, known=None, top=None, verbose=False):
    """One row per (model, filter), filters ranked by OFIV within each model.

    Parameters
    ----------
    summary: from :func:`summarize_zoo` (its ``settings["models"]`` name the targets).
    zoo: the same dict name -> EncodeTFModel (its filters give the PWMs).
    jaspar: optional :class:`motifs.MotifSet` (e.g. ``load_jaspar("JASPAR2016")``): adds each
        filter's best match (paper's PWM rule, TOMTOM) ``best_id``, ``best_name``, ``best_p``.
    known: optional dict model name -> JASPAR id or name of the model's TF, or a list of them
        (e.g. a dimer's parts: the best counts; needs ``jaspar``): adds ``known_motif`` (the
        id or name given, several joined by "|"), ``known_p`` and ``known_rank`` (the known
        motif's rank among the filter's matches). The three columns are there whenever
        ``known`` is given, also when it names none of the summary's models; models missing
        from it, or with None, NaN or an empty list, get NaN there (``<NA>`` in the integer
        ``known_rank``). Every entry of the summary's models is looked up in ``jaspar``
        before any TOMTOM run: ids not there, or a None / NaN inside a list, raise one
        ValueError naming each such model.
    top: keep only the ``top`` best filters of each model (None or 0: all K).
    verbose: a progress bar over the models (worth it with ``jaspar``: one TOMTOM run each).

    Returns
    -------
    pandas DataFrame with columns ``model``, ``rank`` (1 = highest OFIV), ``filter``, ``ofiv``,
    ``il``, ``category`` ("additive", "non-additive, consistent sign" or "non-additive,
    sign-flipping": additive says how a filter combines with the others, not that it is
    unimportant; the rank says that), ``n_components``, the match columns above, and last
    ``converged`` (every start of the model's ascent converged; only for a summary with
    ``settings["model_converged"]``, as summarize_zoo makes). The
    p-values are TOMTOM's for the whole filter matrix (paper's rule); ``channel_motifs`` trims
    low-information columns first, so its p-values for the same filter differ.
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
    if known is not None and not isinstance(known, dict):
        raise TypeError(f"known must be a dict model name -> JASPAR id or name (or a list of them), "
                        f"got {type(known).__name__}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0):
        raise ValueError(f"top must be an int >= 0 or None (0 or None: all filters), got {top!r}")
    wanted = _known_motifs(models, known, jaspar) if known is not None else {}
    converged = summary.settings.get("model_converged")
    if converged is not None and len(converged) != len(models):
        converged = None
    rows = []
    index = enumerate(models)
    if verbose:
        from tqdm.auto import tqdm
        index = tqdm(index, total=len(models), desc="filter table" + (" (TOMTOM)" if jaspar else ""),
                     unit="model")
    for i, name in index:
        order = summary.channels(i)
        if top:
            order = order[:int(top)]
        part = pd.DataFrame({
            "model": name, "rank": np.arange(1, len(order) + 1), "filter": order,
            "ofiv": summary.ofiv[i, order], "il": summary.il[i, order],
            "category": [_CSV_CATEGORY[c] for c in summary.category[i, order]],
            "n_components": int(summary.n_components[i])})
        if jaspar is not None:
            pwms = filter_pwms(zoo[name].conv.weight)[order]
            hits = None
            k = wanted.get(name)
            if k is not None:
                # one TOMTOM run gives both each filter's best match and the known motif's hit
                hits = known_motif_hits(pwms, jaspar, k)
                best = hits[["best_id", "best_name", "best_p"]].to_numpy()
            else:
                best = tomtom(pwms, jaspar, n_nearest=1)[["target_id", "target_name",
                                                          "p_value"]].to_numpy()
            part["best_id"], part["best_name"], part["best_p"] = best.T
            part["best_p"] = part["best_p"].astype(float)
            if hits is not None:
                part["known_motif"] = k if isinstance(k, str) else "|".join(k)
                part["known_p"] = hits["p_value"].to_numpy()
                part["known_rank"] = pd.array(hits["rank"].to_numpy(), dtype="Int64")
            elif known is not None:   # the columns whatever models `known` names: NaN / <NA>
                part["known_motif"] = pd.Series(np.nan, index=part.index, dtype=object)
                part["known_p"] = np.nan
                part["known_rank"] = pd.array([pd.NA] * len(part), dtype="Int64")
        if converged is not None:   # last: added later, the columns before keep their places
            part["converged"] = bool(converged[i])
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def _missing(v):
    """None, NaN or pandas' NA (a missing value of a models table)."""
    import pandas as pd

    if v is None or isinstance(v, str):
        return v is None
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):   # an array-like: not one missing value
        return False


def _known_motifs(models, known, jaspar):
    """{model: its known motif id or name, or a list of them} for the models of ``models``
    that ``known`` names (a missing value or an empty list: none), each looked up in
    ``jaspar`` now: one ValueError naming every model whose entry is not there, before any
    TOMTOM run (a typo for the last model failed after TOMTOM had run for all the others)."""
    wanted, bad = {}, {}
    for name in models:
        k = known.get(name)
        if isinstance(k, (list, tuple, np.ndarray)):
            gaps = [v for v in k if _missing(v)]
            if gaps:
                bad[name] = (f"{list(k)!r} holds a missing value ({gaps[0]!r}): list only motif "
                             "ids or names (None or NaN alone means no known motif)")
                continue
            k = [str(v) for v in k] or None
        elif _missing(k):
            k = None
        elif not isinstance(k, str):
            k = str(k)
        if k is None:
            continue
        for key in ([k] if isinstance(k, str) else k):
            try:
                jaspar.indices(key)
            except KeyError as e:
                bad[name] = str(e.args[0]) if e.args else repr(key)
                break
        else:
            wanted[name] = k
    if bad:
        raise ValueError(f"known: the entries of {len(bad)} model(s) are not motifs of the "
                         f"{len(jaspar)}-motif set given as jaspar (nothing was run):\n"
                         + _bad_lines(bad))
    return wanted


# ------------------------------------------------------------------ command line
_OUTPUTS = """outputs (in --out, all moved into place together at the end of a run):
  summary.npz  EnsembleSummary.load(path): fiv (models x starts x filters), il, ofiv,
               category, n_components ...; its settings:
                 the run: models (names, in row order), models_folder (the folder read),
                 skipped (files --skip-bad left out: name -> why), l2, n_starts, seed,
                 max_steps, layer, group_size, top, jaspar;
                 the ascent: converged (every start of every model), steps_median,
                 steps_max, and per model (in the order of models) model_converged,
                 model_open_starts (starts stopped at max_steps), model_steps_max;
                 the GMMs (summarize's): random_state, max_components, covariance_type,
                 reg_covar, weights, init_params, il_units;
                 the versions and threads: version, torch_version, numpy_version,
                 sklearn_version, threads
  ofiv.csv     one row per model: ofiv_0 .. ofiv_{K-1} (filters numbered from 0)
  filters.csv  each model's --top filters by OFIV: model, rank (1 = highest OFIV), filter
               (from 0), ofiv, il (the weighted variance of the filter's FIVs; the GMM reads
               it relative to the model's mean FIV power), category (additive;
               non-additive, consistent sign; non-additive, sign-flipping), n_components
               (GMM components chosen by BIC); with --jaspar then best_id, best_name, best_p
               (TOMTOM, the paper's filter PWM rule) and, from models.csv, known_motif,
               known_p, known_rank (empty for models it does not name); last converged
               (every start of the model converged before --max-steps)"""


#: the files ``deepresolve zoo`` writes in --out
_OUTPUT_NAMES = ("summary.npz", "ofiv.csv", "filters.csv")


def add_arguments(parser):
    """``deepresolve zoo`` options."""
    parser.epilog = _OUTPUTS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("folder", help="a folder of ENCODE-style model npz files (or the "
                        "encode422 folder, with models/ and models.csv inside). With --jaspar, a "
                        "models.csv in FOLDER or beside the models folder (encode422/models.csv "
                        "for encode422/models) names each model's known motif")
    parser.add_argument("--out", required=True, type=out_path,
                        help="folder for summary.npz, ofiv.csv, filters.csv (created if missing; "
                        "files of an earlier run there are replaced, and the final message, "
                        "which --quiet silences, says so); not the models folder itself (its "
                        "summary.npz would be read as a model on the next run): refused")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--first", type=int_at_least(1), default=None,
                       help="only the first N models (sorted)")
    which.add_argument("--models", nargs="+", default=None, help="only these model names")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out model files that cannot be loaded (truncated, not a "
                             "model, ...), name them in a warning and record them in "
                             "summary.npz's settings['skipped']; without it, one error names "
                             "every such file before any work")
    parser.add_argument("--starts", type=int_at_least(1), default=10,
                        help="random starts per model (default 10)")
    parser.add_argument("--l2", type=l2_value, default=2.8,
                        help=f"lambda, a number in (0, {_bound_text(L2_MAX)}] (default 2.8, the "
                             "authors'; larger values overflow the float32 regulariser); one lambda "
                             "for the whole zoo, so the per-model heuristic l2='auto' is not "
                             "offered here")
    parser.add_argument("--max-steps", type=int_at_least(1), default=2000,
                        help="step limit of each start's ascent (default 2000); models with "
                             "starts that reach it are named in a warning, and marked in "
                             "filters.csv's converged column")
    seed_argument(parser, "seed of the starts")
    parser.add_argument("--jaspar", default=None, metavar="RELEASE",
                        help="match each model's top filters against this JASPAR CORE vertebrates "
                             "release (e.g. JASPAR2016; the first call compiles TOMTOM, ~1 min). "
                             "models.csv's JASPAR 2016 ids are taken in another release as its "
                             "version of the same base id (MA0139.1 -> MA0139.2 in JASPAR2024)")
    parser.add_argument("--top", type=int_at_least(0), default=3, help="filters per model in filters.csv "
                        "(default 3; 0: all)")
    add_threads_argument(parser, "these small heads gain little from more, and lose a lot when the "
                                 "cores are shared")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return parser


def run_from_args(args):
    with torch_threads(args.threads):
        return _run(args)


def _read_models_table(folder, models_dir):
    """(path, DataFrame with 'name' and 'jaspar2016_id') of models.csv (FOLDER's, else the one
    beside the models folder), or (None, why not). Read before any work: a file pandas cannot
    parse ends the command there, not after the ascent."""
    import pandas as pd

    # encode422/models.csv sits beside models/, and FOLDER may be either of them
    places = list(dict.fromkeys([folder.resolve(), models_dir.resolve().parent]))
    table = next((p / "models.csv" for p in places if (p / "models.csv").is_file()), None)
    if table is None:
        return None, (f"no models.csv in {' or '.join(map(str, places))}: filters.csv gets no "
                      "known-motif columns (known_motif, known_p, known_rank)")
    try:
        meta = pd.read_csv(table)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SystemExit(f"deepresolve zoo: error: cannot read {table}: "
                         f"{str(e).strip().splitlines()[0]}") from None
    if not {"name", "jaspar2016_id"} <= set(meta.columns):
        return None, (f"{table} has no 'name' and 'jaspar2016_id' columns: filters.csv gets no "
                      "known-motif columns (known_motif, known_p, known_rank)")
    return table, meta


def _npz_names(folder):
    """The visible .npz files of ``folder`` (the ones ``deepresolve zoo`` may load)."""
    return [f for f in folder.glob("*.npz") if not f.name.startswith(".")]


def _physical_memory():
    """Bytes of RAM on this machine, or None where it cannot be read."""
    import os
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _run(args):
    import pandas as pd

    from .motifs import load_jaspar

    folder, out = Path(args.folder), Path(args.out)
    if folder.is_file():
        more = "; to run it alone, put it in a folder of its own" if folder.suffix == ".npz" else ""
        raise SystemExit(
            f"deepresolve zoo: error: {folder} is a file; zoo takes a folder of ENCODE-style .npz "
            f"models (or the encode422 folder){more}. For a PyTorch model of your own, use "
            "deepresolve run --model FILE.py:FACTORY [--weights STATE_DICT.pt] (deepresolve run "
            "--help)")
    if not folder.is_dir():
        raise SystemExit(f"deepresolve zoo: error: no such folder: {folder}")
    try:
        models_dir = encode_models_folder(folder)   # FOLDER/models in the encode422 layout
    except ValueError as e:   # models in both FOLDER and FOLDER/models
        raise SystemExit(f"deepresolve zoo: error: {e}") from None
    if out.resolve() == models_dir.resolve():
        raise SystemExit(f"deepresolve zoo: error: --out {out} is the models folder; its "
                         "summary.npz would be read as a model on the next run: choose another "
                         "folder")
    table = meta = None
    if args.jaspar:  # before any work: a bad release must not leave half an output folder
        from pyjaspar import jaspar_releases
        if args.jaspar not in jaspar_releases:
            raise SystemExit(f"deepresolve zoo: error: --jaspar {args.jaspar!r} is not a JASPAR "
                             f"release; choose from {sorted(jaspar_releases)}")
        table, meta = _read_models_table(folder, models_dir)  # meta: a message without table
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    try:
        zoo, skipped = _load_zoo(models_dir, load_encode_model,
                                 names=args.models if args.models else args.first,
                                 skip_bad=args.skip_bad)
        _same_shape_models(zoo, HEAD_LAYERS)
    except (FileNotFoundError, ValueError) as e:
        text = str(e).replace("skip_bad=True", "--skip-bad")
        if getattr(e, "deepresolve_bad_files", None) and not args.skip_bad \
                and "--skip-bad" not in text \
                and len(e.deepresolve_bad_files) < len(_npz_names(models_dir)):
            text += " (--skip-bad leaves out the files that cannot be loaded)"
        raise SystemExit(f"deepresolve zoo: error: {text}") from None
    first = next(iter(zoo.values()))
    K, item = first.fc1.weight.shape[1], first.fc1.weight.element_size()
    # FIMs and scores, their copies in the summary, and the starts: about 4 arrays of M x T x K
    need, ram = 4 * len(zoo) * args.starts * K * item, _physical_memory()
    if ram is not None and need > ram:
        raise SystemExit(f"deepresolve zoo: error: --starts {args.starts} for {len(zoo)} models "
                         f"of {K} filters needs about {need / 2**30:,.0f} GiB, more than this "
                         f"machine's {ram / 2**30:,.0f} GiB: use fewer starts or models")
    # before the ascent: an unwritable --out, or a folder named like an output, fails at once
    out = output_folder(out, "zoo", names=_OUTPUT_NAMES)
    if skipped:   # a warning: shown with --quiet too
        warnings.warn(_skipped_text(skipped).replace("skipped", "--skip-bad: left out", 1),
                      RuntimeWarning, stacklevel=2)
    say(f"{len(zoo)} models loaded from {models_dir}")
    try:
        s = summarize_zoo(zoo, n_starts=args.starts, l2=args.l2, seed=args.seed,
                          max_steps=args.max_steps, verbose=not args.quiet)
    except (ValueError, RuntimeError) as e:  # non-finite scores at a tiny --l2, torch's overflows
        raise SystemExit(f"deepresolve zoo: error: {str(e) or type(e).__name__}") from None
    # the versions and threads the numbers came from, now: TOMTOM (numba's OpenMP) may change
    # torch's thread count, which is not the setting the ascent ran with
    made_with = provenance()
    say(f"DeepResolve on {len(zoo)} models (T = {args.starts}, l2 = {args.l2:g}): "
        f"{time.perf_counter() - t0:.1f} s")
    ofiv = pd.DataFrame(s.ofiv, index=pd.Index(s.settings["models"], name="model"),
                        columns=[f"ofiv_{k}" for k in range(K)])
    jaspar = known = None
    if args.jaspar:
        say(f"matching filters against {args.jaspar} CORE vertebrates with TOMTOM (the first run "
            "compiles it with numba, about a minute; set NUMBA_CACHE_DIR to keep the compiled code)")
        jaspar = load_jaspar(args.jaspar, collection="CORE", tax_group="vertebrates")
        if table is None:
            say(meta)
        else:  # JASPAR 2016 ids; another release: its version of the base id
            where = {n: jaspar.id_index(mid) for n, mid in zip(meta["name"], meta["jaspar2016_id"])
                     if isinstance(mid, str)}
            known = {n: jaspar.ids[i] for n, i in where.items() if i is not None}
            lost = sorted(n for n in zoo if n in where and where[n] is None)
            absent = sorted(n for n in zoo if n not in where)
            say(f"known motifs from {table}"
                + (f"; {len(lost)} model(s) have no version of theirs in {args.jaspar} (no "
                   f"known_p / known_rank there): {lost[:3]}" if lost else "")
                + (f"; {len(absent)} model(s) have no JASPAR id there (no known_p / known_rank): "
                   f"{absent[:3]}" if absent else ""))
    ft = zoo_filter_table(s, zoo, jaspar=jaspar, known=known, top=args.top,
                          verbose=not args.quiet and jaspar is not None)
    s.settings.update(top=args.top, jaspar=args.jaspar, models_folder=str(models_dir.resolve()),
                      skipped=skipped, **made_with)
    with write_errors("zoo"):  # a full disk: one line naming the file; earlier outputs kept
        replaced = write_together(out, {"summary.npz": s.save,
                                        "ofiv.csv": ofiv.to_csv,
                                        "filters.csv": lambda p: ft.to_csv(p, index=False)})
    say(f"wrote summary.npz, ofiv.csv and filters.csv to {out} in {time.perf_counter() - t0:.1f} s"
        + replaced_note(replaced))
    return 0


def main(argv=None):
    """``python -m deepresolve_captum.zoo_summary ARGS`` is ``deepresolve zoo ARGS`` (see
    ``demo.main``)."""
    from .cli import main as cli_main

    return cli_main(["zoo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
