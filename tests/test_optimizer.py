"""LayerFeatureOptimizer: the ascent finds the known optimum, runs on Captum's and genomics
models, and leaves the model exactly as it found it, after success and after every bad input."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
from captum.attr import GradientAttribution, LayerAttribution
from captum.testing.helpers import basic_models as bm
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer
from deepresolve_captum.zoo import DeepSEA, EncodeTFModel, PaperCNN


class ConvLinearHead(nn.Module):
    """Conv1d -> ReLU -> (layer) -> Flatten -> Linear: the head after the layer is linear, so
    the optimum of S_c(H) - l2 ||H||^2 is H* = w_c / (2 l2)."""

    def __init__(self, n_out=3):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6 * 16, n_out)

    def forward(self, x):
        return self.fc(self.flat(self.drop(self.relu(self.conv(x)))))


class Conv2dGenomics(nn.Module):
    """A Conv2d genomics model: one-hot as a (N, 1, 4, L) image, 2-D conv over (base, position)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, (4, 6))
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d((1, 3))
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(8 * 1 * 5, 16)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv(x))))
        return self.fc2(self.relu2(self.fc1(self.flat(x))))


class BatchMixer(nn.Module):
    """Reshapes after the layer with the *input's* batch size: H cannot be broadcast from one
    upstream example, so the optimizer must fall back to expanding the input."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 5)
        self.relu = nn.ReLU()
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        n = x.shape[0]
        h = self.relu(self.lin(x))
        return self.out(h.reshape(n, -1))


def snapshot(model):
    return (copy.deepcopy(model.state_dict()),
            [(name, m.training) for name, m in model.named_modules()],
            [(name, p.requires_grad) for name, p in model.named_parameters()],
            [(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
             for name, m in model.named_modules()])


def assert_unchanged(model, snap):
    state, modes, grads, hooks = snapshot(model)
    for k, v in snap[0].items():
        assert torch.equal(state[k], v), f"weight {k} changed"
    assert modes == snap[1], "train/eval mode changed"
    assert grads == snap[2], "requires_grad changed"
    assert hooks == snap[3], "a hook was left on the model"


def test_is_a_captum_layer_attribution():
    m = ConvLinearHead()
    opt = LayerFeatureOptimizer(m, m.relu)
    assert isinstance(opt, LayerAttribution) and isinstance(opt, GradientAttribution)


@pytest.mark.parametrize("on_input", [False, True])
def test_linear_head_lands_on_analytic_optimum(on_input):
    torch.manual_seed(0)
    m = ConvLinearHead()
    m.train()  # dropout must be off during the ascent, and train mode restored after
    layer = m.fc if on_input else m.relu
    l2 = 0.8
    targets = [0, 2]
    fims, scores = LayerFeatureOptimizer(m, layer).attribute(
        torch.randn(3, 4, 20), target=targets, n_starts=6, l2=l2, seed=3,
        attribute_to_layer_input=on_input, return_scores=True)
    w = m.fc.weight.detach()[targets]
    expected = (w / (2 * l2)).reshape((2, 1) + fims.shape[2:])
    assert fims.shape == (2, 6) + ((96,) if on_input else (6, 16))
    rel = (fims - expected).flatten(2).norm(dim=2) / expected.flatten(2).norm(dim=2)
    assert float(rel.max()) < 0.02, f"a start is {float(rel.max()):.3%} from H* = w/(2 l2)"
    # S_c(H*) = w.H* + b = ||w||^2/(2 l2) + b
    exp_scores = (w.pow(2).sum(1) / (2 * l2) + m.fc.bias.detach()[targets])[:, None]
    assert torch.allclose(scores, exp_scores.expand(2, 6), rtol=1e-3)
    assert m.training and m.drop.training


def test_starts_differ_and_seed_reproduces():
    m = PaperCNN(n_outputs=2, seq_len=60)
    x = torch.zeros(1, 4, 60)
    opt = LayerFeatureOptimizer(m, m.pool)
    a = opt.attribute(x, target=[0, 1], n_starts=4, l2=0.5, seed=11)
    b = opt.attribute(x, target=[0, 1], n_starts=4, l2=0.5, seed=11)
    c = opt.attribute(x, target=[0, 1], n_starts=4, l2=0.5, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a start's result depends on (seed, target, start) only: not on chunking or other targets
    d = opt.attribute(x, target=[1], n_starts=4, l2=0.5, seed=11, chunk_size=3)
    assert torch.allclose(a[1], d[0], atol=1e-5)


def test_diagnostics_and_scores_shapes():
    m = PaperCNN(n_outputs=3, seq_len=40)
    opt = LayerFeatureOptimizer(m, m.pool)
    fims, scores = opt.attribute(torch.zeros(1, 4, 40), target=None, n_starts=5, l2=1.0,
                                 seed=0, return_scores=True, verbose=True)
    d = opt.diagnostics
    assert fims.shape == (3, 5, 32, 8) and scores.shape == (3, 5)
    assert d.steps.shape == d.objective.shape == d.converged.shape == (3, 5)
    assert d.converged.all() and (d.steps >= 1).all()
    assert d.l2 == 1.0 and not d.recompute_upstream
    # the reported objective is S - l2 ||H||^2 at the returned H
    expect = scores.double() - 1.0 * fims.double().flatten(2).pow(2).sum(2)
    assert np.allclose(d.objective, expect.numpy(), rtol=1e-4, atol=1e-5)


def test_diagnostics_print_as_one_line_at_many_targets():
    """print(opt.diagnostics) after a 300-target run is one short line, not the arrays."""
    m = PaperCNN(n_outputs=300, seq_len=24)
    opt = LayerFeatureOptimizer(m, m.pool)
    with pytest.warns(RuntimeWarning, match="stopped at max_steps"):   # some starts, not all
        opt.attribute(torch.zeros(1, 4, 24), target=None, n_starts=2, l2=1.0, seed=0, max_steps=20)
    text = repr(opt.diagnostics)
    assert "\n" not in text and len(text) < 400, text
    d = opt.diagnostics
    assert text.startswith("AscentDiagnostics(300 targets x 2 starts, l2=1,")
    assert f"converged {int(d.converged.sum())}/600" in text and f"{int(d.steps.max())})" in text


def test_ascent_improves_on_start_and_is_a_local_max():
    torch.manual_seed(1)
    m = PaperCNN(n_outputs=1, seq_len=50)
    opt = LayerFeatureOptimizer(m, m.pool)
    fims, scores = opt.attribute(torch.zeros(1, 4, 50), target=0, n_starts=3, l2=0.3, seed=5,
                                 return_scores=True)
    # small random perturbations do not raise the objective (a local maximum)
    def objective(hh):
        handle = m.pool.register_forward_hook(lambda mod, a, o: hh)
        try:
            out = m(torch.zeros(1, 4, 50)).reshape(-1)
        finally:
            handle.remove()
        return out - 0.3 * hh.flatten(1).pow(2).sum(1)

    with torch.no_grad():
        base = objective(fims[0])
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            eps = 1e-3 * torch.randn(fims[0].shape, generator=g)
            assert (objective(fims[0] + eps) <= base + 1e-5).all()



class _Bowl(nn.Module):
    """score = -k sqrt(1 + ||H - c||^2), H the (identity) layer's output: steep (slope k) far
    from c and flat near it, so the first full steps overshoot and backtrack, and the ascent
    must let its step grow again to finish."""

    def __init__(self, c, k):
        super().__init__()
        self.layer = nn.Identity()
        self.register_buffer("c", c)
        self.k = k

    def forward(self, x):
        return (-self.k * torch.sqrt(1 + (self.layer(x) - self.c).pow(2).sum(1))).unsqueeze(1)


def test_the_step_grows_back_after_a_backtrack_and_the_ascent_reaches_the_optimum():
    """The step is halved on a failed step and grows again (x1.5, up to lr) after a success.
    On this float64 bowl every start ends within ~3e-5 of the optimum (30 seeds: 1.6e-5 to
    2.8e-5); with the regrowth removed the ascent crawls, its gains fall below tol and it stops
    8e-3 to 1.6e-2 away (30 seeds). The bound 1e-3 sits well inside both."""
    c = torch.tensor([30.0, -20.0, 10.0], dtype=torch.float64)
    k, l2 = 5.0, 0.01
    # H* = a c by symmetry, with k r / sqrt(1 + r^2) = 2 l2 a |c|, r = (1 - a) |c|: bisect a
    norm, lo, hi = float(c.norm()), 0.0, 1.0
    for _ in range(100):
        a = (lo + hi) / 2
        r = (1 - a) * norm
        lo, hi = (a, hi) if k * r / math.sqrt(1 + r * r) > 2 * l2 * a * norm else (lo, a)
    h_star = a * c
    m = _Bowl(c, k)
    fims = LayerFeatureOptimizer(m, m.layer).attribute(
        torch.zeros(1, 3, dtype=torch.float64), target=0, n_starts=4, l2=l2, seed=0)
    err = float((fims[0] - h_star).abs().max())
    assert err < 1e-3, f"a start stopped {err:.2g} from H*"


def test_auto_l2_matches_mean_activation_norm():
    torch.manual_seed(2)
    m = ConvLinearHead()
    x = torch.randn(16, 4, 20)
    opt = LayerFeatureOptimizer(m, m.relu)
    fims = opt.attribute(x, target=None, n_starts=4, l2="auto", seed=0)
    with torch.no_grad():
        act = m.relu(m.conv(x)).mean(0)
    d = opt.diagnostics
    assert d.l2_auto is not None and math.isclose(d.l2_auto["chosen"], d.l2)
    assert math.isclose(d.l2_auto["mean_activation_norm"], float(act.norm()), rel_tol=1e-5)
    median = float(fims.flatten(2).norm(dim=2).median())
    assert math.isclose(median, float(act.norm()), rel_tol=0.05)


@pytest.mark.parametrize("model_cls,layer_name,inp,on_input", [
    (bm.BasicModel_ConvNet_MaxPool1d, "pool2", (2, 1, 10), False),
    (bm.BasicModel_ConvNet_MaxPool1d, "fc1", (2, 1, 10), True),
    (bm.BasicModel_ConvNet, "conv2", (2, 1, 10, 10), False),
    (bm.Conv1dSeqModel, "seq.1", (2, 4, 1000), False),
    (bm.BasicModel_MultiLayer, "linear1", (3, 3), False),
    (bm.BasicLinearModel, "linear", ((2, 3), (2, 4)), True),  # two inputs: a tuple
])
def test_captum_basic_models(model_cls, layer_name, inp, on_input):
    torch.manual_seed(0)
    m = model_cls()
    layer = m.get_submodule(layer_name)
    snap = snapshot(m)
    x = tuple(torch.randn(s) for s in inp) if isinstance(inp[0], tuple) else torch.randn(inp)
    with warnings.catch_warnings():  # Captum's ConvNets end in Softmax: warned, tested below
        warnings.filterwarnings("ignore", message="the model ends in|the FIMs of target")
        fims, scores = LayerFeatureOptimizer(m, layer).attribute(
            x, target=0, n_starts=3, l2=0.5, seed=0,
            attribute_to_layer_input=on_input, return_scores=True, max_steps=300)
    assert fims.shape[:2] == (1, 3) and torch.isfinite(fims).all()
    assert torch.isfinite(scores).all()
    assert_unchanged(m, snap)


def test_additional_forward_args_are_used():
    m = bm.BasicModel_MultiLayer()
    x = torch.randn(4, 3)
    add = torch.randn(4, 3)
    opt = LayerFeatureOptimizer(m, m.linear0)
    a = opt.attribute(x, target=1, additional_forward_args=(add,), n_starts=2, l2=1.0, seed=0,
                      attribute_to_layer_input=True)
    # the replaced input of linear0 is x + add_input: its shape is (3,). (H replaces it, so
    # add_input never reaches the score here: which example's argument the ascent uses is
    # test_per_example_forward_args_are_the_first_examples.)
    assert a.shape == (1, 2, 3)



class _Covariate(nn.Module):
    """score = c * (w . H), H the (identity) layer's output and c a per-example covariate passed
    as an additional forward argument: the optimum of S - l2 ||H||^2 is H* = c w / (2 l2), so
    the FIM says which example's c the ascent used."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Identity()
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))

    def forward(self, x, c):
        return self.fc(self.layer(x)) * c


@pytest.mark.filterwarnings("ignore:additional_forward_args.0. also reach the scores")
def test_per_example_forward_args_are_the_first_examples():
    """additional_forward_args tensors with N rows are sliced to the *first* example, like
    inputs (the docstring, and the bypass warning's "the first example's context"). The
    shape-only test above cannot see which example's argument was used: here it reaches the
    score and differs per example, and both orders of the examples are checked."""
    m = _Covariate()
    w, l2 = m.fc.weight.detach()[0], 1.0
    opt = LayerFeatureOptimizer(m, m.layer)
    x = torch.randn(3, 4)
    for c in ([[2.0], [0.5], [1.0]], [[0.5], [1.0], [2.0]]):
        c = torch.tensor(c)
        fims = opt.attribute(x, target=0, additional_forward_args=(c,), n_starts=2, l2=l2,
                             seed=0)
        expect = (c[0] * w / (2 * l2)).expand(2, 4)
        torch.testing.assert_close(fims[0], expect, atol=1e-3, rtol=1e-3)
    # and it is told: the covariate is a path around the layer, held at the first example
    with pytest.warns(UserWarning, match=r"additional_forward_args\[0\] also reach the scores"):
        opt.attribute(x, target=0, additional_forward_args=(c,), n_starts=1, l2=l2, seed=0)


def test_additional_forward_args_not_per_example_error_names_them():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 3)

        def forward(self, x, rows):
            return self.lin(x) + rows          # rows: (M, 3) with M != N broadcasts to (M, 3)

    m = Scaled()
    with pytest.raises(ValueError, match=r"tensors of shape \[\(5, 3\)\] were passed whole.*N = 6"):
        LayerFeatureOptimizer(m, m.lin).attribute(
            torch.randn(6, 5), target=0, additional_forward_args=(torch.ones(5, 3),), l2=1.0)


@pytest.mark.parametrize("model,layer_name,shape,on_input", [
    (PaperCNN(n_outputs=4, seq_len=100), "pool", (32, 23), False),
    (EncodeTFModel(), "fc1", (16,), True),
    (Conv2dGenomics(), "pool", (8, 1, 5), False),
])
def test_genomics_models(model, layer_name, shape, on_input):
    torch.manual_seed(0)
    L = {PaperCNN: 100, EncodeTFModel: 101}.get(type(model))
    x = torch.randn(4, 1, 4, 20) if isinstance(model, Conv2dGenomics) else torch.randn(4, 4, L)
    model.train()
    snap = snapshot(model)
    fims, scores = LayerFeatureOptimizer(model, model.get_submodule(layer_name)).attribute(
        x, target=None, n_starts=3, l2="auto", seed=0, attribute_to_layer_input=on_input,
        return_scores=True)
    assert fims.shape[2:] == shape and torch.isfinite(fims).all()
    assert_unchanged(model, snap)


def test_deepsea_input_of_third_conv_shape():
    m = DeepSEA(n_outputs=5, seq_len=300)
    opt = LayerFeatureOptimizer(m, m.conv3)
    with pytest.warns(RuntimeWarning, match="before converging"):   # 20 steps: shape only
        fims = opt.attribute(torch.zeros(1, 4, 300), target=[0, 4], n_starts=2, l2=1.0, seed=0,
                             attribute_to_layer_input=True, max_steps=20)
    assert fims.shape == (2, 2, 480, 16)


def test_batch_mixing_model_falls_back_to_expanding_input():
    torch.manual_seed(0)
    m = BatchMixer()
    opt = LayerFeatureOptimizer(m, m.relu)
    fims = opt.attribute(torch.randn(3, 5), target=[0, 1], n_starts=3, l2=1.0, seed=0)
    assert opt.diagnostics.recompute_upstream
    # the head after relu is linear: the optimum is w/(2 l2)
    exp = (m.out.weight.detach() / 2.0)[:, None, :].expand(2, 3, 5)
    assert torch.allclose(fims, exp, atol=1e-3)


def test_chunking_matches_one_batch():
    m = PaperCNN(n_outputs=2, seq_len=40)
    opt = LayerFeatureOptimizer(m, m.pool)
    x = torch.zeros(1, 4, 40)
    a, sa = opt.attribute(x, target=None, n_starts=5, l2=0.7, seed=4, return_scores=True)
    b, sb = opt.attribute(x, target=None, n_starts=5, l2=0.7, seed=4, return_scores=True,
                          chunk_size=3)
    assert opt.diagnostics.n_chunks == 4
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(sa, sb, atol=1e-5)
    with pytest.warns(RuntimeWarning, match="more than memory_budget"):
        c = opt.attribute(x, target=None, n_starts=5, l2=0.7, seed=4, memory_budget=1)
    assert opt.diagnostics.rows_per_chunk == 1
    assert torch.allclose(a, c, atol=1e-5)
    with pytest.warns(UserWarning, match="memory_budget is ignored"):
        opt.attribute(x, target=0, n_starts=2, l2=0.7, seed=4, chunk_size=2, memory_budget=2**30)
    assert opt.diagnostics.rows_per_chunk == 2



@pytest.mark.filterwarnings("ignore:.*stopped at max_steps")
def test_memory_budget_counts_a_wide_output():
    """A Sei-like head (21,907 outputs): each row's output and its gradient are as large as the
    output, but autograd does not save them, so the budget ignored them (one chunk at 9x the
    budget in a review). A 50,000-output head now gets chunks that fit the budget."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 50_000))
    opt = LayerFeatureOptimizer(m, m[1])
    budget = 6 * 2**20
    opt.attribute(torch.randn(1, 8), target=list(range(40)), n_starts=2, l2=1.0, seed=0,
                  max_steps=1, fiv_only=True, memory_budget=budget)
    assert opt.diagnostics.rows_per_chunk * 3 * 50_000 * 4 <= budget
    assert opt.diagnostics.n_chunks > 1


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return x, x


class TupleLayerModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = TupleOut()
        self.out = nn.Linear(3, 1)

    def forward(self, x):
        a, b = self.pair(x)
        return self.out(a + b)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.exp(1e4 * self.lin(x)).sum(1, keepdim=True)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x), self.lin(x)


class DetachedLayer(nn.Module):
    """The conv's value is detached (or not used at all) on the way to the output."""

    def __init__(self, use="detach"):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5)
        self.fc = nn.Linear(6, 3)
        self.side = nn.Linear(4, 3)
        self.use = use

    def forward(self, x):
        h = self.conv(x)
        if self.use == "detach":
            return self.fc(h.detach().mean(-1))
        return self.side(x.mean(-1))  # the conv runs, but its value is never used


class TwoHeads(nn.Module):
    """Output 0 reads the conv; output 1 reads only the input, so its score ignores the layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 5)
        self.fc = nn.Linear(6, 1)
        self.side = nn.Linear(4, 1)

    def forward(self, x):
        return torch.cat([self.fc(self.conv(x).mean(-1)), self.side(x.mean(-1))], 1)


BAD = [
    ("unreached", lambda m: (m, nn.Linear(2, 2), {}), ValueError,
     "not reached by the forward pass: it is not a submodule of forward_func"),
    ("target_high", lambda m: (m, m.relu, {"target": 3}), ValueError, "outside"),
    ("target_negative", lambda m: (m, m.relu, {"target": -1}), ValueError, "outside"),
    ("target_float", lambda m: (m, m.relu, {"target": [0.5]}), TypeError, "ints"),
    ("l2_zero", lambda m: (m, m.relu, {"l2": 0.0}), ValueError, "l2"),
    ("l2_negative", lambda m: (m, m.relu, {"l2": -1.0}), ValueError, "l2"),
    ("l2_nan", lambda m: (m, m.relu, {"l2": float("nan")}), ValueError, "l2"),
    ("l2_inf", lambda m: (m, m.relu, {"l2": float("inf")}), ValueError, "l2"),
    ("l2_word", lambda m: (m, m.relu, {"l2": "big"}), ValueError, "l2"),
    ("n_starts_zero", lambda m: (m, m.relu, {"n_starts": 0}), ValueError, "n_starts"),
    ("n_starts_float", lambda m: (m, m.relu, {"n_starts": 2.5}), ValueError, "n_starts"),
    ("seed_generator", lambda m: (m, m.relu, {"seed": torch.Generator()}), TypeError, "seed"),
    ("seed_negative", lambda m: (m, m.relu, {"seed": -1}), ValueError, "seed"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_clear_error_and_model_unchanged(name, make, exc, match):
    m = ConvLinearHead()
    m.train()
    m.conv.weight.requires_grad_(False)  # an unusual state that must survive too
    snap = snapshot(m)
    model, layer, kw = make(m)
    args = dict(target=0, n_starts=2, l2=1.0, seed=0)
    args.update(kw)
    with pytest.raises(exc, match=match):
        LayerFeatureOptimizer(model, layer).attribute(torch.randn(2, 4, 20), **args)
    assert_unchanged(m, snap)


@pytest.mark.filterwarnings("ignore:inputs.0. also reach the scores")  # true for "unused"
@pytest.mark.parametrize("use", ["detach", "unused"])
@pytest.mark.parametrize("l2", [1.0, "auto"])
def test_layer_without_gradient_path_is_named(use, l2):
    """A layer whose value does not reach the output through autograd gets a named error, not
    torch's 'element 0 of tensors does not require grad'; the model is left as found."""
    m = DetachedLayer(use)
    snap = snapshot(m)
    with pytest.raises(ValueError, match="does not depend on"):
        LayerFeatureOptimizer(m, m.conv).attribute(torch.randn(4, 4, 20), target=0, n_starts=2,
                                                    l2=l2, seed=0)
    assert_unchanged(m, snap)


@pytest.mark.filterwarnings("ignore:inputs.0. also reach the scores")  # target 1's own path
def test_auto_l2_ignores_targets_whose_score_ignores_the_layer():
    """l2='auto' on a two-head model where target 1 never reads the layer: the probe leaves
    target 1 out (it used to take the median over its zero norms and fail), target 0 gets the
    same l2 as alone, and target 1 is warned about as all zero."""
    torch.manual_seed(0)
    m = TwoHeads().eval()
    x = torch.randn(8, 4, 20)
    alone = LayerFeatureOptimizer(m, m.conv)
    alone.attribute(x, target=0, n_starts=2, l2="auto", seed=0)
    both = LayerFeatureOptimizer(m, m.conv)
    with pytest.warns(RuntimeWarning, match=r"target\(s\) \[1\] are all zero"):
        fims = both.attribute(x, target=None, n_starts=2, l2="auto", seed=0)
    assert both.diagnostics.l2 == pytest.approx(alone.diagnostics.l2, rel=1e-6)
    assert both.diagnostics.l2_auto["probes"][0]["flat_targets"] == [1]
    assert float(fims[0].abs().max()) > 0.1
    assert float(fims[1].abs().max()) < 1e-5


def test_dtype_mismatch_is_named():
    """float32 inputs into a float64 model: the error says to cast the inputs, not that they
    must be a batch (which they are); the model is left as found."""
    m = ConvLinearHead().double()
    snap = snapshot(m)
    with pytest.raises(RuntimeError, match=r"inputs.to\(torch.float64\)"):
        LayerFeatureOptimizer(m, m.relu).attribute(torch.randn(2, 4, 20), target=0, n_starts=2, l2=1.0)
    assert_unchanged(m, snap)


@pytest.mark.parametrize("model_cls,layer,match", [
    (TupleLayerModel, "pair", "not one"),   # the layer outputs a tuple
    (TwoOutputs, "lin", "one tensor"),      # the model returns a tuple
], ids=["tuple_output_layer", "model_returning_tuple"])
def test_tuple_values_are_a_type_error(model_cls, layer, match):
    m = model_cls()
    snap = snapshot(m)
    with pytest.raises(TypeError, match=match):
        LayerFeatureOptimizer(m, getattr(m, layer)).attribute(torch.randn(2, 3), target=0, l2=1.0)
    assert_unchanged(m, snap)


def test_a_model_error_during_the_ascent_is_not_masked():
    # the model fails on batches of 3+ rows of H (as a GPU out-of-memory would): the user must see
    # that error, not a message about output rows
    class FailsOnBigBatches(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.out = nn.Linear(3, 1)

        def forward(self, x):
            h = self.lin(x)
            if h.shape[0] >= 3:
                raise RuntimeError("boom: out of memory")
            return self.out(h)

    m = FailsOnBigBatches()
    snap = snapshot(m)
    with pytest.raises(RuntimeError, match="boom"):
        LayerFeatureOptimizer(m, m.lin).attribute(torch.randn(2, 3), target=0, n_starts=4, l2=1.0)
    assert_unchanged(m, snap)


def test_non_finite_scores_during_ascent():
    m = Exploding()
    m.train()
    snap = snapshot(m)
    with pytest.raises(ValueError, match="non-finite class score"):
        LayerFeatureOptimizer(m, m.lin).attribute(torch.randn(2, 3), target=0, l2=1.0,
                                                  init_scale=10.0, seed=0,
                                                  attribute_to_layer_input=True)
    assert_unchanged(m, snap)


def test_layer_used_twice_is_rejected():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.lin(x))

    m = Twice()
    with pytest.raises(ValueError, match="2 times"):
        LayerFeatureOptimizer(m, m.lin).attribute(torch.randn(2, 3), target=0, l2=1.0)


def test_inputs_must_be_tensors():
    m = ConvLinearHead()
    with pytest.raises(TypeError, match="inputs"):
        LayerFeatureOptimizer(m, m.relu).attribute([[1, 2]], target=0, l2=1.0)
    with pytest.raises(TypeError, match="one layer"):
        LayerFeatureOptimizer(m, [m.relu, m.fc])


def test_tuple_target_into_multidimensional_output():
    m = bm.Conv1dSeqModel()  # output (N, 2, 1)
    opt = LayerFeatureOptimizer(m, m.seq[1])
    fims = opt.attribute(torch.randn(2, 4, 1000), target=[(1, 0)], n_starts=2, l2=1.0, seed=0,
                         max_steps=50)
    assert list(opt.diagnostics.targets) == [1]
    with pytest.raises(ValueError, match="does not fit"):
        opt.attribute(torch.randn(2, 4, 1000), target=[(2, 0)], n_starts=2, l2=1.0)
    assert fims.shape[:2] == (1, 2)
    # Captum reads target=(1, 0) as one index; here a tuple would list classes: refused
    with pytest.raises(ValueError, match="ambiguous"):
        opt.attribute(torch.randn(2, 4, 1000), target=(1, 0), n_starts=2, l2=1.0)


class ListArgModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x, scales):               # scales: a list, one argument
        return self.lin(x) * torch.tensor(scales)


def test_targets_range_duplicates_and_list_argument():
    m = ListArgModel().eval()
    x = torch.randn(2, 3)
    opt = LayerFeatureOptimizer(m, m.lin)
    a = opt.attribute(x, target=range(3), additional_forward_args=[1.0, 2.0, 3.0], n_starts=2,
                      l2=1.0, seed=0)
    assert a.shape == (3, 2, 3) and list(opt.diagnostics.targets) == [0, 1, 2]
    with pytest.warns(UserWarning, match="duplicate"):
        opt.attribute(x, target=[1, 1], additional_forward_args=[1.0, 2.0, 3.0], n_starts=2,
                      l2=1.0, seed=0)
    kw = dict(additional_forward_args=[1.0, 2.0, 3.0], n_starts=2, l2=1.0, seed=0)
    for empty in ([], torch.tensor([], dtype=torch.long), np.array([], dtype=int)):
        with pytest.raises(ValueError, match="target is empty"):  # was a TypeError
            opt.attribute(x, target=empty, **kw)
    with pytest.raises(ValueError, match=r"2-d Tensor of shape \(2, 2\): give a 1-d list"):
        opt.attribute(x, target=torch.tensor([[0, 1], [2, 0]]), **kw)  # was "index [0, 1]"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_modules_and_tuple_outputs_explain_themselves():
    m = ConvLinearHead().eval()
    sm = torch.jit.script(m)
    with pytest.raises(TypeError, match="TorchScript"):
        LayerFeatureOptimizer(sm, sm.relu)
    two = TwoOutputs()
    with pytest.raises(TypeError, match="wrap"):
        LayerFeatureOptimizer(two, two.lin).attribute(torch.randn(2, 3), target=0, n_starts=2,
                                                      l2=1.0)


def _conv_relu(inplace):
    return nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(inplace=inplace), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(6 * 13, 3)).eval()


@pytest.mark.parametrize("index,on_input", [(0, False), (1, True), (2, False)])
def test_inplace_module_after_the_layer(index, on_input):
    # Conv -> ReLU(inplace=True): the ascent must not fail on the in-place op, and the results
    # (l2="auto" included, which reads the layer's captured value) equal the out-of-place model's
    a, b = _conv_relu(False), _conv_relu(True)
    torch.manual_seed(0)
    for m in (a, b):
        torch.manual_seed(0)
        for p in m.parameters():
            nn.init.normal_(p, std=0.3)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 30)), 4).permute(0, 2, 1).float()
    kw = dict(target=[0, 2], n_starts=3, l2="auto", seed=1, attribute_to_layer_input=on_input,
              return_scores=True)
    fa, sa = LayerFeatureOptimizer(a, a[index]).attribute(x, **kw)
    fb, sb = LayerFeatureOptimizer(b, b[index]).attribute(x, **kw)
    assert torch.equal(fa, fb) and torch.equal(sa, sb)
    if index == 0:
        assert fa.min() < 0          # the FIM is the conv output itself, not its ReLU


def test_unconverged_starts_warn():
    m = _conv_relu(False)
    x = torch.zeros(1, 4, 30)
    opt = LayerFeatureOptimizer(m, m[2])
    with pytest.warns(RuntimeWarning, match="before converging") as rec:
        opt.attribute(x, target=None, n_starts=2, l2=1e-3, seed=0, max_steps=2)
    assert not opt.diagnostics.converged.all()
    assert rec[0].filename == __file__            # points at the caller, not at Captum's wrapper


def test_inference_mode_is_refused_and_no_grad_is_fine():
    m = _conv_relu(False)
    x = torch.zeros(1, 4, 30)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        LayerFeatureOptimizer(m, m[2]).attribute(x, target=0, n_starts=2, l2=1.0, seed=0)
    ref = LayerFeatureOptimizer(m, m[2]).attribute(x, target=0, n_starts=2, l2=1.0, seed=0)
    with torch.no_grad():
        assert torch.equal(LayerFeatureOptimizer(m, m[2]).attribute(
            x, target=0, n_starts=2, l2=1.0, seed=0), ref)


class _AfterLayer(nn.Module):
    """Linear -> ReLU (the layer) -> something that couples rows or draws noise -> Linear."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(5, 5)
        self.relu = nn.ReLU()
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        h = self.relu(self.lin(x))
        if self.kind == "mix":
            h = h - h.mean(0, keepdim=True)
        elif self.kind == "noise":
            h = nn.functional.dropout(h, 0.5, training=True)
        return self.out(h)


@pytest.mark.parametrize("kind, why", [("mix", "mixes the rows"), ("noise", "fresh randomness")])
def test_model_coupling_rows_after_layer_warns(kind, why):
    torch.manual_seed(0)
    m = _AfterLayer(kind)
    opt = LayerFeatureOptimizer(m, m.relu)
    with pytest.warns(RuntimeWarning, match=why) as rec:
        opt.attribute(torch.randn(3, 5), target=[0, 1], n_starts=2, l2=1.0, seed=0, max_steps=50)
    w = [r for r in rec if why in str(r.message)]
    assert w[0].filename == __file__          # points at the caller, past Captum's log_usage
    assert "chunk_size=1" not in str(w[0].message)   # a one-row batch does not fix either case
    assert opt.diagnostics.recompute_upstream


def test_row_independent_models_do_not_warn_about_coupling():
    torch.manual_seed(0)
    for m, layer in ((BatchMixer(), "relu"), (_AfterLayer("none"), "relu")):
        opt = LayerFeatureOptimizer(m, getattr(m, layer))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            opt.attribute(torch.randn(3, 5), target=[0, 1], n_starts=2, l2=1.0, seed=0)


def test_verbose_shows_the_auto_l2_probes(capsys):
    m = PaperCNN(n_outputs=2, seq_len=40)
    opt = LayerFeatureOptimizer(m, m.pool)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 40)), 4).transpose(1, 2).float()
    opt.attribute(x, target=None, n_starts=2, l2="auto", seed=0, verbose=True)
    err = capsys.readouterr().err
    assert "l2='auto' probe 1/2" in err and "l2='auto' probe 2/2" in err
    assert "DeepResolve ascent" in err
    opt.attribute(x, target=None, n_starts=2, l2="auto", seed=0)
    assert capsys.readouterr().err == ""


def test_fiv_only_equals_the_mean_of_the_fims():
    from deepresolve_captum.summary import feature_importance_vectors, summarize

    m = PaperCNN(n_outputs=3, seq_len=40)
    opt = LayerFeatureOptimizer(m, m.pool)
    x = torch.zeros(1, 4, 40)
    fims, s = opt.attribute(x, target=None, n_starts=4, l2=0.8, seed=3, return_scores=True)
    fiv, s2 = opt.attribute(x, target=None, n_starts=4, l2=0.8, seed=3, return_scores=True,
                            fiv_only=True)
    assert fiv.shape == (3, 4, 32) and torch.equal(s, s2)
    assert np.allclose(fiv.numpy(), feature_importance_vectors(fims), rtol=1e-5, atol=1e-7)
    fiv5 = opt.attribute(x, target=None, n_starts=4, l2=0.8, seed=3, fiv_only=True, chunk_size=5)
    assert np.allclose(fiv5.numpy(), fiv.numpy(), atol=1e-5)   # as chunking does for FIMs
    a, b = summarize(fims, s), summarize(fiv, s2)
    assert np.allclose(a.ofiv, b.ofiv, atol=1e-6) and (a.category == b.category).all()
    # l2="auto" probes still see whole FIMs: the same lambda either way
    xs = torch.nn.functional.one_hot(torch.randint(0, 4, (6, 40)), 4).transpose(1, 2).float()
    opt.attribute(xs, target=[0, 2], n_starts=2, l2="auto", seed=1)
    lam = opt.diagnostics.l2
    opt.attribute(xs, target=[0, 2], n_starts=2, l2="auto", seed=1, fiv_only=True)
    assert opt.diagnostics.l2 == lam
    # a flat layer is its own FIV
    m2 = EncodeTFModel()
    opt2 = LayerFeatureOptimizer(m2, m2.fc1)
    f = opt2.attribute(torch.zeros(1, 4, 101), target=0, n_starts=3, l2=2.8, seed=0,
                       attribute_to_layer_input=True, fiv_only=True)
    assert f.shape == (1, 3, 16)


def test_loose_row_comparison_tolerates_kernel_noise_not_coupling():
    from deepresolve_captum.optimizer import _same

    a = torch.linspace(-3, 3, 11)
    assert _same(a, a * (1 + 5e-4), loose=True) and not _same(a, a * (1 + 5e-4))
    assert not _same(a, a - a.mean() + 0.05, loose=True)
    h = a.to(torch.bfloat16)
    assert _same(h, (a * 1.01).to(torch.bfloat16), loose=True)


def test_init_gives_the_starts():
    from deepresolve_captum.optimizer import start_draw

    m = PaperCNN(n_outputs=2, seq_len=40)
    opt = LayerFeatureOptimizer(m, m.pool)
    x = torch.zeros(1, 4, 40)
    a = opt.attribute(x, target=[1, 0], n_starts=3, l2=0.5, seed=9)
    draws = torch.stack([torch.stack([start_draw(9, t, s, (32, 8)) for s in range(3)]) for t in (1, 0)])
    b = opt.attribute(x, target=[1, 0], n_starts=3, l2=0.5, seed=123, init=draws)
    assert torch.equal(a, b)                                   # the seed no longer matters
    c = opt.attribute(x, target=[1, 0], n_starts=3, l2=0.5, init=draws * 3)
    assert not torch.equal(a, c)
    for bad, err in ((draws[:1], ValueError), (draws.numpy(), TypeError),
                     (draws * float("nan"), ValueError)):
        with pytest.raises(err, match="init"):
            opt.attribute(x, target=[1, 0], n_starts=3, l2=0.5, init=bad)



class _FunctionalHead(nn.Module):
    """Logits squashed (or not) by a functional call, with a gate that uses a sigmoid inside."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv, self.fc = nn.Conv1d(4, 6, 5), nn.Linear(6 * 16, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h * torch.sigmoid(h)  # a gate: a sigmoid that is not the output's
        z = self.fc(h.flatten(1))
        if self.how == "sigmoid":
            return torch.sigmoid(z)
        if self.how == "softmax":
            return torch.nn.functional.softmax(z, dim=1).view(-1, 3, 1)[:, :, 0]
        return z


def test_functional_squashing_is_seen_in_the_graph():
    """A model ending in torch.sigmoid / F.softmax (no nn.Sigmoid module to see) was optimised
    on probabilities without a word."""
    torch.manual_seed(0)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 20)), 4).transpose(1, 2).float()
    for how in ("sigmoid", "softmax"):
        m = _FunctionalHead(how)
        with pytest.warns(UserWarning, match=f"computes its output with {how}") as rec:
            LayerFeatureOptimizer(m, m.conv).attribute(x, target=0, n_starts=2, l2=1.0, seed=0)
        assert rec[0].filename == __file__
    m = _FunctionalHead("logits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerFeatureOptimizer(m, m.conv).attribute(x, target=0, n_starts=2, l2=1.0, seed=0)

def test_warnings_and_errors_a_user_needs():
    torch.manual_seed(0)
    logits = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3))
    squashed = nn.Sequential(*logits, nn.Sigmoid())
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 20)), 4).transpose(1, 2).float()
    with pytest.warns(UserWarning, match="ends in Sigmoid") as rec:
        LayerFeatureOptimizer(squashed, squashed[1]).attribute(x, target=0, n_starts=2, l2=1.0, seed=0)
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerFeatureOptimizer(logits, logits[1]).attribute(x, target=0, n_starts=2, l2="auto", seed=0)
    opt = LayerFeatureOptimizer(logits, logits[1])
    with pytest.warns(UserWarning, match="one example") as rec:
        opt.attribute(x[:1], target=0, n_starts=2, l2="auto", seed=0)
    assert rec[0].filename == __file__
    with pytest.warns(UserWarning, match="constant"):
        opt.attribute(torch.zeros(4, 4, 20), target=0, n_starts=2, l2="auto", seed=0)
    with pytest.raises(ValueError, match="NaN"):
        opt.attribute(x * float("nan"), target=0, n_starts=2, l2=1.0)
    assert opt.diagnostics is None                             # not the previous call's
    with pytest.raises(RuntimeError, match="must be a batch"):
        opt.attribute(x[0], target=0, n_starts=2, l2=1.0)      # one example without its batch dim

    class Lowers(nn.Module):                                   # every channel lowers the score
        def __init__(self):
            super().__init__()
            self.h = nn.Identity()

        def forward(self, v):
            return -torch.relu(self.h(v)).sum(1, keepdim=True)
    m = Lowers()
    with pytest.warns(RuntimeWarning, match=r"target\(s\) \[0\] are all zero") as rec:
        f = LayerFeatureOptimizer(m, m.h).attribute(torch.zeros(1, 5), target=0, n_starts=3, l2=1.0, seed=0)
    assert rec[0].filename == __file__ and not f.any()


# ---------------------------------------------------------------- models off the beaten path
class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(4, 6, 3, padding=1)
        self.block = nn.Sequential(nn.Conv1d(6, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(72, 3)

    def forward(self, x):
        h = self.stem(x)
        return self.fc((h + self.block(h)).flatten(1))


def test_layer_input_with_a_skip_path_is_warned_not_the_output():
    """With attribute_to_layer_input the hook swaps only the layer's own copy of its input: a
    residual h + block(h) keeps the real h on the skip path. That is warned; the output of the
    module producing h (the whole tensor) is not."""
    torch.manual_seed(2)
    m = _Residual().eval()
    x = torch.randn(5, 4, 12)
    with pytest.warns(UserWarning, match="reaches the output by another path"):
        LayerFeatureOptimizer(m, m.block).attribute(x, target=0, n_starts=2, l2=0.5, seed=0,
                                                    attribute_to_layer_input=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerFeatureOptimizer(m, m.stem).attribute(x, target=0, n_starts=2, l2=0.5, seed=0)
        seq = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval()
        LayerFeatureOptimizer(seq, seq[1]).attribute(x, target=0, n_starts=2, l2=0.5, seed=0,
                                                     attribute_to_layer_input=True)


def test_activation_checkpointing_sees_h_in_the_backward():
    """torch.utils.checkpoint re-runs the forward during the backward: H must still be swapped
    in then. The FIMs equal those of the same model without checkpointing."""
    import torch.utils.checkpoint as cp

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Conv1d(6, 6, 3), nn.Tanh(),
                        nn.Flatten(), nn.Linear(48, 3)).eval()

    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = net

        def forward(self, x):
            h = cp.checkpoint(lambda z: self.m[3](self.m[2](self.m[1](self.m[0](z)))), x,
                              use_reentrant=False)
            return self.m[5](self.m[4](h))

    x = torch.randn(5, 4, 12)
    ref = LayerFeatureOptimizer(net, net[1]).attribute(x, target=[0, 1], n_starts=3, l2=0.5, seed=0)
    ck = Checkpointed().eval()
    got = LayerFeatureOptimizer(ck, net[1]).attribute(x, target=[0, 1], n_starts=3, l2=0.5, seed=0)
    assert torch.allclose(got, ref, atol=1e-6)


def test_model_hidden_from_the_module_tree_is_warned():
    """A wrapper that keeps the model outside its module tree cannot put it in eval mode:
    warned, as for a plain function (BatchNorm statistics would change in train mode)."""
    net = nn.Sequential(nn.Conv1d(4, 6, 3), nn.BatchNorm1d(6), nn.ReLU(), nn.Flatten(),
                        nn.Linear(60, 2)).eval()

    class Hiding(nn.Module):
        def __init__(self):
            super().__init__()
            self.__dict__["net"] = net          # not registered as a submodule

        def forward(self, x):
            return self.net(x)

    with pytest.warns(UserWarning, match="not a submodule of forward_func"):
        LayerFeatureOptimizer(Hiding(), net[2]).attribute(torch.randn(4, 4, 12), target=0,
                                                          n_starts=2, l2=0.5, seed=0)


def test_sequence_first_layer_is_named():
    """A layer whose value is (L, N, E) (batch_first=False) gets an error naming the layout,
    not one about rows mixing."""
    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.act, self.fc = nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.act(self.proj(x.transpose(0, 1))).mean(0))

    m = SeqFirst().eval()
    with pytest.raises(ValueError, match="first axis is not the batch"):
        LayerFeatureOptimizer(m, m.act).attribute(torch.randn(6, 10, 8), target=0, n_starts=2,
                                                  l2=0.5, seed=0)


def test_mode_comes_back_through_a_train_override():
    """A module whose train() does more than set the flag (here: MC samples) gets it back."""
    class MC(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2))
            self.mc_samples = 1

        def train(self, mode=True):
            super().train(mode)
            self.mc_samples = 8 if mode else 1
            return self

        def forward(self, x):
            return self.net(x)

    m = MC().train()
    m.net[1].eval()                               # a mixed mode inside, kept as found too
    LayerFeatureOptimizer(m, m.net[1]).attribute(torch.randn(3, 4, 12), target=0, n_starts=2,
                                                 l2=0.5, seed=0)
    assert m.training and m.mc_samples == 8 and m.net[0].training and not m.net[1].training


class _MCDropout(nn.Module):
    """Dropout that samples while in train mode: its train() override keeps ``sampling``."""

    def __init__(self):
        super().__init__()
        self.sampling = False
        self.inner = nn.Identity()

    def train(self, mode=True):
        super().train(mode)
        self.sampling = mode
        return self

    def forward(self, x):
        return self.inner(nn.functional.dropout(x, 0.5, training=self.sampling))


@pytest.mark.parametrize("root_mode", [False, True])
def test_a_submodule_train_override_in_another_mode_than_the_root_comes_back(root_mode):
    """The MC-dropout idiom model.eval(); model.mc.train(): mc's own state (not only its flag)
    comes back, and so does a child of mc set apart from mc."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), _MCDropout(), nn.Linear(6, 2))
    m.train(root_mode)
    m[2].train(not root_mode)
    m[2].inner.train(root_mode)
    before = (m.training, m[2].training, m[2].sampling, m[2].inner.training)
    LayerFeatureOptimizer(m, m[1]).attribute(torch.randn(5, 4), target=0, n_starts=2, l2=0.5,
                                             seed=0, max_steps=30)
    assert (m.training, m[2].training, m[2].sampling, m[2].inner.training) == before


def test_a_module_shared_by_two_parents_in_different_modes_comes_back():
    """A Dropout S under both A and B, net.train(); net.B.eval(); S.train(): restoring through
    train() over the deduplicated module list reset S with B's mode (9a9dfb9 regressed the flag
    restore here); every place a module appears is now revisited."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.act = nn.Linear(4, 6), nn.Tanh()
            shared = _MCDropout()
            self.A = nn.Sequential(shared)
            self.B = nn.Sequential(nn.Identity(), shared)
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            return self.out(self.B(self.A(self.act(self.lin(x)))))

    torch.manual_seed(0)
    net = Net().train()
    net.B.eval()
    net.A[0].train()
    before = [(n, m.training) for n, m in net.named_modules(remove_duplicate=False)]
    opt = LayerFeatureOptimizer(net, net.act)
    opt.attribute(torch.randn(5, 4), target=0, n_starts=2, l2=0.5, seed=0, max_steps=30)
    assert [(n, m.training) for n, m in net.named_modules(remove_duplicate=False)] == before
    assert net.A[0].sampling
    opt.choose_l2(torch.randn(5, 4), target=0, seed=0)
    assert [(n, m.training) for n, m in net.named_modules(remove_duplicate=False)] == before


def test_fiv_only_zero_mean_maps_are_not_called_collapsed():
    """FIVs average over positions: a FIM of +a / -a has FIV 0 without having collapsed."""
    class Diff(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.id = nn.Conv1d(4, 3, 1), nn.Identity()

        def forward(self, x):
            h = self.id(self.c(x))
            return (h[:, :, 0] - h[:, :, 1]).sum(1, keepdim=True)

    m = Diff().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fiv = LayerFeatureOptimizer(m, m.id).attribute(torch.randn(3, 4, 6), target=0, n_starts=2,
                                                       l2=0.3, seed=0, fiv_only=True)
    assert fiv.abs().max() < 1e-6


@pytest.mark.parametrize("bad, match", [
    ((torch.randn(3, 4, 12), torch.tensor(5.0)), r"inputs\[1\] has shape \(\)"),
    ((torch.randn(3, 4, 12), torch.randn(2, 4)), r"inputs\[1\].*N = 3"),
])
def test_inputs_that_are_not_per_example_are_named(bad, match):
    m = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval()

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x, s):
            return self.m(x)

    with pytest.raises(ValueError, match=match):
        LayerFeatureOptimizer(Two(), m[1]).attribute(bad, target=0, n_starts=2, l2=0.5)


def test_meta_device_and_compiled_model():
    m = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval()
    x = torch.randn(3, 4, 12)
    with pytest.raises(ValueError, match="'meta' device"):
        meta = copy.deepcopy(m).to("meta")
        LayerFeatureOptimizer(meta, meta[1]).attribute(x, target=0, n_starts=2, l2=0.5)
    ref = LayerFeatureOptimizer(m, m[1]).attribute(x, target=[0, 1], n_starts=2, l2=0.5, seed=0)
    compiled = torch.compile(m, backend="eager")
    opt = LayerFeatureOptimizer(compiled, m[1])
    assert opt.forward_func is m                  # the eager module runs the ascent
    assert torch.equal(opt.attribute(x, target=[0, 1], n_starts=2, l2=0.5, seed=0), ref)


class SeleneStyle(nn.Module):
    """Selene's DeepSEA layout: conv_net, then a classifier whose last module is the Sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv_net = nn.Sequential(nn.Conv1d(4, 8, 5), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(8 * 16, 16), nn.ReLU(), nn.Linear(16, 5),
                                        nn.Sigmoid())

    def forward(self, x):
        return self.classifier(self.conv_net(x).flatten(1))


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped at max_steps")
def test_the_sigmoid_advice_names_the_module_and_gives_the_logits():
    model = SeleneStyle().eval()
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (6, 20)), 4).permute(0, 2, 1).float()
    with pytest.warns(UserWarning, match=r"ends in Sigmoid \(classifier\.3\).*"
                                         r"setattr\(m\.get_submodule\('classifier'\), '3', "
                                         r"torch\.nn\.Identity\(\)\)"):
        LayerFeatureOptimizer(model, model.conv_net[1]).attribute(x, target=[0], n_starts=1,
                                                                   l2=1.0, max_steps=3)
    # following it gives the logits of the same model (dropping the last child would not)
    m = copy.deepcopy(model)
    setattr(m.get_submodule("classifier"), "3", nn.Identity())   # the advice, as printed
    torch.testing.assert_close(torch.sigmoid(m(x)), model(x))
    assert nn.Sequential(*list(model.children())[:-1])(x).shape != model(x).shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerFeatureOptimizer(m, m.conv_net[1]).attribute(x, target=[0], n_starts=1, l2=1.0)


class ResidualAround(nn.Module):
    """x1 = relu(conv1(x)); out = fc(x1 + relu(conv2(x1))): conv2's value is not the only path."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 20, 3)

    def forward(self, x, covariate=None):
        x1 = torch.relu(self.conv1(x))
        out = self.fc((x1 + torch.relu(self.conv2(x1))).flatten(1))
        return out if covariate is None else out + covariate


def test_paths_around_an_output_layer_and_covariates_are_warned():
    torch.manual_seed(0)
    m = ResidualAround().eval()
    x = torch.randn(4, 4, 20)
    with pytest.warns(UserWarning, match=r"inputs\[0\] also reach the scores by a path"):
        LayerFeatureOptimizer(m, m.conv2).attribute(x, target=[0, 1], n_starts=1, l2=1.0,
                                                    seed=0)
    cov = torch.randn(4, 3)
    with pytest.warns(UserWarning, match=r"^additional_forward_args\[0\] also reach the scores"):
        LayerFeatureOptimizer(m, m.fc).attribute(x, target=[0], n_starts=1, l2=1.0, seed=0,
                                                 attribute_to_layer_input=True,
                                                 additional_forward_args=(cov,))
    with warnings.catch_warnings():   # every path goes through the layer: nothing to say
        warnings.simplefilter("error")
        LayerFeatureOptimizer(m, m.conv1).attribute(x, target=[0], n_starts=1, l2=1.0, seed=0)
        LayerFeatureOptimizer(m, m.fc).attribute(x, target=[0], n_starts=1, l2=1.0, seed=0,
                                                 attribute_to_layer_input=True,
                                                 additional_forward_args=(cov[:1].expand(4, 3),))


class Transformerish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(4, 16, 5)
        self.proj = nn.Linear(16, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        h = self.proj(self.stem(x).transpose(1, 2))       # (N, L, 16): channels-last
        return self.head(self.norm(self.block(h)).mean(1))


@pytest.mark.parametrize("name,on_input", [("block", False), ("norm", False), ("proj", False),
                                           ("norm", True)])
def test_channels_last_layers_are_warned(name, on_input):
    torch.manual_seed(0)
    m = Transformerish().eval()
    layer = getattr(m, name)
    with pytest.warns(UserWarning, match=r"shape \(26, 16\) per example, looks channels-last"):
        LayerFeatureOptimizer(m, layer).attribute(torch.randn(4, 4, 30), target=[0],
                                                  n_starts=1, l2=1.0, seed=0,
                                                  attribute_to_layer_input=on_input)


def test_channels_first_layers_are_not_warned():
    torch.manual_seed(0)
    m = Transformerish().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerFeatureOptimizer(m, m.stem).attribute(torch.randn(4, 4, 30), target=[0],
                                                   n_starts=1, l2=1.0, seed=0)


def test_auto_l2_does_not_depend_on_the_order_of_the_targets():
    torch.manual_seed(0)
    m = PaperCNN(n_outputs=24, seq_len=50).eval()
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (16, 50)), 4).permute(0, 2, 1).float()
    order = list(range(24))
    shuffled = [int(i) for i in np.random.default_rng(0).permutation(24)]
    lam = {}
    for name, targets in (("sorted", order), ("shuffled", shuffled)):
        opt = LayerFeatureOptimizer(m, m.pool)
        opt.attribute(x, target=targets, n_starts=2, l2="auto", seed=3, max_steps=200)
        lam[name] = opt.diagnostics.l2
        assert f"seed=3" in repr(opt.diagnostics)
    assert lam["sorted"] == lam["shuffled"]


def test_choose_l2_gives_attributes_lambda_and_blocks_then_match_one_call():
    """l2='auto' per block of targets chooses a lambda per block; choose_l2 chooses the one
    lambda of the whole run, without the ascent, and leaves the model as found."""
    torch.manual_seed(0)
    m = PaperCNN(n_outputs=40, seq_len=50).eval()
    m.fc1.weight.requires_grad_(False)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (32, 50)), 4).permute(0, 2, 1).float()
    opt = LayerFeatureOptimizer(m, m.pool)
    lam = opt.choose_l2(x, seed=5, max_steps=200)
    assert isinstance(lam, float) and opt.l2_auto["chosen"] == lam
    assert opt.diagnostics is None                       # no ascent ran
    assert not m.training and not m.fc1.weight.requires_grad and m.fc2.weight.requires_grad
    assert not m.pool._forward_hooks and not m.pool._forward_pre_hooks
    fims = opt.attribute(x, target=None, n_starts=2, l2="auto", seed=5, max_steps=200)
    assert opt.diagnostics.l2 == lam
    blocks = [opt.attribute(x, target=block, n_starts=2, l2=lam, seed=5, max_steps=200)
              for block in (list(range(20)), list(range(20, 40)))]
    joined = torch.cat(blocks)
    assert torch.allclose(joined, fims, atol=1e-3 * float(fims.abs().max()))


def test_choose_l2_warns_at_the_callers_line_and_forgets_a_failed_call():
    import inspect
    torch.manual_seed(0)
    m = PaperCNN(n_outputs=10, seq_len=50).eval()
    opt = LayerFeatureOptimizer(m, m.pool)
    with pytest.warns(UserWarning, match="one example") as rec:
        opt.choose_l2(torch.randn(1, 4, 50), seed=0, max_steps=100)
    assert [w.filename for w in rec] == [__file__]
    with pytest.warns(UserWarning, match="one example") as rec:      # and attribute's own
        opt.attribute(torch.randn(1, 4, 50), target=[0], n_starts=1, seed=0, max_steps=500)
    assert [w.filename for w in rec if "one example" in str(w.message)] == [__file__]

    class Noisy(nn.Module):          # the model's own warnings keep their place and filters
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            self.line = inspect.currentframe().f_lineno + 1
            warnings.warn("from the model", DeprecationWarning)
            return self.m(x)

    noisy = Noisy()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        LayerFeatureOptimizer(noisy, m.pool).choose_l2(torch.randn(8, 4, 50), seed=0,
                                                       max_steps=50)
    mine = [w for w in rec if "from the model" in str(w.message)]
    assert mine and all(w.lineno == noisy.line for w in mine)    # not moved to our caller
    assert opt.l2_auto is not None
    with pytest.raises(ValueError, match="outside"):
        opt.choose_l2(torch.randn(4, 4, 50), target=[100], seed=0)
    assert opt.l2_auto is None


def test_a_layernorm_over_channels_and_positions_is_not_channels_last():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(4, 8, 5), nn.LayerNorm([8, 26]), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 26, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerFeatureOptimizer(m, m[0]).attribute(torch.randn(4, 4, 30), target=[0], n_starts=1,
                                                 l2=1.0, seed=0)


class EmbeddingResidual(nn.Module):
    """Token ids -> embedding (frozen: no grad) -> h + conv(h): a residual at conv's input."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 8)
        self.conv = nn.Conv1d(8, 8, 5, padding=2)
        self.fc = nn.Linear(8 * 40, 2)

    def forward(self, t):
        h = self.emb(t).transpose(1, 2)
        return self.fc((h + self.conv(h)).flatten(1))


def test_a_residual_after_an_embedding_is_warned():
    torch.manual_seed(0)
    m = EmbeddingResidual().eval()
    with pytest.warns(UserWarning, match="also reaches the output by another path"):
        LayerFeatureOptimizer(m, m.conv).attribute(torch.randint(0, 5, (8, 40)), target=[0],
                                                   n_starts=1, l2=1.0, seed=0,
                                                   attribute_to_layer_input=True)


class EmbeddingInPlaceResidual(nn.Module):
    """Frozen embedding -> h += conv(h) (in place), plus a per-example covariate."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 8)
        self.conv = nn.Conv1d(8, 8, 5, padding=2)
        self.fc = nn.Linear(8 * 40, 2)

    def forward(self, t, covariate):
        h = self.emb(t).transpose(1, 2).contiguous()
        h += self.conv(h)
        return self.fc(h.flatten(1)) + covariate


def test_an_in_place_residual_still_lets_the_covariate_be_seen():
    torch.manual_seed(0)
    m = EmbeddingInPlaceResidual().eval()
    cov = torch.randn(8, 2)
    with pytest.warns(UserWarning, match=r"additional_forward_args\[0\] also reach the scores"):
        LayerFeatureOptimizer(m, m.conv).attribute(torch.randint(0, 5, (8, 40)), target=[0],
                                                   additional_forward_args=(cov,), n_starts=1,
                                                   l2=1.0, seed=0, attribute_to_layer_input=True)


class MixedPrecision(nn.Module):
    """The layer ``act`` is computed in ``body``'s dtype, the head and the output in ``head``'s
    (a bf16 body returning float32 logits, a float32 model with a float64 head)."""

    def __init__(self, body, head):
        super().__init__()
        self.body, self.head = body, head
        self.lin, self.act, self.out = nn.Linear(4, 8).to(body), nn.Tanh(), nn.Linear(8, 3).to(head)

    def forward(self, x):
        return self.out(self.act(self.lin(x.to(self.body))).to(self.head))


@pytest.mark.parametrize("body, head", [(torch.bfloat16, torch.float32),
                                        (torch.float32, torch.float64),
                                        (torch.float64, torch.float32)])
def test_layer_and_output_may_have_different_dtypes(body, head):
    """The scores are the output's, in its dtype (not rounded to the layer's), for attribute
    and for choose_l2's probe ascents."""
    torch.manual_seed(0)
    m = MixedPrecision(body, head).eval()
    x = torch.randn(6, 4)
    opt = LayerFeatureOptimizer(m, m.act)
    fims, scores = opt.attribute(x, target=[0, 2], n_starts=2, l2=0.5, seed=0, max_steps=200,
                                 return_scores=True)
    assert fims.dtype == body and scores.dtype == head and scores.shape == (2, 2)
    with torch.no_grad():
        out = m.out(fims.to(head))                      # (2 targets, 2 starts, 3 outputs)
    assert torch.equal(scores, torch.stack([out[0, :, 0], out[1, :, 2]]))
    lam = opt.choose_l2(x, target=[0, 2], seed=0, max_steps=200)
    assert math.isfinite(lam) and lam > 0


def test_a_layer_with_one_number_per_example_is_refused_clearly():
    """A layer whose value is (N,) (a per-example gate) has no feature axis for H."""
    class Gate(nn.Module):
        def forward(self, x):
            return x.sum(1)

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.gate, self.out = nn.Linear(4, 3), Gate(), nn.Linear(1, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.gate(self.lin(x))).unsqueeze(1))

    m = Gated().eval()
    snap = snapshot(m)
    opt = LayerFeatureOptimizer(m, m.gate)
    for l2 in (0.5, "auto"):
        with pytest.raises(ValueError, match=r"one number per example, shape \(N,\).*feature axis"):
            opt.attribute(torch.randn(6, 4), target=0, n_starts=2, l2=l2, seed=0)
    assert_unchanged(m, snap)


@pytest.mark.parametrize("raise_it", [
    lambda: torch._assert(False, "batch sizes differ"),
    lambda: (_ for _ in ()).throw(AssertionError("batch sizes differ")),
    lambda: (_ for _ in ()).throw(ValueError("batch sizes differ")),
], ids=["torch_assert", "assert", "value_error"])
def test_a_model_checking_its_batch_after_the_layer_falls_back_to_expanding(raise_it):
    """Two rows of H against one example fail the model's own batch check, whatever it raises:
    the upstream part is then re-run per row (recompute_upstream), as for a RuntimeError."""
    class Checked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.act, self.side, self.out = (nn.Linear(4, 6), nn.Tanh(),
                                                       nn.Linear(4, 6), nn.Linear(6, 2))

        def forward(self, x):
            h, g = self.act(self.lin(x)), self.side(x)
            if h.shape[0] != g.shape[0]:
                raise_it()
            return self.out(h * g)

    torch.manual_seed(0)
    m = Checked().eval()
    opt = LayerFeatureOptimizer(m, m.act)
    with pytest.warns(UserWarning, match=r"inputs\[0\] also reach the scores"):  # g = side(x)
        fims = opt.attribute(torch.randn(5, 4), target=0, n_starts=2, l2=0.5, seed=0)
    assert fims.shape == (1, 2, 6) and opt.diagnostics.recompute_upstream


class _CodedError(RuntimeError):
    """A RuntimeError subclass whose args are not one message."""

    def __init__(self, code, text):
        super().__init__(code, text)


class _Fails(nn.Module):
    """Raises ``err`` (one object, every call) after its Linear has run."""

    def __init__(self, err):
        super().__init__()
        self.lin, self.err = nn.Linear(4, 3), err

    def forward(self, x):
        self.lin(x)
        raise self.err


@pytest.mark.parametrize("error", [
    NotImplementedError("this model variant has no forward yet"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    _CodedError(7, "backend refused"),
], ids=["not_implemented", "out_of_memory", "args_not_one_string"])
def test_a_failing_first_forward_keeps_its_exception_type(error):
    """The hint about the first example is added without changing the class, so that a
    caller's except clause for it still matches; a plain RuntimeError gets it too."""
    import sys

    m = _Fails(error).eval()
    with pytest.raises(type(error)) as info:
        LayerFeatureOptimizer(m, m.lin).attribute(torch.randn(4, 4), target=0, l2=0.5)
    assert info.value is error and type(info.value) is type(error)
    told = str(info.value) + "".join(getattr(info.value, "__notes__", []))
    if len(error.args) == 1 or sys.version_info >= (3, 11):
        assert "the model failed on the first example of `inputs`, shape (1, 4)" in told
    m.err = RuntimeError("plain")
    with pytest.raises(RuntimeError, match=r"plain\n\(the model failed on the first example") \
            as info:
        LayerFeatureOptimizer(m, m.lin).attribute(torch.randn(4, 4), target=0, l2=0.5)
    assert type(info.value) is RuntimeError and type(info.value.__cause__) is RuntimeError


class _CustomStr(NotImplementedError):
    def __str__(self):
        return "[custom] bad thing"


def test_the_first_forward_hint_is_told_once_and_never_lost():
    """A model that raises the same exception object on every call got the hint appended again
    each time (3 copies after 3 calls); a class with its own __str__ had its args changed and
    showed no hint."""
    import sys

    hint = "the model failed on the first example of `inputs`"
    for err in (NotImplementedError("cached"), _CustomStr("original")):
        m = _Fails(err).eval()
        for _ in range(3):
            with pytest.raises(NotImplementedError):
                LayerFeatureOptimizer(m, m.lin).attribute(torch.randn(4, 4), target=0, l2=0.5)
        told = str(err) + "".join(getattr(err, "__notes__", []))
        assert told.count(hint) == (1 if sys.version_info >= (3, 11) or
                                    not isinstance(err, _CustomStr) else 0), told
        if sys.version_info >= (3, 11):
            assert err.args in (("cached",), ("original",))     # args left alone


@pytest.mark.parametrize("as_array, as_tensor, multi", [
    (np.array(3), torch.tensor(3), False),                      # 0-d: one class
    (np.array([3, 1]), torch.tensor([3, 1]), False),
    (np.array([[1, 2], [0, 1]]), torch.tensor([[1, 2], [0, 1]]), True),  # rows of indices
], ids=["0d", "1d", "2d_into_multidimensional_output"])
def test_a_numpy_target_behaves_as_the_same_tensor(as_array, as_tensor, multi):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6),
                      nn.Unflatten(1, (2, 3)) if multi else nn.Identity()).eval()
    opt = LayerFeatureOptimizer(m, m[1])
    x = torch.randn(5, 4)
    got = opt.attribute(x, target=as_array, n_starts=2, l2=0.5, seed=0, max_steps=50)
    from_array = opt.diagnostics.targets
    want = opt.attribute(x, target=as_tensor, n_starts=2, l2=0.5, seed=0, max_steps=50)
    assert torch.equal(got, want)
    assert np.array_equal(from_array, opt.diagnostics.targets)


def test_a_layer_called_with_its_input_by_keyword_is_named():
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.act, self.out = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5)

        def forward(self, x):
            return self.out(self.act(input=self.lin(x)))

    m = Keyword().eval()
    snap = snapshot(m)
    with pytest.raises(TypeError, match=r"called with its input by keyword.*positionally"):
        LayerFeatureOptimizer(m, m.act).attribute(torch.randn(5, 4), target=0, n_starts=1,
                                                  l2=0.5, attribute_to_layer_input=True)
    assert_unchanged(m, snap)


def test_choose_l2_leaves_the_last_attribute_calls_diagnostics():
    torch.manual_seed(0)
    m = ConvLinearHead().eval()
    x = torch.randn(6, 4, 20)
    opt = LayerFeatureOptimizer(m, m.relu)
    opt.attribute(x, target=[0, 1], n_starts=2, l2=0.5, seed=0)
    before = opt.diagnostics
    opt.choose_l2(x, target=[0, 1], seed=0, max_steps=100)
    assert opt.diagnostics is before and opt.l2_auto is not None
    with pytest.raises(ValueError, match="outside"):              # a failed call too
        opt.choose_l2(x, target=[7], seed=0)
    assert opt.diagnostics is before and opt.l2_auto is None


@pytest.mark.parametrize("dtype, kw, match", [
    (torch.float32, dict(l2=4e38), r"l2 = 4e\+38 is too large for the layer's dtype torch.float32"),
    (torch.float32, dict(l2=1e300), r"l2 = 1e\+300 is too large for the layer's dtype"),
    (torch.float32, dict(l2=1e-300), r"l2 = 1e-300 is too small for the layer's dtype"),
    (torch.float16, dict(l2=1e5), r"l2 = 100000 is too large for the layer's dtype torch.float16"),
    (torch.float16, dict(l2=1.0, lr=1e6), r"lr = 1e\+06 is too large for the layer's dtype"),
], ids=["f32_4e38", "f32_1e300", "f32_1e-300", "f16_1e5", "f16_lr"])
def test_an_l2_the_layers_dtype_cannot_hold_is_refused(dtype, kw, match):
    """torch failed with 'value cannot be converted to type float without overflow'."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).to(dtype)
    snap = snapshot(m)
    with pytest.raises(ValueError, match=match):
        LayerFeatureOptimizer(m, m[1]).attribute(torch.randn(4, 4, 12, dtype=dtype), target=0,
                                                 n_starts=2, seed=0, **kw)
    assert_unchanged(m, snap)


def test_non_finite_messages_do_not_advise_a_larger_l2_when_it_is_too_large():
    """l2 = 1e38 fits float32, but its penalty l2 ||H||^2 overflows: that is named, and a
    non-finite score no longer claims which way l2 is off."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval()
    with pytest.raises(ValueError, match=r"penalty l2 \* \|\|H\|\|\^2 overflows the layer's "
                                         r"dtype torch.float32.*too large") as info:
        LayerFeatureOptimizer(m, m[1]).attribute(torch.randn(4, 4, 12), target=0, n_starts=2,
                                                 l2=1e38, seed=0)
    assert "larger l2" not in str(info.value)
    e = Exploding()
    with pytest.raises(ValueError, match="non-finite class score") as info:
        LayerFeatureOptimizer(e, e.lin).attribute(torch.randn(2, 3), target=0, l2=1.0,
                                                  init_scale=10.0, seed=0,
                                                  attribute_to_layer_input=True)
    assert "too small" in str(info.value) and "too large" in str(info.value)
    assert "Use larger l2" not in str(info.value)


def test_a_tiny_l2_whose_h_overflows_is_called_too_small():
    """l2 = 1e-30 lets H grow until ||H||^2 overflows float32: the message says l2 is too small
    (it said 'l2 is too large ... Use a smaller l2', the opposite advice)."""
    torch.manual_seed(0)
    m = PaperCNN(n_outputs=2, seq_len=50).eval()
    x = nn.functional.one_hot(torch.randint(0, 4, (16, 50)), 4).permute(0, 2, 1).float()
    with pytest.raises(ValueError, match=r"\|\|H\|\|\^2 overflows.*l2 is too small") as info:
        LayerFeatureOptimizer(m, m.pool).attribute(x, target=0, n_starts=3, l2=1e-30, seed=0)
    assert "too large" not in str(info.value) and "smaller l2" not in str(info.value)


def test_huge_starts_are_named_as_such_not_as_a_small_l2():
    """init_scale=1e20 overflowed ||H||^2 at the first evaluation and was reported as 'H grew
    without bound, so l2 is too small ... Use a larger l2'."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval()
    with pytest.raises(ValueError, match=r"at the start of the ascent.*smaller init_scale") as info:
        LayerFeatureOptimizer(m, m[1]).attribute(torch.randn(4, 4, 12), target=0, n_starts=2,
                                                 l2=0.5, init_scale=1e20, seed=0)
    assert "larger l2" not in str(info.value)


def test_auto_l2_refuses_a_probe_lambda_a_float16_layer_cannot_use():
    """The second probe of l2='auto' steps by 1 / (2 lambda); on a float16 layer with a large
    mean activation and a weak head that overflowed inside torch ('value cannot be converted
    to type c10::Half without overflow'); it is now a ValueError naming the probe."""
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 16, 3)
    with torch.no_grad():
        conv.bias.fill_(60.0)
    head = nn.Linear(16 * 8, 1)
    with torch.no_grad():
        head.weight.mul_(1e-3)
    m = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head).half().eval()
    x = torch.randn(8, 4, 10).half()
    for call in (lambda o: o.attribute(x, target=0, n_starts=2, l2="auto", seed=0),
                 lambda o: o.choose_l2(x, target=0, seed=0)):
        with pytest.raises(ValueError, match=r"l2='auto' cannot probe this layer in torch.float16"):
            call(LayerFeatureOptimizer(m, m[1]))
