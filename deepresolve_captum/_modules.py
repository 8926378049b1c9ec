"""Small helpers about the modules a model runs (shared by the optimizer, training and checks)."""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

#: Final modules that turn logits into probabilities (or log-probabilities).
SQUASHING = (nn.Sigmoid, nn.Softmax, nn.LogSoftmax, nn.Softmax2d)


@contextmanager
def leaf_module_trace(model):
    """Record the leaf modules of ``model`` in the order they run inside the ``with`` block.

    Yields a list that fills as the model runs (its last item: the module that ran last, e.g.
    a final ``nn.Sigmoid``); the hooks are removed on leaving the block. ``model=None`` yields
    an empty list.
    """
    seen = []
    handles = [m.register_forward_hook(lambda mod, args, out: seen.append(mod))
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


def output_squashing(out):
    """The squashing function that computed ``out`` last, found from its autograd graph:
    ``"sigmoid"``, ``"softmax"`` or ``"log_softmax"`` (functional calls such as ``torch.sigmoid``
    included, looking through reshapes, indexing and casts after it), else None. ``out`` must have
    been computed with grad enabled (it is None for a tensor without ``grad_fn``)."""
    node = getattr(out, "grad_fn", None)
    for _ in range(64):
        if node is None:
            return None
        name = node.name()
        if name in _SQUASH_NODES:
            return _SQUASH_NODES[name]
        if not name.startswith(_PASS_THROUGH):
            return None
        nxt = [f for f, _ in node.next_functions if f is not None]
        if len(nxt) != 1:
            return None
        node = nxt[0]
    return None


def how_squashed(ran, out, modules=SQUASHING, ops=("sigmoid", "softmax", "log_softmax")):
    """How a model turns its logits into probabilities, for messages: ``"ends in Sigmoid"`` when
    the last leaf module that ran (``ran``, from :func:`leaf_module_trace`) is one of
    ``modules``, ``"computes its output with sigmoid"`` when ``out``'s autograd graph ends in
    one of ``ops`` (:func:`output_squashing`; a functional ``torch.sigmoid``), else None."""
    if ran and isinstance(ran[-1], modules):
        return f"ends in {type(ran[-1]).__name__}"
    op = output_squashing(out)
    return f"computes its output with {op}" if op in ops else None
