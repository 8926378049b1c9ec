"""summarize: FIV, weights, IL, GMM/BIC, categories and OFIV as the paper defines them."""
import json

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum import (CATEGORY_NAMES, EnsembleSummary, LayerFeatureOptimizer,
                                class_difference, class_similarity, summarize)
from deepresolve_captum.summary import (ADDITIVE, NONADDITIVE_CONSISTENT, NONADDITIVE_FLIPPING,
                                        feature_importance_vectors, trial_weights)


class XorHead(nn.Module):
    """Channels 0 and 1 form an XOR pair (the score rewards |h0 - h1|: exactly one of them);
    channels 2 and 3 add linearly (+1, -1); channels 4..9 do nothing."""

    def __init__(self, k=10):
        super().__init__()
        self.inp = nn.Identity()
        self.pair = nn.Linear(k, 2)
        self.relu = nn.ReLU()
        self.add = nn.Linear(k, 1, bias=False)
        with torch.no_grad():
            self.pair.weight.zero_()
            self.pair.bias.zero_()
            self.pair.weight[0, :2] = torch.tensor([1.0, -1.0])
            self.pair.weight[1, :2] = torch.tensor([-1.0, 1.0])
            self.add.weight.zero_()
            self.add.weight[0, 2] = 1.0
            self.add.weight[0, 3] = -1.0

    def forward(self, x):
        h = self.inp(x)
        return 2 * self.relu(self.pair(h)).sum(1, keepdim=True) + self.add(h)


def test_xor_pair_is_nonadditive_and_additive_channels_are_not():
    m = XorHead()
    fims, scores = LayerFeatureOptimizer(m, m.inp).attribute(
        torch.rand(8, 10), target=0, n_starts=20, l2=1.0, seed=0, return_scores=True)
    s = summarize(fims, scores, random_state=0)
    assert s.n_components[0] > 1
    assert s.nonadditive[0, :2].all(), s.il[0]
    assert not s.nonadditive[0, 2:].any(), s.il[0]
    # the pair's FIVs have opposite signs in every start, and both signs occur
    assert (np.sign(s.fiv[0, :, 0]) == -np.sign(s.fiv[0, :, 1])).all()
    assert s.sign_flip[0, :2].all()
    assert (s.category[0, :2] == NONADDITIVE_FLIPPING).all()
    assert (s.category[0, 2:] == ADDITIVE).all()
    # positive-only OFIV for the flipping pair: the weighted mean of the positive FIVs (= 1)
    for k in (0, 1):
        f, w = s.fiv[0, :, k], s.weights[0]
        expect = (w * f * (f > 0)).sum() / (w * (f > 0)).sum()
        assert np.isclose(s.ofiv[0, k], expect) and s.ofiv[0, k] > 0.9
    # additive channels: plain weighted mean, +-1/(2 l2) = +-0.5
    assert np.allclose(s.ofiv[0, 2:4], [0.5, -0.5], atol=1e-3)
    assert np.allclose(s.ofiv[0, 4:], 0, atol=1e-4)
    assert CATEGORY_NAMES[s.category[0, 0]].startswith("non-additive, sign")
    assert list(s.channels(0, category=NONADDITIVE_FLIPPING)) in ([0, 1], [1, 0])


def test_consistent_nonadditive_channel_keeps_weighted_mean():
    rng = np.random.default_rng(0)
    C, T, K = 1, 10, 12
    fiv = rng.normal(0, 1e-3, (C, T, K)) + np.linspace(-0.5, 0.5, K)
    fiv[0, :5, 0] = 0.2
    fiv[0, 5:, 0] = 2.0    # high variance, always positive
    fiv[0, :5, 1] = -1.5
    fiv[0, 5:, 1] = 1.5    # high variance, sign flips
    scores = np.linspace(1, 2, T)[None]
    s = summarize(fiv, scores)
    assert s.nonadditive[0, :2].all() and not s.nonadditive[0, 2:].any()
    assert s.category[0, 0] == NONADDITIVE_CONSISTENT
    assert s.category[0, 1] == NONADDITIVE_FLIPPING
    w = s.weights[0]
    assert np.isclose(s.ofiv[0, 0], (w * fiv[0, :, 0]).sum() / w.sum())
    assert np.isclose(s.ofiv[0, 1], 1.5)
    assert np.allclose(s.ofiv[0, 2:], s.mean[0, 2:])


def test_start_with_zero_weight_has_no_say_in_the_sign():
    """A negative score gives the lowest start weight 0: it is out of the mean and the IL, so it
    must not make a channel sign-flipping, nor alone supply the positive FIVs its OFIV averages
    (before: OFIV +3.0, that start's FIV, against a weighted mean of -0.86, ranked first)."""
    rng = np.random.default_rng(0)
    T, K = 10, 12
    fiv = rng.normal(0, 0.05, (1, T, K))
    fiv[0, :, 0] = [-0.1, -2.0, -0.2, -1.8, -0.1, -2.1, -0.3, -1.9, -0.2, 3.0]
    fiv[0, :, 1] = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0, 1.1, 0.9]
    scores = np.array([[2.0, 1.5, 2.2, 1.4, 2.1, 1.6, 2.0, 1.5, 2.1, -0.5]])
    s = summarize(fiv, scores)
    assert s.weights[0, -1] == 0 and (s.weights[0, :-1] > 0).all()
    assert s.nonadditive[0, 0]
    assert not s.sign_flip[0, 0] and s.category[0, 0] == NONADDITIVE_CONSISTENT
    assert np.isclose(s.ofiv[0, 0], s.mean[0, 0]) and s.ofiv[0, 0] < 0
    assert s.channels(0)[-1] == 0           # the most negative OFIV, not the first
    # a weighted start with a positive FIV still makes it flip, with the weighted positive mean
    fiv[0, 0, 0] = 0.4
    s = summarize(fiv, scores)
    assert s.sign_flip[0, 0] and s.category[0, 0] == NONADDITIVE_FLIPPING
    assert np.isclose(s.ofiv[0, 0], 0.4)


def test_identical_starts_give_one_component():
    m = nn.Sequential(nn.Identity(), nn.Linear(6, 2))
    fims, scores = LayerFeatureOptimizer(m, m[0]).attribute(
        torch.randn(3, 6), target=None, n_starts=8, l2=0.5, seed=1, return_scores=True)
    s = summarize(fims, scores)
    assert (s.n_components == 1).all() and not s.nonadditive.any()
    assert np.allclose(s.ofiv, m[1].weight.detach().numpy(), atol=1e-4)


def test_fiv_is_spatial_mean_and_flat_layer_is_its_own():
    fims = torch.randn(2, 3, 4, 5, 6)
    assert np.allclose(feature_importance_vectors(fims), fims.mean(dim=(3, 4)).numpy(), atol=1e-6)
    flat = np.random.default_rng(0).normal(size=(2, 3, 4))
    assert np.array_equal(feature_importance_vectors(flat), flat)


def test_trial_weights_rule():
    s = np.array([[1.0, 2.0, 3.0],      # all positive: kept as they are
                  [-1.0, 0.0, 2.0],     # some negative: shifted by the minimum
                  [5.0, 5.0, 5.0],      # all equal: uniform
                  [0.0, 0.0, 0.0],      # all zero: uniform
                  [-2.0, -2.0, -2.0]])  # all equal negative: uniform
    w = trial_weights(s)
    assert np.allclose(w[0], [1, 2, 3])
    assert np.allclose(w[1], [0, 1, 3])
    assert np.allclose(w[2:], 1)



def test_scores_near_the_float64_limit_keep_their_ratios():
    """max - min of scores near 1e308 overflowed (numpy warnings, then 'weights contain NaN or
    inf'). Only ratios of weights matter, so such rows give the weights of the scaled scores."""
    f = np.random.default_rng(0).standard_normal((2, 5, 8))
    s = np.array([[1.7e308, -1.7e308, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = trial_weights(s)
        got = summarize(f, s)
    assert np.all(np.isfinite(w)) and w[0, 1] == 0 and np.isclose(w[0, 0] / w[0, 2], 2.0)
    assert np.array_equal(w[1], s[1])  # ordinary rows untouched, bit for bit
    ref = summarize(f, s / 1e300)
    assert np.allclose(got.ofiv, ref.ofiv) and np.allclose(got.il, ref.il)

def test_il_is_weighted_variance():
    rng = np.random.default_rng(3)
    fiv = rng.normal(size=(3, 7, 5))
    scores = rng.uniform(0.1, 2.0, size=(3, 7))
    s = summarize(fiv, scores)
    w = scores / scores.sum(1, keepdims=True)
    mean = (w[:, :, None] * fiv).sum(1)
    var = (w[:, :, None] * (fiv - mean[:, None]) ** 2).sum(1)
    assert np.allclose(s.il, var) and np.allclose(s.mean, mean)
    assert s.bic.shape == (3, 3)
    for c in range(3):
        assert s.n_components[c] == np.nanargmin(s.bic[c]) + 1


def test_summary_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(2, 4, 6, 3)), rng.uniform(size=(2, 4)), random_state=5)
    p = tmp_path / "s.npz"
    s.save(p)
    r = EnsembleSummary.load(p)
    assert r.settings == s.settings
    for k in ("fiv", "il", "ofiv", "category", "nonadditive", "n_components", "bic"):
        assert np.array_equal(getattr(r, k), getattr(s, k), equal_nan=True)
    # compressed: the same summary back, in a smaller file (FIVs of repeated starts compress)
    z = summarize(np.repeat(rng.normal(size=(2, 1, 64)), 10, axis=1), np.ones((2, 10)))
    small, big = z.save(tmp_path / "z", compressed=True), z.save(tmp_path / "zz")
    assert small.stat().st_size < big.stat().st_size
    back = EnsembleSummary.load(small)
    assert all(np.array_equal(getattr(back, k), getattr(z, k), equal_nan=True)
               for k in ("fiv", "il", "ofiv", "category", "weights"))
    # a NaN setting: the reloaded summary still equals the saved one (it did not)
    s.settings["lam"] = float("nan")
    assert EnsembleSummary.load(s.save(tmp_path / "nan")) == s


def test_summary_repr_shortens_long_settings():
    """A zoo of 300 models printed all 300 names in the repr (2,800 characters)."""
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(300, 3, 4)), rng.uniform(size=(300, 3)))
    s.settings["models"] = [f"model_{i}" for i in range(300)]
    text = repr(s)
    assert "model_5'" in text and "model_6'" not in text and "300 in all" in text
    assert len(text) < 600 and len(s.settings["models"]) == 300


def test_seeded_gmm_is_reproducible():
    rng = np.random.default_rng(1)
    fiv, sc = rng.normal(size=(4, 10, 30)), rng.uniform(size=(4, 10))
    a, b = summarize(fiv, sc, random_state=2), summarize(fiv, sc, random_state=2)
    assert np.array_equal(a.n_components, b.n_components)
    assert np.array_equal(a.nonadditive, b.nonadditive)


@pytest.mark.parametrize("fims,scores,exc,match", [
    (np.zeros((2, 3, 4)), np.zeros((2, 4)), ValueError, "disagree"),
    (np.zeros((2, 3, 4)), np.zeros((3,)), ValueError, "disagree"),
    (np.full((1, 3, 4), np.nan), np.zeros((1, 3)), ValueError, "NaN"),
    (np.zeros((1, 3, 4)), np.array([[0, np.inf, 1]]), ValueError, "NaN or inf"),
    (np.zeros((1, 3, 2)), np.zeros((1, 3)), ValueError, "fewer than the 3"),
    (np.zeros((3, 4)), np.zeros((3, 4)), ValueError, "n_targets, n_starts, K"),
    (np.array([[["a"]]]), np.zeros((1, 1)), TypeError, "real-valued"),
])
def test_summarize_bad_input(fims, scores, exc, match):
    with pytest.raises(exc, match=match):
        summarize(fims, scores)


def test_fewer_components_allowed_for_small_layers():
    s = summarize(np.random.default_rng(0).normal(size=(1, 5, 2)), np.ones((1, 5)),
                  max_components=2)
    assert s.n_components[0] in (1, 2)


def test_class_similarity_ranks_sharing_classes_above_unrelated():
    """Classes 0 and 1 share channels 0-2 (plus one own channel each); class 2 uses 5-7 only.
    Each class also has strong negative 'elimination' channels that must not confound it."""
    k = 10
    W = torch.zeros(3, k)
    W[0, [0, 1, 2, 3]] = torch.tensor([1.0, 0.8, 0.6, 0.9])
    W[1, [0, 1, 2, 4]] = torch.tensor([0.9, 0.7, 0.8, 1.0])
    W[2, [5, 6, 7]] = torch.tensor([1.0, 0.9, 0.8])
    W[0, [5, 6]] = -2.0
    W[1, [5, 7]] = -2.0
    W[2, [0, 1, 2]] = -2.0
    m = nn.Sequential(nn.Identity(), nn.Linear(k, 3))
    with torch.no_grad():
        m[1].weight.copy_(W)
        m[1].bias.zero_()
    fims, scores = LayerFeatureOptimizer(m, m[0]).attribute(
        torch.randn(4, k), target=None, n_starts=4, l2=1.0, seed=0, return_scores=True)
    s = summarize(fims, scores)
    sim = class_similarity(s.ofiv)
    assert sim.shape == (3, 3) and np.allclose(np.diag(sim), 1) and np.allclose(sim, sim.T)
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
    d = class_difference(s.ofiv, 0, 1)
    assert d[3] > 0.4 and d[4] < -0.4


def test_spread_between_nearby_optima_is_one_component():
    """Every start reached one mode: six channels vary 15% across starts, the rest 1%, no sign
    flips (as in our set II models). At the old resolution (1e-6) BIC reads a mixture into
    that; the default must not, while a channel whose FIV flips sign still separates."""
    rng = np.random.default_rng(7)
    T, K = 10, 32
    base = np.abs(rng.normal(0.05, 0.02, K)) * rng.choice([-1, 1], K)
    rel = np.full(K, 0.01)
    rel[:6] = 0.15
    fiv = base * (1 + rel * rng.standard_normal((T, K)))
    scores = rng.uniform(1, 2, (1, T))
    assert summarize(fiv[None], scores, reg_covar=1e-6).n_components[0] > 1
    s = summarize(fiv[None], scores)
    assert s.n_components[0] == 1 and not s.nonadditive.any()
    fiv[:5, 20], fiv[5:, 20] = 0.1, -0.1                                       # a sign flip
    s = summarize(fiv[None], scores)
    assert s.n_components[0] > 1 and s.nonadditive[0, 20] and s.nonadditive[0].sum() <= 3
    with pytest.raises(ValueError, match="reg_covar"):
        summarize(fiv[None], scores, reg_covar=0)


def test_summary_save_numpy_settings_and_no_suffix(tmp_path):
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(2, 4, 6)), rng.uniform(size=(2, 4)),
                  random_state=np.arange(5)[3])                      # a numpy integer
    written = s.save(tmp_path / "s")                                 # numpy appends .npz
    assert written == tmp_path / "s.npz" and written.exists()
    r = EnsembleSummary.load(tmp_path / "s")
    assert r.settings["random_state"] == 3 and r.settings == json.loads(json.dumps(r.settings))
    s.settings["rng"] = np.random.RandomState(0)                     # not JSON: kept as its repr
    r = EnsembleSummary.load(s.save(tmp_path / "t.npz"))
    assert r.settings["rng"].startswith("RandomState") and " at 0x" not in r.settings["rng"]
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved EnsembleSummary"):
        EnsembleSummary.load(tmp_path / "other.npz")


def test_summary_save_load_file_objects_and_foreign_files(tmp_path):
    import io
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(2, 4, 6)), rng.uniform(size=(2, 4)))
    buf = io.BytesIO()
    assert s.save(buf) is buf
    buf.seek(0)
    assert EnsembleSummary.load(buf) == s
    arrays = dict(np.load(s.save(tmp_path / "s")))

    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "text.npz").write_text("not numpy")
    np.savez(tmp_path / "shape.npz", **{**arrays, "ofiv": np.zeros(7)})
    np.savez(tmp_path / "settings.npz", **{**arrays, "settings": np.array("hello")})
    np.savez(tmp_path / "dtype.npz", **{**arrays, "category": arrays["category"] + 0.5})
    np.savez(tmp_path / "values.npz", **{**arrays, "category": arrays["category"] + 3})
    for name, why in [("one.npy", "one array"), ("text.npz", "neither an .npz nor an .npy"),
                      ("shape.npz", "consistent shapes.*ofiv"), ("settings.npz", "not a dict"),
                      ("dtype.npz", "'category': 'float64'"), ("values.npz", "other than 0, 1, 2")]:
        with pytest.raises(ValueError, match=f"not a saved EnsembleSummary.*{why}"):
            EnsembleSummary.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        EnsembleSummary.load(tmp_path / "absent.npz")

    np.savez(tmp_path / "newer.npz", future_field=np.ones(2), **arrays)
    with pytest.warns(UserWarning, match="future_field"):
        assert EnsembleSummary.load(tmp_path / "newer.npz") == s


def test_summary_save_is_whole_or_nothing_and_a_truncated_file_is_a_valueerror(tmp_path, monkeypatch):
    """What a kill during save would leave: a truncated zip raised zipfile.BadZipFile, not the
    documented ValueError naming the file; and save wrote straight into the target."""
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(3, 4, 6)), rng.uniform(size=(3, 4)))
    path = s.save(tmp_path / "s.npz")
    data = path.read_bytes()
    for frac in (0.05, 0.5, 0.9, 0.999):
        cut = tmp_path / f"cut{frac}.npz"
        cut.write_bytes(data[:int(len(data) * frac)])
        with pytest.raises(ValueError, match=f"{cut.name} is not a saved EnsembleSummary"):
            EnsembleSummary.load(cut)
    old = path.read_bytes()
    real = np.savez

    def dies_half_way(file, **arrays):
        real(file, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies_half_way)
    s2 = summarize(rng.normal(size=(3, 4, 6)), rng.uniform(size=(3, 4)))
    with pytest.raises(KeyboardInterrupt):
        s2.save(path)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir() if
                                               p.name.startswith(".")) == []
    monkeypatch.setattr(np, "savez", real)
    assert EnsembleSummary.load(s2.save(path)) == s2


def test_summary_save_writes_through_a_symlink_and_keeps_permissions(tmp_path):
    import os
    import stat
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(2, 4, 6)), rng.uniform(size=(2, 4)))
    real = s.save(tmp_path / "real.npz")
    os.chmod(real, 0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    s2 = summarize(rng.normal(size=(2, 4, 6)), rng.uniform(size=(2, 4)))
    s2.save(link)
    assert link.is_symlink() and EnsembleSummary.load(real) == s2      # the link's target
    assert stat.S_IMODE(real.stat().st_mode) == 0o640                  # not reset to 0o644
    with pytest.raises(FileNotFoundError, match="absent_folder"):
        s.save(tmp_path / "absent_folder" / "s.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]


def test_channels_checks_order_and_category():
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(1, 6, 8)), rng.uniform(size=(1, 6)))
    assert list(s.channels(0, category="additive")) == list(s.channels(0, category=ADDITIVE))
    both = set(s.channels(0, category="nonadditive"))
    assert both == set(np.flatnonzero(s.category[0] > 0))
    assert list(s.channels(0, order="il")) == list(np.argsort(-s.il[0], kind="stable"))
    with pytest.raises(ValueError, match="order"):
        s.channels(0, order="OFIV")
    with pytest.raises(ValueError, match="category"):
        s.channels(0, category="additiv")
    with pytest.raises(ValueError, match="category"):
        s.channels(0, category=3)


def test_one_start_warns_that_nothing_can_be_non_additive():
    rng = np.random.default_rng(0)
    fiv = rng.normal(size=(2, 1, 6))
    with pytest.warns(UserWarning, match="one start per target") as rec:
        s = summarize(fiv, rng.uniform(size=(2, 1)))
    assert rec[0].filename == __file__
    assert not s.nonadditive.any() and np.allclose(s.ofiv, fiv[:, 0])


def test_one_weighted_start_warns_like_one_start():
    """T = 2 with a negative score: the shift by the minimum leaves one start weighted, so the
    IL is 0, as with T = 1. Warned for that target only; numpy scalars pass as reg_covar."""
    rng = np.random.default_rng(0)
    fiv = rng.normal(size=(3, 2, 6))
    scores = np.array([[1.0, -1.0], [2.0, 3.0], [0.5, 0.5]])
    with pytest.warns(UserWarning, match=r"target\(s\) \[0\].*one start with a non-zero weight"):
        s = summarize(fiv, scores, reg_covar=np.float32(1e-3))
    assert np.allclose(s.il[0], 0) and np.allclose(s.ofiv[0], fiv[0, 0])
    assert (s.il[1:] > 0).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize(fiv, np.abs(scores) + 1)


def test_summaries_compare_equal_and_print_short(tmp_path):
    rng = np.random.default_rng(1)
    s = summarize(rng.normal(size=(30, 5, 8)), rng.uniform(size=(30, 5)), random_state=0)
    back = EnsembleSummary.load(s.save(tmp_path / "s"))
    assert back == s and not (back != s)
    other = EnsembleSummary.load(tmp_path / "s")
    other.ofiv[0, 0] += 1e-9
    assert other != s and s != "a string"
    text = repr(s)
    assert len(text) < 400 and "30 targets x 5 starts x 8 channels" in text


def test_summarize_accepts_bfloat16_fims():
    """FIMs from a bfloat16 model: summarize upcasts them (numpy has no bfloat16) and gives what
    the same values in float32 give."""
    import torch

    g = torch.Generator().manual_seed(0)
    fims = torch.randn(2, 5, 4, 3, generator=g).to(torch.bfloat16)
    scores = torch.rand(2, 5, generator=g).to(torch.bfloat16)
    a = summarize(fims, scores, random_state=0)
    b = summarize(fims.float(), scores.float(), random_state=0)
    np.testing.assert_array_equal(a.ofiv, b.ofiv)
    np.testing.assert_array_equal(a.il, b.il)


def test_summarize_empty_and_channels_target_are_named():
    fims = np.random.default_rng(0).standard_normal((1, 4, 5, 3))
    with pytest.raises(ValueError, match="fims is empty"):
        summarize(fims[:0], np.ones((0, 4)))
    s = summarize(fims, np.ones((1, 4)), random_state=0)
    assert len(s.channels(0)) == 5
    with pytest.raises(ValueError, match=r"target must be an int in \[0, 1\)"):
        s.channels(3)


@pytest.mark.slow   # joblib's workers take ~5 s to start on 2 cores
def test_random_state_object_gives_one_seed_whatever_n_jobs_and_other_targets():
    # A RandomState used to be handed to every target's GMM: advanced from target to target when
    # run serially, copied into each joblib task with n_jobs > 1, so n_components changed with
    # n_jobs and with the targets summarised before a given one.
    rng = np.random.default_rng(3)
    fims, scores = rng.normal(size=(16, 6, 10)), rng.normal(size=(16, 6))
    fims[:, :3, :4] += 3
    a = summarize(fims, scores, random_state=np.random.RandomState(0))
    assert a == summarize(fims, scores, random_state=np.random.RandomState(0), n_jobs=2)
    tail = summarize(fims[8:], scores[8:], random_state=np.random.RandomState(0))
    for name in ("bic", "n_components", "nonadditive", "ofiv"):
        np.testing.assert_array_equal(getattr(a, name)[8:], getattr(tail, name))
    # the seed drawn is the int recorded: passing it repeats the summary (also after a save)
    seed = a.settings["random_state"]
    assert type(seed) is int and summarize(fims, scores, random_state=seed) == a
    g = summarize(fims, scores, random_state=np.random.default_rng(1))
    assert g == summarize(fims, scores, random_state=g.settings["random_state"])
    np.random.seed(5)
    n = summarize(fims, scores, random_state=None)
    assert n == summarize(fims, scores, random_state=n.settings["random_state"])
    with pytest.raises(TypeError, match="random_state must be an int"):
        summarize(fims, scores, random_state="0")
    with pytest.raises(ValueError, match=r"random_state must be an int in \[0, 2\*\*32 - 1\]"):
        summarize(fims, scores, random_state=-1)


def test_scores_equal_to_rounding_weigh_every_start_the_same():
    """Two XOR modes at the same negative score, one of them a float32 step higher (what
    another thread count gives): the weights, IL and categories must not jump."""
    from deepresolve_captum.summary import summarize, trial_weights
    base = np.float32(-0.5)
    tied = np.full((1, 10), base, dtype=np.float32)
    nudged = tied.copy()
    nudged[0, 5:] = np.nextafter(base, np.float32(1))
    np.testing.assert_array_equal(trial_weights(nudged), trial_weights(tied))
    assert (trial_weights(nudged) == 1).all()
    # a real difference still follows the paper's shift by the minimum
    np.testing.assert_allclose(trial_weights(np.array([[-0.5, -0.4]])), [[0.0, 0.1]], atol=1e-12)
    fiv = np.zeros((1, 10, 4), dtype=np.float32)
    fiv[0, :5, 0], fiv[0, 5:, 0] = 1.0, -1.0          # channel 0 flips with the mode
    fiv[0, :5, 1], fiv[0, 5:, 1] = -1.0, 1.0
    fiv[0, :, 2:] = 0.3
    a, b = summarize(fiv, tied), summarize(fiv, nudged)
    np.testing.assert_array_equal(a.category, b.category)
    np.testing.assert_allclose(a.ofiv, b.ofiv, atol=1e-6)


def test_one_weighted_start_warning_names_the_targets_given():
    """From a review: ``deepresolve zoo`` warned about 'target(s) [220, 261] (positions in
    fims)', numbers a command-line user cannot map to models. ``target_names`` names them; the
    default message is unchanged; a list of the wrong length is refused before any fit."""
    rng = np.random.default_rng(0)
    fiv = rng.normal(size=(3, 2, 6))
    scores = np.array([[1.0, -1.0], [2.0, 3.0], [0.5, 0.5]])
    with pytest.warns(UserWarning, match=r"target\(s\) \['tfA'\] have one start") as rec:
        named = summarize(fiv, scores, target_names=("tfA", "tfB", "tfC"))
    assert "positions in fims" not in str(rec[0].message) and rec[0].filename == __file__
    with pytest.warns(UserWarning, match=r"target\(s\) \[0\] \(positions in fims\) have one"):
        plain = summarize(fiv, scores)
    # the names are stored (not in settings); the rest is the same summary
    assert named.target_names == ["tfA", "tfB", "tfC"] and plain.target_names is None
    assert named != plain and "target_names" not in named.settings
    plain.target_names = named.target_names
    assert named == plain
    for bad in (["tfA", "tfB"], "abc", ["tfA", "tfB", 3], (n for n in ("tfA", "tfB"))):
        with pytest.raises(ValueError, match="target_names must be a sequence of 3 strings"):
            summarize(fiv, scores, target_names=bad)
    # a numpy string array (names from a DataFrame column) prints as plain strings; an iterator
    # is read once
    for names in (np.array(["tfA", "tfB", "tfC"]), iter(["tfA", "tfB", "tfC"])):
        with pytest.warns(UserWarning, match=r"target\(s\) \['tfA'\] have one start"):
            summarize(fiv, scores, target_names=names)


def _planted_il_row():
    """An IL row (a review's reproducer, seed 13) on which a broad lowest-mean GMM component
    also claimed the three highest-IL channels (2.05-2.17) while 48 channels at 1.67-1.82 were
    non-additive."""
    rng = np.random.default_rng(13)
    K = int(rng.integers(16, 64))
    n_tight = int(rng.integers(4, K - 4))
    c = rng.uniform(0.2, 2.0)
    return np.abs(np.concatenate([c + rng.uniform(0.001, 0.05) * rng.standard_normal(n_tight),
                                  rng.uniform(0, rng.uniform(1, 4), K - n_tight)]))


def test_nonadditive_split_is_a_threshold_in_il():
    il = _planted_il_row()
    fiv = np.stack([np.sqrt(il), -np.sqrt(il)])[None]   # 2 equal starts at +-sqrt(IL): IL exact
    s = summarize(fiv, np.ones((1, 2)), random_state=0)
    na = s.nonadditive[0]
    assert s.n_components[0] > 1 and na.any() and (~na).any()
    # every non-additive channel has a higher IL than every additive one
    assert s.il[0, na].min() > s.il[0, ~na].max()
    assert na[np.argsort(il)[-3:]].all()                 # the three highest ILs (were additive)
    assert np.array_equal(s.category[0] > 0, na)


def _flipping_ensemble(C, T, K, seed=0):
    """float32 FIVs whose channels 0-1 flip sign from start to start (an XOR pair per target)."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((C, T, K)).astype(np.float32)
    f[:, :, :2] *= 4 * rng.choice([-1, 1], size=(C, T, 1)).astype(np.float32)
    return f, rng.uniform(-1, 2, (C, T))


def test_flipping_ofiv_and_target_blocks_give_the_bits_of_the_whole_array_formulas(monkeypatch):
    """The OFIV of sign-flipping channels is computed on those cells only and sign_flip / the
    numpy moments a block of targets at a time (memory, review 13 #2): the same bits as the
    (C, T, K) formulas they replace."""
    from deepresolve_captum import _stats
    C, T, K = 40, 10, 16
    f, s = _flipping_ensemble(C, T, K)
    monkeypatch.setattr(_stats, "_BLOCK_VALUES", 3 * T * K)   # 14 blocks of <= 3
    S = summarize(f, s)
    flip = S.category == NONADDITIVE_FLIPPING
    assert flip.sum() >= C and (S.weights == 0).any()
    w = S.weights                                                 # the formulas of 8d34e56
    weighted = (w > 0)[:, :, None]
    pos = (f > 0) & weighted
    np.testing.assert_array_equal(S.sign_flip, pos.any(axis=1) & ((f < 0) & weighted).any(axis=1))
    wpos = w[:, :, None] * pos
    num, den = (wpos * f).sum(axis=1), wpos.sum(axis=1)
    np.testing.assert_array_equal(S.ofiv, np.where(flip, num / np.where(den > 0, den, 1), S.mean))
    with _stats.native_disabled():
        F = summarize(f, s)
        mean, il = _stats.weighted_moments(f, w)
    np.testing.assert_array_equal(F.mean, mean.astype(np.float64))
    np.testing.assert_array_equal(F.il, il.astype(np.float64))
    np.testing.assert_allclose(F.ofiv, S.ofiv, rtol=1e-6, atol=1e-7)


def test_summarize_holds_no_float64_copies_of_the_fivs(monkeypatch):
    """Peak memory of summarize beside the FIVs (GMMs stubbed: channels 0-1 non-additive in every
    target, as an XOR pair gives). Before: float64 (C, T, K) products for the flipping OFIV
    (~5x the float32 FIVs) and, in the numpy fallback, the moments' temporaries (~6x)."""
    import tracemalloc

    import deepresolve_captum.summary as sm
    from deepresolve_captum import _stats
    C, T, K = 64, 20, 256
    f, s = _flipping_ensemble(C, T, K)
    s = np.abs(s) + 1

    def two_nonadditive(il, max_components, *args):
        na = np.zeros(il.shape[1], dtype=bool)
        na[:2] = True
        return [(np.full(max_components, np.nan), 2, na) for _ in range(il.shape[0])]

    monkeypatch.setattr(sm, "_fit_all", two_nonadditive)
    monkeypatch.setattr(_stats, "_BLOCK_VALUES", 8 * T * K)
    for native in (True, False):
        with _stats.native_disabled() if not native else warnings.catch_warnings():
            tracemalloc.start()
            S = summarize(f, s)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert (S.category[:, :2] == NONADDITIVE_FLIPPING).all()
        # room for one copy of the FIVs (summary.fiv) and the (C, K) results
        assert peak < 2.5 * f.nbytes, (native, peak / f.nbytes)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_summary_fiv_is_not_a_view_of_the_callers_fims(kind):
    """A flat layer's (C, T, K) FIMs are their own FIVs: summary.fiv was the caller's buffer, so
    reusing it changed the summary (and a later save) behind its mean / IL / OFIV."""
    a = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    x = torch.from_numpy(a.copy()) if kind == "torch" else a.copy()
    s = summarize(x, np.ones((2, 5)))
    x[...] = 0
    np.testing.assert_array_equal(s.fiv, a)
    s.fiv[...] = 1
    assert not (np.asarray(x) != 0).any()


def test_covariance_type_is_checked_at_the_door():
    """An unknown covariance_type was only refused by scikit-learn inside the first fit: with
    all-equal IL (no fit) it was accepted silently and stored in settings."""
    fiv = np.ones((1, 3, 4))                                  # IL all 0: no GMM is fitted
    for bad in ("bogus", "Full", None, 3):
        with pytest.raises(ValueError, match=r"covariance_type must be one of \['full', 'diag'"):
            summarize(fiv, np.ones((1, 3)), covariance_type=bad)
    tied = summarize(fiv, np.ones((1, 3)), covariance_type="tied")
    assert tied.settings["covariance_type"] == "tied"


def test_one_weighted_start_warning_says_why_by_case():
    """Scores 0, 0, 3 are the weights as they are (no shift): the warning blamed a negative score
    and the shift by the minimum. Each case now says its own cause, one warning per case."""
    fiv = np.random.default_rng(0).standard_normal((2, 3, 8))
    scores = np.array([[0.0, 0.0, 3.0], [-1.0, -1.0, 2.0]])
    with pytest.warns(UserWarning) as rec:
        s = summarize(fiv, scores)
    msgs = [str(r.message) for r in rec if "one start with a non-zero weight" in str(r.message)]
    assert len(msgs) == 2
    shifted = next(m for m in msgs if m.startswith("target(s) [1] "))
    raw = next(m for m in msgs if m.startswith("target(s) [0] "))
    assert "shifted by their minimum" in shifted and "run more starts" in shifted
    assert "no score is negative" in raw and "scored exactly 0" in raw
    assert "a score is negative" not in raw and "shifted" not in raw
    assert "run more starts" not in raw
    np.testing.assert_array_equal(s.weights, [[0, 0, 3], [0, 0, 3]])


def test_weights_paper_uniform_or_given():
    """The paper's weights move with the logit's constant offset (a user report: one XOR model
    lost half its non-additive channels when its bias was lowered). The default stays the
    paper's; weights="uniform" does not depend on the scores; an array is used as given."""
    f, s = _flipping_ensemble(6, 10, 12, seed=1)
    s = np.abs(s) + 1
    paper = summarize(f, s)
    assert paper.settings["weights"] == "paper"
    assert paper == summarize(f, s, weights="paper")
    np.testing.assert_array_equal(paper.weights, trial_weights(s))
    moved = summarize(f, s - 2)                              # some scores now negative
    assert not np.array_equal(moved.weights, paper.weights)
    uni = summarize(f, s, weights="uniform")
    assert uni.settings["weights"] == "uniform" and (uni.weights == 1).all()
    np.testing.assert_allclose(uni.effective_starts, 10)
    for c in (-2.0, 50.0):
        other = summarize(f, s + c, weights="uniform")
        for name in ("weights", "mean", "il", "nonadditive", "category", "ofiv"):
            np.testing.assert_array_equal(getattr(other, name), getattr(uni, name))
    w = np.random.default_rng(2).uniform(0, 1, s.shape)
    w[0] = [0] * 9 + [1]                                     # one start carries target 0
    with pytest.warns(UserWarning, match=r"target\(s\) \[0\] .*the weights given are 0 for every"):
        given = summarize(f, s, weights=torch.from_numpy(w))
    assert given.settings["weights"] == "given" and given.weights is not w
    np.testing.assert_array_equal(given.weights, w)
    np.testing.assert_array_equal(given.ofiv[0], f[0, -1])
    assert given.effective_starts[0] == 1
    for bad, match in [("Paper", "weights must be 'paper', 'uniform'"), (None, "weights must be"),
                       (w[:, :5], "shape of scores"), (-w, "must be >= 0"),
                       (np.where(w > 0.5, np.nan, w), "NaN"),
                       (np.zeros_like(w), r"target\(s\) \[0, 1, 2, 3, 4, 5\] are all 0"),
                       (np.full_like(w, 1e308), "beyond the float64 range")]:
        with pytest.raises(ValueError, match=match):
            summarize(f, s, weights=bad)
    with pytest.raises(TypeError, match="weights must be a real-valued"):
        summarize(f, s, weights=w > 0.5)


def test_summary_stores_its_targets_and_names_through_save_and_load(tmp_path):
    """A summary of attribute(target=[3, 17, 500]) did not know its rows were outputs 3, 17 and
    500: plots said "target 0, 1, 2" and save() lost the mapping (user report c.md #2)."""
    import io
    rng = np.random.default_rng(0)
    fiv, scores = rng.normal(size=(3, 4, 6)), rng.uniform(1, 2, size=(3, 4))
    s = summarize(fiv, scores, targets=np.array([3, 17, 500]))
    assert s.targets == [3, 17, 500] and all(type(t) is int for t in s.targets)
    assert s.target_names is None
    assert s.target_labels() == ["output 3", "output 17", "output 500"]
    back = EnsembleSummary.load(s.save(tmp_path / "s"))
    assert back == s and back.targets == [3, 17, 500]
    assert back != summarize(fiv, scores) and summarize(fiv, scores).target_labels()[2] == "target 2"
    with pytest.raises(ValueError, match="output 500 is row 2"):
        s.channels(500)
    # index tuples (a multi-dimensional output) and names, from a tensor; in a file object
    t = summarize(fiv, scores, targets=torch.tensor([[0, 3], [1, 4], [2, 5]]),
                  target_names=["CTCF", "GATA1", "JUN"])
    assert t.targets == [(0, 3), (1, 4), (2, 5)] and t.target_labels() == ["CTCF", "GATA1", "JUN"]
    buf = io.BytesIO()
    t.save(buf)
    buf.seek(0)
    back = EnsembleSummary.load(buf)
    assert back == t and back.targets == [(0, 3), (1, 4), (2, 5)]
    assert back.target_names == ["CTCF", "GATA1", "JUN"]
    assert summarize(fiv, scores, targets=[(0, 3), (1, 4), (2, 5)]).target_labels()[0] == \
        "output (0, 3)"
    # files without them (earlier versions) load with None; a bad entry is refused
    plain = summarize(fiv, scores)
    arrays = dict(np.load(plain.save(tmp_path / "plain")))
    assert "targets" not in arrays and "target_names" not in arrays
    assert EnsembleSummary.load(tmp_path / "plain.npz").targets is None
    np.savez(tmp_path / "bad.npz", **{**arrays, "targets": np.array([0.5, 1.5, 2.5])})
    with pytest.raises(ValueError, match="not a saved EnsembleSummary: its targets entry"):
        EnsembleSummary.load(tmp_path / "bad.npz")
    for bad in ([3, 17], [3, 17, (1, 2)], [3, 17, True], ["a", "b", "c"], [3.0, 17.0, 500.0],
                [(1, 2), (1, 2, 3), (4, 5)], 3, "abc"):
        with pytest.raises(ValueError, match="targets must list the model output of each of the 3"):
            summarize(fiv, scores, targets=bad)
    # warnings name the outputs (the names first, when given)
    two = np.array([[1.0, -1.0], [2.0, 3.0], [0.5, 0.5]])
    with pytest.warns(UserWarning, match=r"target\(s\) \[3\] \(model outputs\) have one start"):
        summarize(fiv[:, :2], two, targets=[3, 17, 500])


def test_summarize_without_scores_says_where_to_get_them():
    """summarize(fims) raised Python's bare 'missing 1 required positional argument: scores'
    after a Captum-style fims = opt.attribute(...) (user report c.md #3)."""
    fiv = np.random.default_rng(0).normal(size=(2, 3, 4))
    for call in (lambda: summarize(fiv), lambda: summarize(fiv, None, random_state=0),
                 lambda: summarize(fiv, scores=None)):
        with pytest.raises(TypeError, match=r"return_scores=True.*opt\.diagnostics\.scores"):
            call()


def test_summaries_compare_equal_with_targets_set_directly_to_arrays():
    """review r1 #6: EnsembleSummary is a dataclass, and targets / target_names set directly to
    numpy arrays (dataclasses.replace, a hand-built summary) made == raise "the truth value of an
    array ... is ambiguous"; they compare by value, as save and load would keep them."""
    import dataclasses
    rng = np.random.default_rng(0)
    s = summarize(rng.normal(size=(3, 4, 6)), rng.uniform(1, 2, size=(3, 4)),
                  targets=[3, 17, 500], target_names=["a", "b", "c"])
    same = dataclasses.replace(s, targets=np.array([3, 17, 500]),
                               target_names=np.array(["a", "b", "c"]))
    assert same == s and s == same and not (same != s)
    assert dataclasses.replace(s, targets=np.array([3, 17, 501])) != s
    assert dataclasses.replace(s, target_names=np.array(["a", "b", "x"])) != s
    assert dataclasses.replace(s, targets=None) != s
    tuples = dataclasses.replace(s, targets=[(0, 3), (1, 4), (2, 5)])
    assert dataclasses.replace(s, targets=np.array([[0, 3], [1, 4], [2, 5]])) == tuples


def test_summarize_copies_the_fivs_only_when_they_could_be_the_callers(monkeypatch):
    """review r1 #7: (C, T, K) FIVs given as a float16 / bfloat16 tensor (or one on a GPU) are
    already converted into an array of summarize's own, which was copied once more: a second
    full copy of the FIVs, the largest thing summarize holds. Numpy input and CPU float32
    tensors (whose array is their memory, permuted or not) are still copied."""
    import tracemalloc

    import deepresolve_captum.summary as sm
    C, T, K = 64, 20, 256
    f = np.random.default_rng(0).standard_normal((C, T, K)).astype(np.float32)
    s = np.random.default_rng(1).uniform(1, 2, (C, T))
    monkeypatch.setattr(sm, "_fit_all", lambda il, max_components, *a: [
        (np.full(max_components, np.nan), 1, np.zeros(il.shape[1], dtype=bool))
        for _ in range(il.shape[0])])

    def peak(x):   # numpy's allocations only: torch's .float() of a 16-bit tensor is not traced
        tracemalloc.start()
        try:
            out = summarize(x, s)
            return tracemalloc.get_traced_memory()[1], out
        finally:
            tracemalloc.stop()

    base, _ = peak(f)                                   # numpy input: summary.fiv is a copy
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.from_numpy(f).to(dtype)
        p, out = peak(x)
        assert p < base - 0.5 * f.nbytes, (dtype, p / f.nbytes, base / f.nbytes)
        np.testing.assert_array_equal(out.fiv, x.float().numpy())
    # a CPU float32 tensor, also a permuted (non-contiguous) one: still never the caller's memory
    for x in (torch.from_numpy(f.copy()), torch.from_numpy(f.transpose(1, 0, 2).copy())
              .permute(1, 0, 2)):
        out = summarize(x, s)
        np.testing.assert_array_equal(out.fiv, f)
        x[...] = 0
        np.testing.assert_array_equal(out.fiv, f)
