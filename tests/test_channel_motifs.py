"""Channel -> motif (channel_motifs.py): receptive fields, first-layer filter PWMs, the paper's
gradient ascent for a deep channel (matched to the planted motif by TOMTOM against JASPAR),
seqlets from channel attributions."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))

from deepresolve_captum.adapters import channel_attributions
from deepresolve_captum.channel_motifs import (channel_pwms, channel_seqlets, channel_tomtom,
                                               consensus, receptive_field, trim_pwm)

MOTIF = "CAAGACGCCTTA"  # JASPAR2016 MA0794.1 PROX1 consensus
L = 80


def _onehot(s):
    m = torch.zeros(4, len(s))
    for j, c in enumerate(s):
        m["ACGT".index(c), j] = 1
    return m


class TwoConv(nn.Module):
    """conv1 (6 filters of 6 bp) -> ReLU -> MaxPool(2) -> conv2 (4 channels of 4) -> ReLU -> dense.
    conv1 filters 0 and 1 detect the two halves of MOTIF; conv2 channel 0 fires only when half 1
    is followed 6 bp later by half 2 (the planted motif detector). Everything else is random."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv1d(4, 6, 6)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(6, 4, 4)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * ((L - 5) // 2 - 3), 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            for f, half in ((0, MOTIF[:6]), (1, MOTIF[6:])):
                oh = _onehot(half)
                self.conv1.weight[f] = oh - 0.5 * (1 - oh)
                self.conv1.bias[f] = -4.5
            self.conv2.weight[0] = 0
            self.conv2.weight[0, 0, 0] = 1.0
            self.conv2.weight[0, 1, 3] = 1.0
            self.conv2.bias[0] = -1.6

    def forward(self, x):
        h = self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x)))))
        return self.fc(self.flatten(h))


def _data(n=120, n_planted=15, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 4, (n, L))
    for i in range(min(n, n_planted)):
        s = rng.integers(0, L - len(MOTIF))
        idx[i, s:s + len(MOTIF)] = ["ACGT".index(c) for c in MOTIF]
    return nn.functional.one_hot(torch.as_tensor(idx), 4).permute(0, 2, 1).float()


def test_receptive_field_of_a_deep_layer():
    m = TwoConv()
    assert receptive_field(m, m.conv1, L) == {"length": 6, "stride": 1, "offset": 0, "width": L - 5}
    rf = receptive_field(m, m.relu2, L)
    assert (rf["length"], rf["stride"], rf["offset"]) == (6 + 2 * 4 - 1, 2, 0)
    padded = nn.Sequential(nn.Conv1d(4, 3, 5, padding=2), nn.ReLU(), nn.MaxPool1d(3),
                           nn.Conv1d(3, 2, 3, padding=1))
    rf = receptive_field(padded, padded[3], 60)
    assert (rf["length"], rf["stride"], rf["offset"]) == (5 + 3 * 3 - 1, 3, -2 - 3)


def test_first_layer_channels_are_filter_pwms():
    m = TwoConv()
    X = _data(10)
    for layer in (m.conv1, m.relu1, m.pool1):
        res = channel_pwms(m, layer, [0, 1], X)
        assert res.method == "filter" and res.pwms.shape == (2, 4, 6)
        assert consensus(res.pwms[0]) == MOTIF[:6] and consensus(res.pwms[1]) == MOTIF[6:]
    with pytest.raises(ValueError, match="filter"):
        channel_pwms(m, m.relu2, [0], X, method="filter")


def test_deep_channel_pwm_matches_planted_motif_by_tomtom():
    m = TwoConv()
    m.train()
    X = _data()
    res = channel_pwms(m, m.relu2, [0, 2], X, n_top=10)
    assert m.training and res.method == "ascent"
    assert res.pwms.shape == (2, 4, 13) and res.start_pwms.shape == (2, 10, 4, 13)
    np.testing.assert_allclose(res.pwms.sum(1), 1.0, atol=1e-9)
    frag = res.fragments[res.fragments.channel == 0]
    assert set(frag.seq_idx) <= set(range(15))  # top fragments are the planted sequences
    assert (frag.activation_after > frag.activation).all()  # the ascent raised the activation
    core = trim_pwm(res.pwms[0], 1.0)
    assert MOTIF in consensus(core) or consensus(core) in MOTIF
    hits = channel_tomtom(res, n_nearest=3)
    best = hits[(hits["query"] == 0) & (hits["rank"] == 1)].iloc[0]
    assert best.target_name == "PROX1" and best.p_value < 1e-3, hits.head()
    other = hits[(hits["query"] == 2) & (hits["rank"] == 1)].iloc[0]
    assert other.target_name != "PROX1" or other.p_value > 1e-3
    # n_steps=0 skips the ascent: the same fragments, no change in activation
    res0 = channel_pwms(m, m.relu2, [0, 2], X, n_top=10, n_steps=0)
    np.testing.assert_array_equal(res0.fragment_pwms, res.fragment_pwms)
    np.testing.assert_allclose(res0.fragments.activation_after, res0.fragments.activation, rtol=1e-5)


def test_ascent_with_repeated_channels_and_fewer_sequences_than_n_top():
    # the starts were grouped by channel id: a repeated channel merged into one group and the
    # reshape to (C, T, 4, k) failed ("cannot reshape" / "unequal starts per channel")
    m = TwoConv()
    X = _data(12, n_planted=6)
    one = {c: channel_pwms(m, m.relu2, [c], X, n_top=5, n_steps=3) for c in (0, 2)}
    res = channel_pwms(m, m.relu2, [0, 2, 0], X, n_top=5, n_steps=3)
    assert res.channels == [0, 2, 0] and res.pwms.shape == (3, 4, 13)
    assert res.start_pwms.shape == (3, 5, 4, 13) and res.optimized.shape == (3, 5, 4, 13)
    assert list(res.fragments.slot) == [0] * 5 + [1] * 5 + [2] * 5
    assert list(res.fragments.channel) == [0] * 5 + [2] * 5 + [0] * 5
    for slot, c in enumerate(res.channels):
        for name in ("pwms", "start_pwms", "optimized", "fragment_pwms"):
            np.testing.assert_allclose(getattr(res, name)[slot], getattr(one[c], name)[0],
                                       atol=1e-5, err_msg=f"{name} {slot}")
    # fewer sequences than n_top: T = N starts per entry
    few = channel_pwms(m, m.relu2, [2, 2], X[:4], n_top=10, n_steps=0)
    assert few.start_pwms.shape == (2, 4, 4, 13) and len(few.fragments) == 8
    np.testing.assert_array_equal(few.pwms[0], few.pwms[1])


def test_channel_seqlets_wraps_recursive_seqlets(monkeypatch):
    """channel_seqlets hands tangermeme one (N, L) track per channel (attributions summed over
    bases) and labels the rows. (tangermeme's seqlet code is numba-compiled without a cache:
    ~30 s per process, so the real call is exercised by the example, not here.)"""
    import pandas as pd
    import tangermeme.seqlet

    m = TwoConv()
    X = _data(12, n_planted=6)
    attr = channel_attributions(m, m.relu2, [0, 2], X, n_shuffles=5)
    seen = []

    def fake(track, threshold=0.01, **kw):
        seen.append((track.clone(), threshold, kw))
        best = track.abs().argmax(1)
        return pd.DataFrame({"example_idx": range(len(track)), "start": best, "end": best + 1,
                             "attribution": track.max(1).values, "p-value": 0.0})

    monkeypatch.setattr(tangermeme.seqlet, "recursive_seqlets", fake)
    df = channel_seqlets(attr, channels=[0, 2], threshold=0.05, min_seqlet_len=3)
    assert len(seen) == 2 and seen[0][1] == 0.05 and seen[0][2] == {"min_seqlet_len": 3}
    torch.testing.assert_close(seen[1][0], attr[1].sum(1))
    assert list(df.columns[:2]) == ["channel", "example_idx"] and len(df) == 24
    assert (df.channel.values[:12] == 0).all() and (df.channel.values[12:] == 2).all()
    # the planted-motif detector's attribution peaks inside the planted motif
    planted = df[(df.channel == 0) & (df.example_idx < 6)]
    assert (planted.attribution > 0).all()


def test_bad_input():
    m = TwoConv()
    X = _data(5)
    with pytest.raises(ValueError, match="method"):
        channel_pwms(m, m.relu2, [0], X, method="pca")
    with pytest.raises(ValueError, match="X"):
        channel_pwms(m, m.relu2, [0], None, method="ascent")
    with pytest.raises(ValueError, match="range"):
        channel_pwms(m, m.relu2, [9], X)
    with pytest.raises(ValueError, match="n_steps"):
        channel_pwms(m, m.relu2, [0], X, n_steps=-1)
    with pytest.raises(ValueError):
        channel_seqlets(torch.zeros(2, 3, 4))


def test_channel_figures(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from deepresolve_captum.plot import (plot_channel_attributions, plot_channel_logos,
                                         pwm_logo_matrix, save_figure)

    m = TwoConv()
    X = _data(6, n_planted=3)
    res = channel_pwms(m, m.relu2, [0, 1], X, n_top=3, n_steps=50)
    fig = plot_channel_logos(res.pwms, names=res.channels, titles=["planted", "other"])
    save_figure(fig, tmp_path / "logos", formats=("png",))
    assert len([a for a in fig.axes if a.has_data()]) == 2
    ic = pwm_logo_matrix(res.pwms[0]).sum(0)
    assert ic.max() <= 2 + 1e-9 and ic.min() >= -1e-9
    attr = channel_attributions(m, m.relu2, [0, 1], X, n_shuffles=3)
    seq = pd.DataFrame({"channel": [0], "example_idx": [0], "start": [5], "end": [17]})
    fig = plot_channel_attributions(attr, channels=[0, 1], seq_idx=0, pwms=res.pwms, seqlets=seq)
    save_figure(fig, tmp_path / "attr", formats=("png",))
    assert len(fig.axes) == 4
    plt.close("all")
    with pytest.raises(ValueError):
        plot_channel_attributions(attr[0], seq_idx=0)


def test_ascent_on_a_globally_pooled_layer_says_so():
    from deepresolve_captum.channel_motifs import channel_pwms
    from deepresolve_captum.zoo import EncodeTFModel

    m = EncodeTFModel().eval()
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (10, 101)), 4).transpose(1, 2).float()
    with pytest.raises(ValueError, match="global pooling"):
        channel_pwms(m, m.pool, [7], X, method="ascent")


@pytest.mark.parametrize("method", ["ascent", "filter"])
def test_float64_model_with_sequences(method):
    """A float64 model: the sequences are cast to its dtype (they were cast to float32 and the
    model raised 'Input type (float) and bias type (double)'); the same PWMs as in float32."""
    m = TwoConv()
    X = _data(40)
    a = channel_pwms(m, m.relu2 if method == "ascent" else m.conv1, [0], X, method=method,
                     n_steps=5)
    m64 = TwoConv().double()
    b = channel_pwms(m64, m64.relu2 if method == "ascent" else m64.conv1, [0], X.double(),
                     method=method, n_steps=5)
    np.testing.assert_allclose(b.pwms[0], a.pwms[0], atol=1e-4)


class _SparseDetectors(nn.Module):
    """Two exact 6-mer detectors (bias -5.5: they fire only on CAGGTC / GCTCAT) -> ReLU ->
    MaxPool(2) -> dense: on random sequence their units are off, so no gradient passes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 2, 6)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(2 * 22, 1)
        with torch.no_grad():
            self.conv.weight.fill_(-1.0)
            for f, motif in enumerate(("CAGGTC", "GCTCAT")):
                for j, c in enumerate(motif):
                    self.conv.weight[f, "ACGT".index(c), j] = 1.0
            self.conv.bias.fill_(-5.5)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_ascent_on_sparse_detectors_and_no_gradients_left():
    """The receptive field of units that never fire on random probes is still found (ReLUs pass
    gradient straight through while probing; it used to raise 'dead units?'), and neither the
    probes nor the ascent leave .grad on the model's parameters."""
    torch.manual_seed(0)
    m = _SparseDetectors().eval()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (40, 50))
    for i in range(40):
        for motif in ("CAGGTC", "GCTCAT"):
            s = rng.integers(0, 44)
            idx[i, s:s + 6] = ["ACGT".index(c) for c in motif]
    X = nn.functional.one_hot(torch.as_tensor(idx), 4).permute(0, 2, 1).float()
    rf = receptive_field(m, m.relu, 50)                        # random probes only
    assert (rf["length"], rf["stride"], rf["offset"]) == (6, 1, 0)
    r = channel_pwms(m, m.relu, [0, 1], X, method="ascent", n_steps=20)
    assert [consensus(p) for p in r.pwms] == ["CAGGTC", "GCTCAT"]
    assert all(p.grad is None for p in m.parameters())
    assert all(p.requires_grad for p in m.parameters())


def test_ascent_on_a_layer_pooling_nearly_everything_names_the_way_out():
    m = nn.Sequential(nn.Conv1d(4, 2, 6), nn.ReLU(), nn.MaxPool1d(45), nn.Flatten(), nn.Linear(2, 1))
    X = nn.functional.one_hot(torch.randint(0, 4, (8, 50)), 4).permute(0, 2, 1).float()
    with pytest.raises(ValueError, match=r"one position for 50 bp inputs.*layer before the pooling"):
        channel_pwms(m, m[2], [0], X, method="ascent")
    assert channel_pwms(m, m[1], [0], X, method="ascent", n_steps=2).pwms.shape == (1, 4, 6)


def _gattaca_net(bias, bn_scale=None):
    """conv (2 filters holding GATTACAGC, 9 bp, padding 4) -> [BatchNorm] -> ReLU -> MaxPool(4)."""
    conv = nn.Conv1d(4, 2, 9, padding=4)
    with torch.no_grad():
        conv.weight.fill_(-1.0)
        for j, b in enumerate("GATTACAGC"):
            conv.weight[:, "ACGT".index(b), j] = 1.0
        conv.bias.fill_(bias)
    mods = [conv]
    if bn_scale is not None:
        bn = nn.BatchNorm1d(2)
        with torch.no_grad():
            bn.weight.fill_(bn_scale)
        mods.append(bn)
    mods += [nn.ReLU(), nn.MaxPool1d(4), nn.Flatten(), nn.Linear(50, 1)]
    return nn.Sequential(*mods).eval()


def test_receptive_field_is_the_wiring_not_how_often_units_fire():
    """Detectors that fire on ~1 in 3,000 windows (bias -6) have the field of the same wiring
    at bias 0: 9 bp filters behind a max-pool of 4 see 12 bp. (With the ReLU's forward value
    kept at 0, the pool's windows tie and the field came out 9.)"""
    from deepresolve_captum.motifs import random_one_hot
    X = random_one_hot(200, 100, random_state=0)
    fields = [receptive_field(m, m[-3], 100, X=X) for m in (_gattaca_net(-6.0), _gattaca_net(0.0))]
    assert fields[0] == fields[1] == {"length": 12, "stride": 4, "offset": -4, "width": 25}
    m = _gattaca_net(-6.0)
    receptive_field(m, m[-3], 100)
    assert "forward" not in m[1].__dict__ and m[1](torch.tensor([-1.0])).item() == 0.0


def test_filters_behind_a_sign_flipping_batchnorm_are_not_read_as_motifs():
    """A negative BatchNorm scale makes a channel prefer the opposite of its filter: 'auto'
    must not return the filter then; a positive scale keeps the filter rule."""
    from deepresolve_captum.motifs import random_one_hot
    X = random_one_hot(100, 100, random_state=0)
    for scale, method in ((1.0, "filter"), (-1.0, "ascent")):
        m = _gattaca_net(0.0, bn_scale=scale)
        cm = channel_pwms(m, m[-3], [0], X, n_steps=5, n_top=10)
        assert cm.method == method, (scale, cm.method)


def test_channel_tomtom_says_where_the_trimmed_query_starts():
    """offset is relative to the trimmed query; trim_start maps it back to the PWM as given."""
    from deepresolve_captum.motifs import load_jaspar
    jaspar = load_jaspar()
    ctcf = jaspar.pwms[jaspar.index("CTCF")]
    padded = np.hstack([np.full((4, 6), 0.25), ctcf])
    df = channel_tomtom([padded, ctcf], jaspar, n_nearest=3)
    top = df[(df["target_name"] == "CTCF") & (df["strand"] == "+")].set_index("query_idx")
    assert top.loc[0, "trim_start"] - top.loc[1, "trim_start"] == 6
    assert top.loc[0, "offset"] == top.loc[1, "offset"]
    assert (top["offset"] - top["trim_start"]).tolist() == [top.loc[1, "offset"] - top.loc[1, "trim_start"] - 6,
                                                           top.loc[1, "offset"] - top.loc[1, "trim_start"]]


def test_bfloat16_pwms_are_read_as_float32():
    """trim_pwm, consensus and channel_tomtom raised numpy's 'Got unsupported ScalarType
    BFloat16' for bf16 tensors (e.g. the PWMs of a bf16 model's channels)."""
    p = torch.full((4, 9), 0.25)
    p[:, 2:7] = 0.1
    p[torch.tensor([0, 1, 2, 3, 0]), torch.arange(2, 7)] = 0.7          # ACGTA, flanked
    p16 = p.to(torch.bfloat16)
    np.testing.assert_array_equal(trim_pwm(p16), trim_pwm(p16.float().numpy()))
    assert trim_pwm(p16).shape == (4, 5) and consensus(p16) == "AAACGTAAA"
    targets = list(np.random.default_rng(0).dirichlet(np.ones(4), size=(30, 8)).transpose(0, 2, 1))
    df = channel_tomtom([p16], targets, min_ic=None, n_nearest=1)
    assert df["consensus"].tolist() == ["AAACGTAAA"]


def test_input_of_the_first_conv_is_not_read_as_its_filters():
    """channel_pwms(X=None, attribute_to_layer_input=True) on the first conv returned the
    conv's *filter* PWMs for its input channels (the 4 bases), even for channel 5; with X
    given the same call was refused. The input of conv1 is the one-hot sequence, not filters."""
    m = TwoConv()
    with pytest.raises(ValueError, match="needs sequences X"):
        channel_pwms(m, m.conv1, [0, 5], None, attribute_to_layer_input=True)
    with pytest.raises(ValueError, match="first-layer convolution filters"):
        channel_pwms(m, m.conv1, [0], None, method="filter", attribute_to_layer_input=True)
    assert channel_pwms(m, m.conv1, [0, 5], None).method == "filter"     # its output: filters


def test_channel_tomtom_takes_one_matrix_as_tomtom_does():
    """One (4, w) matrix was iterated row by row ('pwm must have shape (4, w), got (19,)');
    motifs.tomtom takes it as one query."""
    from deepresolve_captum.motifs import load_jaspar
    jaspar = load_jaspar()
    ctcf = jaspar.pwms[jaspar.index("CTCF")]
    one = channel_tomtom(ctcf, jaspar, n_nearest=2)
    listed = channel_tomtom([ctcf], jaspar, n_nearest=2)
    pd.testing.assert_frame_equal(one, listed)
    assert one["target_name"].iloc[0] == "CTCF"
    one32 = channel_tomtom(torch.tensor(ctcf, dtype=torch.float32), jaspar, n_nearest=1)
    assert one32["target_name"].tolist() == ["CTCF"]
    with pytest.raises(ValueError, match="shape"):
        channel_tomtom(ctcf[:3], jaspar)


def test_ascent_on_a_bfloat16_model():
    """receptive_field and channel_pwms(method='ascent') raised numpy's 'Got unsupported
    ScalarType BFloat16' (the probes' gradients, then the fragments cut from X cast to the
    model's dtype). A bf16 model gives the float32 model's field and fragments."""
    X = _data(40)
    m32, m16 = TwoConv(), TwoConv().to(torch.bfloat16)
    assert receptive_field(m16, m16.relu2, L) == receptive_field(m32, m32.relu2, L)
    a = channel_pwms(m32, m32.relu2, [0], X, method="ascent", n_top=5, n_steps=3)
    b = channel_pwms(m16, m16.relu2, [0], X, method="ascent", n_top=5, n_steps=3)
    assert b.pwms.dtype == np.float64 and b.pwms.shape == a.pwms.shape == (1, 4, 13)
    np.testing.assert_allclose(b.pwms.sum(1), 1.0, atol=1e-9)
    assert set(b.fragments.seq_idx) == set(a.fragments.seq_idx)
    np.testing.assert_array_equal(b.fragment_pwms, a.fragment_pwms)


class _OneLength(nn.Module):
    """Three 'same'-padded 9 bp convs (a 25 bp field, stride 1, offset -12) that refuse any
    input length but ``length``."""

    def __init__(self, length=None):
        super().__init__()
        torch.manual_seed(0)
        self.length = length
        self.net = nn.Sequential(nn.Conv1d(4, 8, 9, padding=4), nn.ReLU(),
                                 nn.Conv1d(8, 8, 9, padding=4), nn.ReLU(),
                                 nn.Conv1d(8, 4, 9, padding=4), nn.ReLU())

    def forward(self, x):
        if self.length is not None and x.shape[-1] != self.length:
            raise ValueError(f"this model takes {self.length} bp sequences")
        return self.net(x).flatten(1)


def test_receptive_field_about_as_long_as_the_sequence():
    """Where the fields of the probed positions reach both sequence ends, the stride came out
    0 and the length the sequence length (20 bp inputs: {'length': 20, 'stride': 0, ...}),
    and channel_pwms went on with whole-sequence 'PWMs'. Now the field is measured on longer
    probes; a model of one input length is refused with the reason."""
    from deepresolve_captum.motifs import random_one_hot
    m = _OneLength().eval()
    true = {"length": 25, "stride": 1, "offset": -12}
    for n in (100, 25, 20, 12):
        assert receptive_field(m, m.net[5], n) == {**true, "width": n}, n
    with pytest.raises(ValueError, match=r"receptive field \(25 bp\) does not fit in sequences "
                                         r"of 20 bp"):
        channel_pwms(m, m.net[5], [0], random_one_hot(10, 20, random_state=0), n_steps=2)
    fixed = _OneLength(20).eval()
    with pytest.raises(ValueError, match=r"at least 20 bp long.*the model takes no longer ones"):
        receptive_field(fixed, fixed.net[5], 20)
    fixed = _OneLength(100).eval()                        # room enough: no second probe
    assert receptive_field(fixed, fixed.net[5], 100) == {**true, "width": 100}
    fixed = _OneLength(26).eval()      # fields touching the ends, no longer probe: a warning
    with pytest.warns(RuntimeWarning, match="may be clipped") as rec:
        assert receptive_field(fixed, fixed.net[5], 26) == {**true, "width": 26}
    assert rec[0].filename == __file__


def test_a_channel_that_never_fires_gets_a_uniform_pwm_and_a_warning():
    """A channel X never switches on (a ReLU unit with bias -50) has no gradient at any start:
    the ascent only shrank its random fragments, _align then lined them up into a made-up
    consensus (4.5 bits, TOMTOM hit NFYB at p = 0.01), silently. Now its starts are uniform
    and left out, its PWM is uniform, and a warning names it; the same channel before the ReLU
    (m.conv2, linear: gradient flows) is a real ascent."""
    import warnings as _w
    from deepresolve_captum.motifs import information_content
    m = TwoConv()
    with torch.no_grad():
        m.conv2.bias[3] = -50.0
    X = _data(20)
    with pytest.warns(RuntimeWarning, match=r"channel\(s\) \[3\] never respond") as rec:
        r = channel_pwms(m, m.relu2, [0, 3], X, n_top=5, n_steps=5)
    assert len(rec) == 1 and rec[0].filename == __file__
    np.testing.assert_array_equal(r.pwms[1], 0.25)
    np.testing.assert_array_equal(r.start_pwms[1], 0.25)
    np.testing.assert_array_equal(r.fragment_pwms[1], 0.25)
    f = r.fragments
    assert not f[f.slot == 1][["informative_before", "informative"]].values.any()
    assert f[f.slot == 0][["informative_before", "informative"]].values.all()
    with _w.catch_warnings():
        _w.simplefilter("error")
        alone = channel_pwms(m, m.relu2, [0], X, n_top=5, n_steps=5)
        pre = channel_pwms(m, m.conv2, [3], X, n_top=5, n_steps=5)   # no warning
    np.testing.assert_array_equal(r.pwms[0], alone.pwms[0])
    assert pre.fragments["informative"].all() and information_content(pre.pwms)[0] > 3


def test_starts_the_channel_does_not_read_are_left_out():
    """3 of 12 sequences hold the motif; the other 5 of the 8 starts of the motif detector are
    random fragments it does not respond to (activation 0, no gradient). They were averaged in,
    diluting the PWM and the fragment PWM with random bases."""
    from deepresolve_captum.motifs import column_information
    m = TwoConv()
    r = channel_pwms(m, m.relu2, [0], _data(12, n_planted=3), n_top=8, n_steps=20)
    f = r.fragments
    assert f["informative"].tolist() == [True] * 3 + [False] * 5
    assert (f["informative_before"] == f["informative"]).all()
    np.testing.assert_array_equal(r.start_pwms[0, 3:], 0.25)
    np.testing.assert_allclose(r.pwms[0], r.start_pwms[0, :3].mean(0))
    assert MOTIF in consensus(trim_pwm(r.pwms[0], 1.0))
    # the three planted fragments agree: every motif column is one base
    assert consensus(trim_pwm(r.fragment_pwms[0], 1.99)) == MOTIF
    assert column_information(r.fragment_pwms[0]).sum() >= 2 * len(MOTIF) - 1e-9
