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
