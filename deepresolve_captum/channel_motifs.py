"""Channel -> motif for any layer, then JASPAR (TOMTOM), seqlets and logos.

* A channel of a **first-layer** convolution (or of the ReLU / pooling right after it) is its
  filter: its PWM is the filter's weights with negatives clipped and columns normalised (the
  paper's rule, :func:`deepresolve_captum.motifs.filter_pwms`).
* A channel of a **deeper** layer sees a longer stretch of sequence (its receptive field, found
  here by back-propagation, see :func:`receptive_field`). Its PWM follows the paper's DeepSEA
  section: l2-regularised gradient ascent over the receptive field to maximise the channel's
  activation, started from the top-10 activating fragments of the given sequences (each fragment
  optimised in its own sequence context), then a heuristic threshold (values below
  ``threshold`` x the fragment's maximum, and negatives, set to 0) and each column normalised to
  sum to one (an empty column becomes uniform). The per-start matrices are kept; the channel's PWM
  is their mean. A start where no gradient of the channel reaches the input, before or during the
  ascent (a ReLU unit that stays off), is uniform and left out of the mean; a channel with no
  other start gets a uniform PWM and a warning.

Then :func:`channel_tomtom` compares them with JASPAR through the motif tools of
:mod:`deepresolve_captum.motifs`, and :func:`channel_seqlets` finds the stretches of each
sequence that drive a channel, with tangermeme's ``recursive_seqlets``, from the channel
attributions of :func:`deepresolve_captum.adapters.channel_attributions`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import _stats
from ._modules import _outside_stacklevel
from .adapters import (ChannelSum, _check_channels, _check_model_layer, _check_X, _model_device,
                       _model_float_dtype, _preserved)
from .motifs import _as_matrix_list, _normalise_columns, column_information

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = ["receptive_field", "channel_pwms", "ChannelMotifs", "trim_pwm", "consensus",
           "channel_tomtom", "channel_seqlets", "first_layer_conv"]

ALPHABET = "ACGT"


def _layer_value(model, layer, x, to_input):
    cs = ChannelSum(model, layer, [0], to_input)
    with cs:
        v = cs.layer_value(x)
    return v


def receptive_field(model, layer, seq_len, attribute_to_layer_input=False, n_probe=32,
                    random_state=0, X=None):
    """Receptive field of the positions of ``layer``, found by back-propagation.

    The layer value must be (B, K, W). Position ``w`` sees input positions
    ``[offset + w * stride, offset + w * stride + length)`` (may run past the sequence ends where
    the model pads).

    Parameters
    ----------
    model, layer: the network and a submodule of it.
    seq_len: int, input length L used for probing.
    attribute_to_layer_input: probe the layer's input instead of its output.
    n_probe: random one-hot sequences whose gradients are pooled (max-pools route gradient to one
        position per window: several probes cover the whole field).
    random_state: int seed of the probes.
    X: optional one-hot sequences (N, 4, seq_len) probed as well (up to ``n_probe`` of them):
        units that never fire on random sequence (sparse ReLU detectors) pass gradient on the
        data they were trained on.

    Returns
    -------
    dict with ``length``, ``stride``, ``offset`` (ints) and ``width`` (W at this ``seq_len``).
    The field may be longer than ``seq_len``: where the fields of the probed positions reach
    both sequence ends, it is measured again on random sequences 4 x ``seq_len`` long. A model
    that takes no longer sequences then raises ValueError if a field covers the whole sequence
    (it cannot be measured), and warns if the fields only touch the ends (the field found may be
    too short).
    """
    _check_model_layer(model, layer)
    g = torch.Generator().manual_seed(int(random_state))
    dev, dt = _model_device(model), _model_float_dtype(model)

    def probes(length, with_data):
        idx = torch.randint(0, 4, (n_probe, int(length)), generator=g)
        P = nn.functional.one_hot(idx, 4).permute(0, 2, 1).to(device=dev, dtype=dt)
        if with_data and X is not None and X.shape[-1] == int(length):
            P = torch.cat([P, X[:n_probe].to(device=dev, dtype=P.dtype)])
        return P

    def support(P, w):
        x = P.clone().requires_grad_()
        v = _layer_value(model, layer, x, attribute_to_layer_input)
        if v.ndim != 3:
            raise ValueError(f"layer value must be (B, K, W) to have a receptive field, got "
                             f"{tuple(v.shape)}")
        # random weights per (probe, channel): no gradient cancels by chance, and unlike
        # v ** 2 the gradient does not vanish where the value is 0
        r = torch.randn(v[:, :, w].shape, generator=g).to(device=v.device, dtype=v.dtype)
        (v[:, :, w] * r).sum().backward()
        # float32 first: numpy has no bfloat16 (a bf16 model's gradients)
        nz = np.flatnonzero(x.grad.abs().float().sum((0, 1)).cpu().numpy() > 0)
        return v.shape[-1], nz

    # ReLU-like modules are the identity while probing, forward and backward: the field is a
    # property of the wiring, and a detector that never fires on the probes would hide it (a
    # zero backward), or, with its forward value kept at 0, tie every max-pool window so that
    # the pool's gradient always picks the window's first position (a field too short).
    # Parameters are frozen so that the probes leave no .grad on the model.
    gating = [(m, m.__dict__.get("forward")) for m in model.modules() if isinstance(m, _GATING)]
    for m, _ in gating:
        m.forward = _identity
    try:
        with _preserved(model, freeze=True):
            P = probes(seq_len, True)
            W, _ = support(P, 0)
            if W < 2:
                try:
                    W_long, _ = support(probes(4 * int(seq_len), False), 0)
                except (RuntimeError, ValueError, IndexError):  # a model of one input length
                    W_long = None
                if W_long is None or W_long < 2:
                    raise ValueError(
                        f"the layer has one position for {int(seq_len)} bp inputs"
                        + (" and for longer ones" if W_long is not None else
                           " (the model takes no longer ones)")
                        + ": it pools the whole sequence (global pooling), so it has no "
                        "receptive field to optimise. Pick the layer before the pooling (e.g. "
                        "model.relu), or use method='filter' for first-layer filters")
                raise ValueError(
                    f"the layer has one position for {int(seq_len)} bp inputs (it pools nearly "
                    "the whole sequence), too few to measure its receptive field. Pick the "
                    "layer before the pooling (e.g. model.relu), or, if the model takes longer "
                    "sequences, pass longer ones")
            n, fixed = int(seq_len), False
            w0, a, b = _probe_pair(support, P, W)
            if not _measured(a, b, n):
                # the fields of both probed positions touch a sequence end (a field about as
                # long as the sequence): measure again on longer probes, where they sit inside
                try:
                    P_long = probes(4 * n, False)
                    W_long, _ = support(P_long, 0)
                    long = _probe_pair(support, P_long, W_long)
                except Exception:                         # a model of one input length
                    fixed = True
                else:
                    n, (w0, a, b) = 4 * n, long
    finally:
        for m, own in gating:     # back to the class's forward (or the instance's own)
            del m.forward
            if own is not None:
                m.forward = own
    if len(a) == 0 or len(b) == 0:
        raise ValueError("no gradient reaches the input from this layer on the probe sequences "
                         "(is the layer's output constant, e.g. detached?)")
    length = int(max(a[-1] - a[0], b[-1] - b[0]) + 1)
    stride = int(b[0] - a[0]) if (a[0] > 0 and b[0] > 0) else int(b[-1] - a[-1])
    whole = any(s[0] == 0 and s[-1] == n - 1 for s in (a, b))
    if whole or stride < 1:
        raise ValueError(
            f"the layer's receptive field is at least {n} bp long: the fields of its positions "
            f"cover the whole of the {n} bp probe sequences"
            + (", and the model takes no longer ones" if fixed else "")
            + f", so the field can neither be measured nor cut out of {int(seq_len)} bp "
            "sequences. Pick an earlier layer (a shorter field)"
            + ("" if fixed else ", or sequences longer than the field"))
    if fixed and not _measured(a, b, n):
        warnings.warn(
            f"receptive_field: the model takes only {n} bp sequences, and the fields of the "
            f"probed positions touch both sequence ends: the field measured ({length} bp, "
            f"stride {stride}) may be clipped by the sequence ends, too short", RuntimeWarning,
            stacklevel=_outside_stacklevel())
    if a[-1] - a[0] + 1 < length:  # the field of w0 is clipped at the sequence start
        start = int(b[0]) - stride
    else:
        start = int(a[0])
    return {"length": length, "stride": stride, "offset": start - w0 * stride, "width": int(W)}


def _probe_pair(support, P, W):
    """The input support of two neighbouring positions of the layer, near its middle."""
    w0 = W // 2 if W > 2 else 0
    _, a = support(P, w0)
    _, b = support(P, w0 + 1)
    return w0, a, b


def _measured(a, b, n):
    """True when the input supports ``a`` and ``b`` (sorted input positions in ``[0, n)``) of
    positions w0 and w0 + 1 give the field exactly: one of them lies inside the sequence (its
    span is the length), and both starts or both ends do (their difference is the stride). A
    support touching position 0 or n - 1 may be clipped by the sequence end there."""
    if len(a) == 0 or len(b) == 0:
        return True                        # refused by the caller
    start_in = [s[0] > 0 for s in (a, b)]
    end_in = [s[-1] < n - 1 for s in (a, b)]
    one_inside = (start_in[0] and end_in[0]) or (start_in[1] and end_in[1])
    return one_inside and (all(start_in) or all(end_in))


#: Modules whose backward pass is exactly zero where a unit is off; receptive_field runs them
#: as the identity.
_GATING = (nn.ReLU, nn.ReLU6, nn.Threshold, nn.Hardtanh, nn.LeakyReLU)


def _identity(x, *args, **kwargs):
    return x


def first_layer_conv(model, layer, X1, attribute_to_layer_input=False):
    """The first-layer Conv1d whose filters *are* the channels of ``layer``, or None.

    True when exactly one convolution runs on the way to the layer, it reads the 4 one-hot rows,
    it has as many filters as the layer has channels (conv -> ReLU -> pool keeps them), and no
    other module with parameters runs on the way except a BatchNorm with positive scales (a
    monotone rescaling per channel; a negative scale flips which windows a channel prefers, and
    other parametrised modules can mix or reorder what the filter sees).

    Parameters
    ----------
    model, layer: the network and a submodule of it.
    X1: one-hot (1, 4, L) sequence (any length the model takes), run once, in eval mode and
        without gradients, to see which modules run on the way to the layer.
    attribute_to_layer_input: the channels are those of the layer's input, not its output.

    Returns
    -------
    the ``nn.Conv1d``, or None."""
    ran = []
    hs = [m.register_forward_hook(lambda m, i, o: ran.append(m))
          for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), _preserved(model):
            v = _layer_value(model, layer, X1, attribute_to_layer_input)
    finally:
        for h in hs:
            h.remove()
    convs = [m for m in ran if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    others = [m for m in ran if m not in convs and next(m.parameters(recurse=False), None) is not None]
    monotone = all(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and (m.weight is None or bool((m.weight > 0).all())) for m in others)
    if (len(convs) == 1 and isinstance(convs[0], nn.Conv1d) and convs[0].in_channels == 4
            and v.ndim >= 2 and v.shape[1] == convs[0].out_channels and convs[0].groups == 1
            and monotone):
        return convs[0]
    return None


def _float64(pwm):
    """A matrix given as an array, a list or a tensor (float16 / bfloat16 too) as float64 numpy."""
    if hasattr(pwm, "detach"):
        pwm = _stats._tensor_to_numpy(pwm)
    return np.asarray(pwm, dtype=np.float64)


def _threshold_normalise(x, threshold):
    """(..., 4, k) optimised inputs -> probability matrices (the paper's heuristic)."""
    x = np.asarray(x, dtype=np.float64)
    mx = x.max(axis=(-2, -1), keepdims=True)
    return _normalise_columns(np.where((x > 0) & (x >= threshold * mx), x, 0.0))


def _align(mats, ref, max_shift=None):
    """Shift each (4, k) matrix of ``mats`` (T, 4, k) to best overlap ``mats[ref]`` (the motif
    can sit anywhere in a pooled receptive field); vacated columns become uniform."""
    T, _, k = mats.shape
    max_shift = k // 2 if max_shift is None else max_shift
    r = mats[ref] - 0.25
    out = mats.copy()
    for t in range(T):
        q = mats[t] - 0.25
        best, best_s = -np.inf, 0
        for sh in range(-max_shift, max_shift + 1):
            if sh >= 0:
                v = (r[:, sh:] * q[:, :k - sh]).sum()
            else:
                v = (r[:, :k + sh] * q[:, -sh:]).sum()
            if v > best + 1e-12:
                best, best_s = v, sh
        shifted = np.full_like(mats[t], 0.25)
        if best_s >= 0:
            shifted[:, best_s:] = mats[t][:, :k - best_s]
        else:
            shifted[:, :k + best_s] = mats[t][:, -best_s:]
        out[t] = shifted
    return out


def _informative_span(p, min_ic):
    """(start, stop) columns of (4, w) ``p`` from its first to its last column with at least
    ``min_ic`` bits; the whole matrix if no column reaches it."""
    if p.ndim != 2 or p.shape[0] != 4:
        raise ValueError(f"pwm must have shape (4, w), got {p.shape}")
    keep = np.flatnonzero(column_information(p) >= min_ic)
    return (0, p.shape[1]) if len(keep) == 0 else (int(keep[0]), int(keep[-1]) + 1)


def trim_pwm(pwm, min_ic=0.5):
    """Trim a (4, w) probability matrix to the span from its first to its last column with at
    least ``min_ic`` bits of information content (unchanged if no column reaches it)."""
    p = _float64(pwm)
    start, stop = _informative_span(p, min_ic)
    return p[:, start:stop].copy()


def consensus(pwm):
    """Most likely base of each column of a (4, w) matrix, as a string."""
    return "".join(ALPHABET[i] for i in _float64(pwm).argmax(0))


@dataclass
class ChannelMotifs:
    """Result of :func:`channel_pwms`.

    Attributes
    ----------
    channels: list of C channel indices.
    pwms: numpy (C, 4, w) probability matrices (w = filter width or receptive field length).
    method: ``"filter"`` or ``"ascent"``.
    start_pwms: numpy (C, T, 4, w): one matrix per gradient-ascent start, T = min(n_top, N)
        (ascent only); uniform for a start that is not ``informative``.
    optimized: numpy (C, T, 4, w): the raw optimised inputs (ascent only).
    fragments: pandas DataFrame, one row per start: ``slot`` (the position in ``channels``: a
        repeated channel has one block of rows per entry), ``channel``, ``rank``, ``seq_idx``,
        ``position`` (layer position), ``start`` (input position of the field), ``activation``
        (before) and ``activation_after`` (after the ascent), ``informative_before`` (the
        channel's activation has a gradient on the fragment: it counts in ``fragment_pwms``) and
        ``informative`` (on the fragment or at some step of the ascent: it counts in ``pwms``)
        (ascent only).
    receptive_field: dict (see :func:`receptive_field`), ascent only.
    settings: dict of the arguments that made it.
    fragment_pwms: numpy (C, 4, w): base frequencies of the (aligned) top-activating fragments
        themselves, before the ascent -- what the channel responds to in the data (ascent only;
        the ``informative_before`` fragments, uniform when there is none).
    """
    channels: list
    pwms: np.ndarray
    method: str
    start_pwms: np.ndarray | None = None
    optimized: np.ndarray | None = None
    fragments: pd.DataFrame | None = None
    receptive_field: dict | None = None
    settings: dict = field(default_factory=dict)
    fragment_pwms: np.ndarray | None = None

    def trimmed(self, min_ic=0.5):
        """List of C trimmed PWMs (see :func:`trim_pwm`)."""
        return [trim_pwm(p, min_ic) for p in self.pwms]


def channel_pwms(model, layer, channels, X=None, *, method="auto", n_top=10, n_steps=200,
                 lr=0.05, l2=0.05, threshold=0.2, align=True, attribute_to_layer_input=False,
                 batch_size=256, random_state=0, verbose=False):
    """A position probability matrix for each channel of ``layer``.

    Parameters
    ----------
    model, layer: the network and a submodule of it (e.g. ``model.pool``, ``model.conv2``).
    channels: int (also a 0-d integer tensor or array, e.g. ``ofiv.argmax()``) or sequence of C
        channel indices; a channel may be repeated (one row per entry).
    X: torch.Tensor (N, 4, L) one-hot sequences whose top-activating fragments start the ascent
        (required for ``"ascent"``; for ``"filter"`` only used to recognise the first layer).
    method: ``"filter"`` (first-layer channels: the filter weights), ``"ascent"`` (any layer: the
        paper's gradient ascent over the receptive field) or ``"auto"`` (filter where possible).
    n_top: starts per channel: the ``n_top`` (sequence, position) pairs of ``X`` with the highest
        activation of that channel (at most one per sequence).
    n_steps, lr: Adam steps and step size of the ascent; ``n_steps=0`` skips it (when only the
        ``fragment_pwms`` are wanted; ``pwms`` are then the thresholded fragments themselves).
    l2: weight of the l2 penalty on the optimised fragment (objective: activation - l2 * ||x||^2).
    threshold: relative threshold of the paper's heuristic (fraction of each fragment's maximum).
    align: shift each informative start's matrix onto the informative one with the highest
        final activation before averaging (a motif can sit anywhere inside a pooled receptive
        field); ``start_pwms`` are returned aligned.
    attribute_to_layer_input: use the layer's input instead of its output.
    batch_size: fragments optimised together.
    random_state: int seed (receptive-field probes).
    verbose: progress bar over the ascent.

    Returns
    -------
    :class:`ChannelMotifs`. ``pwms`` of the ascent are the mean of the ``informative`` starts'
    matrices; a RuntimeWarning names a channel that has none (it never responds to ``X``: its
    PWM is uniform).
    """
    from .motifs import filter_pwms

    _check_model_layer(model, layer)
    channels = _check_channels(channels)
    if method not in ("auto", "filter", "ascent"):
        raise ValueError("method must be 'auto', 'filter' or 'ascent'")
    for name, v, lo in (("n_top", n_top, 1), ("n_steps", n_steps, 0), ("batch_size", batch_size, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}")
    if not 0 <= threshold < 1:
        raise ValueError("threshold must be in [0, 1)")
    if X is not None:
        X = _check_X(X, model=model)  # in the model's float dtype (a float64 model too)
    device = _model_device(model)

    conv = None
    if method in ("auto", "filter"):
        if X is None:
            # the layer's *output* channels are its filters; its input (with
            # attribute_to_layer_input) is the one-hot sequence itself, not filters
            conv = (layer if (not attribute_to_layer_input and isinstance(layer, nn.Conv1d)
                              and layer.in_channels == 4) else None)
        else:
            conv = first_layer_conv(model, layer, X[:1].to(device), attribute_to_layer_input)
        if method == "filter" and conv is None:
            raise ValueError("method='filter' needs a layer whose channels are first-layer "
                             "convolution filters (give X so that they can be recognised)")
    if conv is not None:
        w = conv.weight.detach().cpu()
        if max(channels) >= w.shape[0]:
            raise ValueError(f"channel index out of range ({w.shape[0]} filters)")
        return ChannelMotifs(channels, filter_pwms(w[channels]), "filter",
                             settings=dict(method="filter"))

    if X is None:
        raise ValueError("method='ascent' needs sequences X to start from")
    rf = receptive_field(model, layer, X.shape[-1], attribute_to_layer_input,
                         random_state=random_state, X=X)
    k, stride, offset = rf["length"], rf["stride"], rf["offset"]
    L = X.shape[-1]

    # one swap of the layer for every activation batch and ascent step below; parameters
    # frozen so that the ascent leaves no .grad on the model
    with _preserved(model, freeze=True), ChannelSum(model, layer, [0], attribute_to_layer_input) as cs:
        # top activating (sequence, position) per channel, fields inside the sequence
        with torch.no_grad():
            acts = []
            for i in range(0, len(X), batch_size):
                acts.append(cs.layer_value(X[i:i + batch_size].to(device)).float().cpu())
            A = torch.cat(acts)  # (N, K, W)
        if max(channels) >= A.shape[1]:
            raise ValueError(f"channel index out of range ({A.shape[1]} channels)")
        W = A.shape[-1]
        pos = np.arange(W)
        ok = (offset + pos * stride >= 0) & (offset + pos * stride + k <= L)
        if not ok.any():
            raise ValueError(f"receptive field ({k} bp) does not fit in sequences of {L} bp")
        # one block of T = min(n_top, N) rows per entry of `channels`, in order (a repeated
        # channel gets a block of its own: blocks are told apart by `slot`, not by channel id)
        rows = []
        for slot, c in enumerate(channels):
            a = A[:, c].numpy().copy()
            a[:, ~ok] = -np.inf
            best_w = a.argmax(1)
            best = a[np.arange(len(a)), best_w]
            order = np.argsort(-best, kind="stable")[:n_top]
            for r, n in enumerate(order):
                rows.append((slot, c, r, int(n), int(best_w[n]), int(offset + best_w[n] * stride),
                             float(best[n])))
        frag = pd.DataFrame(rows, columns=["slot", "channel", "rank", "seq_idx", "position",
                                           "start", "activation"])

        # gradient ascent on each fragment, in its own sequence context. Whether the channel's
        # activation has any gradient on the window is tracked per start, at the fragment
        # itself and at every step: where it never has (a ReLU unit that is off throughout),
        # the ascent only shrinks the random fragment under the l2 penalty, and the start
        # says nothing about the channel
        opt_all, after, read0, read = [], [], [], []
        chunks = range(0, len(frag), batch_size)
        bar = (tqdm(total=len(chunks) * int(n_steps), disable=not verbose, unit="step",
                    desc=f"ascent on {len(frag)} fragments") if tqdm is not None else None)
        for i in chunks:
            f = frag.iloc[i:i + batch_size]
            base = X[torch.as_tensor(f["seq_idx"].values.copy())].to(device)  # model's dtype
            starts = torch.as_tensor(f["start"].values.copy(), device=device)
            cols = starts[:, None] + torch.arange(k, device=device)[None]
            ar = torch.arange(len(f), device=device)
            win = base[ar[:, None, None], torch.arange(4, device=device)[None, :, None],
                       cols[:, None, :]].clone().requires_grad_()
            ch = torch.as_tensor(f["channel"].values.copy(), device=device)
            wpos = torch.as_tensor(f["position"].values.copy(), device=device)
            opt = torch.optim.Adam([win], lr=lr)

            def activation(wv):
                x = base.clone()
                x[ar[:, None, None], torch.arange(4, device=device)[None, :, None],
                  cols[:, None, :]] = wv
                return cs.layer_value(x)[ar, ch, wpos]

            def activation_grad(wv):
                """The activation of each start and its gradient on the start's window."""
                a = activation(wv)
                g = (torch.autograd.grad(a.sum(), wv, allow_unused=True)[0]
                     if a.requires_grad else None)
                return a.detach(), (torch.zeros_like(wv) if g is None else g)

            def reads(g):
                return (g.float().flatten(1) != 0).any(1).cpu()

            w_ = win.detach().clone().requires_grad_()
            _, g = activation_grad(w_)
            read0.append(reads(g))
            seen = read0[-1].clone()
            for _ in range(int(n_steps)):
                opt.zero_grad()
                _, g = activation_grad(win)
                seen |= reads(g)
                # the gradient of -(activation - l2 * ||win||^2), the objective's, by hand
                win.grad = 2 * l2 * win.detach() - g
                opt.step()
                if bar is not None:
                    bar.update()
            w_ = win.detach().clone().requires_grad_()
            a, g = activation_grad(w_)
            read.append(seen | reads(g))
            after.append(a.float().cpu())
            opt_all.append(win.detach().float().cpu())
        if bar is not None:
            bar.close()
    optimized = torch.cat(opt_all).numpy()
    frag["activation_after"] = torch.cat(after).numpy()
    frag["informative_before"] = torch.cat(read0).numpy()
    frag["informative"] = torch.cat(read).numpy()
    C = len(channels)
    T = min(int(n_top), len(X))  # starts per entry of `channels` (rows are slot-major)
    optimized = optimized.reshape(C, T, 4, k)
    live = frag["informative"].values.reshape(C, T)
    live0 = frag["informative_before"].values.reshape(C, T)
    # a start the channel never reads is uniform, and left out of the channel's PWM
    start_pwms = _threshold_normalise(optimized, threshold)
    start_pwms[~live] = 0.25
    after_ = frag["activation_after"].values.reshape(C, T)
    # the fragments themselves (one-hot, before the ascent), aligned the same way: what the
    # channel responds to in the data (those it reads at all)
    # X is in the model's dtype (bfloat16 has no numpy twin) and may be on its GPU; one-hot
    # values are exact in any float dtype
    frag_oh = np.stack([X[n, :, st:st + k].float().cpu().numpy() for n, st in
                        zip(frag["seq_idx"].values, frag["start"].values)]).astype(np.float64)
    frag_oh = frag_oh.reshape(C, T, 4, k)
    act0 = frag["activation"].values.reshape(C, T)
    pwms, fragment_pwms = np.full((C, 4, k), 0.25), np.full((C, 4, k), 0.25)
    for i in range(C):
        for mats, keep, score, out in ((start_pwms, live, after_, pwms),
                                       (frag_oh, live0, act0, fragment_pwms)):
            idx = np.flatnonzero(keep[i])
            if len(idx) == 0:
                continue
            m = mats[i, idx]
            if align:
                m = _align(m, int(score[i, idx].argmax()))
                if mats is start_pwms:
                    start_pwms[i, idx] = m        # start_pwms are returned aligned
            out[i] = m.mean(0)
    silent = list(dict.fromkeys(c for c, lv in zip(channels, live) if not lv.any()))
    if silent:
        warnings.warn(
            f"channel_pwms: channel(s) {silent} never respond to the sequences X: no gradient "
            f"reaches the input from any of their {T} starts (the top-activating fragments), "
            "before or during the ascent (e.g. a ReLU unit that X never switches on). Their "
            "PWMs are uniform, not motifs; give sequences that activate them (column "
            "'informative' of .fragments says which starts count)", RuntimeWarning,
            stacklevel=_outside_stacklevel())
    settings = dict(method="ascent", n_top=n_top, n_steps=n_steps, lr=lr, l2=l2,
                    threshold=threshold, align=align, attribute_to_layer_input=attribute_to_layer_input,
                    random_state=random_state)
    return ChannelMotifs(channels, pwms, "ascent", start_pwms, optimized, frag, rf, settings,
                         fragment_pwms)


def channel_tomtom(pwms, targets=None, channel_names=None, min_ic=0.5, n_nearest=5, **kwargs):
    """TOMTOM each channel PWM against a motif database (JASPAR by default).

    Parameters
    ----------
    pwms: :class:`ChannelMotifs`, or a list / (C, 4, w) array of probability matrices, or one
        (4, w) matrix.
    targets: a :class:`deepresolve_captum.motifs.MotifSet` (default
        ``load_jaspar("JASPAR2016", "CORE", "vertebrates")``) or a list of matrices.
    channel_names: C labels (default: the channel indices of a ChannelMotifs, else 0..C-1).
    min_ic: trim each PWM to its informative core first (see :func:`trim_pwm`; None: no trim).
    n_nearest: best targets kept per channel (None: all).
    kwargs: passed to :func:`deepresolve_captum.motifs.tomtom`.

    Returns
    -------
    pandas DataFrame as :func:`deepresolve_captum.motifs.tomtom` (``query`` = channel label), plus
    ``consensus`` of the (trimmed) query and ``trim_start``, the column of the untrimmed PWM
    where the trimmed query begins: ``offset`` is relative to the trimmed query, so the target
    column that untrimmed column 0 lines up with is ``offset - trim_start``.
    """
    from .motifs import load_jaspar, tomtom

    if isinstance(pwms, ChannelMotifs):
        if channel_names is None:
            channel_names = list(pwms.channels)
        pwms = pwms.pwms
    # one (4, w) matrix, an (n, 4, w) array, a list of matrices (bf16 tensors too), as tomtom
    mats = _as_matrix_list(pwms)
    spans = [_informative_span(p, min_ic) if min_ic is not None else (0, p.shape[1]) for p in mats]
    mats = [p[:, a:b].copy() for p, (a, b) in zip(mats, spans)]
    if targets is None:
        targets = load_jaspar()
    df = tomtom(mats, targets, query_names=channel_names, n_nearest=n_nearest, _stacklevel=3,
                **kwargs)
    df["consensus"] = [consensus(mats[i]) for i in df["query_idx"]]
    df["trim_start"] = [spans[i][0] for i in df["query_idx"]]
    return df


def _plain_labels(labels):
    """A list of plain Python labels: a tensor or array of channel indices (or its 0-d
    elements) becomes ints, so that they compare equal to the ``channel`` column of a seqlets
    table (``tensor(30) == 30`` holds, a DataFrame column == tensor(30) does not)."""
    if hasattr(labels, "tolist") and not isinstance(labels, (str, bytes)):
        return list(labels.tolist()) if getattr(labels, "ndim", 1) else [labels.tolist()]
    return [x.item() if hasattr(x, "item") and not isinstance(x, (str, bytes)) else x
            for x in labels]


def channel_seqlets(attributions, channels=None, threshold=0.01, **kwargs):
    """Seqlets (stretches of high attribution) of each channel, via tangermeme.

    Parameters
    ----------
    attributions: torch.Tensor (C, N, 4, L), e.g. from
        :func:`deepresolve_captum.adapters.channel_attributions`.
    channels: C labels for the ``channel`` column (default 0..C-1).
    threshold: p-value threshold of ``tangermeme.seqlet.recursive_seqlets``.
    kwargs: passed to ``recursive_seqlets`` (``min_seqlet_len``, ``max_seqlet_len``, ...).

    Returns
    -------
    pandas DataFrame: tangermeme's seqlet columns (``example_idx``, ``start``, ``end``,
    ``attribution``, ``p-value``) plus ``channel``.
    """
    from tangermeme.seqlet import recursive_seqlets

    a = torch.as_tensor(attributions)
    if a.ndim != 4 or a.shape[2] != 4:
        raise ValueError(f"attributions must have shape (C, N, 4, L), got {tuple(a.shape)}")
    if channels is None:
        channels = list(range(a.shape[0]))
    else:
        channels = _plain_labels(channels)   # a tensor / array of indices: ints in the table
    if len(channels) != a.shape[0]:
        raise ValueError(f"{len(channels)} channel labels for {a.shape[0]} channels")
    out = []
    for c, label in enumerate(channels):
        df = recursive_seqlets(a[c].sum(1).float(), threshold=threshold, **kwargs)
        if not isinstance(df, pd.DataFrame):  # RecursiveSeqletsResult
            df = df.seqlets
        df = df.copy()
        df.insert(0, "channel", label)
        out.append(df)
    return pd.concat(out, ignore_index=True)
