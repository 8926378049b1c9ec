import warnings

import numpy as np
import pytest
import torch

from deepresolve_captum.train import predict, train_classifier
from deepresolve_captum.zoo import PaperCNN


def _onehot(n, length=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4) \
        .permute(0, 2, 1).float()


def test_diverged_training_is_a_clear_error():
    # logits that overflow make every validation loss non-finite: no epoch can be kept
    class Overflowing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(200, 1)

        def forward(self, x):
            return self.lin(x.flatten(1)) * 1e30 * 1e30

    y = (torch.arange(40) % 2).float()
    with pytest.raises(FloatingPointError, match="not finite in any of the 2 epochs"):
        train_classifier(Overflowing(), _onehot(40), y, epochs=2, batch_size=8)


@pytest.mark.parametrize("case, match", [
    ("nan_x", r"X has NaN or inf in 1 row\(s\), e.g. \[7\]"),
    ("nan_y", r"y has NaN or inf in 1 row\(s\), e.g. \[3\]"),
    ("pm_one", r"0/1 labels, found \[-1.0\] \(for -1/\+1 labels pass \(y \+ 1\) / 2\)"),
    ("soft", r"0/1 labels, found \[0.1"),
    ("no_train_rows", r"no rows left to train on: N = 10 with val_fraction = 0.95"),
])
def test_data_a_binary_loop_cannot_use_is_refused_before_training(case, match):
    X, y = _onehot(40), (torch.arange(40) % 2).float()
    if case == "nan_x":
        X[7, 0, 3] = float("nan")
    elif case == "nan_y":
        y[3] = float("nan")
    elif case == "pm_one":
        y = 2 * y - 1
    elif case == "soft":
        y = y * 0.8 + 0.1
    kw = dict(val_fraction=0.95) if case == "no_train_rows" else {}
    if case == "no_train_rows":
        X, y = X[:10], y[:10]
    with pytest.raises(ValueError, match=match):
        train_classifier(PaperCNN(n_outputs=1, seq_len=50), X, y, epochs=1, batch_size=8, **kw)


def test_sigmoid_head_and_undefined_auc_are_warned():
    X, y = _onehot(40), (torch.arange(40) % 2).float()
    squashed = torch.nn.Sequential(PaperCNN(n_outputs=1, seq_len=50), torch.nn.Sigmoid())
    with pytest.warns(UserWarning, match="ends in Sigmoid.*expects logits"):
        train_classifier(squashed, X, y, epochs=1, batch_size=8)

    class Functional(torch.nn.Module):  # torch.sigmoid in forward: no module to see
        def __init__(self):
            super().__init__()
            self.net = PaperCNN(n_outputs=1, seq_len=50)

        def forward(self, x):
            return torch.sigmoid(self.net(x))

    with pytest.warns(UserWarning, match="computes its output with sigmoid.*expects logits"):
        train_classifier(Functional(), X, y, epochs=1, batch_size=8)
    y2 = torch.stack([y, torch.zeros(40)], 1)                 # output 1: never positive
    with pytest.warns(UserWarning, match=r"output\(s\) \[1\] have a single class"):
        r = train_classifier(PaperCNN(n_outputs=2, seq_len=50), X, y2, epochs=1, batch_size=8)
    assert np.isnan(r.val_auc[1]) and np.isfinite(r.val_auc[0])


def test_predict_restores_each_modules_mode_and_returns_the_models_dtype():
    """predict ended with model.train(was_training), which put a submodule kept in eval mode
    (a frozen BatchNorm, dropout off) back in train mode, and did not run at all when the
    forward raised; its doc promised float32 whatever the model's dtype."""
    from deepresolve_captum.train import predict

    torch.manual_seed(0)
    m = PaperCNN(n_outputs=2, seq_len=50)
    m.train()
    m.fc1.eval()
    modes = [x.training for x in m.modules()]
    out = predict(m, _onehot(5), batch_size=2)
    assert out.shape == (5, 2) and out.dtype == torch.float32
    assert [x.training for x in m.modules()] == modes
    m64 = PaperCNN(n_outputs=2, seq_len=50).double().eval()
    assert predict(m64, _onehot(3)).dtype == torch.float64      # float32 X cast to the model's
    assert "model's output dtype" in predict.__doc__

    def fail(*args):
        raise RuntimeError("forward failed")

    m.fc1.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="forward failed"):
        predict(m, _onehot(3))
    assert [x.training for x in m.modules()] == modes
    with pytest.raises(TypeError, match=r"X must be a torch.Tensor, got ndarray"):
        predict(m, _onehot(3).numpy())


def test_predict_and_training_take_the_input_layout_of_the_model():
    """predict checks no (N, 4, L) layout: a model taking (N, L, 4) trains and predicts."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(200, 1))
    X = _onehot(64).transpose(1, 2).contiguous()      # (N, L, 4)
    y = torch.randint(0, 2, (64, 1)).float()
    train_classifier(m, X, y, epochs=1, batch_size=16)
    assert predict(m, X[:3]).shape == (3, 1)


def test_predict_keeps_what_the_model_sets_on_itself():
    """A model that caches its last activations or initialises itself once from data keeps
    that state: only Captum's leftovers are removed around Captum calls."""
    class Cached(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(200, 1)

        def forward(self, x):
            if not hasattr(self, "_initialised"):
                self._initialised = True
                with torch.no_grad():
                    self.fc.weight.mul_(0.5)
            self.last_input = x
            return self.fc(x.flatten(1))

    m = Cached()
    predict(m, _onehot(3))
    w = m.fc.weight.detach().clone()
    predict(m, _onehot(3))
    assert m._initialised and m.last_input.shape == (3, 4, 50)
    assert torch.equal(m.fc.weight, w)                      # not initialised a second time


def test_a_float64_model_trains_in_float64():
    """train_classifier cast X to float32 whatever the model: a float64 model failed with
    'Input type (float) and bias type (double) should be the same' (predict took it)."""
    torch.manual_seed(0)
    X = _onehot(400, seed=3)
    motif = torch.tensor([0, 1, 2, 3])
    y = torch.zeros(400)
    y[:200] = 1
    X[:200, :, 10:14] = torch.nn.functional.one_hot(motif, 4).T.float()
    m = PaperCNN(n_outputs=1, seq_len=50).double()
    w0 = m.fc2.weight.detach().clone()
    res = train_classifier(m, X, y, epochs=3, batch_size=32, random_state=0)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert not torch.equal(m.fc2.weight, w0)
    assert res.val_auc.shape == (1,) and res.val_auc[0] > 0.9
    assert predict(m, X[:3]).dtype == torch.float64


def test_a_model_without_parameters_predicts_on_the_inputs_device_and_dtype():
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    out = predict(m, _onehot(3, length=5).double())
    assert out.dtype == torch.float64 and out.shape == (3, 20)


class _Sampling(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sampling = False

    def train(self, mode=True):
        self.sampling = mode
        return super().train(mode)

    def forward(self, x):
        return torch.nn.functional.dropout(x, 0.5, training=self.sampling)


def test_predict_restores_a_train_override_through_train():
    """predict (and every adapter) put modes back by setting flags: a module overriding train()
    (MC dropout, model.eval(); model.mc.train()) got its flag back but not its sampling, and a
    root override in train mode was left with sampling off."""
    torch.manual_seed(0)
    m = PaperCNN(n_outputs=2, seq_len=50)
    m.fc1 = torch.nn.Sequential(m.fc1, _Sampling())
    m.eval()
    m.fc1[1].train()
    predict(m, _onehot(3))
    assert m.fc1[1].training and m.fc1[1].sampling and not m.training

    class Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.sampling = PaperCNN(n_outputs=2, seq_len=50), False

        def train(self, mode=True):
            self.sampling = mode
            return super().train(mode)

        def forward(self, x):
            return self.net(x)

    r = Root().train()
    predict(r, _onehot(3))
    assert r.training and r.sampling


def test_a_buffer_only_model_gets_its_buffers_dtype():
    """A fixed scanner holding its filters as a float64 buffer: predict took the dtype (and the
    device) from parameters only, so float32 X met float64 weights and failed."""
    class Scanner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randn(3, 4, 5, dtype=torch.float64))

        def forward(self, x):
            return torch.nn.functional.conv1d(x, self.w).amax(2)

    out = predict(Scanner(), _onehot(4, length=20))
    assert out.dtype == torch.float64 and out.shape == (4, 3)


def test_a_train_that_raises_on_the_way_back_keeps_the_result():
    """Modes come back through train(); a model that refuses train(True) (inference-only,
    found in train mode) made predict raise after its forward, before requires_grad was put
    back. Now the result comes back, the flags are set directly, and a warning says why."""
    class InferenceOnly(torch.nn.Sequential):
        def train(self, mode=True):
            if mode:
                raise RuntimeError("inference-only model")
            return super().train(mode)

    m = InferenceOnly(torch.nn.Conv1d(4, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                      torch.nn.Linear(32, 2))
    torch.nn.Module.train(m, True)
    with pytest.warns(RuntimeWarning, match=r"modes back: 1 train\(\) call\(s\) raised "
                                            r"\(InferenceOnly.train\(True\): RuntimeError: "
                                            r"inference-only model\)") as rec:
        out = predict(m, _onehot(2, length=10))
    assert rec[0].filename == __file__          # the user's line, not torch's no_grad wrapper
    assert out.shape == (2, 2) and m.training and all(x.training for x in m.modules())
    assert all(p.requires_grad for p in m.parameters())


def test_a_chain_of_modules_each_shared_by_root_and_the_next_comes_back_in_one_pass():
    """The root registers m0, then m1 holding m0, ... (each module shared by the root and the
    next one), every train() switching a sampling flag, the modes alternating. A restore in
    pre-order, repeated at most 8 times, left one module sampling while in eval mode at 10
    levels, without a warning; in an order with every module after all of its parents, one
    pass restores every (training, sampling) pair."""
    class Samp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sampling = True

        def train(self, mode=True):
            self.sampling = mode
            return super().train(mode)

        def forward(self, x):
            x = self.inner(x) if hasattr(self, "inner") else x
            return torch.nn.functional.dropout(x, 0.1, training=self.sampling)

    class Root(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.chain = [Samp()]
            self.add_module("m0", self.chain[0])
            for i in range(1, n):
                m = Samp()
                m.add_module("inner", self.chain[-1])
                self.add_module(f"m{i}", m)
                self.chain.append(m)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.chain[-1](x))

    for n in (10, 16):
        r = Root(n).train()
        for i in reversed(range(n)):
            r.chain[i].train(i % 2 == 0)
        before = [(m.training, m.sampling) for m in r.chain]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            predict(r, torch.randn(5, 4))
        assert [(m.training, m.sampling) for m in r.chain] == before


def test_modes_of_a_deeply_shared_graph_are_recorded_once_per_module():
    """Recording every path to a shared module (named_modules(remove_duplicate=False)) grew
    exponentially: a chain holding its child twice per level gave 2,097,151 entries at depth
    20. Each module is recorded once; a module shared by parents in different modes still
    comes back (the restore repeats its pass)."""
    from deepresolve_captum._modules import module_modes, restore_modes

    class Twice(torch.nn.Module):
        def __init__(self, child):
            super().__init__()
            self.a, self.b = child, child

    m = torch.nn.Identity()
    for _ in range(20):
        m = Twice(m)
    assert len(module_modes(m)) == 21
    shared = _Sampling()
    net = torch.nn.Module()
    net.A, net.B = torch.nn.Sequential(shared), torch.nn.Sequential(torch.nn.Identity(), shared)
    net.train()
    net.B.eval()
    shared.train()
    modes = module_modes(net)
    net.eval()
    restore_modes(modes)
    assert shared.training and shared.sampling and not net.B.training and net.A.training


def test_the_restore_warning_points_at_the_users_line_from_a_folder_named_captum(tmp_path):
    """The warning's line was found by file path, so a user script inside a folder called
    'captum' (a clone of Captum) was taken for library code and the warning pointed into
    adapters.py; frames are now told apart by module name."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "captum").mkdir()
    script = tmp_path / "captum" / "user.py"
    script.write_text(textwrap.dedent("""
        import warnings, torch
        from deepresolve_captum.train import predict

        class InferenceOnly(torch.nn.Linear):
            def train(self, mode=True):
                if mode:
                    raise RuntimeError("inference only")
                return super().train(mode)

        m = torch.nn.Sequential(InferenceOnly(3, 2))
        for x in m.modules():
            x.training = True                    # found in train mode
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            predict(m, torch.randn(2, 3))     # the user's line
        print([(w.filename.endswith("user.py"), w.lineno) for w in rec])
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    line = script.read_text().splitlines().index(
        "    predict(m, torch.randn(2, 3))     # the user's line") + 1
    assert r.stdout.strip() == f"[(True, {line})]", r.stdout


def test_an_independent_test_set_is_scored_once_and_changes_no_training():
    """``val_auc`` is measured on the rows that chose the epoch; ``test=(X, y)`` adds an unbiased
    ``test_auc`` of the kept weights, and the training (split, batches, epoch, weights) is the
    same with or without it."""
    from sklearn.metrics import roc_auc_score

    X = _onehot(400, length=20, seed=1)
    y = X[:, 0, 0].clone()                                  # learnable: an A at position 0
    Xt = _onehot(200, length=20, seed=2)
    yt = Xt[:, 0, 0].clone()
    runs = []
    for test in (None, (Xt, yt)):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(80, 1))
        runs.append((m, train_classifier(m, X, y, epochs=3, batch_size=32, lr=0.05, test=test)))
    (m0, r0), (m1, r1) = runs
    assert r0.test_auc is None and r0.settings["n_test"] is None
    assert r1.best_epoch == r0.best_epoch and r1.history == r0.history
    np.testing.assert_array_equal(r1.val_index, r0.val_index)
    for a, b in zip(m0.state_dict().values(), m1.state_dict().values()):
        assert torch.equal(a, b)
    expected = roc_auc_score(yt.numpy(), predict(m1, Xt)[:, 0].numpy())
    assert r1.test_auc.shape == (1,) and r1.test_auc[0] == pytest.approx(expected)
    assert r1.test_auc[0] > 0.9 and r1.settings["n_test"] == 200


@pytest.mark.parametrize("test, error, match", [
    ((1, 2, 3), TypeError, "test must be a pair"),
    ("xy", TypeError, "test must be a pair"),
    (("X20", "y2"), ValueError, r"test must be laid out like X and y.*\(10, 4, 20\)"),
    (("nan", "y"), ValueError, r"X_test has NaN or inf in 1 row"),
    (("X", "soft"), ValueError, r"y_test must hold 0/1 labels"),
])
def test_a_test_set_that_does_not_fit_is_refused_before_training(test, error, match, monkeypatch):
    X, y = _onehot(40), (torch.arange(40) % 2).float()
    Xt, yt = _onehot(10, seed=3), (torch.arange(10) % 2).float()
    parts = {"X": Xt, "y": yt, "X20": _onehot(10, length=20), "y2": torch.stack([yt, yt], 1),
             "nan": Xt.clone(), "soft": yt * 0.5}
    parts["nan"][4, 1, 2] = float("inf")
    if isinstance(test, tuple) and len(test) == 2:
        test = (parts[test[0]], parts[test[1]])
    model = PaperCNN(n_outputs=1, seq_len=50)
    monkeypatch.setattr(model, "forward", lambda x: pytest.fail("trained before checking test"))
    with pytest.raises(error, match=match):
        train_classifier(model, X, y, epochs=1, batch_size=8, test=test)


def test_a_one_class_test_set_is_warned_before_training():
    """The docstring says test is checked before training, but one-class test labels were
    warned only after every epoch had run (with a NaN test_auc)."""
    X, y = _onehot(40), (torch.arange(40) % 2).float()
    Xt, yt = _onehot(10, seed=3), torch.zeros(10)

    class Stop(Exception):
        pass

    model = PaperCNN(n_outputs=1, seq_len=50)

    def forward(x):
        raise Stop
    model.forward = forward
    with warnings.catch_warnings(record=True) as rec, pytest.raises(Stop):
        warnings.simplefilter("always")
        train_classifier(model, X, y, epochs=1, batch_size=8, test=(Xt, yt))
    assert len(rec) == 1 and str(rec[0].message).startswith(
        "output(s) [0] have a single class among the 10 test rows: their test AUC will be "
        "undefined (NaN)"), [str(w.message) for w in rec]
    assert rec[0].filename == __file__


def test_labels_are_read_on_the_cpu_whatever_they_carry():
    """y and y_test went to .numpy() as given: labels that require grad (or, on a GPU machine,
    a y_test on the GPU) failed there, after training. They are detached and moved to the CPU
    when checked."""
    X = _onehot(80, length=20, seed=1)
    y = X[:, 0, 0].clone().requires_grad_()
    Xt = _onehot(40, length=20, seed=2)
    yt = Xt[:, 0, 0].clone().requires_grad_()
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(80, 1))
    r = train_classifier(m, X, y, epochs=1, batch_size=16, lr=0.05, test=(Xt, yt))
    assert np.isfinite(r.test_auc).all() and np.isfinite(r.val_auc).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_labels_on_the_gpu_with_a_cpu_model():
    X = _onehot(80, length=20, seed=1)
    Xt = _onehot(40, length=20, seed=2)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(80, 1))
    r = train_classifier(m, X, X[:, 0, 0].cuda(), epochs=1, batch_size=16,
                         test=(Xt.cuda(), Xt[:, 0, 0].cuda()))
    assert np.isfinite(r.test_auc).all()


def test_a_softmax_inside_the_model_is_not_taken_for_its_output():
    """A Softmax module over attention weights, the last module to run, with a functional head
    after it: the output is a logit, but the warning said the model ends in Softmax. The
    output's graph decides now (as in interaction_check); a real ending is still warned."""
    class AttentionPool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 3, 5)
            self.att = torch.nn.Conv1d(3, 1, 1)
            self.soft = torch.nn.Softmax(-1)
            self.w = torch.nn.Parameter(torch.randn(3, 1))

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return (self.soft(self.att(h)) * h).sum(-1) @ self.w

    X, y = _onehot(40), (torch.arange(40) % 2).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_classifier(AttentionPool(), X, y, epochs=1, batch_size=8)
    ends = torch.nn.Sequential(PaperCNN(n_outputs=2, seq_len=50), torch.nn.LogSoftmax(1),
                               torch.nn.Flatten())       # the last module; its input is squashed
    with pytest.warns(UserWarning, match=r"ends in LogSoftmax \(1\).*expects logits"):
        train_classifier(ends, X, torch.stack([y, 1 - y], 1), epochs=1, batch_size=8)


def test_random_state_fixes_dropout_and_leaves_the_callers_torch_stream():
    """From review 14: dropout masks came from torch's global generator, so the same weights,
    data and random_state trained to different weights after another torch.manual_seed; and
    training consumed the caller's stream."""
    from deepresolve_captum.zoo import EncodeTFModel

    g = torch.Generator().manual_seed(0)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (96, 30), generator=g), 4)
    X = X.transpose(1, 2).float()
    y = (X[:, 0].sum(1) > 7).float()[:, None]
    torch.manual_seed(5)
    init = EncodeTFModel(dropout=0.5).state_dict()
    kept = []
    for caller_seed in (1, 2):
        model = EncodeTFModel(dropout=0.5)
        model.load_state_dict(init)
        assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
        torch.manual_seed(caller_seed)
        expected = torch.rand(3)
        torch.manual_seed(caller_seed)
        train_classifier(model, X, y, epochs=2, batch_size=16, random_state=3)
        assert torch.equal(torch.rand(3), expected)       # the caller's stream, untouched
        kept.append(model.state_dict())
    for k in init:
        assert torch.equal(kept[0][k], kept[1][k]), k
