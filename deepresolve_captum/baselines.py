"""Baselines that score the channels of an intermediate layer (the paper's Table 1 rivals).

Input-dependent methods, applied at a layer as in the paper ("we conducted them on an
intermediate layer instead of on input layer ... took the average of scores assigned to a
channel"): each returns one score per channel, averaged over a set of positive sequences and
over positions.

- :func:`layer_saliency` -- dS/dH (signed: the paper dropped the absolute value).
- :func:`layer_grad_x_input` -- H * dS/dH.
- :func:`layer_deeplift` -- DeepLIFT (rescale rule) at the layer against dinucleotide-shuffled
  references, via Captum's ``LayerDeepLift``. Only the network *after* the layer is traversed
  by the multipliers, so Captum's MaxPool bug (#1276) does not reach a layer taken after the
  pooling (the ENCODE models' ``fc1`` input). It checks completeness on a few of its own
  (sequence, reference) pairs and warns when the attributions do not add up (functional
  nonlinearities, max-pooling after the layer); :func:`deeplift_delta` checks any set.
- :func:`deepmotif` / :func:`deepmotif_pwms` -- enhanced DeepMotif: gradient ascent in input
  space from several random starts; a window of each top-scoring generated sequence, chosen by
  ``window`` (default: the one holding the most positive input mass), becomes a probability
  matrix (columns the model does not read, decayed to ~0 by the L2 penalty, are uniform).

Positive sequences come from the model itself (:func:`model_positives`): the top-scoring of
many random sequences, never a known motif.

Every function runs in the model's floating dtype and on its device (a ``model.double()`` or a
model on a GPU works); results come back as float32 tensors on the CPU.

``target`` is the one output explained, everywhere here: an int (the flat index into one
sequence's output: the column of (N, n_outputs) logits), a tuple with one index per output axis
(e.g. (track, position) of a (N, C, L) profile), or a one-element list holding either
(``[(track, position)]``, LayerFeatureOptimizer's spelling of one target). It is checked on one
forward pass before any work.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

from .adapters import (ADDITIVITY_TOLERANCE, CAPTUM_LEFTOVERS, _check_one_input, _model_device,
                       _model_float_dtype, _preserved, make_references)
from .adapters import _check_X as _check_onehot
from ._modules import check_layer_calls, module_path
from .interaction import _flat_target
from .motifs import _normalise_columns, column_information, random_one_hot

__all__ = ["model_positives", "layer_saliency", "layer_grad_x_input", "layer_deeplift",
           "layer_channel_scores", "deeplift_delta", "deepmotif", "deepmotif_pwms"]


def _check_model(model, layer):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_one_input(model)
    if layer is not None and not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")


def _check_X(X, model, name="X"):
    """One-hot (N, 4, L) sequences (a tensor or array) in ``model``'s float dtype, on its device."""
    if not isinstance(X, torch.Tensor):
        X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    return _check_onehot(X, name, model=model).to(_model_device(model))


def _like_model(x, model):
    """``x`` in the model's float dtype (float32 if it has no float parameter), on its device."""
    return x.to(device=_model_device(model), dtype=_model_float_dtype(model) or torch.float32)


def _out(t):
    """A result as documented: float32, on the CPU."""
    return t.detach().float().cpu()


class _Columns(nn.Module):
    """The model with its output as (N, n_outputs): Captum picks ``target`` as a column, and a
    (N,) output (one logit per sequence, squeezed) or a (N, C, L) profile has none. ``target``
    (from :func:`_probe`) then indexes the flattened output, as :func:`_target_output` does."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out.reshape(out.shape[0], -1)


def _target_output(out, target):
    """(N,): output ``target`` (a flat index, checked by :func:`_probe`) of each sequence."""
    return out.reshape(out.shape[0], -1)[:, target]


class _Capture:
    """Forward (pre-)hook that makes the layer's output (input) a leaf requiring grad and counts
    the layer's calls; used as a context manager, the hook is removed on exit.

    ``value`` is the leaf (H, what gradients are taken against); the forward pass goes on with
    a clone of it, so that an in-place module after the layer (``nn.ReLU(inplace=True)``, or
    the layer itself when it is in place and its input is H) writes into the copy: autograd
    forbids an in-place op on a leaf that requires grad, and H must keep its value. The clone's
    backward is the identity, so the gradients are those of the leaf itself."""

    def __init__(self, layer, on_input):
        self.layer, self.on_input = layer, on_input
        self.value, self.calls = None, 0

    def __enter__(self):
        self.h = (self.layer.register_forward_pre_hook(self._pre) if self.on_input
                  else self.layer.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc):
        self.h.remove()
        return False

    def _pre(self, module, args):
        v = args[0].detach().requires_grad_(True)
        self.value, self.calls = v, self.calls + 1
        return (v.clone(),) + tuple(args[1:])

    def _post(self, module, args, out):
        v = out.detach().requires_grad_(True)
        self.value, self.calls = v, self.calls + 1
        return v.clone()


def _layer_name(model, layer):
    """``layer``'s name in ``model`` (its class name if it is not a submodule; "model" for the
    model itself)."""
    return "model" if layer is model else module_path(model, layer) or type(layer).__name__


def _probe(model, x1, target, layer=None, attribute_to_layer_input=False):
    """One forward pass of ``x1`` (1, 4, L) in eval mode, before any work: ``target`` as the
    flat index into one sequence's output. ``target`` is an int (that flat index: the column of
    (N, n_outputs) logits), a tuple with one index per output axis (e.g. (track, position) of a
    (N, C, L) profile), or a one-element list holding either (see
    :func:`deepresolve_captum.interaction._flat_target`). With ``layer``: refuses a layer the
    forward pass never reaches (e.g. not in the model) or calls more than once (H would be its
    last call only)."""
    cap = _Capture(layer, attribute_to_layer_input) if layer is not None else None
    with cap or contextlib.nullcontext(), _preserved(model), torch.no_grad():
        y = model(x1)
    if cap is not None:
        check_layer_calls(cap.calls, _layer_name(model, layer))
    return _flat_target(target, tuple(y.shape[1:]))


@torch.no_grad()
def model_positives(model, n=200, n_candidates=10000, seq_len=101, target=0,
                    probs=(0.25, 0.25, 0.25, 0.25), batch_size=2048, random_state=None,
                    return_scores=False):
    """Positive sequences taken from the model itself: the ``n`` top-scoring of
    ``n_candidates`` random sequences.

    Parameters
    ----------
    model: returns logits (N, n_outputs) for one-hot (N, 4, seq_len).
    n: positives to keep. n_candidates: random sequences scored.
    seq_len: sequence length L. target: the output scored (see the module doc).
    probs: base composition (A, C, G, T) of the random sequences.
    batch_size: sequences per forward call. random_state: seed.
    return_scores: also return their scores.

    Returns
    -------
    float32 tensor (n, 4, L), best first; with ``return_scores`` also the scores (n,).
    """
    _check_model(model, None)
    if not 1 <= n <= n_candidates:
        raise ValueError(f"need 1 <= n <= n_candidates, got n={n}, n_candidates={n_candidates}")
    X = random_one_hot(n_candidates, seq_len, probs=probs, random_state=random_state)
    target = _probe(model, _like_model(X[:1], model), target)
    with _preserved(model, freeze=True):
        s = torch.cat([_out(_target_output(model(_like_model(X[i:i + batch_size], model)), target))
                       for i in range(0, len(X), batch_size)])
    top = torch.argsort(s, descending=True)[:n]
    return (X[top], s[top]) if return_scores else X[top]


def _layer_grads(model, layer, X, target, attribute_to_layer_input, batch_size):
    """H and dS/dH for every sequence: two tensors (N, *layer_shape)."""
    H, G = [], []
    with _Capture(layer, attribute_to_layer_input) as cap, _preserved(model, freeze=True), \
            torch.enable_grad():
        for i in range(0, len(X), batch_size):
            s = _target_output(model(X[i:i + batch_size]), target)
            g, = torch.autograd.grad(s.sum(), cap.value)
            H.append(cap.value.detach())
            G.append(g.detach())
    return torch.cat(H), torch.cat(G)


def _channel_mean(a):
    """(N, C, *positions) -> (C,) mean over examples and positions."""
    if a.dim() < 2:
        raise ValueError(f"layer attributions must have a channel axis, got shape {tuple(a.shape)}")
    return a.transpose(0, 1).reshape(a.shape[1], -1).mean(1)


def layer_saliency(model, layer, X, target=0, attribute_to_layer_input=False, batch_size=512,
                   reduce=True):
    """Saliency at a layer: the signed gradient dS_target/dH, averaged per channel.

    Parameters
    ----------
    model: returns logits (N, n_outputs). layer: the module, called once per forward pass,
        whose output (or input, with ``attribute_to_layer_input``) is H, shape (N, C, ...) or
        (N, C); a layer the forward never reaches, or calls twice, is refused before any work.
    X: one-hot (N, 4, L) sequences (e.g. :func:`model_positives`).
    target: the output (see the module doc). batch_size: sequences per pass.
    reduce: True -> (C,) mean over sequences and positions; False -> (N, *layer_shape).

    Returns
    -------
    float32 tensor (C,) (or (N, *layer_shape)).
    """
    _check_model(model, layer)
    X = _check_X(X, model)
    target = _probe(model, X[:1], target, layer, attribute_to_layer_input)
    _, G = _layer_grads(model, layer, X, target, attribute_to_layer_input, batch_size)
    return _out(_channel_mean(G) if reduce else G)


def layer_grad_x_input(model, layer, X, target=0, attribute_to_layer_input=False,
                       batch_size=512, reduce=True):
    """Gradient x input at a layer: H * dS_target/dH, averaged per channel.

    Parameters as in :func:`layer_saliency`: X one-hot (N, 4, L); H of shape (N, C, ...) or
    (N, C) at ``layer``'s output (or input, with ``attribute_to_layer_input``).

    Returns
    -------
    float32 tensor (C,), the mean over sequences and positions (``reduce=False``:
    (N, *layer_shape)).
    """
    _check_model(model, layer)
    X = _check_X(X, model)
    target = _probe(model, X[:1], target, layer, attribute_to_layer_input)
    H, G = _layer_grads(model, layer, X, target, attribute_to_layer_input, batch_size)
    return _out(_channel_mean(H * G) if reduce else H * G)


def _shuffled_references(X, n_shuffles, random_state):
    """Dinucleotide-shuffled references, reference-major: (n_shuffles * N, 4, L)."""
    R = make_references(X.cpu(), "shuffle", n_shuffles, random_state)    # (N, n, 4, L)
    return R.transpose(0, 1).reshape(-1, *X.shape[1:]).to(device=X.device, dtype=X.dtype)


#: (sequence, reference) pairs whose completeness :func:`layer_deeplift` checks by default
N_COMPLETENESS_CHECKS = 8


def layer_deeplift(model, layer, X, target=0, attribute_to_layer_input=False, n_shuffles=10,
                   references=None, batch_size=512, random_state=None, reduce=True,
                   check_completeness=N_COMPLETENESS_CHECKS):
    """DeepLIFT (rescale rule) at a layer, averaged over references and then per channel.

    Uses Captum's ``LayerDeepLift``: attributions (H - H_ref) * m with DeepLIFT multipliers m of
    the network *after* the layer. The model must use module nonlinearities (``nn.ReLU``).
    Multipliers never pass through modules before the layer, so max-pooling before it is safe
    (Captum 0.9's MaxPool rule, wrong per issue #1276, is not used); MaxPool *after* the layer
    is not. Both failures break completeness (the attributions of a pair no longer sum to
    S(x) - S(reference)), which is checked on ``check_completeness`` pairs and warned about.

    Parameters
    ----------
    model, layer, X, target, attribute_to_layer_input, batch_size: as :func:`layer_saliency`.
        The output may also be (N,) (one logit per sequence): ``target`` indexes the output
        flattened per sequence, (N, -1), here as in the other baselines.
    n_shuffles: dinucleotide-shuffled references per sequence (tangermeme's shuffle) when
        ``references`` is None.
    references: optional reference sequences, (N, R, 4, L) (R references for each sequence, the
        layout of :func:`deepresolve_captum.adapters.make_references`) or (N, 4, L) (R = 1).
    random_state: seed of the shuffles.
    reduce: True -> (C,), False -> (N, *layer_shape) (averaged over references).
    check_completeness: (sequence, reference) pairs, spread over all of them, whose
        summation-to-delta is checked (two forward passes of that many sequences); a
        ``RuntimeWarning`` when the largest miss exceeds ``ADDITIVITY_TOLERANCE`` (0.1%) of
        the largest S(x) - S(reference) among them. 0 turns the check off.

    Returns
    -------
    float32 tensor (C,) (or (N, *layer_shape)).
    """
    from captum.attr import LayerDeepLift

    _check_model(model, layer)
    if isinstance(check_completeness, bool) or not isinstance(check_completeness, (int, np.integer)) \
            or check_completeness < 0:
        raise ValueError(f"check_completeness must be an int >= 0, got {check_completeness!r}")
    X = _check_X(X, model)
    target = _probe(model, X[:1], target, layer, attribute_to_layer_input)
    R = _references(X, references, n_shuffles, random_state)
    n_ref = R.shape[0] // X.shape[0]
    Xr = X.repeat(n_ref, 1, 1)
    dl = LayerDeepLift(_Columns(model), layer, multiply_by_inputs=True)
    out = []
    # inputs require grad: Captum hooks every nonlinearity, also before the layer
    with _preserved(model, freeze=True, drop_added=CAPTUM_LEFTOVERS):
        for i in range(0, len(Xr), batch_size):
            a = dl.attribute(Xr[i:i + batch_size].clone().requires_grad_(True),
                             baselines=R[i:i + batch_size], target=target,
                             attribute_to_layer_input=attribute_to_layer_input)
            out.append(a.detach())
        A = torch.cat(out)                                               # (n_ref * N, *layer)
        if check_completeness:
            _warn_incomplete(model, layer, Xr, R, A, target, int(check_completeness))
    A = A.reshape(n_ref, X.shape[0], *A.shape[1:]).mean(0)
    return _out(_channel_mean(A) if reduce else A)


def _warn_incomplete(model, layer, Xr, R, A, target, k):
    """DeepLIFT's summation-to-delta on k pairs spread over the rows of Xr / R (row j: a
    sequence, its reference, its attributions A[j]); RuntimeWarning when it fails."""
    rows = torch.linspace(0, len(Xr) - 1, min(k, len(Xr))).round().long().unique()
    with torch.no_grad():
        d = (_target_output(model(Xr[rows]), target) - _target_output(model(R[rows]), target))
    err = float((A[rows].reshape(len(rows), -1).sum(1) - d).abs().max())
    scale = float(d.abs().max())
    if err <= ADDITIVITY_TOLERANCE * scale + 1e-6:
        return
    name = _layer_name(model, layer)
    warnings.warn(
        f"layer_deeplift at {name!r}: the attributions are not DeepLIFT -- they do not add up to "
        f"S(x) - S(reference): the largest miss over {len(rows)} checked pairs is {err:.3g}, on "
        f"output changes up to {scale:.3g}. Captum applies DeepLIFT's rule only to nonlinearity "
        "modules after the layer; likely causes: a functional nonlinearity (F.relu, torch.relu, "
        "x.max(), ...: treated as linear; use nn.ReLU modules), or max-pooling after the layer "
        "(Captum 0.9's MaxPool rule is wrong, captum issue #1276, and adaptive/global max-pooling "
        "has no rule: attribute at a layer after the pooling, e.g. the input of the first dense "
        "layer). Channel scores and rankings can differ from DeepLIFT's.",
        RuntimeWarning, stacklevel=_first_frame_outside_package())


def _first_frame_outside_package():
    """The ``stacklevel`` that points a warning raised in the calling function at the user's
    line, however many of this package's functions (layer_channel_scores -> layer_deeplift ->
    ...) lie between."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _references(X, references, n_shuffles, random_state):
    """The references, reference-major: (R * N, 4, L), row r * N + i a reference of sequence i,
    in X's dtype and on its device."""
    if references is None:
        if n_shuffles < 1:
            raise ValueError("n_shuffles must be >= 1")
        return _shuffled_references(X, n_shuffles, random_state)
    if not isinstance(references, torch.Tensor):
        references = torch.as_tensor(np.asarray(references))
    R = make_references(X.cpu(), references.float().cpu())            # (N, R, 4, L), checked
    return R.transpose(0, 1).reshape(-1, *X.shape[1:]).to(device=X.device, dtype=X.dtype)


def deeplift_delta(model, layer, X, references, target=0, attribute_to_layer_input=False):
    """Completeness check of :func:`layer_deeplift`: per sequence,
    sum(attributions) - (S(X) - S(reference)), which DeepLIFT makes 0.

    X and references: (N, 4, L) each (one reference per sequence). Returns a float32 tensor (N,).
    """
    from captum.attr import LayerDeepLift

    _check_model(model, layer)
    X, R = _check_X(X, model), _check_X(references, model, "references")
    if R.shape != X.shape:
        raise ValueError(f"references must have X's shape {tuple(X.shape)}, got {tuple(R.shape)}")
    target = _probe(model, X[:1], target, layer, attribute_to_layer_input)
    with _preserved(model, freeze=True, drop_added=CAPTUM_LEFTOVERS):
        with torch.no_grad():
            d = _target_output(model(X), target) - _target_output(model(R), target)
        a = LayerDeepLift(_Columns(model), layer, multiply_by_inputs=True).attribute(
            X.clone().requires_grad_(True), baselines=R, target=target,
            attribute_to_layer_input=attribute_to_layer_input)
    return _out(a.detach().reshape(len(X), -1).sum(1) - d)


def layer_channel_scores(model, layer, X, method, target=0, attribute_to_layer_input=False,
                         random_state=None, **kwargs):
    """One call for any baseline: ``method`` in {"saliency", "grad_x_input", "deeplift"}.

    Parameters
    ----------
    model, layer, X: as :func:`layer_saliency`.
    method: ``"saliency"`` (:func:`layer_saliency`), ``"grad_x_input"``
        (:func:`layer_grad_x_input`) or ``"deeplift"`` (:func:`layer_deeplift`).
    target: an int, a tuple index or a one-element list holding either (see the module doc),
        checked before any work.
    attribute_to_layer_input: score the channels of the layer's input instead of its output.
    random_state: seed of DeepLIFT's dinucleotide-shuffled references (unused by the gradient
        methods).
    kwargs: passed to the method's function (``batch_size``, ``reduce``; for deeplift also
        ``n_shuffles``, ``references``, ``check_completeness``).

    Returns
    -------
    float32 tensor (C,), the per-channel scores (higher = more important for the target);
    (N, *layer_shape) with ``reduce=False``.
    """
    fns = {"saliency": layer_saliency, "grad_x_input": layer_grad_x_input,
           "deeplift": layer_deeplift}
    if method not in fns:
        raise ValueError(f"method must be one of {sorted(fns)}, got {method!r}")
    if method == "deeplift":
        kwargs["random_state"] = random_state
    return fns[method](model, layer, X, target=target,
                       attribute_to_layer_input=attribute_to_layer_input, **kwargs)


# ------------------------------------------------------------------ enhanced DeepMotif -------

#: deepmotif's default seq_len (deepmotif_pwms checks ``width`` against it before the ascent)
DEEPMOTIF_SEQ_LEN = 101


def deepmotif(model, n_starts=20, seq_len=DEEPMOTIF_SEQ_LEN, target=0, l2=0.01, lr=0.1,
              n_steps=300, init_scale=0.25, random_state=None):
    """Enhanced DeepMotif: maximise S_target(X) - l2 * ||X||^2 over a continuous input X
    (4, seq_len) by gradient ascent (Adam), from ``n_starts`` random starts N(0.25, init_scale^2)
    instead of DeepMotif's single all-0.25 start.

    Parameters
    ----------
    model: returns logits (N, n_outputs) for (N, 4, seq_len) inputs.
    n_starts: random starts, optimised as one batch. seq_len: input length.
    target: the output (see the module doc). l2: L2 penalty. lr, n_steps: Adam step size
    and steps.
    init_scale: std of the starts. random_state: seed.

    Returns
    -------
    X (n_starts, 4, seq_len) float32 and scores (n_starts,), both sorted best first.
    """
    _check_model(model, None)
    if n_starts < 1 or n_steps < 1:
        raise ValueError("n_starts and n_steps must be >= 1")
    g = torch.Generator().manual_seed(int(np.random.default_rng(random_state).integers(2**31)))
    x = _like_model(0.25 + init_scale * torch.randn(n_starts, 4, seq_len, generator=g),
                    model).requires_grad_(True)  # drawn on the CPU: the same starts on any device
    target = _probe(model, x[:1].detach(), target)
    opt = torch.optim.Adam([x], lr=lr)
    with _preserved(model, freeze=True), torch.enable_grad():
        for _ in range(n_steps):
            opt.zero_grad()
            s = _target_output(model(x), target)
            loss = -(s - l2 * (x ** 2).flatten(1).sum(1)).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            s = _target_output(model(x), target)
    order = torch.argsort(s, descending=True)
    return _out(x[order]), _out(s[order])


def deepmotif_pwms(model, width=25, n_top=5, n_starts=20, window="mass", min_mass=1e-3,
                   random_state=None, **kwargs):
    """Enhanced DeepMotif's candidate motifs: for each of the ``n_top`` best generated inputs,
    the ``width``-bp window chosen by ``window`` (default: the most positive input mass),
    negatives clipped and columns normalised; a column the model does not read is uniform.

    Parameters
    ----------
    model: as :func:`deepmotif`. width: window in bases (the filter length, 25 in Table 1).
    n_top: generated sequences kept (ranked by class score). n_starts, random_state, kwargs:
        passed to :func:`deepmotif` (``seq_len``, ``l2``, ``lr``, ``n_steps`` ...).
    window: how the window is chosen: ``"mass"`` (default) the window holding the most
        positive input (what the ascent wrote); ``"contrast"`` the window
        with the largest sum of max_b X - mean_b X per column (blind to columns raised on all
        four bases alike, which lower a negative filter's activation); ``"ic"`` the window of
        highest information content of the clipped, normalised columns (the most informative
        window). On 46 of the ENCODE
        models (every 6th), known motif hit by the top-1 / top-5 matrices at p < 0.05: mass
        38 / 44, contrast 25 / 42, ic 13 / 30 (measured before ``min_mass`` existed).
    min_mass: a column whose positive input mass is below ``min_mass`` x the largest column's of
        its generated sequence becomes uniform (before the window is chosen). Columns the model
        does not read decay towards 0 under the L2 penalty (to ~1e-8 of the largest), and
        normalising what is left would fake information: up to 2 bits of noise per column.
        Columns the model reads keep a mass that reflects its gradient: on 31 of the ENCODE
        models (every 9th), of the 3,875 columns of the chosen windows 245 lay below 1e-4 of
        their sequence's largest, 1 between 1e-4 and 1e-3, the rest above. 0: every column is
        normalised (the behaviour before 2026-11-22).

    Returns
    -------
    numpy float64 (n_top, 4, width) probability matrices, best-scoring sequence first, and the
    scores (n_top,) as a numpy array.
    """
    # checked before the ascent, which can take minutes on a big model
    for name, v in (("n_top", n_top), ("n_starts", n_starts), ("width", width)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if n_top > n_starts:
        raise ValueError(f"n_top ({n_top}) > n_starts ({n_starts})")
    seq_len = kwargs.get("seq_len", DEEPMOTIF_SEQ_LEN)
    if width > seq_len:
        raise ValueError(f"width {width} longer than the sequences ({seq_len})")
    if window not in ("mass", "contrast", "ic"):
        raise ValueError(f"window must be 'mass', 'contrast' or 'ic', got {window!r}")
    if (isinstance(min_mass, bool)
            or not isinstance(min_mass, (int, float, np.integer, np.floating))
            or not 0 <= min_mass < 1):
        raise ValueError(f"min_mass must be a number in [0, 1), got {min_mass!r}")
    X, s = deepmotif(model, n_starts=n_starts, random_state=random_state, **kwargs)
    X = X[:n_top].double().numpy()
    mass = np.clip(X, 0, None).sum(1)                     # (n_top, L) positive mass per column
    read = mass >= min_mass * mass.max(1, keepdims=True)
    P = np.where(read[:, None, :], _normalise_columns(X), 0.25)  # (n_top, 4, L)
    if window == "ic":
        col = column_information(P)  # (n_top, L)
    elif window == "contrast":
        col = X.max(1) - X.mean(1)
    else:
        col = mass
    csum = np.concatenate([np.zeros((len(P), 1)), np.cumsum(col, 1)], 1)
    win = csum[:, width:] - csum[:, :-width]  # (n_top, L - width + 1)
    best = win.argmax(1)
    pwms = np.stack([P[i, :, b:b + width] for i, b in enumerate(best)])
    return pwms, s[:n_top].numpy().astype(np.float64)
