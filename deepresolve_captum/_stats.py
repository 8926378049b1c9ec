"""Batched ensemble statistics with one entry point per kernel.

``weighted_moments`` (the inconsistency level) and ``pearson`` (class similarity) dispatch on what
they are given:

============================  =====================================  ==========================
input                         computed by                            returned as
============================  =====================================  ==========================
numpy array (or array-like)   ``_C`` (C++), else numpy               numpy, input's dtype
torch CPU tensor              ``_C`` on a zero-copy numpy view,      torch tensor (CPU),
                              else torch                             input's dtype
torch CUDA tensor             ``_C`` CUDA kernels when built with    torch tensor on the same
                              CUDA, a GPU is usable and              device, input's dtype
                              DEEPRESOLVE_CUDA_KERNELS=1, else torch
============================  =====================================  ==========================

float32 and float64 are kept; any other dtype is computed in float64 (half precision: float32).
The numpy and torch implementations (``*_numpy``, ``*_torch``) are the reference the native kernels
are tested against; they compute in float64.

The native CPU Pearson (csrc/stats.cpp) makes one pass over x for the row statistics (clip, NaN/inf
check, constant rows, mean, centred norm) and packs the normalised rows into register-tile panels,
then runs a hand-written SYRK micro-kernel on the upper triangle only (AVX-512, AVX2 or generic,
picked at run time; float32 sums at most 128 products in float before adding them into float64),
writes each tile to the lower triangle and fills the upper one by a cache-blocked transpose, so the
result is exactly symmetric with an exact unit diagonal. Threads: its own std::thread pool
(``_C.set_num_threads``). Scratch: the packed copies are kept for the next call, at most 64 MiB
in all unless ``_C.set_scratch_limit(bytes)`` says otherwise (``_C.scratch_bytes()``;
``_C.release_scratch()`` frees them). It calls no BLAS, by measurement (2-core AVX-512 EPYC,
float64, 1 thread):
scipy's OpenBLAS dsyrk alone, without the preparation and the mirror it would still need, took
8.9 ms at 919 x 480 and 78 ms at 2002 x 960 against 10.0 and 83 ms for this whole path, so the
product itself is no faster; and with its 2 threads, while another process held a core, dsyrk
took 22 ms at 919 x 480 (its threads spin-wait) where this path's pool took 9.9. The numpy
reference uses BLAS (``f @ f.T``, float64).

Force the fallback (tests, debugging): the environment variable ``DEEPRESOLVE_NO_NATIVE=1`` (read
at every call; 1/true/yes/on in any case switch it on, 0/false/no/off or unset leave it off, any
other value warns and counts as unset, as for ``DEEPRESOLVE_CUDA_KERNELS``: :func:`env_switch`),
or ``with native_disabled(): ...``. :func:`backend` tells which path a call takes.

Arguments are checked here, at the door, with one message per problem (shapes, emptiness, NaN/inf,
weights): the native code never sees bad input it could crash on. NaN/inf in the big array is
detected inside the native kernels (in their single pass) and raised as ``ValueError`` too.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np

try:  # the extension is optional: a pure-Python install falls back to numpy/torch
    from . import _C
except ImportError:  # pragma: no cover - depends on the build
    _C = None

__all__ = ["weighted_moments", "pearson", "weighted_moments_numpy", "pearson_numpy",
           "weighted_moments_torch", "pearson_torch", "native_disabled", "native_available",
           "cuda_native_available", "backend"]

_lock = threading.Lock()
_disabled_depth = 0


def _check_thread_variable():
    """Warn about a DEEPRESOLVE_NUM_THREADS the native pool ignores (``_C.parse_threads``, the
    parser the pool itself uses: it then takes OMP_NUM_THREADS, else the CPUs this process may run
    on)."""
    v = os.environ.get("DEEPRESOLVE_NUM_THREADS")
    if v is None or not v.strip() or _C is None:
        return
    if _C.parse_threads(v) < 0:
        warnings.warn(f"DEEPRESOLVE_NUM_THREADS={v!r} is not a whole number from 1 to 4096 and is "
                      f"ignored: the native kernels use {_C.num_threads()} threads (from "
                      "OMP_NUM_THREADS, else the CPUs this process may run on)", RuntimeWarning)


_check_thread_variable()


@contextlib.contextmanager
def native_disabled():
    """Within this block every call takes the numpy/torch fallback (process-wide, nestable)."""
    global _disabled_depth
    with _lock:
        _disabled_depth += 1
    try:
        yield
    finally:
        with _lock:
            _disabled_depth -= 1


#: The spellings an on/off environment switch (DEEPRESOLVE_NO_NATIVE, DEEPRESOLVE_CUDA_KERNELS)
#: accepts, compared after ``.strip().lower()``; unset or blank is off.
_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f", "")
_warned_switches = set()


def env_switch(name):
    """An on/off environment variable: True for 1/true/yes/on (any case, blanks around allowed),
    False when unset, blank or 0/false/no/off. Any other value (``DEEPRESOLVE_NO_NATIVE=native``,
    ``=2``) is not guessed at: it warns (once per value) and counts as unset, the default.
    (``TRUE`` used to be read as off: only lower-case spellings counted.)"""
    raw = os.environ.get(name)
    if raw is None:
        return False
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v not in _FALSE and (name, raw) not in _warned_switches:
        _warned_switches.add((name, raw))
        warnings.warn(f"{name}={raw!r} is not an on/off value (1/0, true/false, yes/no, on/off, "
                      "any case) and is ignored: it counts as unset", RuntimeWarning, stacklevel=3)
    return False


def _native_allowed():
    return _C is not None and _disabled_depth == 0 and not env_switch("DEEPRESOLVE_NO_NATIVE")


def native_available():
    """True when the C++ kernels are built and not switched off."""
    return _native_allowed()


_cuda_state = {}


def _cuda_kernels_opted_in():
    return env_switch("DEEPRESOLVE_CUDA_KERNELS")


def cuda_native_available():
    """True when ``_C`` was built with CUDA, a GPU is visible to it, native is not switched off,
    and ``DEEPRESOLVE_CUDA_KERNELS=1`` is set.

    The CUDA kernels are opt-in until they have been validated on a GPU (the sessions that wrote
    them had none: they compile and link, but have never run). Without the opt-in, CUDA tensors
    take the torch path, which is tested. ``tests/test_stats.py -k cuda`` on a GPU machine is the
    check to run before making them the default.
    """
    if not _native_allowed() or not getattr(_C, "has_cuda", False) or \
            not _cuda_kernels_opted_in():
        return False
    if "count" not in _cuda_state:
        _cuda_state["count"] = int(_C.cuda_device_count())
    return _cuda_state["count"] > 0


def _is_tensor(x):
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, torch.Tensor)


def backend(x):
    """Which implementation a call on ``x`` takes: 'native', 'native-cuda', 'numpy' or 'torch'."""
    if _is_tensor(x):
        if x.is_cuda:
            return "native-cuda" if cuda_native_available() else "torch"
        return "native" if native_available() else "torch"
    return "native" if native_available() else "numpy"


# ---------------------------------------------------------------------------------------------
# Checks at the door (shared by every path).

def _np_float(x):
    """numpy view/copy of x in float32 or float64 (float16 -> float32, other dtypes ->
    float64)."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        raise TypeError("complex input is not supported")
    if x.dtype.kind == "f" and not x.dtype.isnative:   # '>f4' != np.float32: it became float64
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype == np.float16:
        return x.astype(np.float32)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return x


def _numpy_of(t):
    """A tensor's values as a CPU numpy array (zero-copy for a plain CPU tensor). A lazily negated
    or conjugated view (the neg/conj bit, e.g. from ``x._neg_view()`` or ``torch.conj`` of a
    negated tensor) is materialised first: ``.numpy()`` refuses it. No cost without the bits."""
    return t.detach().cpu().resolve_neg().resolve_conj().numpy()


def _tensor_to_numpy(x):
    """A tensor as a CPU numpy array; float16/bfloat16 become float32 (numpy has no bfloat16)."""
    x = x.detach().cpu()
    if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
        x = x.float()
    return _numpy_of(x)


def _torch_float(x):
    import torch
    if x.is_complex():
        raise TypeError("complex input is not supported")
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.to(torch.float32)
    if x.dtype not in (torch.float32, torch.float64):
        return x.to(torch.float64)
    return x


def _check_moment_shapes(fiv_shape, w_shape):
    if len(fiv_shape) != 3 or len(w_shape) != 2 or tuple(fiv_shape[:2]) != tuple(w_shape):
        raise ValueError(f"expected fiv (C, T, K) and weights (C, T); got {tuple(fiv_shape)} and "
                         f"{tuple(w_shape)}")
    if 0 in tuple(fiv_shape):
        raise ValueError(f"fiv is empty (shape {tuple(fiv_shape)})")


def _check_weights(weights, name="weights"):
    """weights: float64 numpy (C, T). Non-negative, finite, positive sum per class."""
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"{name} contain NaN or inf")
    if np.any(weights < 0):
        bad = np.flatnonzero((weights < 0).any(axis=-1))
        raise ValueError(f"{name} must be non-negative (class(es) {bad[:10].tolist()})")
    sums = weights.sum(axis=-1)
    if np.any(sums <= 0) or not np.all(np.isfinite(sums)):
        bad = np.flatnonzero(~(sums > 0) | ~np.isfinite(sums))
        raise ValueError(f"{name} of class(es) {bad[:10].tolist()} sum to zero (or overflow)")


def _check_pearson_shape(shape):
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D array (C, K); got shape {tuple(shape)}")
    if 0 in tuple(shape):
        raise ValueError(f"x is empty (shape {tuple(shape)})")


# ---------------------------------------------------------------------------------------------
# numpy references (float64 inside).

#: The numpy fallback of the moments (and summarize's bool masks) work on blocks of classes of
#: at most this many FIV values (rows x T x K), so that their (C, T, K) temporaries (float64 here)
#: stay small beside the FIVs themselves.
_BLOCK_VALUES = 1 << 22


def row_blocks(C, T, K):
    """Slices of the C classes (rows) in blocks of at most ``_BLOCK_VALUES`` values of (T, K)."""
    n = max(1, _BLOCK_VALUES // max(1, T * K))
    return [slice(i, min(C, i + n)) for i in range(0, C, n)]


def weighted_moments_numpy(fiv, weights):
    """Weighted mean and variance over starts, per class and channel (two-pass, float64 inside).

    fiv: (C, T, K); weights: (C, T), non-negative, each row with a positive sum.
    Returns mean (C, K) and var (C, K) in fiv's dtype; weights are normalised per class.
    """
    if _is_tensor(fiv):
        fiv = _numpy_of(fiv)
    if _is_tensor(weights):
        weights = _numpy_of(weights)
    fiv = _np_float(fiv)
    w = np.asarray(weights, dtype=np.float64)
    _check_moment_shapes(fiv.shape, w.shape)
    if not np.all(np.isfinite(fiv)):
        raise ValueError("fiv contains NaN or inf")
    _check_weights(w)
    w = w / w.sum(axis=1, keepdims=True)
    C, T, K = fiv.shape
    mean, var = np.empty((C, K), dtype=fiv.dtype), np.empty((C, K), dtype=fiv.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for b in row_blocks(C, T, K):   # ~4 float64 (rows, T, K) temporaries per block
            f = fiv[b].astype(np.float64)
            m = np.einsum("ct,ctk->ck", w[b], f)
            d = f - m[:, None, :]
            # (w * d) * d with normalised w, the native kernel's expression: (d ** 2) first
            # would overflow for |d| > 1.3e154 where the weighted variance is still finite
            # (cast back on assignment: float32 moments can overflow there only, checked below
            # as in the native path)
            mean[b] = m
            var[b] = ((w[b][:, :, None] * d) * d).sum(axis=1)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
        raise ValueError(_overflow_message(fiv.dtype))
    return mean, var


def _overflow_message(dtype):
    return ("fiv contains values so large that the moments overflow"
            + (" float32" if np.dtype(dtype) == np.float32 else ""))


#: Relative size of a row's mean error in its norm (sd**2 / (K * ss), sd the sum of its centred
#: values) above which the mean and the norm are corrected: about half an ulp of 1 in a
#: correlation. Below it the correction is rounding noise and is skipped, which keeps results at
#: ordinary offsets bit for bit those of the plain two-pass algorithm. As in csrc/stats.cpp.
_MEAN_CORRECTION = 2.0 ** -53


def _spread_exponents(lo, hi):
    """k per row such that 2**k is a normal number near 1 / (hi - lo): csrc/stats.cpp's
    spread_scale, as int64 (so that the scaled centred values are below 8 and their squares
    neither overflow nor underflow, whatever the row's scale; exact, so the normalised row is bit
    for bit that of the unscaled one at ordinary scales)."""
    half = hi * 0.5 - lo * 0.5          # finite even where hi - lo is not
    _, e = np.frexp(half)               # half = f * 2**e, f in [0.5, 1): e = ilogb(half) + 1
    k = np.clip(-e.astype(np.int64), -1022, 1023)
    k[half == 0] = 1023                 # as ilogb(0) = INT_MIN, clamped, in C
    k[hi == lo] = 0                     # a constant row (C skips it): left as it is
    return k


def _normalised_rows_numpy(x, clip_negative):
    """float64 rows clipped (optionally), centred and scaled to unit norm; constant rows -> 0.

    Each row is first multiplied by a power of two near 1 / its spread (exact; see
    :func:`_spread_exponents`), so that no scale of finite values overflows or underflows; where
    the centred values' sum shows the mean to be off by more than rounding noise (large offsets),
    the row is centred again by that sum's mean. The native kernel does the same."""
    f = x.astype(np.float64)
    if clip_negative:
        f = np.maximum(f, 0.0)
    # A row is constant when max == min exactly: its centred values would otherwise be rounding
    # noise (mean of 0.1s is not exactly 0.1) that normalises to garbage.
    hi, lo = f.max(axis=1), f.min(axis=1)
    const = hi == lo
    f *= np.ldexp(1.0, _spread_exponents(lo, hi))[:, None]
    f -= f.mean(axis=1, keepdims=True)
    ss = (f * f).sum(axis=1)
    sd = f.sum(axis=1)
    fix = np.flatnonzero((sd * sd > f.shape[1] * ss * _MEAN_CORRECTION) & ~const)
    if fix.size:
        f[fix] -= (sd[fix] / f.shape[1])[:, None]
        ss[fix] = (f[fix] * f[fix]).sum(axis=1)
    norm = np.sqrt(ss)
    const |= ~(norm > 0)
    norm[const] = 1.0
    f /= norm[:, None]
    f[const] = 0.0
    return f


def pearson_numpy(x, clip_negative=False, *, out=None, block_size=None):
    """Pearson correlation between the rows of x (C, K) -> (C, C).

    With ``clip_negative`` the rows are clipped at 0 first. A constant row has no defined
    correlation: it gets 0 against every other row and 1 on the diagonal. The result is
    written ``block_size`` rows at a time (default 1024; each block's products right of the
    diagonal, in float64, mirrored below it) into ``out`` (a (C, C) array of the result dtype,
    e.g. a ``np.memmap``), which is returned, or into a new array: beside the result the call
    holds the normalised rows (C, K) and one (block_size, C) float64 block.
    """
    if _is_tensor(x):
        x = _numpy_of(x)
    x = _np_float(x)
    _check_pearson_shape(x.shape)
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    f = _normalised_rows_numpy(x, clip_negative)
    n = x.shape[0]
    if out is None:
        # the result is filled block by block, as a given out is: r = f @ f.T then
        # r.astype(x.dtype) held the C x C result two or three times (float32 x: a float64 r
        # and its float32 copy, 3x the result; review 15c m2)
        out = np.empty((n, n), dtype=x.dtype)
    else:
        _check_out(out, n, x.dtype)
    b = min(int(block_size), n) if block_size else 1024
    for r0 in range(0, n, b):
        r1 = min(n, r0 + b)
        m = r1 - r0
        # this block's rows right of the diagonal only (half the products), mirrored below it:
        # the result is exactly symmetric
        blk = f[r0:r1] @ f[r0:].T
        d = blk[:, :m]
        for i in range(1, m):       # a row at a time: no (m, m) temporaries
            d[i, :i] = d[:i, i]
        np.clip(blk, -1.0, 1.0, out=blk)
        np.fill_diagonal(d, 1.0)
        out[r0:r1, r0:] = blk
        out[r1:, r0:r1] = blk[:, m:].T
        del blk, d                  # before the next block is allocated
    return out


def _check_out(out, n, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array or memmap, got {type(out).__name__}")
    if out.shape != (n, n):
        raise ValueError(f"out must have shape ({n}, {n}), got {out.shape}")
    if out.dtype not in (np.float32, np.float64):   # class_similarity casts x to out's dtype
        raise ValueError(f"out must be float32 or float64, got {out.dtype}")
    if out.dtype != dtype:   # only a direct call with a float x of the other width gets here
        raise ValueError(f"out must have dtype {np.dtype(dtype).name} (the dtype of x), got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


# ---------------------------------------------------------------------------------------------
# torch fallbacks (float64 inside, on the input's device).

def weighted_moments_torch(fiv, weights):
    """:func:`weighted_moments_numpy` in torch, on fiv's device; returns tensors of fiv's dtype."""
    import torch
    fiv = _torch_float(torch.as_tensor(fiv).detach())
    w = _weights_tensor(weights, fiv.device)
    _check_moment_shapes(fiv.shape, w.shape)
    _check_weights_torch(w)
    if not bool(torch.isfinite(fiv).all()):
        raise ValueError("fiv contains NaN or inf")
    w = w / w.sum(dim=1, keepdim=True)
    f = fiv.to(torch.float64)
    mean = torch.einsum("ct,ctk->ck", w, f)
    d = f - mean[:, None, :]
    var = ((w[:, :, None] * d) * d).sum(dim=1)  # as weighted_moments_numpy and the native kernel
    mean, var = mean.to(fiv.dtype), var.to(fiv.dtype)  # checked after the cast, as there
    if not bool(torch.isfinite(mean).all() & torch.isfinite(var).all()):
        raise ValueError(_overflow_message(np.float32 if fiv.dtype == torch.float32 else np.float64))
    return mean, var


def _weights_tensor(weights, device):
    """weights as a float64 tensor on device. A numpy array is first made contiguous, float64 and
    native-endian (torch.as_tensor rejects negative strides and non-native byte order, which the
    native path accepts)."""
    import torch
    if not _is_tensor(weights):
        weights = np.ascontiguousarray(weights, dtype=np.float64)
    return torch.as_tensor(weights).detach().to(device=device, dtype=torch.float64)


def _check_weights_torch(w):
    import torch
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weights contain NaN or inf")
    if bool((w < 0).any()):
        bad = torch.nonzero((w < 0).any(dim=-1)).flatten()[:10].tolist()
        raise ValueError(f"weights must be non-negative (class(es) {bad})")
    sums = w.sum(dim=-1)
    if bool((~(sums > 0) | ~torch.isfinite(sums)).any()):
        bad = torch.nonzero(~(sums > 0) | ~torch.isfinite(sums)).flatten()[:10].tolist()
        raise ValueError(f"weights of class(es) {bad} sum to zero (or overflow)")


def pearson_torch(x, clip_negative=False):
    """:func:`pearson_numpy` in torch, on x's device; returns a tensor of x's dtype."""
    import torch
    x = _torch_float(torch.as_tensor(x).detach())
    _check_pearson_shape(x.shape)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    f = x.to(torch.float64)
    if clip_negative:
        f = f.clamp_min(0.0)
    hi, lo = f.amax(dim=1), f.amin(dim=1)
    const = hi == lo
    # the row scaling and the mean correction of _normalised_rows_numpy
    half = hi * 0.5 - lo * 0.5
    k = (-torch.frexp(half).exponent.to(torch.int64)).clamp(-1022, 1023)
    k = torch.where(half == 0, torch.full_like(k, 1023), k)
    k = torch.where(const, torch.zeros_like(k), k)
    f = f * ((k + 1023) << 52).view(torch.float64)[:, None]  # 2**k, built exactly
    f = f - f.mean(dim=1, keepdim=True)
    ss = f.pow(2).sum(dim=1)
    sd = f.sum(dim=1)
    fix = (sd * sd > f.shape[1] * ss * _MEAN_CORRECTION) & ~const
    if bool(fix.any()):
        f = f - torch.where(fix, sd / f.shape[1], torch.zeros_like(sd))[:, None]
        ss = torch.where(fix, f.pow(2).sum(dim=1), ss)
    norm = ss.sqrt()
    const |= ~(norm > 0)
    norm = torch.where(const, torch.ones_like(norm), norm)
    f = f / norm[:, None]
    f[const] = 0.0
    # block by block into the result, as pearson_numpy: the upper triangle of each block of rows
    # (gemm), mirrored so the result is exactly symmetric; no C x C temporaries
    n = f.shape[0]
    out = torch.empty((n, n), dtype=x.dtype, device=f.device)
    b = 1024
    for r0 in range(0, n, b):
        r1 = min(n, r0 + b)
        m = r1 - r0
        blk = f[r0:r1] @ f[r0:].T
        d = blk[:, :m]
        d.copy_(torch.triu(d) + torch.triu(d, diagonal=1).T)
        blk.clamp_(-1.0, 1.0)
        d.diagonal().fill_(1.0)
        out[r0:r1, r0:] = blk
        out[r1:, r0:r1] = blk[:, m:].T
        del blk, d                  # before the next block is allocated
    return out


# ---------------------------------------------------------------------------------------------
# native paths

def _weighted_moments_native(fiv, w):
    """fiv: float32/64 numpy; w: float64 numpy, checked. numpy results."""
    f = np.ascontiguousarray(fiv)  # copies only non-contiguous input ("copy at the door")
    return _C.weighted_moments(f, w)   # checks the moments after the cast to fiv's dtype


def _pearson_native(x, clip_negative, out, block_size):
    """x: float32/64 numpy (any strides). Fills out (allocated if None) and returns it."""
    if x.strides[0] % x.itemsize or x.strides[1] % x.itemsize:
        x = np.ascontiguousarray(x)
    n = x.shape[0]
    if out is None:
        out = np.empty((n, n), dtype=x.dtype)
        _C.pearson_into(x, out, clip_negative, 0)
        return out
    _check_out(out, n, x.dtype)
    block = min(int(block_size), n) if block_size else 0   # (a C long: 2**63 would not convert)
    if out.strides[1] == out.itemsize and out.strides[0] >= n * out.itemsize:
        _C.pearson_into(x, out, clip_negative, block)       # C-contiguous rows
    elif out.strides[0] == out.itemsize and out.strides[1] >= n * out.itemsize:
        # Fortran order (e.g. open_memmap(..., fortran_order=True)): out.T has C-contiguous rows,
        # and the result is exactly symmetric, so filling out.T fills out
        _C.pearson_into(x, out.T, clip_negative, block)
    else:
        tmp = np.empty((n, n), dtype=x.dtype)  # any other strided view: fill a copy, then assign
        _C.pearson_into(x, tmp, clip_negative, block)
        out[...] = tmp
    return out


def _cuda_ptr(t):
    return int(t.__cuda_array_interface__["data"][0])


def _cuda_fallback_warning(e):
    if not _cuda_state.get("warned"):
        warnings.warn(f"deepresolve_captum: native CUDA kernels unusable ({e}); using torch",
                      RuntimeWarning, stacklevel=3)
        _cuda_state["warned"] = True


def _weighted_moments_cuda(fiv, weights):
    import torch
    fiv = _torch_float(fiv.detach()).contiguous()
    w = _weights_tensor(weights, fiv.device).contiguous()
    _check_moment_shapes(fiv.shape, w.shape)
    _check_weights_torch(w)
    C, T, K = fiv.shape
    mean = torch.empty((C, K), dtype=fiv.dtype, device=fiv.device)
    var = torch.empty_like(mean)
    dev = fiv.device.index if fiv.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(fiv.device).cuda_stream
    _C.cuda_weighted_moments(_cuda_ptr(fiv), _cuda_ptr(w), _cuda_ptr(mean), _cuda_ptr(var), C, T, K,
                             fiv.dtype == torch.float64, dev, stream)
    if not bool(torch.isfinite(mean).all() & torch.isfinite(var).all()):
        raise ValueError("fiv contains NaN or inf, or values so large that the moments overflow")
    return mean, var


def _pearson_cuda(x, clip_negative):
    import torch
    x = _torch_float(x.detach()).contiguous()
    _check_pearson_shape(x.shape)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    n, K = x.shape
    work = torch.empty_like(x)
    out = torch.empty((n, n), dtype=x.dtype, device=x.device)
    dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(x.device).cuda_stream
    _C.cuda_pearson(_cuda_ptr(x), _cuda_ptr(work), _cuda_ptr(out), n, K, x.dtype == torch.float64,
                    bool(clip_negative), dev, stream)
    # prep_kernel scales each row by a power of two near its spread, so finite x gives finite
    # sums at any scale (as on the CPU). Kept as a guard against a kernel fault (with n == 1,
    # syrk_kernel forces the diagonal to 1, so work[:, 0] is checked too, O(n)): a RuntimeError
    # makes pearson() warn and take the torch path.
    if not bool(torch.isfinite(work[:, 0]).all() & torch.isfinite(out).all()):
        raise RuntimeError("the CUDA Pearson kernel produced NaN/inf from finite input")
    return out


# ---------------------------------------------------------------------------------------------
# public dispatchers

def weighted_moments(fiv, weights):
    """Weighted mean and variance of the FIVs over starts: the OFIV candidate and the IL.

    Parameters
    ----------
    fiv: (C, T, K) array or tensor: C classes, T starts, K channels.
    weights: (C, T) non-negative, each class with a positive sum; normalised per class here.

    Returns
    -------
    (mean, var), each (C, K), numpy for numpy input and a tensor on fiv's device for a tensor,
    in fiv's dtype (float32 or float64; float16/bfloat16 become float32, other dtypes
    float64). Raises ``ValueError`` for wrong
    ranks or mismatched shapes, empty input, NaN/inf, negative weights, a class whose weights
    sum to zero, or moments too large for the result dtype (float32: checked after the cast).
    """
    if _is_tensor(fiv):
        import torch
        if fiv.is_cuda:
            if cuda_native_available():
                try:
                    return _weighted_moments_cuda(fiv, weights)
                except RuntimeError as e:  # e.g. a driver older than the toolkit
                    _cuda_fallback_warning(e)
            return weighted_moments_torch(fiv, weights)
        if not native_available():
            return weighted_moments_torch(fiv, weights)
        f = _np_float(_numpy_of(_torch_float(fiv.detach())))
        w = _numpy_of(weights) if _is_tensor(weights) else weights
        mean, var = weighted_moments(f, w)
        return torch.from_numpy(mean), torch.from_numpy(var)
    if _is_tensor(weights):
        weights = _numpy_of(weights)
    if not native_available():
        return weighted_moments_numpy(fiv, weights)
    f = _np_float(fiv)
    w = np.asarray(weights, dtype=np.float64)
    _check_moment_shapes(f.shape, w.shape)
    _check_weights(w)
    return _weighted_moments_native(f, w)


def pearson(x, clip_negative=False, *, out=None, block_size=None):
    """Pearson correlation between the rows of x (C, K) -> (C, C).

    Parameters
    ----------
    x: (C, K) array or tensor.
    clip_negative: clip x at 0 first (DeepResolve's class similarity uses the non-negative OFIV).
    out: optional (C, C) numpy array or ``np.memmap`` of the result dtype to fill and return, so a
        21,907 x 21,907 result never exists twice in memory (a tensor x is computed on the
        host, into out).
    block_size: rows computed per block (the native kernel and the numpy fallback both compute
        only the upper triangle of each block of rows and mirror it). Default: all rows at once
        (native, which blocks only with ``out``) / 1024 (numpy, with or without ``out``).

    Returns
    -------
    (C, C), symmetric, exactly 1 on the diagonal, values in [-1, 1]; numpy for numpy input (or
    ``out``), a tensor on x's device for a tensor; x's dtype (float32/float64; float16/bfloat16
    become float32, other dtypes float64).
    A constant row (after clipping) has no defined correlation: 0 against the others, 1 with
    itself. Raises ``ValueError`` for a non-2-D or empty x, NaN/inf, or a wrong ``out``.
    """
    if block_size is not None and (isinstance(block_size, bool)
                                   or not isinstance(block_size, (int, np.integer)) or block_size < 1):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    if _is_tensor(x):
        import torch
        if out is not None:   # into out directly (its values on the host), not via a copy
            return pearson(_numpy_of(_torch_float(x.detach())), clip_negative, out=out,
                           block_size=block_size)
        if x.is_cuda:
            if cuda_native_available():
                try:
                    return _pearson_cuda(x, clip_negative)
                except RuntimeError as e:
                    _cuda_fallback_warning(e)
            return pearson_torch(x, clip_negative)
        if not native_available():
            return pearson_torch(x, clip_negative)
        return torch.from_numpy(pearson(_numpy_of(_torch_float(x.detach())), clip_negative))
    if not native_available():
        return pearson_numpy(x, clip_negative, out=out, block_size=block_size)
    x = _np_float(x)
    _check_pearson_shape(x.shape)
    return _pearson_native(x, bool(clip_negative), out, block_size)
