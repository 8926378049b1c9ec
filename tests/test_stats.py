"""The ensemble statistics: native (_C) and fallback (numpy, torch) against an independent float64
reference, edge cases, bad input, the blocked/memmap Pearson, and the dispatch switches.

Tolerances (issue 3): float64 within 1e-10; float32 within 1e-5 relative to the scale of the
result (|a - ref| <= 1e-5 * max|ref|, per array: Pearson values are in [-1, 1])."""
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepresolve_captum import _stats

C_EXT = _stats._C
needs_native = pytest.mark.skipif(C_EXT is None, reason="deepresolve_captum._C is not built")
ISAS = C_EXT.available_isas().split(",") if C_EXT is not None else []


# ---------------------------------------------------------------------------------------------
# Independent references: np.average / np.corrcoef, not the code under test.

def ref_moments(fiv, w):
    fiv = np.asarray(fiv, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    C, T, K = fiv.shape
    mean = np.empty((C, K))
    var = np.empty((C, K))
    for c in range(C):
        mean[c] = np.average(fiv[c], axis=0, weights=w[c])
        var[c] = np.average((fiv[c] - mean[c]) ** 2, axis=0, weights=w[c])
    return mean, var


def ref_pearson(x, clip_negative=False):
    x = np.asarray(x, dtype=np.float64)
    if clip_negative:
        x = np.maximum(x, 0.0)
    const = x.max(axis=1) == x.min(axis=1)
    r = np.zeros((x.shape[0], x.shape[0]))
    live = np.flatnonzero(~const)
    if live.size:
        r[np.ix_(live, live)] = np.corrcoef(x[live]) if live.size > 1 else 1.0
    np.fill_diagonal(r, 1.0)
    return np.clip(r, -1.0, 1.0)


def assert_close(a, ref, dtype):
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    assert a.dtype == np.dtype(dtype), (a.dtype, dtype)
    assert a.shape == ref.shape
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(a, ref, rtol=0, atol=1e-10)
    else:
        scale = max(1e-30, float(np.abs(ref).max()))
        np.testing.assert_allclose(a.astype(np.float64), ref, rtol=0, atol=1e-5 * scale)


# The implementations under test, all through the public entry points.
def _native(fn):
    def run(*a, **k):
        assert _stats.native_available()
        return fn(*a, **k)
    return run


def _fallback(fn):
    def run(*a, **k):
        with _stats.native_disabled():
            return fn(*a, **k)
    return run


def _torch_in(fn, native):
    def run(x, *rest, **k):
        t = torch.from_numpy(np.ascontiguousarray(x))
        rest = tuple(torch.from_numpy(np.asarray(r)) if isinstance(r, np.ndarray) else r for r in rest)
        if native:
            return fn(t, *rest, **k)
        with _stats.native_disabled():
            return fn(t, *rest, **k)
    return run


IMPLS = {
    "native": pytest.param(lambda fn: _native(fn), marks=needs_native),
    "numpy": pytest.param(lambda fn: _fallback(fn)),
    "torch-cpu": pytest.param(lambda fn: _torch_in(fn, native=False)),
    "native-tensor": pytest.param(lambda fn: _torch_in(fn, native=True), marks=needs_native),
}
impl = pytest.mark.parametrize("wrap", list(IMPLS.values()), ids=list(IMPLS))
dtypes = pytest.mark.parametrize("dtype", [np.float64, np.float32])


def check_moments(wrap, fiv, w, dtype):
    mean, var = wrap(_stats.weighted_moments)(fiv.astype(dtype), w)
    rm, rv = ref_moments(fiv.astype(dtype), w)
    assert_close(mean, rm, dtype)
    assert_close(var, rv, dtype)


def check_pearson(wrap, x, dtype, clip):
    r = wrap(_stats.pearson)(x.astype(dtype), clip_negative=clip)
    assert_close(r, ref_pearson(x.astype(dtype), clip), dtype)
    r = r.numpy() if isinstance(r, torch.Tensor) else r
    assert np.array_equal(r, r.T)
    assert np.all(np.diag(r) == 1.0)


# ---------------------------------------------------------------------------------------------
# weighted moments

@impl
@dtypes
@pytest.mark.parametrize("shape", [(7, 5, 13), (919, 10, 960)], ids=["small", "deepsea"])
def test_moments_random(wrap, dtype, shape):
    rng = np.random.default_rng(0)
    fiv = rng.standard_normal(shape) * 3 + rng.standard_normal(shape[-1])
    w = rng.random(shape[:2]) + 0.01
    check_moments(wrap, fiv, w, dtype)


@impl
@dtypes
def test_moments_edge_cases(wrap, dtype):
    rng = np.random.default_rng(1)
    # one start: mean is that FIV, variance exactly 0
    fiv = rng.standard_normal((4, 1, 6))
    mean, var = wrap(_stats.weighted_moments)(fiv.astype(dtype), np.full((4, 1), 2.5))
    assert_close(mean, fiv[:, 0].astype(dtype).astype(np.float64), dtype)
    assert np.all(np.asarray(var) == 0)
    # K = 1
    check_moments(wrap, rng.standard_normal((5, 3, 1)), rng.random((5, 3)) + 0.1, dtype)
    # zero weight on some starts: those starts do not count at all
    fiv = rng.standard_normal((6, 5, 8))
    w = rng.random((6, 5)) + 0.1
    w[:, 0] = 0.0
    w[2, 1:4] = 0.0
    check_moments(wrap, fiv, w, dtype)
    fiv_poisoned = fiv.copy()
    fiv_poisoned[:, 0] = 1e3  # a zero-weight start must not move anything
    mean, var = wrap(_stats.weighted_moments)(fiv_poisoned.astype(dtype), w)
    rm, rv = ref_moments(fiv[:, 1:].astype(dtype), w[:, 1:])
    assert_close(mean, rm, dtype)
    assert_close(var, rv, dtype)
    # identical starts: variance 0, whatever the weights
    same = np.repeat(rng.standard_normal((3, 1, 4)), 6, axis=1)
    _, var = wrap(_stats.weighted_moments)(same.astype(dtype), rng.random((3, 6)) + 0.1)
    assert np.abs(np.asarray(var)).max() <= (1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("wrap", [v for k, v in IMPLS.items() if k in ("native", "numpy")],
                         ids=["native", "numpy"])
@dtypes
def test_moments_non_contiguous(wrap, dtype):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((9, 12, 14)).astype(dtype)
    w_base = rng.random((12, 9)) + 0.1
    views = [base[:, ::2, :], base[::-1], np.swapaxes(np.ascontiguousarray(np.swapaxes(base, 1, 2)), 1, 2),
             np.asfortranarray(base)]
    for fiv in views:
        assert not fiv.flags.c_contiguous or fiv is base
        w = w_base.T[:, : fiv.shape[1]]  # non-contiguous weights too
        mean, var = wrap(_stats.weighted_moments)(fiv, w)
        rm, rv = ref_moments(fiv, w)
        assert_close(mean, rm, dtype)
        assert_close(var, rv, dtype)


@impl
def test_moments_stable_with_large_offset(wrap):
    """Two-pass: a 1e6 offset on unit-scale FIVs must not wreck the variance (a one-pass
    E[x^2] - E[x]^2 would lose ~all digits in float64 here)."""
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((5, 10, 7))
    fiv = 1e6 + noise  # fiv - 1e6 is exact (Sterbenz), so the reference below is exact input
    w = rng.random((5, 10)) + 0.1
    mean, var = wrap(_stats.weighted_moments)(fiv, w)
    rm, rv = ref_moments(fiv - 1e6, w)
    mean = np.asarray(mean.numpy() if isinstance(mean, torch.Tensor) else mean)
    var = np.asarray(var.numpy() if isinstance(var, torch.Tensor) else var)
    np.testing.assert_allclose(mean - 1e6, rm, atol=1e-9)
    np.testing.assert_allclose(var, rv, rtol=1e-8, atol=1e-10)


BAD_MOMENTS = {
    "rank": (np.zeros((3, 4)), np.ones((3, 4)), "expected fiv"),
    "shape": (np.zeros((3, 4, 5)), np.ones((3, 5)), "expected fiv"),
    "empty": (np.zeros((3, 4, 0)), np.ones((3, 4)), "empty"),
    "empty-C": (np.zeros((0, 4, 2)), np.ones((0, 4)), "empty"),
    "nan-fiv": (np.where(np.eye(4, 5)[None, :, :] > 0, np.nan, 1.0).repeat(2, 0), np.ones((2, 4)), "NaN or inf"),
    "inf-fiv-zero-weight": (np.concatenate([np.full((2, 1, 3), np.inf), np.ones((2, 3, 3))], 1),
                            np.array([[0, 1, 1, 1]] * 2, float), "NaN or inf"),
    "negative-weight": (np.ones((2, 3, 4)), np.array([[1, -1, 1], [1, 1, 1]], float), "non-negative"),
    "zero-weights": (np.ones((2, 3, 4)), np.array([[1, 1, 1], [0, 0, 0]], float), "sum to zero"),
    "nan-weight": (np.ones((2, 3, 4)), np.array([[1, np.nan, 1], [1, 1, 1]], float), "NaN or inf"),
    "overflow": (np.array([1e308, -1e308, 1e308])[None, :, None] * np.ones((2, 1, 3)), np.ones((2, 3)),
                 "overflow"),
    # finite in float64 (var 2.25e76), inf only once cast back to float32: every path used to
    # return var = inf silently (r5 F3)
    "overflow-float32": (np.array([0.0, 3e38], dtype=np.float32)[None, :, None] * np.ones((2, 1, 3), np.float32),
                         np.ones((2, 2)), "overflow float32"),
}


@impl
@pytest.mark.parametrize("case", list(BAD_MOMENTS), ids=list(BAD_MOMENTS))
def test_moments_bad_input(wrap, case):
    fiv, w, msg = BAD_MOMENTS[case]
    with pytest.raises(ValueError, match=msg):
        wrap(_stats.weighted_moments)(fiv, w)


@impl
@pytest.mark.parametrize("scale", [1.0, 10.0, 1e300], ids=["w-sum-1", "w-sum-10", "w-huge"])
def test_moments_centred_square_overflows_variance_finite(wrap, scale):
    """(f - mean)**2 overflows for |f - mean| > 1.3e154, but w * d * d with normalised weights
    does not when the variance is finite: every path computes the native kernel's (w * d) * d, so
    all return var = 8.1e307 (the numpy and torch fallbacks used to raise 'overflow', r5 F2),
    whatever the scale of the weights."""
    fiv = np.array([[[0.0], [3e154]]])
    w = np.array([[0.9, 0.1]]) * scale
    mean, var = wrap(_stats.weighted_moments)(fiv, w)
    mean = np.asarray(mean.numpy() if isinstance(mean, torch.Tensor) else mean)
    var = np.asarray(var.numpy() if isinstance(var, torch.Tensor) else var)
    np.testing.assert_allclose(mean, [[3e153]], rtol=1e-15)
    np.testing.assert_allclose(var, [[8.1e307]], rtol=1e-15)


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False], ids=["native", "torch"])
def test_moments_tensor_fiv_with_any_numpy_weights(native):
    """A tensor fiv with numpy weights that are reversed (negative strides) or big-endian: the
    torch fallback passed them to torch.as_tensor, which rejects both (r5 F6)."""
    rng = np.random.default_rng(14)
    fiv = rng.standard_normal((3, 4, 5))
    w = rng.random((3, 4)) + 0.1
    rm, rv = ref_moments(fiv, w)
    for weights in (np.ascontiguousarray(w[::-1])[::-1], w.astype(">f8"), np.asfortranarray(w)):
        with contextlib.nullcontext() if native else _stats.native_disabled():
            assert _stats.backend(torch.from_numpy(fiv)) == ("native" if native else "torch")
            mean, var = _stats.weighted_moments(torch.from_numpy(fiv), weights)
        assert_close(mean, rm, np.float64)
        assert_close(var, rv, np.float64)


# ---------------------------------------------------------------------------------------------
# Pearson

@impl
@dtypes
@pytest.mark.parametrize("clip", [False, True], ids=["signed", "clipped"])
@pytest.mark.parametrize("shape", [(1, 5), (37, 19), (919, 960)], ids=["C=1", "small", "deepsea"])
def test_pearson_random(wrap, dtype, clip, shape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) + 0.3
    check_pearson(wrap, x, dtype, clip)


@impl
@dtypes
def test_pearson_edge_cases(wrap, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 30))
    x[3] = 0.1          # constant (and 0.1 is not exact: the float mean leaves noise)
    x[5] = -2.0         # constant
    x[7] = -np.abs(x[7])  # all <= 0: constant (zero) only once clipped
    x[9] = 2 * x[1] + 5   # exactly correlated with row 1
    for clip in (False, True):
        r = wrap(_stats.pearson)(x.astype(dtype), clip_negative=clip)
        r = r.numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
        assert_close(r, ref_pearson(x.astype(dtype), clip), dtype)
        for c in (3, 5) + ((7,) if clip else ()):
            assert r[c, c] == 1.0
            assert np.all(np.delete(r[c], c) == 0.0)
        if not clip:  # (clipping breaks the affine relation)
            assert abs(r[1, 9] - 1.0) <= (1e-12 if dtype == np.float64 else 1e-5)
    # K = 1: every row is constant -> identity
    r = wrap(_stats.pearson)(rng.standard_normal((6, 1)).astype(dtype))
    r = r.numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
    assert np.array_equal(r, np.eye(6, dtype=dtype))


@pytest.mark.parametrize("wrap", [v for k, v in IMPLS.items() if k in ("native", "numpy")],
                         ids=["native", "numpy"])
@dtypes
def test_pearson_non_contiguous(wrap, dtype):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((40, 60)).astype(dtype)
    for x in (base[:, ::3], base[::-2], np.asfortranarray(base), base.T[:25]):
        assert not x.flags.c_contiguous
        r = wrap(_stats.pearson)(x, clip_negative=True)
        assert_close(r, ref_pearson(x, True), dtype)


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@dtypes
@pytest.mark.parametrize("shape", [(101, 300), (16, 7), (53, 1000)], ids=["kc-cross", "tiny", "wide"])
def test_pearson_every_isa(isa, dtype, shape):
    """Each compiled micro-kernel (AVX-512, AVX2, generic) against the reference, with row counts
    that are not multiples of the register tile and K crossing the cache/float-accumulation slices."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10, size=(shape[0], 1))
    C_EXT.set_isa(isa)
    try:
        assert C_EXT.isa() == isa
        check_pearson(lambda f: f, x, dtype, clip=True)
        check_pearson(lambda f: f, x, dtype, clip=False)
    finally:
        C_EXT.set_isa("auto")



@needs_native
@pytest.mark.parametrize("isa", ISAS)
@dtypes
def test_pearson_tile_and_chunk_edges(isa, dtype):
    """Row counts around the tile sizes (MR 4..48, NR 6..12), the packing chunks (lcm(MR, NR)
    rows) and the 48-column transpose steps, with threads and row blocks: against the reference,
    exactly symmetric, and bit for bit the same whatever the block size or thread count."""
    rng = np.random.default_rng(12)
    n0 = C_EXT.num_threads()
    C_EXT.set_isa(isa)
    try:
        for n in (2, 8, 23, 24, 25, 47, 48, 49, 97, 145):
            x = (rng.standard_normal((n, 37)) + 0.1).astype(dtype)
            x[n // 2] = 0.25  # a constant row in the middle of a tile
            C_EXT.set_num_threads(2)
            full = np.empty((n, n), dtype=dtype)
            C_EXT.pearson_into(x, full, True, 0)
            assert_close(full, ref_pearson(x, True), dtype)
            assert np.array_equal(full, full.T) and np.all(np.diag(full) == 1.0)
            C_EXT.set_num_threads(1)
            for block in (1, 30, 50):
                got = np.full((n, n), np.nan, dtype=dtype)
                C_EXT.pearson_into(x, got, True, block)
                assert np.array_equal(got, full), (n, block)
    finally:
        C_EXT.set_isa("auto")
        C_EXT.set_num_threads(n0)

@needs_native
def test_native_threads_do_not_change_results():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((300, 200))
    fiv, w = rng.standard_normal((50, 6, 40)), rng.random((50, 6)) + 0.1
    n0 = C_EXT.num_threads()
    try:
        C_EXT.set_num_threads(1)
        r1, m1 = _stats.pearson(x, True), _stats.weighted_moments(fiv, w)
        C_EXT.set_num_threads(3)
        r3, m3 = _stats.pearson(x, True), _stats.weighted_moments(fiv, w)
    finally:
        C_EXT.set_num_threads(n0)
    assert np.array_equal(r1, r3)
    assert np.array_equal(m1[0], m3[0]) and np.array_equal(m1[1], m3[1])


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False],
                         ids=["native", "numpy"])
@dtypes
def test_pearson_blocked_into_memmap(tmp_path, native, dtype):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((301, 70)) + 0.2).astype(dtype)
    ctx = _stats.native_disabled() if not native else contextlib.nullcontext()
    with ctx:
        full = _stats.pearson(x, clip_negative=True)
        for block in (50, 64, 1000):
            mm = np.lib.format.open_memmap(tmp_path / f"r{block}.npy", mode="w+", dtype=dtype,
                                           shape=(301, 301))
            got = _stats.pearson(x, clip_negative=True, out=mm, block_size=block)
            assert got is mm
            mm.flush()
            back = np.load(tmp_path / f"r{block}.npy", mmap_mode="r")
            if native:  # same tiles, same order: bit for bit
                assert np.array_equal(back, full)
            else:
                np.testing.assert_allclose(back, full, rtol=0, atol=1e-12 if dtype == np.float64 else 1e-6)
            assert_close(back, ref_pearson(x, True), dtype)
        # a strided out (a view) works too
        big = np.zeros((301, 400), dtype=dtype)
        _stats.pearson(x, clip_negative=True, out=big[:, :301])
        np.testing.assert_allclose(big[:, :301], full, atol=1e-12 if dtype == np.float64 else 1e-6)
        assert np.all(big[:, 301:] == 0)


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False],
                         ids=["native", "numpy"])
def test_pearson_into_a_fortran_ordered_memmap_allocates_no_copy(tmp_path, native):
    """out = open_memmap(..., fortran_order=True): the native path filled a full C x C temporary
    and copied it (for a memmap, the result twice in memory, which `out` is there to avoid). It now
    fills out.T, which has C-contiguous rows: the result is exactly symmetric (review 14e F5)."""
    import tracemalloc
    n = 300
    x = np.random.default_rng(18).standard_normal((n, 40))
    peak = {}
    with contextlib.nullcontext() if native else _stats.native_disabled():
        full = _stats.pearson(x)
        for fortran in (False, True):
            mm = np.lib.format.open_memmap(tmp_path / f"f{fortran}.npy", mode="w+", dtype=np.float64,
                                           shape=(n, n), fortran_order=fortran)
            tracemalloc.start()
            try:
                got = _stats.pearson(x, out=mm, block_size=64)
                peak[fortran] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert got is mm
            if native:
                assert np.array_equal(mm, full)
            else:
                np.testing.assert_allclose(mm, full, rtol=0, atol=1e-12)
    # numpy allocations during the call: none for the native kernel into C order, the blocks for
    # the numpy path; Fortran order must not add a C x C copy (n * n * 8 = 720 kB)
    assert peak[True] <= peak[False] + n * n * 8 / 8, peak


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False],
                         ids=["native", "numpy"])
def test_pearson_block_size_beyond_a_c_long(native):
    """Any positive int is a valid block_size (more rows than x has: one block). 2**63 gave a bare
    pybind 'incompatible function arguments' TypeError on the native path, and 2**63 - 1 a signed
    overflow (undefined behaviour) when the C++ rounded it up to a multiple of the tile (review
    14e F6)."""
    x = np.random.default_rng(20).standard_normal((50, 20))
    with contextlib.nullcontext() if native else _stats.native_disabled():
        full = _stats.pearson(x)
        for b in (2**63 - 1, 2**63, 2**100, np.uint64(2**63), np.int64(2**63 - 1)):
            out = np.full((50, 50), np.nan)
            assert _stats.pearson(x, out=out, block_size=b) is out
            assert np.array_equal(out, full) if native else np.allclose(out, full, rtol=0, atol=1e-12)
    if native:
        out = np.full((50, 50), np.nan)
        C_EXT.pearson_into(x, out, False, 2**63 - 1)
        assert np.array_equal(out, full)


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False],
                         ids=["native", "numpy"])
def test_pearson_bad_out(native):
    x = np.random.default_rng(0).standard_normal((5, 4))
    ctx = _stats.native_disabled() if not native else contextlib.nullcontext()
    with ctx:
        with pytest.raises(ValueError, match="shape"):
            _stats.pearson(x, out=np.empty((5, 4)))
        with pytest.raises(ValueError, match="dtype"):
            _stats.pearson(x, out=np.empty((5, 5), dtype=np.float32))
        ro = np.empty((5, 5))
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            _stats.pearson(x, out=ro)
        with pytest.raises(TypeError):
            _stats.pearson(x, out=[[0.0] * 5] * 5)


BAD_PEARSON = {
    "1-D": (np.ones(5), "2-D"),
    "3-D": (np.ones((2, 3, 4)), "2-D"),
    "empty-rows": (np.ones((0, 4)), "empty"),
    "empty-cols": (np.ones((4, 0)), "empty"),
    "nan": (np.array([[1.0, np.nan], [1.0, 2.0]]), "NaN or inf"),
    "-inf-clipped": (np.array([[1.0, -np.inf, 3.0], [1.0, 2.0, 0.0]]), "NaN or inf"),
}


@impl
@pytest.mark.parametrize("case", list(BAD_PEARSON), ids=list(BAD_PEARSON))
def test_pearson_bad_input(wrap, case):
    x, msg = BAD_PEARSON[case]
    with pytest.raises(ValueError, match=msg):
        wrap(_stats.pearson)(x, clip_negative=True)


@impl
@pytest.mark.parametrize("scale", [1e-310, 1e-300, 1e-160, 1e160, 1e300])
def test_pearson_does_not_depend_on_the_scale(wrap, scale):
    """Pearson is scale-invariant, and so is each path now: every row is scaled by a power of two
    near its spread first. Before, squares underflowed below ~1e-154 (rows of 1e-300 values came
    out all 0, 'no correlation'; 1e-160 lost 5 digits, silently) and overflowed above ~1e154
    (ValueError 'overflow') (review 14e F2)."""
    z = np.random.default_rng(15).standard_normal((6, 50))
    z[4] = 2 * z[1] - 3                    # exactly correlated with row 1
    x = z * scale
    r = wrap(_stats.pearson)(x)
    r = r.numpy() if isinstance(r, torch.Tensor) else r
    ref = ref_pearson(np.ldexp(x, -int(np.round(np.log2(scale)))))  # exact scaling (1e-310: subnormal x)
    np.testing.assert_allclose(r, ref, rtol=0, atol=1e-12)
    assert np.array_equal(r, r.T) and np.all(np.diag(r) == 1.0)


@impl
def test_pearson_near_the_largest_doubles(wrap):
    """Rows whose sum or spread overflows a double ([1e308, 1.7e308, 0], [-1.7e308, 1.7e308, 0])
    have a well-defined correlation; every path raised 'overflow' for them (review 14e F2)."""
    z = np.array([[1.0, 1.7, 0.0], [1.0, 2.0, 0.0], [-1.7, 1.7, 0.0], [0.5, 0.25, 1.0]])
    x = z * np.array([[1e308], [1.0], [1e308], [1e300]])
    r = wrap(_stats.pearson)(x, clip_negative=True)
    r = r.numpy() if isinstance(r, torch.Tensor) else r
    np.testing.assert_allclose(r, ref_pearson(z, True), rtol=0, atol=1e-12)


@impl
def test_pearson_with_a_large_offset(wrap):
    """Rows 1e8 + 1e-3 * noise (offset / sd 1e11): the mean is corrected by the centred values'
    own mean where its error is above rounding noise (corrected two-pass), and carried as two
    doubles. The native kernel was 1.3e-9 off here (a naive sum for the mean), numpy 1.8e-10,
    torch 2.3e-10, above the suite's 1e-10; now about 1e-16 (review 14e F2)."""
    rng = np.random.default_rng(16)
    noise = 1e-3 * rng.standard_normal((8, 480))
    x = 1e8 + noise
    r = wrap(_stats.pearson)(x)
    r = r.numpy() if isinstance(r, torch.Tensor) else r
    np.testing.assert_allclose(r, ref_pearson(x - 1e8), rtol=0, atol=1e-12)  # x - 1e8 is exact


# ---------------------------------------------------------------------------------------------
# dispatch, dtypes, switches

def test_dtypes_and_return_types():
    rng = np.random.default_rng(10)
    xi = rng.integers(-5, 5, size=(6, 9))
    assert _stats.pearson(xi).dtype == np.float64
    assert _stats.pearson(xi.astype(np.float16)).dtype == np.float32
    assert _stats.pearson(xi.astype(np.float32)).dtype == np.float32
    assert isinstance(_stats.pearson(xi.tolist()), np.ndarray)
    t = torch.tensor(xi, dtype=torch.float32, requires_grad=True)
    r = _stats.pearson(t, clip_negative=True)
    assert isinstance(r, torch.Tensor) and r.dtype == torch.float32 and r.device == t.device
    m, v = _stats.weighted_moments(torch.ones(2, 3, 4, dtype=torch.float64), torch.ones(2, 3))
    assert isinstance(m, torch.Tensor) and m.dtype == torch.float64
    m, v = _stats.weighted_moments(np.ones((2, 3, 4), dtype=np.float32), np.ones((2, 3)))
    assert m.dtype == np.float32 and v.dtype == np.float32
    with pytest.raises(TypeError, match="complex"):
        _stats.pearson(np.ones((3, 3), dtype=complex))


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False], ids=["native", "numpy"])
@pytest.mark.parametrize("order", [">", "<"], ids=["big-endian", "little-endian"])
def test_non_native_byte_order_keeps_the_width(native, order):
    """float32 and float64 are kept in either byte order: '>f4' (e.g. from a FITS or network
    file) came back as float64 from pearson, weighted_moments and class_similarity, since
    np.dtype('>f4') != np.float32 (review 14e F3)."""
    from deepresolve_captum.similarity import class_similarity
    rng = np.random.default_rng(17)
    x, fiv, w = rng.standard_normal((7, 9)), rng.standard_normal((3, 4, 5)), rng.random((3, 4)) + 0.1
    with contextlib.nullcontext() if native else _stats.native_disabled():
        for dt in (np.float32, np.float64):
            sw = np.dtype(dt).newbyteorder(order)
            r = _stats.pearson(x.astype(sw), clip_negative=True)
            assert r.dtype == dt and np.array_equal(r, _stats.pearson(x.astype(dt), clip_negative=True))
            m, v = _stats.weighted_moments(fiv.astype(sw), w)
            assert m.dtype == dt and v.dtype == dt
            assert_close(m, ref_moments(fiv.astype(dt), w)[0], dt)
        assert class_similarity(x.astype(np.dtype(np.float32).newbyteorder(order))).dtype == np.float32


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False], ids=["native", "torch"])
def test_tensors_with_the_negative_bit(native):
    """A lazily negated tensor (neg bit set: x._neg_view(), what some torch ops return): the native
    path's .numpy() raised "Can't call numpy() on Tensor that has negative bit set", where the
    torch fallback worked (review 14e F7). Also the numpy references, and class_similarity."""
    from deepresolve_captum.similarity import class_similarity
    rng = np.random.default_rng(19)
    x, fiv, w = rng.standard_normal((6, 9)), rng.standard_normal((3, 4, 5)), rng.random((3, 4)) + 0.1
    xn = torch.from_numpy(-x)._neg_view()
    fn, wn = torch.from_numpy(-fiv)._neg_view(), torch.from_numpy(-w)._neg_view()
    assert xn.is_neg() and fn.is_neg() and wn.is_neg()
    with contextlib.nullcontext() if native else _stats.native_disabled():
        assert_close(_stats.pearson(xn, clip_negative=True), ref_pearson(x, True), np.float64)
        mean, var = _stats.weighted_moments(fn, wn)
        assert_close(mean, ref_moments(fiv, w)[0], np.float64)
        assert_close(var, ref_moments(fiv, w)[1], np.float64)
        out = np.empty((6, 6))
        assert_close(_stats.pearson(xn, out=out), ref_pearson(x), np.float64)
        assert_close(class_similarity(xn), ref_pearson(x, True), np.float64)
    assert_close(_stats.pearson_numpy(xn), ref_pearson(x), np.float64)
    assert_close(_stats.weighted_moments_numpy(fn, wn)[1], ref_moments(fiv, w)[1], np.float64)


def test_force_fallback_switches(monkeypatch):
    x = np.ones((2, 2))
    expected = "native" if C_EXT is not None else "numpy"
    assert _stats.backend(x) == expected
    with _stats.native_disabled():
        assert _stats.backend(x) == "numpy"
        assert _stats.backend(torch.ones(2, 2)) == "torch"
        with _stats.native_disabled():
            assert not _stats.native_available()
        assert not _stats.native_available()
    assert _stats.backend(x) == expected
    monkeypatch.setenv("DEEPRESOLVE_NO_NATIVE", "1")
    assert _stats.backend(x) == "numpy" and not _stats.native_available()
    monkeypatch.setenv("DEEPRESOLVE_NO_NATIVE", "0")
    assert _stats.backend(x) == expected


def test_native_extension_is_built():
    """CI builds the extension: a silent fall back to numpy there would hide a broken build."""
    if C_EXT is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("deepresolve_captum._C did not import, and CI=true")
        pytest.skip("deepresolve_captum._C is not built (pure-Python install)")
    assert set(ISAS) >= {"generic"}
    assert C_EXT.num_threads() >= 1
    assert isinstance(C_EXT.has_cuda, bool)


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@cuda
@pytest.mark.parametrize("native", [True, False], ids=["native-cuda", "torch-cuda"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_cuda_paths(native, dtype, monkeypatch):
    monkeypatch.setenv("DEEPRESOLVE_CUDA_KERNELS", "1")
    if native and not _stats.cuda_native_available():
        pytest.skip("_C was built without CUDA or its runtime sees no GPU")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((919, 480)) + 0.1
    x[5] = 0.1
    fiv, w = rng.standard_normal((919, 10, 96)), rng.random((919, 10)) + 0.01
    w[:, 0] = 0
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    xt = torch.tensor(x, dtype=dtype, device="cuda")
    ft = torch.tensor(fiv, dtype=dtype, device="cuda")
    wt = torch.tensor(w, device="cuda")
    ctx = contextlib.nullcontext() if native else _stats.native_disabled()
    with ctx:
        assert _stats.backend(xt) == ("native-cuda" if native else "torch")
        for clip in (False, True):
            r = _stats.pearson(xt, clip_negative=clip)
            assert r.is_cuda and r.dtype == dtype
            r = r.cpu().numpy()
            assert_close(r, ref_pearson(x.astype(np_dtype), clip), np_dtype)
            assert np.array_equal(r, r.T) and np.all(np.diag(r) == 1)
        mean, var = _stats.weighted_moments(ft, wt)
        assert mean.is_cuda and mean.dtype == dtype
        rm, rv = ref_moments(fiv.astype(np_dtype), w)
        assert_close(mean.cpu(), rm, np_dtype)
        assert_close(var.cpu(), rv, np_dtype)
        with pytest.raises(ValueError, match="NaN or inf"):
            _stats.weighted_moments(torch.full_like(ft, float("nan")), wt)
        with pytest.raises(ValueError, match="sum to zero"):
            _stats.weighted_moments(ft, torch.zeros_like(wt))
        with pytest.raises(ValueError, match="NaN or inf"):
            _stats.pearson(torch.full_like(xt, float("inf")))
        if dtype == torch.float64:
            # any scale, and sums that overflow a double (they raised 'overflow', review 14e F2)
            z = rng.standard_normal((6, 50))
            for s in (1e-300, 1e-160, 1e160, 1e300):
                r = _stats.pearson(torch.tensor(z * s, device="cuda")).cpu().numpy()
                np.testing.assert_allclose(r, ref_pearson(z), rtol=0, atol=1e-10)
            z = np.array([[1.0, 1.7, 0.0], [1.0, 2.0, 0.0], [-1.7, 1.7, 0.0]])
            r = _stats.pearson(torch.tensor(z * np.array([[1e308], [1.0], [1e308]]), device="cuda"),
                               clip_negative=True)
            np.testing.assert_allclose(r.cpu().numpy(), ref_pearson(z, True), rtol=0, atol=1e-12)
            xo = 1e8 + 1e-3 * rng.standard_normal((8, 480))  # (xo - 1e8 is exact)
            r = _stats.pearson(torch.tensor(xo, device="cuda")).cpu().numpy()
            np.testing.assert_allclose(r, ref_pearson(xo - 1e8), rtol=0, atol=1e-12)
            # a finite variance whose centred square overflows, for any scale of the weights
            # (the kernel used to weight by the raw weights, r5 F2)
            for s in (1.0, 10.0, 1e300):
                m2, v2 = _stats.weighted_moments(torch.tensor([[[0.0], [3e154]]], device="cuda"),
                                                 torch.tensor([[0.9, 0.1]], device="cuda") * s)
                np.testing.assert_allclose(m2.cpu().numpy(), [[3e153]], rtol=1e-15)
                np.testing.assert_allclose(v2.cpu().numpy(), [[8.1e307]], rtol=1e-15)
        else:  # finite in double, inf in float32 (r5 F3)
            with pytest.raises(ValueError, match="overflow"):
                _stats.weighted_moments(torch.tensor([[[0.0], [3e38]]], dtype=dtype, device="cuda"),
                                        torch.tensor([[0.5, 0.5]], device="cuda"))


def test_without_extension_falls_back(monkeypatch):
    """A pure-Python install (no _C) must work through the same entry points."""
    rng = np.random.default_rng(12)
    x, fiv, w = rng.standard_normal((9, 7)), rng.standard_normal((3, 4, 5)), rng.random((3, 4)) + 0.1
    monkeypatch.setattr(_stats, "_C", None)
    assert _stats.backend(x) == "numpy" and not _stats.native_available()
    assert not _stats.cuda_native_available()
    assert_close(_stats.pearson(x, clip_negative=True), ref_pearson(x, True), np.float64)
    mean, var = _stats.weighted_moments(fiv, w)
    rm, rv = ref_moments(fiv, w)
    assert_close(mean, rm, np.float64)
    assert_close(var, rv, np.float64)


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (ROOT / "setup.py").exists() or shutil.which("false") is None,
                    reason="needs the source tree's setup.py and a `false` command")
def test_a_failed_native_build_still_installs(tmp_path):
    """No working C++ compiler (here CC=CXX=false): the build warns and leaves _C out, so that
    `pip install .` installs the pure-Python package (the fallback above); with
    DEEPRESOLVE_REQUIRE_EXT=1 it fails. Before, the build failed and so did the install (review
    14e F1). Builds into tmp_path only: nothing is written to the source tree."""
    pytest.importorskip("pybind11")
    env = {**os.environ, "CC": "false", "CXX": "false", "LDSHARED": "false", "DEEPRESOLVE_CUDA": "0"}
    for var in ("DEEPRESOLVE_NO_EXT", "DEEPRESOLVE_REQUIRE_EXT"):
        env.pop(var, None)
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "-b", str(tmp_path / "lib"),
           "-t", str(tmp_path / "tmp")]
    # an _C of an earlier build where this one goes (an editable install's source tree) must
    # not survive to be imported as if it were this build (review r3)
    stale = (tmp_path / "lib" / "deepresolve_captum" / Path(_stats._C.__file__).name
             if _stats._C is not None else None)
    if stale is not None:
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"an old build")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "could not be built" in r.stderr and "numpy/torch fallback" in r.stderr
    assert not list((tmp_path / "lib").rglob("_C*"))
    r = subprocess.run(cmd, cwd=ROOT, env={**env, "DEEPRESOLVE_REQUIRE_EXT": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    # in place (what an editable install builds): the _C of an earlier build in the source
    # tree goes too, in a copy of the tree (review r4: only build_lib's was removed)
    tree = tmp_path / "tree"
    for name in ("setup.py", "pyproject.toml", "csrc", "deepresolve_captum"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns(
                "_C*", "__pycache__", "*.o"))
        else:
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tree / name)
    import sysconfig
    old = tree / "deepresolve_captum" / ("_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    old.write_bytes(b"an old build")
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "could not be built" in r.stderr, r.stderr[-3000:]
    assert not old.exists()


def test_tensor_into_out(tmp_path):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((20, 11)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "r.npy", mode="w+", dtype=np.float32, shape=(20, 20))
    got = _stats.pearson(torch.from_numpy(x), clip_negative=True, out=mm)
    assert got is mm
    assert_close(np.asarray(mm), ref_pearson(x, True), np.float32)


def test_cuda_kernels_are_opt_in(monkeypatch):
    """Never-validated CUDA kernels must not be the default path, even with a GPU visible."""
    class FakeC:
        has_cuda = True

        @staticmethod
        def cuda_device_count():
            return 1

    monkeypatch.setattr(_stats, "_C", FakeC)
    monkeypatch.setattr(_stats, "_cuda_state", {})
    monkeypatch.delenv("DEEPRESOLVE_CUDA_KERNELS", raising=False)
    assert not _stats.cuda_native_available()
    monkeypatch.setenv("DEEPRESOLVE_CUDA_KERNELS", "1")
    assert _stats.cuda_native_available()



def test_benchmark_cuda_skip_reason_names_the_opt_in(monkeypatch):
    """benchmarks/stats.py --cuda on a GPU machine with a CUDA build, without
    DEEPRESOLVE_CUDA_KERNELS=1, said "built without CUDA (or its runtime sees no GPU)"
    (review 14e F8)."""
    import importlib.util
    path = ROOT / "benchmarks" / "stats.py"
    if not path.exists():
        pytest.skip("needs the source tree's benchmarks/")
    spec = importlib.util.spec_from_file_location("_bench_stats", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    class FakeC:
        has_cuda = True

        @staticmethod
        def cuda_device_count():
            return 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_stats, "_C", FakeC)
    monkeypatch.setattr(_stats, "_cuda_state", {})
    monkeypatch.delenv("DEEPRESOLVE_CUDA_KERNELS", raising=False)
    monkeypatch.delenv("DEEPRESOLVE_NO_NATIVE", raising=False)
    assert "DEEPRESOLVE_CUDA_KERNELS=1" in bench.cuda_skip_reason()
    monkeypatch.setenv("DEEPRESOLVE_CUDA_KERNELS", "1")
    assert bench.cuda_skip_reason() is None
    monkeypatch.setattr(FakeC, "has_cuda", False)
    assert "without CUDA" in bench.cuda_skip_reason()
    monkeypatch.setattr(FakeC, "has_cuda", True)
    monkeypatch.setattr(FakeC, "cuda_device_count", staticmethod(lambda: 0))
    monkeypatch.setattr(_stats, "_cuda_state", {})
    assert "sees no GPU" in bench.cuda_skip_reason()


@needs_native
def test_thread_variables_are_read_whole_or_not_at_all():
    """C atoi read DEEPRESOLVE_NUM_THREADS='5abc' as 5, silently. Now a value is a whole number
    (blanks and '+' allowed) or ignored; OMP_NUM_THREADS may be a nested list ('6,2')."""
    p = C_EXT.parse_threads
    assert [p(v) for v in ("5", " 3 ", "+3", "12\n")] == [5, 3, 3, 12]
    assert [p(v) for v in ("5abc", "0", "-2", "", " ", "1_0", "2.5", "6,2", "99999999999")] == [-1] * 9
    assert p("6,2", omp_list=True) == 6 and p("6;2", omp_list=True) == -1


@needs_native
def test_unreadable_thread_variable_warns_and_falls_back():
    import subprocess
    import sys
    env = dict(os.environ, DEEPRESOLVE_NUM_THREADS="5abc", OMP_NUM_THREADS="7,2")
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from deepresolve_captum import _stats; print(_stats._C.num_threads())")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) == 7
    assert "DEEPRESOLVE_NUM_THREADS='5abc'" in r.stderr and "ignored" in r.stderr


@pytest.mark.parametrize("dtype,n,bound", [(np.float32, 3072, 2.0), (np.float64, 2048, 1.75)])
def test_numpy_pearson_holds_the_result_once(dtype, n, bound):
    """review 15c m2: without out, the numpy fallback computed r = f @ f.T in float64 and
    returned r.astype(x.dtype): 3x the result for float32 (2x for float64; 5.4 GiB for Sei's
    21,907 classes). It now fills its own result block by block, as with out: beside it one
    (1024, C) float64 block. Values as before up to rounding, exactly symmetric, unit diagonal."""
    import tracemalloc
    x = np.random.default_rng(21).standard_normal((n, 8)).astype(dtype)
    x[3] = 1.0                                               # a constant row
    with _stats.native_disabled():
        _stats.pearson(x[:4])                                # BLAS set up outside the trace
        tracemalloc.start()
        try:
            r = _stats.pearson(x)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        r2 = _stats.pearson(x, block_size=100)
    assert r.dtype == dtype and peak < bound * r.nbytes, peak / r.nbytes
    f = _stats._normalised_rows_numpy(x, False)              # the former whole-matrix formula
    old = np.clip(f @ f.T, -1.0, 1.0)
    np.fill_diagonal(old, 1.0)
    np.testing.assert_allclose(r, old.astype(dtype), rtol=0,
                               atol=4e-16 if dtype == np.float64 else 6e-8)
    np.testing.assert_allclose(r2, r, rtol=0, atol=4e-16 if dtype == np.float64 else 6e-8)
    for a in (r, r2):
        assert np.array_equal(a, a.T) and np.all(np.diag(a) == 1.0)
        assert np.all(a[3, np.arange(n) != 3] == 0)


def test_torch_pearson_fallback_in_blocks_is_symmetric_across_blocks():
    """pearson_torch fills its result in 1024-row blocks too (no C x C temporaries): beyond one
    block it is still exactly symmetric and equal to the numpy fallback up to rounding."""
    x = np.random.default_rng(22).standard_normal((1100, 6))
    t = _stats.pearson_torch(torch.from_numpy(x), clip_negative=True).numpy()
    assert np.array_equal(t, t.T) and np.all(np.diag(t) == 1.0)
    np.testing.assert_allclose(t, _stats.pearson_numpy(x, clip_negative=True), rtol=0, atol=1e-15)
    assert_close(t[:50, 1050:], ref_pearson(x, True)[:50, 1050:], np.float64)
    # a tensor with out goes straight into out (it was computed whole, then copied there)
    out = np.empty((1100, 1100))
    with _stats.native_disabled():
        assert _stats.pearson(torch.from_numpy(x), True, out=out, block_size=300) is out
    np.testing.assert_array_equal(out, _stats.pearson_numpy(x, clip_negative=True, block_size=300))


def test_switches_read_the_usual_spellings_in_any_case(monkeypatch):
    """review 15c n3: DEEPRESOLVE_NO_NATIVE=TRUE (or True, YES) left the native path on, and
    DEEPRESOLVE_CUDA_KERNELS=True left the kernels off, silently: only lower-case spellings
    counted. Now any case; an unknown value warns once and counts as unset."""
    import warnings

    class FakeC:
        has_cuda = True

        @staticmethod
        def cuda_device_count():
            return 1

    monkeypatch.setattr(_stats, "_C", FakeC)
    monkeypatch.setattr(_stats, "_cuda_state", {})
    monkeypatch.setattr(_stats, "_warned_switches", set(), raising=False)
    monkeypatch.delenv("DEEPRESOLVE_NO_NATIVE", raising=False)
    for name, on in (("DEEPRESOLVE_NO_NATIVE", lambda: not _stats.native_available()),
                     ("DEEPRESOLVE_CUDA_KERNELS", _stats.cuda_native_available)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for v in ("1", "TRUE", "True", " yes ", "On", "Y"):
                monkeypatch.setenv(name, v)
                assert on(), (name, v)
            for v in ("0", "FALSE", "False", "no", "OFF", "", "  "):
                monkeypatch.setenv(name, v)
                assert not on(), (name, v)
        monkeypatch.setenv(name, "native")
        with pytest.warns(RuntimeWarning, match=f"{name}='native' is not an on/off value"):
            assert not on()
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # once per value
            assert not on()
        monkeypatch.delenv(name)
