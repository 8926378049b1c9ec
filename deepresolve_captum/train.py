"""A plain, seeded training loop for the paper's small CNNs (binary cross-entropy on logits).

The paper trained with Keras 1.2: ``glorot_uniform`` weights, zero biases (``zoo.keras_init_``) and,
in the authors' code, Adadelta (lr 1.0) on binary cross-entropy. Here the default optimiser is
**Adam (lr 1e-3)**: on a shared 2-core CPU it reaches the paper's AUCs in a few epochs, where Adadelta
needs several times more. ``optimizer="adadelta"`` gives the Keras-1.2 recipe (lr 1.0, rho 0.95,
eps 1e-8) for anyone who wants it. What decides whether set I's XOR is learnt as two opposed
detectors is how completely it is learnt: the demo and the benchmark use Adam with lr 2e-3 for 12
epochs, which drives the CAGGTC+GCTCAT+CGCTTG logit well below zero; lr 1e-3 for 12 epochs stops at
AUC ~0.987 with that "veto" half learnt, and on the models we tried DeepResolve then found no XOR
modes. Initialise the Keras way (``zoo.keras_init_``) before calling, as the paper did.

Every output is a sigmoid task (the paper's set II network also ends in four sigmoids), so ``y`` is a
(N, n_outputs) matrix of 0/1 targets.
"""
from __future__ import annotations

import copy
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from .adapters import _model_device, _model_float_dtype, _preserved
from ._modules import squashing

__all__ = ["TrainResult", "predict", "train_classifier"]


@dataclass
class TrainResult:
    """What ``train_classifier`` returns.

    Attributes
    ----------
    val_auc: numpy (n_outputs,), validation ROC AUC per output, for the kept (best) weights;
        NaN for an output whose validation labels are all one class (warned).
    best_epoch: int, 0-based epoch whose weights were kept (lowest validation loss).
    history: list of dicts, one per epoch: ``train_loss``, ``val_loss``, ``val_auc`` (list).
    train_index, val_index: numpy int arrays, the rows of X used for training / validation.
    settings: dict of the arguments that made the run.
    test_auc: numpy (n_outputs,), ROC AUC per output of the kept weights on the independent
        ``test`` set, or None when none was given. Unlike ``val_auc`` it is unbiased: the
        validation rows chose the epoch, the test rows played no part in training.
    """
    val_auc: np.ndarray
    best_epoch: int
    history: list = field(default_factory=list)
    train_index: np.ndarray = None
    val_index: np.ndarray = None
    settings: dict = field(default_factory=dict)
    test_auc: np.ndarray = None


def _auc(y, p):
    out = []
    for j in range(y.shape[1]):
        yj = y[:, j]
        out.append(float(roc_auc_score(yj, p[:, j])) if 0 < yj.sum() < len(yj) else float("nan"))
    return np.array(out)


@torch.no_grad()
def predict(model, X, batch_size=1024):
    """Logits of ``model`` on X in eval mode, by batches.

    X: torch.Tensor (N, ...) as the model takes it, on any device: each batch is cast to the
        model's float dtype and moved to its device (those of its first parameter, else of its
        first buffer; a model with neither takes X as it is).
    batch_size: rows per forward pass (1024).
    Returns a torch tensor (N, n_outputs) in the model's output dtype (float32 for a float32
    model, float64 for a float64 one), on the model's device. Every module's train/eval mode is
    restored as it was (a submodule kept in eval mode stays so), also when the forward raises.
    """
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}")
    # a model with no parameters or buffers takes X where and as it is
    dtype, device = _model_float_dtype(model), _model_device(model, default=None)
    with _preserved(model):
        return torch.cat([model(X[i:i + batch_size].to(device=device, dtype=dtype))
                          for i in range(0, len(X), batch_size)])


def _checked_xy(X, y, xname, yname):
    """X as float32 (N, 4, L) and y as float32 (N, n_outputs) of finite 0/1 labels, or an error
    naming them. Both detached; y on the CPU, where the AUCs are computed (``.numpy()``), from
    any device (X stays where it is: each batch moves to the model's device)."""
    X = torch.as_tensor(X, dtype=torch.float32).detach()
    y = torch.as_tensor(y, dtype=torch.float32).detach().cpu()
    if y.ndim == 1:
        y = y[:, None]
    if X.ndim != 3 or y.ndim != 2 or len(X) != len(y):
        raise ValueError(f"expected {xname} (N, 4, L) and {yname} (N, n_outputs) with the same N, "
                         f"got {tuple(X.shape)} and {tuple(y.shape)}")
    for name, v in ((xname, X), (yname, y)):
        bad = ~torch.isfinite(v.reshape(len(v), -1)).all(1)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()
            raise ValueError(f"{name} has NaN or inf in {len(rows)} row(s), e.g. "
                             f"{rows[:5].tolist()}: drop or fix them before training")
    odd = torch.unique(y[(y != 0) & (y != 1)])
    if len(odd):
        hint = (" (for -1/+1 labels pass (y + 1) / 2)" if bool(((y == -1) | (y == 1)).all())
                else "")
        raise ValueError(f"{yname} must hold 0/1 labels, found {odd[:5].tolist()}{hint}: this loop "
                         "trains sigmoid tasks with binary cross-entropy and reports ROC AUC")
    return X, y


def train_classifier(model, X, y, *, epochs=5, batch_size=128, lr=None, optimizer="adam",
                     val_fraction=0.2, random_state=0, test=None, verbose=False):
    """Train ``model`` (returns logits (N, n_outputs)) on X with binary cross-entropy, in place.

    A random ``val_fraction`` of the rows is held out (the paper holds out 20%). After each epoch
    the validation loss and per-output AUC are computed; the weights of the epoch with the lowest
    validation loss are loaded back at the end. The validation AUC of those weights is therefore
    measured on the rows that chose them (slightly optimistic); for an unbiased figure pass an
    independent ``test`` set, scored once with the kept weights (``test_auc``).

    Parameters
    ----------
    model: torch.nn.Module returning logits (no final ``nn.Sigmoid``: the loss applies it),
        already initialised (e.g. ``zoo.keras_init_``). It is left in eval mode.
    X: torch.Tensor (N, 4, L) one-hot float, finite. It may stay on the CPU: each batch is cast
        to the model's float dtype (float32, float64, ...) and moved to the model's device.
    y: torch.Tensor (N, n_outputs) or (N,) of 0/1 labels (bool, int or float), on any device
        (it is read on the CPU).
    epochs, batch_size: ints.
    lr: float or None (None: 1e-3 for Adam, 1.0 for Adadelta).
    optimizer: "adam" or "adadelta".
    val_fraction: float in (0, 1).
    random_state: int, seeds the split, the batch order and the model's own random draws during
        training (dropout masks): torch's generators are seeded from it for the loop and put
        back afterwards, so the caller's torch stream goes on as if nothing had drawn from it.
        Not the initialisation: seed torch or initialise the model yourself before calling.
    test: optional ``(X_test, y_test)`` laid out like X and y (the same outputs), rows that are
        not in X. It changes nothing in the training (no random draw, no say in the epoch): the
        kept weights are scored on it once, at the end. Checked with X and y, before training
        (an output with one class among the test labels is warned then: its test AUC is NaN).
        y_test may be on any device (it is read on the CPU).
    verbose: show a tqdm bar per epoch.

    Returns
    -------
    TrainResult (``val_auc`` per output; ``test_auc`` per output with ``test``, else None).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    X, y = _checked_xy(X, y, "X", "y")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 0 < float(val_fraction) < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if test is not None:
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            raise TypeError("test must be a pair (X_test, y_test)")
        X_test, y_test = _checked_xy(test[0], test[1], "X_test", "y_test")
        if X_test.shape[1:] != X.shape[1:] or y_test.shape[1] != y.shape[1]:
            raise ValueError(f"test must be laid out like X and y: X_test {tuple(X_test.shape)} and "
                             f"y_test {tuple(y_test.shape)} against X {tuple(X.shape)} and y "
                             f"{tuple(y.shape)}")
        one_class = [j for j in range(y_test.shape[1]) if len(torch.unique(y_test[:, j])) < 2]
        if one_class:   # said before training, like the validation split's
            warnings.warn(
                f"output(s) {one_class[:10]} have a single class among the {len(y_test)} test "
                "rows: their test AUC will be undefined (NaN). Use a test set with both classes "
                "per output, or check y_test.", UserWarning, stacklevel=2)
    optimizer = str(optimizer).lower()
    if optimizer not in ("adam", "adadelta"):
        raise ValueError(f"optimizer must be 'adam' or 'adadelta', got {optimizer!r}")
    if lr is None:
        lr = 1e-3 if optimizer == "adam" else 1.0

    rng = np.random.default_rng(random_state)
    perm = rng.permutation(len(X))
    n_val = max(1, int(round(len(X) * float(val_fraction))))
    val_index, train_index = np.sort(perm[:n_val]), perm[n_val:]
    if len(train_index) == 0:
        raise ValueError(f"no rows left to train on: N = {len(X)} with val_fraction = "
                         f"{val_fraction} puts all of them in validation")
    one_class = [j for j in range(y.shape[1]) if len(torch.unique(y[val_index, j])) < 2]
    if one_class:
        warnings.warn(
            f"output(s) {one_class[:10]} have a single class among the {n_val} validation rows: "
            "their AUC is undefined (NaN). Use more data, a larger val_fraction, or check y.",
            UserWarning, stacklevel=2)
    dtype = _model_float_dtype(model) or torch.float32
    device = _model_device(model, default=None)
    model.eval()
    # from the output's graph (the probe input requires grad, to see torch.sigmoid in a frozen
    # model too), not the last module to run: a Softmax over attention weights with a
    # functional head after it leaves logits
    squashed = squashing(model, X[train_index[:2]].to(device=device, dtype=dtype))[1]
    if squashed:
        warnings.warn(
            f"the model {squashed}: train_classifier applies the sigmoid "
            "in its loss (BCEWithLogitsLoss) and expects logits, so a squashed output learns "
            "little or nothing. Train the model without that last module.",
            UserWarning, stacklevel=2)
    Xv, yv = X[val_index], y[val_index]
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))

    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adadelta(model.parameters(), lr=lr, rho=0.95, eps=1e-8)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    train_index_t = torch.from_numpy(train_index)
    draws_seed = int(rng.integers(2**31))   # drawn last: the split and batch order as before
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):   # the CPU's and the model's GPU's, put back after
        torch.default_generator.manual_seed(draws_seed)   # dropout in model.train() draws here
        for index in cuda:                                # (or here, for a model on a GPU)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(draws_seed)
        history, best_state, best_epoch = _epochs(
            model, X, y, Xv, yv, train_index_t, gen, opt, loss_fn, epochs, batch_size, dtype,
            device, verbose)
    model.load_state_dict(best_state)
    model.eval()
    test_auc = None
    if test is not None:   # the kept weights, scored once; no random draw, nothing else changes
        logits = predict(model, X_test).detach().cpu().double()
        test_auc = _auc(y_test.numpy(), logits.numpy())
    return TrainResult(val_auc=np.array(history[best_epoch]["val_auc"]), best_epoch=best_epoch,
                       history=history, train_index=train_index, val_index=val_index,
                       settings=dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                                     val_fraction=val_fraction, random_state=random_state,
                                     n_test=None if test is None else len(y_test)),
                       test_auc=test_auc)


def _epochs(model, X, y, Xv, yv, train_index_t, gen, opt, loss_fn, epochs, batch_size, dtype,
            device, verbose):
    """The training loop of train_classifier: (history, the kept state, its epoch)."""
    history, best, best_state, best_epoch = [], float("inf"), None, 0
    for epoch in range(epochs):
        model.train()
        order = train_index_t[torch.randperm(len(train_index_t), generator=gen)]
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(order), batch_size), disable=not verbose, leave=False,
                   desc=f"epoch {epoch + 1}/{epochs}")
        for i in bar:
            b = order[i:i + batch_size]
            opt.zero_grad()
            out = model(X[b].to(device=device, dtype=dtype))
            loss = loss_fn(out, y[b].to(device=out.device, dtype=out.dtype))
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            seen += len(b)
        logits = predict(model, Xv).detach().cpu()
        if bool(torch.isfinite(logits).all()):
            val_loss = loss_fn(logits, yv.to(logits.dtype)).item()
            auc = _auc(yv.numpy(), logits.double().numpy())
        else:  # diverged: this epoch is never kept (NaN < best is False)
            val_loss, auc = float("nan"), np.full(yv.shape[1], np.nan)
        history.append({"train_loss": total / seen, "val_loss": val_loss, "val_auc": auc.tolist()})
        if verbose:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: train loss {total / seen:.4f}, val loss {val_loss:.4f}, "
                       f"val AUC {np.round(auc, 4).tolist()}")
        if val_loss < best:
            best, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
    if best_state is None:
        raise FloatingPointError(
            f"the validation loss was not finite in any of the {epochs} epochs (training diverged): "
            "lower lr or check X and y")
    return history, best_state, best_epoch
