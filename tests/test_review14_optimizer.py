"""Review 14 (d): what LayerFeatureOptimizer and ``deepresolve run`` told a Captum user.

The channels-last warning for an activation after a per-position Linear and for the input of
a batch-first RNN; the squashed-output warning saying what the run maximises; a factory's
wrong-arguments error in ``deepresolve run`` without our own file and line;
``python -m deepresolve_captum.run_model`` going through ``deepresolve run``; how closely float64
runs agree across chunk sizes."""
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer, cli, run_model
from deepresolve_captum.zoo import PaperCNN


def _onehot(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4) \
        .permute(0, 2, 1).float()


class PerPosition(nn.Module):
    """A per-position Linear embedding (N, L, 8), GELU, Dropout, mean over the positions."""

    def __init__(self):
        super().__init__()
        self.emb, self.act, self.drop = nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.drop(self.act(self.emb(x.transpose(1, 2)))).mean(1))


class ConvRNN(nn.Module):
    """conv (N, 8, L) -> ReLU -> Dropout -> transpose -> batch-first RNN -> last step -> fc."""

    def __init__(self, rnn):
        super().__init__()
        self.conv, self.relu, self.drop = nn.Conv1d(4, 8, 5), nn.ReLU(), nn.Dropout(0.1)
        self.rnn, self.fc = rnn, nn.Linear(rnn.hidden_size * (1 + rnn.bidirectional), 3)

    def forward(self, x):
        o, _ = self.rnn(self.drop(self.relu(self.conv(x))).transpose(1, 2))
        return self.fc(o[:, -1])


def _attribute(model, layer, on_input=False):
    return LayerFeatureOptimizer(model, layer).attribute(
        _onehot(4, 30), target=[0], n_starts=1, l2=0.5, seed=0, max_steps=20,
        attribute_to_layer_input=on_input)


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped")
@pytest.mark.parametrize("name,on_input,reason", [
    ("act", False, "the module before it, Linear, makes its 8 features on the last axis"),
    ("drop", False, "the module before it, Linear, makes its 8 features on the last axis"),
    ("act", True, "the module before it, Linear, makes its 8 features on the last axis"),
    ("emb", False, "Linear makes its 8 features on the last axis")])
def test_an_activation_after_a_per_position_linear_is_channels_last(name, on_input, reason):
    """From review 14: the Linear's own output was warned about, the same tensor one module
    later (its GELU, a Dropout) was not, and summarize read 30 positions as channels."""
    torch.manual_seed(0)
    m = PerPosition().eval()
    with pytest.warns(UserWarning, match=r"shape \(30, 8\) per example, looks channels-last: "
                                         + reason):
        _attribute(m, getattr(m, name), on_input)


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped")
@pytest.mark.parametrize("rnn", [nn.LSTM(8, 6, batch_first=True),
                                 nn.GRU(8, 5, batch_first=True, bidirectional=True)],
                         ids=["lstm", "bi-gru"])
def test_the_input_of_a_batch_first_rnn_is_channels_last(rnn):
    torch.manual_seed(0)
    m = ConvRNN(rnn).eval()
    kind = type(rnn).__name__
    with pytest.warns(UserWarning, match=rf"layer {kind} \(input\), shape \(26, 8\) per example, "
                                         rf"looks channels-last: {kind} takes its 8 features on "
                                         "the last axis"):
        _attribute(m, m.rnn, on_input=True)


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped")
@pytest.mark.parametrize("name,on_input", [("conv", False), ("relu", False), ("drop", False),
                                           ("relu", True), ("drop", True)])
def test_channels_first_values_before_an_rnn_are_not_warned(name, on_input):
    """(N, 8, 26) conv values, transposed only on the way into the LSTM, stay unwarned."""
    torch.manual_seed(0)
    m = ConvRNN(nn.LSTM(8, 6, batch_first=True)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "1 of 1 starts stopped")
        _attribute(m, getattr(m, name), on_input)


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped")
def test_an_activation_of_a_linear_transposed_back_is_not_warned():
    class Back(nn.Module):        # the per-position Linear's value, transposed to (N, 8, L)
        def __init__(self):
            super().__init__()
            self.emb, self.act, self.fc = nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.act(self.emb(x.transpose(1, 2)).transpose(1, 2)).mean(2))

    torch.manual_seed(0)
    m = Back().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "1 of 1 starts stopped")
        _attribute(m, m.act)
        _attribute(m, m.act, on_input=True)


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped")
def test_a_linear_over_the_positions_of_a_channels_first_value_is_not_a_channels_last_maker():
    """From review r1: a Linear mixing the positions of (N, 16, L) (MLP-Mixer style) makes
    features on the last axis too; the ReLU after it and the next convolution's input (16
    channels on axis 1) were warned as channels-last."""
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.mix, self.act = nn.Conv1d(4, 16, 9), nn.Linear(22, 20), nn.ReLU()
            self.conv2, self.fc = nn.Conv1d(16, 8, 5), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.conv2(self.act(self.mix(self.conv(x)))).amax(-1))

    torch.manual_seed(0)
    m = Mixer().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "1 of 1 starts stopped")
        _attribute(m, m.act)
        _attribute(m, m.conv2, on_input=True)


@pytest.mark.filterwarnings("ignore:1 of 1 starts stopped")
@pytest.mark.parametrize("last,near", [
    (nn.Sigmoid(), "Squashed outputs saturate near 1"),
    (nn.LogSoftmax(dim=1), "Log-probabilities saturate near 0")])
def test_a_squashed_output_warning_says_what_this_run_maximises(last, near):
    """From review 14: it said "DeepResolve maximises the score before it" while the run
    maximised the squashed output, and "saturate near 1" for a LogSoftmax too."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 26, 3),
                      last).eval()
    with pytest.warns(UserWarning) as rec:
        _attribute(m, m[0])
    (msg,) = [str(w.message) for w in rec if "squashed" in str(w.message)]
    assert f"ends in {type(last).__name__} (4): this run maximises that squashed output as " \
           "returned, but DeepResolve is defined on the score before it" in msg
    assert near in msg and "DeepResolve maximises" not in msg


def test_float64_chunkings_agree_to_rounding():
    """The docs' float64 figures, with room: on a PaperCNN the FIMs of chunk_size=1 and of one
    chunk agree to 1e-9 of the largest |H| (they were bit-identical) and the scores to 1e-12
    relative (they differed by up to 5e-16: each final score comes from the rows that stop
    together)."""
    torch.manual_seed(0)
    m = PaperCNN(n_outputs=3, seq_len=40).double().eval()
    x = _onehot(16, 40).double()
    opt = LayerFeatureOptimizer(m, m.pool)
    a, sa = opt.attribute(x, None, n_starts=3, l2=0.05, seed=0, return_scores=True)
    b, sb = opt.attribute(x, None, n_starts=3, l2=0.05, seed=0, return_scores=True,
                          chunk_size=1)
    assert opt.diagnostics.n_chunks == 9
    assert float((a - b).abs().max()) <= 1e-9 * float(a.abs().max())
    assert float((sa - sb).abs().max()) <= 1e-12 * float(sa.abs().max())


NEEDS_ARG = """import functools

import torch

def needs_arg(n):
    return torch.nn.Linear(4, n)

def explodes():
    raise RuntimeError("factory exploded")

def typo():
    return torch.nn.Linear(4, len(2))

@torch.no_grad()
def wrapped_needs_arg(n):
    return torch.nn.Linear(4, n)

def supplies(f):
    @functools.wraps(f)
    def call():
        return f(4)
    return call

@supplies
def wrapped_typo(n):
    return torch.nn.Linear(n, len(2))

def supplies_width(init):
    @functools.wraps(init)
    def call(self):
        return init(self, 4)
    return call

class Net(torch.nn.Linear):
    @supplies_width
    def __init__(self, width):
        super().__init__(width, len(2))

class Odd:
    def __getattr__(self, name):
        raise KeyError(name)

    def __call__(self):
        raise TypeError("odd")

odd = Odd()
"""


def test_a_factorys_wrong_arguments_do_not_point_at_run_model(tmp_path):
    """From review 14: "calling it raised TypeError: needs_arg() missing 1 required positional
    argument: 'n' (.../run_model.py, line 257)"; a factory that raises inside keeps its own
    file and line."""
    (tmp_path / "models.py").write_text(NEEDS_ARG)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 4, 10), np.float32))
    for name, where in (("needs_arg", None), ("explodes", r"\(\S*models.py, line 9\)"),
                        ("typo", r"\(\S*models.py, line 12\)"), ("wrapped_needs_arg", "hint"),
                        ("wrapped_typo", "no hint"), ("odd", "no hint"), ("Net", "no hint")):
        with pytest.raises(SystemExit) as e:
            cli.main(["run", "--model", f"{tmp_path / 'models.py'}:{name}", "--layer", "x",
                      "--inputs", str(x), "--out", str(tmp_path / "out")])
        msg = str(e.value.code)
        assert msg.startswith(f"deepresolve run: error: --model {tmp_path / 'models.py'}:{name}: "
                              "calling it raised")
        assert "run_model.py" not in msg
        if where is None:
            assert "line" not in msg and "called without arguments" in msg
        elif where == "hint":   # behind a decorator: its signature still asks for n (review r4)
            assert "called without arguments" in msg, msg
        elif where == "no hint":   # the decorator supplied n and the body failed; or no
            assert "called without arguments" not in msg, msg   # signature to read (review r5)
        else:   # raised inside the user's code: its line, and no hint about arguments
            assert re.search(where, msg) and "called without arguments" not in msg, msg
    assert not (tmp_path / "out").exists()


def test_python_m_run_model_is_deepresolve_run(tmp_path, monkeypatch, capsys):
    """From review 14: ``python -m deepresolve_captum.run_model`` parsed and ran on its own, so
    Ctrl-C ended in a traceback, the --out folder a stopped run had made stayed behind and
    warnings had file and line; it now is ``deepresolve run``."""
    seen = {}

    def interrupted(args):
        seen["formatted"] = warnings.formatwarning("a note", UserWarning, "f.py", 1)
        cli.output_folder(args.out, "run", names=[])     # the folder a run makes first
        raise KeyboardInterrupt

    monkeypatch.setattr(run_model, "run_from_args", interrupted)
    out = tmp_path / "new" / "out"
    try:
        rc = run_model.main(["--model", "m.py:make", "--layer", "conv", "--inputs", "x.npy",
                             "--out", str(out)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped python -m deepresolve_captum.run_model as a traceback")
    assert rc == 130
    assert "deepresolve run: interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert seen["formatted"] == "deepresolve: warning: a note\n"
