"""How interaction_check / channel_ablation read a model's output (logits, probabilities or
log-probabilities) and how their arguments are checked: small hand-made models, no training.

The scale is decided from the output's autograd graph, not from the last module to run: a
(Log)Softmax in the middle of a model (attention pooling) followed by more maths leaves logits.
"""
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum.interaction import channel_ablation, channel_pair_interaction, interaction_check

L = 30
KW = dict(seq_len=L, n_backgrounds=8, random_state=0)


class _Net(nn.Module):
    """conv (2 filters) -> global max -> Linear(2, 2) logits, then ``end`` (a callable on the
    (N, 2) logits). Frozen when ``frozen``."""

    def __init__(self, end=None, frozen=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 2, 3)
        self.fc = nn.Linear(2, 2)
        self.end = end
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)

    def logits(self, x):
        return self.fc(self.conv(x).amax(-1))

    def forward(self, x):
        z = self.logits(x)
        return z if self.end is None else self.end(z)


def _outputs(model, **kw):
    """interaction_check's outputs (n, 4) and the warnings it gave."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = interaction_check(model.eval(), "ACG", "TTA", target=1, **KW, **kw)
    return r.outputs, [str(w.message) for w in rec]


def _reference(**kw):
    """The logits of _Net (target 1) on interaction_check's sequences, and their softmax."""
    logits, _ = _outputs(_Net(), output="logit", **kw)
    other, _ = _outputs(_Net(lambda z: z[:, [1, 0]]), output="logit", **kw)  # class 0's logit
    return logits, 1 / (1 + np.exp(other - logits))


@pytest.mark.parametrize("end, says, scale", [
    (nn.Sigmoid(), r"ends in Sigmoid \(end\), so its outputs are already probabilities", "sig"),
    (torch.sigmoid, "computes its output with sigmoid, so its outputs are already prob", "sig"),
    (nn.Softmax(1), r"ends in Softmax \(end\), so its outputs are already probabilities", "soft"),
    (lambda z: torch.softmax(z, -1), "computes its output with softmax, so", "soft"),
    (nn.LogSoftmax(1), r"ends in LogSoftmax \(end\), so its outputs are log-probabilities", "soft"),
    (lambda z: torch.log_softmax(z, 1), "computes its output with log_softmax, so its outputs "
                                        "are log-prob", "soft"),
    (lambda z: torch.log_softmax(z, 1).exp(), "with exp of log_softmax, so its outputs are "
                                              "already probabilities", "soft"),
    (lambda z: torch.log_softmax(z.double(), 1)[:, :].float(), "with log_softmax", "soft"),
    (lambda z: torch.softmax(z, 1).log(), "with log of softmax, so its outputs are log-prob",
     "soft"),
])
def test_a_squashing_op_at_the_end_is_read_from_the_output(end, says, scale):
    logits, soft = _reference()
    out, warned = _outputs(_Net(end))
    assert len(warned) == 1 and re.search(says, warned[0]), warned
    expected = 1 / (1 + np.exp(-logits)) if scale == "sig" else soft
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output='logit' asked"):
        interaction_check(_Net(end).eval(), "ACG", "TTA", target=1, output="logit", **KW)


@pytest.mark.parametrize("end, says", [(nn.LogSoftmax(1), "ends in LogSoftmax (end)"),
                                       (lambda z: torch.log_softmax(z, 1), "with log_softmax")])
def test_a_frozen_model_still_shows_its_log_softmax(end, says):
    """With every parameter frozen the output has a graph only through the input: the probe's
    input requires grad (a frozen functional log_softmax was read as logits: sigmoid(log p))."""
    _, soft = _reference()
    out, warned = _outputs(_Net(end, frozen=True))
    assert len(warned) == 1 and says in warned[0], warned
    np.testing.assert_allclose(out, soft, rtol=1e-5, atol=1e-6)


class _AttentionPool(nn.Module):
    """conv -> attention weights over positions by a LogSoftmax module (the last module to
    run), pooled, then a functional head on an nn.Parameter: the output is a logit."""

    def __init__(self, end):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 3, 3)
        self.att = nn.Conv1d(3, 1, 1)
        self.norm = end
        self.w = nn.Parameter(torch.randn(3, 2))

    def forward(self, x):
        h = torch.relu(self.conv(x))
        a = self.norm(self.att(h))
        a = a.exp() if isinstance(self.norm, nn.LogSoftmax) else a
        return (a * h).sum(-1) @ self.w


class _LogOdds(_Net):
    """LogSoftmax module last, then h[:, 1] - h[:, 0]: the log-odds, a logit."""

    def forward(self, x):
        h = nn.functional.log_softmax(self.logits(x), 1) if self.end is None else \
            self.end(self.logits(x))
        return torch.stack([h[:, 0] - h[:, 1], h[:, 1] - h[:, 0]], 1)


@pytest.mark.parametrize("model", [
    _AttentionPool(nn.LogSoftmax(-1)), _AttentionPool(nn.Softmax(-1)),
    _LogOdds(nn.LogSoftmax(1)), _LogOdds(None),
    nn.Sequential(nn.Conv1d(4, 2, 3), nn.LogSoftmax(1), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                  nn.Linear(2, 2)),
    nn.Sequential(nn.Conv1d(4, 2, 3), nn.Softmax(1), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                  nn.Linear(2, 2)),
    nn.Sequential(nn.Conv1d(4, 2, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(2, 2),
                  nn.Sigmoid(), nn.Linear(2, 2)),
], ids=["attention-logsoftmax", "attention-softmax", "log-odds-module", "log-odds-functional",
        "mid-logsoftmax-linear", "mid-softmax-linear", "mid-sigmoid-linear"])
def test_a_squashing_module_followed_by_more_maths_leaves_logits(model):
    """The module-based rule took exp of these logits (LogSoftmax: 'probabilities' above 1) or
    used them as probabilities (Softmax), with a warning saying so; they are logits."""
    model.eval()
    logit, warned_logit = _outputs(model, output="logit")
    out, warned = _outputs(model)
    assert warned == [] and warned_logit == []
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-logit)), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # and channel_ablation does not call them squashed
        first = next(m for m in model.modules() if isinstance(m, nn.Conv1d))
        channel_ablation(model, first, torch.eye(4)[torch.randint(0, 4, (3, L))].transpose(1, 2),
                         channels=[0], target=1)


class _BatchSoftmax(nn.Module):
    def __init__(self, end):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.end = nn.Conv1d(4, 1, 3), end

    def forward(self, x):
        return self.end(self.conv(x).amax(-1))     # (N, 1)


@pytest.mark.parametrize("end", [nn.LogSoftmax(dim=0), nn.Softmax(dim=0),
                                 lambda z: torch.log_softmax(z[:, 0], -1),
                                 lambda z: torch.softmax(z.flatten(), 0)])
def test_a_softmax_over_the_batch_axis_is_refused(end):
    """Each output was the sequence's share of its batch: the table changed with batch_size
    (mean P 1/batch_size per condition)."""
    m = _BatchSoftmax(end).eval()
    with pytest.raises(ValueError, match="taken over axis 0, the batch.*batch_size"):
        interaction_check(m, "ACG", "TTA", target=0, **KW)
    with pytest.raises(ValueError, match="taken over axis 0, the batch"):
        channel_ablation(m, m.conv, torch.eye(4)[torch.randint(0, 4, (3, L))].transpose(1, 2))


def test_a_softmax_over_an_axis_of_size_one_is_warned_as_constant():
    m = _BatchSoftmax(nn.LogSoftmax(dim=1)).eval()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        interaction_check(m, "ACG", "TTA", target=0, **KW)
    const = [w for w in rec if re.search(r"over an axis of size 1.*a constant \(0\)",
                                         str(w.message))]
    assert len(const) == 1 and const[0].filename == __file__, [str(w.message) for w in rec]


def test_flags_and_channel_ids_are_not_read_by_truthiness():
    """attribute_to_layer_input='no' ran as True, channel_a=True paired channel 1 and
    random_state=True seeded 1, while bools were refused for batch_size, seq_len, tol and z.
    numpy bools and integers are taken where a bool / an int is expected."""
    m = nn.Sequential(nn.Conv1d(4, 3, 3), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                      nn.Linear(3, 1)).eval()
    X = torch.eye(4)[torch.randint(0, 4, (6, L), generator=torch.Generator().manual_seed(0))]
    X = X.transpose(1, 2).contiguous()
    pwms = {c: 0.01 + np.eye(4)[:, [c, c + 1, c]] for c in range(3)}
    kw = dict(n_backgrounds=4)
    for flag in ("no", 2, None):                     # 1 and 0 are taken (r1 m6)
        with pytest.raises(TypeError, match=f"attribute_to_layer_input must be True or False, "
                                            f"got {flag!r}"):
            channel_pair_interaction(m, m[0], 0, 1, X, pwms=pwms, attribute_to_layer_input=flag,
                                     **kw)
        with pytest.raises(TypeError, match="attribute_to_layer_input must be True or False"):
            channel_ablation(m, m[0], X, attribute_to_layer_input=flag)
        with pytest.raises(TypeError, match="sample_pwm must be True or False"):
            interaction_check(m, "ACG", "TTA", X, sample_pwm=flag, **kw)
    for bad in (True, np.bool_(False), [0, True]):
        with pytest.raises(TypeError, match="channel indices .*not booleans"):
            channel_pair_interaction(m, m[0], bad, 2, X, pwms=pwms, **kw)
        with pytest.raises(TypeError, match="channel indices .*not booleans"):
            channel_ablation(m, m[0], X, channels=bad)
    with pytest.raises(TypeError, match="random_state must be an int seed"):
        interaction_check(m, "ACG", "TTA", X, random_state=True, **kw)
    with pytest.raises(ValueError, match="n_backgrounds must be an int >= 2, got True"):
        interaction_check(m, "ACG", "TTA", X, n_backgrounds=True)
    # what is expected is still taken, numpy's spellings included
    r = channel_pair_interaction(m, m[0], np.int64(0), 1, X, pwms=pwms,
                                 attribute_to_layer_input=np.bool_(False), **kw)
    assert r.motifs["a"] == "ACA"
    assert channel_ablation(m, m[0], X, channels=np.int64(2),
                            attribute_to_layer_input=np.False_).shape == (1,)
    interaction_check(m, "ACG", "TTA", X, sample_pwm=np.True_, n_backgrounds=np.int64(4),
                      random_state=np.int64(3))
