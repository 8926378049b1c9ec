"""class_similarity and its companions: values against scipy/numpy, edge cases, bad input."""
import numpy as np
import pytest
from scipy.stats import pearsonr

from deepresolve_captum import class_difference, class_similarity
from deepresolve_captum.similarity import (label_correlation, signed_ofiv_correlation,
                                           weight_cosine)


def test_class_similarity_is_pearson_of_clipped_ofiv():
    rng = np.random.default_rng(0)
    ofiv = rng.normal(size=(5, 40))
    sim = class_similarity(ofiv)
    clipped = np.maximum(ofiv, 0)
    for i in range(5):
        for j in range(5):
            assert np.isclose(sim[i, j], pearsonr(clipped[i], clipped[j])[0], atol=1e-12)
    assert not np.allclose(sim, signed_ofiv_correlation(ofiv))
    assert np.allclose(signed_ofiv_correlation(ofiv), np.corrcoef(ofiv))


def test_constant_clipped_row_is_defined():
    ofiv = np.array([[-1.0, -2.0, -0.5, -3.0],   # nothing positive: clipped row is all zero
                     [1.0, 0.0, 2.0, 0.5],
                     [0.5, 0.1, 1.5, 0.2]])
    sim = class_similarity(ofiv)
    assert np.all(np.isfinite(sim))
    assert sim[0, 0] == 1.0 and np.all(sim[0, 1:] == 0) and np.all(sim[1:, 0] == 0)
    assert sim[1, 2] > 0.9


def test_class_difference():
    ofiv = np.arange(12, dtype=float).reshape(3, 4)
    assert np.array_equal(class_difference(ofiv, 2, 0), np.full(4, 8.0))
    with pytest.raises(ValueError, match=r"i must be an int in \[0, 3\), got 3"):
        class_difference(ofiv, 3, 0)
    with pytest.raises(ValueError, match=r"j must be an int in \[0, 3\), got -1"):
        class_difference(ofiv, 0, -1)


def test_class_difference_takes_what_argmax_returns():
    """A 0-d integer tensor or array in range (``ofiv.sum(1).argmax()``) was refused with 'must
    be a class index in [0, 4), got tensor(3)'; ints of any kind are taken, as
    hierarchical_clustering's n_clusters is, and bools and floats are still refused."""
    import torch

    ofiv = np.arange(12, dtype=float).reshape(3, 4)
    want = ofiv[2] - ofiv[0]
    t = torch.as_tensor(ofiv)
    for i in (2, np.int64(2), np.array(2), torch.tensor(2), t.sum(1).argmax()):
        np.testing.assert_array_equal(class_difference(t, i, torch.tensor(0)), want)
    for bad in (True, 2.0, torch.tensor(2.0), np.float64(2), torch.tensor(3), np.array([2]),
                torch.tensor(True), np.True_, torch.tensor([1]), np.array(True)):   # (review r2)
        with pytest.raises(ValueError, match=r"i must be an int in \[0, 3\), got"):
            class_difference(ofiv, bad, 0)


def test_label_correlation_and_weight_cosine():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=(200, 4)) > 0.5).astype(float)
    y[:, 3] = 0  # a never-positive class
    r = label_correlation(y)
    assert np.allclose(r[:3, :3], np.corrcoef(y[:, :3].T))
    assert np.all(r[3, :3] == 0) and r[3, 3] == 1
    w = rng.normal(size=(4, 6))
    w[2] = 0
    c = weight_cosine(w)
    u = w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-300)
    assert np.isclose(c[0, 1], u[0] @ u[1]) and c[2, 0] == 0 and c[2, 2] == 1


@pytest.mark.parametrize("bad,match", [
    (np.zeros(4), "2-D"),
    (np.zeros((0, 3)), "empty"),
    (np.array([[1.0, np.nan]]), "NaN"),
])
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        class_similarity(bad)


def test_class_similarity_fills_a_memmap(tmp_path):
    rng = np.random.default_rng(4)
    ofiv = rng.normal(size=(300, 20)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "sim.npy", mode="w+", dtype=np.float32,
                                   shape=(300, 300))
    got = class_similarity(ofiv, out=mm, block_size=64)
    assert got is mm or np.shares_memory(got, mm)
    ref = np.corrcoef(np.maximum(ofiv.astype(np.float64), 0))
    assert np.abs(np.asarray(mm) - ref).max() < 1e-5
    assert np.allclose(class_similarity(ofiv), ref, atol=1e-5)


def test_class_similarity_half_precision_float32_out_and_block_size():
    """bfloat16 OFIVs (from a bf16 model) are accepted; float64 OFIVs fill a float32 `out` (the
    docstring's memmap case); block_size=0 is refused rather than ignored."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 9))
    ref = class_similarity(x)
    bf = class_similarity(torch.from_numpy(x).to(torch.bfloat16))
    np.testing.assert_allclose(bf, class_similarity(torch.from_numpy(x).to(torch.bfloat16).float().numpy()),
                               atol=1e-6)
    out = np.zeros((6, 6), np.float32)
    assert class_similarity(x, out=out) is out
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        class_similarity(x, block_size=0)


def test_summary_in_place_of_its_ofiv():
    from deepresolve_captum import summarize
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(3, 5, 6)), rng.uniform(size=(3, 5)))
    np.testing.assert_array_equal(class_similarity(s), class_similarity(s.ofiv))
    np.testing.assert_array_equal(class_difference(s, 0, 2), class_difference(s.ofiv, 0, 2))


def test_label_correlation_in_chunks_matches_numpy():
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=(1000, 6)) < [[.02, .1, .5, .9, .3, .3]]).astype(np.uint8)
    y[:, 5] = y[:, 4]                                   # identical columns: exactly 1
    y[:, 1] = 1                                         # constant column: 0 off the diagonal
    for chunk in (1, 7, 65536):
        r = label_correlation(y, chunk_rows=chunk)
        live = [0, 2, 3, 4, 5]
        np.testing.assert_allclose(r[np.ix_(live, live)], np.corrcoef(y[:, live].T.astype(float)),
                                   atol=1e-12)
        assert np.all(r[1, [0, 2, 3, 4, 5]] == 0) and r[1, 1] == 1
    # real-valued labels far from 0: centring keeps the precision
    z = 1e6 + rng.normal(size=(500, 3))
    np.testing.assert_allclose(label_correlation(z, chunk_rows=64), np.corrcoef(z.T), atol=1e-8)
    assert label_correlation(y.astype(bool)).shape == (6, 6)
    with pytest.raises(ValueError, match="NaN"):
        label_correlation(np.array([[1.0, np.nan], [0.0, 1.0]]))


def _label_correlation_reference(y):
    """The whole-matrix formula label_correlation replaced (one float64 copy, np.outer): the
    values the in-place, row-block version must give."""
    f = np.asarray(y, dtype=np.float64)
    shift = f[0].copy()
    part = f - shift
    N = len(f)
    gram = np.zeros((f.shape[1],) * 2)
    gram += part.T @ part
    mean = part.sum(0) / N
    cov = gram / N - np.outer(mean, mean)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    live = std > 1e-12 * np.maximum(np.abs(shift), 1.0)
    r = np.divide(cov, np.outer(std, std), out=np.zeros_like(cov), where=np.outer(live, live))
    np.clip(r, -1.0, 1.0, out=r)
    np.fill_diagonal(r, 1.0)
    return r


def _labels_with_edge_columns(rng, N, C):
    y = (rng.uniform(size=(N, C)) < rng.uniform(0.02, 0.6, size=C)).astype(np.uint8)
    y[:, 1] = 0                                  # never positive
    y[:, 4] = 1                                  # always positive
    y[:, 6] = y[:, 2]                            # identical columns: 1 (to rounding)
    y[:, 9] = 1 - y[:, 3]                        # complementary columns: -1
    return y


@pytest.mark.parametrize("block_rows", [None, 5])
def test_label_correlation_row_blocks_match_references(monkeypatch, block_rows):
    """Computed in place by row blocks: equal to np.corrcoef on the live columns, 0 / 1 for
    constant columns, exactly symmetric, and for 0/1 labels bit-identical to the whole-matrix
    formula whatever the chunking (integer sums are exact). ``block_rows=5`` (with
    ``_SMALL_BYTES = 0``) takes the path of more than ~1,450 classes: the sums of later chunks
    added by an in-place SYRK on the upper triangle, then mirrored, in blocks of 5 rows."""
    from deepresolve_captum import similarity as S
    if block_rows:
        monkeypatch.setattr(S, "_row_ranges", lambda C, target_bytes=0: [
            (r, min(C, r + block_rows)) for r in range(0, C, block_rows)])
        monkeypatch.setattr(S, "_SMALL_BYTES", 0)
    rng = np.random.default_rng(5)
    y = _labels_with_edge_columns(rng, 240, 23)
    ref = _label_correlation_reference(y)
    live = [j for j in range(23) if j not in (1, 4)]
    for chunk in (1, 7, 100, 16384):
        for labels in (y, y.astype(bool), y.astype(np.float32)):
            r = label_correlation(labels, chunk_rows=chunk)
            assert r.dtype == np.float64 and r.shape == (23, 23)
            np.testing.assert_array_equal(r, ref)            # bit for bit
            np.testing.assert_array_equal(r, r.T)
        np.testing.assert_allclose(r[np.ix_(live, live)], np.corrcoef(y[:, live].T.astype(float)),
                                   atol=1e-12)
        for dead in (1, 4):
            assert r[dead, dead] == 1 and np.all(np.delete(r[dead], dead) == 0)
            assert np.all(np.delete(r[:, dead], dead) == 0)
        assert np.isclose(r[2, 6], 1, rtol=0, atol=1e-15)
        assert np.isclose(r[3, 9], -1, rtol=0, atol=1e-15)
    # real-valued float32 labels off zero (and a constant one): within 1e-12 of np.corrcoef (the
    # sums are no longer exact, so the chunking moves the last bits)
    z = (3.0 + rng.normal(size=(300, 11)) * rng.uniform(0.1, 5, size=11)).astype(np.float32)
    z[:, 5] = 2.5
    keep = z.copy()
    zl = [j for j in range(11) if j != 5]
    for chunk in (1, 13, 16384):
        r = label_correlation(z, chunk_rows=chunk)
        np.testing.assert_array_equal(z, keep)               # the labels are left alone
        np.testing.assert_allclose(r[np.ix_(zl, zl)], np.corrcoef(z[:, zl].T.astype(float)),
                                   atol=1e-12)
        np.testing.assert_allclose(r, _label_correlation_reference(z), atol=1e-12, rtol=0)
        np.testing.assert_array_equal(r, r.T)
        assert r[5, 5] == 1 and np.all(np.delete(r[5], 5) == 0)
    # one chunk: the same float operations as the whole-matrix formula, so bit for bit
    np.testing.assert_array_equal(label_correlation(z), _label_correlation_reference(z))


def test_label_correlation_nan_or_inf_in_a_later_chunk_is_refused():
    y = np.zeros((50, 4))
    y[::2, 0] = 1
    for bad in (np.nan, np.inf):
        z = y.copy()
        z[37, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            label_correlation(z, chunk_rows=10)


def test_weight_cosine_matches_reference_and_leaves_weight_alone():
    rng = np.random.default_rng(6)
    for dtype in (np.float64, np.float32):
        w = rng.normal(size=(9, 5)).astype(dtype)
        w[4] = 0
        w[7] = 3 * w[2]                              # parallel rows: exactly 1 after the clip
        keep = w.copy()
        c = weight_cosine(w)
        np.testing.assert_array_equal(w, keep)
        u = w.astype(np.float64)
        u = u / np.where(np.linalg.norm(u, axis=1) == 0, 1, np.linalg.norm(u, axis=1))[:, None]
        ref = np.clip(u @ u.T, -1, 1)
        ref[4, :] = ref[:, 4] = 0
        np.fill_diagonal(ref, 1.0)
        assert c.dtype == np.float64
        np.testing.assert_array_equal(c, ref)
        assert c[2, 7] <= 1 and np.isclose(c[2, 7], 1)


def _traced_peak(f):
    import tracemalloc
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        res = f()
        return res, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_label_correlation_builds_the_matrix_once():
    """Peak memory (tracemalloc sees numpy's buffers) at 1,500 classes: the C x C result plus a
    chunk and a row block, not 4-5 C x C float64 matrices (the whole-matrix formula)."""
    rng = np.random.default_rng(7)
    C = 1500
    y = (rng.uniform(size=(300, C)) < 0.05).astype(np.uint8)
    label_correlation(y[:20], chunk_rows=10)          # imports scipy's BLAS outside the trace
    r, peak = _traced_peak(lambda: label_correlation(y, chunk_rows=100))
    assert peak < 1.6 * r.nbytes, peak / r.nbytes


def test_weight_cosine_builds_the_matrix_once():
    """The clip is in place: peak ~1 C x C float64 (it was 2) at 1,500 classes."""
    w = np.random.default_rng(8).normal(size=(1500, 64)).astype(np.float32)
    r, peak = _traced_peak(lambda: weight_cosine(w))
    assert peak < 1.3 * r.nbytes, peak / r.nbytes


@pytest.mark.parametrize("scale", [1.0, 1e-11, 1e-12, 1e-20, 1e12])
def test_label_correlation_of_small_or_large_real_columns_matches_numpy(scale):
    """From a review: the constant-column test was absolute (std > 1e-12 * max(|row 0|, 1)),
    so a real-valued column on a scale of 1e-12 or below counted as constant and got 0 where
    numpy gives its correlation. It is now relative to the column's own largest |value|."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=(50, 3))
    y[:, 1] = 2 * y[:, 0] + 0.1 * rng.normal(size=50)
    y[:, 0] *= scale
    np.testing.assert_allclose(label_correlation(y), np.corrcoef(y.T), atol=1e-12)
    np.testing.assert_allclose(label_correlation(y, chunk_rows=7), np.corrcoef(y.T), atol=1e-12)
    flat = np.c_[np.full(50, 3.0 * scale), y[:, 1:]]       # a constant column, on any scale
    r = label_correlation(flat)
    assert r[0, 0] == 1.0 and not r[0, 1:].any() and not r[1:, 0].any()


def test_label_correlation_of_binary_labels_keeps_its_constant_rule():
    y = np.random.default_rng(2).integers(0, 2, size=(40, 4)).astype(np.uint8)
    y[:, 2] = 1
    r = label_correlation(y)
    assert not r[2, [0, 1, 3]].any() and r[2, 2] == 1.0
    keep = [0, 1, 3]
    np.testing.assert_allclose(r[np.ix_(keep, keep)], np.corrcoef(y[:, keep].T), atol=1e-12)


def test_class_similarity_out_of_another_dtype_names_the_dtypes_it_takes():
    """From a docs review: the message said out must have 'float64 (the dtype of x)', while a
    float32 out for float64 OFIVs is documented and works."""
    x = np.random.default_rng(0).standard_normal((4, 5))
    for dtype in (np.int64, np.float16):
        with pytest.raises(ValueError, match=rf"out must be float32 or float64, got {np.dtype(dtype).name}$"):
            class_similarity(x, out=np.zeros((4, 4), dtype))
    for dtype in (np.float32, np.float64):
        out = np.zeros((4, 4), dtype)
        assert class_similarity(x.astype(np.float32), out=out) is out


@pytest.mark.parametrize("native", [True, False])
def test_rows_constant_up_to_rounding_get_0_as_in_label_correlation(monkeypatch, native):
    """A row flat but for one ulp correlated at random (-0.097, 0.354 here) while
    label_correlation gave the same values 0: class_similarity and signed_ofiv_correlation now
    use label_correlation's rule, std <= constant_rtol(dtype) x max |value| (4 machine
    epsilons of the dtype computed in; review r2: 1e-12 missed float32 rounding; review r4: 64
    epsilons zeroed float32 rows with a real spread), on both the native kernel and the
    fallback."""
    from deepresolve_captum import similarity as S

    if not native:
        monkeypatch.setenv("DEEPRESOLVE_NO_NATIVE", "1")
    rng = np.random.default_rng(0)
    x = np.full((3, 8), 0.3)
    x[1, 3] += 5e-17                                  # constant up to one ulp
    x[0], x[2] = rng.normal(size=8), rng.normal(size=8)
    lab = label_correlation(x.T)
    for f in (class_similarity, signed_ofiv_correlation):
        r = f(x)
        assert np.all(r[1, [0, 2]] == 0) and np.all(r[[0, 2], 1] == 0) and r[1, 1] == 1
        np.testing.assert_array_equal(r[1], lab[1])
    np.testing.assert_allclose(signed_ofiv_correlation(x)[0, 2], np.corrcoef(x[[0, 2]])[0, 1],
                               atol=1e-12)
    # the rule is relative: a small but real spread keeps its correlation at any magnitude,
    # and the caller's array is not changed
    y = np.stack([np.linspace(1, 2, 8), np.linspace(1, 2, 8) ** 2, x[1]]) * 1e-9
    y0 = y.copy()
    r = class_similarity(y)
    assert r[0, 1] > 0.9 and np.all(r[2, :2] == 0)
    np.testing.assert_array_equal(y, y0)
    out = np.ones((3, 3))
    assert class_similarity(x, out=out) is out and np.all(out[1, [0, 2]] == 0)
    assert S.constant_rtol() == 4 * np.finfo(np.float64).eps
    # float32 rows are judged by float32's rounding: flat but for one float32 ulp is constant
    x32 = x.astype(np.float32)
    x32[1] = np.float32(0.3)
    x32[1, 3] = np.nextafter(np.float32(0.3), np.float32(1))
    r32 = class_similarity(x32)
    assert r32.dtype == np.float32 and np.all(r32[1, [0, 2]] == 0) and r32[1, 1] == 1
    # a float32 row with a real spread of ~16 epsilons keeps its correlation (review r4)
    base = np.float32(0.5) + np.float32(16 * np.finfo(np.float32).eps) * np.linspace(
        0, 1, 8, dtype=np.float32)
    y32 = np.stack([base, base[::-1], x32[0]]).astype(np.float32)
    assert class_similarity(y32)[0, 1] < -0.9
    # review r5: any layout (numpy's std of a strided row read ~1000 eps), signed rows judged
    # by their own float32 rounding, big-endian float32 labels as float32
    wide = np.full((3, 400), 0.3)
    wide[1, 3] = np.nextafter(0.3, 1.0)
    wide[0], wide[2] = rng.normal(size=400), rng.normal(size=400)
    for f in (class_similarity, signed_ofiv_correlation):
        assert np.all(f(np.asfortranarray(wide))[1, [0, 2]] == 0), f.__name__
    assert np.all(signed_ofiv_correlation(x32)[1, [0, 2]] == 0)
    assert np.all(label_correlation(x32.T.astype(">f4"))[1, [0, 2]] == 0)
    # review r6: float16 labels are exact values computed in float64 (2 positives in 200,000
    # rows are not a constant column), and rows near float64's maximum do not overflow
    lab16 = np.zeros((200_000, 2), np.float16)
    lab16[:2] = 1
    lab16[5, 1] = 1
    assert label_correlation(lab16)[0, 1] == label_correlation(lab16.astype(np.uint8))[0, 1] > 0.8
    huge = np.stack([np.linspace(1, 2, 8), np.linspace(1, 2, 8) ** 2, np.full(8, 0.3)]) * 1e307
    assert class_similarity(huge)[0, 1] > 0.99 and signed_ofiv_correlation(huge)[0, 1] > 0.99
