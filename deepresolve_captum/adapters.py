"""Channel -> input attributions: what sequence does a DeepResolve channel see, and where.

DeepResolve ranks the channels of a layer (OFIV) and flags the non-additive ones; the functions here
explain each selected channel in input space. The quantity explained for channel ``c`` of sequence
``n`` is the **channel sum** ``S_c(x_n) = sum_w layer(x_n)[c, w]`` (the layer output, or its input
with ``attribute_to_layer_input=True``; a 2-d layer output ``(N, K)`` is used as is).

Backends
--------
* ``"tangermeme"`` (default): ``tangermeme.deep_lift_shap`` and ``tangermeme.saliency``. Its
  DeepLIFT rules are correct through max-pooling; global / adaptive max-pooling
  (``nn.AdaptiveMaxPool1d``, the ENCODE models' layer), which tangermeme 1.6 would silently treat
  as linear, gets the equivalent ``MaxPool1d`` rule here.
* ``"captum"``: ``captum.attr.NeuronDeepLift``, ``NeuronGradient`` and
  ``NeuronIntegratedGradients`` with a channel-sum ``neuron_selector``. Captum 0.9.0's DeepLIFT rule
  for MaxPool is wrong (captum issue #1276, and Captum also leaves the rule off the attributed layer
  itself), so ``method="deeplift"`` with this backend refuses models with a max-pool between the
  input and the channel (``captum_maxpool="error"``, the default) unless told
  ``captum_maxpool="allow"``, in which case the (non-additive) Captum result is returned as is.

All channels are batched: every sequence is repeated once per channel and each row is told which
channel it explains (a one-hot selector for tangermeme's ``args``, a per-row selector for Captum), so
one forward/backward pass serves many channels, and DeepLIFT needs no backward per channel.

Shapes: ``X`` is one-hot ``(N, 4, L)``; results are ``(n_channels, N, 4, L)``.
"""
from __future__ import annotations

import contextlib

import inspect
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ._modules import module_modes, restore_modes

try:  # tqdm is a dependency, but keep import failures readable
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

__all__ = [
    "channel_attributions",
    "channel_activations",
    "make_references",
    "ChannelSum",
    "METHODS",
    "BACKENDS",
]

METHODS = ("deeplift", "saliency", "grad_x_input", "integrated_gradients")
BACKENDS = ("tangermeme", "captum")
_METHOD_ALIASES = {
    "deeplift": "deeplift", "deep_lift": "deeplift", "deepliftshap": "deeplift",
    "deep_lift_shap": "deeplift", "deeplift_shap": "deeplift",
    "saliency": "saliency", "gradient": "saliency",
    "grad_x_input": "grad_x_input", "gradient_x_input": "grad_x_input",
    "input_x_gradient": "grad_x_input", "gradxinput": "grad_x_input",
    "integrated_gradients": "integrated_gradients", "ig": "integrated_gradients",
}
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d)


def _adaptive_maxpool1d_rule(module, grad_input, grad_output):
    """DeepLIFT rule for ``nn.AdaptiveMaxPool1d`` (e.g. global max pooling), which tangermeme 1.6
    has no rule for (it would be treated as linear, silently breaking additivity): when the
    output size divides the length, the module is a ``MaxPool1d(L // o)`` and gets that rule."""
    from tangermeme.deep_lift_shap import _maxpool

    L = module.input.shape[-1]
    o = module.output_size
    o = o[0] if isinstance(o, (tuple, list)) else o
    o = L if o is None else int(o)
    if L % o:
        raise ValueError(f"DeepLIFT through AdaptiveMaxPool1d needs the output size ({o}) to "
                         f"divide the length ({L})")
    shim = nn.MaxPool1d(L // o, L // o)
    shim.input, shim.output = module.input, module.output
    return _maxpool(shim, grad_input, grad_output)


_TANGERMEME_EXTRA_OPS = {nn.AdaptiveMaxPool1d: _adaptive_maxpool1d_rule}

# The modules Captum 0.9.0's DeepLift replaces the gradient of (its own list is private). Its
# hooks keep one input/output per module, so a module called twice in a forward pass breaks it.
_CAPTUM_DEEPLIFT_NONLINEAR = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
                              nn.Softmax, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)

# A DeepLIFT attribution is flagged when its sum misses the output change by more than this
# fraction of the largest output change (or channel value) in the call.
ADDITIVITY_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------------------------
# validation and model-state helpers
# ----------------------------------------------------------------------------------------------

def _check_one_input(model):
    """Refuse, before any work, a model whose forward needs more than the sequences: these
    functions call ``model(x)`` only (as tangermeme's do)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read (e.g. some compiled modules)
        return
    needed = [p.name for p in params[1:] if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if params and params[0].kind in (params[0].VAR_POSITIONAL, params[0].VAR_KEYWORD):
        needed = []
    if needed:
        raise TypeError(
            f"{type(model).__name__}.forward needs {', '.join(needed)} besides the sequences, "
            "and this function calls model(x) only. LayerFeatureOptimizer takes "
            "additional_forward_args; here, pass a wrapper nn.Module whose forward(x) supplies "
            "them, e.g. forward(self, x): return self.model(x, self.covariate). Give the "
            "wrapper the same covariate for every sequence, or run one call per group.")


def _check_model_layer(model, layer):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_one_input(model)
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be a torch.nn.Module (a submodule of model), got "
                        f"{type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError("layer is not a submodule of model")


def _model_float_dtype(model):
    """The dtype of the model's first floating-point parameter, else of its first floating-point
    buffer (a fixed PWM scanner), else None."""
    return next((t.dtype for t in (*model.parameters(), *model.buffers())
                 if t.is_floating_point()), None)


def _check_X(X, name="X", model=None):
    """Validate one-hot sequences (N, 4, L); cast them to float, or to ``model``'s float dtype."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 4, L), got {type(X).__name__}")
    if X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4, L) (one-hot DNA), got {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} holds no sequences")
    dtype = _model_float_dtype(model) if model is not None else None
    if dtype is not None and X.dtype != dtype:
        X = X.to(dtype)
    elif not torch.is_floating_point(X):
        X = X.float()
    return X


def _check_channels(channels):
    """Channel indices as a list of int: an int, a 0-d integer tensor or array (one channel:
    what ``ofiv.argmax()`` returns) or a 1-d sequence / array / tensor of them."""
    if isinstance(channels, (int, np.integer)):
        channels = [int(channels)]
    if isinstance(channels, torch.Tensor):
        channels = channels.detach().cpu().numpy()
    ch = np.asarray(channels)
    if ch.ndim == 0:        # one channel; its dtype is checked below
        ch = ch.reshape(1)
    if ch.ndim != 1 or ch.size == 0:
        raise ValueError("channels must be a non-empty 1-d sequence of channel indices")
    if ch.dtype == bool:
        raise TypeError("channels must be indices, not a boolean mask (use np.flatnonzero(mask))")
    if not np.issubdtype(ch.dtype, np.integer):
        raise TypeError(f"channels must be integers, got dtype {ch.dtype}")
    if (ch < 0).any():
        raise ValueError(f"channels must be indices >= 0 (no wrap-around from the end), got "
                         f"{ch[ch < 0].tolist()}")
    return [int(c) for c in ch]


def _model_device(model, default=torch.device("cpu")):
    """The device of the model's first parameter, else of its first buffer, else ``default``."""
    t = next(iter(model.parameters()), None)
    t = t if t is not None else next(iter(model.buffers()), None)
    return t.device if t is not None else default


#: What Captum's DeepLift stores on every nonlinearity it hooks and deletes only in that
#: module's backward pass: modules no backward reaches keep the last batch's activations.
CAPTUM_LEFTOVERS = ("input", "output", "input_ref")


@contextmanager
def _preserved(model, freeze=False, drop_added=()):
    """Run with the model in eval mode (and, with ``freeze``, its parameters not requiring
    grad); restore every module's mode and every parameter's requires_grad exactly as found,
    whatever happens. ``drop_added``: attribute names removed from a module if the call added
    them (``CAPTUM_LEFTOVERS`` around Captum's DeepLift); any other attribute a model sets
    (a cached attention map, a once-only init flag) is left alone."""
    modes = module_modes(model)
    grads = [(p, p.requires_grad) for p in model.parameters()]
    attrs = [(m, set(m.__dict__)) for m, _ in modes] if drop_added else []
    try:
        model.eval()
        if freeze:
            for p, _ in grads:
                p.requires_grad_(False)
        yield
    finally:
        for p, g in grads:
            p.requires_grad_(g)
        for m, keys in attrs:
            for k in drop_added:
                if k in m.__dict__ and k not in keys:
                    del m.__dict__[k]
        # last: through train() (a module overriding it gets its own mode back; one that raises
        # is warned about and its flags are set directly)
        restore_modes(modes)


@contextmanager
def _out_of_place(model):
    """Run with every module that has a boolean ``inplace`` flag (nn.ReLU(inplace=True), ...)
    computing out of place, flags restored whatever happens. The same values; tangermeme's
    DeepLIFT hooks fail on an in-place op ("Output 0 of BackwardHookFunction is a view and is
    being modified inplace")."""
    flipped = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for m in flipped:
            m.inplace = False
        yield
    finally:
        for m in flipped:
            m.inplace = True


class _StopForward(Exception):
    """Raised by the layer hook to end the forward pass once the layer's value is captured."""


class _Recorder(nn.Module):
    """Stands in for ``layer`` inside the model during a call: runs it through its own
    ``__call__`` (so hooks attached to it by DeepLIFT implementations fire and wrap its output),
    keeps its output (or input) and stops the forward pass there."""

    def __init__(self, inner, owner):
        super().__init__()
        self.inner = inner
        self._owner = [owner]  # a list, so that the owner is not registered as a submodule

    def forward(self, *args, **kwargs):
        owner = self._owner[0]
        if owner.attribute_to_layer_input:
            value = args[0]
        else:
            value = self.inner(*args, **kwargs)
        owner._value = value
        raise _StopForward


class ChannelSum(nn.Module):
    """The model truncated at ``layer``, returning per-channel sums; used inside a ``with``
    block::

        with ChannelSum(model, layer, channels) as cs:
            sums = cs(x)                # (B, n_channels)
            picked = cs(x, selector)    # (B, 1)

    ``cs(x)``: for each selected channel the sum over positions of the layer output (or input).
    ``cs(x, selector)`` with a selector of shape ``(B, n_channels)`` returns ``(B, 1)`` =
    ``sum_j selector[:, j] * sums[:, j]`` -- the form tangermeme needs to attribute a different
    channel in every row with a single ``target``.

    While the block is open, ``layer`` is swapped in its parent(s) for a recorder that stops the
    forward pass after the layer; calling ``cs`` outside it raises RuntimeError. On exit the
    model's structure is restored exactly. The model's weights are shared, never copied.

    Parameters
    ----------
    model: nn.Module returning anything; only the part up to ``layer`` is run.
    layer: nn.Module, a submodule of ``model``; the first call of it in a forward pass is used.
    channels: list of int, the channels to sum (indices along axis 1 of the layer output).
    attribute_to_layer_input: use the layer's first input instead of its output.
    """

    def __init__(self, model, layer, channels, attribute_to_layer_input=False):
        super().__init__()
        _check_model_layer(model, layer)
        self.model = model
        self.channels = list(channels)
        self.attribute_to_layer_input = bool(attribute_to_layer_input)
        self._value = None
        self._layer = [layer]
        self._swapped = []

    # -- swapping the layer in and out of the model --------------------------------------------
    def __enter__(self):
        layer = self._layer[0]
        rec = _Recorder(layer, self)
        for name, parent in self.model.named_modules(remove_duplicate=False):
            for key, child in list(parent._modules.items()):
                if child is layer:
                    self._swapped.append((parent, key))
        if not self._swapped:
            if layer is self.model:
                raise ValueError("layer must be a proper submodule of model, not model itself")
            raise ValueError("layer is not a submodule of model")
        try:
            for parent, key in self._swapped:
                parent._modules[key] = rec
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        layer = self._layer[0]
        for parent, key in self._swapped:
            parent._modules[key] = layer
        self._swapped = []
        return False

    def layer_value(self, x):
        """Run the model on ``x`` up to the layer; returns the layer output (or input)."""
        if not self._swapped:
            raise RuntimeError("ChannelSum must be used inside a `with` block")
        self._value = None
        with contextlib.suppress(_StopForward):
            self.model(x)
        value = self._value
        self._value = None
        if value is None:
            raise RuntimeError("the forward pass of model never reached layer")
        if isinstance(value, (tuple, list)):
            value = value[0]
        return value

    def sums(self, x):
        """(B, n_channels): per-channel sums over positions of the layer value."""
        v = self.layer_value(x)
        if v.ndim < 2:
            raise ValueError(f"layer value must be at least 2-d (B, K, ...), got {tuple(v.shape)}")
        if max(self.channels) >= v.shape[1] or min(self.channels) < -v.shape[1]:
            raise ValueError(f"channel index out of range for a layer with {v.shape[1]} channels")
        v = v[:, self.channels]
        return v.reshape(v.shape[0], v.shape[1], -1).sum(-1)

    def forward(self, x, selector=None):
        s = self.sums(x)
        if selector is None:
            return s
        return (s * selector.to(s.dtype)).sum(1, keepdim=True)


def channel_activations(model, layer, X, channels=None, *, attribute_to_layer_input=False,
                        reduce="sum", batch_size=256):
    """Per-channel activations of ``layer`` for sequences ``X``, model left as found.

    Parameters
    ----------
    model, layer: the network and one of its submodules.
    X: torch.Tensor (N, 4, L), one-hot sequences.
    channels: channel indices (an int, a 0-d integer tensor or array such as ``ofiv.argmax()``,
        or a sequence of them), or None (all channels).
    attribute_to_layer_input: use the layer's input instead of its output.
    reduce: ``"sum"`` -> (N, n_channels) channel sums over positions (what
        :func:`channel_attributions` explains); ``None`` -> the raw layer values (N, n_channels, W).
    batch_size: sequences per forward pass.

    Returns
    -------
    torch.Tensor, (N, n_channels) or (N, n_channels, W), float, on the CPU.
    """
    _check_model_layer(model, layer)
    X = _check_X(X, model=model)
    if reduce not in ("sum", None):
        raise ValueError("reduce must be 'sum' or None")
    device = _model_device(model)
    out = []
    with _preserved(model), torch.no_grad():
        all_ch = channels is None
        cs = ChannelSum(model, layer, [0] if all_ch else _check_channels(channels),
                        attribute_to_layer_input)
        with cs:
            for i in range(0, len(X), batch_size):
                xb = X[i:i + batch_size].to(device)
                if reduce == "sum" and not all_ch:
                    out.append(cs.sums(xb).float().cpu())
                    continue
                v = cs.layer_value(xb)
                if not all_ch:
                    if max(cs.channels) >= v.shape[1]:
                        raise ValueError(f"channel index out of range for a layer with "
                                         f"{v.shape[1]} channels: {cs.channels}")
                    v = v[:, cs.channels]
                if reduce == "sum":
                    v = v.reshape(v.shape[0], v.shape[1], -1).sum(-1)
                out.append(v.float().cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------

def _unknown_positions(X):
    """(N, L) bool: positions of one-hot X (N, 4, L) that are all zero (N bases)."""
    return X.sum(1) == 0


def _describe_unknown(unknown):
    n_seq = int(unknown.any(1).sum())
    i, j = (int(v) for v in torch.nonzero(unknown)[0])
    return f"{int(unknown.sum())} in {n_seq} sequence(s), the first at sequence {i}, position {j}"


def make_references(X, references="shuffle", n_shuffles=20, random_state=0):
    """Reference sequences for DeepLIFT / integrated gradients.

    Parameters
    ----------
    X: torch.Tensor (N, 4, L), one-hot.
    references: ``"shuffle"`` (dinucleotide shuffles of each sequence, tangermeme's
        ``dinucleotide_shuffle``), ``"zeros"``, ``"uniform"`` (0.25 everywhere), or a tensor (or
        numpy array) of shape (N, R, 4, L) or (N, 4, L) (R = 1).
    n_shuffles: R for ``"shuffle"``.
    random_state: int seed of the shuffles (reference k of every sequence uses seed
        ``random_state + k``, as in tangermeme).

    Returns
    -------
    torch.Tensor (N, R, 4, L), float32.
    """
    X = _check_X(X)
    N, _, L = X.shape
    if isinstance(references, np.ndarray):
        references = torch.from_numpy(references)
    if isinstance(references, torch.Tensor):
        R = references
        if R.ndim == 3:
            R = R[:, None]
        if R.ndim != 4 or R.shape[0] != N or tuple(R.shape[2:]) != (4, L):
            raise ValueError(f"references must have shape (N, R, 4, L) = ({N}, R, 4, {L}) or "
                             f"(N, 4, L), got {tuple(references.shape)}")
        return R.float()
    if references == "shuffle":
        if not isinstance(n_shuffles, (int, np.integer)) or n_shuffles < 1:
            raise ValueError("n_shuffles must be a positive int")
        unknown = _unknown_positions(X)
        if unknown.any():
            raise ValueError(
                f"X has N (all-zero) positions ({_describe_unknown(unknown)}), and dinucleotide "
                "shuffles (tangermeme) need ACGT sequences. Use references='zeros' (N positions "
                "then get zero attribution and the sums still add up), pass your own reference "
                "tensor that is zero wherever X is N, or drop those sequences.")
        from tangermeme.ersatz import dinucleotide_shuffle
        rs = 0 if random_state is None else int(random_state)
        R = torch.stack([dinucleotide_shuffle(X.cpu(), n=1, random_state=rs + k)[:, 0]
                         for k in range(int(n_shuffles))], dim=1)
        return R.float()
    if references == "zeros":
        return torch.zeros(N, 1, 4, L)
    if references == "uniform":
        return torch.full((N, 1, 4, L), 0.25)
    raise ValueError("references must be 'shuffle', 'zeros', 'uniform' or a tensor, got "
                     f"{references!r}")


# ----------------------------------------------------------------------------------------------
# the main entry point
# ----------------------------------------------------------------------------------------------

def _module_calls(model, types, run):
    """{module: calls} for the modules of ``model`` of the given types that ``run()`` calls
    (forward hooks, removed whatever happens; under no_grad)."""
    calls, handles = {}, []

    def hook(m, i, o):
        calls[m] = calls.get(m, 0) + 1

    for m in model.modules():
        if isinstance(m, types):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return calls


def _maxpools_on_path(model, layer, X1, attribute_to_layer_input):
    """Max-pool modules run between the input and the layer's output (input)."""
    def up_to_layer():
        with ChannelSum(model, layer, [0], attribute_to_layer_input) as cs:
            cs.layer_value(X1)

    return list(_module_calls(model, _MAXPOOLS, up_to_layer))


def _reused_nonlinearities(model, X1):
    """Names of the modules Captum's DeepLift hooks that one full forward pass calls twice."""
    names = {m: n for n, m in model.named_modules()}
    calls = _module_calls(model, _CAPTUM_DEEPLIFT_NONLINEAR, lambda: model(X1))
    return [f"{names.get(m, '?')} ({type(m).__name__}, {k} calls)" for m, k in calls.items()
            if k > 1]


def _additivity_error(model, layer, channels, X, refs, attr, hypothetical, to_input):
    """DeepLIFT's summation-to-delta, checked: returns (largest |sum(attr) - delta|, the scale it
    is judged against). delta[c, n] = S_c(X[n]) - mean_r S_c(refs[n, r]), S = channel sums."""
    N, R = refs.shape[:2]
    contrib = attr * X.to(attr.dtype)[None] if hypothetical else attr
    sums = contrib.double().sum((2, 3))                                      # (C, N)
    s_x = channel_activations(model, layer, X, channels,
                              attribute_to_layer_input=to_input).double()   # (N, C)
    s_ref = channel_activations(model, layer, refs.reshape(N * R, *refs.shape[2:]), channels,
                                attribute_to_layer_input=to_input).double()
    delta = (s_x - s_ref.reshape(N, R, -1).mean(1)).T                        # (C, N)
    err = float((sums - delta).abs().max())
    # judged against the change explained; |S(x)| only as rounding room (float32 sums of large
    # activations), so that a large constant offset in the channel cannot hide a real miss
    scale = max(float(delta.abs().max()), 1e-2 * float(s_x.abs().max()))
    return err, scale


def _project(mult, x, ref, hypothetical):
    """DeepLIFT multipliers -> contributions, as tangermeme does for one-hot input.

    mult, x, ref: (B, 4, L). Returns (B, 4, L): hypothetical contributions (each base as if it were
    there) or, if not hypothetical, the contribution of each position put on its observed base."""
    hyp = torch.stack([((torch.eye(4, dtype=x.dtype)[b][:, None] - ref) * mult).sum(1)
                       for b in range(4)], dim=1)
    return hyp if hypothetical else hyp * x


def channel_attributions(model, layer, channels, X, method="deeplift", backend="tangermeme", *,
                         references="shuffle", n_shuffles=20, n_steps=50,
                         attribute_to_layer_input=False, hypothetical=False,
                         gradient_correction=False, captum_maxpool="error", batch_size=128,
                         random_state=0, return_references=False, check_additivity=True,
                         verbose=False):
    """Attribute the channel sums of ``layer`` to every input base.

    One call explains several channels (e.g. the top-OFIV or the non-additive channels of a
    DeepResolve summary) on several sequences.

    Parameters
    ----------
    model: nn.Module, (N, 4, L) -> anything; only the part up to ``layer`` is used. Nonlinearities
        must be modules (``nn.ReLU``), not ``F.relu``, for DeepLIFT to see them.
    layer: nn.Module, a submodule of ``model`` (e.g. ``model.pool``).
    channels: int (also a 0-d integer tensor or array, e.g. ``ofiv.argmax()``) or sequence of C
        channel indices (axis 1 of the layer output).
    X: torch.Tensor (N, 4, L), one-hot sequences; all-zero columns (N bases) are allowed with
        references that are zero there (``"zeros"``; dinucleotide shuffles need ACGT), and get
        zero attribution.
    method: ``"deeplift"`` (DeepLIFT / DeepLiftShap averaged over the references),
        ``"saliency"`` (signed gradient of the channel sum), ``"grad_x_input"`` (gradient x input),
        ``"integrated_gradients"`` (averaged over the references; Captum backend only).
    backend: ``"tangermeme"`` (default; DeepLIFT correct through max-pooling) or ``"captum"``.
    references: ``"shuffle"`` (default, dinucleotide shuffles), ``"zeros"``, ``"uniform"`` or a
        tensor (N, R, 4, L); used by deeplift and integrated gradients (see :func:`make_references`).
    n_shuffles: R, number of dinucleotide shuffles per sequence.
    n_steps: integration steps for integrated gradients.
    attribute_to_layer_input: explain the sums of the layer's input instead of its output.
    hypothetical: deeplift/IG only: return hypothetical contributions (all 4 bases) instead of the
        contribution of each position placed on its observed base. Base b at a position gets
        ``sum_k (e_b - ref)_k * m_k`` there, with m DeepLIFT's multipliers or, for IG, the
        gradients averaged along the path from the reference (so on a linear layer IG and
        DeepLIFT agree); ``attr * X`` is the non-hypothetical result.
    gradient_correction: saliency / grad_x_input: subtract the mean gradient over the 4 bases at
        each position first (Majdandzic et al. 2023), as tangermeme's default does. Default False:
        the raw signed gradient.
    captum_maxpool: ``"error"`` (default) refuses Captum DeepLIFT through a max-pool (wrong in
        Captum 0.9.0, issue #1276); ``"allow"`` returns Captum's result anyway.
    batch_size: rows (sequence x channel x reference pairs) per forward/backward pass.
        Memory: beside the result (C x N x 4 x L) and the references (N x R x 4 x L), a call
        holds one batch's temporaries, not C x N x R rows: Captum's rows are averaged over the
        references as each (channel, sequence) pair's R rows are done, and tangermeme is called
        on chunks of rows whose references take about 64 MiB (``_TANGERMEME_CHUNK_BYTES``).
        Neither changes the result (bit-identical to one pass over all rows in our tests).
    random_state: int, seed of the dinucleotide shuffles.
    return_references: also return the references used, (N, R, 4, L) (None for the gradient
        methods, which use none).
    check_additivity: deeplift only: check DeepLIFT's summation-to-delta (each ``attr[c, n]`` sums
        to ``S_c(X[n]) - mean_r S_c(ref[n, r])``) with one extra forward pass over the references,
        and warn (``RuntimeWarning``) when the largest miss exceeds ``ADDITIVITY_TOLERANCE``
        (0.1%) of the largest output change or channel value. A miss means a rule is wrong or
        missing: a functional nonlinearity (``F.relu``), an operation DeepLIFT has no rule for,
        or Captum's max-pool bug.
    verbose: show a progress bar.

    Returns
    -------
    attr: torch.Tensor (C, N, 4, L), float32, CPU. For deeplift and integrated gradients,
        ``attr[c, n].sum()`` (with ``hypothetical``: ``(attr[c, n] * X[n]).sum()``) approximates
        ``S_c(X[n]) - mean_r S_c(ref[n, r])`` (DeepLIFT: exactly, up to float error, when the
        rules are correct); see :func:`channel_activations` for ``S``.
    references: torch.Tensor (N, R, 4, L), only with ``return_references=True``; None for the
        gradient methods (``"saliency"``, ``"grad_x_input"``), which use no references.
    """
    _check_model_layer(model, layer)
    X = _check_X(X, model=model)
    channels = _check_channels(channels)
    if not isinstance(method, str) or method.lower() not in _METHOD_ALIASES:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    method = _METHOD_ALIASES[method.lower()]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if captum_maxpool not in ("error", "allow"):
        raise ValueError("captum_maxpool must be 'error' or 'allow'")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError("batch_size must be a positive int")
    if method == "integrated_gradients" and backend == "tangermeme":
        raise ValueError("tangermeme has no integrated gradients; use backend='captum'")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError("n_steps must be a positive int")

    uses_refs = method in ("deeplift", "integrated_gradients")
    refs = make_references(X, references, n_shuffles, random_state) if uses_refs else None
    unknown = _unknown_positions(X)                              # (N, L)
    if uses_refs and bool(((refs.sum(2) != 0) & unknown[:, None, :]).any()):
        raise ValueError(
            f"X has N (all-zero) positions ({_describe_unknown(unknown)}) where the references "
            "are not zero: the attributions keep only each position's observed base, so an N "
            "position's share of the output change would be lost and the sums would not add "
            "up. Use references='zeros' or references that are zero wherever X is N.")

    device = _model_device(model)
    with _preserved(model, drop_added=CAPTUM_LEFTOVERS):
        # bounds check of the channel indices, and the max-pool guard, on one sequence
        with torch.no_grad(), ChannelSum(model, layer, channels, attribute_to_layer_input) as cs:
            cs.sums(X[:1].to(device))
        if method == "deeplift":
            pools = _maxpools_on_path(model, layer, X[:1].to(device), attribute_to_layer_input)
            bad = [p for p in pools if isinstance(p, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d))]
            if backend == "tangermeme" and bad:
                raise ValueError("DeepLIFT through AdaptiveMaxPool2d/3d has no rule here; use "
                                 "an equivalent MaxPool2d/3d")
        if backend == "captum" and method == "deeplift":
            reused = _reused_nonlinearities(model, X[:1].to(device))
            if reused:
                raise ValueError(
                    "Captum's DeepLift keeps one input and output per nonlinearity module, so a "
                    "module called more than once in the forward pass breaks it (shape errors "
                    f"or wrong multipliers). Called more than once: {', '.join(reused)}. Use "
                    "backend='tangermeme' (it runs the model only up to the layer), or give the "
                    "model one module per use.")
            if pools and captum_maxpool == "error":
                raise ValueError(
                    "Captum 0.9.0's DeepLift is wrong through max-pooling (captum issue #1276: the "
                    "MaxPool rule indexes grad_input[0]; measured additivity errors are larger "
                    "than the output change), and it has no rule at all for adaptive (global) "
                    f"max-pooling. The path to this layer contains {len(pools)} max-pool "
                    "module(s). Use backend='tangermeme' (correct), or pass "
                    "captum_maxpool='allow' to get Captum's result anyway.")
        if backend == "tangermeme":
            changed = _overriding_subclasses(model) if method == "deeplift" else []
            if changed:   # the rule is for the base's elementwise function, not this forward
                warnings.warn(
                    f"{', '.join(changed)} subclass a nonlinearity but override forward: "
                    "DeepLIFT gives them their base class's rule, which is right only if "
                    "forward still applies that function value by value. If it does not, "
                    "the attributions are wrong even where they add up.",
                    UserWarning, stacklevel=2)
            attr = _tangermeme(model, layer, channels, X, refs, method, attribute_to_layer_input,
                               hypothetical, gradient_correction, batch_size, device, verbose,
                               has_n=bool(unknown.any()))
        else:
            attr = _captum(model, layer, channels, X, refs, method, attribute_to_layer_input,
                           hypothetical, gradient_correction, batch_size, n_steps, device,
                           verbose)
        if method == "deeplift" and check_additivity:
            err, scale = _additivity_error(model, layer, channels, X, refs, attr, hypothetical,
                                           attribute_to_layer_input)
            if not err <= ADDITIVITY_TOLERANCE * scale + 1e-6:
                warnings.warn(
                    f"DeepLIFT attributions ({backend} backend) do not add up: the largest miss "
                    f"between an attribution's sum and its output change is {err:.3g}, against "
                    f"output changes up to {scale:.3g}. Some operation on the "
                    "path to the layer has no correct DeepLIFT rule here: a functional "
                    "nonlinearity (F.relu, torch.sigmoid; use nn.ReLU modules), an unsupported "
                    "operation"
                    + (", or Captum's max-pool rule (captum#1276)" if backend == "captum" else "")
                    + _captum_subclass_note(model, backend)
                    + ". The attributions are not reliable.", RuntimeWarning, stacklevel=2)
    attr = attr.float()
    if return_references:
        return attr, refs
    return attr


def _captum_subclass_note(model, backend):
    """For the additivity warning: Captum 0.9.0 picks a DeepLIFT rule by ``type(module)``, so a
    subclass of a nonlinearity (``class MyReLU(nn.ReLU)``) is treated as linear there; name
    such modules (tangermeme's backend gives them their base class's rule)."""
    if backend != "captum":
        return ""
    subs = sorted({type(m).__name__ for m in model.modules()
                   if isinstance(m, _CAPTUM_DEEPLIFT_NONLINEAR)
                   and type(m) not in _CAPTUM_DEEPLIFT_NONLINEAR})
    if not subs:
        return ""
    return (f". This model has subclasses of nonlinearities ({', '.join(subs)}), which Captum's "
            "DeepLift looks up by exact type and treats as linear; backend='tangermeme' gives "
            "them their base class's rule")


def _ruled_bases(model):
    """(tangermeme's rule table with ours, {class in ``model`` without a rule of its own: its
    nearest base in the MRO that has one}), e.g. ``class MyReLU(nn.ReLU)`` -> ``nn.ReLU``."""
    import tangermeme.deep_lift_shap as tdls

    table = tdls._build_nonlinear_ops(_TANGERMEME_EXTRA_OPS)
    bases = {}
    for t in {type(m) for m in model.modules()} - set(table):
        base = next((b for b in t.__mro__[1:] if b in table), None)
        if base is not None:
            bases[t] = base
    return table, bases


def _overriding_subclasses(model):
    """Names of the module classes in ``model`` that tangermeme's backend gives their base
    class's DeepLIFT rule (see :func:`_tangermeme_rules`) although they override ``forward``."""
    _, bases = _ruled_bases(model)
    return sorted(t.__name__ for t, base in bases.items() if t.forward is not base.forward)


def _selector_rows(C, N):
    """Row layout shared by both backends: row = c * N + n."""
    ch_pos = torch.arange(C).repeat_interleave(N)
    seq = torch.arange(N).repeat(C)
    return ch_pos, seq


def _tangermeme_rules(model):
    """``additional_nonlinear_ops`` for tangermeme, built for this call: ours
    (``_TANGERMEME_EXTRA_OPS``) plus, for every module class in ``model`` that is a subclass of
    a class with a rule but has none of its own (``class MyReLU(nn.ReLU)``), the rule of its
    nearest base in the MRO. tangermeme 1.6 hooks a module when ``isinstance(module, ops)`` but
    looks its rule up by ``type(module)``, so such a subclass would otherwise raise a bare
    ``KeyError`` inside the backward pass. A fresh dict: tangermeme's tables and the model are
    not touched."""
    table, bases = _ruled_bases(model)
    return {**_TANGERMEME_EXTRA_OPS, **{t: table[base] for t, base in bases.items()}}


#: Budget for the references of one tangermeme call (rows x R x 4 x L values): the rows
#: (channel x sequence) are attributed in chunks of about this size, so that neither the
#: per-row references nor tangermeme's per-row buffers grow with C x N x R.
_TANGERMEME_CHUNK_BYTES = 64 * 2 ** 20


def _row_chunks(n_rows, R, batch_size, row_bytes, budget=None):
    """[(start, stop)] of rows, each chunk's R references within ``budget`` bytes (at least one
    row). The chunk length is a multiple of ``batch_size / gcd(R, batch_size)`` where that fits,
    so each chunk's (row, reference) pairs fill whole batches of ``batch_size``: every batch is
    the same as in one unchunked call, and the result is too, to the bit. Where whole batches do
    not fit in the budget (long sequences: L = 20,000 with R = 20 and batch 128), chunks are
    ``cap`` rows and the batches split otherwise: results then differ from one call by float
    rounding (2.3e-10 there, review r2)."""
    import math

    budget = _TANGERMEME_CHUNK_BYTES if budget is None else budget
    cap = max(1, budget // max(1, R * row_bytes))          # rows whose references fit
    unit = batch_size // math.gcd(R, batch_size)           # rows that fill whole batches
    k = unit * (cap // unit) if unit <= cap else cap
    return [(r0, min(n_rows, r0 + k)) for r0 in range(0, n_rows, k)]


def _tangermeme(model, layer, channels, X, refs, method, to_input, hypothetical, gc, batch_size,
                device, verbose, has_n=False):
    import tangermeme.deep_lift_shap as tdls
    import tangermeme.saliency as tsal

    C, N = len(channels), len(X)
    ch_pos, seq = _selector_rows(C, N)
    n_rows = C * N
    kw, is_onehot = {}, False
    if method == "deeplift":
        R = refs.shape[1]
        is_onehot = bool(((refs == 0) | (refs == 1)).all() and (refs.sum(2) <= 1).all())
        if not is_onehot:  # 'uniform' or soft references: tangermeme takes them from a callable
            ref0 = refs[0, 0]
            if not bool((refs == ref0).all()):
                raise ValueError("tangermeme backend: references that are not one-hot "
                                 "must be the same for every sequence ('zeros' or "
                                 "'uniform'); use backend='captum' otherwise")
            kw = dict(references=lambda x, n=1, random_state=None:
                      ref0.expand(len(x), n, *ref0.shape).clone(),
                      n_shuffles=R)
    else:
        R = 1
    chunks = _row_chunks(n_rows, R, batch_size,
                         X[0].numel() * (refs if refs is not None else X).element_size())
    out = None
    bar = (tqdm(total=n_rows, disable=not verbose) if tqdm is not None and len(chunks) > 1
           else contextlib.nullcontext())
    with ChannelSum(model, layer, channels, to_input) as cs, _out_of_place(model), bar:
        cs.eval()
        inner_verbose = verbose and len(chunks) == 1
        rules = _tangermeme_rules(cs) if method == "deeplift" else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Convergence deltas.*")
            # N (all-zero) columns: tangermeme refuses them unless only_warn; the references
            # are zero there (checked by the caller), so DeepLIFT stays exact
            warnings.filterwarnings("ignore", message=".*one-hot encoded.*")
            for r0, r1 in chunks:
                X_rows = X[seq[r0:r1]].cpu()
                sel = torch.nn.functional.one_hot(ch_pos[r0:r1], C).float()
                if method == "deeplift":
                    if is_onehot:   # this chunk's rows' references, not all C x N rows'
                        kw = dict(references=refs[seq[r0:r1]])
                    a = tdls.deep_lift_shap(cs, X_rows, args=(sel,), target=0,
                                            batch_size=batch_size, hypothetical=hypothetical,
                                            warning_threshold=np.inf, device=device,
                                            additional_nonlinear_ops=rules,
                                            only_warn=has_n,
                                            verbose=inner_verbose, **kw)
                else:
                    a = tsal.saliency(cs, X_rows, args=(sel,), target=0, batch_size=batch_size,
                                      hypothetical=(method == "saliency"),
                                      gradient_correction=gc, device=device,
                                      verbose=inner_verbose)
                if out is None:    # the backend's dtype (the model's), as one call gave
                    out = torch.empty(n_rows, *a.shape[1:], dtype=a.dtype)
                out[r0:r1] = a
                del a, X_rows, sel
                if len(chunks) > 1 and tqdm is not None:
                    bar.update(r1 - r0)
    return out.reshape(C, N, *X.shape[1:])


def _captum(model, layer, channels, X, refs, method, to_input, hypothetical, gc, batch_size,
            n_steps, device, verbose):
    from captum.attr import NeuronDeepLift, NeuronGradient, NeuronIntegratedGradients

    C, N = len(channels), len(X)
    ch_pos, seq = _selector_rows(C, N)
    ch_idx = torch.tensor(channels)[ch_pos]
    R = refs.shape[1] if refs is not None else 1
    # rows: (channel, sequence, reference), reference fastest
    rows_ch = ch_idx.repeat_interleave(R)
    rows_seq = seq.repeat_interleave(R)
    rows_ref = torch.arange(R).repeat(C * N)
    n_rows = len(rows_ch)
    # the mean over the R references is taken as each (channel, sequence) pair's R rows are
    # complete: at most one batch and R - 1 rows wait in ``pending``, never all C x N x R rows.
    # Each pair's mean is .mean(1) of its (R, 4, L) rows, as one (C, N, R, 4, L).mean(2) gave
    out = torch.zeros(C * N, *X.shape[1:])
    pending, done = None, 0

    current = {}

    def selector(value):
        if isinstance(value, (tuple, list)):
            value = value[0]
        ch = current["ch"].to(value.device)
        b = value.shape[0]
        if b % len(ch):
            raise RuntimeError("unexpected batch layout in Captum's neuron selector")
        ch = ch.repeat(b // len(ch))
        v = value[torch.arange(b, device=value.device), ch]
        return v.reshape(b, -1).sum(-1)

    if method == "deeplift":
        explainer = NeuronDeepLift(model, layer)
    elif method == "integrated_gradients":
        # path-averaged gradients (no multiplication by x - reference): projected onto the four
        # bases below like DeepLIFT's multipliers, which hypothetical contributions need
        explainer = NeuronIntegratedGradients(model, layer, multiply_by_inputs=False)
    else:
        explainer = NeuronGradient(model, layer)

    starts = range(0, n_rows, batch_size)
    it = tqdm(starts, disable=not verbose) if tqdm is not None else starts
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        for i in it:
            j = min(i + batch_size, n_rows)
            current["ch"] = rows_ch[i:j]
            x = X[rows_seq[i:j]].to(device)
            if method == "deeplift":
                b = refs[rows_seq[i:j], rows_ref[i:j]].to(device)
                mult = explainer.attribute(x, neuron_selector=selector, baselines=b,
                                           attribute_to_neuron_input=to_input,
                                           custom_attribution_func=lambda m: m)
                a = _project(mult.detach().cpu(), x.cpu(), b.cpu(), hypothetical)
            elif method == "integrated_gradients":
                b = refs[rows_seq[i:j], rows_ref[i:j]].to(device)
                g = explainer.attribute(x, neuron_selector=selector, baselines=b, n_steps=n_steps,
                                        attribute_to_neuron_input=to_input).detach().cpu()
                if hypothetical:    # (e_base - reference) * g summed over the 4 rows
                    a = _project(g, x.cpu(), b.cpu(), True)
                else:               # Captum's (x - reference) * g, each position's sum put on
                    a = (g * (x.cpu() - b.cpu())).sum(1, keepdim=True) * x.cpu()   # its base
            else:
                g = explainer.attribute(x, neuron_selector=selector,
                                        attribute_to_neuron_input=to_input).detach().cpu()
                if gc:
                    g = g - g.mean(1, keepdim=True)
                a = g if method == "saliency" else g * x.cpu()
            a = a.to(out.dtype).contiguous()   # (Captum may hand back other strides)
            pending = a if pending is None else torch.cat([pending, a])
            full = len(pending) // R                # pairs whose R rows are all in
            if full:
                out[done:done + full] = pending[:full * R].reshape(full, R, *a.shape[1:]).mean(1)
                pending, done = pending[full * R:], done + full
    return out.reshape(C, N, *X.shape[1:])
