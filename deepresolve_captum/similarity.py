"""Class relationships from OFIVs: DeepResolve's class similarity and difference maps, and the
comparisons the paper sets beside them (label correlation, last-layer weight cosine, Pearson of
the signed OFIV)."""
from __future__ import annotations

import numpy as np

from . import _stats
from .summary import EnsembleSummary

__all__ = ["class_similarity", "class_difference", "signed_ofiv_correlation",
           "label_correlation", "weight_cosine"]


def _array(x, name, ndim=2):
    """x (array, tensor, memmap; for ``name == "ofiv"`` also an EnsembleSummary) as a numpy
    array of real numbers with ``ndim`` axes and some elements, in its own dtype (no copy)."""
    if name == "ofiv" and isinstance(x, EnsembleSummary):   # as plot_ofiv takes it
        x = x.ofiv
    if hasattr(x, "detach"):
        x = _stats._tensor_to_numpy(x)
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) \
            or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    return x


def _matrix(x, name, ndim=2, keep_float32=False):
    """:func:`_array` as float64 (float32 kept with ``keep_float32``), checked finite."""
    x = _array(x, name, ndim)
    if keep_float32 and x.dtype.kind == "f" and x.dtype.itemsize == 4:   # '>f4' too
        x = x.astype(np.float32, copy=False)   # native byte order
    else:
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


#: A row (class_similarity, signed_ofiv_correlation) or column (label_correlation) is constant
#: when its standard deviation is at most this many roundings (machine epsilons of the dtype it
#: is computed in) times its largest absolute value: its spread is rounding, and a correlation
#: with it would be noise. It then gets 0 against every other one. See :func:`constant_rtol`.
CONSTANT_ULPS = 4


def constant_rtol(dtype=np.float64):
    """The relative spread below which a row of ``dtype`` counts as constant:
    ``CONSTANT_ULPS`` x the machine epsilon of the dtype it is computed in: float32 (4.8e-7)
    for 4-byte floats, any byte order, as class_similarity keeps them; float64 (8.9e-16) for
    everything else, integers and float16 included (those are computed in float64, as exact
    values: a float16 label column with 2 positives in 200,000 rows is not constant, review
    r6). A row flat but for an ulp or two is caught, while float32 rows with a real spread of
    8 epsilons or more keep their correlation (64 epsilons zeroed some, review r4)."""
    dtype = np.dtype(dtype)
    single = dtype.kind == "f" and dtype.itemsize == 4
    return CONSTANT_ULPS * float(np.finfo(np.float32 if single else np.float64).eps)


def _near_constant_rows_zeroed(x, clip_negative, dtype=None):
    """``x`` (C, K), with every row whose spread is at rounding level (after clipping at 0 with
    ``clip_negative``: std <= constant_rtol(dtype) x max |value|; ``dtype``: the values' own,
    default ``x.dtype``) set to 0, i.e. exactly constant, which the Pearson kernels give 0
    against every other row. ``x`` itself (not copied) when no row needs it; rows already
    exactly constant are left as they are. Read in row blocks."""
    C, K = x.shape
    rtol = constant_rtol(x.dtype if dtype is None else dtype)
    fix = np.zeros(C, dtype=bool)
    step = max(1, _SMALL_BYTES // (8 * K))
    for r0 in range(0, C, step):
        f = np.asarray(x[r0:r0 + step], dtype=np.float64)
        if clip_negative:
            f = np.maximum(f, 0.0)
        hi, lo = f.max(axis=1), f.min(axis=1)
        scale = np.maximum(np.abs(hi), np.abs(lo))
        # the spread about the row's first value, in units of the row's largest |value|: exact
        # to rounding whatever x's layout (numpy's std of a strided row summed in another order
        # read ~1000 eps, review r5) and at any magnitude (no overflow near 1e308, review r6)
        unit = np.where(scale > 0, scale, 1.0)[:, None]
        spread = ((f - f[:, :1]) / unit).std(axis=1)
        fix[r0:r0 + step] = (hi != lo) & ~(spread > rtol)
    if not fix.any():
        return x
    x = np.array(x)           # a copy of ours, in x's dtype
    x[fix] = 0
    return x


def class_similarity(ofiv, *, out=None, block_size=None):
    """DeepResolve's class similarity: Pearson correlation of the non-negative OFIVs.

    Parameters
    ----------
    ofiv: (C, K) OFIVs of C classes (``EnsembleSummary.ofiv``, or the summary itself); float32
        input is computed in float32 (accumulated in float64 by the native kernel), anything
        else in float64.
    out: optional (C, C) float32/float64 numpy array or ``np.memmap`` to fill, e.g. for Sei's
        21,907 classes (1.8 GiB in float32), so the matrix never exists twice in memory. The
        computation then runs in ``out``'s dtype (float64 OFIVs into a float32 ``out`` are
        computed in float32, summed in float64).
    block_size: rows per block when filling ``out``.

    Returns
    -------
    (C, C) numpy array (``out`` when given), symmetric, unit diagonal. A class whose clipped
    OFIV is constant (no channel contributes positively, or all equally) has no defined
    correlation: its similarity to every other class is 0 and to itself 1. Constant means up
    to rounding, by :func:`label_correlation`'s rule: a standard deviation of at most
    :func:`constant_rtol` of the dtype computed in (4 machine epsilons: 8.9e-16 in float64,
    4.8e-7 in float32) times the row's largest value (a row flat but for one ulp would
    otherwise correlate at random).
    """
    x = _matrix(ofiv, "ofiv", keep_float32=True)  # numpy, so the result is numpy too
    if isinstance(out, np.ndarray) and out.dtype in (np.float32, np.float64) and out.dtype != x.dtype:
        x = x.astype(out.dtype)
    x = _near_constant_rows_zeroed(x, clip_negative=True)
    return _stats.pearson(x, clip_negative=True, out=out, block_size=block_size)


def class_difference(ofiv, i, j):
    """Class difference map ``ofiv[i] - ofiv[j]``: (K,) channels favoured by class i but not j
    (positive) and the reverse (negative). ``i``, ``j``: class indices, ints or numpy integers
    or 0-d integer tensors / arrays (what ``argmax`` returns); a bool or a float is refused."""
    from .clustering import _as_index   # clustering imports this module

    x = _matrix(ofiv, "ofiv")
    C = x.shape[0]
    i, j = (_as_index(v, name, 0, C - 1) for name, v in (("i", i), ("j", j)))
    return x[i] - x[j]


def signed_ofiv_correlation(ofiv):
    """Pearson correlation of the signed OFIVs (C, K) -> (C, C): the paper's comparison that
    shows how negative ('process of elimination') channels confound similarity. Constant rows
    (up to rounding, :func:`constant_rtol`) are handled as in :func:`class_similarity`."""
    given = _array(ofiv, "ofiv", 2)        # float32 rows: judged by float32's rounding
    x = _near_constant_rows_zeroed(_matrix(given, "ofiv"), clip_negative=False, dtype=given.dtype)
    return np.asarray(_stats.pearson(x, clip_negative=False), dtype=np.float64)


_SMALL_BYTES = 16 * 2 ** 20    # a C x C float64 temporary up to this size is not worth avoiding


def _row_ranges(C, target_bytes=_SMALL_BYTES):
    """Row ranges of a (C, C) float64 matrix: about ``target_bytes`` each and at most an eighth
    of the rows (so a block's temporaries stay small beside the matrix at any C)."""
    step = max(1, min(int(target_bytes // (8 * max(C, 1))), -(-C // 8)))
    return [(r0, min(C, r0 + step)) for r0 in range(0, C, step)]


def label_correlation(labels, chunk_rows=16384):
    """Pearson correlation between the label columns of a multi-task data set.

    labels: (N, C) binary or real labels (numpy, e.g. uint8 or bool, a memmap, or a tensor)
    -> (C, C) float64; a constant column (one whose standard deviation is at most
    ``constant_rtol`` of the labels' dtype times its largest absolute value, 8.9e-16 for
    float64 and integer labels, 4.8e-7 for float32: the rule class_similarity applies to OFIV
    rows) gets 0 off the diagonal. The test is relative, so it holds for values
    of any magnitude whose squares float64 holds (about 1e-150 to 1e150); below that the sums
    of squares underflow and such a column reads as constant. The labels are read
    ``chunk_rows`` rows at a time into float64 sums (C x C), so the memory is that of the result
    plus one float64 chunk (``chunk_rows`` x C x 8 bytes), not a float64 copy of all N x C labels
    (DeepSEA's 4.4 M x 919 would be 32 GB).

    The C x C sums become the correlations in place, row block by row block (<= 16 MB each), so
    the C x C result is the only C x C array (at Sei's 21,907 classes, 3.8 GB; the default chunk
    adds 2.9 GB there: pass a smaller ``chunk_rows`` to trade speed for memory).
    """
    y = _array(labels, "labels")     # no float64 copy: the chunks below are cast one at a time
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}")
    N, C = y.shape
    chunk_rows = int(chunk_rows)
    shift = np.asarray(y[0], dtype=np.float64)   # centring on one row keeps the sums small
    blocks = _row_ranges(C)
    small = C * C * 8 <= _SMALL_BYTES              # up to ~1,450 classes
    total = np.zeros(C)
    lo_part, hi_part = np.full(C, np.inf), np.full(C, -np.inf)   # each column's range
    gram = None
    for lo in range(0, N, chunk_rows):
        # cast and centred in one step (the ufunc casts in small buffers): one float64 chunk
        part = np.subtract(y[lo:lo + chunk_rows], shift, dtype=np.float64)
        if not np.all(np.isfinite(part)):
            raise ValueError("labels contains NaN or inf")
        total += part.sum(0)
        np.minimum(lo_part, part.min(0), out=lo_part)
        np.maximum(hi_part, part.max(0), out=hi_part)
        if gram is None:
            gram = part.T @ part                   # numpy's SYRK, symmetric: becomes the result
            gram += 0.0                            # -0.0 -> 0.0, as 0 + the first chunk's sums
        elif small:
            gram += part.T @ part                  # a C x C temporary of <= 16 MB
        else:
            _syrk_upper_into(gram, part)           # in place, no C x C temporary
        del part
    if not small and N > chunk_rows:
        _mirror_upper(gram, blocks)
    mean = total / N
    for r0, r1 in blocks:                          # cov = gram / N - outer(mean, mean)
        g = gram[r0:r1]
        g /= N
        g -= np.multiply.outer(mean[r0:r1], mean)
    cov = gram
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    # a column is constant when its spread is at rounding level of its own values: relative to
    # the column's largest |value| (not to 1, which made [1, 2, 3] * 1e-12 "constant")
    scale = np.maximum(np.abs(lo_part + shift), np.abs(hi_part + shift))
    live = std > constant_rtol(y.dtype) * scale     # the labels' own rounding (ints: float64's)
    dead = ~live
    sd = np.where(live, std, 1.0)                  # std_i * std_j for every live pair, as before
    r = cov
    for r0, r1 in blocks:                          # r = cov / outer(std, std), 0 where not live
        b = r[r0:r1]
        b /= np.multiply.outer(sd[r0:r1], sd)
        b[:, dead] = 0.0
        b[dead[r0:r1]] = 0.0
        np.clip(b, -1.0, 1.0, out=b)
    np.fill_diagonal(r, 1.0)
    return r


def _syrk_upper_into(gram, part):
    """``gram += part.T @ part`` on the upper triangle only (the lower one is left as it was), in
    place: BLAS SYRK with beta = 1 on the Fortran-order views (``part.T``, ``gram.T``: its lower
    triangle is gram's upper one), so neither is copied."""
    from scipy.linalg.blas import dsyrk
    res = dsyrk(1.0, part.T, beta=1.0, c=gram.T, trans=0, lower=1, overwrite_c=1)
    if not np.shares_memory(res, gram):            # pragma: no cover - a scipy that copied c
        gram[...] = res.T


def _mirror_upper(a, blocks):
    """Copy the upper triangle of the square ``a`` onto its lower one, in place, by row blocks."""
    for r0, r1 in blocks:
        a[r0:r1, :r0] = a[:r0, r0:r1].T
        for i in range(r0 + 1, r1):
            a[i, r0:i] = a[r0:i, i]


def weight_cosine(weight):
    """Cosine similarity of the rows of a last-layer weight matrix.

    weight: (C, H) e.g. ``model.fc2.weight`` -> (C, C); an all-zero row gets 0 off the diagonal.
    """
    w = _matrix(weight, "weight")                  # a float64 copy of ours
    norm = np.linalg.norm(w, axis=1)
    zero = norm == 0
    w /= np.where(zero, 1, norm)[:, None]
    r = w @ w.T                                    # the only C x C array
    np.clip(r, -1, 1, out=r)
    r[zero, :] = 0
    r[:, zero] = 0
    np.fill_diagonal(r, 1.0)
    return r
