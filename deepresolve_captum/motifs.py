"""Motif tools: convolutional filters or channels -> probability matrices -> JASPAR -> TOMTOM.

Every matrix here is a *probability* matrix in PyTorch layout, a float64 numpy array of shape
(4, width) with rows A, C, G, T and columns summing to 1 (what ``memelite.tomtom`` expects).
Collections of matrices are lists of such arrays (widths may differ) or arrays (n, 4, width).

- :func:`filter_pwms` -- the paper's rule: clip a filter's negative weights to 0, normalise
  each column (an all-zero column becomes uniform).
- :func:`window_pwms` / :func:`activation_pwms` -- the better rule: base frequencies of the
  top-activating windows (k-mers) of many sequences, per channel; works for any channel whose
  receptive field is a contiguous window of the input (first-layer filters, deeper channels).
- :func:`load_jaspar` -- a JASPAR collection from ``pyjaspar`` (offline), as a :class:`MotifSet`.
- :func:`tomtom` -- ``memelite.tomtom`` wrapped to a long pandas DataFrame
  (query, target id/name, p-value, offset, strand, rank).
- :func:`known_motif_hits` -- where one known motif stands for each query (p-value against it
  and its rank among all targets), the quantity behind the paper's Table 1.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

__all__ = ["MotifSet", "filter_pwms", "window_pwms", "activation_pwms", "information_content",
           "reverse_complement", "load_jaspar", "tomtom", "known_motif_hits", "write_meme",
           "MIN_QUERY_BITS"]

ALPHABET = "ACGT"

#: tomtom warns about queries with less total information content than this (bits): near-uniform
#: matrices get small p-values against some targets all the same. JASPAR 2016 CORE vertebrate
#: motifs carry 5.4 bits at least; the authors' 4,416 ENCODE filters, by the clip rule, 9.5.
MIN_QUERY_BITS = 3.0


# ------------------------------------------------------------------ validation helpers ------

def _as_numpy(x, name):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or torch tensor, not {type(x).__name__}")


def _as_matrix_list(pwms, name="pwms"):
    """A list of float64 (4, w) arrays from a list/tuple of matrices or an (n, 4, w) array."""
    if isinstance(pwms, (np.ndarray, torch.Tensor)):
        arr = _as_numpy(pwms, name)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"{name} must have shape (n, 4, width), got {arr.shape}")
        pwms = list(arr)
    elif not isinstance(pwms, (list, tuple)):
        raise TypeError(f"{name} must be a list of (4, width) matrices or an (n, 4, width) array")
    out = []
    for i, m in enumerate(pwms):
        m = np.ascontiguousarray(_as_numpy(m, f"{name}[{i}]"), dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != 4 or m.shape[1] < 1:
            raise ValueError(f"{name}[{i}] must have shape (4, width), got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{name}[{i}] has non-finite values")
        out.append(m)
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def _check_probabilities(mats, name, atol=1e-3):
    """Raise unless every matrix is non-negative with columns summing to 1 (within atol)."""
    for i, m in enumerate(mats):
        if m.min() < 0 or np.abs(m.sum(0) - 1).max() > atol:
            raise ValueError(
                f"{name}[{i}] is not a probability matrix (negative values, or columns not summing "
                f"to 1): convert filter weights with filter_pwms() or activation_pwms() first")
    return mats


def _normalise_columns(m, pseudocount=0.0):
    """Add ``pseudocount`` to every entry and make each column sum to 1 (zero column -> uniform)."""
    m = np.clip(np.asarray(m, dtype=np.float64), 0, None) + pseudocount
    s = m.sum(axis=-2, keepdims=True)
    uniform = np.full_like(m, 0.25)
    return np.where(s > 0, m / np.where(s > 0, s, 1.0), uniform)


# ------------------------------------------------------------------ matrices from filters ---

def filter_pwms(weights, pseudocount=0.0):
    """The paper's rule: filter weights -> probability matrices.

    Negative weights are clipped to 0 and each column is divided by its sum; a column with no
    positive weight becomes uniform (0.25 each).

    Parameters
    ----------
    weights: (C, 4, W) numpy array or torch tensor (e.g. ``model.conv.weight``, rows A, C, G, T).
        A single (4, W) filter is accepted too. This is PyTorch's ``Conv1d`` layout; a Keras
        ``Conv1D`` kernel is (W, 4, C) and passes the shape check, so transpose it first
        (``np.transpose(kernel, (2, 1, 0))``; Theano-era kernels are also flipped along W).
    pseudocount: added to every clipped weight before normalising (default 0: the paper's rule).

    Returns
    -------
    numpy float64 array (C, 4, W), columns summing to 1.
    """
    w = _as_numpy(weights, "weights").astype(np.float64)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[1] != 4:
        raise ValueError(f"weights must have shape (C, 4, W), got {w.shape}")
    if not np.all(np.isfinite(w)):
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(w))[0]})
        raise ValueError(f"weights of filter(s) {bad[:10]} are not finite (NaN or inf)")
    if not pseudocount >= 0:
        raise ValueError("pseudocount must be >= 0")
    return _normalise_columns(w, pseudocount)


def column_information(pwm, background=0.25):
    """Information content (bits) of each column of probability matrices (..., 4, w) -> (..., w):
    sum_b p_b log2(p_b / background)."""
    p = np.asarray(pwm, dtype=np.float64)
    return (p * np.log2(np.clip(p, 1e-12, None) / background)).sum(-2)


def information_content(pwms, background=0.25):
    """Total information content (bits) of each probability matrix.

    Parameters
    ----------
    pwms: list of (4, w) matrices or an (n, 4, w) array.

    Returns
    -------
    numpy array (n,): sum over columns of sum_b p_b log2(p_b / background).
    """
    return np.array([float(column_information(m, background).sum()) for m in _as_matrix_list(pwms)])


def reverse_complement(pwm):
    """Reverse complement of a (4, w) matrix (rows A, C, G, T) or an (n, 4, w) array."""
    a = _as_numpy(pwm, "pwm")
    if a.ndim not in (2, 3) or a.shape[-2] != 4:
        raise ValueError(f"pwm must have shape (4, w) or (n, 4, w), got {a.shape}")
    return np.ascontiguousarray(a[..., ::-1, ::-1])


def window_pwms(X, activations, width, offset=0, n_top=500, min_fraction=0.0, pseudocount=0.5,
                return_counts=False, stride=1):
    """The better rule: base frequencies of each channel's top-activating input windows.

    For every channel, the ``n_top`` (sequence, position) pairs with the highest positive
    activation (and at least ``min_fraction`` of that channel's maximum) are taken; the input
    window of each, ``X[n, :, p * stride + offset : p * stride + offset + width]``, is summed and
    normalised. Windows that run off the sequence are skipped. Works for any channel whose
    receptive field is a contiguous window: first-layer filters (``width`` = filter length,
    ``offset`` = -padding, ``stride`` 1) or deeper channels: with ``rf =
    channel_motifs.receptive_field(...)``, pass ``width=rf["length"]``, ``offset=rf["offset"]``
    and ``stride=rf["stride"]`` (after a max-pool of 4, stride is 4).

    Parameters
    ----------
    X: one-hot sequences (N, 4, L), numpy or torch.
    activations: (N, C, P) activations of C channels at P positions, numpy or torch.
    width: receptive-field width in bases.
    offset: input start of the window of position p is ``p * stride + offset``; default 0.
    stride: input bases between neighbouring positions of ``activations``; default 1.
    n_top: windows used per channel (fewer if fewer have positive activation).
    min_fraction: keep only windows with activation >= min_fraction * channel max (0 = any > 0).
    pseudocount: added to each count before normalising (0.5 keeps sparse columns finite).
    return_counts: also return the number of windows used per channel.

    Returns
    -------
    numpy float64 (C, 4, width) probability matrices (uniform for a channel that never fires);
    with ``return_counts``, also an int array (C,).
    """
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    return _window_pwms(X, activations, width, offset, int(stride), n_top, min_fraction,
                        pseudocount, return_counts)


def _window_pwms(X, activations, width, offset, stride, n_top, min_fraction, pseudocount,
                 return_counts):
    X = _as_numpy(X, "X").astype(np.float32)
    A = _as_numpy(activations, "activations").astype(np.float32)
    if X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"X must have shape (N, 4, L), got {X.shape}")
    if A.ndim != 3 or A.shape[0] != X.shape[0]:
        raise ValueError(f"activations must have shape (N, C, P) with N = {X.shape[0]}, got {A.shape}")
    if width < 1 or n_top < 1:
        raise ValueError("width and n_top must be >= 1")
    N, C, P = A.shape
    L = X.shape[2]
    starts = np.arange(P) * stride + offset
    valid = (starts >= 0) & (starts + width <= L)
    A = np.where(valid[None, None, :], A, -np.inf)
    pwms = np.empty((C, 4, width))
    counts = np.zeros(C, dtype=int)
    idx = np.arange(width)
    for c in range(C):
        a = A[:, c, :].ravel()
        k = min(n_top, a.size)
        top = np.argpartition(-a, k - 1)[:k]
        cmax = a[top].max() if k else -np.inf
        keep = top[(a[top] > 0) & (a[top] >= min_fraction * cmax)]
        counts[c] = keep.size
        if keep.size == 0:
            pwms[c] = 0.25
            continue
        n, p = np.divmod(keep, P)
        win = X[n[:, None], :, starts[p][:, None] + idx[None, :]]  # (k, width, 4)
        pwms[c] = _normalise_columns(win.sum(0).T, pseudocount)
    return (pwms, counts) if return_counts else pwms


@torch.no_grad()
def activation_pwms(conv, X=None, n_seqs=10000, seq_len=101, n_top=500, min_fraction=0.0,
                    pseudocount=0.5, batch_size=2048, random_state=None, return_counts=False):
    """First-layer filters -> probability matrices from their top-activating k-mers.

    Sequences (given, or ``n_seqs`` uniform random ones) are scanned with the convolution and
    :func:`window_pwms` collects each filter's best windows. Unlike the clip rule, this reflects
    the filter's bias and what it actually responds to, and columns it ignores stay uniform.

    Parameters
    ----------
    conv: an ``nn.Conv1d`` with 4 input channels (e.g. ``model.conv``); padding and stride are read.
    X: optional one-hot (N, 4, L) sequences to scan (e.g. a model's positive set).
    n_seqs, seq_len: size of the random set drawn when X is None.
    n_top, min_fraction, pseudocount, return_counts: as in :func:`window_pwms`.
    batch_size: sequences per convolution call.
    random_state: seed for the random sequences.

    Returns
    -------
    numpy float64 (C, 4, kernel_size); with ``return_counts`` also the windows used (C,).
    """
    if not isinstance(conv, torch.nn.Conv1d) or conv.in_channels != 4:
        raise TypeError("conv must be an nn.Conv1d with 4 input channels")
    if conv.dilation[0] != 1 or conv.groups != 1:
        raise ValueError("dilated or grouped convolutions are not supported")
    if X is None:
        X = random_one_hot(n_seqs, seq_len, random_state=random_state)
    # on the conv's device (a model on a GPU); _window_pwms reads both back on the CPU
    X = torch.as_tensor(X, dtype=conv.weight.dtype, device=conv.weight.device)
    acts = torch.cat([conv(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    if conv.padding == "valid":
        pad = 0
    elif conv.padding == "same":  # torch pads (k - 1) // 2 on the left (stride 1 only)
        pad = (conv.kernel_size[0] - 1) // 2
    else:
        pad = conv.padding[0]
    return _window_pwms(X, acts, conv.kernel_size[0], -pad, conv.stride[0], n_top, min_fraction,
                        pseudocount, return_counts)


def random_one_hot(n, length, probs=(0.25, 0.25, 0.25, 0.25), random_state=None):
    """n random one-hot sequences, float32 tensor (n, 4, length), bases i.i.d. from ``probs``."""
    rng = np.random.default_rng(random_state)
    idx = rng.choice(4, size=(n, length), p=np.asarray(probs) / np.sum(probs))
    X = np.zeros((n, 4, length), dtype=np.float32)
    np.put_along_axis(X, idx[:, None, :], 1.0, axis=1)
    return torch.from_numpy(X)


# ------------------------------------------------------------------ JASPAR ------------------

class MotifSet(NamedTuple):
    """A motif collection: ``pwms`` list of float64 (4, w) probability matrices, ``ids`` and
    ``names`` lists of str (same length)."""
    pwms: list
    ids: list
    names: list

    def __len__(self):  # the number of motifs, not the tuple's 3 fields
        return len(self.ids)

    def index(self, key):
        """Position of a motif by JASPAR id (``MA0139.1``), base id (``MA0139``) or name: the
        first that matches. A name or base id can match several matrices (JASPAR 2024 has two
        RORA matrices; ``all_versions=True`` keeps every version): :meth:`indices` gives all."""
        return self.indices(key)[0]

    def id_index(self, motif_id):
        """Position of JASPAR id ``motif_id`` (``"MA0139.1"``) in this set: that version when the
        set holds it, else the set's latest version of its base id (``MA0139.1`` -> ``MA0139.2``
        in JASPAR 2024: ids from another release), else None."""
        if motif_id in self.ids:
            return self.ids.index(motif_id)
        base = str(motif_id).partition(".")[0]
        versions = [(int(mid.partition(".")[2] or 0), i) for i, mid in enumerate(self.ids)
                    if mid.partition(".")[0] == base]
        return max(versions)[1] if versions else None

    def indices(self, key):
        """Positions of every motif whose id, base id or name is ``key`` (at least one, else
        KeyError with suggestions)."""
        found = [i for i, (mid, name) in enumerate(zip(self.ids, self.names))
                 if key == mid or key == mid.split(".")[0] or key == name]
        if found:
            return found
        key_s = str(key)
        close = [f"{mid} {name}" for mid, name in zip(self.ids, self.names)
                 if key_s.lower() in (mid.lower(), mid.split(".")[0].lower(), name.lower())
                 or key_s.split(".")[0] == mid.split(".")[0]]
        hint = (f"; did you mean {', '.join(close[:5])}? (ids and names are case-sensitive, and a "
                "release holds one version of each matrix)") if close else ""
        raise KeyError(f"{key!r} not in this motif set of {len(self.ids)} motifs{hint}")


@lru_cache(maxsize=8)
def _fetch_jaspar(release, collection, tax_group, all_versions):
    from pyjaspar import jaspardb

    db = jaspardb(release=release)
    kwargs = dict(collection=list(collection) if isinstance(collection, tuple) else collection,
                  all_versions=all_versions)
    if tax_group is not None:
        kwargs["tax_group"] = list(tax_group)
    with warnings.catch_warnings():  # "Zero motifs returned": load_jaspar raises a clearer error
        warnings.filterwarnings("ignore", message="Zero motifs returned")
        motifs = db.fetch_motifs(**kwargs)
    return [(m.matrix_id, m.name, np.array([m.counts[b] for b in ALPHABET], dtype=np.float64))
            for m in motifs]


def _jaspar_vocabulary(release):
    """(collections, tax groups) of a release, for error messages."""
    from pyjaspar import jaspardb

    conn = jaspardb(release=release).conn
    cols = sorted(r[0] for r in conn.execute("SELECT DISTINCT collection FROM MATRIX"))
    groups = sorted(r[0] for r in conn.execute(
        "SELECT DISTINCT val FROM MATRIX_ANNOTATION WHERE tag = 'tax_group'"))
    return cols, groups


def load_jaspar(release="JASPAR2016", collection="CORE", tax_group="vertebrates",
                all_versions=False, pseudocount=0.1):
    """A JASPAR collection from the offline ``pyjaspar`` database.

    Parameters
    ----------
    release: e.g. ``"JASPAR2016"`` (Table 1's) ... ``"JASPAR2024"``.
    collection: ``"CORE"``, ``"UNVALIDATED"``, ..., or a list of them.
    tax_group: str or list of str (``"vertebrates"``, ``"plants"``, ...), or None for all.
    all_versions: all versions of each matrix instead of the latest (the non-redundant set).
    pseudocount: added to each count before normalising the columns (>= 0).

    Returns
    -------
    :class:`MotifSet` (JASPAR2016 CORE vertebrates: 519 motifs). Cached per arguments.
    """
    from pyjaspar import jaspar_releases

    if release not in jaspar_releases:  # pyjaspar only prints this and fails later
        raise ValueError(f"unknown JASPAR release {release!r}; pyjaspar has "
                         f"{sorted(jaspar_releases)}")
    if not (isinstance(pseudocount, (int, float, np.integer, np.floating))
            and np.isfinite(pseudocount) and pseudocount >= 0):
        raise ValueError(f"pseudocount must be a finite number >= 0, got {pseudocount!r}")
    if isinstance(collection, (list, tuple)):
        collection = tuple(collection)       # hashable for the cache
        if not collection:
            raise ValueError("collection is empty")
    if isinstance(tax_group, str):
        tax_group = (tax_group,)
    elif tax_group is not None:
        tax_group = tuple(tax_group)
        if not tax_group:
            raise ValueError("tax_group is empty; pass None for every taxonomic group")
    try:
        rows = _fetch_jaspar(release, collection, tax_group, bool(all_versions))
    except Exception as e:
        raise ValueError(f"could not load JASPAR {release!r} {collection!r} {tax_group}: {e}") from e
    if not rows:
        collections, groups = _jaspar_vocabulary(release)
        raise ValueError(f"JASPAR {release} {collection!r} {tax_group}: no motifs. This release has "
                         f"collections {collections} and tax groups {groups}")
    return MotifSet([_normalise_columns(c, pseudocount) for _, _, c in rows],
                    [r[0] for r in rows], [r[1] for r in rows])


# ------------------------------------------------------------------ TOMTOM ------------------

def tomtom(queries, targets, query_names=None, n_nearest=None, reverse_complement=True,
           n_jobs=1, **kwargs):
    """Compare query matrices with target motifs using ``memelite.tomtom``; one row per pair.

    Parameters
    ----------
    queries: list of (4, w) probability matrices or an (n, 4, w) array (e.g. :func:`filter_pwms`);
        raw filter weights, or columns not summing to 1, raise ValueError.
    targets: a :class:`MotifSet` (e.g. :func:`load_jaspar`) or a list/array of matrices (then
        ids and names are their positions as str). p-values use the targets as background:
        compare against a whole database, not a handful of motifs.
    query_names: optional list of n labels (default 0..n-1).
    n_nearest: keep only the n best targets per query (None: every target).
    reverse_complement: also align the reverse-complemented query.
    n_jobs: numba threads (default 1; -1 for all). torch's thread count is left as it was
        found (memelite's numba kernels would reset the process's OpenMP threads).
    kwargs: passed to ``memelite.tomtom`` (``n_score_bins`` ...).

    Returns
    -------
    pandas DataFrame, rows sorted by query then p-value, with columns ``query`` (name),
    ``query_idx``, ``target_id``, ``target_name``, ``target_idx``, ``p_value``, ``score``,
    ``offset``, ``overlap``, ``strand``, ``rank`` and ``query_bits``:

    - ``strand``: ``"-"`` when the best alignment is with the *target's* reverse complement
      (memelite flips the target, not the query), else ``"+"``.
    - ``offset``: the column of the target (of its reverse complement for ``"-"``) that query
      column 0 lines up with; negative when the query starts before the target. ``overlap``:
      the aligned columns.
    - ``rank``: 1 = the query's best target; equal p-values share the best rank among them
      (a flat query ties with many targets at p = 1).
    - ``query_bits``: the query's total information content. Queries below
      ``MIN_QUERY_BITS`` (3 bits: a uniform matrix, e.g. a filter that never fires or has no
      positive weight) get tiny p-values against some targets all the same; they are warned
      about, and their matches mean nothing.

    Set ``NUMBA_CACHE_DIR`` to keep memelite's compiled code (the first call compiles for about a minute).
    """
    from memelite import tomtom as _tomtom

    stacklevel = kwargs.pop("_stacklevel", 2)   # where warnings point: the user's call
    Q = _check_probabilities(_as_matrix_list(queries, "queries"), "queries")
    if isinstance(targets, MotifSet):
        T = _check_probabilities(_as_matrix_list(targets.pwms, "targets"), "targets (MotifSet.pwms)")
        tids, tnames = list(targets.ids), list(targets.names)
    else:
        T = _check_probabilities(_as_matrix_list(targets, "targets"), "targets")
        tids = tnames = [str(i) for i in range(len(T))]
    if query_names is None:
        query_names = list(range(len(Q)))
    elif len(query_names) != len(Q):
        raise ValueError(f"{len(query_names)} query_names for {len(Q)} queries")
    elif len(set(map(str, query_names))) < len(query_names):
        warnings.warn("query_names has repeated labels: rows of different queries share a "
                      "`query` value (group by `query_idx` to keep them apart)",
                      UserWarning, stacklevel=stacklevel)
    if n_nearest is not None and n_nearest < 1:
        raise ValueError("n_nearest must be >= 1 or None")
    # memelite ends by resetting numba's thread count, which under numba's OpenMP layer sets
    # the process's OpenMP threads, torch's included (torch.set_num_threads(1) came back as 2):
    # torch's count is restored, float32 sums depend on it
    torch_threads = torch.get_num_threads()
    try:
        # memelite's own warnings (e.g. fewer than 25 targets) are passed on pointing at the
        # user's call, as this function's are, not at the line here that calls memelite
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = _tomtom(Q, T, n_nearest=n_nearest, reverse_complement=reverse_complement,
                          n_jobs=n_jobs, **kwargs)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=stacklevel)
    p, score, offset, overlap, strand = out[:5]
    nq, nt = p.shape
    if n_nearest is None:
        tidx = np.broadcast_to(np.arange(nt), (nq, nt))
    else:
        tidx = out[5].astype(int)
    bits = np.array([column_information(m).sum() for m in Q])  # Q is validated already
    flat = np.flatnonzero(bits < MIN_QUERY_BITS)
    if len(flat):
        warnings.warn(
            f"{len(flat)} of {nq} queries carry less than {MIN_QUERY_BITS:g} bits of information "
            f"(queries {[query_names[i] for i in flat[:10]]}{' ...' if len(flat) > 10 else ''}; "
            "e.g. a filter with no positive weight, or a channel no sequence activated): TOMTOM "
            "gives such near-uniform matrices small p-values against some targets anyway; "
            "ignore their matches (column query_bits).", RuntimeWarning, stacklevel=stacklevel)
    order = np.argsort(p, axis=1, kind="stable")
    p_sorted = np.take_along_axis(np.asarray(p), order, axis=1)
    # competition ranks: a run of equal p-values shares the first position of the run
    run_start = np.ones(p_sorted.shape, dtype=bool)
    run_start[:, 1:] = p_sorted[:, 1:] != p_sorted[:, :-1]
    rank = np.maximum.accumulate(np.where(run_start, np.arange(nt), 0), axis=1) + 1
    take = lambda a: np.take_along_axis(np.asarray(a), order, axis=1).ravel()
    ti = take(tidx)
    df = pd.DataFrame({
        "query": np.repeat(np.asarray(query_names, dtype=object), nt),
        "query_idx": np.repeat(np.arange(nq), nt),
        "target_id": np.asarray(tids, dtype=object)[ti],
        "target_name": np.asarray(tnames, dtype=object)[ti],
        "target_idx": ti,
        "p_value": take(p),
        "score": take(score),
        "offset": take(offset).astype(int),
        "overlap": take(overlap).astype(int),
        "strand": np.where(take(strand) > 0, "-", "+"),
        "rank": rank.ravel(),
        "query_bits": np.repeat(bits, nt),
    })
    return df


def known_motif_hits(queries, targets, known, n_jobs=1, **kwargs):
    """For each query: its TOMTOM p-value against one known motif and that motif's rank among
    all targets (1 = the known motif is the query's best match).

    Parameters
    ----------
    queries: list of (4, w) matrices or (n, 4, w) array.
    targets: :class:`MotifSet` containing the known motif (the p-value background).
    known: the known motif's id, base id or name, or its position in ``targets`` (an int, as
        :meth:`MotifSet.index` returns), or a list of them (e.g. a dimer's parts). Every matrix
        each name or id names counts (:meth:`MotifSet.indices`: a name JASPAR gives to two
        matrices, a base id with ``all_versions=True``), and the best of them is reported.
    n_jobs, kwargs: as in :func:`tomtom`.

    Returns
    -------
    pandas DataFrame with n rows: ``query_idx``, ``p_value``, ``rank``, ``strand``, ``offset``,
    ``best_id``/``best_name``/``best_p`` (the query's best target overall).
    """
    if not isinstance(targets, MotifSet):
        raise TypeError("targets must be a MotifSet (see load_jaspar)")
    if "n_nearest" in kwargs:
        raise TypeError("known_motif_hits ranks the known motif among all targets; n_nearest is "
                        "not supported")
    if isinstance(known, (str, int, np.integer)):
        keys = [known]
    else:
        try:
            keys = list(known)
        except TypeError:
            raise TypeError(f"known must be a motif id, base id or name (str), a position in "
                            f"targets (int, e.g. targets.index('CTCF')), or a list of them; got "
                            f"{type(known).__name__}") from None
    if not keys:
        raise ValueError("known is empty: name at least one motif of targets")
    kidx = set()
    for k in keys:
        if isinstance(k, (bool, np.bool_)):
            raise TypeError(f"known holds a bool ({k!r}), not a motif id, name or position")
        if isinstance(k, (int, np.integer)):
            if not 0 <= k < len(targets):
                raise IndexError(f"known position {int(k)} out of range for a motif set of "
                                 f"{len(targets)} motifs")
            kidx.add(int(k))
        elif isinstance(k, str):
            kidx.update(targets.indices(k))
        else:
            raise TypeError(f"known must hold motif ids, base ids or names (str) or positions "
                            f"in targets (int); got {type(k).__name__} {k!r}")
    df = tomtom(queries, targets, n_jobs=n_jobs, _stacklevel=3, **kwargs)
    best = df.groupby("query_idx", sort=True).head(1).set_index("query_idx")  # rank 1 may tie
    hit = df[df["target_idx"].isin(kidx)].sort_values(["query_idx", "p_value"]).groupby(
        "query_idx", sort=True).head(1).set_index("query_idx")
    return pd.DataFrame({
        "query_idx": hit.index.values,
        "p_value": hit["p_value"].values,
        "rank": hit["rank"].values,
        "strand": hit["strand"].values,
        "offset": hit["offset"].values,
        "best_id": best.loc[hit.index, "target_id"].values,
        "best_name": best.loc[hit.index, "target_name"].values,
        "best_p": best.loc[hit.index, "p_value"].values,
    })


def write_meme(path, pwms, names=None):
    """Write probability matrices to a MEME motif file (for MEME-suite tools, TOMTOM's web
    server, or memelite's ``read_meme``), with memelite's writer.

    Parameters
    ----------
    path: file to write.
    pwms: a :class:`MotifSet`, a list of (4, w) probability matrices or an (n, 4, w) array
        (e.g. :func:`filter_pwms`, ``ChannelMotifs.pwms``).
    names: n motif names (default: ``"{id}_{name}"`` for a MotifSet, else ``0..n-1``). Whitespace in
        a name becomes ``_`` (MEME reads the first word as the motif id).

    Returns
    -------
    pathlib.Path of the file written.
    """
    from pathlib import Path

    from memelite.io import write_meme as _write_meme

    if isinstance(pwms, MotifSet):
        if names is None:
            names = [f"{i}_{n}" for i, n in zip(pwms.ids, pwms.names)]
        pwms = pwms.pwms
    mats = _check_probabilities(_as_matrix_list(pwms, "pwms"), "pwms")
    if names is None:
        names = [str(i) for i in range(len(mats))]
    names = ["_".join(str(n).split()) for n in names]
    if len(names) != len(mats):
        raise ValueError(f"{len(names)} names for {len(mats)} matrices")
    if len(set(names)) != len(names):
        raise ValueError("names must be distinct (MEME identifies motifs by name)")
    _write_meme(str(path), dict(zip(names, mats)))
    return Path(path)
