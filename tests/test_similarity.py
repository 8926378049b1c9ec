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
    with pytest.raises(ValueError, match="class index"):
        class_difference(ofiv, 3, 0)
    with pytest.raises(ValueError, match="class index"):
        class_difference(ofiv, 0, -1)


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
