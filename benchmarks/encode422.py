"""The paper's Table 1 on the authors' real ENCODE TF models, against the baselines.

For every model: rank its 16 first-layer filters by each method (DeepResolve's OFIV; saliency,
gradient x input and DeepLIFT at the fc1 input averaged over model-derived positives), turn the
filters into probability matrices (the paper's clip rule, or --pwm activation), TOMTOM them
against JASPAR 2016 CORE vertebrates and count the models whose known motif is hit among the
top 1 / 3 / 5 channels at p < 0.05 and p < 0.5 (another release with --jaspar: models.csv's
2016 ids are looked up there by base id). Enhanced DeepMotif proposes its own 5 matrices
(best windows of its top-5 generated sequences). Two controls make the loose cut-offs honest:
a random order of the filters and "any of the 16 filters". A strict column asks that the known
motif be among the top-3 JASPAR matches of the top-ranked filter.

Also: Mann-Whitney (unpaired) and Wilcoxon (paired) tests on the rank each method gives the
filter that best matches the known motif; Spearman agreement of our OFIV with the authors'
(lambda = 2.8; skipped when the folder has no authors_ofiv.csv); wall time per method.
Per-model results go to a CSV.

    NUMBA_CACHE_DIR=$PWD/.numba_cache python benchmarks/encode422.py \\
        --models ../shared/data/encode422 --out bench_out/encode422.csv
    python benchmarks/encode422.py --subset 20 --methods deepresolve,deeplift   # quick look

Positive sequences for the input-dependent baselines are the top-scoring 200 of 10,000 uniform
random 101-bp sequences, scored by the model itself (never the known motif).

Every argument is checked before any work starts (an argparse error naming it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
# One thread per library unless told otherwise: on a shared 2-core machine, OpenMP/BLAS worker
# threads spin at barriers while descheduled and made this run ~5x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import pandas as pd
import torch
from scipy import stats

from deepresolve_captum import LayerFeatureOptimizer, summarize
from deepresolve_captum import baselines as B
from deepresolve_captum import motifs as M
from deepresolve_captum.adapters import make_references
from deepresolve_captum.cli import SEED_BELOW, check_output_file, int_at_least, l2_value
from deepresolve_captum.zoo import encode_models_folder, load_encode_zoo
from deepresolve_captum.zoo_summary import summarize_zoo

ALL_METHODS = ("deepresolve", "saliency", "grad_x_input", "deeplift", "deepmotif")
LABELS = {"deepresolve": "DeepResolve (OFIV)", "saliency": "saliency @fc1",
          "grad_x_input": "grad x input @fc1", "deeplift": "DeepLIFT @fc1",
          "deepmotif": "enhanced DeepMotif", "authors": "authors' saved OFIV",
          "random": "control: random order",
          "any16": "control: any of 16"}
INPUT_DEPENDENT = ("saliency", "grad_x_input", "deeplift")
TOPS = (1, 3, 5)
CUTS = (0.05, 0.5)
DM_TOP = 5  # enhanced DeepMotif's candidate matrices per model (its top-5 generated sequences)


def _l2_arg(v):
    if v == "auto":
        return v
    try:
        lam = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {v!r}")
    if not (np.isfinite(lam) and lam > 0):
        raise argparse.ArgumentTypeError(f"lambda must be a positive number or 'auto', got {v!r}")
    return l2_value(v)   # at most L2_MAX, as deepresolve zoo


def _int_at_least(lo):
    """argparse type: an int >= lo."""
    def conv(v):
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v!r}")
        if n < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {n}")
        return n
    return conv


def parse_args(argv=None):
    """The command line, checked: every error (bad numbers, a subset that selects nothing or
    names unknown models, no methods, a missing models folder, a JASPAR release without some
    selected model's known motif, an ``--out`` that is a folder or cannot be written) is an
    argparse error before any model is loaded. What the
    checks read is kept for ``main``: ``args.meta`` (the selected rows of models.csv),
    ``args.motifs`` (the JASPAR MotifSet) and ``args.known_ids`` (see :func:`known_motifs`)."""
    default_models = Path(__file__).resolve().parents[2] / "shared" / "data" / "encode422"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=str(default_models),
                   help="the encode422 folder (models/, models.csv; authors_ofiv.csv optional)")
    p.add_argument("--subset", default=None,
                   help="an int n >= 1 (n models spread over the list and so over the TFs), "
                        "'first:n' (the first n), or comma-separated model names or TF symbols "
                        "(each must match)")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    p.add_argument("--starts", type=_int_at_least(1), default=10,
                   help="DeepResolve random starts T")
    p.add_argument("--l2", type=_l2_arg, default=2.8,
                   help="DeepResolve lambda (authors': 2.8), or 'auto': the paper's heuristic per model "
                        "(FIM norm ~ the norm of the mean fc1 input over realistic sequences: the model-derived "
                        "positives and one dinucleotide shuffle of each, like a ChIP-seq training set)")
    p.add_argument("--no-batch", action="store_true",
                   help="run DeepResolve model by model instead of the whole zoo as one batch")
    p.add_argument("--dm-starts", type=_int_at_least(DM_TOP), default=20,
                   help=f"enhanced DeepMotif random starts (>= {DM_TOP}: it keeps the top {DM_TOP})")
    p.add_argument("--dm-steps", type=_int_at_least(1), default=200,
                   help="enhanced DeepMotif ascent steps")
    p.add_argument("--n-pos", type=_int_at_least(1), default=200,
                   help="model-derived positives per model (<= --n-candidates)")
    p.add_argument("--n-candidates", type=_int_at_least(1), default=10000,
                   help="random sequences scored")
    p.add_argument("--pwm", choices=("clip", "activation"), default="clip",
                   help="filter -> matrix rule: the paper's clip rule or top-activating k-mers")
    p.add_argument("--jaspar", default="JASPAR2016",
                   help="JASPAR release (CORE vertebrates). models.csv names each model's known "
                        "motif by its JASPAR 2016 id (MA0139.1); in a release without that "
                        "version the release's own version of the base id (MA0139 -> MA0139.2 in "
                        "JASPAR2024) is the known motif; a release lacking the base id of a "
                        "selected model is refused (JASPAR2014 lacks 4 of the 43, used by 9 models)")
    p.add_argument("--seed", type=int_at_least(0, below=SEED_BELOW), default=0,
                   help="seed of the starts and of DeepLIFT's shuffles (an integer in [0, 2**63))")
    p.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads")
    p.add_argument("--out", default="bench_out/encode422.csv",
                   help="per-model CSV, relative to the current folder (default: %(default)s); "
                        "its folder is created, if missing, once every argument has been checked")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    if not methods:
        p.error(f"--methods: no method given; choose from {','.join(ALL_METHODS)}")
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {','.join(ALL_METHODS)}")
    args.methods = methods
    check_output_file(p, "--out", args.out)
    if args.n_pos > args.n_candidates:
        p.error(f"--n-pos ({args.n_pos}) must be <= --n-candidates ({args.n_candidates}): the "
                "positives are the top-scoring of the random candidates")
    folder = Path(args.models)
    if not folder.is_dir():
        p.error(f"--models: no such folder: {folder}")
    if not (folder / "models.csv").is_file():
        p.error(f"--models: {folder} has no models.csv")
    try:
        meta = select(pd.read_csv(folder / "models.csv"), args.subset)
    except ValueError as e:
        p.error(f"--subset: {e}")
    mdir = encode_models_folder(folder)
    absent = [n for n in meta["name"] if not (mdir / f"{n}.npz").is_file()]
    if absent:
        p.error(f"--models: {len(absent)} selected model(s) have no .npz in {mdir}: {absent[:3]}")
    try:
        motifs = M.load_jaspar(release=args.jaspar, collection="CORE", tax_group="vertebrates")
        known_ids = known_motifs(meta, motifs, args.jaspar)
    except ValueError as e:
        p.error(f"--jaspar: {e}")
    args.meta, args.motifs, args.known_ids = meta, motifs, known_ids
    return args


def select(meta, subset):
    """The rows of models.csv ``subset`` names (see --subset); ValueError when it selects
    nothing or names a model / TF that is not there."""
    if subset is None:
        return meta
    subset = subset.strip()
    if subset.isdigit() or subset.startswith("first:"):
        v = subset.split(":", 1)[1] if subset.startswith("first:") else subset
        if not v.strip().isdigit() or int(v) < 1:
            raise ValueError(f"{subset!r}: the number of models must be an integer >= 1")
        n = int(v)
        if subset.startswith("first:"):
            return meta.iloc[:n]
        idx = np.unique(np.linspace(0, len(meta) - 1, min(n, len(meta))).round().astype(int))
        return meta.iloc[idx]
    keys = list(dict.fromkeys(k.strip() for k in subset.split(",") if k.strip()))
    if not keys:
        raise ValueError(f"{subset!r} names no model: give an int n, 'first:n', or "
                         "comma-separated model names or TF symbols")
    known = set(meta["name"]) | set(meta["tf"])
    unknown = [k for k in keys if k not in known]
    if unknown:
        import difflib
        lower = {}
        for k in sorted(known):
            lower.setdefault(k.lower(), k)
        hints = {k: [lower[c] for c in difflib.get_close_matches(k.lower(), list(lower), n=3,
                                                                  cutoff=0.6)] for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {', '.join(h)}?" for k, h in hints.items() if h)
        raise ValueError(f"unknown model names or TF symbols {unknown} (names and symbols are "
                         f"case-sensitive, e.g. CTCF)" + (f"; {hint}" if hint else ""))
    return meta[meta["name"].isin(keys) | meta["tf"].isin(keys)]


def known_motifs(meta, jaspar, release):
    """Each model's known motif in the loaded JASPAR release: dict name -> (id, motif name).

    models.csv holds JASPAR 2016 ids (``jaspar2016_id``, e.g. MA0139.1). A release holding that
    version uses it; otherwise the release's version of the base id (``MotifSet.id_index``:
    MA0139 -> MA0139.2 in JASPAR2024). ValueError when a base id is not in the release at all."""
    out, missing = {}, {}
    for name, mid in zip(meta["name"], meta["jaspar2016_id"]):
        i = jaspar.id_index(mid)
        if i is None:
            missing.setdefault(mid, []).append(name)
        else:
            out[name] = (jaspar.ids[i], jaspar.names[i])
    if missing:
        n = sum(len(v) for v in missing.values())
        raise ValueError(
            f"{release} has no version of the known motif of {n} selected model(s): "
            + ", ".join(f"{mid} ({len(v)} model(s), e.g. {v[0]})" for mid, v in missing.items())
            + ". Use JASPAR2016 (the ids of models.csv) or a later release, or leave those "
              "models out with --subset")
    return out


def rank_of(order, item):
    """1-based position of item in order."""
    return int(np.where(np.asarray(order) == item)[0][0]) + 1


def auto_l2_inputs(X, seed):
    """Realistic sequences for ``l2="auto"`` from a model's positives X (n, 4, 101): X and one
    dinucleotide shuffle of each (the negatives of the authors' ChIP-seq sets were shuffles)
    -> (2 n, 4, 101)."""
    return torch.cat([X, make_references(X, "shuffle", n_shuffles=1, random_state=seed)[:, 0]])


def run_deepresolve(zoo, n_starts, l2, seed, batch=True, auto_inputs=None):
    """DeepResolve (ascent at the fc1 input + summary) for every model of the zoo.

    batch=True is :func:`deepresolve_captum.zoo_summary.summarize_zoo`: the models' heads as one
    network on a shared fc1 input, groups of models per batched ascent with one row per (model,
    start), one ``summarize`` call; each model's result is the one it gets alone. batch=False
    runs the engine per model.
    l2="auto" needs batch=False (one lambda per model) and ``auto_inputs(i, model)`` -> the
    sequences of the heuristic for the i-th model; the lambda chosen is returned as ``l2``.

    Returns dict name -> {ofiv (16,), n_components, n_nonadditive, steps}.
    """
    x0 = torch.zeros(1, 4, 101)
    names = list(zoo)
    lams = [l2] * len(names)
    if l2 == "auto" and batch:
        raise ValueError("l2='auto' chooses one lambda per model: use batch=False")
    if batch:
        s = summarize_zoo(zoo, n_starts=n_starts, l2=l2, seed=seed, random_state=0)
        steps = [s.settings["steps_max"]] * len(names)
    else:
        fl, sl, steps = [], [], []
        for i, m in enumerate(zoo.values()):
            opt = LayerFeatureOptimizer(m, m.fc1)
            inputs = auto_inputs(i, m) if l2 == "auto" else x0
            f, sc = opt.attribute(inputs, target=0, n_starts=n_starts, l2=l2, seed=seed,
                                  attribute_to_layer_input=True, return_scores=True)
            lams[i] = float(opt.diagnostics.l2)
            fl.append(f[0])
            sl.append(sc[0])
            steps.append(int(opt.diagnostics.steps.max()))
        s = summarize(torch.stack(fl), torch.stack(sl), random_state=0)
    return {n: dict(ofiv=np.asarray(s.ofiv[i], dtype=float),
                    n_components=int(s.n_components[i]),
                    n_nonadditive=int(np.asarray(s.nonadditive[i]).sum()), steps=steps[i],
                    l2=float(lams[i]))
            for i, n in enumerate(names)}


def main(argv=None):
    args = parse_args(argv)  # every argument checked, models selected, known motifs found
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)   # only now that all checks passed
    torch.set_num_threads(args.threads)
    methods, meta, jaspar, known_ids = args.methods, args.meta, args.motifs, args.known_ids
    folder = Path(args.models)
    if (folder / "authors_ofiv.csv").is_file():
        authors = pd.read_csv(folder / "authors_ofiv.csv").set_index("name")
    else:
        print(f"note: {folder / 'authors_ofiv.csv'} not found: no comparison with the authors' "
              "saved OFIVs (no Spearman, no 'authors' row)", flush=True)
        authors = pd.DataFrame(index=pd.Index([], name="name"))
    moved = sorted({(a, known_ids[n][0]) for n, a in zip(meta["name"], meta["jaspar2016_id"])
                    if known_ids[n][0] != a})
    if moved:
        print(f"{args.jaspar}: {len(moved)} known motif(s) not in this release as models.csv's "
              f"JASPAR 2016 version, taken by base id: "
              + ", ".join(f"{a} -> {b}" for a, b in moved[:6]) + (", ..." if len(moved) > 6 else ""),
              flush=True)
    t0 = time.perf_counter()
    zoo = load_encode_zoo(folder, names=list(meta["name"]))
    t_load = time.perf_counter() - t0
    print(f"{len(zoo)} models loaded in {t_load:.2f} s; {len(jaspar)} {args.jaspar} CORE "
          f"vertebrate motifs; filter matrices by the {args.pwm!r} rule", flush=True)

    timing = {m: 0.0 for m in methods}
    timing["tomtom"] = 0.0
    timing["positives"] = 0.0
    rng = np.random.default_rng(args.seed)
    rows = []
    cached_positives = {}

    def positives(i, model):
        """The i-th model's positives and their logits, computed once (seed as in the loop)."""
        if i not in cached_positives:
            t = time.perf_counter()
            cached_positives[i] = B.model_positives(
                model, n=args.n_pos, n_candidates=args.n_candidates,
                random_state=args.seed * 100003 + i, return_scores=True)
            timing["positives"] += time.perf_counter() - t
        return cached_positives[i]

    if "deepresolve" in methods:
        t = time.perf_counter()
        if args.l2 == "auto":
            args.no_batch = True
        dres = run_deepresolve(
            zoo, args.starts, args.l2, args.seed, batch=not args.no_batch,
            auto_inputs=lambda i, m: auto_l2_inputs(positives(i, m)[0], args.seed * 100003 + i))
        timing["deepresolve"] = time.perf_counter() - t - timing["positives"]  # auto: counted there
        print(f"DeepResolve on {len(zoo)} models ({'one by one' if args.no_batch else 'one batch'}"
              f", T = {args.starts}): {timing['deepresolve']:.1f} s", flush=True)
        if args.l2 == "auto":
            lam = np.array([d["l2"] for d in dres.values()])
            print(f"l2='auto' chose lambda: median {np.median(lam):.3g} (IQR {np.percentile(lam, 25):.3g}-"
                  f"{np.percentile(lam, 75):.3g}, range {lam.min():.3g}-{lam.max():.3g})", flush=True)
    meta_by_name = meta.set_index("name")
    for i, (name, model) in enumerate(zoo.items()):
        info = meta_by_name.loc[name]
        known, known_name = known_ids[name]  # in args.jaspar (models.csv: JASPAR 2016 ids)
        row = {"name": name, "tf": info["tf"], "known_id": known, "known_name": known_name,
               "jaspar2016_id": info["jaspar2016_id"]}
        seed = args.seed * 100003 + i
        # --- filters -> matrices -> TOMTOM against the whole collection (method independent)
        t = time.perf_counter()
        if args.pwm == "clip":
            pwms = M.filter_pwms(model.conv.weight)
        else:
            pwms = M.activation_pwms(model.conv, random_state=seed)
        hits = M.known_motif_hits(pwms, jaspar, known)
        timing["tomtom"] += time.perf_counter() - t
        p_known = hits["p_value"].to_numpy()
        r_known = hits["rank"].to_numpy()
        best_filter = int(np.argmin(p_known))
        row.update(best_filter=best_filter, best_filter_p=p_known[best_filter],
                   best_filter_jaspar_rank=int(r_known[best_filter]))
        orders = {}
        theirs = (authors.loc[name, [f"ofiv_{k}" for k in range(16)]].to_numpy(float)
                  if name in authors.index else None)
        # --- DeepResolve (computed above for the whole zoo)
        if "deepresolve" in methods:
            ofiv = dres[name]["ofiv"]
            orders["deepresolve"] = np.argsort(-ofiv, kind="stable")
            if theirs is not None:
                row["spearman_authors"] = stats.spearmanr(ofiv, theirs)[0]
                row["authors_top_filter"] = int(np.argmax(theirs))
                row["authors_n_components"] = int(authors.loc[name, "num_components"])
            row["n_components"] = dres[name]["n_components"]
            row["n_nonadditive"] = dres[name]["n_nonadditive"]
            row["ascent_steps_max"] = dres[name]["steps"]
            row["l2"] = dres[name]["l2"]
        # --- input-dependent baselines at the fc1 input
        if any(m in methods for m in INPUT_DEPENDENT):
            X, xs = positives(i, model)
            row["positives_min_logit"] = float(xs.min())
            for m in INPUT_DEPENDENT:
                if m in methods:
                    t = time.perf_counter()
                    sc = B.layer_channel_scores(model, model.fc1, X, m, target=0,
                                                attribute_to_layer_input=True,
                                                random_state=seed)
                    timing[m] += time.perf_counter() - t
                    orders[m] = np.argsort(-sc.numpy(), kind="stable")
        if theirs is not None:  # reference: the same protocol on the authors' own OFIVs
            orders["authors"] = np.argsort(-theirs, kind="stable")
        orders["random"] = rng.permutation(16)
        orders["any16"] = np.argsort(p_known, kind="stable")  # ceiling: the best filter first
        for m, order in orders.items():
            row[f"{m}_order"] = " ".join(map(str, order))
            for k in TOPS:
                pk = p_known[order[:k]].min()
                for c in CUTS:
                    row[f"{m}_top{k}_p{c}"] = bool(pk < c)
            row[f"{m}_top1_jaspar_rank"] = int(r_known[order[0]])
            row[f"{m}_top1_filter"] = int(order[0])
            row[f"{m}_top1_known_p"] = float(p_known[order[0]])
            row[f"{m}_top1_best_match"] = f"{hits['best_name'].iloc[order[0]]} (p {hits['best_p'].iloc[order[0]]:.1e})"
            row[f"{m}_strict"] = bool(r_known[order[0]] <= 3)
            row[f"{m}_best_filter_rank"] = rank_of(order, best_filter)
        row["any16_top16_p0.05"] = bool(p_known.min() < 0.05)
        row["any16_top16_p0.5"] = bool(p_known.min() < 0.5)
        # --- enhanced DeepMotif: its own 5 candidate matrices
        if "deepmotif" in methods:
            t = time.perf_counter()
            dm_pwms, _ = B.deepmotif_pwms(model, width=model.conv.kernel_size[0], n_top=DM_TOP,
                                          n_starts=args.dm_starts, n_steps=args.dm_steps,
                                          random_state=seed)
            timing["deepmotif"] += time.perf_counter() - t
            t = time.perf_counter()
            dh = M.known_motif_hits(dm_pwms, jaspar, known)
            timing["tomtom"] += time.perf_counter() - t
            dm_p, dm_r = dh["p_value"].to_numpy(), dh["rank"].to_numpy()
            for k in TOPS:
                for c in CUTS:
                    row[f"deepmotif_top{k}_p{c}"] = bool(dm_p[:k].min() < c)
            row["deepmotif_top1_jaspar_rank"] = int(dm_r[0])
            row["deepmotif_strict"] = bool(dm_r[0] <= 3)
        rows.append(row)
        if args.verbose or (i + 1) % 25 == 0:
            el = time.perf_counter() - t0
            print(f"  {i + 1}/{len(zoo)} models, {el:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    report(df, methods, timing, args, out)
    return df


def _print_top1_disagreements(df, methods, cut=0.05):
    """The models where DeepResolve's top-ranked filter and DeepLIFT's disagree on hitting the
    known motif at p < cut: which filter each put first and what that filter matches best."""
    other = "deeplift" if "deeplift" in methods else next((m for m in INPUT_DEPENDENT if m in methods), None)
    if other is None or "deepresolve_top1_filter" not in df:
        return
    a, b = df[f"deepresolve_top1_p{cut}"].astype(bool), df[f"{other}_top1_p{cut}"].astype(bool)
    rows = df[a != b]
    print()
    print(f"Top-1 at p<{cut}: DeepResolve only {int((a & ~b).sum())}, {LABELS[other]} only "
          f"{int((~a & b).sum())}, both {int((a & b).sum())}, neither {int((~a & ~b).sum())}")
    for _, r in rows.iterrows():
        cells = []
        for m in ("deepresolve", other):
            cells.append(f"{m} filter {r[f'{m}_top1_filter']:>2d}: p {r[f'{m}_top1_known_p']:.1e} vs "
                         f"{r['known_name']}, best {r[f'{m}_top1_best_match']}")
        auth = (f"; authors' top filter {int(r['authors_top_filter'])}"
                if "authors_top_filter" in r and r["authors_top_filter"] == r["authors_top_filter"] else "")
        print(f"  {r['tf']:8s} {r['name']}: " + " | ".join(cells) + auth)


def gmm_agreement(df):
    """Per model, our GMM component count against the authors' (``n_components`` and
    ``authors_n_components`` of the per-model table; models without an authors' row are left
    out) -> (models compared, models with the same count, DataFrame of the others: name, tf,
    n_components, authors_n_components)."""
    both = df.dropna(subset=["n_components", "authors_n_components"])
    differ = both[both["n_components"].astype(int) != both["authors_n_components"].astype(int)]
    return len(both), len(both) - len(differ), differ[["name", "tf", "n_components",
                                                       "authors_n_components"]]


def gmm_agreement_text(df):
    """The report's GMM lines: agreement per model first (the two histograms can match while
    the models behind them differ), then the histograms, then each model that differs."""
    n, same, differ = gmm_agreement(df)
    ours = df["n_components"].value_counts().sort_index().to_dict()
    theirs = df["authors_n_components"].dropna().astype(int).value_counts().sort_index().to_dict()
    lines = [f"GMM components: the same count as the authors' in {same}/{n} models "
             f"(histograms: ours {ours}, authors' {theirs})"]
    lines += [f"  differs: {r.tf:8s} {r.name}: ours {int(r.n_components)}, authors' "
              f"{int(r.authors_n_components)}" for r in differ.itertuples()]
    return "\n".join(lines)


def report(df, methods, timing, args, out):
    n = len(df)
    shown = [m for m in ALL_METHODS if m in methods] + ["random", "any16"]
    if "authors_top1_p0.05" in df and df["authors_top1_p0.05"].notna().all():
        shown.insert(shown.index("random"), "authors")
    print()
    print(f"Table 1 on {n} of the authors' ENCODE TF models (known {args.jaspar} motif hit by a "
          f"top-k channel at TOMTOM p < cut; filter matrices: {args.pwm} rule; DeepResolve "
          f"T = {args.starts}, lambda = {args.l2})")
    head = (f"{'method':24s}" + "".join(f"{f'top{k} p<{c}':>13s}" for c in CUTS for k in TOPS)
            + f"{'strict':>8s}{'best-filter rank':>18s}{'time (s)':>10s}")
    print(head)
    print("-" * len(head))
    for m in shown:
        cells = "".join(f"{int(df[f'{m}_top{k}_p{c}'].sum()):>13d}" for c in CUTS for k in TOPS)
        strict = f"{int(df[f'{m}_strict'].sum()):>8d}"
        if f"{m}_best_filter_rank" in df:
            r = df[f"{m}_best_filter_rank"]
            bfr = f"{r.mean():.2f} (med {r.median():.0f})"
        else:
            bfr = "-"
        tm = f"{timing[m]:.1f}" if m in timing else "-"
        print(f"{LABELS[m]:24s}{cells}{strict}{bfr:>18s}{tm:>10s}")
    print(f"{'':24s}(any of the 16 filters hits at p<0.05 in {int(df['any16_top16_p0.05'].sum())}, "
          f"at p<0.5 in {int(df['any16_top16_p0.5'].sum())} of {n})")
    print("strict = the known motif is among the top-3 JASPAR matches of the top-ranked "
          "filter (for DeepMotif: of its top matrix); best-filter rank = rank given to the filter "
          "that matches the known motif best (1-16)")
    if "deepresolve" in methods:
        print()
        print("Rank of the best-matching filter, DeepResolve vs input-dependent methods "
              "(two-sided; 'less' = DeepResolve ranks it higher):")
        a = df["deepresolve_best_filter_rank"].to_numpy()
        for m in INPUT_DEPENDENT + ("authors", "random"):
            if f"{m}_best_filter_rank" not in df:
                continue
            b = df[f"{m}_best_filter_rank"].to_numpy()
            mw = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
            mw1 = stats.mannwhitneyu(a, b, alternative="less").pvalue
            if np.any(a != b):
                wx = stats.wilcoxon(a, b, alternative="two-sided").pvalue
                wx1 = stats.wilcoxon(a, b, alternative="less").pvalue
            else:
                wx = wx1 = 1.0
            better = int((a < b).sum()), int((a > b).sum())
            print(f"  vs {LABELS[m]:22s} Mann-Whitney p = {mw:.2e} (less: {mw1:.2e});  "
                  f"Wilcoxon p = {wx:.2e} (less: {wx1:.2e});  DeepResolve better/worse in "
                  f"{better[0]}/{better[1]} models")
        _print_top1_disagreements(df, methods)
        if "spearman_authors" in df:
            r = df["spearman_authors"].dropna()
            q1, med, q3 = np.percentile(r, [25, 50, 75])
            same_top = int((df["authors_top_filter"] == df["deepresolve_order"].str.split().str[0]
                            .astype(int)).sum())
            print()
            print(f"Spearman of our OFIV with the authors' (lambda = {args.l2}): median {med:.3f} "
                  f"(IQR {q1:.3f}-{q3:.3f}, min {r.min():.3f}); >= 0.9 in {(r >= 0.9).sum()}/"
                  f"{len(r)}; same top filter in {same_top}/{len(r)}")
            print(gmm_agreement_text(df))
    print()
    t_total = sum(v for k, v in timing.items())
    print("wall time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items())
          + f"; total {t_total:.1f}")
    if "deepresolve" in methods:
        print(f"DeepResolve over {n} models (T = {args.starts}, ascent + summary): "
              f"{timing['deepresolve']:.1f} s")
    print(f"per-model results: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
