"""Review 15 (interaction.py, blocks.py): each test fails on the code the review read (922584b).

interaction: AND-like needs both motifs together to raise the output, with no repressive single
motif; OR-like needs the significance XOR and AND need; non-finite outputs, effects and standard
errors are refused; shuffled backgrounds are kept free of the planted motifs as random ones are;
an uninformative channel PWM is refused; channel_ablation has a progress bar and standard errors.
blocks: see the second half.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum.interaction import (_non_overlapping_starts, channel_ablation,
                                            channel_pair_interaction, classify_interaction,
                                            interaction_check, motif_to_one_hot, plant_motifs)


def _one_hot(s):
    x = torch.zeros(4, len(s))
    x[["ACGT".index(c) for c in s], torch.arange(len(s))] = 1
    return x


class _Detectors(nn.Module):
    """Exact forward-strand detectors of motifs a and b (1 where the motif occurs, else 0) and a
    logit ``wa * a + wb * b + wab * a * b + bias``."""

    def __init__(self, a, b, wa, wb, wab, bias):
        super().__init__()
        k = len(a)
        self.conv = nn.Conv1d(4, 2, k)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0], self.conv.weight[1] = _one_hot(a), _one_hot(b)
            self.conv.bias.fill_(-(k - 1))
        self.w = torch.tensor([wa, wb, wab], dtype=torch.float32)
        self.bias = bias

    def forward(self, x):
        h = torch.relu(self.conv(x)).amax(-1)                     # (N, 2): presence
        f = torch.cat([h, h[:, :1] * h[:, 1:]], 1)
        return (f @ self.w + self.bias)[:, None]


def _random_X(n, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, L), generator=g), 4).permute(0, 2, 1).float()


# ------------------------------------------------------------------ M2: AND-like
def test_two_repressors_that_cancel_are_not_and_like():
    """The AND rule checked only interaction > m and gap > m: two motifs each lowering P, back at
    baseline together, were 'AND-like' (cooperative activation, the biology backwards)."""
    assert classify_interaction(-0.3, -0.3, 0.0) == "other"          # was AND-like
    assert classify_interaction(-0.3, -0.3, 0.1) == "other"          # was AND-like
    assert classify_interaction(-0.3, 0.0, 0.6) == "other"           # a alone represses
    assert classify_interaction(0.0, 0.05, 0.9) == "AND-like"        # neither alone, both do
    # d_ab itself within z standard errors: not an AND claim
    assert classify_interaction(0.0, 0.05, 0.9, sems=(0.01, 0.01, 0.5), interaction_sem=0.01,
                                gap_sem=0.01) == "uncertain"        # was AND-like
    # the reviewer's model: logit = -4a - 4b + 8ab, d_ab = 0
    m = _Detectors("GATTACA", "CCGGTTA", -4, -4, 8, 0).eval()
    r = interaction_check(m, "GATTACA", "CCGGTTA", seq_len=40, n_backgrounds=16)
    assert r.table["effect"]["both"] == pytest.approx(0, abs=1e-12)
    assert r.table["effect"]["a"] < -0.4 and r.logic == "other"      # was AND-like


# ------------------------------------------------------------------ m1: OR-like significance
def test_or_like_needs_the_significance_xor_and_and_need():
    """OR-like needed each motif's effect only: a noisy 'both' whose gap reached well into XOR
    territory (or interaction into AND territory) was still OR-like, while the mirror XOR pattern
    was 'uncertain'."""
    kw = dict(sems=(0.01, 0.01, 0.3), gap_sem=0.3, interaction_sem=0.3)
    assert classify_interaction(0.5, 0.5, 0.45, **kw) == "uncertain"   # was OR-like
    assert classify_interaction(0.5, 0.5, 0.1, **kw) == "uncertain"    # the mirror, as before
    # additive: interaction 0, margin m = 0.2, but 0 + 3 * 0.1 reaches AND territory
    assert classify_interaction(0.4, 0.4, 0.8, sems=(0.01,) * 3, gap_sem=0.01,
                                interaction_sem=0.1) == "uncertain"    # was OR-like
    assert classify_interaction(0.4, 0.4, 0.8, sems=(0.01,) * 3, gap_sem=0.01,
                                interaction_sem=0.05) == "OR-like"
    assert classify_interaction(0.5, 0.5, 0.45, sems=(0.01,) * 3, gap_sem=0.02,
                                interaction_sem=0.02) == "OR-like"


# ------------------------------------------------------------------ m2: non-finite values
def test_non_finite_effects_and_bad_standard_errors_are_refused():
    nan, inf = float("nan"), float("inf")
    for args in ((nan, 0.5, 0.5), (0.5, inf, 0.9), (0.5, 0.5, -inf)):
        with pytest.raises(ValueError, match=r"d_(a|b|ab) must be a finite number"):
            classify_interaction(*args)                  # was 'other' / 'none'
    for sems in ((0.01, 0.01), (0.1,) * 4):
        with pytest.raises(ValueError, match="sems must be three standard errors"):
            classify_interaction(0.5, 0.5, 0.1, sems=sems)               # was XOR-like
    with pytest.raises(ValueError, match=r"sems\[0\] must be a finite standard error >= 0"):
        classify_interaction(0.5, 0.5, 0.1, sems=(-1, -1, -1))           # was XOR-like
    with pytest.raises(ValueError, match=r"sems\[2\] must be a finite standard error"):
        classify_interaction(0.5, 0.5, 0.1, sems=(0.1, 0.1, nan))
    for name in ("gap_sem", "interaction_sem"):
        with pytest.raises(ValueError, match=f"{name} must be a finite standard error >= 0"):
            classify_interaction(0.5, 0.5, 0.1, **{name: -1})
    with pytest.raises(TypeError, match="d_a must be a real number"):
        classify_interaction("0.5", 0.5, 0.1)


class _Nan(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 1, 3)

    def forward(self, x):
        return self.conv(x).amax(-1) * float("nan")


def test_non_finite_model_outputs_are_refused():
    """A NaN model gave interaction_check's logic 'none' (no interaction)."""
    with pytest.raises(ValueError, match=r"output 0 is not finite \(NaN or inf\) on 32 of the 32 "
                                         r"planted sequences"):
        interaction_check(_Nan().eval(), "ACG", "TTA", seq_len=20, n_backgrounds=8)


def test_context_none_is_no_context():
    m = _Detectors("GATTAC", "CCGGTT", 8, 8, -8, -4).eval()
    r = interaction_check(m, "GATTAC", "CCGGTT", seq_len=30, n_backgrounds=4, context=None)
    assert r.motifs["context"] == []                                    # was a TypeError


# ------------------------------------------------------------------ m3: shuffled backgrounds
def _with_copies(n, L, motif, at, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 4, (n, L), generator=g)
    code = torch.tensor(["ACGT".index(c) for c in motif])
    for p in at:
        idx[:, p:p + len(motif)] = code
    return nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()


def test_shuffles_of_X_are_kept_free_of_the_planted_motifs():
    """Random backgrounds were redrawn while they held a planted motif, shuffles of X were not:
    here 8 copies of GATTAC per 100 bp left the motif in 23 of the 64 shuffles, and 'none' of an
    OR model read P ~ 1 for them."""
    X = _with_copies(32, 100, "GATTAC", range(0, 96, 12))
    m = _Detectors("GATTAC", "CCGGTT", 8, 8, -8, -4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # every motif kept out: no warning
        r = interaction_check(m, "GATTAC", "CCGGTT", X, n_backgrounds=64)
    assert r.settings["backgrounds_with_motif"] == {"CCGGTT": 0.0, "GATTAC": 0.0}
    assert (r.outputs[:, 0] < 0.5).all()                 # was P > 0.5 in 23 of 64 backgrounds
    assert r.table["effect"]["a"] == pytest.approx(1 / (1 + np.exp(-4)) - 1 / (1 + np.exp(4)))


def test_motifs_that_cannot_be_kept_out_are_warned_with_their_fraction():
    """A 3-mer in 200 bp is in nearly every background: warned with the fraction, and recorded."""
    m = _Detectors("GAT", "CCG", 8, 8, -8, -4).eval()
    with pytest.warns(UserWarning, match=r"dinucleotide-shuffled 200 bp backgrounds hold planted "
                                         r"motifs before any is planted: CCG in \d+\.\d%, GAT in "
                                         r"\d+\.\d% .*not kept motif-free"):
        r = interaction_check(m, "GAT", "CCG", _random_X(16, 200), n_backgrounds=16)
    held = r.settings["backgrounds_with_motif"]
    assert set(held) == {"CCG", "GAT"} and min(held.values()) > 0.5
    with pytest.warns(UserWarning, match="random 200 bp backgrounds hold planted motifs"):
        r = interaction_check(m, "GAT", "CCG", seq_len=200, n_backgrounds=16)
    assert min(r.settings["backgrounds_with_motif"].values()) > 0.5


# ------------------------------------------------------------------ m4: uninformative PWMs
def test_an_uninformative_channel_pwm_is_refused_by_channel():
    """A flat matrix passed trim_pwm unchanged and was planted as its consensus, poly-A."""
    m = nn.Sequential(nn.Conv1d(4, 3, 5), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                      nn.Linear(3, 1)).eval()
    good = motif_to_one_hot("AGGGT") * 0.9 + 0.025
    pwms = {0: good, 2: np.full((4, 7), 0.25)}
    with pytest.raises(ValueError, match=r"channel 2's motif is uninformative: no column of its "
                                         r"\(4, 7\) matrix reaches trim=0.5 bits"):
        channel_pair_interaction(m, m[1], 0, 2, None, pwms=pwms, seq_len=30, n_backgrounds=8)
    r = channel_pair_interaction(m, m[1], 0, 2, None, pwms={0: good, 2: good[:, ::-1]},
                                 seq_len=30, n_backgrounds=8)
    assert r.motifs["a"] == "AGGGT"
    # pwms=None without X named what the user passed, not an internal method
    with pytest.raises(ValueError, match=r"pwms=None needs X"):
        channel_pair_interaction(m, m[1], 0, 2, None, seq_len=30)


# ------------------------------------------------------------------ m5: channel_ablation
def test_channel_ablation_refuses_non_finite_outputs_and_fill():
    """channel_ablation returned NaN effects for a NaN model or fill=nan."""
    X = _random_X(6, 20)
    m = _Nan().eval()
    with pytest.raises(ValueError, match="not finite .*on X for 6 of 6 sequences"):
        channel_ablation(m, m.conv, X)
    ok = nn.Sequential(nn.Conv1d(4, 2, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                       nn.Linear(2, 1)).eval()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fill must be a finite real number"):
            channel_ablation(ok, ok[0], X, fill=bad)                     # was NaN effects
    for bad in (None, "0", True):
        with pytest.raises(TypeError, match="fill must be a finite real number"):
            channel_ablation(ok, ok[0], X, fill=bad)


def test_channel_ablation_progress_bar_and_standard_errors(capsys):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(4, 3, 5), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                      nn.Linear(3, 1)).eval()
    X = _random_X(10, 30)
    means = channel_ablation(m, m[1], X)
    assert isinstance(means, np.ndarray) and means.shape == (3,)      # default unchanged
    got, sems = channel_ablation(m, m[1], X, verbose=True, return_sem=True)
    assert "channel ablation" in capsys.readouterr().err and np.array_equal(got, means)
    with torch.no_grad():
        full = m(X)[:, 0].double()
        ref = []
        for k in range(3):
            h = m[1](m[0](X))
            h[:, k] = 0
            ref.append((full - m[4](m[3](m[2](h)))[:, 0].double()).numpy())
    ref = np.array(ref)
    np.testing.assert_allclose(got, ref.mean(1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sems, ref.std(1, ddof=1) / np.sqrt(10), rtol=1e-6, atol=1e-9)
    assert (sems > 0).all()
    for name in ("verbose", "return_sem"):
        with pytest.raises(TypeError, match=f"{name} must be True or False"):
            channel_ablation(m, m[1], X, **{name: "yes"})
    with pytest.raises(ValueError, match="return_sem=True needs at least 2 sequences"):
        channel_ablation(m, m[1], X[:1], return_sem=True)


# ------------------------------------------------------------------ nits
def test_negative_starts_tight_fits_and_transposed_ppms():
    # any negative start meant "not planted"; the docs say -1
    X = torch.zeros(2, 4, 10)
    X[:, 0] = 1
    inst = np.ones((2, 4, 3), dtype=np.float32) / 4
    with pytest.raises(ValueError, match=r"starts must be >= 0 .* or -1 \(not planted\), got \[-5\]"):
        plant_motifs(X, [inst], np.array([[0], [-5]]))
    # three 7-mers one base apart fill 23 bp exactly: rejection sampling never found it
    s = _non_overlapping_starts(np.random.default_rng(0), 64, [7, 7, 7], 23)
    assert {tuple(sorted(r)) for r in s} == {(0, 8, 16)} and len({tuple(r) for r in s}) == 6
    s = _non_overlapping_starts(np.random.default_rng(0), 64, [7, 7, 7], 26)
    for row in s:
        o = np.sort(row)
        assert (np.diff(o) >= 8).all() and o[-1] + 7 <= 26 and o[0] >= 0
    # a (k, 4) PPM with k = 4 (MEME / JASPAR layout) is read as (4, k): warned
    ppm = np.array([[.7, .1, .1, .1], [.7, .1, .1, .1], [.1, .7, .1, .1], [.1, .1, .7, .1]])
    with pytest.warns(UserWarning, match=r"rows sum to 1 and columns do not.*motif\.T"):
        motif_to_one_hot(ppm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        motif_to_one_hot(ppm.T)
    with pytest.raises(ValueError, match=r"got \(6, 4\) \(a \(k, 4\) matrix.*motif\.T"):
        motif_to_one_hot(np.full((6, 4), 0.25))


# ================================================================== blocks.py
import functools  # noqa: E402
import re  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import weakref  # noqa: E402

from deepresolve_captum import LayerFeatureOptimizer  # noqa: E402
from deepresolve_captum.blocks import attribute_in_blocks  # noqa: E402
from deepresolve_captum.zoo import PaperCNN  # noqa: E402


# 20 steps are enough to tell runs apart; they do not converge
pytestmark = pytest.mark.filterwarnings("ignore:.*before converging:RuntimeWarning")


def _small():
    torch.manual_seed(0)
    return PaperCNN(n_outputs=3, seq_len=30, n_filters=8).eval()


def _run(opt, folder, x=None, **kw):
    args = dict(folder=folder, target=[0, 1, 2], block_size=3, n_starts=2, l2=0.1, seed=0,
                max_steps=20)
    args.update(kw)
    return attribute_in_blocks(opt, _random_X(8, 30) if x is None else x, **args)


def _call(net, x):
    return net(x)


class _Holder:
    def __init__(self, net):
        self.net = net

    def run(self, x):
        return self.net(x)


_GLOBAL_NET = _small()


def _global_forward(x):
    return _GLOBAL_NET(x)


@pytest.mark.parametrize("kind", ["closure", "partial", "bound method", "global"])
def test_weights_behind_a_forward_callable_are_checked_on_resume(tmp_path, kind):
    """With forward_func not an nn.Module only the layer's weights were hashed (none for a
    MaxPool1d: the hash of nothing), so a resume over retrained weights was accepted and mixed
    old and new blocks (reviewer b1: max |diff| 0.33 against a recompute)."""
    m = _GLOBAL_NET if kind == "global" else _small()
    fwd = {"closure": lambda x: m(x),
           "partial": functools.partial(_call, m),
           "bound method": _Holder(m).run,
           "global": _global_forward}[kind]
    opt = LayerFeatureOptimizer(fwd, m.pool)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")   # attribute's own warning
        warnings.filterwarnings("error", message=".*no nn.Module was found")
        _run(opt, tmp_path / "run")
        s = json.loads((tmp_path / "run" / "run.json").read_text())
        assert s["model"]["n_values"] == sum(p.numel() for p in m.state_dict().values())
        assert s["layer"] == {"cls": "MaxPool1d", "name": "pool"}          # name was None
        assert len(s["weights_checked"]) == 1 and s["weights_checked"][0].endswith(": PaperCNN")
        before = {k: v.clone() for k, v in m.state_dict().items()}
        try:
            with torch.no_grad():
                m.fc2.bias.add_(1.0)
            with pytest.raises(ValueError, match=r"model\.sha256: the folder has"):
                _run(opt, tmp_path / "run")                              # was accepted
        finally:
            m.load_state_dict(before)
        _run(opt, tmp_path / "run")                                      # same weights resume
        assert opt.diagnostics.settings["blocks_read"] == 1


def test_modules_are_found_behind_partials_wrappers_objects_and_code():
    from deepresolve_captum.blocks import _modules_behind

    m = _small()

    def wrap(f):
        return functools.wraps(f)(lambda x: x)          # reachable through __wrapped__ only

    class Call:
        def __init__(self, net):
            self.net = net

        def __call__(self, x):
            return self.net(x)

    found = {
        "keywords": functools.partial(_call, net=m),
        "wrapped": wrap(m.forward),
        "object": Call(m),
        "nested partial": functools.partial(lambda f, x: f(x), lambda x: m(x)),
        "comprehension": lambda x: [n(x) for n in (m,)],
        "submodule": functools.partial(_call, m.conv, m),  # the child is hashed with m
    }
    for name, f in found.items():
        got = _modules_behind(f)
        assert [mod for _, mod in got] == [m], name
    ref = weakref.ref(m)
    assert _modules_behind(lambda x: ref()(x)) == []


def test_a_forward_with_no_module_found_warns_and_model_names_it(tmp_path):
    m = _small()
    ref = weakref.ref(m)                                 # hides the model from the search
    opt = LayerFeatureOptimizer(lambda x: ref()(x), m.pool)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        with pytest.warns(UserWarning, match=r"no nn\.Module was found behind it.*only the "
                                             r"layer's own weights \(MaxPool1d, 0 values\).*"
                                             r"Pass model=<the nn\.Module>"):
            _run(opt, tmp_path / "a")
        s = json.loads((tmp_path / "a" / "run.json").read_text())
        assert s["weights_checked"] == ["layer: MaxPool1d"] and s["model"]["n_values"] == 0
        warnings.filterwarnings("error", message=".*no nn.Module was found")
        _run(opt, tmp_path / "b", model=m)
        assert json.loads((tmp_path / "b" / "run.json").read_text())["weights_checked"] == [
            "model: PaperCNN"]
        with torch.no_grad():
            m.fc2.bias.add_(1.0)
        with pytest.raises(ValueError, match=r"model\.sha256: the folder has"):
            _run(opt, tmp_path / "b", model=m)
    with pytest.raises(TypeError, match="model must be the nn.Module"):
        _run(opt, tmp_path / "c", model="net")
    assert not (tmp_path / "c").exists()


class _Scaled(nn.Module):
    """A model with an extra forward argument: its output times ``scale``."""

    def __init__(self):
        super().__init__()
        self.m = _small()

    def forward(self, x, scale):
        return self.m(x) * torch.as_tensor(np.asarray(scale, dtype=np.float32)).mean()


def test_numpy_and_plain_container_forward_args_are_checked_on_resume(tmp_path):
    """Non-tensor additional_forward_args were recorded by type name: a covariate flipped from
    +1 to -1 in a numpy array or a list resumed (reviewer b2)."""
    net = _Scaled().eval()
    opt = LayerFeatureOptimizer(net, net.m.pool)
    for kind, plus, minus in (("ndarray", np.ones(3), -np.ones(3)),
                              ("list", [1.0] * 3, [-1.0] * 3),
                              ("dict", {"s": 1.0}, {"s": -1.0})):
        folder = tmp_path / kind
        if kind == "dict":           # a dict argument: the model reads its value
            opt = LayerFeatureOptimizer(lambda x, d: net(x, d["s"]), net.m.pool)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # all checkable: no warning
            warnings.filterwarnings("ignore", message=".*eval mode")
            _run(opt, folder, additional_forward_args=(plus,))
            with pytest.raises(ValueError, match=r"additional_forward_args\[0\]\.sha256: the "
                                                 r"folder has"):
                _run(opt, folder, additional_forward_args=(minus,))       # was accepted
            _run(opt, folder, additional_forward_args=(plus,))
        assert opt.diagnostics.settings["blocks_read"] == 1
        rec = json.loads((folder / "run.json").read_text())["additional_forward_args"][0]
        assert rec["type"] == kind and rec["sha256"]
    # an object that cannot be hashed: recorded by type, and said so
    opt = LayerFeatureOptimizer(lambda x, o: net(x, o.scale), net.m.pool)

    class Covariate:
        scale = 1.0

    with pytest.warns(UserWarning, match=r"additional_forward_args\[0\] \(a Covariate\) "
                                         r"cannot be fingerprinted.*cannot tell whether it "
                                         r"changed"):
        _run(opt, tmp_path / "obj", additional_forward_args=(Covariate(),))


def test_empty_folder_and_flags_read_by_truthiness_are_refused(tmp_path, monkeypatch):
    """folder='' wrote run.json and block files into the current folder; fiv_only='False' ran
    as fiv_only=True and attribute_to_layer_input='no' as True."""
    m = _small()
    opt = LayerFeatureOptimizer(m, m.pool)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"folder is empty \(''\), which would be the current "
                                         r"folder"):
        _run(opt, "")
    assert os.listdir(tmp_path) == []
    for name, bad in (("fiv_only", "False"), ("verbose", "yes"),
                      ("attribute_to_layer_input", "no"), ("target_only_head", 2)):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got {bad!r}"):
            _run(opt, tmp_path / "run", **{name: bad})
    assert os.listdir(tmp_path) == []
    _run(opt, tmp_path / "run", fiv_only=np.bool_(True), verbose=False)   # numpy's bool is one


def test_unreadable_run_json_advice_keeps_the_blocks(tmp_path):
    """The advice was 'delete the folder to start over', which throws the finished blocks away;
    deleting only run.json and rerunning with the same arguments and seed reads them back."""
    m = _small()
    opt = LayerFeatureOptimizer(m, m.pool)
    folder = tmp_path / "run"
    _run(opt, folder, target=[0, 1, 2], block_size=1)
    (folder / "run.json").write_text("{ cut short")
    with pytest.raises(ValueError, match=r"run\.json cannot be read .*Delete only .*run\.json "
                                         r"\(not the folder.*same arguments and an explicit seed"):
        _run(opt, folder, target=[0, 1, 2], block_size=1)
    (folder / "run.json").unlink()
    _run(opt, folder, target=[0, 1, 2], block_size=1)
    assert opt.diagnostics.settings["blocks_read"] == 3           # the advice holds
    assert opt.diagnostics.settings["blocks_computed"] == 0


def test_an_interrupted_run_removes_the_parent_folders_it_made(tmp_path, monkeypatch):
    """Only the leaf folder was removed; parents made by mkdir(parents=True) stayed."""
    m = _small()
    opt = LayerFeatureOptimizer(m, m.pool)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(opt, "choose_l2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(opt, tmp_path / "a" / "b" / "run", l2="auto")
    assert os.listdir(tmp_path) == []                            # 'a' and 'a/b' stayed
    (tmp_path / "mine").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _run(opt, tmp_path / "mine" / "b" / "run", l2="auto")
    assert os.listdir(tmp_path) == ["mine"] and os.listdir(tmp_path / "mine") == []


# ================================================================== re-review (r1) fixes
def test_tight_placements_draw_what_the_rejection_only_version_drew():
    """r1 n5: b6af78e cut the rejection tries from 1000 to 100 before the direct draw, so rows
    that needed 101-1000 tries took the direct draw and every later row shifted: three 7-mers in
    30 bp drew otherwise for most seeds. The value below is what 922584b's
    _non_overlapping_starts gave (run from `git show 922584b:deepresolve_captum/interaction.py`),
    with the generator's next draw after it."""
    rng = np.random.default_rng(1)
    s = _non_overlapping_starts(rng, 16, [7, 7, 7], 30)
    assert s.tolist() == [
        [2, 10, 23], [21, 4, 12], [11, 2, 23], [14, 6, 22], [21, 0, 11], [12, 21, 3],
        [2, 23, 11], [18, 9, 0], [12, 1, 21], [13, 0, 22], [14, 23, 2], [11, 22, 2],
        [1, 10, 23], [7, 23, 15], [8, 0, 16], [12, 20, 2]]
    assert int(rng.integers(2**31 - 1)) == 1979285982


def test_classify_interaction_takes_real_scalars_of_any_kind():
    """r1 m3: 88543ec's check took only int, float, np.integer and np.floating, so 0-d numpy
    arrays, torch scalar tensors ((y_ab - y_0).mean()), Fractions and a tensor of standard
    errors, all of which classified before, raised TypeError."""
    from fractions import Fraction

    t = torch.tensor([0.5, 0.5, 0.1], dtype=torch.float64)
    for args in ((np.array(0.5), np.array(0.5), np.array(0.1)), (t[0], t[1], t[2]),
                 (Fraction(1, 2), Fraction(1, 2), Fraction(1, 10)),
                 (np.float32(0.5), np.int64(1) / 2, 0.1)):
        assert classify_interaction(*args) == "XOR-like"
    for sems in (torch.tensor([0.01, 0.01, 0.01]), np.array([0.01, 0.01, 0.01]),
                 [np.array(0.01), torch.tensor(0.01), Fraction(1, 100)]):
        assert classify_interaction(0.5, 0.5, 0.1, sems=sems, gap_sem=torch.tensor(0.01),
                                    interaction_sem=np.array(0.01)) == "XOR-like"
    # the standard errors are used as numbers: too noisy a gap is uncertain, as with floats
    assert classify_interaction(0.5, 0.5, 0.1, sems=torch.tensor([0.01] * 3),
                                gap_sem=torch.tensor(0.5)) == "uncertain"
    # what is not one real number is still refused, and said so
    for bad, what in ((np.array([0.5]), r"an array of shape \(1,\)"),
                      (torch.tensor([0.5, 0.1]), r"a tensor of shape \(2,\)"),
                      (1 + 0.5j, "the complex number"), (np.complex128(0.5), "the complex number"),
                      (torch.tensor(0.5 + 0j), "a complex tensor"), (True, "True"),
                      (np.array(True), "array\\(True\\)"), (torch.tensor(True), "a boolean tensor"),
                      ("0.5", "'0.5'"), ([0.5], r"list \[0\.5\] \(not one number\)"),
                      (object(), "<object object")):
        with pytest.raises(TypeError, match=f"d_a must be a real number, got {what}"):
            classify_interaction(bad, 0.5, 0.1)
    with pytest.raises(TypeError, match=r"sems\[1\] must be a real number, got the complex"):
        classify_interaction(0.5, 0.5, 0.1, sems=[0.1, 0.1j, 0.1])
    with pytest.raises(ValueError, match=r"sems\[0\] must be a finite standard error >= 0"):
        classify_interaction(0.5, 0.5, 0.1, sems=torch.tensor([-0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match="d_b must be a finite number"):
        classify_interaction(0.5, torch.tensor(float("nan")), 0.1)
    with pytest.raises(ValueError, match="sems must be three standard errors"):
        classify_interaction(0.5, 0.5, 0.1, sems=np.full((3, 1), 0.1))


def test_block_flags_take_one_and_zero_as_attribute_does(tmp_path):
    """r1 m6: 2b0c897 refused verbose=1, verbose=0 and fiv_only=1 (a common idiom, taken by
    922584b and by LayerFeatureOptimizer.attribute); strings are still refused."""
    m = _small()
    opt = LayerFeatureOptimizer(m, m.pool)
    v1, s1 = _run(opt, tmp_path / "a", fiv_only=1, verbose=0, attribute_to_layer_input=0,
                  target_only_head=np.int64(1))
    rec = json.loads((tmp_path / "a" / "run.json").read_text())
    assert rec["fiv_only"] is True and rec["attribute_to_layer_input"] is False
    assert rec["target_only_head"] is True
    v2, s2 = opt.attribute(_random_X(8, 30), [0, 1, 2], n_starts=2, l2=0.1, seed=0,
                           max_steps=20, fiv_only=1, return_scores=True)
    assert v1.shape == v2.shape == (3, 2, 8)
    _run(opt, tmp_path / "a", fiv_only=True, verbose=np.bool_(False))    # the same run
    assert opt.diagnostics.settings["blocks_read"] == 1
    for name, bad in (("verbose", "False"), ("fiv_only", 2), ("verbose", None),
                      ("attribute_to_layer_input", "0")):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got {bad!r}"):
            _run(opt, tmp_path / "b", **{name: bad})
    # the interaction functions read their flags the same way
    ok = nn.Sequential(nn.Conv1d(4, 2, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                       nn.Linear(2, 1)).eval()
    a = channel_ablation(ok, ok[0], _random_X(4, 20), verbose=0, return_sem=1)
    assert len(a) == 2


def test_reshuffles_stop_when_the_composition_keeps_the_motif(monkeypatch):
    """r1 m4: in AT-rich sequences nearly every dinucleotide shuffle holds poly-A, yet all 20
    reshuffle rounds ran over nearly every row (10x the time, nothing freed). Now (6a76e53) a row
    still holding the motif after 5 reshuffles in a row stops, once 64 were tried in all; the
    warning says so and the fraction is recorded as before."""
    import tangermeme.ersatz as ersatz

    calls = []
    shuffle = ersatz.dinucleotide_shuffle

    def counted(x, *a, **k):
        calls.append(len(x))
        return shuffle(x, *a, **k)

    monkeypatch.setattr(ersatz, "dinucleotide_shuffle", counted)
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(torch.tensor([0.75, 0.05, 0.05, 0.15]), 128 * 80, replacement=True,
                            generator=g).reshape(128, 80)
    X = nn.functional.one_hot(idx, 4).permute(0, 2, 1).float()
    m = _Detectors("AAAAAAAA", "GCGCGCGC", 4, 4, 0, -2).eval()
    with pytest.warns(UserWarning, match=r"AAAAAAAA in \d+\.\d% of them .*\d+\.\d% of the "
                                         r"backgrounds were not reshuffled further after holding "
                                         r"one in 5 reshuffles in a row"):
        r = interaction_check(m, "AAAAAAAA", "GCGCGCGC", X, n_backgrounds=128)
    assert len(calls) <= 6              # was 21 (the shuffle + 20 rounds); now at most 1 + 5
    assert r.settings["backgrounds_with_motif"]["AAAAAAAA"] > 0.5
    # where the reshuffles do free the shuffles, they go on (the 8-copies case above: 0 held)
    calls.clear()
    X = _with_copies(32, 100, "GATTAC", range(0, 96, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = interaction_check(_Detectors("GATTAC", "CCGGTT", 8, 8, -8, -4).eval(), "GATTAC",
                              "CCGGTT", X, n_backgrounds=64)
    assert r.settings["backgrounds_with_motif"] == {"CCGGTT": 0.0, "GATTAC": 0.0}
    assert len(calls) >= 2
    # a few hard rows (under 64 reshuffles in all) get all 20 rounds, as before; many stop
    from deepresolve_captum.interaction import _motif_free_shuffles

    poly_a = _with_copies(1, 40, "A" * 40, [0])                  # every shuffle is poly-A
    for n, rounds, stopped in ((2, 20, 0), (3, 20, 0), (100, 5, 100)):   # per row since 6a76e53
        B, r, s, _ = _motif_free_shuffles(poly_a.repeat(n, 1, 1), ["AAAAAAAA"], seed=0)
        assert (r, s) == (rounds, stopped) and B.shape == (n, 4, 40)


def test_numpy_forward_args_are_hashed_without_a_copy(monkeypatch):
    """r1 n2: a numpy additional argument was hashed through np.ascontiguousarray(o).tobytes(),
    a copy of all of it (763 MiB more for a 763 MiB array). Now a C-contiguous array's buffer is
    hashed in place and any other is copied a block of rows at a time; the digest is the same."""
    import hashlib
    import tracemalloc

    from deepresolve_captum import blocks

    monkeypatch.setattr(blocks, "_HASH_CHUNK", 1 << 20, raising=False)
    big = np.random.default_rng(0).random((2048, 1024))            # 16 MiB
    for a in (big, big[:, ::2], big.T, big[::-1]):
        tracemalloc.start()
        try:
            rec = blocks._value_digest(a, "a", [])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 << 20, peak                                   # was >= 8 MiB
        old = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
        assert rec == dict(type="ndarray", shape=list(a.shape), dtype="float64", sha256=old)
    for a in (np.array(2.5), np.zeros((0, 3)), np.arange(12).reshape(3, 4)[:, ::3],
              (np.arange(6) > 2).reshape(2, 3).T):
        assert blocks._array_digest(a) == hashlib.sha256(
            np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


# ------------------------------------------------------------------ r1 m1, n3, n4: the search
class _Wrapper:
    def __init__(self, net, **other):
        self.model = net
        self.__dict__.update(other)

    def predict(self, x):
        return self.model(x)


def test_the_module_search_takes_only_what_the_code_loads():
    """r1 m1: the search took every name in co_names, attribute names included, so in
    ``lambda t: w.model(t)`` a global called ``model`` was hashed too (a notebook's other
    model), and it walked the attributes of attributes. n4: default arguments
    (``lambda x, m=m: m(x)``, the usual way to bind a loop variable) were not searched."""
    from deepresolve_captum.blocks import _modules_behind

    m, other = _small(), _small()
    holder = type("Holder", (), {})()
    holder.net = _small()                            # an attribute of an attribute
    g = {"w": _Wrapper(m, config=holder), "model": other}
    fwd = eval("lambda t: w.model(t)", g)                        # co_names: ('w', 'model')
    assert [(w, mod) for w, mod in _modules_behind(fwd)] == [
        ("forward_func: global 'w'.model", m),                   # 'model' was found too
        ("forward_func: global 'w'.config.net", holder.net)]     # r4 M3: attributes' own
    g = {"net": m, "torch": torch, "model": other}
    fwd = eval("lambda t: torch.sigmoid(net(t)).model", g)       # .model: an attribute
    assert [mod for _, mod in _modules_behind(fwd)] == [m]
    # defaults, positional and keyword-only
    assert _modules_behind(lambda x, m=m: m(x)) == [("forward_func: default 'm'", m)]

    def kw_only(x, *, net=m):
        return net(x)

    assert _modules_behind(kw_only) == [("forward_func: default 'net'", m)]
    # a bound method's object: its own module attributes (and lists of them)
    ens = _Wrapper(m, extra=[other])
    assert [w for w, _ in _modules_behind(ens.predict)] == [
        "forward_func.__self__.model", "forward_func.__self__.extra[0]"]


def test_the_module_search_is_bounded_on_big_containers():
    """r1 n3: dicts were listed whole before their first 1000 items were taken (a 20M-item dict:
    +1.3 GB), and only each container's items were bounded (1000 lists x 1000 tuples: 2-4 s)."""
    import time
    import tracemalloc

    from deepresolve_captum.blocks import _modules_behind

    m = _small()
    big = _Wrapper(m, index={i: i for i in range(300_000)})
    nested = _Wrapper(m, peaks={f"chr{i}": [(j, j + 1) for j in range(1000)]
                                for i in range(1000)})
    tracemalloc.start()
    try:
        assert [mod for _, mod in _modules_behind(big.predict)] == [m]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak                      # was ~30 MB: list(dict.items())
    t0 = time.perf_counter()
    assert [mod for _, mod in _modules_behind(nested.predict)] == [m]
    assert time.perf_counter() - t0 < 0.5            # was 2-4 s
    # the budget of objects is spent on the big container, and says so; a module attribute
    # is found all the same, wherever it comes among the attributes
    late = _Wrapper(None, peaks=nested.peaks)
    late.zz = m
    info = {}
    assert [mod for _, mod in _modules_behind(late.predict, info=info)] == [m]
    assert info == {"truncated": True}


def test_a_refused_resume_names_the_module_whose_weights_differ_and_model_pins_it(tmp_path):
    """r1 m1: with every module found hashed into one sha256, a resume refused because an unused
    helper module held by the forward's object changed (re-initialised in a new process) said
    only 'model.sha256: the folder has X, this call Y'. Now run.json keeps a hash per module,
    the refusal names the module and says model= pins the check, and a resume with model= goes
    on when that module has the weights the run recorded for it."""
    m = _small()
    helper = nn.Linear(1, 1)                              # held, never run by predict
    p = _Wrapper(m, helper=helper)
    opt = LayerFeatureOptimizer(p.predict, m.pool)
    folder = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        _run(opt, folder)
        s = json.loads((folder / "run.json").read_text())
        assert s["weights_checked"] == ["forward_func.__self__.model: PaperCNN",
                                        "forward_func.__self__.helper: Linear"]
        with torch.no_grad():
            helper.weight.add_(1.0)
        with pytest.raises(ValueError, match=r"model: the weights of "
                                             r"forward_func\.__self__\.helper \(Linear\) differ "
                                             r"from the run's \(model\.sha256: the folder has .*"
                                             r"model=<the nn\.Module forward_func runs> pins the "
                                             r"check to that module"):
            _run(opt, folder)                                    # named no module
        assert list(s["weights"]) == ["forward_func.__self__.model",
                                      "forward_func.__self__.helper"]
        # r4 M1: a run started without model= is not resumed with it (its module was matched
        # against the hash of any module the run recorded)
        with pytest.raises(ValueError, match=r"the run was started without model= .*this call "
                                             r"passes model=: resume without model=, as the run "
                                             r"was started, or start a new folder"):
            _run(opt, folder, model=m)
        assert json.loads((folder / "run.json").read_text()) == s     # run.json untouched
        # a run started with model= is told to pass it again, and resumes with it
        _run(opt, tmp_path / "pinned", model=m)
        with pytest.raises(ValueError, match=r"the run was started with model= \(it checked "
                                             r"model: PaperCNN\), this call passes none: resume "
                                             r"with the same model= again, or start a new "
                                             r"folder"):
            _run(opt, tmp_path / "pinned")
        with torch.no_grad():
            helper.weight.add_(1.0)                              # not pinned: not checked
        _run(opt, tmp_path / "pinned", model=m)
        with torch.no_grad():
            m.fc2.bias.add_(1.0)                                 # the model itself changed
        with pytest.raises(ValueError, match=r"model: the weights of model \(PaperCNN\) differ "
                                             r"from the run's"):
            _run(opt, tmp_path / "pinned", model=m)


def _as_older_version(folder, **entries):
    """Rewrite folder/run.json as 922584b (or 57f2b68..this fix) wrote it: the given entries
    replaced, and weights_checked / weights dropped as named; run_id kept, so that the block
    files still belong to it, as they did to the older version's run.json."""
    path = folder / "run.json"
    s = json.loads(path.read_text())
    for k, v in entries.items():
        if v is None:
            s.pop(k, None)
        else:
            s[k] = v
    path.write_text(json.dumps(s))
    return s


def test_folders_of_the_older_version_resume_with_upgrade_keeping_their_blocks(tmp_path):
    from deepresolve_captum.blocks import _legacy_fingerprint

    """r1 m2: a folder started by 922584b (numpy / list arguments recorded by type name; the
    weights behind a forward callable not hashed, only the layer's) was refused after the
    upgrade as 'a run with other settings than this call ... delete this one to start over',
    which blamed the user and threw away the finished blocks, and no way kept them (deleting
    run.json and rerunning gives another run_id: every block is recomputed). Now the refusal
    says what the older version did not record, and upgrade=True goes on with the blocks."""
    net = _Scaled().eval()
    cases = {
        "ndarray": (LayerFeatureOptimizer(net, net.m.pool), (np.ones(3),),
                    dict(additional_forward_args=["ndarray"], weights_checked=None,
                         weights=None),
                    r"the value of additional_forward_args\[0\] \(a ndarray: only its type "
                    r"name\)"),
        "lambda": (LayerFeatureOptimizer(lambda x: net(x, 1.0), net.m.pool), None,
                   dict(model={"n_values": 0, "sha256": "e3b0c44298fc1c14"},
                        layer={"cls": "MaxPool1d", "name": None}, weights_checked=None,
                        weights=None),
                   r"the weights behind a forward callable that is not an nn\.Module \(it "
                   r"hashed only the layer's own weights, MaxPool1d: 0 values, which match"),
    }
    for name, (opt, afa, old, said) in cases.items():
        folder = tmp_path / name
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*eval mode")
            _run(opt, folder, additional_forward_args=afa, block_size=1)
            before = _as_older_version(folder, **old)
            with pytest.raises(ValueError) as e:
                _run(opt, folder, additional_forward_args=afa, block_size=1)
            msg = str(e.value)
            assert "holds a run started by an earlier version of deepresolve_captum" in msg
            assert re.search(said, msg), msg
            assert "other settings than this call" not in msg and "start over" not in msg
            assert "keep its 3 finished block file(s), call again with the same arguments " \
                   "and upgrade=True" in msg
            # deleting run.json would not keep them: another run_id
            with pytest.warns(UserWarning, match="resuming a run started by an earlier "
                                                 "version .*3 finished block file"):
                _run(opt, folder, additional_forward_args=afa, block_size=1, upgrade=True)
            d = opt.diagnostics.settings
            assert (d["blocks_read"], d["blocks_computed"]) == (3, 0)
            after = json.loads((folder / "run.json").read_text())
            assert after["run_id"] == before["run_id"] and len(after["upgraded"]) == 1
            assert "weights" in after and "weights_checked" in after
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message="resuming a run")
                _run(opt, folder, additional_forward_args=afa, block_size=1)   # plain resume
            assert opt.diagnostics.settings["blocks_read"] == 3
    # what the older version did record still has to match: upgrade=True does not pass it
    opt = LayerFeatureOptimizer(net, net.m.pool)
    folder = tmp_path / "real"
    _run(opt, folder, additional_forward_args=(np.ones(3),))
    _as_older_version(folder, additional_forward_args=["ndarray"], weights_checked=None,
                      weights=None)
    for upgrade in (False, True):
        with pytest.raises(ValueError, match=r"other settings than this call \(n_starts: the "
                                             r"folder has 2, this call 3\).*Besides, the "
                                             r"earlier version .* did not record the value of "
                                             r"additional_forward_args\[0\]"):
            _run(opt, folder, additional_forward_args=(np.ones(3),), n_starts=3,
                 upgrade=upgrade)
    # a folder of the search before this fix (one hash over more modules than now found)
    m = _small()
    g = {"w": _Wrapper(m), "model": nn.Linear(2, 2)}
    opt = LayerFeatureOptimizer(eval("lambda t: w.model(t)", g), m.pool)
    folder = tmp_path / "search"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        _run(opt, folder)
        _as_older_version(folder, weights=None, model=_legacy_fingerprint(opt),
                          weights_checked=["forward_func: global 'w'.model: PaperCNN",
                                           "forward_func: global 'model': Linear"])
        assert _legacy_fingerprint(opt)["n_values"] == 3083 + 6   # w.model and the Linear
        with pytest.raises(ValueError, match=r"did not record a hash per module, and its search "
                                             r".*hashed forward_func: global 'w'\.model: "
                                             r"PaperCNN, forward_func: global 'model': Linear "
                                             r"together.*upgrade=True"):
            _run(opt, folder)
        with pytest.warns(UserWarning, match="resuming a run started by an earlier version"):
            _run(opt, folder, upgrade=True)
        assert opt.diagnostics.settings["blocks_read"] == 1


# ------------------------------------------------------------------ r4: the resume fingerprint
def test_model_pins_only_a_run_started_with_the_same_pin(tmp_path):
    """r4 M1: a resume with model= went on when the pinned module had the weights the run
    recorded for *any* of its modules: after the usual 'load the EMA weights into the model'
    step, blocks of two sets of weights were mixed without a word. Now a resume makes the same
    choice as the run's start, and a pinned module is compared with its own record only."""
    import copy

    m = _small()
    w = type("W", (), {})()
    w.model, w.ema = m, copy.deepcopy(m)
    with torch.no_grad():
        for q in w.ema.parameters():
            q.mul_(0.5)
    opt = LayerFeatureOptimizer(lambda x: w.model(x), m.pool)
    folder = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        _run(opt, folder, block_size=1)
        (folder / "block_00002.npz").unlink()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        m.load_state_dict(w.ema.state_dict())            # the forward now runs the EMA weights
        with pytest.raises(ValueError, match=r"forward_func: closure variable 'w'\.model "
                                             r"\(PaperCNN\) differ.*restore the weights the "
                                             r"run was started with, or use a new folder") as e:
            _run(opt, folder, block_size=1)
        assert "resume with model=" not in str(e.value)
        with pytest.raises(ValueError, match=r"the run was started without model= .*resume "
                                             r"without model=, as the run was started, or "
                                             r"start a new folder"):
            _run(opt, folder, block_size=1, model=m)     # was accepted: blocks mixed
        m.load_state_dict(before)
        _run(opt, folder, block_size=1)                  # the same weights, the same choice
        assert opt.diagnostics.settings["blocks_read"] == 2
        # started with model=[model, ema]: each is compared with its own record only
        pinned = tmp_path / "pinned"
        _run(opt, pinned, block_size=1, model=[w.model, w.ema])
        ema = {k: v.clone() for k, v in w.ema.state_dict().items()}
        with torch.no_grad():
            w.ema.fc2.bias.add_(1.0)
        with pytest.raises(ValueError, match=r"started with model= .*resume with the same "
                                             r"model= again"):
            _run(opt, pinned, block_size=1)
        w.ema.load_state_dict(ema)
        with pytest.raises(ValueError, match=r"model: the weights of model\[0\] \(PaperCNN\), "
                                             r"model\[1\] \(PaperCNN\) differ"):
            _run(opt, pinned, block_size=1, model=[w.ema, w.model])     # swapped
        _run(opt, pinned, block_size=1, model=[w.model, w.ema])
        assert opt.diagnostics.settings["blocks_read"] == 3


class _Pipe:
    """r4 M2 / M3: the forward runs ``self.inner.net``; ``self.aux.teacher`` is never run."""

    def __init__(self, net):
        self.inner = type("Inner", (), {})()
        self.inner.net = net
        self.aux = type("Aux", (), {})()
        self.aux.teacher = nn.Linear(2, 2)

    def run(self, x):
        return self.inner.net(x)


def test_upgrade_refuses_weights_that_differ_from_the_older_versions_hash(tmp_path):
    """r4 M2: a folder of 57f2b68..21361f8 (one hash over the modules it listed, no hash per
    module) whose list differs from this version's was taken as 'not recorded', so
    upgrade=True wrote this call's hashes over a changed model. That version's hash is
    recomputed now (the same as 21361f8's code gives: checked against it by hand on the
    reviewer's script), and a difference is refused, upgrade=True or not."""
    from deepresolve_captum.blocks import _legacy_fingerprint

    m = _small()
    g = {"w": _Wrapper(m), "model": nn.Linear(2, 2)}           # 21361f8 hashed 'model' too
    opt = LayerFeatureOptimizer(eval("lambda t: w.model(t)", g), m.pool)
    folder = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        _run(opt, folder, block_size=1)
        _as_older_version(folder, weights=None, model=_legacy_fingerprint(opt),
                          weights_checked=["forward_func: global 'w'.model: PaperCNN",
                                           "forward_func: global 'model': Linear"])
        before = {k: v.clone() for k, v in m.state_dict().items()}
        with torch.no_grad():
            m.fc2.bias.add_(1.0)                          # the module the forward runs
        for upgrade in (False, True):
            with pytest.raises(ValueError, match=r"model: the weights of forward_func: global "
                                                 r"'w'\.model: PaperCNN, forward_func: global "
                                                 r"'model': Linear differ from the run's"):
                _run(opt, folder, block_size=1, upgrade=upgrade)    # upgrade=True: accepted
        m.load_state_dict(before)
        with pytest.raises(ValueError) as e:
            _run(opt, folder, block_size=1)
        assert "Nothing says" not in str(e.value)
        assert re.search(r"that hash, recomputed now, matches.*All that run recorded matches "
                         r"this call.*upgrade=True asserts it", str(e.value)), str(e.value)
        with pytest.warns(UserWarning, match="resuming a run started by an earlier version"):
            _run(opt, folder, block_size=1, upgrade=True)
        assert opt.diagnostics.settings["blocks_read"] == 3


_MODS = None


def _mods_forward(x):
    return _MODS.net(x)


def test_modules_behind_nested_objects_and_python_modules_are_found(tmp_path):
    """r4 M3: the search took only an object's own module attributes, so
    ``self.head(self.inner.backbone(x))`` hashed the head alone and a resume over a changed
    backbone was accepted without a word; ``mods.net`` (a Python module's attribute) was not
    found either."""
    import types

    from deepresolve_captum.blocks import _modules_behind

    global _MODS
    m = _small()
    p = _Pipe(m)
    assert [(w, mod) for w, mod in _modules_behind(p.run)] == [
        ("forward_func.__self__.inner.net", m), ("forward_func.__self__.aux.teacher",
                                                 p.aux.teacher)]
    deep = type("D", (), {})()                      # three attributes deep
    deep.a = type("A", (), {})()
    deep.a.b = type("B", (), {})()
    deep.a.b.c = type("C", (), {})()
    deep.a.b.c.net = m
    assert _modules_behind(lambda x: deep.a.b.c.net(x)) == [
        ("forward_func: closure variable 'deep'.a.b.c.net", m)]
    deep.a.b.c.d = type("D", (), {})()              # a fourth: past the limit
    deep.a.b.c.d.net, deep.a.b.c.net = m, None
    assert _modules_behind(lambda x: deep.a.b.c.d.net(x)) == []
    _MODS = types.ModuleType("mods")
    _MODS.net, _MODS.other = m, nn.Linear(2, 2)     # only what the code reads
    assert _modules_behind(_mods_forward) == [("forward_func: global '_MODS'.net", m)]
    # the resume over a changed backbone is refused
    opt = LayerFeatureOptimizer(p.run, m.pool)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        _run(opt, tmp_path / "run")
        with torch.no_grad():
            m.fc2.bias.mul_(-1)
        with pytest.raises(ValueError, match=r"the weights of forward_func\.__self__\.inner\.net "
                                             r"\(PaperCNN\) differ"):
            _run(opt, tmp_path / "run")


def test_the_search_budget_is_not_spent_on_data_and_a_cut_search_warns(tmp_path):
    """r4 m1: a global table of 1000 lists of 50 ints spent the 10,000-object budget, so
    ``w.model`` read after it was not checked, silently because another module was found."""
    from deepresolve_captum import blocks

    m, head = _small(), nn.Linear(3, 3)
    w = _Wrapper(m)
    vocab = {f"k{i}": list(range(50)) for i in range(1000)}
    g = {"vocab": vocab, "w": w, "head": head}
    fwd = eval("lambda x: head(w.model(x * vocab['k0'][0]))", g)
    info = {}
    assert [mod for _, mod in blocks._modules_behind(fwd, info=info)] == [head, m]
    assert info == {}
    # a search that is cut short warns, also when it found a module
    big = {i: [type("O", (), {})() for _ in range(1000)]
           for i in range(blocks._MAX_VISITS // 1000 + 1)}
    g = {"big": big, "w": w, "head": head}
    fwd = eval("lambda x: big and head(w.model(x))", g)           # big looked at first
    info = {}
    assert [mod for _, mod in blocks._modules_behind(fwd, info=info)] == [head]
    assert info == {"truncated": True}
    opt = LayerFeatureOptimizer(fwd, m.pool)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*eval mode")
        with pytest.warns(UserWarning, match=r"search for the nn\.Modules behind forward_func "
                                             r"stopped early.*Pass model=<the nn\.Module "
                                             r"forward_func runs>.*to pin the check"):
            _run(opt, tmp_path / "run")


_R5_CFG = {f"k{i}": i for i in range(20)}       # 16+ plain values first: read as data


def test_a_search_that_misses_the_layers_model_warns(tmp_path):
    """r5 M1: the search found a weightless module (``head``) but not the model the forward
    runs (behind a settings dict whose first items are numbers), so a resume over changed
    weights went through with no warning. The layer is always inside the model the forward
    runs: when it is in none of the modules found, the search missed it, and now says so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 8, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(),
                          nn.Linear(8 * 23, 3)).eval()
    head = nn.Identity()
    _R5_CFG["model"] = model
    try:
        missed = LayerFeatureOptimizer(lambda x: head(_R5_CFG["model"](x)), model[2])
        with pytest.warns(UserWarning, match=r"the layer \(MaxPool1d\) is in none of the "
                                             r"nn\.Modules found behind forward_func"):
            attribute_in_blocks(missed, torch.zeros(1, 4, 50), target=[0, 1],
                                folder=tmp_path / "missed", block_size=1, n_starts=2, l2=1.0,
                                seed=0, max_steps=20)
        # found: the model itself is behind the forward, so no such warning
        found = LayerFeatureOptimizer(lambda x: head(model(x)), model[2])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attribute_in_blocks(found, torch.zeros(1, 4, 50), target=[0, 1],
                                folder=tmp_path / "found", block_size=1, n_starts=2, l2=1.0,
                                seed=0, max_steps=20)
        assert not [w for w in caught if "none of the nn.Modules" in str(w.message)]
    finally:
        _R5_CFG.pop("model", None)
