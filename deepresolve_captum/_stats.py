"""Batched ensemble statistics with one entry point per kernel.

``weighted_moments`` (the inconsistency level) and ``pearson`` (class similarity) dispatch to the
native extension ``deepresolve_captum._C`` when it is built and the input is a numpy array, and to
the numpy / torch implementations below otherwise. The fallbacks are the reference the native
kernels are tested against.
"""
from __future__ import annotations

import numpy as np


def _as_float_array(x, name):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return x


def _check_weights(weights, name="weights"):
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"{name} contain NaN or inf")
    if np.any(weights < 0):
        raise ValueError(f"{name} must be non-negative")
    if np.any(weights.sum(axis=-1) <= 0):
        bad = np.flatnonzero(weights.sum(axis=-1) <= 0)
        raise ValueError(f"{name} of class(es) {bad[:10].tolist()} sum to zero")


def weighted_moments_numpy(fiv, weights):
    """Weighted mean and variance over starts, per class and channel (two-pass, float64 inside).

    fiv: (C, T, K); weights: (C, T), non-negative, each row with a positive sum.
    Returns mean (C, K) and var (C, K) in fiv's dtype; weights are normalised per class.
    """
    fiv = _as_float_array(fiv, "fiv")
    w = _as_float_array(weights, "weights").astype(np.float64)
    if fiv.ndim != 3 or w.ndim != 2 or fiv.shape[:2] != w.shape:
        raise ValueError(f"expected fiv (C, T, K) and weights (C, T); got {fiv.shape} and {w.shape}")
    if fiv.size == 0:
        raise ValueError("fiv is empty")
    if not np.all(np.isfinite(fiv)):
        raise ValueError("fiv contains NaN or inf")
    _check_weights(w)
    w = w / w.sum(axis=1, keepdims=True)
    f = fiv.astype(np.float64)
    mean = np.einsum("ct,ctk->ck", w, f)
    var = np.einsum("ct,ctk->ck", w, (f - mean[:, None, :]) ** 2)
    return mean.astype(fiv.dtype), var.astype(fiv.dtype)


def pearson_numpy(x, clip_negative=False):
    """Pearson correlation between the rows of x (C, K) -> (C, C).

    With ``clip_negative`` the rows are clipped at 0 first. A constant row has no defined
    correlation: it gets 0 against every other row and 1 on the diagonal.
    """
    x = _as_float_array(x, "x")
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (C, K); got shape {x.shape}")
    if x.size == 0:
        raise ValueError("x is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    f = x.astype(np.float64)
    if clip_negative:
        f = np.maximum(f, 0.0)
    f = f - f.mean(axis=1, keepdims=True)
    norm = np.sqrt((f * f).sum(axis=1))
    const = norm <= 1e-300
    norm[const] = 1.0
    f /= norm[:, None]
    f[const] = 0.0
    r = f @ f.T
    np.clip(r, -1.0, 1.0, out=r)
    np.fill_diagonal(r, 1.0)
    return r.astype(x.dtype)


def weighted_moments(fiv, weights):
    """Dispatching entry point; see :func:`weighted_moments_numpy` for the contract."""
    return weighted_moments_numpy(fiv, weights)


def pearson(x, clip_negative=False):
    """Dispatching entry point; see :func:`pearson_numpy` for the contract."""
    return pearson_numpy(x, clip_negative=clip_negative)
