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
    if not (keep_float32 and x.dtype == np.float32):
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
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
    correlation: its similarity to every other class is 0 and to itself 1.
    """
    x = _matrix(ofiv, "ofiv", keep_float32=True)  # numpy, so the result is numpy too
    if isinstance(out, np.ndarray) and out.dtype in (np.float32, np.float64) and out.dtype != x.dtype:
        x = x.astype(out.dtype)
    return _stats.pearson(x, clip_negative=True, out=out, block_size=block_size)


def class_difference(ofiv, i, j):
    """Class difference map ``ofiv[i] - ofiv[j]``: (K,) channels favoured by class i but not j
    (positive) and the reverse (negative)."""
    x = _matrix(ofiv, "ofiv")
    C = x.shape[0]
    for name, v in (("i", i), ("j", j)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < C:
            raise ValueError(f"{name} must be a class index in [0, {C}), got {v!r}")
    return x[i] - x[j]


def signed_ofiv_correlation(ofiv):
    """Pearson correlation of the signed OFIVs (C, K) -> (C, C): the paper's comparison that
    shows how negative ('process of elimination') channels confound similarity. Constant rows
    are handled as in :func:`class_similarity`."""
    return np.asarray(_stats.pearson(_matrix(ofiv, "ofiv"), clip_negative=False),
                      dtype=np.float64)


def label_correlation(labels, chunk_rows=16384):
    """Pearson correlation between the label columns of a multi-task data set.

    labels: (N, C) binary or real labels (numpy, e.g. uint8 or bool, a memmap, or a tensor)
    -> (C, C) float64; a constant column gets 0 off the diagonal. The labels are read
    ``chunk_rows`` rows at a time into float64 sums (C x C), so the memory is that of the result
    plus one chunk, not a float64 copy of all N x C labels (DeepSEA's 4.4 M x 919 would be
    32 GB).
    """
    y = _array(labels, "labels")     # no float64 copy: the chunks below are cast one at a time
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}")
    N, C = y.shape
    shift = np.asarray(y[0], dtype=np.float64)   # centring on one row keeps the sums small
    total = np.zeros(C)
    gram = np.zeros((C, C))
    for lo in range(0, N, int(chunk_rows)):
        part = np.asarray(y[lo:lo + int(chunk_rows)], dtype=np.float64) - shift
        if not np.all(np.isfinite(part)):
            raise ValueError("labels contains NaN or inf")
        total += part.sum(0)
        gram += part.T @ part
    mean = total / N
    cov = gram / N - np.outer(mean, mean)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    # a column is constant when its spread is at rounding level of its values
    scale = np.maximum(np.abs(shift), 1.0)
    live = std > 1e-12 * scale
    denom = np.outer(std, std)
    r = np.divide(cov, denom, out=np.zeros_like(cov), where=np.outer(live, live))
    np.clip(r, -1.0, 1.0, out=r)
    np.fill_diagonal(r, 1.0)
    return r


def weight_cosine(weight):
    """Cosine similarity of the rows of a last-layer weight matrix.

    weight: (C, H) e.g. ``model.fc2.weight`` -> (C, C); an all-zero row gets 0 off the diagonal.
    """
    w = _matrix(weight, "weight")
    norm = np.linalg.norm(w, axis=1)
    zero = norm == 0
    u = w / np.where(zero, 1, norm)[:, None]
    r = np.clip(u @ u.T, -1, 1)
    r[zero, :] = 0
    r[:, zero] = 0
    np.fill_diagonal(r, 1.0)
    return r
