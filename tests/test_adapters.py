"""Channel -> input attributions (adapters.py): DeepLIFT additivity through max-pooling for both
backends, batched channels == a per-channel loop, cross-backend agreement, model left as found."""
import re
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum.adapters import (channel_activations, channel_attributions,
                                         make_references)
from deepresolve_captum.zoo import PaperCNN

L = 60


def _model(seed=0):
    torch.manual_seed(seed)
    m = PaperCNN(seq_len=L, n_filters=8, n_hidden=16)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.4)
    return m


def _X(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, L), generator=g), 4).permute(0, 2, 1).float()


def _delta(model, layer, X, refs, channels):
    """(C, N): S_c(x_n) - mean_r S_c(ref_nr), the quantity DeepLIFT must add up to."""
    N, R = refs.shape[:2]
    s = channel_activations(model, layer, X, channels)
    sr = channel_activations(model, layer, refs.reshape(N * R, 4, L), channels).reshape(N, R, -1)
    return (s - sr.mean(1)).T


@pytest.mark.parametrize("layer_name", ["conv", "relu", "pool"])
def test_tangermeme_deeplift_additive_through_maxpool(layer_name):
    m = _model()
    layer = getattr(m, layer_name)
    X, chs = _X(6), [0, 3, 5]
    attr, refs = channel_attributions(m, layer, chs, X, n_shuffles=6, random_state=3,
                                      return_references=True)
    assert attr.shape == (3, 6, 4, L) and refs.shape == (6, 6, 4, L)
    d = _delta(m, layer, X, refs, chs)
    assert d.abs().max() > 0.1  # something to explain
    err = (attr.sum((2, 3)) - d).abs()
    assert err.max() <= 1e-3 * d.abs().max(), err.max()
    # non-hypothetical: only observed bases carry attribution
    assert torch.all(attr[:, ~X.bool()] == 0)


def test_captum_deeplift_guarded_through_maxpool_and_additive_before_it():
    m = _model()
    X, chs = _X(5), [1, 2]
    with pytest.raises(ValueError, match="max-pool"):
        channel_attributions(m, m.pool, chs, X, backend="captum", n_shuffles=4)
    # layers before the max-pool: Captum DeepLIFT is additive and equals tangermeme's
    for layer in (m.conv, m.relu):
        a_c, refs = channel_attributions(m, layer, chs, X, backend="captum", n_shuffles=4,
                                         return_references=True)
        a_t = channel_attributions(m, layer, chs, X, backend="tangermeme", references=refs)
        d = _delta(m, layer, X, refs, chs)
        assert (a_c.sum((2, 3)) - d).abs().max() <= 1e-3 * d.abs().max()
        torch.testing.assert_close(a_c, a_t, atol=1e-4, rtol=1e-4)
    # opting in returns Captum's own (here non-additive) result instead of raising, with a
    # warning from the additivity check
    with pytest.warns(RuntimeWarning, match="do not add up.*captum#1276"):
        a, refs = channel_attributions(m, m.pool, chs, X, backend="captum", n_shuffles=4,
                                       captum_maxpool="allow", return_references=True)
    assert a.shape == (2, 5, 4, L) and torch.isfinite(a).all()


class _FunctionalReLU(nn.Module):
    """conv -> F.relu -> conv2: DeepLIFT cannot see the functional ReLU."""

    def __init__(self, functional=True):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.conv2 = nn.Conv1d(4, 6, 5), nn.Conv1d(6, 5, 3)
        self.relu = nn.ReLU()
        self.functional = functional

    def forward(self, x):
        h = self.conv(x)
        return self.conv2(nn.functional.relu(h) if self.functional else self.relu(h))


@pytest.mark.parametrize("backend", ["tangermeme", "captum"])
@pytest.mark.parametrize("hypothetical", [False, True])
def test_deeplift_that_does_not_add_up_is_warned(backend, hypothetical):
    """A functional F.relu makes DeepLIFT silently wrong (tangermeme's own check was switched
    off): the summation-to-delta check warns; the same model with nn.ReLU stays silent, and the
    check can be switched off."""
    X = _X(6)
    kw = dict(backend=backend, n_shuffles=4, hypothetical=hypothetical)
    bad, ok = _FunctionalReLU(), _FunctionalReLU(functional=False)
    with pytest.warns(RuntimeWarning, match="do not add up.*functional nonlinearity"):
        channel_attributions(bad, bad.conv2, [0, 2], X, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_attributions(ok, ok.conv2, [0, 2], X, **kw)
        channel_attributions(bad, bad.conv2, [0, 2], X, check_additivity=False, **kw)



def test_a_large_channel_offset_does_not_hide_a_deeplift_miss():
    """The miss was judged against max(|delta|, |S(x)|): a constant offset of 500 per position in
    the channel hid a miss 5x the largest output change. |S(x)| now only buys rounding room."""
    X, bad = _X(6), _FunctionalReLU()
    with torch.no_grad():
        bad.conv2.bias += 500.0
    with pytest.warns(RuntimeWarning, match="do not add up"):
        channel_attributions(bad, bad.conv2, [0, 2], X, n_shuffles=4)
    ok = _FunctionalReLU(functional=False)
    with torch.no_grad():
        ok.conv2.bias += 500.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_attributions(ok, ok.conv2, [0, 2], X, n_shuffles=4)


def test_inplace_relu_runs_on_the_tangermeme_backend():
    """nn.ReLU(inplace=True) made tangermeme's DeepLIFT fail ("Output 0 of
    BackwardHookFunction is a view and is being modified inplace"). It now computes out of place
    for the call: the same attributions as inplace=False, and the flag is restored."""
    m, X = _model(), _X(3)
    ref = channel_attributions(m, m.pool, [1, 2], X, n_shuffles=3)
    m.relu = nn.ReLU(inplace=True)
    got = channel_attributions(m, m.pool, [1, 2], X, n_shuffles=3)
    assert torch.allclose(got, ref, atol=1e-6) and m.relu.inplace


class _SharedReLU(nn.Module):
    """One nn.ReLU module called twice (before and after the layer)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.conv2, self.act = nn.Conv1d(4, 6, 5), nn.Conv1d(6, 5, 3), nn.ReLU()
        self.fc = nn.Linear(5 * (L - 6), 2)

    def forward(self, x):
        return self.fc(self.act(self.conv2(self.act(self.conv(x)))).flatten(1))


def test_captum_deeplift_refuses_a_reused_nonlinearity_module():
    """Captum's DeepLift breaks on a module called twice (it raised a shape error deep inside
    Captum); the error names the module. tangermeme runs only up to the layer: additive."""
    m, X = _SharedReLU(), _X(4)
    with pytest.raises(ValueError, match=r"act \(ReLU, 2 calls\).*backend='tangermeme'"):
        channel_attributions(m, m.conv2, [0], X, backend="captum", n_shuffles=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attr, refs = channel_attributions(m, m.conv2, [0, 1], X, n_shuffles=3,
                                          return_references=True)
    d = _delta(m, m.conv2, X, refs, [0, 1])
    assert (attr.sum((2, 3)) - d).abs().max() <= 1e-3 * d.abs().max()


CASES = [("deeplift", "tangermeme"), ("saliency", "tangermeme"), ("grad_x_input", "tangermeme"),
         ("saliency", "captum"), ("grad_x_input", "captum"), ("integrated_gradients", "captum")]


@pytest.mark.parametrize("method,backend", CASES)
def test_batched_channels_equal_per_channel_loop(method, backend):
    m = _model(1)
    X, chs = _X(4, seed=5), [6, 0, 2]
    kw = dict(method=method, backend=backend, n_shuffles=3, n_steps=16, random_state=7,
              batch_size=7)  # batches that cut across channels and sequences
    batched = channel_attributions(m, m.pool, chs, X, **kw)
    loop = torch.stack([channel_attributions(m, m.pool, [c], X, **kw)[0] for c in chs])
    torch.testing.assert_close(batched, loop, atol=1e-5, rtol=1e-5)
    assert batched.abs().sum() > 0


def test_gradients_match_autograd_and_backends_agree():
    m = _model(2)
    X, chs = _X(3, seed=9), [4, 1]
    x = X.clone().requires_grad_()
    out = {}
    h = m.pool.register_forward_hook(lambda mod, i, o: out.__setitem__("o", o))
    m(x)
    h.remove()
    grads = torch.stack([torch.autograd.grad(out["o"][:, c].sum(), x, retain_graph=True)[0]
                         for c in chs])
    for be in ("tangermeme", "captum"):
        sal = channel_attributions(m, m.pool, chs, X, method="saliency", backend=be)
        gxi = channel_attributions(m, m.pool, chs, X, method="grad_x_input", backend=be)
        torch.testing.assert_close(sal, grads, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gxi, grads * X, atol=1e-5, rtol=1e-5)
    sc = channel_attributions(m, m.pool, chs, X, method="saliency", backend="captum",
                              gradient_correction=True)
    st = channel_attributions(m, m.pool, chs, X, method="saliency", backend="tangermeme",
                              gradient_correction=True)
    torch.testing.assert_close(sc, st, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sc.sum(2), torch.zeros(2, 3, L), atol=1e-5, rtol=0)


def test_integrated_gradients_near_complete():
    m = _model(3)
    X, chs = _X(3, seed=2), [0, 7]
    a, refs = channel_attributions(m, m.relu, chs, X, method="ig", backend="captum",
                                   n_shuffles=2, n_steps=200, return_references=True)
    d = _delta(m, m.relu, X, refs, chs)
    assert (a.sum((2, 3)) - d).abs().max() <= 0.02 * d.abs().max()


@pytest.mark.parametrize("references", ["shuffle", "zeros", "uniform"])
def test_hypothetical_integrated_gradients(references):
    # hypothetical=True was ignored for IG: the result was Captum's (x - ref) * grad, zero at
    # every unobserved base with references="zeros". On a linear layer (conv) IG is exact, so
    # its hypothetical contributions equal DeepLIFT's, and hyp * X is the non-hypothetical IG.
    m = _model(3)
    X, chs = _X(3, seed=2), [0, 5]
    kw = dict(backend="captum", references=references, n_shuffles=3, random_state=1)
    ig_h = channel_attributions(m, m.conv, chs, X, method="ig", hypothetical=True, **kw)
    dl_h = channel_attributions(m, m.conv, chs, X, method="deeplift", hypothetical=True, **kw)
    ig = channel_attributions(m, m.conv, chs, X, method="ig", **kw)
    assert (ig_h * (1 - X)[None]).abs().sum() > 1  # the unobserved bases are filled in
    torch.testing.assert_close(ig_h, dl_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ig_h * X[None], ig, atol=1e-6, rtol=0)
    # through the ReLU and max-pool (not linear): still hyp * X == non-hypothetical
    h = channel_attributions(m, m.pool, chs, X, method="ig", hypothetical=True, **kw)
    torch.testing.assert_close(h * X[None], channel_attributions(m, m.pool, chs, X, method="ig",
                                                                **kw), atol=1e-6, rtol=0)


def test_model_left_exactly_as_found():
    m = _model()
    m.train()
    m.fc1.eval()
    m.conv.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    names = [n for n, _ in m.named_modules()]
    X = _X(3)
    for be, meth in (("tangermeme", "deeplift"), ("captum", "saliency"),
                     ("captum", "integrated_gradients"), ("tangermeme", "grad_x_input")):
        channel_attributions(m, m.pool, [0, 1], X, method=meth, backend=be, n_shuffles=2,
                             n_steps=4)
    with pytest.raises(ValueError):
        channel_attributions(m, m.pool, [0, 99], X)  # out of range, raised mid-call
    assert m.training and not m.fc1.training and m.relu.training
    assert not m.conv.weight.requires_grad and m.conv.bias.requires_grad
    assert [n for n, _ in m.named_modules()] == names and m.pool.__class__ is nn.MaxPool1d
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks and not mod._backward_hooks
        assert not hasattr(mod, "_NON_LINEAR_OPS")


def test_captum_leaves_no_activations_on_the_modules():
    """Captum's DeepLift stores module.input / .output on every nonlinearity it hooks and deletes
    them only in a backward pass: the modules after the layer kept the last batch's activations
    (501 MiB on a DeepSEA-sized model). Nothing set during a call stays; the user's own
    attributes do."""
    m = _model()
    m.relu.note = "mine"
    before = {n: set(mod.__dict__) for n, mod in m.named_modules()}
    channel_attributions(m, m.conv, [0, 1], _X(3), backend="captum", n_shuffles=2)
    assert {n: set(mod.__dict__) for n, mod in m.named_modules()} == before
    assert m.relu.note == "mine"


def test_channelsum_docstring_example_runs():
    """ChannelSum's docstring opened with ChannelSum(model, layer, channels)(x), which raises
    "must be used inside a `with` block"; its example is now the with-block, and runs."""
    from deepresolve_captum.adapters import ChannelSum

    m, X = _model(), _X(3)
    block = re.search(r"::\n\n(.*?)\n\n", ChannelSum.__doc__, re.S)
    assert block, "ChannelSum's docstring shows no code block"
    ns = dict(ChannelSum=ChannelSum, model=m, layer=m.pool, channels=[0, 2], x=X,
              selector=torch.tensor([[1.0, 0.0]] * 3))
    exec(textwrap.dedent(block.group(1)), ns)
    assert ns["sums"].shape == (3, 2) and ns["picked"].shape == (3, 1)
    torch.testing.assert_close(ns["picked"][:, 0], ns["sums"][:, 0])


def test_gradient_methods_return_and_document_no_references():
    """return_references=True was documented as (N, R, 4, L) for every method; the gradient
    methods use no references and return None, which the docstring now says."""
    m, X = _model(), _X(2)
    for method in ("saliency", "grad_x_input"):
        _, refs = channel_attributions(m, m.pool, [0], X, method=method, return_references=True)
        assert refs is None
    returns = " ".join(channel_attributions.__doc__.split("Returns\n")[1].split())
    assert re.search(r"references: torch\.Tensor \(N, R, 4, L\).*None for the gradient methods",
                     returns)


def test_deeplift_respects_dropout_off_and_references_options():
    m = nn.Sequential(nn.Conv1d(4, 5, 7), nn.ReLU(), nn.Dropout(0.5), nn.MaxPool1d(3),
                      nn.Flatten(), nn.Linear(5 * 18, 1))
    m.train()
    X = _X(3)
    for refs in ("zeros", "uniform"):
        a, R = channel_attributions(m, m[3], [0, 4], X, references=refs, return_references=True)
        assert R.shape == (3, 1, 4, L)
        d = _delta(m, m[3], X, R, [0, 4])
        assert (a.sum((2, 3)) - d).abs().max() <= 1e-3 * max(d.abs().max(), 1e-3)
    assert m.training


def test_bad_input():
    m = _model()
    X = _X(2)
    with pytest.raises(TypeError):
        channel_attributions(m, "pool", [0], X)
    with pytest.raises(ValueError, match="submodule"):
        channel_attributions(m, nn.ReLU(), [0], X)
    with pytest.raises(ValueError, match="shape"):
        channel_attributions(m, m.pool, [0], X[:, :3])
    with pytest.raises(ValueError, match="method"):
        channel_attributions(m, m.pool, [0], X, method="lime")
    with pytest.raises(ValueError, match="backend"):
        channel_attributions(m, m.pool, [0], X, backend="shap")
    with pytest.raises(ValueError, match="integrated"):
        channel_attributions(m, m.pool, [0], X, method="integrated_gradients")
    with pytest.raises(TypeError):
        channel_attributions(m, m.pool, np.array([True, False]), X)
    with pytest.raises(ValueError):
        make_references(X, references=torch.zeros(3, 2, 4, L))
    with pytest.raises(ValueError, match="indices >= 0"):  # no silent wrap to the last channel
        channel_attributions(m, m.pool, [-1], X)
    with pytest.raises(ValueError, match="out of range for a layer with 8 channels"):
        channel_activations(m, m.pool, X, [9], reduce=None)  # was a raw IndexError
    refs = make_references(X, n_shuffles=2)
    assert torch.equal(make_references(X, references=refs.numpy()), refs)  # numpy: ambiguous truth


def test_one_channel_as_a_0d_tensor_or_array():
    # ofiv.argmax() is a 0-d integer tensor: it was refused ("must be a non-empty 1-d sequence")
    m = _model()
    X = _X(2)
    ref = channel_attributions(m, m.pool, [3], X, method="saliency")
    for ch in (torch.tensor(3), np.array(3), torch.tensor([0.1, 0.2, 0.3, 0.9]).argmax(),
               np.argmax(np.array([0, 0, 0, 1])), torch.tensor(3, dtype=torch.int32)):
        assert torch.equal(channel_attributions(m, m.pool, ch, X, method="saliency"), ref), ch
        assert torch.equal(channel_activations(m, m.pool, X, ch),
                           channel_activations(m, m.pool, X, [3])), ch
    for bad, err in ((torch.tensor(True), TypeError), (np.array(3.0), TypeError),
                     (torch.tensor(-1), ValueError), (np.array([[3]]), ValueError)):
        with pytest.raises(err):
            channel_attributions(m, m.pool, bad, X, method="saliency")


class _WithCovariate(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, x, scale):
        return self.net(x) * scale


def test_a_model_that_needs_more_than_x_is_named_before_any_work():
    """forward(x, scale): every function after the optimizer failed with Python's bare
    'missing 1 required positional argument'; now a TypeError says how to wrap it."""
    from deepresolve_captum import baselines, channel_motifs, interaction
    m, X = _WithCovariate(), _X(4)
    calls = [lambda: channel_attributions(m, m.net.pool, [0], X),
             lambda: channel_activations(m, m.net.pool, X),
             lambda: channel_motifs.channel_pwms(m, m.net.pool, [0], X),
             lambda: interaction.interaction_check(m, "ACGT", "TTAA", seq_len=L, n_backgrounds=4),
             lambda: interaction.channel_ablation(m, m.net.pool, X),
             lambda: baselines.layer_saliency(m, m.net.fc1, X)]
    for call in calls:
        with pytest.raises(TypeError, match=r"forward needs scale besides the sequences.*wrapper"):
            call()


def test_float64_sequences_or_model():
    """float64 sequences into a float32 model, or float32 ones into a float64 model: cast to the
    model's dtype (as interaction_check does) instead of failing inside the convolution."""
    m = _model()
    X = _X(2)
    ref = channel_attributions(m, m.pool, [0, 1], X, method="saliency")
    torch.testing.assert_close(channel_attributions(m, m.pool, [0, 1], X.double(), method="saliency"), ref)
    m64 = _model().double()
    got = channel_attributions(m64, m64.pool, [0, 1], X, method="saliency")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_global_max_pool_encode_model():
    """The ENCODE models' layer sits behind a global max-pool (nn.AdaptiveMaxPool1d), for which
    neither tangermeme 1.6 nor Captum 0.9.0 has a DeepLIFT rule (treated as linear: additivity
    error 3.4 on a 0.97 change here). The tangermeme backend adds the MaxPool1d rule; Captum is
    refused."""
    from deepresolve_captum.zoo import EncodeTFModel

    torch.manual_seed(0)
    m = EncodeTFModel()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    X = nn.functional.one_hot(torch.randint(0, 4, (4, 101)), 4).permute(0, 2, 1).float()
    for layer, to_input in ((m.fc1, True), (m.pool, False), (m.flatten, False)):
        a, refs = channel_attributions(m, layer, [0, 3, 9], X, n_shuffles=4, return_references=True,
                                       attribute_to_layer_input=to_input)
        N, R = refs.shape[:2]
        s = channel_activations(m, layer, X, [0, 3, 9], attribute_to_layer_input=to_input)
        sr = channel_activations(m, layer, refs.reshape(N * R, 4, 101), [0, 3, 9],
                                 attribute_to_layer_input=to_input).reshape(N, R, -1).mean(1)
        d = (s - sr).T
        assert d.abs().max() > 0.1
        assert (a.sum((2, 3)) - d).abs().max() <= 1e-3 * d.abs().max()
    with pytest.raises(ValueError, match="max-pool"):
        channel_attributions(m, m.fc1, [0], X, backend="captum", attribute_to_layer_input=True)


def test_sequences_with_n_positions():
    """N bases (all-zero columns) are attributed with zero references (zero attribution there,
    sums exact) on both backends; shuffles and non-zero references there are refused by name."""
    m = _model()
    X, chs = _X(4), [0, 3]
    X[1, :, 20:25] = 0
    for backend in ("tangermeme", "captum"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")                    # no additivity or one-hot warning
            attr, refs = channel_attributions(m, m.relu, chs, X, references="zeros",
                                              backend=backend, return_references=True)
        d = _delta(m, m.relu, X, refs, chs)
        assert (attr.sum((2, 3)) - d).abs().max() <= 1e-4 * d.abs().max()
        assert torch.all(attr[:, 1, :, 20:25] == 0)
    for refs in ("shuffle", "uniform"):
        with pytest.raises(ValueError, match=r"N \(all-zero\) positions \(5 in 1 sequence\(s\), "
                                             r"the first at sequence 1, position 20\)"):
            channel_attributions(m, m.relu, chs, X, references=refs, n_shuffles=2)
    # gradients need no references
    g = channel_attributions(m, m.relu, chs, X, method="saliency")
    assert torch.isfinite(g).all()


class _MyReLU(nn.ReLU):
    """A subclass of a supported nonlinearity (a custom repr, a quantisation stub, ...)."""


class _MyPool(nn.MaxPool1d):
    pass


def test_subclassed_nonlinearities_get_their_base_class_rule():
    """tangermeme 1.6 hooks a module when isinstance(module, rule classes) but looks its rule up
    by type(module): an nn.ReLU subclass raised a bare KeyError inside the backward pass. Each
    call maps such classes to their nearest base's rule, touching neither tangermeme's tables
    nor the model; the result is that of the same model built from the base classes. Captum
    (rules by exact type, so linear there) is not changed: its additivity warning names them."""
    import tangermeme.deep_lift_shap as tdls

    from deepresolve_captum import adapters

    plain, sub = _model(), _model()
    sub.relu, sub.pool = _MyReLU(), _MyPool(4, 4)
    X, chs = _X(3), [0, 2, 5]
    table = {k: v for k, v in tdls._build_nonlinear_ops(None).items()}
    extra = dict(adapters._TANGERMEME_EXTRA_OPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # additive: no warning
        got = channel_attributions(sub, sub.pool, chs, X, n_shuffles=3)
    torch.testing.assert_close(got, channel_attributions(plain, plain.pool, chs, X, n_shuffles=3),
                               rtol=0, atol=0)
    assert tdls._build_nonlinear_ops(None) == table and adapters._TANGERMEME_EXTRA_OPS == extra
    assert type(sub.relu) is _MyReLU and type(sub.pool) is _MyPool
    assert not any(hasattr(m, "_NON_LINEAR_OPS") for m in sub.modules())
    with pytest.warns(RuntimeWarning, match=r"subclasses of nonlinearities \(_MyPool, _MyReLU\)"):
        channel_attributions(sub, sub.relu, chs, X, n_shuffles=3, backend="captum")


class _RollReLU(nn.ReLU):
    """A ReLU subclass whose forward is not elementwise: its base's rule does not fit."""

    def forward(self, x):
        return torch.relu(torch.roll(x, 3, -1))


def test_a_subclass_that_overrides_forward_is_named_on_the_tangermeme_backend():
    """From review r2: a subclass of a nonlinearity whose forward computes something else was
    silently given its base class's rule on the tangermeme backend (here the attributions even
    add up, so the additivity check says nothing); it is now named. A subclass that keeps its
    base's forward is not."""
    m = _model()
    m.relu = _RollReLU()
    with pytest.warns(UserWarning, match=r"^_RollReLU subclass a nonlinearity but override "
                                         r"forward"):
        channel_attributions(m, m.pool, [0, 1], _X(3), n_shuffles=3)
    m.relu = _MyReLU()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_attributions(m, m.pool, [0, 1], _X(3), n_shuffles=3)


def _largest_allocation(fn):
    """Bytes of the largest CPU tensor one op allocated while ``fn()`` ran (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


@pytest.mark.parametrize("backend,layer_name", [("captum", "relu"), ("tangermeme", "pool")])
def test_deeplift_holds_no_channel_x_sequence_x_reference_temporary(monkeypatch, backend,
                                                                    layer_name):
    """With R references per sequence, Captum's rows were all kept, (C N R, 4, L), before the
    mean over references, and the tangermeme backend copied every sequence's R references once
    per channel, (C N, R, 4, L): R times the result. Now Captum averages each pair's R rows as
    they are done, and tangermeme gets chunks of rows under a reference budget (here 6 rows'
    worth, so that a small test shows it): no temporary reaches C N R rows (the references
    themselves are N R rows), and the result is the same to the bit."""
    from deepresolve_captum import adapters

    m = _model()
    layer = getattr(m, layer_name)
    X, chs, R = _X(4), [0, 1, 2], 16
    refs = make_references(X, n_shuffles=R)
    kw = dict(backend=backend, references=refs, batch_size=8, check_additivity=False)
    whole = channel_attributions(m, layer, chs, X, **kw)
    row = 4 * L * 4                                         # bytes of one (4, L) float32 row
    monkeypatch.setattr(adapters, "_TANGERMEME_CHUNK_BYTES", 6 * R * row, raising=False)
    got = []
    big = _largest_allocation(lambda: got.append(channel_attributions(m, layer, chs, X, **kw)))
    assert big <= len(chs) * len(X) * R * row // 2, big / row
    assert torch.equal(got[0], whole)


def test_tangermeme_row_chunks_fill_whole_batches():
    from deepresolve_captum.adapters import _row_chunks

    # 20 references, batches of 128 pairs: 32 rows fill 5 batches; a budget of 100 rows' refs
    # gives chunks of 96 rows
    ch = _row_chunks(1000, 20, 128, row_bytes=10, budget=100 * 20 * 10)
    assert ch[0] == (0, 96) and ch[-1] == (960, 1000)
    assert all(b - a == 96 for a, b in ch[:-1]) and ch[-1][1] == 1000
    # a budget below one whole-batch unit: chunks of what fits (at least one row)
    assert _row_chunks(10, 7, 128, row_bytes=10, budget=3 * 7 * 10)[:2] == [(0, 3), (3, 6)]
    assert _row_chunks(3, 7, 128, row_bytes=10, budget=1) == [(0, 1), (1, 2), (2, 3)]
