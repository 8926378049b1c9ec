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


def _one_hot(s):
    return nn.functional.one_hot(torch.as_tensor(["ACGT".index(c) for c in s]), 4).T.float()


def _forced_and_hard(n_forced=96, n_hard=64, L=200, seed=0):
    """n_forced rows whose AA count forces AAAAAA in every dinucleotide shuffle, then n_hard
    A-rich rows whose shuffles often (not always) hold it."""
    rng = np.random.default_rng(seed)
    forced = ["A" * 120 + "".join(rng.choice(list("CGT"), L - 120)) for _ in range(n_forced)]
    hard = ["".join(rng.choice(list("ACGT"), L, p=[.42, .58 / 3, .58 / 3, .58 / 3]))
            for _ in range(n_hard)]
    return torch.stack([_one_hot(s) for s in forced + hard])


def test_reshuffles_stop_per_row_not_for_all_rows():
    """r4 m2: the early stop was decided over all rows: with 96 rows whose composition forces
    AAAAAA and 64 where it is only likely, every row stopped after one round and 30% of the
    freeable rows kept the motif. Now only rows that hold it 5 reshuffles in a row stop; the
    others go on and are (nearly all) freed."""
    from deepresolve_captum.datasets import contains
    from deepresolve_captum.interaction import _motif_free_shuffles

    src = _forced_and_hard()
    B, rounds, stopped, freed = _motif_free_shuffles(src, ["AAAAAA"], 0)
    held = contains(B.argmax(1).numpy(), "AAAAAA")
    assert held[:96].all()                                  # forced: kept, as before
    assert held[96:].mean() <= 0.1                          # was 0.30 (all stopped at round 1)
    assert 96 <= stopped < 96 + 8 and freed >= 20 and rounds >= 5     # was 1 round


def test_reshuffles_without_a_stopped_row_draw_as_without_the_early_stop(monkeypatch):
    """r4 m2: where no row stops early, the rounds draw exactly what they drew with no early
    stop at all (the loop is the same until a row stops)."""
    from deepresolve_captum import interaction as I

    src = _forced_and_hard(n_forced=0, n_hard=16)           # under 64 reshuffles: none stops
    B, rounds, stopped, _ = I._motif_free_shuffles(src, ["AAAAAA"], 3)
    monkeypatch.setattr(I, "_SHUFFLE_MIN_TRIED", 10**9)
    B0, rounds0, stopped0, _ = I._motif_free_shuffles(src, ["AAAAAA"], 3)
    assert stopped == stopped0 == 0 and rounds == rounds0 and torch.equal(B, B0)


def test_the_reshuffle_warning_names_stopped_and_freed_rows_apart():
    """r4 m2: the warning said the composition stopped the reshuffles of all rows; it names the
    share of backgrounds stopped for their composition and the share freed by reshuffling."""
    X = _forced_and_hard()
    with pytest.warns(UserWarning) as rec:
        interaction_check(_Net(), "AAAAAA", "CGCGCG", X, n_backgrounds=160, random_state=0)
    msg = " ".join(str(w.message) for w in rec)
    m = re.search(r"(\d+\.\d)% of the backgrounds were not reshuffled further after holding one "
                  r"in 5 reshuffles in a row .*?, (\d+\.\d)% were freed by reshuffling", msg)
    assert m, msg
    assert 60.0 <= float(m[1]) < 65.0 and float(m[2]) >= 12.5


def test_classify_interaction_reads_a_grad_tensor_without_a_warning():
    """r4 n1: float() of a tensor with requires_grad=True (the (y_ab - y_0).mean() of a model run
    with grad) raised torch's UserWarning from interaction.py."""
    from deepresolve_captum.interaction import classify_interaction

    w = torch.tensor([0.1, 0.3], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = classify_interaction(w.mean() * 0 + 0.01, torch.tensor(0.01), (w * 3).mean())
    assert got == classify_interaction(0.01, 0.01, 0.6)


@pytest.mark.parametrize("big", [10**400, -(10**400)], ids=["plus", "minus"])
def test_a_huge_int_effect_is_a_value_error(big):
    """r4 n2: 10**400 raised OverflowError (int too large to convert to float), not the
    documented ValueError."""
    from deepresolve_captum.interaction import classify_interaction

    with pytest.raises(ValueError, match="d_ab must be a finite number"):
        classify_interaction(0.1, 0.1, big)
    with pytest.raises(ValueError, match="sems must|finite"):
        classify_interaction(0.1, 0.1, 0.2, sems=[0.01, 0.01, abs(big)])
