"""target_only_head: a wide final nn.Linear is computed for each row's target only, with the
full head's results, and only where the probe shows that this is exact."""
import pytest
import torch
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer
from deepresolve_captum.optimizer import _TargetHead as _RealTargetHead


class WideHead(nn.Module):
    """conv -> ReLU (layer) -> flatten -> Linear(96, n_out), then ``after`` on the logits."""

    def __init__(self, n_out=300, after=None):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 6, 5)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6 * 16, n_out)
        self.after = after

    def forward(self, x):
        out = self.fc(self.relu(self.conv(x)).flatten(1))
        return out if self.after is None else self.after(out)


def _x(n=8):
    g = torch.Generator().manual_seed(1)
    return nn.functional.one_hot(torch.randint(0, 4, (n, 20), generator=g), 4).permute(0, 2, 1).float()


def _run(model, fast, layer=None, **kw):
    opt = LayerFeatureOptimizer(model, layer if layer is not None else model.relu)
    kw.setdefault("target", [0, 7, 150, 299])
    kw.setdefault("l2", 0.5)
    fims, scores = opt.attribute(_x(), n_starts=3, seed=0, return_scores=True,
                                 target_only_head=fast, **kw)
    return fims, scores, opt.diagnostics


def test_wide_head_finds_the_analytic_optimum_and_matches_the_full_head():
    model = WideHead().eval()
    fims, scores, diag = _run(model, True)
    assert diag.target_only_head and "target-only head" in repr(diag)
    # the head after the layer is linear: H* = w_c / (2 l2), reshaped to the layer
    w = model.fc.weight.detach()[[0, 7, 150, 299]].view(4, 1, 6, 16)
    torch.testing.assert_close(fims, (w / (2 * 0.5)).expand_as(fims), rtol=1e-4, atol=1e-5)
    full_fims, full_scores, full_diag = _run(model, False)
    assert not full_diag.target_only_head
    torch.testing.assert_close(fims, full_fims, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, full_scores, rtol=1e-5, atol=1e-6)
    assert "forward" not in model.fc.__dict__       # the class's forward is back
    assert model.fc(torch.ones(2, 96)).shape == (2, 300)


def test_nonlinear_layer_before_the_head_matches_the_full_head():
    model = WideHead().eval()
    fims, scores, diag = _run(model, True, layer=model.conv)   # ReLU between H and the head
    assert diag.target_only_head
    full_fims, full_scores, _ = _run(model, False, layer=model.conv)
    torch.testing.assert_close(scores, full_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fims, full_fims, rtol=1e-3, atol=1e-4)


@pytest.mark.filterwarnings("ignore:the model computes its output with log_softmax")
@pytest.mark.parametrize("after", [
    lambda out: out - out.mean(1, keepdim=True),          # mixes the outputs: not exact
    lambda out: torch.log_softmax(out, 1),                 # same
    lambda out: out @ torch.ones(300, 300) / 300,          # a second product after the Linear
])
def test_outputs_mixed_after_the_linear_fall_back_to_the_full_head(after):
    model = WideHead(after=after).eval()
    fims, scores, diag = _run(model, True)
    assert not diag.target_only_head
    full_fims, full_scores, _ = _run(model, False)
    assert torch.equal(fims, full_fims) and torch.equal(scores, full_scores)


def test_column_local_steps_after_the_linear_keep_the_fast_head():
    model = WideHead(after=lambda out: 2.0 * out.view(-1, 3, 100)).eval()   # (N, 3, 100) output
    fims, scores, diag = _run(model, True, target=[(0, 0), (2, 99), (1, 50)])
    assert diag.target_only_head
    full_fims, full_scores, _ = _run(model, False, target=[(0, 0), (2, 99), (1, 50)])
    torch.testing.assert_close(fims, full_fims, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, full_scores, rtol=1e-5, atol=1e-6)


def test_small_heads_and_the_head_as_the_layer_run_whole():
    assert not _run(WideHead(n_out=10).eval(), True, target=[0, 9])[2].target_only_head
    model = WideHead().eval()
    assert not _run(model, True, layer=model.fc)[2].target_only_head       # H = the logits
    # H = the head's input: the head still runs for the target only
    fims, _, diag = _run(model, True, layer=model.fc, attribute_to_layer_input=True)
    assert diag.target_only_head
    w = model.fc.weight.detach()[[0, 7, 150, 299]].view(4, 1, 96)
    torch.testing.assert_close(fims, w.expand_as(fims), rtol=1e-4, atol=1e-5)


def test_forward_is_restored_after_an_error_and_memory_chunks_still_agree():
    model = WideHead().eval()

    def stop(step, rows, objective):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(model, True, callback=stop)
    assert "forward" not in model.fc.__dict__
    a = _run(model, True, chunk_size=5)
    b = _run(model, True)
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)


def test_a_user_forward_override_is_left_alone():
    model = WideHead().eval()
    calls = []

    def own(x):
        calls.append(x.shape[0])
        return nn.functional.linear(x, model.fc.weight, model.fc.bias)

    model.fc.forward = own
    _, _, diag = _run(model, True)
    assert not diag.target_only_head and calls and model.fc.forward is own


class _Spy:
    """Wraps the real _TargetHead, recording whether its narrow path ran and it was removed."""

    def __init__(self, linear):
        self.real = _RealTargetHead(linear)
        self.removed = False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __setattr__(self, name, value):
        if name in ("real", "removed"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.real, name, value)

    def remove(self):
        self.removed = True
        self.real.remove()


class KeywordCall(WideHead):
    def forward(self, x):
        return self.fc(input=self.relu(self.conv(x)).flatten(1))   # nn.Linear's own name


def test_a_head_called_by_keyword_runs_narrow():
    model = KeywordCall().eval()
    fims, scores, diag = _run(model, True)
    assert diag.target_only_head and "forward" not in model.fc.__dict__
    full_fims, _, _ = _run(model, False)
    torch.testing.assert_close(fims, full_fims, rtol=1e-4, atol=1e-5)


def test_an_interrupt_while_the_probe_checks_the_head_leaves_no_patch():
    model = WideHead().eval()

    def hook(mod, args, out):
        patched = mod.__dict__.get("forward")
        if patched is not None and patched.__self__.targets is not None:
            raise KeyboardInterrupt        # a Ctrl-C while the narrow head is being checked

    handle = model.fc.register_forward_hook(hook)
    with pytest.raises(KeyboardInterrupt):
        _run(model, True)
    handle.remove()
    assert "forward" not in model.fc.__dict__
    x = torch.randn(4, 96)
    torch.testing.assert_close(model.fc(x), nn.functional.linear(x, model.fc.weight, model.fc.bias))


class BinMajor(WideHead):
    """The Linear writes 64 bins x 4 tracks; the model returns (N, 4 tracks, 64 bins)."""

    def __init__(self):
        super().__init__(n_out=256)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1)).view(-1, 64, 4).transpose(1, 2)


def test_reordered_outputs_run_whole():
    model = BinMajor().eval()
    targets = [(0, 0), (1, 5), (2, 63), (3, 30)]
    fims, scores, diag = _run(model, True, target=targets)
    assert not diag.target_only_head
    full_fims, full_scores, _ = _run(model, False, target=targets)
    assert torch.equal(fims, full_fims) and torch.equal(scores, full_scores)


class NormClip(WideHead):
    """Logits scaled down when their norm exceeds 12: mixes the outputs only for large H."""

    def forward(self, x):
        o = self.fc(self.relu(self.conv(x)).flatten(1))
        return o * torch.clamp(12.0 / o.norm(dim=1, keepdim=True), max=1.0)


def test_mixing_that_starts_beyond_the_probe_is_caught_and_rerun_whole():
    model = NormClip().eval()
    with pytest.warns(RuntimeWarning, match="target-only head gave another score"):
        fims, scores, diag = _run(model, True, target=[0, 150], l2=0.002)
    assert not diag.target_only_head
    full_fims, full_scores, _ = _run(model, False, target=[0, 150], l2=0.002)
    assert torch.equal(fims, full_fims) and torch.equal(scores, full_scores)
    assert "forward" not in model.fc.__dict__


def test_a_container_layer_holding_the_head_and_a_per_position_head_run_whole(monkeypatch):
    from deepresolve_captum import optimizer
    made = []
    monkeypatch.setattr(optimizer, "_TargetHead",
                        lambda lin: made.append(_Spy(lin)) or made[-1])
    model = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.Flatten(),
                          nn.Sequential(nn.Linear(96, 80), nn.ReLU(), nn.Linear(80, 300))).eval()
    opt = LayerFeatureOptimizer(model, model[3])           # H = the logits, made inside model[3]
    fims = opt.attribute(_x(), target=[0, 5], n_starts=2, l2="auto", seed=0, chunk_size=3)
    assert not opt.diagnostics.target_only_head and not made   # refused before any check
    full = opt.attribute(_x(), target=[0, 5], n_starts=2, l2="auto", seed=0, chunk_size=3,
                         target_only_head=False)
    assert torch.equal(fims, full)

    per_position = nn.Sequential(nn.Conv1d(4, 96, 5), nn.ReLU(), nn.Flatten(1),
                                 nn.Unflatten(1, (1, 96 * 16)), nn.Linear(96 * 16, 300)).eval()
    opt = LayerFeatureOptimizer(per_position, per_position[1])
    opt.attribute(_x(), target=[0, 5], n_starts=2, l2=0.5, seed=0)
    assert not opt.diagnostics.target_only_head      # the Linear sees (N, 1, K): never narrow
    assert len(made) == 1 and not made[0].used and made[0].removed


def test_a_head_mismatch_in_the_auto_l2_probes_warns_at_the_callers_line(monkeypatch):
    """The mismatch warning comes from _ascend_all, which the l2='auto' probes reach through
    one more frame (_auto_l2) than the ascent: it pointed inside captum's log wrapper, or inside
    optimizer.py via choose_l2."""
    from deepresolve_captum import optimizer

    monkeypatch.setattr(optimizer, "_close_rows", lambda a, b: torch.zeros(len(a), dtype=torch.bool))
    model = WideHead().eval()
    for call in ("attribute", "choose_l2"):
        opt = LayerFeatureOptimizer(model, model.relu)
        with pytest.warns(RuntimeWarning, match="target-only head gave another score") as rec:
            if call == "attribute":
                opt.attribute(_x(), target=[0, 7], n_starts=2, seed=0, l2="auto", max_steps=50)
            else:
                opt.choose_l2(_x(), target=[0, 7], seed=0, max_steps=50)
        mine = [w for w in rec if "target-only head" in str(w.message)]
        assert mine and {w.filename for w in mine} == {__file__}, call


class DoubleHead(WideHead):
    """A float32 body whose wide head (and output) is float64."""

    def __init__(self):
        super().__init__()
        self.fc.double()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1).double())


def test_a_head_in_another_dtype_than_the_layer_runs_narrow_with_the_outputs_dtype():
    model = DoubleHead().eval()
    fims, scores, diag = _run(model, True)
    assert diag.target_only_head
    assert fims.dtype == torch.float32 and scores.dtype == torch.float64
    full_fims, full_scores, full_diag = _run(model, False)
    assert not full_diag.target_only_head and full_scores.dtype == torch.float64
    torch.testing.assert_close(scores, full_scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fims, full_fims, rtol=1e-4, atol=1e-5)
