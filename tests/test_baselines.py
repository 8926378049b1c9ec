"""Channel-scoring baselines on small models whose answers are known in closed form."""
import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum import baselines as B
from deepresolve_captum.zoo import EncodeTFModel

BASES = "ACGT"
KMERS = ["GATTACA", "CCGCGGT", "TTTAAAC"]


def one_hot(seq):
    x = torch.zeros(4, len(seq))
    for i, b in enumerate(seq):
        x[BASES.index(b), i] = 1
    return x


def small_model(w_out=(2.0, -1.0, 0.5), seed=0):
    """EncodeTFModel(3 filters of 7 bp, 3 hidden): filter k detects KMERS[k]; the head is
    logit = sum_k w_out[k] * H_k (fc1 = identity, ReLU inactive since H >= 0)."""
    torch.manual_seed(seed)
    m = EncodeTFModel(n_filters=3, filter_len=7, n_hidden=3, dropout=0.5)
    with torch.no_grad():
        for k, s in enumerate(KMERS):
            m.conv.weight[k] = 2 * one_hot(s) - 1
        m.conv.bias.fill_(-4.0)  # fires (> 0) on >= 6 of 7 matching bases
        m.fc1.weight.copy_(torch.eye(3))
        m.fc1.bias.zero_()
        m.fc2.weight.copy_(torch.tensor([w_out]))
        m.fc2.bias.fill_(-1.0)
    return m.train()  # the baselines must switch dropout off themselves


def random_seqs(n, L=40, seed=0, plant=None):
    g = torch.Generator().manual_seed(seed)
    X = nn.functional.one_hot(torch.randint(0, 4, (n, L), generator=g), 4).float().transpose(1, 2)
    if plant:
        for i in range(n):
            for j, s in enumerate(plant):
                X[i, :, 3 + 12 * j: 3 + 12 * j + len(s)] = one_hot(s)
    return X.contiguous()


def _unchanged(model, before):
    assert model.training is before[0]
    assert all(p.requires_grad for p in model.parameters())
    for (k, v), v0 in zip(model.state_dict().items(), before[1]):
        assert torch.equal(v, v0), k


def _snapshot(model):
    return model.training, [v.clone() for v in model.state_dict().values()]


def test_model_positives_are_the_top_scoring():
    m = small_model()
    X, s = B.model_positives(m, n=20, n_candidates=2000, seq_len=40, random_state=0,
                             return_scores=True)
    assert X.shape == (20, 4, 40) and torch.all(X.sum(1) == 1)
    assert torch.all(s[:-1] >= s[1:])
    with torch.no_grad():
        np.testing.assert_allclose(m.eval()(X)[:, 0].numpy(), s.numpy(), rtol=1e-5)
        other = m(B.model_positives(m, n=2000, n_candidates=2000, seq_len=40, random_state=0))
    assert s.min() >= torch.quantile(other[:, 0], 0.99) - 1e-5
    X2 = B.model_positives(m, n=20, n_candidates=2000, seq_len=40, random_state=0)
    assert torch.equal(X, X2)
    with pytest.raises(ValueError):
        B.model_positives(m, n=10, n_candidates=5)


def test_saliency_and_grad_x_input_closed_form():
    m = small_model()
    before = _snapshot(m)
    X = random_seqs(30, plant=KMERS)
    sal = B.layer_saliency(m, m.fc1, X, attribute_to_layer_input=True)
    np.testing.assert_allclose(sal.numpy(), [2.0, -1.0, 0.5], atol=1e-6)
    with torch.no_grad():
        H = m.pool(m.relu(m.conv(X)))[:, :, 0]
    gxi = B.layer_grad_x_input(m, m.fc1, X, attribute_to_layer_input=True)
    np.testing.assert_allclose(gxi.numpy(), (H * torch.tensor([2.0, -1.0, 0.5])).mean(0).numpy(),
                               rtol=1e-5)
    full = B.layer_grad_x_input(m, m.fc1, X, attribute_to_layer_input=True, reduce=False)
    assert full.shape == (30, 3)
    # at a layer *output* with positions: (N, C, W) averaged over examples and positions
    conv_sal = B.layer_saliency(m, m.relu, X, reduce=False)
    assert conv_sal.shape == (30, 3, 40)
    assert B.layer_saliency(m, m.relu, X).shape == (3,)
    _unchanged(m, before)


def test_deeplift_closed_form_and_complete():
    m = small_model()
    before = _snapshot(m)
    X = random_seqs(16, plant=KMERS)
    R = random_seqs(16, seed=5)
    w = torch.tensor([2.0, -1.0, 0.5])
    with torch.no_grad():
        H = m.pool(m.relu(m.conv(X)))[:, :, 0]
        Hr = m.pool(m.relu(m.conv(R)))[:, :, 0]
    dl = B.layer_deeplift(m, m.fc1, X, references=R, attribute_to_layer_input=True)
    np.testing.assert_allclose(dl.numpy(), ((H - Hr) * w).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    delta = B.deeplift_delta(m, m.fc1, X, R, attribute_to_layer_input=True)
    assert delta.abs().max() < 1e-4
    # shuffled references: one call, seeded, reproducible
    a = B.layer_channel_scores(m, m.fc1, X, "deeplift", attribute_to_layer_input=True,
                               random_state=3, n_shuffles=4)
    b = B.layer_channel_scores(m, m.fc1, X, "deeplift", attribute_to_layer_input=True,
                               random_state=3, n_shuffles=4)
    assert a.shape == (3,) and torch.equal(a, b)
    assert a[0] > 0 and a[1] < 0  # the planted k-mers beat their shuffles
    _unchanged(m, before)


def test_deeplift_leaves_no_activations_on_the_modules():
    """Captum's LayerDeepLift stores module.input / .output on every nonlinearity it hooks and
    deletes them only in a backward pass, which never reaches the modules before the layer: they
    kept the last batch's activations. Nothing set during a call stays; the user's own
    attributes do."""
    m = small_model()
    m.relu.note = "mine"
    before = {n: set(mod.__dict__) for n, mod in m.named_modules()}
    B.layer_channel_scores(m, m.fc1, random_seqs(4), "deeplift", attribute_to_layer_input=True,
                           n_shuffles=2, random_state=0)
    B.deeplift_delta(m, m.fc1, random_seqs(4), random_seqs(4, seed=1),
                     attribute_to_layer_input=True)
    assert {n: set(mod.__dict__) for n, mod in m.named_modules()} == before
    assert m.relu.note == "mine"


def test_deeplift_references_per_sequence():
    # (N, R, 4, L), the layout of make_references: reference r of sequence i is R[i, r]; a
    # reference paired with the wrong sequence changes the closed form below
    m = small_model()
    X = random_seqs(6, plant=KMERS)
    R = torch.stack([random_seqs(6, seed=s) for s in (5, 6, 7)], dim=1)       # (6, 3, 4, L)
    w = torch.tensor([2.0, -1.0, 0.5])
    with torch.no_grad():
        H = m.pool(m.relu(m.conv(X)))[:, :, 0]                               # (N, C)
        Hr = torch.stack([m.pool(m.relu(m.conv(R[:, r])))[:, :, 0] for r in range(3)], 1)
    per_seq = B.layer_deeplift(m, m.fc1, X, references=R, attribute_to_layer_input=True,
                               reduce=False)                                 # (N, C)
    np.testing.assert_allclose(per_seq.numpy(), ((H[:, None] - Hr) * w).mean(1).numpy(),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, R, 4, L\)"):
        B.layer_deeplift(m, m.fc1, X, references=R.transpose(0, 1)[:, :4],
                         attribute_to_layer_input=True)


def test_deeplift_complete_through_nonlinear_head():
    """A real ReLU head (random weights): DeepLIFT at the fc1 input is complete; the max-pool
    before it is not traversed."""
    torch.manual_seed(1)
    m = EncodeTFModel(n_filters=8, filter_len=9, n_hidden=16).eval()
    X, R = random_seqs(12, L=50, seed=1), random_seqs(12, L=50, seed=2)
    delta = B.deeplift_delta(m, m.fc1, X, R, attribute_to_layer_input=True)
    assert delta.abs().max() < 1e-4


def test_channel_scores_rank_the_important_channel_first():
    m = small_model(w_out=(0.2, -1.0, 3.0))
    X = B.model_positives(m, n=50, n_candidates=3000, seq_len=40, random_state=0)
    for method in ("saliency", "grad_x_input", "deeplift"):
        s = B.layer_channel_scores(m, m.fc1, X, method, attribute_to_layer_input=True,
                                   random_state=0)
        assert int(torch.argmax(s)) == 2, method
        if method == "saliency":  # the others see ~0 for a k-mer absent from the positives
            assert int(torch.argmin(s)) == 1


def test_bad_arguments():
    m = small_model()
    X = random_seqs(4)
    with pytest.raises(ValueError):
        B.layer_channel_scores(m, m.fc1, X, "lrp")
    with pytest.raises(ValueError):
        B.layer_saliency(m, m.fc1, X[:, :3])
    with pytest.raises(TypeError):
        B.layer_saliency(m, "fc1", X)
    with pytest.raises(ValueError):
        B.layer_saliency(m, m.fc1, X, target=3)
    with pytest.raises(ValueError):
        B.deepmotif_pwms(m, n_top=5, n_starts=2)
    with pytest.raises(ValueError):
        B.deepmotif_pwms(m, n_top=1, n_starts=2, window="best")


class _ReLUTwice(nn.Module):
    """One nn.ReLU module applied twice in the forward pass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4 * 40, 5)
        self.relu = nn.ReLU()
        self.out = nn.Linear(5, 1)

    def forward(self, x):
        return self.out(self.relu(self.relu(self.fc(x.flatten(1)) - 1) + 0.5))


@pytest.mark.parametrize("method", ["saliency", "grad_x_input", "deeplift"])
def test_a_layer_not_reached_or_called_twice_is_refused(method):
    """A layer outside the model gave "TypeError: 'NoneType' object is not iterable"; a layer
    called twice per forward pass was scored at its last call, silently. Both are refused
    before any work, as LayerFeatureOptimizer and channel_ablation refuse them."""
    X, kw = random_seqs(4), dict(n_shuffles=1) if method == "deeplift" else {}
    m = small_model()
    with pytest.raises(ValueError, match="layer ReLU was not reached by the forward pass"):
        B.layer_channel_scores(m, nn.ReLU(), X, method, **kw)
    t = _ReLUTwice()
    for to_input in (False, True):
        with pytest.raises(ValueError, match="layer relu is called 2 times per forward pass"):
            B.layer_channel_scores(t, t.relu, X, method, attribute_to_layer_input=to_input, **kw)
    assert not t.relu._forward_hooks and not t.relu._forward_pre_hooks
    with pytest.raises(ValueError, match="called 2 times"):
        B.deeplift_delta(t, t.relu, X, random_seqs(4, seed=1))


def test_deepmotif_generates_the_favoured_kmer():
    m = small_model(w_out=(3.0, 0.0, 0.0))
    with torch.no_grad():
        m.conv.bias.fill_(4.0)  # alive at the random starts (a dead ReLU has no gradient)
    before = _snapshot(m)
    X, s = B.deepmotif(m, n_starts=6, seq_len=30, l2=0.1, lr=0.1, n_steps=100, random_state=0)
    assert X.shape == (6, 4, 30) and torch.all(s[:-1] >= s[1:])
    P, sc = B.deepmotif_pwms(m, width=7, n_top=3, n_starts=6, seq_len=30, l2=0.1, lr=0.1,
                             n_steps=100, random_state=0)
    assert P.shape == (3, 4, 7) and sc.shape == (3,)
    np.testing.assert_allclose(P.sum(1), 1.0)
    for p in P:
        assert "".join(BASES[i] for i in p.argmax(0)) == KMERS[0]
    for window in ("contrast", "ic"):
        Pw, _ = B.deepmotif_pwms(m, width=7, n_top=2, n_starts=6, seq_len=30, l2=0.1, lr=0.1,
                                 n_steps=100, random_state=0, window=window)
        assert "".join(BASES[i] for i in Pw[0].argmax(0)) == KMERS[0], window
    P2, _ = B.deepmotif_pwms(m, width=7, n_top=3, n_starts=6, seq_len=30, l2=0.1, lr=0.1,
                             n_steps=100, random_state=0)
    np.testing.assert_array_equal(P, P2)
    _unchanged(m, before)


class FunctionalReLUModel(EncodeTFModel):
    """EncodeTFModel with functional ReLUs (the same function): Captum's DeepLift sees no
    nonlinearity to apply its rule to and treats both as linear."""

    def forward(self, x):
        x = self.flatten(self.pool(nn.functional.relu(self.conv(x))))
        return self.fc2(self.dropout(nn.functional.relu(self.fc1(x))))


class Squeezed(nn.Module):
    """A binary classifier returning one logit per sequence, shape (N,)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).squeeze(-1)


def _no_warning(fn, *args, **kwargs):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


def test_deeplift_warns_when_not_complete():
    """Functional nonlinearities, and a global max-pool after the layer, break DeepLIFT's
    summation-to-delta: layer_deeplift says so; at the fc1 input of an nn.ReLU model it is
    silent."""
    torch.manual_seed(1)
    m = EncodeTFModel(n_filters=8, filter_len=9, n_hidden=16).eval()
    mf = FunctionalReLUModel(n_filters=8, filter_len=9, n_hidden=16).eval()
    mf.load_state_dict(m.state_dict())
    X = random_seqs(12, L=50, seed=1)
    ok = _no_warning(B.layer_deeplift, m, m.fc1, X, attribute_to_layer_input=True,
                     n_shuffles=2, random_state=0)
    with pytest.warns(RuntimeWarning, match=r"not DeepLIFT.*functional nonlinearity"):
        bad = B.layer_deeplift(mf, mf.fc1, X, attribute_to_layer_input=True, n_shuffles=2,
                               random_state=0)
    assert not torch.allclose(ok, bad)                   # the warning is about a real difference
    for layer in (m.conv, m.relu):                       # AdaptiveMaxPool1d after the layer
        with pytest.warns(RuntimeWarning, match=r"max-pooling after the layer.*#1276") as rec:
            B.layer_deeplift(m, layer, X, n_shuffles=2, random_state=0)
        assert rec[0].filename == __file__               # the user's line, not the package's
    with pytest.warns(RuntimeWarning, match="not DeepLIFT") as rec:
        B.layer_channel_scores(m, m.conv, X, "deeplift", n_shuffles=2, random_state=0)
    assert rec[0].filename == __file__
    _no_warning(B.layer_deeplift, mf, mf.conv, X, n_shuffles=2, random_state=0,
                check_completeness=0)
    with pytest.raises(ValueError, match="check_completeness"):
        B.layer_deeplift(m, m.fc1, X, attribute_to_layer_input=True, check_completeness=-1)


def test_deeplift_warns_on_the_real_ctcf_model(shared_dir):
    """The ENCODE CTCF model: at the fc1 input (the benchmark's layer) DeepLIFT is complete
    (miss ~3e-6 logits); rewritten with F.relu (miss ~8 logits) or taken at the conv output
    (before AdaptiveMaxPool1d, miss up to ~5 logits on differences ~10) it is not."""
    from deepresolve_captum.zoo import load_encode_zoo
    m = next(iter(load_encode_zoo(shared_dir / "data" / "encode422",
                                  names=["wgEncodeAwgTfbsBroadDnd41CtcfUniPk"]).values()))
    mf = FunctionalReLUModel().eval()
    mf.load_state_dict(m.state_dict())
    X = B.model_positives(m, n=20, n_candidates=1000, random_state=0)
    _no_warning(B.layer_deeplift, m, m.fc1, X, attribute_to_layer_input=True, n_shuffles=2,
                random_state=0)
    with pytest.warns(RuntimeWarning, match="not DeepLIFT"):
        B.layer_deeplift(mf, mf.fc1, X, attribute_to_layer_input=True, n_shuffles=2,
                         random_state=0)
    with pytest.warns(RuntimeWarning, match="not DeepLIFT"):
        B.layer_deeplift(m, m.conv, X, n_shuffles=2, random_state=0)


def test_float64_model():
    """A model.double() runs in float64 (inputs and generated sequences cast to its dtype);
    results are float32 and equal the float32 model's."""
    m = small_model()
    m64 = small_model().double()
    X = random_seqs(10, plant=KMERS)
    for fn in (B.layer_saliency, B.layer_grad_x_input, B.layer_deeplift):
        kw = dict(random_state=0, n_shuffles=2) if fn is B.layer_deeplift else {}
        a = fn(m, m.fc1, X, attribute_to_layer_input=True, **kw)
        b = fn(m64, m64.fc1, X.numpy(), attribute_to_layer_input=True, **kw)  # arrays too
        assert b.dtype == torch.float32
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    d = B.deeplift_delta(m64, m64.fc1, X, random_seqs(10, seed=3), attribute_to_layer_input=True)
    assert d.abs().max() < 1e-10
    X32, s32 = B.model_positives(m, n=5, n_candidates=300, seq_len=40, random_state=0,
                                 return_scores=True)
    X64, s64 = B.model_positives(m64, n=5, n_candidates=300, seq_len=40, random_state=0,
                                 return_scores=True)
    assert torch.equal(X32, X64) and X64.dtype == torch.float32
    np.testing.assert_allclose(s64.numpy(), s32.numpy(), rtol=1e-5)
    P, sc = B.deepmotif_pwms(m64, width=7, n_top=2, n_starts=3, seq_len=30, n_steps=5,
                             random_state=0)
    assert P.shape == (2, 4, 7) and np.isfinite(sc).all()


def test_deeplift_with_1d_output():
    """A model returning (N,) (one logit per sequence): every baseline gives the (N, 1)
    model's answer; target indexes the flattened output, so only 0 exists."""
    m = small_model(w_out=(0.2, -1.0, 3.0))
    sq = Squeezed(m)
    X = random_seqs(8, plant=KMERS)
    for method in ("saliency", "grad_x_input", "deeplift"):
        a = B.layer_channel_scores(m, m.fc1, X, method, attribute_to_layer_input=True,
                                   random_state=0, **({"n_shuffles": 2} if method == "deeplift" else {}))
        b = B.layer_channel_scores(sq, m.fc1, X, method, attribute_to_layer_input=True,
                                   random_state=0, **({"n_shuffles": 2} if method == "deeplift" else {}))
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)
    R = random_seqs(8, seed=4)
    np.testing.assert_allclose(B.deeplift_delta(sq, m.fc1, X, R, attribute_to_layer_input=True),
                               B.deeplift_delta(m, m.fc1, X, R, attribute_to_layer_input=True),
                               atol=1e-6)
    with pytest.raises(ValueError, match=r"target must be an int in \[0, 1\).*got 1"):
        B.layer_deeplift(sq, m.fc1, X, target=1, attribute_to_layer_input=True, n_shuffles=1)


class _Profile(nn.Module):
    """A (N, 2, L) profile model: two tracks of per-position logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 3, 5, padding=2)
        self.relu = nn.ReLU()
        self.head = nn.Conv1d(3, 2, 1)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


def test_one_output_spelt_as_int_tuple_or_one_element_list(monkeypatch):
    """The baselines took only the flat index: (track, position) and [(track, position)]
    (LayerFeatureOptimizer's spelling of one target) failed late, after the references were
    made, with "TypeError: '<=' not supported between instances of 'int' and 'tuple'". Every
    baseline now takes an int, a tuple index or a one-element list holding either, and refuses
    anything else before any work."""
    m, L = _Profile(), 40
    X = random_seqs(4, L=L)
    for method in ("saliency", "grad_x_input", "deeplift"):
        kw = dict(n_shuffles=1, random_state=0) if method == "deeplift" else {}
        flat = B.layer_channel_scores(m, m.relu, X, method, target=1 * L + 3, **kw)
        for t in ((1, 3), [(1, 3)], [1 * L + 3]):
            torch.testing.assert_close(B.layer_channel_scores(m, m.relu, X, method, target=t, **kw),
                                       flat)
    monkeypatch.setattr(B, "_references", lambda *a, **k: pytest.fail("work before the check"))
    for bad in ((2, 3), (1, L), [(1, 3), (0, 3)], 2 * L, 2.5):
        with pytest.raises(ValueError, match=r"target must be .*one-element list"):
            B.layer_channel_scores(m, m.relu, X, "deeplift", target=bad)
    sm = small_model()
    a = B.model_positives(sm, n=3, n_candidates=50, seq_len=40, random_state=0, target=[(0,)])
    torch.testing.assert_close(a, B.model_positives(sm, n=3, n_candidates=50, seq_len=40,
                                                    random_state=0))


class _InPlaceNet(nn.Module):
    """conv -> ReLU(inplace) -> pool -> fc -> ReLU(inplace) -> out; ``inplace=False`` gives the
    same function computed out of place."""

    def __init__(self, inplace=True):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5)
        self.relu = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool1d(4)
        self.fc = nn.Linear(6 * 9, 5)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        return self.out(self.relu2(self.fc(self.pool(self.relu(self.conv(x))).flatten(1))))


@pytest.mark.parametrize("layer, to_input", [("conv", False), ("fc", False), ("relu", True),
                                             ("relu2", True), ("pool", False)])
def test_gradient_baselines_with_in_place_modules(layer, to_input):
    # an in-place ReLU after the layer (or the layer itself in place, with its input as H) wrote
    # into the leaf H: "a leaf Variable that requires grad is being used in an in-place
    # operation". The results equal those of the same model computed out of place, and H keeps
    # its value (grad x input uses it).
    torch.manual_seed(0)
    a = _InPlaceNet(inplace=False).eval()
    b = _InPlaceNet(inplace=True).eval()
    b.load_state_dict(a.state_dict())
    X = random_seqs(6, L=40, seed=1)
    for fn in (B.layer_saliency, B.layer_grad_x_input):
        for reduce in (True, False):
            ra = fn(a, getattr(a, layer), X, target=1, attribute_to_layer_input=to_input,
                    reduce=reduce)
            rb = fn(b, getattr(b, layer), X, target=1, attribute_to_layer_input=to_input,
                    reduce=reduce)
            assert torch.equal(ra, rb), (fn.__name__, reduce)
    s = B.layer_channel_scores(b, getattr(b, layer), X, "saliency", target=1,
                               attribute_to_layer_input=to_input)
    assert torch.equal(s, B.layer_saliency(a, getattr(a, layer), X, target=1,
                                           attribute_to_layer_input=to_input))
    assert b.relu.inplace and b.relu2.inplace


def test_gradient_baselines_closed_form_at_an_in_place_layer_input():
    # the input of a ReLU(inplace=True) is H: grad x input there is H * dS/dH with H before the
    # ReLU ran (negative values kept), and dS/dH is 0 where H < 0
    torch.manual_seed(0)
    m = _InPlaceNet().eval()
    X = random_seqs(4, L=40, seed=2)
    G = B.layer_saliency(m, m.relu2, X, target=0, attribute_to_layer_input=True, reduce=False)
    GX = B.layer_grad_x_input(m, m.relu2, X, target=0, attribute_to_layer_input=True, reduce=False)
    with torch.no_grad():
        H = m.fc(m.pool(m.relu(m.conv(X))).flatten(1))
    expected = (H > 0).float() * m.out.weight[0]
    torch.testing.assert_close(G, expected)
    torch.testing.assert_close(GX, H * expected)
    assert (H < 0).any() and (H > 0).any()


def test_deepmotif_pwms_columns_the_model_does_not_read_are_uniform():
    """Columns the model ignores decay to ~1e-8 under the L2 penalty; clipped and normalised
    they became random columns of up to 2 bits (a 25-bp window around a 7-bp motif carried
    ~35 bits, 20 of them noise). Now they are uniform: the window holds the motif's 14 bits."""
    from deepresolve_captum.motifs import column_information
    m = small_model(w_out=(3.0, 0.0, 0.0))
    with torch.no_grad():
        m.conv.bias.fill_(4.0)
    kw = dict(width=25, n_top=2, n_starts=3, seq_len=40, n_steps=300, random_state=0)
    P, _ = B.deepmotif_pwms(m, **kw)
    for p in P:
        # the padded conv also scores the motif hanging off the sequence start: the second
        # sequence holds 5 of its 7 bases
        ic = column_information(p)
        seen = np.flatnonzero(ic > 1e-9)
        assert seen[-1] - seen[0] == len(seen) - 1, ic.round(2)
        assert "".join(BASES[i] for i in p[:, seen].argmax(0)) in KMERS[0]
        np.testing.assert_allclose(ic[seen], 2.0, atol=1e-3)
        np.testing.assert_array_equal(np.delete(p, seen, axis=1), 0.25)
    assert column_information(P[0]).sum() == pytest.approx(14.0, abs=1e-2)   # all 7 bases
    P0, _ = B.deepmotif_pwms(m, min_mass=0, **kw)           # every column normalised
    assert column_information(P0).sum(1).min() > 20
    with pytest.raises(ValueError, match="min_mass"):
        B.deepmotif_pwms(m, min_mass=1.0, **kw)


def test_deepmotif_pwms_checks_its_arguments_before_the_ascent(monkeypatch):
    """width longer than the sequences was found only after the whole ascent (minutes on a big
    model); n_top=0 and width=0 gave raw numpy errors ('need at least one array to stack')."""
    m = small_model()

    def no_ascent(*a, **k):
        raise AssertionError("the ascent ran before the arguments were checked")

    monkeypatch.setattr(B, "deepmotif", no_ascent)
    for kw, msg in ((dict(width=102), r"width 102 longer than the sequences \(101\)"),
                    (dict(width=41, seq_len=40), r"width 41 longer than the sequences \(40\)"),
                    (dict(n_top=0), "n_top must be an int >= 1"),
                    (dict(n_top=2.5), "n_top must be an int >= 1"),
                    (dict(width=0), "width must be an int >= 1"),
                    (dict(n_starts=True), "n_starts must be an int >= 1"),
                    (dict(n_top=6, n_starts=5), r"n_top \(6\) > n_starts \(5\)"),
                    (dict(window="best"), "window must be")):
        with pytest.raises(ValueError, match=msg):
            B.deepmotif_pwms(m, **kw)
