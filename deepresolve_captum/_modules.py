"""Small helpers about the modules a model runs (shared by the optimizer, training and checks)."""
from __future__ import annotations

import keyword
import warnings
from contextlib import contextmanager

import torch
from torch import nn

#: Final modules that turn logits into probabilities (or log-probabilities).
SQUASHING = (nn.Sigmoid, nn.Softmax, nn.LogSoftmax, nn.Softmax2d)


def module_modes(scope):
    """Every module's train/eval flag under ``scope`` (an ``nn.Module``), each module once,
    root first, every module after all of its parents (a topological order of the module
    graph; a tree's is its pre-order), for :func:`restore_modes`."""
    mods = list(scope.modules())
    index = {id(m): i for i, m in enumerate(mods)}
    children = [[index[id(c)] for c in m.children()] for m in mods]
    n_parents = [0] * len(mods)
    for kids in children:
        for k in kids:
            n_parents[k] += 1
    order, ready = [], [0] if mods else []
    while ready:               # Kahn's algorithm, depth first: pre-order where nothing is shared
        i = ready.pop()
        order.append(i)
        for k in reversed(children[i]):
            n_parents[k] -= 1
            if n_parents[k] == 0 and k != 0:    # the root is placed first, once
                ready.append(k)
    placed = set(order)   # a cyclic graph (train() itself would recurse forever): rest in pre-order
    order += [i for i in range(len(mods)) if i not in placed]
    return [(mods[i], mods[i].training) for i in order]


def restore_modes(modes):
    """Put back the modes :func:`module_modes` recorded, through ``train()``.

    ``train(mode)`` on the root, then ``train(mode)`` on each module left in another mode, in
    the recorded order: every module after all of its parents, so a module overriding
    ``train()`` (MC dropout switching sampling, ``model.eval(); model.mc.train()``) sees its own
    mode come back, not only its flag, also when it is shared by parents in different modes,
    and no later call resets it (a ``train()`` reaches only its own descendants). One pass,
    linear in the modules.

    A ``train()`` that raises (an inference-only model) does not stop the others nor lose the
    caller's result; a flag still off at the end (that ``train()``, or one that does not set the
    flag) is set directly. Either way a RuntimeWarning says so, at the first line outside this
    package. KeyboardInterrupt goes on (the flags are set first)."""
    if not modes:
        return
    failed = []
    try:
        for i, (m, mode) in enumerate(modes):
            if i == 0 or m.training != mode:
                try:
                    m.train(mode)
                except Exception as e:   # noqa: BLE001 - a clean-up step: keep the result
                    failed.append(f"{type(m).__name__}.train({mode}): {type(e).__name__}: {e}")
    finally:
        off = [m for m, mode in modes if m.training != mode]
        for m, mode in modes:
            if m.training != mode:
                m.training = mode
    if failed or off:
        what = (f"{len(failed)} train() call(s) raised ({'; '.join(failed[:3])}"
                f"{'; ...' if len(failed) > 3 else ''})" if failed else
                f"train() left the flag of {len(off)} module(s) (e.g. {type(off[0]).__name__}) "
                "unchanged")
        warnings.warn(f"putting the model's train/eval modes back: {what}; their training flags "
                      "were set directly, so state a train() override keeps may be off",
                      RuntimeWarning, stacklevel=_outside_stacklevel())


def _outside_stacklevel():
    """warnings.warn's stacklevel, from the caller of this function, that names the first frame
    outside this package, Captum and the context-manager / decorator plumbing of contextlib and
    torch.utils._contextlib (``@torch.no_grad()``): the user's line. Frames are told apart by
    their module's name (a user's folder called ``captum`` is the user's); with none outside,
    the outermost frame."""
    import sys

    pkg = __name__.rpartition(".")[0]
    inside = (pkg, "captum", "contextlib", "torch.utils._contextlib")
    f, level = sys._getframe(2), 2        # 1: restore_modes's warnings.warn; 2: its caller
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not any(mod == p or mod.startswith(p + ".") for p in inside):
            return level
        if f.f_back is None:
            return level
        f, level = f.f_back, level + 1
    return 2


class _LeafTrace(list):
    """The leaf modules in the order they ran, with ``shapes``: each one's output shape."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def clear(self):
        super().clear()
        self.shapes.clear()


@contextmanager
def leaf_module_trace(model):
    """Record the leaf modules of ``model`` in the order they run inside the ``with`` block.

    Yields a list that fills as the model runs (its last item: the module that ran last, e.g.
    a final ``nn.Sigmoid``); the hooks are removed on leaving the block. ``model=None`` yields
    an empty list. Its ``shapes`` attribute holds each run's output shape, in the same order
    (None for an output that is not one tensor).
    """
    seen = _LeafTrace()

    def note(mod, args, out):
        seen.append(mod)
        seen.shapes.append(tuple(out.shape) if isinstance(out, torch.Tensor) else None)

    handles = [m.register_forward_hook(note)
               for m in (model.modules() if model is not None else ()) if not list(m.children())]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


_SQUASH_NODES = {"SigmoidBackward0": "sigmoid", "SoftmaxBackward0": "softmax",
                 "LogSoftmaxBackward0": "log_softmax"}
# autograd nodes that only move, select or cast values: looked through to the op before them
_PASS_THROUGH = tuple(f"{p}Backward" for p in (
    "View", "Reshape", "UnsafeView", "Squeeze", "Unsqueeze", "Select", "Slice", "T", "Permute",
    "Transpose", "Clone", "Expand", "Alias", "ToCopy", "Flatten", "Unflatten", "Index"))


def through_moves(node):
    """The first autograd node at or before ``node`` that does more than move, select or cast
    values (:data:`_PASS_THROUGH`), or None (no graph, a branch, or 64 such nodes)."""
    for _ in range(64):
        if node is None or not node.name().startswith(_PASS_THROUGH):
            return node
        nxt = [f for f, _ in node.next_functions if f is not None]
        if len(nxt) != 1:
            return None
        node = nxt[0]
    return None


def output_squashing(out):
    """The squashing function that computed ``out`` last, found from its autograd graph:
    ``"sigmoid"``, ``"softmax"`` or ``"log_softmax"`` (functional calls such as ``torch.sigmoid``
    included, looking through reshapes, indexing and casts after it), else None. ``out`` must have
    been computed with grad enabled (it is None for a tensor without ``grad_fn``).
    ``exp(log_softmax)`` reads as ``"softmax"`` and ``log(softmax)`` as ``"log_softmax"``
    (:func:`graph_squashing`)."""
    return graph_squashing(out)[0]


# exp(log_softmax) are probabilities, log(softmax) log-probabilities: read through, as one op
_COMPOSED = {("ExpBackward0", "LogSoftmaxBackward0"): ("softmax", "exp of "),
             ("LogBackward0", "SoftmaxBackward0"): ("log_softmax", "log of ")}


def graph_squashing(y):
    """The squashing op that computed ``y`` last, read from its autograd graph (the rule of
    :func:`output_squashing`, plus exp(log_softmax) read as a softmax and
    log(softmax) as a log_softmax): ``(op, node, prefix)``, ``node`` the sigmoid / softmax /
    log_softmax node and ``prefix`` ``"exp of "`` / ``"log of "`` for the composed forms, else
    ``""``; ``(None, None, "")`` when ``y`` is not squashed (or has no graph). What decides is
    the output itself, not the last module to run: a LogSoftmax over attention weights with
    a functional head after it leaves logits."""
    node = through_moves(getattr(y, "grad_fn", None))
    if node is None:
        return None, None, ""
    name = node.name()
    if name in _SQUASH_NODES:
        return _SQUASH_NODES[name], node, ""
    nxt = [f for f, _ in node.next_functions if f is not None]
    inner = through_moves(nxt[0]) if len(nxt) == 1 else None
    if inner is not None and (name, inner.name()) in _COMPOSED:
        op, prefix = _COMPOSED[(name, inner.name())]
        return op, inner, prefix
    return None, None, ""


def as_tensor_output(y):
    """The model's output, refused with a named error unless it is one tensor."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"the model returned a {type(y).__name__}, not one tensor of outputs: wrap it in an "
            "nn.Module whose forward returns the tensor to explain (e.g. model(x)[0] or "
            "model(x)['logits'])")
    return y


def squashing(model, x):
    """Run ``model`` on the batch ``x`` with grad enabled and the input requiring grad (so that
    a frozen model still has a graph) and say how the output is squashed, from the output's
    graph (:func:`graph_squashing`). Returns ``(y, how, op, node, advice)``: the output;
    ``"ends in LogSoftmax (head.ls)"`` when a squashing module made it (its path in
    ``model``), ``"computes its output with sigmoid"`` for a functional call (``"... with exp
    of log_softmax"`` for the composed forms), or None; ``"sigmoid"``, ``"softmax"`` or
    ``"log_softmax"`` (None); the graph node (None); how to get the logits instead
    (:func:`logits_advice`). An output without a graph (a forward under
    ``torch.no_grad``) falls back on the last module that ran (:func:`how_squashed`)."""
    made = []

    def record(mod, args, out):
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            made.append((mod, out.grad_fn))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, SQUASHING)]
    xin = x
    if x.is_floating_point() and not x.requires_grad:
        # not a leaf (a clone of one): a model that works in place on its input still runs
        xin = x.detach().requires_grad_().clone()
    try:
        with torch.enable_grad(), leaf_module_trace(model) as seen:
            try:
                y = as_tensor_output(model(xin))
            except RuntimeError as e:
                if xin is x or "grad" not in str(e):
                    raise
                made.clear()
                seen.clear()          # e.g. x.numpy() in forward: again as the caller gave it
                y = as_tensor_output(model(x))
    finally:
        for h in hooks:
            h.remove()
    if y.grad_fn is None:            # no graph to read: the last module that ran decides
        how = how_squashed(seen, y, owner=model)
        op = None
        if how is not None:
            op = ("log_softmax" if isinstance(seen[-1], nn.LogSoftmax) else
                  "sigmoid" if isinstance(seen[-1], nn.Sigmoid) else "softmax")
        return y, how, op, None, logits_advice(seen, model)
    op, node, prefix = graph_squashing(y)
    if op is None:
        return y, None, None, None, logits_advice([], model)
    mod = next((m for m, g in made if g is node), None)
    path = module_path(model, mod) if mod is not None else None
    if mod is None:
        how = f"computes its output with {prefix}{_SQUASH_NODES[node.name()]}"
    elif prefix:
        how = f"computes its output as the {prefix}{type(mod).__name__}" + (
            f" ({path})" if path else "")
    else:
        how = f"ends in {type(mod).__name__}" + (f" ({path})" if path else "")
    advice = logits_advice([mod] if mod is not None and not prefix else [], model)
    return y, how, op, node, advice


def how_squashed(ran, out, modules=SQUASHING, ops=("sigmoid", "softmax", "log_softmax"),
                 owner=None):
    """How a model turns its logits into probabilities, for messages: ``"ends in Sigmoid"`` when
    the last leaf module that ran (``ran``, from :func:`leaf_module_trace`) is one of
    ``modules`` (with its path in ``owner``, ``"ends in Sigmoid (classifier.3)"``), ``"computes
    its output with sigmoid"`` when ``out``'s autograd graph ends in one of ``ops``
    (:func:`output_squashing`; a functional ``torch.sigmoid``), else None.

    When ``out`` has a graph, the graph decides: a squashing module that ran last but whose
    value the forward then reduces further (a softmax over attention weights, summed with
    values) is not the output's, and gives None. Without a graph (``out`` None, or computed
    without grad) the last module decides."""
    op = output_squashing(out)
    graph = getattr(out, "grad_fn", None) is not None
    if ran and isinstance(ran[-1], modules) and (not graph or op is not None):
        path = module_path(owner, ran[-1])
        return f"ends in {type(ran[-1]).__name__}" + (f" ({path})" if path else "")
    return f"computes its output with {op}" if op in ops else None


def check_layer_calls(calls, name, model=None, layer=None):
    """Refuse a layer (named ``name`` in messages) that one forward pass called ``calls``
    times: never (not in the model, or on a branch not taken) or more than once (its value
    would be its last call's only).

    With ``model`` (the ``nn.Module`` that ran, or None) and ``layer``: a layer never reached
    that is not a submodule of ``model`` is called that, and the message names the module of
    ``model`` that ``layer`` was probably copied into (:func:`copy_counterpart`): the usual
    cause is a layer picked from the original model and a deep copy passed as the model. A
    layer that is not a submodule but is reached (a model held outside the module tree, a
    function wrapping the model) is not refused here."""
    if calls == 0:
        if model is not None and layer is not None and not any(
                m is layer for m in model.modules()):
            raise ValueError(not_a_submodule_message(name, model, layer))
        raise ValueError(f"layer {name} was not reached by the forward pass: choose a module "
                         "that the model calls in forward")
    if calls > 1:
        raise ValueError(f"layer {name} is called {calls} times per forward pass; choose a "
                         "module used once")


def not_a_submodule_message(name, model, layer):
    """Why a layer that is not a submodule of ``model`` was not reached, and which module of
    ``model`` (``m`` in the message) to pass instead (see :func:`check_layer_calls`)."""
    found = copy_counterpart(model, layer)
    head = (f"layer {name} was not reached by the forward pass: it is not a submodule of "
            f"forward_func ({type(model).__name__}) but of another model (after "
            "copy.deepcopy, pick the layer from the copy")
    if len(found) == 1:
        return f"{head}, e.g. {module_expr(model, found[0])}, with m the model you pass)"
    how = "the module with the layer's name in the original model's named_modules()"
    if found:
        names = ", ".join(module_expr(model, p) for p in found[:4])
        return (f"{head}: {how}, one of {names}{', ...' if len(found) > 4 else ''}, with m "
                "the model you pass)")
    return f"{head}: m.get_submodule(name), with {how}, m the model you pass)"


def copy_counterpart(model, layer):
    """Dotted names of the modules of ``model`` that ``copy.deepcopy`` could have made from
    ``layer``: of its type, with its settings (``extra_repr``) and parameters and buffers of
    the same names and shapes; of those, the ones whose values (and dtypes) are also equal,
    if any. A module has no link to its parent, so the layer's own name in the model it came
    from cannot be read; for a layer with weights the values single it out, for a
    parameter-free one (a ReLU) several modules may qualify. [] for none."""
    def tensors(m):
        return dict(m.named_parameters(recurse=True), **dict(m.named_buffers(recurse=True)))

    want = tensors(layer)
    shape = {k: tuple(v.shape) for k, v in want.items()}
    alike, equal = [], []
    for path, m in model.named_modules():
        if not path or type(m) is not type(layer) or m.extra_repr() != layer.extra_repr():
            continue
        have = tensors(m)
        if {k: tuple(v.shape) for k, v in have.items()} != shape:
            continue
        alike.append(path)
        if all(have[k].dtype == v.dtype and torch.equal(have[k].detach().cpu(), v.detach().cpu())
               for k, v in want.items()):
            equal.append(path)
    return equal or alike


def module_expr(model, path, var="m"):
    """Python for the module at ``path`` (a name from ``named_modules()``) in ``model`` named
    ``var``: ``m.conv3``, ``m.features[1]`` (a Sequential or ModuleList child whose name is its
    position), else ``m.get_submodule('a.1')``.

    ``[i]`` is written only where the child's name ``"i"`` is also its position: Sequential and
    ModuleList index by position, and a Sequential built from an OrderedDict with keys "1",
    "0", "3", or a child added by ``add_module("5", ...)``, has names that are not positions
    (``m.body[1]`` would be another module, ``m.body[3]`` an IndexError). An attribute is
    written only where ``getattr`` finds that very child; where it does not (a class attribute
    of the child's name), neither does ``get_submodule``, and
    ``dict(m.named_modules(remove_duplicate=False))[path]`` is written."""
    expr, cur = var, model
    for part in path.split("."):
        child = cur._modules.get(part) if isinstance(cur, nn.Module) else None
        if child is None:
            break
        if part.isidentifier() and not keyword.iskeyword(part) and _attr_is(cur, part, child):
            expr += f".{part}"
        elif (isinstance(cur, (nn.Sequential, nn.ModuleList))
              and part == str(list(cur._modules).index(part))):
            expr += f"[{part}]"
        else:
            break
        cur = child
    else:
        return expr
    target = model
    for part in path.split("."):
        target = target._modules.get(part) if isinstance(target, nn.Module) else None
    try:
        found = target is None or model.get_submodule(path) is target
    except Exception:   # noqa: BLE001 - get_submodule fails: the other expression
        found = False
    return (f"{var}.get_submodule({path!r})" if found
            else f"dict({var}.named_modules(remove_duplicate=False))[{path!r}]")


def _attr_is(module, name, child):
    """Whether ``module.<name>`` is ``child`` (not a class attribute or property of that name)."""
    try:
        return getattr(module, name) is child
    except Exception:   # noqa: BLE001 - a property that raises: not the child
        return False


def module_path(owner, module):
    """``module``'s dotted name inside ``owner`` (``"classifier.3"``), or None."""
    if owner is None:
        return None
    return next((name for name, m in owner.named_modules() if m is module and name), None)


def logits_advice(ran, owner=None, layer=None):
    """How to get the logits of a model that squashes them (see :func:`how_squashed`): swap the
    final module for ``nn.Identity`` on a copy, naming its path, or drop a functional call.
    With ``layer`` (a module that the caller hooks): also to pick it from the copy, as
    ``m.conv3`` where ``owner`` holds it (a module of the original is not in the copy)."""
    path = module_path(owner, ran[-1]) if ran and isinstance(ran[-1], SQUASHING) else None
    if layer is None:
        pick = ""
    else:
        where = module_path(owner, layer)
        pick = (f", and pick the layer from the copy: {module_expr(owner, where)}"
                if where else ", and pick the layer from the copy")
    if path:
        parent, _, name = path.rpartition(".")
        holder = f"m.get_submodule({parent!r})" if parent else "m"
        return (f"pass a copy with that module replaced: m = copy.deepcopy(model); "
                f"setattr({holder}, {name!r}, torch.nn.Identity()){pick}")
    return ("pass a model that returns the logits: a copy with the final squashing module "
            f"replaced by torch.nn.Identity(){pick}, or a wrapper without the last "
            "torch.sigmoid / softmax")


#: modules whose feature axis is the last one (on a (N, L, E) tensor: channels-last); an RNN
#: only when batch_first (see :func:`_features`)
_LAST_AXIS_FEATURES = (nn.Linear, nn.LayerNorm, nn.TransformerEncoderLayer,
                       nn.TransformerDecoderLayer, nn.Embedding, nn.RNNBase)


#: leaf modules that, run right after a leaf layer, show it is channels-last (a transformer
#: layer is no leaf, and a Linear may as well mix positions)
_NEXT_TAKES_LAST_AXIS = (nn.LayerNorm, nn.RNNBase)

#: leaf modules whose output is their input, value by value (same shape, same layout): the
#: layout of their value is that of the module before them
_SAME_LAYOUT = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                nn.AlphaDropout, nn.FeatureAlphaDropout, nn.ReLU, nn.ReLU6,
                nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish,
                nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
                nn.LogSigmoid, nn.Threshold)


def _features(module):
    """The size of the last-axis feature a module takes or makes: (in, out)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.LayerNorm):   # over the last axis only: (K, L) is channels-first
        n = int(module.normalized_shape[0]) if len(module.normalized_shape) == 1 else None
        return n, n
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        n = module.linear1.in_features
        return n, n
    if isinstance(module, nn.Embedding):
        return None, module.embedding_dim
    if isinstance(module, nn.RNNBase) and module.batch_first:   # (N, L, E) in and out
        out = getattr(module, "proj_size", 0) or module.hidden_size
        return module.input_size, out * (2 if module.bidirectional else 1)
    return None, None


def _maker_before(layer, on_input, shape, ran):
    """The leaf module that made the value of ``layer`` (of ``shape``): the one that ran just
    before it (looking back through :data:`_SAME_LAYOUT` modules, e.g. an activation or
    Dropout) with an output of that shape, for a layer input or a ``_SAME_LAYOUT`` layer's
    output. None when ``ran`` (a :func:`leaf_module_trace`) has no shapes or shows no such
    module."""
    shapes = getattr(ran, "shapes", None)
    if shapes is None or len(shapes) != len(ran):
        return None
    inside = {id(m) for m in layer.modules()}
    first = next((i for i, m in enumerate(ran) if id(m) in inside), None)
    if first is None:
        return None
    if not on_input and not (ran[first] is layer and isinstance(layer, _SAME_LAYOUT)):
        return None
    shape = tuple(shape)
    for j in range(first - 1, -1, -1):
        if shapes[j] != shape:
            return None
        if not isinstance(ran[j], _SAME_LAYOUT):
            return ran[j]
    return None


def _takes_channels_on_axis_1(module, n):
    """Whether ``module`` reads ``n`` channels on axis 1 (a convolution or a batch, group or
    instance norm over ``n`` channels): evidence that a value it takes is channels-first."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.conv import _ConvNd
    from torch.nn.modules.instancenorm import _InstanceNorm

    if isinstance(module, _ConvNd):
        return module.in_channels == n
    if isinstance(module, (_BatchNorm, _InstanceNorm)):
        return module.num_features == n
    if isinstance(module, nn.GroupNorm):
        return module.num_channels == n
    return False


def _reader_of(layer, on_input, ran):
    """The leaf module that reads the value of ``layer``: its own first leaf for its input, the
    leaf that ran right after its last one for its output (None if ``ran`` shows none)."""
    inside = {id(m) for m in layer.modules()}
    at = [i for i, m in enumerate(ran) if id(m) in inside]
    if not at:
        return None
    i = at[0] if on_input else at[-1] + 1
    return ran[i] if i < len(ran) else None


def channels_last_reason(layer, on_input, shape, ran=()):
    """Why H of ``shape`` (N, A, B, ...) at ``layer`` looks channels-last (features on the last
    axis, as a Linear, LayerNorm, batch-first RNN or transformer layer makes or takes them), or
    None. ``ran``: the leaf modules in the order they ran (:func:`leaf_module_trace`), to see
    the module right after a leaf layer, and the one that made the value of a layer input or
    of an activation (Dropout, Identity) after a Linear. Only 3-d and larger H whose axis 1 is
    not that size."""
    if len(shape) < 3 or not isinstance(layer, nn.Module):
        return None
    last, second = int(shape[-1]), int(shape[1])
    if isinstance(layer, _LAST_AXIS_FEATURES):
        size = _features(layer)[0 if on_input else 1]
        if size == last and size != second:
            return (f"{type(layer).__name__} {'takes' if on_input else 'makes'} its {last} "
                    "features on the last axis")
    if not on_input and ran:
        after = [ran[i + 1] for i, m in enumerate(ran[:-1]) if m is layer]
        if after and isinstance(after[0], _NEXT_TAKES_LAST_AXIS):
            size = _features(after[0])[0]
            if size == last and size != second:
                return (f"the next module, {type(after[0]).__name__}, takes {last} features on "
                        "the last axis")
    maker = _maker_before(layer, on_input, shape, ran) if ran else None
    if maker is not None and isinstance(maker, _LAST_AXIS_FEATURES):
        size = _features(maker)[1]
        # a Linear over the positions (token mixing) of a channels-first value makes features on
        # the last axis too: a convolution or norm reading axis-1 channels next says so
        if size == last and size != second and not _takes_channels_on_axis_1(
                _reader_of(layer, on_input, ran), second):
            return (f"the module before it, {type(maker).__name__}, makes its {last} features "
                    "on the last axis")
    return None
