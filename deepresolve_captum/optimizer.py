"""Multi-start gradient ascent on an intermediate feature map (DeepResolve's FIMs), as a Captum
layer attribution.

For every target class c and every random start t the optimizer finds

    H_{c,t} = argmax_H  S_c(H) - l2 * ||H||^2

where H is the output of ``layer`` (or its input with ``attribute_to_layer_input=True``) and
S_c is the model's c-th output as ``forward_func`` returns it (pass logits: pre-sigmoid or
pre-softmax scores). All targets x starts are optimised together as one batch per step.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ._modules import (channels_last_reason, check_layer_calls, how_squashed, leaf_module_trace,
                       logits_advice, module_expr, module_modes, restore_modes)

__all__ = ["LayerFeatureOptimizer", "AscentDiagnostics"]

_CPU_MEMORY_BUDGET = 2 * 1024**3  # bytes of activations per chunk on the CPU by default


@dataclass(repr=False)
class AscentDiagnostics:
    """What one ``attribute`` call did, per start and overall.

    Attributes
    ----------
    targets: (n_targets,) flat output indices that were optimised.
    steps: (n_targets, n_starts) ascent steps each start took (one forward+backward each).
    objective: (n_targets, n_starts) final S_c(H) - l2 * ||H||^2.
    converged: (n_targets, n_starts) True where the start met the stopping rule before
        ``max_steps``.
    l2: the regularisation strength used. ``l2_auto`` holds how ``l2="auto"`` chose it (None
        when l2 was given).
    lr: the largest step size (1 / (2 * l2) unless given).
    n_chunks, rows_per_chunk: how the targets x starts rows were split to respect the memory
        budget. ``recompute_upstream`` is True when the model mixes examples across the batch
        after the layer, so the cheap path (run the part before the layer once, broadcast H)
        could not be used and the input was expanded to every row instead.
    target_only_head: True when the model's last module, an ``nn.Linear`` whose output is the
        model's output, was computed for each row's target only (``target_only_head=True`` and
        the probe found the same scores and gradients as the full head). False also when a
        final score disagreed with the full head's and the run fell back to it (warned); the
        chunks before that one ran narrow and passed the same check.
    seconds: wall time of the call.
    scores: (n_targets, n_starts) class score S_c at each start's final H, as numpy in the
        model output's dtype (bfloat16 as float32): the values ``return_scores=True`` returns,
        kept also without it and with ``fiv_only=True``, so that a run called the Captum way
        (``fims = opt.attribute(...)``) can still be summarised:
        ``summarize(fims, opt.diagnostics.scores)``. None where the diagnostics were assembled
        without them.
    settings: the call's other arguments (n_starts, seed, init_scale, max_steps, tol, patience,
        attribute_to_layer_input, fiv_only). ``seed`` is the one used, also the one drawn for
        ``seed=None``: pass it back to repeat the run.
    """

    targets: np.ndarray
    steps: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    l2: float
    lr: float
    l2_auto: Optional[dict] = None
    n_chunks: int = 1
    rows_per_chunk: int = 0
    recompute_upstream: bool = False
    target_only_head: bool = False
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    scores: Optional[np.ndarray] = None

    def __repr__(self):
        """One line, whatever the number of targets (the arrays stay in the attributes)."""
        steps = np.asarray(self.steps)
        n_t, n_s = steps.shape if steps.ndim == 2 else (len(np.atleast_1d(self.targets)), 0)
        conv = np.asarray(self.converged, dtype=bool)
        parts = [f"{n_t} targets x {n_s} starts",
                 f"l2={self.l2:.4g}" + (" (auto)" if self.l2_auto is not None else ""),
                 f"lr={self.lr:.4g}"] + (
                    [f"seed={self.settings['seed']}"] if "seed" in self.settings else [])
        if steps.size:
            obj = np.asarray(self.objective, dtype=float)
            parts += [f"steps median {int(np.median(steps))} (range {int(steps.min())}-{int(steps.max())})",
                      f"converged {int(conv.sum())}/{conv.size}",
                      f"objective median {np.median(obj):.4g} (range {obj.min():.4g} to {obj.max():.4g})"]
        parts.append(f"{self.n_chunks} chunk{'s' if self.n_chunks != 1 else ''} of <= "
                     f"{self.rows_per_chunk} rows" + (", upstream recomputed" if self.recompute_upstream else "")
                 + (", target-only head" if self.target_only_head else ""))
        parts.append(f"{self.seconds:.2f} s")
        return f"AscentDiagnostics({', '.join(parts)})"


class _LayerSwap:
    """One hook on ``layer`` that either captures the layer's value (``replacement is None``) or
    swaps in ``replacement``. Counts calls so that a layer used twice per forward is caught."""

    def __init__(self, layer: nn.Module, on_input: bool):
        self.on_input = on_input
        self.module = layer
        self.replacement: Optional[Tensor] = None
        self.captured: Any = None
        self.record = False       # keep the original input the layer was called with (a probe)
        self.original: Any = None
        self.flip = False         # may the probe make that input require grad (see _pre_hook)
        self.flipped: Optional[Tensor] = None   # that input, made to require grad for the probe
        self.calls = 0
        self.name = f"{type(layer).__name__}" + (" (input)" if on_input else "")
        if on_input:
            self.handle = layer.register_forward_pre_hook(self._pre_hook)
        else:
            self.handle = layer.register_forward_hook(self._hook)

    # The value passed on is a copy: a module after the layer may work in place (nn.ReLU(inplace=
    # True) right after a convolution is common), which autograd forbids on the leaf H, and which
    # would change a captured value after the hook has read it.
    def _pre_hook(self, module, args):
        self.calls += 1
        if self.replacement is None:
            self.captured = tuple(a.detach().clone() if isinstance(a, Tensor) else a for a in args)
            return None
        if self.record:
            self.original = args[0] if args else None
            o = self.original   # e.g. an embedding's output under frozen weights: a leaf that
            if (self.flip and isinstance(o, Tensor) and o.is_floating_point()
                    and not o.requires_grad):
                o.requires_grad_(True)      # autograd can follow, until the probe is done
                self.flipped = o
        return (self.replacement.clone(),) + tuple(args[1:])

    def _hook(self, module, args, output):
        self.calls += 1
        if self.replacement is None:
            self.captured = output.detach().clone() if isinstance(output, Tensor) else output
            return None
        return self.replacement.clone()

    def remove(self):
        self.handle.remove()


#: A final nn.Linear with fewer outputs is always computed whole (the weight-row gather and the
#: zero-filled output cost about what a small matrix product does).
_TARGET_HEAD_MIN_OUTPUTS = 64


class _TargetHead:
    """Computes a final ``nn.Linear`` for each row's target only, while ``targets`` is set.

    The ascent reads one output per row, so a 21,907-output head need not compute the other
    21,906: row i gets ``x_i . W[t_i] + b[t_i]`` at column t_i and zeros elsewhere (the gradient
    to x_i is then W[t_i], as through the full product). With ``targets`` None (probes, the mean
    activation) the module runs as usual. Installed as an instance ``forward`` (a hook cannot
    skip the product); :meth:`remove` restores the class's. ``used``: the narrow path ran."""

    def __init__(self, linear: nn.Linear):
        self.linear = linear
        self.targets: Optional[Tensor] = None
        self.used = False
        linear.forward = self._forward

    def _forward(self, input):  # nn.Linear.forward's own parameter name: fc(input=x) works
        lin, t = self.linear, self.targets
        if t is None or input.dim() != 2 or input.shape[0] != t.shape[0]:
            return nn.functional.linear(input, lin.weight, lin.bias)
        self.used = True
        w = lin.weight.index_select(0, t)                                    # (B, K)
        low = input.dtype in (torch.float16, torch.bfloat16)  # sum in float32, as GEMMs do
        x = input.float() if low else input
        s = torch.bmm(x.unsqueeze(1), (w.float() if low else w).unsqueeze(2)).view(-1, 1)
        s = s.to(input.dtype)
        if lin.bias is not None:
            s = s + lin.bias.index_select(0, t).unsqueeze(1)
        return input.new_zeros(input.shape[0], lin.out_features).scatter(1, t.view(-1, 1), s)

    def remove(self):
        if self.linear.__dict__.get("forward") == self._forward:
            del self.linear.forward


class _HeadMismatch(Exception):
    """A retired row's narrow-head score differs from the full head's at the same H."""

    def __init__(self, row):
        super().__init__(row)
        self.row = row


def _owning_module(forward_func) -> Optional[nn.Module]:
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _as_tuple(x) -> Tuple:
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _forward_args(x) -> Tuple:
    """additional_forward_args as Captum reads them: a tuple holds several arguments, anything
    else (a list too) is one."""
    if x is None:
        return ()
    return x if isinstance(x, tuple) else (x,)


def _row_seed(seed: int, target: int, start: int) -> int:
    return int(np.random.SeedSequence([seed, target, start]).generate_state(1, np.uint64)[0] >> 1)


def start_draw(seed: int, target: int, start: int, shape) -> Tensor:
    """The N(0, 1) start (before ``init_scale``) that ``attribute`` draws for (seed, target,
    start), shape ``shape`` on the CPU: pass such draws as ``init`` to reproduce a start."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(
        _row_seed(int(seed), int(target), int(start))))


class LayerFeatureOptimizer(LayerAttribution, GradientAttribution):
    r"""DeepResolve's feature-importance maps (FIMs) by multi-start gradient ascent at a layer.

    Unlike Captum's input attributions, nothing is explained *for* an example: ``inputs`` only
    fixes the layer's shape and the path into it, and each target class is optimised on its own
    (``target`` lists classes, not one class per example). All targets x starts run as one batch
    per step, split into chunks to respect a memory budget, on the model's device (in float32
    the chunking can change where a start ends: see ``seed`` in :meth:`attribute`). The part
    of the network before the layer runs on one example per step; the batch of H is fed forward
    from the layer.

    During the ascent dropout and batch-norm are in eval mode and the parameters do not require
    grad; afterwards the model's mode, weights and ``requires_grad`` are exactly as found and no
    hook remains, also when an exception is raised.

    Args:
        forward_func (Callable or nn.Module): the model, returning logits of shape
            (N, n_outputs) (any (N, ...) output is flattened per example).
        layer (nn.Module): the layer whose output (or input) is H.
        device_ids (list[int], optional): accepted for Captum compatibility
            (``DataParallel``); the hooks act on ``layer`` itself.
    """

    def __init__(self, forward_func: Callable, layer: nn.Module, device_ids=None) -> None:
        if isinstance(layer, (list, tuple, nn.ModuleList)):
            raise TypeError("LayerFeatureOptimizer takes one layer (an nn.Module), not a list")
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")
        if isinstance(layer, torch.jit.ScriptModule) or isinstance(forward_func, torch.jit.ScriptModule):
            raise TypeError("TorchScript modules do not run Python hooks: pass the eager (not "
                            "scripted) model and layer")
        # A torch.compile'd model: run its eager module (same modules and weights). The swap
        # hook's replacement changes size with every chunk, so a compiled graph would be
        # re-traced until dynamo's recompile limit, for no speed-up.
        if type(forward_func).__name__ == "OptimizedModule" and isinstance(
                getattr(forward_func, "_orig_mod", None), nn.Module):
            forward_func = forward_func._orig_mod
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.diagnostics: Optional[AscentDiagnostics] = None
        #: what the last :meth:`choose_l2` found (the kind of dict ``attribute`` puts in
        #: ``diagnostics.l2_auto``); None before, and after a choose_l2 that raised
        self.l2_auto: Optional[dict] = None
        self._l2_only = False

    # ------------------------------------------------------------------ public API
    def choose_l2(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        target: Union[None, int, Sequence[int]] = None,
        additional_forward_args: Any = None,
        *,
        seed: Optional[int] = None,
        attribute_to_layer_input: bool = False,
        init_scale: float = 1.0,
        max_steps: int = 2000,
        tol: float = 1e-5,
        patience: int = 5,
        chunk_size: Optional[int] = None,
        memory_budget: Optional[int] = None,
        target_only_head: bool = True,
        verbose: bool = False,
    ) -> float:
        r"""Choose lambda by the paper's heuristic once, without the ascent itself.

        The lambda ``attribute(..., l2="auto")`` would choose for these arguments, bit for bit
        (the same probe targets, starts and steps): pass it as ``l2=`` to every call of a run
        split into blocks of targets. ``l2="auto"`` in each block would probe each block's
        own targets and choose a different lambda per block (e.g. 0.0159 and 0.0174 against
        0.0168 for all 100 outputs of a small model), and results depend on lambda.

        Args:
            inputs, target, additional_forward_args, attribute_to_layer_input: as for
                :meth:`attribute`; ``target`` is the whole run's targets (None: every output),
                of which up to 16, spread over the sorted list, are probed.
            seed (int, optional): the seed you give :meth:`attribute` (its probes use
                ``seed + 7919``); None draws one from torch's global generator, as there.
            init_scale, max_steps, tol, patience, chunk_size, memory_budget, target_only_head,
                verbose: as for :meth:`attribute`; they shape the probe ascents.

        Returns:
            lambda (float). What the probes found (each probe's lambda and median FIM norm, the
            mean activation norm, the probe targets) is in ``self.l2_auto``.
            ``self.diagnostics`` is left as it was (the last :meth:`attribute` call's), also
            when choose_l2 raises.
        """
        self.l2_auto = None
        diagnostics = self.diagnostics     # attribute clears it; no ascent runs here
        self._l2_only = True
        try:
            with _deeper_warnings(1):      # attribute's warnings: at our caller's line
                lam, info = self.attribute(
                    inputs, target, additional_forward_args, l2="auto", seed=seed,
                    attribute_to_layer_input=attribute_to_layer_input, init_scale=init_scale,
                    max_steps=max_steps, tol=tol, patience=patience, chunk_size=chunk_size,
                    memory_budget=memory_budget, target_only_head=target_only_head,
                    verbose=verbose)
        finally:
            self._l2_only = False
            self.diagnostics = diagnostics
        self.l2_auto = info
        return float(lam)

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        target: Union[None, int, Sequence[int]] = None,
        additional_forward_args: Any = None,
        *,
        n_starts: int = 10,
        l2: Union[str, float] = "auto",
        seed: Optional[int] = None,
        attribute_to_layer_input: bool = False,
        return_scores: bool = False,
        fiv_only: bool = False,
        init: Optional[Tensor] = None,
        init_scale: float = 1.0,
        lr: Optional[float] = None,
        max_steps: int = 2000,
        tol: float = 1e-5,
        patience: int = 5,
        chunk_size: Optional[int] = None,
        memory_budget: Optional[int] = None,
        target_only_head: bool = True,
        verbose: bool = False,
        callback: Optional[Callable[[int, np.ndarray, np.ndarray], None]] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Run the ascent and return the FIMs.

        Args:
            inputs (Tensor or tuple of Tensor): an example batch, shape (N, ...), as for the
                model. Its first example fixes the layer's shape and the path into it; with
                ``l2="auto"`` all N examples give the mean activation the heuristic matches.
            target (int, sequence of int, 0-d or 1-d tensor or array, or None): flat output
                indices (classes) to optimise, each independently (duplicates warn): target
                lists classes, not one class per example as in Captum. A 1-d tensor or array
                with one entry per example of ``inputs`` (N > 1) warns, since it looks like
                Captum's per-example labels; a list never does (``target.tolist()`` silences
                it). A tuple index into a multi-dimensional output is accepted inside a list,
                ``[(1, 2)]``, or as a row of a 2-d tensor or array (a bare tuple of ints there
                is refused: Captum would read it as one index). None = every output of the
                model.
            additional_forward_args (Any): extra arguments for ``forward_func`` (a tuple for
                several; anything else, a list too, is one argument, as in Captum); tensors
                whose first dimension equals N are sliced to the first example like ``inputs``.
                A tensor that is not per-example but happens to have N rows (e.g. one scale
                per output) would be sliced too: bind it into ``forward_func`` instead
                (``functools.partial`` or a module attribute), or pass a different N.
            n_starts (int): random starts T per target, drawn from N(0, init_scale^2).
            l2 (float or "auto"): lambda > 0, with 2 * lambda and the step (``lr``, default
                1 / (2 * lambda)) finite in the layer's dtype. ``"auto"`` is the paper's heuristic: lambda such
                that the median FIM norm is comparable to the norm of the mean feature map of
                ``inputs`` at the layer (the norm of the mean, not the mean of the norms). Two
                fixed-point probe ascents on up to 16 targets x 4 starts, spread over the sorted
                targets (the order they are listed in does not matter, which ones do), each
                scaling lambda by median FIM norm / target norm, which is exact only where the
                FIM norm goes as 1/lambda (one linear region of the head): the final run's
                median norm was 0.78-1.0x the target in our checks. What it chose, and each
                probe's norm, is in ``self.diagnostics.l2_auto``. lambda can change the channel ranking:
                on the authors' ENCODE models (``benchmarks/encode422.py --l2``) the top-1
                known-motif hits went 228 / 273 / 276 of 276 at lambda 0.3 / 2.8 / 30, and
                "auto" chose ~0.46 there (237). Check a ranking you rely on at a few lambdas.
                Splitting a run into blocks of targets: choose lambda once for all of them
                with :meth:`choose_l2` and pass that number to every block (and one int
                ``seed``); "auto" per block would choose a lambda per block.
            seed (int, optional): seeds every start as (seed, target, start), so a start's
                draw does not depend on chunking or on the other targets. Where the start ends
                can, in float32: a batch of another size (another ``chunk_size``,
                ``memory_budget``, target list or block of ``attribute_in_blocks``) sums in
                another order, ~1e-7 relative, and where a step lands at a ReLU or max-pool
                kink that can flip the test that accepts the step, so that the start goes on
                from another point. This is rounding amplified by the ascent, not the
                stopping tolerance (``tol=0`` differs as much). Measured on six small PaperCNN
                models (7 and 64 outputs), H at the conv output, ``chunk_size=1`` against one
                chunk: whole FIMs differed by up to 0.7 of the largest |H|, FIVs by up to 2e-2
                of it; on three of them OFIVs (``summarize``) by up to 4% of the largest OFIV,
                and no channel changed category. In float64 (rounding ~1e-16, so a flip is far
                rarer), on three PaperCNN models (7 outputs), H at the conv and at the pool
                output, ``chunk_size=1`` and blocks of 3 against one call gave bit-identical
                FIMs, but not scores: a start's final score comes from a forward of the rows
                that stop with it, and a batch of another size rounds differently, so scores
                and the OFIVs ``summarize`` makes of them differed by up to 5e-16 and 6e-16
                relative (no category changed). On a deeper model
                (conv, max-pool, conv, tanh, mean, Linear) ``chunk_size=1`` changed two
                starts' step counts and moved FIMs by 2e-9 of the largest |H|, scores and OFIVs
                by 2e-10 relative. Use a float64 model and inputs (``model.double()``,
                ``x.double()``) where results must agree closely across chunk sizes, memory
                budgets or blocks; bit for bit is not promised.
                Same seed, same chunks, same thread count, same result on the CPU (another
                torch.set_num_threads can sum in another order too). None draws a seed from
                torch's global generator (``self.diagnostics.settings["seed"]``).
            attribute_to_layer_input (bool): optimise the layer's input instead of its output.
            return_scores (bool): also return the class score S_c at each final H. Either way
                they are kept in ``self.diagnostics.scores`` (numpy, (n_targets, n_starts)).
            fiv_only (bool): return each start's FIV (the mean of its FIM over the positions,
                what ``summarize`` uses) instead of the FIM, shape (n_targets, n_starts, K):
                only one chunk of FIMs is ever held, so thousands of targets on a large layer
                fit in memory (DeepSEA's 919 x 10 FIMs at the input of conv3 take ~1 GiB; 21,907
                targets on such a layer would take ~23 GiB).
                The FIVs ``summary.feature_importance_vectors`` gives for the full FIMs, to
                float rounding (~1e-9: here the mean over positions is taken in the layer's
                dtype).
            init (Tensor, optional): the starts themselves, shape (n_targets, n_starts,
                \*layer_shape), instead of the N(0, init_scale^2) draws (e.g. realistic feature
                maps, or starts shared with another run). The ``l2="auto"`` probes still use
                their own seeded draws.
            init_scale (float): standard deviation sigma of the starts.
            lr (float, optional): largest step size. Default 1 / (2 * l2): the exact step for
                the quadratic part of the objective (for a piecewise-linear head it lands on the
                optimum of the current linear region). Each start backtracks (halves its step)
                when the objective would fall and grows it again (x1.5, up to lr) after a
                success, so the ascent is monotone per start.
            max_steps (int): step limit per start.
            tol (float), patience (int): a start stops once ``patience`` accepted steps in a
                row each raised the objective by at most ``tol * (|objective| + 1e-8)``, or
                when its step falls below ``lr * 1e-7``.
            chunk_size (int, optional): rows (target x start pairs) per batch. Default: as many
                as fit ``memory_budget``. When given, ``memory_budget`` is ignored (warned).
                In float32 the results can depend on it (see ``seed``).
            memory_budget (int, optional): bytes of autograd activations per chunk. Default:
                half the free memory on CUDA, 2 GiB on the CPU. The per-row cost is measured
                with a small probe. It counts the tensors autograd saves and the output with its
                gradient, not the allocator's temporaries: a chunk's real peak is about 1.4-2x
                the budget (measured on DeepSEA at conv3's input: 123 MiB at a 64 MiB budget,
                779 MiB at 1 GiB; a 21,907-output head at its input: +172 MiB at 95 MiB).
                A row larger than the budget runs alone, with a warning. The chunk size it
                gives (``self.diagnostics.rows_per_chunk``) can change float32 results (see
                ``seed``); on CUDA the default follows the memory free at the call, so pass
                ``chunk_size`` to repeat a float32 run there.
            target_only_head (bool): when the model's last module is a plain ``nn.Linear``
                (not a subclass or a parametrized one) with at least 64 outputs, called once
                per forward on (rows, K), whose outputs are the model's outputs one to one,
                compute it for each row's target only (one weight row instead of the whole
                (n_out, K) product; the other outputs are zeros the score never reads, and
                forward hooks on that Linear see them). The probe checks it on 4 random H and
                4 targets (the score's gradient reaches the target's column only, and scores
                and gradients equal the full head's); each start's final score is then the
                full head's, and a mismatch there (outputs mixed only at larger values) re-runs
                the chunk with the full head, with a warning. Its product sums in another
                order than the full head's, so in float32 results can differ from
                ``target_only_head=False`` by the mechanism that ``seed`` describes across
                chunk sizes (on its three 64-output models: whole FIMs by up to 1.5e-3 of the
                largest |H|, scores by 5e-5 relative; but a flipped step can move a start as
                far as a chunk size does). In float64 (a 70-output PaperCNN) the FIMs were
                bit-identical and the scores agreed to 3e-16 relative; 16-bit floats agree only
                loosely.
                ``self.diagnostics.target_only_head`` says whether it ran. False: always the
                full head. After such a fallback ``callback`` sees the re-run chunk's steps
                again, from step 1.
            verbose (bool): show progress bars (starts converged), for the two probe ascents
                of ``l2="auto"`` too.
            callback (callable, optional): called after every step as
                ``callback(step, rows, objective)`` with the 1-based step of the current
                chunk, the flat row indices (target_index * n_starts + start) still running,
                and their current objective (numpy). For monitoring and convergence studies.

        Returns:
            fims (Tensor): shape (n_targets, n_starts, \*layer_shape), on the layer's device
                ((n_targets, n_starts, K) with ``fiv_only``). Axis 1 of the layer's value is
                the channel axis K, as in PyTorch's convolutions (N, K, L); FIVs average over
                the axes after it. For a channels-last layer (N, L, K), e.g. a Linear applied
                per position, optimise a layer whose value is (N, K, L), or permute the FIMs
                before ``summarize``.
            scores (Tensor, with ``return_scores=True``): shape (n_targets, n_starts), in the
                dtype and on the device of the model's output (which may differ from the
                layer's, e.g. a bf16 body returning float32 logits).
            Per-start diagnostics (steps, objective, convergence, scores, l2) are in
            ``self.diagnostics`` (:class:`AscentDiagnostics`).

        Raises:
            ValueError: among others, for a layer whose value is not (N, K, ...) (not batch
                first, or one number per example), an l2 (or lr) the layer's dtype cannot
                hold (also a lambda ``"auto"`` would probe with), or a non-finite objective
                (the message says which part overflowed: the class score; ||H||^2 of the
                starts, which are then too large, or of a later H, when l2 is too small; the
                penalty l2 * ||H||^2, when l2 is too large; or their difference).
            TypeError: e.g. a layer whose value is not one tensor, or whose input is passed
                by keyword, with ``attribute_to_layer_input=True``.
            Exception: an error raised by the model's first forward keeps its type (e.g.
                NotImplementedError, torch.OutOfMemoryError) and gets a hint about ``inputs``
                in its message (or as a note).
        """
        t0 = time.perf_counter()
        self.diagnostics = None  # never the previous call's, also when this one raises
        if torch.is_inference_mode_enabled():
            raise RuntimeError("attribute() needs gradients and cannot run inside "
                               "torch.inference_mode(); call it outside that block")
        n_starts = _check_positive_int(n_starts, "n_starts")
        max_steps = _check_positive_int(max_steps, "max_steps")
        patience = _check_positive_int(patience, "patience")
        _check_positive_float(init_scale, "init_scale")
        _check_positive_float(tol, "tol", allow_zero=True)
        if lr is not None:
            _check_positive_float(lr, "lr")
        if chunk_size is not None:
            chunk_size = _check_positive_int(chunk_size, "chunk_size")
        if memory_budget is not None:
            memory_budget = _check_positive_int(memory_budget, "memory_budget")
        l2 = _check_l2(l2)

        inputs = _as_tuple(inputs)
        if not inputs or not all(isinstance(x, Tensor) for x in inputs):
            raise TypeError("inputs must be a tensor or a tuple of tensors")
        n_examples = inputs[0].shape[0] if inputs[0].dim() > 0 else 0
        if n_examples < 1:
            raise ValueError("inputs must hold at least one example (shape (N, ...), N >= 1)")
        for i, x in enumerate(inputs[1:], 1):
            if x.dim() == 0 or x.shape[0] != n_examples:
                raise ValueError(
                    f"inputs[{i}] has shape {tuple(x.shape)}, but inputs[0] has N = {n_examples} "
                    "examples: every tensor in `inputs` is per-example, (N, ...). Pass other "
                    "arguments (scalars, per-output tensors) in additional_forward_args.")
        if any(x.device.type == "meta" for x in inputs):
            raise ValueError("inputs are on the 'meta' device, which holds no values: move "
                             "the model and the inputs to a real device (cpu, cuda)")
        if any(x.is_floating_point() and not bool(torch.isfinite(x).all()) for x in inputs):
            raise ValueError("inputs contain NaN or inf")
        if l2 == "auto" and (n_examples == 1 or all(
                x.numel() == 0 or bool((x == x.flatten()[0]).all()) for x in inputs)):
            _warn(
                "l2='auto' sets lambda from the mean activation of `inputs` at the layer, and "
                f"`inputs` is {'one example' if n_examples == 1 else 'constant'}: pass a few "
                "hundred realistic sequences (e.g. held-out data), or an explicit l2.",
                UserWarning, stacklevel=3)
        extra = _forward_args(additional_forward_args)
        seed = _resolve_seed(seed)

        owner = _owning_module(self.forward_func)
        hidden_from = None
        if owner is not None and not any(m is self.layer for m in owner.modules()):
            hidden_from, owner = type(owner).__name__, None   # warned once the layer is reached
        elif owner is None:
            _warn(
                "forward_func is not an nn.Module (or a bound method of one), so only `layer` "
                "can be switched to eval mode and frozen during the ascent: if the model is in "
                "train mode, its Dropout stays on and its BatchNorm running statistics are "
                "updated. Call model.eval() first, or wrap the model in an nn.Module (e.g. one "
                "whose forward returns model(x)[1]).", stacklevel=3)
        scope = owner if owner is not None else self.layer
        if any(p.device.type == "meta" for p in scope.parameters()):
            raise ValueError("the model's parameters are on the 'meta' device, which holds no "
                             "values: load its weights on a real device (cpu, cuda) first")
        modes = module_modes(scope)
        params = [(p, p.requires_grad) for p in scope.parameters()]

        swap = _LayerSwap(self.layer, attribute_to_layer_input)
        run = None
        try:
            scope.eval()
            for p, _ in params:
                p.requires_grad_(False)
            run = _Runner(self.forward_func, swap, inputs, extra, n_examples)
            run.probe(owner, target_only_head=bool(target_only_head))
            if hidden_from is not None:
                _warn(
                    f"layer {type(self.layer).__name__} is not a submodule of forward_func "
                    f"({hidden_from}), yet the forward reaches it: the model that holds it is "
                    "hidden from LayerFeatureOptimizer (e.g. stored outside the module tree), so "
                    "only `layer` can be switched to eval mode and frozen during the ascent: if "
                    "that model is in train mode, its Dropout stays on and its BatchNorm running "
                    "statistics are updated. Pass the model that holds the layer, or call "
                    "model.eval() first.", stacklevel=3)
            l2 = _check_l2(l2, run.dtype, lr)     # now that the layer's dtype is known
            targets = _parse_targets(target, run.output_shape)
            _warn_per_example_target(target, n_examples, stacklevel=3)
            run.warn_if_bypassed(targets)
            if init is not None:
                init = _check_init(init, (len(targets), n_starts) + run.layer_shape)
            if chunk_size is None:
                budget = memory_budget or _default_budget(run.device)
                per_row = run.bytes_per_row()
                chunk_size = max(1, int(budget // max(per_row, 1)))
                if per_row > budget:
                    _warn(
                        f"one row (target x start) of the ascent needs ~{_size(per_row)} of "
                        f"autograd activations, more than memory_budget = {_size(budget)}: "
                        "running one row per chunk, which still exceeds the budget.",
                        RuntimeWarning, stacklevel=3)
            elif memory_budget is not None:
                _warn("chunk_size is given, so memory_budget is ignored",
                              UserWarning, stacklevel=3)
            if isinstance(l2, str):
                l2, l2_auto = self._auto_l2(run, targets, init_scale, seed, max_steps,
                                            tol, patience, chunk_size, verbose)
                # choose_l2 returns lambda only: the step is the later call's (its lr)
                _check_l2(l2, run.dtype, lr, name="the l2 that l2='auto' chose",
                          check_step=not self._l2_only)
                if self._l2_only:           # choose_l2: the finally below restores the model
                    return l2, l2_auto
            else:
                l2_auto = None
            step_max = float(lr) if lr is not None else 1.0 / (2.0 * l2)
            fims, scores, steps, objective, converged, peak = self._ascend_all(
                run, targets, n_starts, l2, step_max, init_scale, seed, max_steps, tol,
                patience, chunk_size, verbose, callback, fiv_only=bool(fiv_only), init=init)
        finally:
            swap.remove()
            if run is not None and run.head is not None:
                run.head.remove()
            for p, rg in params:
                p.requires_grad_(rg)
            # last: through train(), so a module overriding it (MC sampling) gets its own mode
            # back (a train() that raises is warned about, its flags set directly)
            restore_modes(modes)

        n_rows = len(targets) * n_starts
        self.diagnostics = AscentDiagnostics(
            targets=np.asarray(targets), steps=steps, objective=objective, converged=converged,
            l2=float(l2), lr=step_max, l2_auto=l2_auto,
            n_chunks=math.ceil(n_rows / chunk_size), rows_per_chunk=min(chunk_size, n_rows),
            recompute_upstream=run.recompute, target_only_head=run.head is not None,
            seconds=time.perf_counter() - t0,
            settings=dict(n_starts=n_starts, seed=seed, init_scale=init_scale,
                          max_steps=max_steps, tol=tol, patience=patience,
                          attribute_to_layer_input=attribute_to_layer_input,
                          fiv_only=bool(fiv_only)),
            scores=_scores_numpy(scores))
        n_open = int((~converged).sum())
        if n_open:
            _warn(
                f"{n_open} of {n_rows} starts stopped at max_steps={max_steps} before converging "
                "(self.diagnostics.converged): their FIMs are not at an optimum. Raise max_steps, "
                "or l2 if the objective keeps growing.", RuntimeWarning, stacklevel=3)
        zero = [t for t, z in zip(targets, _collapsed(peak, init_scale).tolist()) if z]
        if zero:
            _warn(
                f"the FIMs of target(s) {zero[:10]}{' ...' if len(zero) > 10 else ''} are all "
                "zero: at this l2 no start found a direction that raises the score (every "
                "channel lowers it, or the score is flat there). Their OFIV will be 0 and their "
                "similarity to other classes undefined; try a smaller l2.",
                RuntimeWarning, stacklevel=3)
        if return_scores:
            return fims, scores
        return fims

    # ------------------------------------------------------------------ internals
    def _auto_l2(self, run, targets, init_scale, seed, max_steps, tol, patience, chunk_size,
                 verbose=False):
        """The paper's heuristic: FIM norm comparable to the norm of the mean feature map."""
        mean_map = run.mean_activation()
        target_norm = float(mean_map.norm())
        if not math.isfinite(target_norm) or target_norm <= 0:
            raise ValueError(
                "l2='auto' needs a non-zero mean activation at the layer on `inputs`; it is "
                f"{target_norm}. Pass realistic example sequences or an explicit l2.")
        # spread over the sorted targets: the same probes whatever order they are listed in
        ordered = sorted(set(targets))
        pick = np.unique(np.linspace(0, len(ordered) - 1, min(16, len(ordered))).round().astype(int))
        probe_targets = [ordered[i] for i in pick]
        lam, history = 1.0, []
        for i in range(2):
            try:   # the probes step by 1 / (2 lambda): a float16 layer may not hold it
                _check_l2(lam, run.dtype, None)
            except ValueError:
                raise ValueError(
                    f"l2='auto' cannot probe this layer in {run.dtype}: its probe {i + 1} needs "
                    f"lambda = {lam:.4g}, and 2 * lambda or the probe's step 1 / (2 * lambda) "
                    f"is beyond the largest {run.dtype} value ({torch.finfo(run.dtype).max:.4g})."
                    " Pass an explicit l2 (with lr for a small one), or choose l2 on a float32 "
                    "copy of the model.") from None
            with _deeper_warnings(1):     # _ascend_all's warnings count from attribute
                fims, _, _, _, _, peak = self._ascend_all(
                    run, probe_targets, 4, lam, 1.0 / (2.0 * lam), init_scale, seed + 7919,
                    max_steps, tol, patience, chunk_size, verbose,
                    desc=f"l2='auto' probe {i + 1}/2")
            norms = fims.flatten(2).norm(dim=2)  # (n_probe_targets, 4)
            # A target whose score ignores the layer (another head of the model) ends at H = 0
            # from every start; it says nothing about the scale, so it is left out.
            live = ~torch.as_tensor(_collapsed(peak, init_scale))
            flat = [t for t, keep in zip(probe_targets, live.tolist()) if not keep]
            probe_norm = float(norms[live].median()) if bool(live.any()) else 0.0
            history.append(dict(l2=lam, median_fim_norm=probe_norm, flat_targets=flat))
            if not math.isfinite(probe_norm) or probe_norm <= 0:
                raise ValueError(
                    "l2='auto' failed: the probe ascent at l2=%g gave FIM norm %r for targets "
                    "%s (their score has no gradient at the layer?). Pass an explicit l2."
                    % (lam, probe_norm, probe_targets))
            lam = lam * probe_norm / target_norm
        return lam, dict(mean_activation_norm=target_norm, probes=history,
                         probe_targets=probe_targets, chosen=lam)

    def _ascend_all(self, run, targets, n_starts, l2, step_max, init_scale, seed, max_steps,
                    tol, patience, chunk_size, verbose, callback=None, desc="DeepResolve ascent",
                    fiv_only=False, init=None):
        n_t = len(targets)
        n_rows = n_t * n_starts
        shape = run.layer_shape
        device, dtype = run.device, run.dtype
        out_shape = shape[:1] if fiv_only else shape
        fims = torch.empty((n_rows,) + out_shape, device=device, dtype=dtype)
        # the scores are the model's outputs: its dtype and device, which can differ from the
        # layer's (a bf16 body with float32 logits, a float64 head, a model split over devices)
        scores = torch.empty(n_rows, device=run.out_device, dtype=run.out_dtype)
        steps = np.zeros(n_rows, dtype=np.int64)
        objective = np.zeros(n_rows)
        converged = np.zeros(n_rows, dtype=bool)
        peak = np.zeros(n_rows)  # max |H| of each final FIM (also when only FIVs are kept)
        row_target = torch.tensor(targets, device=device).repeat_interleave(n_starts)
        bar = _progress(n_rows, verbose, desc)
        n_chunks = math.ceil(n_rows / chunk_size)
        try:
            for lo in range(0, n_rows, chunk_size):
                hi = min(n_rows, lo + chunk_size)
                if bar is not None:    # read by _ascend's postfix: where a long run is
                    bar.chunk_label = f"chunk {lo // chunk_size + 1}/{n_chunks}, " if n_chunks > 1 else ""
                if init is not None:
                    h0 = init.reshape((n_rows,) + shape)[lo:hi].to(device=device, dtype=dtype)
                else:
                    h0 = torch.stack([start_draw(seed, targets[r // n_starts], r % n_starts, shape)
                                      for r in range(lo, hi)]).to(device=device, dtype=dtype) * init_scale
                args = (h0, row_target[lo:hi], l2, step_max, max_steps, tol, patience, lo, fims,
                        scores, steps, objective, converged, peak, bar, targets, n_starts, callback)
                try:
                    _ascend(run, *args)
                except _HeadMismatch as e:
                    r = e.row
                    _warn(
                        f"the target-only head gave another score than the model's full final "
                        f"Linear at the final H of target {targets[r // n_starts]}, start "
                        f"{r % n_starts}: something after that Linear mixes its outputs at "
                        f"such values (e.g. a norm clip on the logits). Rows {lo}-{hi - 1} are "
                        "re-run, and the rest run, with the full head; target_only_head=False "
                        "skips the narrow head from the start.", RuntimeWarning, stacklevel=4)
                    run.head.remove()
                    run.head = None
                    if bar is not None:
                        bar.n = lo
                        bar.refresh()
                    _ascend(run, *args)
        finally:
            if bar is not None:
                bar.set_postfix_str("", refresh=False)
                bar.close()
        return (fims.reshape((n_t, n_starts) + out_shape), scores.reshape(n_t, n_starts),
                steps.reshape(n_t, n_starts), objective.reshape(n_t, n_starts),
                converged.reshape(n_t, n_starts), peak.reshape(n_t, n_starts))


def _ascend(run, h, tgt, l2, step_max, max_steps, tol, patience, offset, fims, scores, steps,
            objective, converged, peak, bar, targets, n_starts, callback=None):
    """Monotone per-row gradient ascent with backtracking; rows leave the batch as they stop.

    Writes the final rows into fims/scores (tensors) and steps/objective/converged (numpy) at
    ``offset + row``. ``h``, ``tgt`` and the per-row state live on the layer's device; the
    scores keep the output's dtype."""
    rows = torch.arange(h.shape[0], device=h.device)
    view = (-1,) + (1,) * (h.dim() - 1)
    obj, score, grad = _objective(run, h, tgt, l2, rows, offset, targets, n_starts, at_start=True)
    step = torch.full((h.shape[0],), step_max, device=h.device, dtype=h.dtype)
    calm = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
    n_steps = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
    floor = step_max * 1e-7
    shown = time.perf_counter()

    def retire(mask, done_flag):
        idx = (rows[mask] + offset).cpu().numpy()
        done_h = h[mask].detach()
        done_score = score[mask].detach()
        if run.head is not None:  # the narrow head's score must be the model's own
            full = run.full_scores(done_h, tgt[mask]).to(done_score.device)
            bad = ~_close_rows(done_score, full)
            if bool(bad.any()):
                raise _HeadMismatch(int(idx[int(bad.nonzero()[0, 0])]))
            done_score = full
        peak[idx] = done_h.flatten(1).abs().amax(1).double().cpu().numpy()
        if fims.dim() < h.dim():  # fiv_only: the mean over the positions
            done_h = done_h.flatten(2).mean(2)
        fims[idx] = done_h
        scores[idx] = done_score.to(scores.device)
        steps[idx] = n_steps[mask].cpu().numpy()
        objective[idx] = obj[mask].detach().double().cpu().numpy()
        converged[idx] = done_flag
        if bar is not None:
            bar.update(len(idx))

    for it in range(max_steps):
        cand = torch.addcmul(h, step.view(view), grad)
        c_obj, c_score, c_grad = _objective(run, cand, tgt, l2, rows, offset, targets, n_starts)
        gain = c_obj - obj
        ok = gain >= 0
        okv = ok.view(view)
        h = torch.where(okv, cand, h)
        grad = torch.where(okv, c_grad, grad)
        obj = torch.where(ok, c_obj, obj)
        score = torch.where(ok, c_score, score)
        step = torch.where(ok, torch.clamp(step * 1.5, max=step_max), step * 0.5)
        small = ok & (gain <= tol * (obj.abs() + 1e-8))
        calm = torch.where(small, calm + 1, torch.where(ok, torch.zeros_like(calm), calm))
        n_steps += 1
        if bar is not None and time.perf_counter() - shown > 0.5:
            bar.set_postfix_str(f"{getattr(bar, 'chunk_label', '')}step {it + 1}, "
                                f"{h.shape[0]} running", refresh=True)
            shown = time.perf_counter()
        if callback is not None:
            callback(it + 1, (rows + offset).cpu().numpy(), obj.double().cpu().numpy())
        done = (calm >= patience) | (step < floor)
        if bool(done.any()):
            retire(done, True)
            keep = ~done
            h, grad, obj, score, step, calm, n_steps, rows, tgt = (
                h[keep], grad[keep], obj[keep], score[keep], step[keep], calm[keep],
                n_steps[keep], rows[keep], tgt[keep])
            if h.shape[0] == 0:
                return
    retire(torch.ones_like(obj, dtype=torch.bool), False)


def _objective(run, h, tgt, l2, rows, offset, targets, n_starts, at_start=False):
    """S_c(H) - l2 ||H||^2 per row, the class score, and the gradient w.r.t. H."""
    h = h.detach().requires_grad_(True)
    tgt = tgt.to(run.out_device)  # indexes the output, which may be on another device
    # H stays swapped in until the backward has run: activation checkpointing (torch.utils.
    # checkpoint) re-runs the forward during the backward, and must see H again
    with torch.enable_grad():
        try:
            if run.head is not None:
                run.head.targets = tgt
            out = run.forward(h, keep_swap=True)
            score = out.gather(1, tgt.view(-1, 1)).squeeze(1)
            if not score.requires_grad:
                raise ValueError(
                    f"the model's output does not depend on layer {run._layer_name()} through "
                    "autograd (its value is detached, computed under torch.no_grad(), inside "
                    "torch.utils.checkpoint with use_reentrant=True (use use_reentrant=False), "
                    "or not used on the way to the output), so there is no gradient to ascend. "
                    "Choose a layer the output is differentiable through.")
            (grad,) = torch.autograd.grad(score.sum(), h, allow_unused=True)
        finally:
            run.swap.replacement = None
            if run.head is not None:
                run.head.targets = None
        if grad is None:  # the output needs grad through the weights, but not through H
            raise ValueError(
                f"the model's output does not depend on the value of layer "
                f"{run._layer_name()}: it is computed but not used on the way to the output "
                "(or detached there). Choose a layer the output is differentiable through.")
    h = h.detach()
    score = score.detach().to(h.device)   # the output's dtype, beside the rows' other state
    sq_norm = h.flatten(1).square().sum(1)
    penalty = l2 * sq_norm
    obj = score - penalty
    grad = torch.add(grad, h, alpha=-2.0 * l2)  # the regulariser's gradient, analytically
    if not bool(torch.isfinite(obj).all()):
        bad = int((~torch.isfinite(obj)).nonzero()[0, 0])
        r = int(rows[bad]) + offset
        where = f"target {targets[r // n_starts]}, start {r % n_starts}"
        if not bool(torch.isfinite(score[bad])):
            raise ValueError(
                f"non-finite class score during the ascent ({where}): the model's output is "
                "not finite at this H. l2 may be too small for the scores to stay finite (H "
                "grows as l2 shrinks), or too large for the layer's dtype; try another l2 or "
                "a smaller init_scale, or check the model for overflow.")
        if at_start and not bool(torch.isfinite(sq_norm[bad])):
            raise ValueError(
                f"non-finite objective at the start of the ascent ({where}): ||H||^2 of the "
                f"starting point overflows the layer's dtype {h.dtype}, before any step. The "
                "starts are too large: use a smaller init_scale (or init).")
        if not bool(torch.isfinite(sq_norm[bad])):
            raise ValueError(
                f"non-finite objective during the ascent ({where}): the class score is "
                f"finite, but ||H||^2 overflows the layer's dtype {h.dtype} (l2 = {l2:g}): H "
                "grew without bound, so l2 is too small to hold it (the ascent's H grows as "
                "l2 shrinks). Use a larger l2.")
        if not bool(torch.isfinite(penalty[bad])):
            raise ValueError(
                f"non-finite objective during the ascent ({where}): the class score is "
                f"finite, but the penalty l2 * ||H||^2 overflows the layer's dtype {h.dtype} "
                f"(l2 = {l2:g}): l2 is too large for this dtype at this scale of H. Use a "
                "smaller l2 (or init_scale).")
        raise ValueError(
            f"non-finite objective during the ascent ({where}): the class score and the "
            f"penalty l2 * ||H||^2 are finite, but their difference overflows {obj.dtype} "
            f"(l2 = {l2:g}). l2 may be too small for the scores to stay finite, or too large "
            "for the layer's dtype; try another l2 or a smaller init_scale.")
    return obj, score, grad


class _Runner:
    """Runs ``forward_func`` with the layer's value swapped for a batch of H."""

    def __init__(self, forward_func, swap: _LayerSwap, inputs, extra, n_examples):
        self.forward_func = forward_func
        self.swap = swap
        self.inputs = inputs
        self.extra = extra
        self.n_examples = n_examples
        self.first = tuple(x[:1].detach() for x in inputs)
        # which additional arguments are per-example tensors (first dimension N): sliced like inputs
        self.batched = tuple(isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n_examples
                             for a in extra)
        self.first_extra = tuple(a[:1] if b else a for a, b in zip(extra, self.batched))
        self.recompute = False
        self.head: Optional[_TargetHead] = None

    def _call(self, inputs, extra):
        self.swap.calls = 0
        out = self.forward_func(*inputs, *extra)
        if not isinstance(out, Tensor):
            if isinstance(out, Mapping):   # a dict of heads: name them by key
                keys = list(out.keys())
                what = (f"a {type(out).__name__} with keys {keys[:8]}"
                        f"{' ...' if len(keys) > 8 else ''}")
                pick = _head_pick(keys)
            else:
                what, pick = type(out).__name__, "model(x)[1] for a (profile, counts) model"
            raise TypeError(
                f"forward_func must return one tensor of logits, got {what}: wrap the model "
                "in an nn.Module whose forward returns the head to explain (e.g. "
                f"{pick}), so that its mode is managed too")
        return out

    def _capture(self, inputs, extra):
        self.swap.replacement = None
        self.swap.captured = None
        out = self._call(inputs, extra)
        check_layer_calls(self.swap.calls, self._layer_name(),
                          model=_owning_module(self.forward_func), layer=self.swap.module)
        cap = self.swap.captured
        if self.swap.on_input:
            if len(cap) == 0:   # the pre-hook sees positional arguments only
                raise TypeError(
                    f"layer {self._layer_name()} gets no positional argument: it is called "
                    "with its input by keyword (e.g. layer(input=h)), which a layer-input hook "
                    "cannot replace. Call it positionally (layer(h)) in the model, or pass the "
                    "module that produces that input as the layer, with "
                    "attribute_to_layer_input=False.")
            if len(cap) != 1 or not isinstance(cap[0], Tensor):
                known = [p for p in self._input_producers(inputs, extra) if p is not None]
                made = (f" ({', '.join(dict.fromkeys(known))} here)" if known else "")
                raise TypeError(
                    f"the input of layer {self._layer_name()} is not one tensor "
                    f"({len(cap)} positional argument{'s' if len(cap) != 1 else ''}"
                    f"{'' if len(cap) != 1 else ', a ' + type(cap[0]).__name__}); H must be "
                    "a single tensor. Optimise the output of the module that produces one of "
                    f"them{made}, with attribute_to_layer_input=False, or have the model "
                    "combine the inputs into one tensor in a module of its own (e.g. one that "
                    "returns torch.cat((a, b), 1), which this layer then splits) and optimise "
                    "that module's output")
            cap = cap[0]
        elif not isinstance(cap, Tensor):
            raise TypeError(
                f"the output of layer {self._layer_name()} is a {type(cap).__name__}, not one "
                "tensor; choose a layer with a single tensor output")
        return cap.detach(), out

    def _layer_name(self):
        return self.swap.name

    def _input_producers(self, inputs, extra):
        """For the layer's positional inputs, the module of forward_func whose output each one
        is, as Python (``model.ca``), or None (made by a function, or not found): one more
        forward, hooks on every module, for an error message. [] when forward_func is no
        module or that forward fails."""
        model = _owning_module(self.forward_func)
        if model is None:
            return []
        made, args = {}, []

        def note(name):
            def hook(module, a, out):   # children finish first: the innermost module wins
                old = made.get(id(out))
                if isinstance(out, Tensor) and (old is None or old[1]() is None):
                    made[id(out)] = (name, weakref.ref(out))
            return hook

        handles = [m.register_forward_hook(note(n)) for n, m in model.named_modules()
                   if n and m is not self.swap.module]
        handles.append(self.swap.module.register_forward_pre_hook(
            lambda module, a: args.append(a) if not args else None))
        try:
            with torch.no_grad():
                self._call(inputs, extra)
        except Exception:   # noqa: BLE001 - only a message is at stake
            return []
        finally:
            for h in handles:
                h.remove()
        found = []
        for a in (args[0] if args else ()):
            hit = made.get(id(a))
            found.append(module_expr(model, hit[0], "model")
                         if hit is not None and hit[1]() is a else None)
        return found

    def probe(self, owner=None, target_only_head=False):
        try:
            with torch.no_grad(), leaf_module_trace(owner) as last:
                value, out = self._capture(self.first, self.first_extra)
        except RuntimeError as e:
            hint = (f"the model failed on the first example of `inputs`, shape "
                    f"{tuple(self.first[0].shape)}; if the error is about shapes: inputs must "
                    "be a batch (N, ...) as the model takes it")
            p_dtype = next((p.dtype for p in owner.parameters() if p.is_floating_point()),
                           None) if owner is not None else None
            in_dtypes = sorted({str(t.dtype) for t in self.first if torch.is_tensor(t)})
            if p_dtype is not None and any(d != str(p_dtype) for d in in_dtypes) \
                    and "type" in str(e):  # torch: "Input type ...", "scalar type ...", "dtype"
                hint = (f"`inputs` are {', '.join(in_dtypes)} but the model's parameters are "
                        f"{p_dtype}: cast the inputs (e.g. inputs.to({p_dtype})); "
                        "LayerFeatureOptimizer, like Captum, passes them to the model as they are")
            hinted = _with_hint(e, hint)
            if hinted is e:
                raise               # the same object, its traceback untouched
            raise hinted from e
        if not value.is_floating_point():
            raise TypeError(f"the layer's value has dtype {value.dtype}; it must be floating point")
        if value.dim() == 0 or value.shape[0] != 1:
            raise ValueError(
                f"the value of layer {self._layer_name()} has shape {tuple(value.shape)} for one "
                "example: its first axis is not the batch (e.g. a sequence-first (L, N, E) "
                "layout, batch_first=False). H must be (N, ...): choose a layer whose value is "
                "batch-first, or wrap the model so that it is.")
        if value.dim() == 1:
            raise ValueError(
                f"the value of layer {self._layer_name()} is one number per example, shape "
                "(N,): H needs a feature axis (the channels K that FIMs and FIVs are over). "
                "Choose a layer whose value is (N, K, ...), e.g. the module before it.")
        self.layer_shape = tuple(value.shape[1:])
        self.device, self.dtype = value.device, value.dtype
        self.swap_value = value  # the first example's own H (for the bypass check)
        squashed = how_squashed(last, self._grad_output(value), owner=owner)
        if squashed is not None:
            log = "LogSoftmax" in squashed or "log_softmax" in squashed
            saturate = ("Log-probabilities saturate near 0" if log
                        else "Squashed outputs saturate near 1")
            _warn(
                f"the model {squashed}: this run maximises that squashed output as returned, "
                "but DeepResolve is defined on the score before it (the pre-sigmoid / "
                f"pre-softmax logits). {saturate}, which shrinks l2='auto' and changes the "
                "channel ranking; "
                f"{logits_advice(last, owner, self.swap.module)}.",
                UserWarning, stacklevel=4)
        reason = channels_last_reason(self.swap.module, self.swap.on_input, value.shape,
                                      last)
        if reason:
            _warn(
                f"the value of layer {self._layer_name()}, shape {tuple(value.shape[1:])} per "
                f"example, looks channels-last: {reason}. DeepResolve reads axis 1 as the "
                f"channels ({value.shape[1]} of them) and averages over the axes after it, so "
                "its 'channels' would be positions here. Optimise a layer whose value is "
                "(N, K, L), or permute: wrap the model so that the layer's value is (N, K, L).",
                UserWarning, stacklevel=4)
        if out.dim() == 0 or out.shape[0] != 1:
            unsliced = [tuple(a.shape) for a, b in zip(self.extra, self.batched)
                        if isinstance(a, Tensor) and a.dim() > 0 and not b]
            hint = (f"; additional_forward_args tensors of shape {unsliced} were passed whole, "
                    f"since only a first dimension equal to N = {self.n_examples} marks a "
                    "per-example argument" if unsliced else "")
            raise ValueError(
                "forward_func must return outputs with a batch dimension, shape (N, ...); "
                f"got {tuple(out.shape)} for one example{hint}")
        self.output_shape = tuple(out.shape[1:])
        # the scores' dtype and device: a model may compute the layer in one dtype (bf16) and
        # return its logits in another (.float()), or on another device
        self.out_dtype, self.out_device = out.dtype, out.device
        # Can H be broadcast from the layer on (one example through the upstream part)?
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            trial = torch.randn((2,) + self.layer_shape, generator=g).to(self.device, self.dtype)
            try:  # a model that cannot take 2 rows of H against 1 example fails here: expand
                ok = self._rows_independent(trial, expand=False)
            except Exception:  # whatever it raises (RuntimeError, assert, a ValueError of its
                ok = False     # own batch check); a KeyboardInterrupt still propagates
            self.recompute = not ok
            # The same test on the expanded path, at a tolerance that low-precision kernels
            # (TF32, half) choosing differently for 1 and 2 rows cannot fail.
            if self.recompute and not self._rows_independent(trial, expand=True, loose=True):
                _warn(self._mixing_message(trial), RuntimeWarning, stacklevel=4)
        if target_only_head:
            self.head = self._target_head(last[-1] if last else None)

    def _target_head(self, module):
        """A :class:`_TargetHead` on ``module`` (the leaf module that ran last) when it is a plain
        ``nn.Linear``, called once per forward, whose outputs are the model's outputs one to one:
        on 4 random rows of H and 4 targets (the first, the last, two drawn) each score's
        gradient with respect to the Linear's output is non-zero in the target's column only,
        and the narrow head gives the full head's scores and gradients. Else None."""
        n_out = int(np.prod(self.output_shape)) if self.output_shape else 1
        if (type(module) is not nn.Linear or module.out_features != n_out
                or n_out < _TARGET_HEAD_MIN_OUTPUTS or "forward" in module.__dict__
                or (not self.swap.on_input and any(m is module for m in self.swap.module.modules()))):
            return None
        g = torch.Generator().manual_seed(1)
        trial = torch.randn((4,) + self.layer_shape, generator=g).to(self.device, self.dtype)
        drawn = (torch.randperm(n_out - 2, generator=g)[:2] + 1).tolist()
        tgt = torch.tensor([0, n_out - 1] + drawn, device=self.out_device)
        head, accepted, seen = _TargetHead(module), False, []
        hook = module.register_forward_hook(lambda m, a, out: seen.append(out))
        try:
            full = self._score_and_grad(trial, tgt, seen)
            hook.remove()
            if len(seen) != 1:
                return None
            lin_grad = full[2]
            if lin_grad.dim() != 2:   # a Linear per position: never narrow (see _forward)
                return None
            one_hot = torch.zeros(lin_grad.shape, dtype=torch.bool, device=lin_grad.device)
            one_hot[torch.arange(4, device=lin_grad.device), tgt] = True
            if not torch.equal(lin_grad != 0, one_hot):
                return None
            head.targets = tgt
            fast = self._score_and_grad(trial, tgt)
            accepted = head.used and all(_same(f, g, loose=True) for f, g in zip(fast, full))
        except Exception:  # model code on a patched module may raise anything: run it whole
            accepted = False
        finally:
            hook.remove()
            head.targets = None
            if not accepted:
                head.remove()
        return head if accepted else None

    def _score_and_grad(self, h, tgt, linear_out=None):
        """Scores (rows,) and their gradient w.r.t. h; with ``linear_out`` (a list a hook fills
        with the head's output) also the gradient w.r.t. that output."""
        h = h.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            try:
                out = self.forward(h, keep_swap=True)
                score = out.gather(1, tgt.view(-1, 1)).squeeze(1)
                wrt = [h] + ([linear_out[-1]] if linear_out else [])
                grads = torch.autograd.grad(score.sum(), wrt, allow_unused=True)
            finally:
                self.swap.replacement = None
        if linear_out and grads[1] is None:
            grads = (grads[0], torch.zeros_like(linear_out[-1]))
        return (score.detach(),) + tuple(grads)

    def full_scores(self, h, tgt):
        """The model's own scores at h (rows,), the final Linear computed whole."""
        with torch.no_grad():
            out = self.forward(h)
            return out.gather(1, tgt.to(out.device).view(-1, 1)).squeeze(1)

    def _grad_output(self, value):
        """The output of the first example with H = its own value, requiring grad (so that a
        functional torch.sigmoid at the end shows in its graph); None if that forward fails."""
        try:
            with torch.enable_grad():
                return self._forward_raw(value.clone().requires_grad_(True), expand=False)
        except RuntimeError:
            return None

    def warn_if_bypassed(self, targets):
        """Warn when the targets' scores depend, by a path around the layer, on the layer's own
        input (a residual h + layer(h) at a layer input) or on per-example arguments (a skip
        connection, a covariate): the ascent holds that path at the first example's value."""
        around = self._paths_around_layer(self.swap_value, targets)
        if "the layer's input" in around:   # the inputs reach the output through it too: one
            # warning for that path (a covariate beside it is not told apart)
            _warn(
                f"the input of layer {self._layer_name()} also reaches the output by another "
                "path (e.g. a residual connection h + layer(h)): the hook replaces only the "
                "layer's own copy, so the other path keeps the first example's value and H is "
                "not the whole tensor, as Captum's layer-input attributions take it. To "
                "optimise the tensor itself, attribute to the output of the module that "
                "produces it.", UserWarning, stacklevel=4)
        elif around:
            _warn(
                f"{' and '.join(around)} also reach the scores by a path that does not go "
                f"through layer {self._layer_name()} (e.g. a skip connection around it, or a "
                "per-example covariate): the ascent holds that path at the first example's "
                "value, so the FIMs are optimal for that example's context and change if "
                "`inputs` are reordered. Choose a layer every path goes through, or pass the "
                "context you want as the first example.", UserWarning, stacklevel=4)

    def _paths_around_layer(self, value, targets, flip=True):
        """What the targets' scores depend on, through autograd, with H = ``value`` swapped in:
        ``"the layer's input"`` (its original input, for a layer-input H) and the per-example
        arguments whose examples differ (``"inputs[0]"``, ``"additional_forward_args[1]"``).
        One forward and backward of the first example with its floating-point arguments
        requiring grad; [] when that cannot be asked (integer inputs, in-place input ops)."""
        def leaf(t, per_example=True):
            ok = isinstance(t, Tensor) and t.is_floating_point() and per_example
            return t.detach().clone().requires_grad_(True) if ok else t
        xs = tuple(leaf(x) for x in self.first)
        ext = tuple(leaf(a, b) for a, b in zip(self.first_extra, self.batched))
        differ = lambda whole: not bool((whole == whole[:1]).all())  # noqa: E731
        named = [(f"inputs[{i}]", t) for i, (t, whole) in enumerate(zip(xs, self.inputs))
                 if isinstance(t, Tensor) and t.requires_grad and differ(whole)]
        named += [(f"additional_forward_args[{j}]", t)
                  for j, (t, whole) in enumerate(zip(ext, self.extra))
                  if isinstance(t, Tensor) and t.requires_grad and differ(whole)]
        self.swap.replacement, self.swap.record, self.swap.original = value, True, None
        self.swap.flip = flip
        try:
            with torch.enable_grad():
                out = self._call(xs, ext)
                orig = self.swap.original
                if self.swap.on_input and isinstance(orig, Tensor) and orig.requires_grad:
                    named.insert(0, ("the layer's input", orig))
                if not named or not out.requires_grad:
                    return []
                out = out.reshape(out.shape[0], -1)[:, list(targets)]
                w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0),
                                dtype=out.dtype).to(out.device)
                grads = torch.autograd.grad((out * w).sum(), [t for _, t in named],
                                            allow_unused=True)
            return [n for (n, _), g in zip(named, grads) if g is not None and bool((g != 0).any())]
        except RuntimeError:
            if flip and self.swap.flipped is not None:   # e.g. h += conv(h) on the flipped
                self.swap.flipped.requires_grad_(False)  # leaf: ask again without it
                self.swap.flipped = None
                return self._paths_around_layer(value, targets, flip=False)
            return []
        finally:
            self.swap.replacement, self.swap.record, self.swap.original = None, False, None
            self.swap.flip = False
            if self.swap.flipped is not None:
                self.swap.flipped.requires_grad_(False)
                self.swap.flipped = None

    def _rows_independent(self, trial, expand, loose=False):
        """Does row 1 of a 2-row batch of H give the output it gives alone?"""
        both = self._forward_raw(trial, expand=expand)
        alone = self._forward_raw(trial[1:], expand=expand)
        return both.shape[0] == 2 and _same(both[1], alone[0], loose)

    def _mixing_message(self, trial):
        alone = self._forward_raw(trial[1:], expand=True)
        again = self._forward_raw(trial[1:], expand=True)
        if not _same(alone, again, loose=True):
            why = ("draws fresh randomness after the layer (e.g. F.dropout(training=True) or "
                   "MC dropout, which model.eval() does not switch off), so every result is "
                   "random")
            fix = ("Switch that randomness off for the ascent (nn.Dropout modules are switched "
                   "off by eval mode; functional dropout with training=True is not).")
        else:
            why = ("mixes the rows of the batch after the layer (e.g. x - x.mean(0), or a "
                   "normalisation over the batch that eval mode does not fix), so each start's "
                   "result depends on the other rows in its chunk (chunk_size, the target list)")
            fix = ("Give the ascent a model whose output for one example depends on that example "
                   "only (e.g. a wrapper without the batch-wise step).")
        return (f"the model's output for one row of H depends on more than that row: it {why}. "
                f"Re-running the layers before {self._layer_name()} cannot fix this. {fix}")

    def _forward_raw(self, h, expand, keep_swap=False):
        """The output (rows, n_out) with H swapped in. ``keep_swap``: leave H in the hook after
        the forward (the caller clears it after its backward)."""
        self.swap.replacement = h
        try:
            if expand:
                b = h.shape[0]
                ins = tuple(x.expand((b,) + tuple(x.shape[1:])) for x in self.first)
                ext = tuple(a.expand((b,) + tuple(a.shape[1:])) if batched else a
                            for a, batched in zip(self.first_extra, self.batched))
            else:
                ins, ext = self.first, self.first_extra
            out = self._call(ins, ext)
            return out.reshape(out.shape[0], -1)
        finally:
            if not keep_swap:
                self.swap.replacement = None

    def forward(self, h, keep_swap=False):
        out = self._forward_raw(h, expand=self.recompute, keep_swap=keep_swap)
        if out.shape[0] != h.shape[0]:
            raise RuntimeError("the model did not return one output row per H row")
        return out

    def mean_activation(self, batch_size=256):
        total, n = None, 0
        with torch.no_grad():
            for lo in range(0, self.n_examples, batch_size):
                ins = tuple(x[lo:lo + batch_size] for x in self.inputs)
                ext = tuple(a[lo:lo + batch_size] if b else a
                            for a, b in zip(self.extra, self.batched))
                value, _ = self._capture(ins, ext)
                if value.dim() == 0 or value.shape[0] != ins[0].shape[0]:
                    raise ValueError(
                        f"the value of layer {self._layer_name()} has shape "
                        f"{tuple(value.shape)} for {ins[0].shape[0]} examples: its first axis "
                        "is not the batch")
                s = value.double().sum(0)
                total = s if total is None else total + s
                n += value.shape[0]
        return total / n

    def bytes_per_row(self):
        """Memory one extra row costs: the tensors autograd saves (3-row minus 1-row step), the
        row's output and its gradient (not saved by autograd, but as large as the output: the
        cost that dominates a model with 21,907 outputs), and H's own copies."""
        out_bytes = [0]

        def measure(b):
            acc = [0]

            def pack(t):
                acc[0] += t.numel() * t.element_size()
                return t

            h = torch.zeros((b,) + self.layer_shape, device=self.device, dtype=self.dtype,
                            requires_grad=True)
            if self.head is not None:  # what the ascent runs: one weight row per row
                self.head.targets = torch.zeros(b, dtype=torch.long, device=self.out_device)
            try:
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(
                        pack, lambda t: t):
                    out = self.forward(h)
            finally:
                if self.head is not None:
                    self.head.targets = None
            out_bytes[0] = out[0].numel() * out.element_size()
            return acc[0]

        per_row = (measure(3) - measure(1)) / 2
        h_bytes = int(np.prod(self.layer_shape)) * torch.empty((), dtype=self.dtype).element_size()
        # H, candidate, two gradients and temporaries; the output, its gradient and a temporary
        return max(per_row, 0) + 8 * h_bytes + 3 * out_bytes[0]


def _with_hint(e: BaseException, hint: str) -> BaseException:
    """``e`` with ``(hint)`` on a new line of its message, of ``e``'s own type, so that a
    caller's ``except NotImplementedError`` or ``except torch.OutOfMemoryError`` still matches.
    A plain RuntimeError becomes a new one (raise it ``from e``). A subclass keeps its object:
    on Python 3.11+ the hint is added as a note (shown under the message; ``args`` untouched);
    on 3.10 its one-string message is extended, unless that does not change ``str(e)`` (a
    custom ``__str__``) or its args are not one string: it then goes on without the hint. An
    exception object the model raises again (a cached instance) gets the hint once."""
    note = f"({hint})"
    if type(e) is RuntimeError:
        return RuntimeError(f"{e}\n{note}")
    if note in str(e) or note in getattr(e, "__notes__", ()):
        return e
    if hasattr(e, "add_note"):
        e.add_note(note)
    elif len(e.args) == 1 and isinstance(e.args[0], str):
        old = e.args
        e.args = (f"{e.args[0]}\n{note}",)
        if note not in str(e):
            e.args = old
    return e


def _parse_targets(target, output_shape):
    n_out = int(np.prod(output_shape)) if output_shape else 1
    if target is None:
        return list(range(n_out))
    if isinstance(target, (Tensor, np.ndarray)) and target.ndim > 1 and len(output_shape) <= 1:
        raise ValueError(
            f"target is a {target.ndim}-d {type(target).__name__} of shape "
            f"{tuple(target.shape)}: give a 1-d list of output indices (the model's output per "
            f"example has shape {tuple(output_shape)}); for a multi-dimensional output, a list "
            "of index tuples")
    if isinstance(target, (Tensor, np.ndarray)):
        # a 0-d array or tensor becomes an int, a 2-d one a list of index rows, alike
        target = target.tolist()
    if isinstance(target, (int, np.integer)):
        target = [target]
    if isinstance(target, range):
        target = list(target)
    if isinstance(target, (list, tuple, np.ndarray)) and len(target) == 0:
        raise ValueError("target is empty: give at least one output index, or None for all")
    if not isinstance(target, (list, tuple, np.ndarray)):
        raise TypeError("target must be an int, a non-empty sequence of ints, or None")
    if isinstance(target, tuple) and len(output_shape) > 1 and all(
            isinstance(t, (int, np.integer)) for t in target):
        raise ValueError(
            f"target={target!r} is ambiguous for the output shape {output_shape}: Captum reads a "
            f"tuple as one multi-dimensional index, here a tuple lists classes. Pass "
            f"[{target!r}] for that one output, or a list of flat indices")
    flat = []
    for t in target:
        if isinstance(t, (tuple, list)):
            if len(t) != len(output_shape) or any(
                    not isinstance(i, (int, np.integer)) or not 0 <= i < s
                    for i, s in zip(t, output_shape)):
                raise ValueError(f"target index {t} does not fit the model's output shape "
                                 f"{output_shape}")
            flat.append(int(np.ravel_multi_index(tuple(t), output_shape)))
            continue
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"target entries must be ints, got {t!r}")
        if not 0 <= t < n_out:
            raise ValueError(f"target {t} is outside the model's {n_out} outputs [0, {n_out})")
        flat.append(int(t))
    if len(set(flat)) < len(flat):
        _warn(
            f"target lists {len(flat) - len(set(flat))} duplicate output(s): each target is "
            "optimised on its own (target lists classes, not one class per example), so "
            "duplicates repeat the same work", stacklevel=4)
    return flat


def _scores_numpy(scores):
    """The (n_targets, n_starts) scores as numpy for the diagnostics, in their own dtype
    (numpy has no bfloat16: float32, which holds every bfloat16 value exactly)."""
    s = scores.detach().cpu()
    return (s.float() if s.dtype == torch.bfloat16 else s).numpy().copy()


#: dict-output keys that name the head to explain, best first (a Hugging Face ModelOutput
#: lists 'logits' before 'hidden_states'; a BPNet-style model has 'profile' and 'counts')
_HEAD_KEYS = ("logits", "logit", "counts", "count")


def _head_pick(keys):
    """The example in the dict-output refusal: ``model(x)['logits']`` for the first key of
    ``keys`` that names a head (``_HEAD_KEYS``, in that order, case aside; then a key holding
    "logit"), else ``model(x)[key]`` worded generically, not another key: the last (as this
    once said) may be hidden states, not a head."""
    named = {k.lower(): k for k in reversed(keys) if isinstance(k, str)}   # first of a case
    hit = next((named[n] for n in _HEAD_KEYS if n in named), None)
    if hit is None:
        hit = next((k for k in keys if isinstance(k, str) and "logit" in k.lower()), None)
    if hit is None:
        return "model(x)[key] with one of those keys" if keys else "model(x)[key]"
    return f"model(x)[{hit!r}]"


def _warn_per_example_target(target, n_examples, stacklevel=1):
    """Warn when ``target`` looks like Captum's per-example labels: a 1-d tensor or array with
    one entry per example of ``inputs`` (N > 1). A list never warns: it is how to say that the
    entries are the classes to optimise. ``stacklevel`` counts from this function's caller,
    as for :func:`_warn`."""
    if (isinstance(target, (Tensor, np.ndarray)) and target.ndim == 1 and n_examples > 1
            and len(target) == n_examples):
        _warn(
            f"target is a {type(target).__name__} with {n_examples} entries, one per example "
            "of `inputs`, like Captum's per-example labels: here each listed class is "
            "optimised once, on its own, whatever the examples (axis 0 of the result follows "
            "`target`, not `inputs`). If these are the classes you want, pass them as a list "
            "(target.tolist()) to silence this warning; for the classes among per-example "
            "labels, pass sorted(set(labels.tolist())).", UserWarning, stacklevel=stacklevel + 1)


def _collapsed(peak, init_scale):
    """(n_targets,) bool numpy: every start of the target ended at H = 0 (up to float rounding of
    the step that lands there: below 1e-6 of the starts' scale). peak: (n_targets, n_starts)
    max |H| of each final FIM (not of its FIV: a FIM can average to 0 over the positions)."""
    return np.asarray(peak).max(1) <= 1e-6 * float(init_scale)


def _check_init(init, shape):
    if not isinstance(init, Tensor):
        raise TypeError(f"init must be a tensor of shape {shape}, got {type(init).__name__}")
    if tuple(init.shape) != tuple(shape):
        raise ValueError(f"init must have shape (n_targets, n_starts, *layer_shape) = {tuple(shape)}, "
                         f"got {tuple(init.shape)}")
    if not init.is_floating_point() or not bool(torch.isfinite(init).all()):
        raise ValueError("init must be a finite floating-point tensor")
    return init.detach()


def _summing_noise(dtype):
    """The relative difference that summing in another order (another batch size, the narrow
    head) can make: 1e-3, or 3e-2 for 16-bit floats."""
    return 3e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3


def _same(a, b, loose=False):
    """allclose at float32 precision; ``loose``: within :func:`_summing_noise` of the output's
    scale, what numerical noise between batch sizes cannot exceed but coupled rows do."""
    if not loose:
        return torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    rel = _summing_noise(a.dtype)
    a, b = a.double(), b.double()
    return bool((a - b).abs().max() <= rel * (b.abs().max() + 1e-3))


def _close_rows(a, b):
    """(rows,) bool: a[i] agrees with b[i] up to :func:`_summing_noise` of |b[i]| + max |b| +
    1e-4. Outputs mixed after the head change a score by a good part of itself."""
    rel = _summing_noise(a.dtype)
    a, b = a.double(), b.double()
    return (a - b).abs() <= rel * (b.abs() + b.abs().max() + 1e-4)


def _size(n_bytes):
    """A byte count for people: 512 bytes, 3.2 KiB, 1.5 MiB, 2.0 GiB."""
    n = float(n_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _default_budget(device):
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return _CPU_MEMORY_BUDGET


def _progress(total, verbose, desc="DeepResolve ascent"):
    if not verbose:
        return None
    from tqdm.auto import tqdm
    # The bar counts converged starts, which arrive in bursts (all rows of a chunk run
    # together), so a rate-based ETA misleads: show the elapsed time and the current step and
    # running rows (set by _ascend) instead.
    return tqdm(total=total, desc=desc, unit="start",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} starts "
                           "[{elapsed}{postfix}]")


def _resolve_seed(seed):
    """A non-negative int seed; None draws one from torch's global generator."""
    if seed is None:
        return int(torch.randint(0, 2**31 - 1, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed}")
    return int(seed)


def _check_positive_int(x, name):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {x!r}")
    return int(x)


#: frames between the user and ``attribute`` beyond the usual ones (``choose_l2`` adds one), so
#: that the package's warnings point at the user's line whichever public method was called
_WARN_DEPTH = contextvars.ContextVar("deepresolve_captum_warn_depth", default=0)


@contextlib.contextmanager
def _deeper_warnings(frames):
    """Inside, the package's warnings skip ``frames`` more frames: for a caller that adds frames
    between the user and the code that warns (choose_l2, the l2 probes, attribute_in_blocks)."""
    token = _WARN_DEPTH.set(_WARN_DEPTH.get() + frames)
    try:
        yield
    finally:
        _WARN_DEPTH.reset(token)


def _warn(message, category=UserWarning, stacklevel=1):
    """``warnings.warn`` whose stacklevel counts from the caller of ``_warn``, plus the frames
    ``_WARN_DEPTH`` adds: only the location moves; the message, the category and the
    caller's filters are untouched."""
    warnings.warn(message, category, stacklevel=stacklevel + 1 + _WARN_DEPTH.get())


def _check_l2(l2, dtype=None, lr=None, name="l2", check_step=True):
    """``"auto"`` as given, else lambda as a float > 0 (a bool is no lambda).

    With ``dtype`` (the layer's, known after the probe) also that the ascent can use lambda in
    that dtype: the regulariser's gradient -2 * l2 * H needs 2 * l2, and (``check_step``) the
    step (``lr``, by default 1 / (2 * l2)) needs to be finite there. Raises ValueError
    otherwise (torch would fail with "value cannot be converted to type float without
    overflow")."""
    if isinstance(l2, str):
        if l2 != "auto":
            raise ValueError(f"l2 must be a positive number or 'auto', got {l2!r}")
        value = None
    else:
        value = _check_positive_float(l2, "l2")
    if dtype is not None:
        big = torch.finfo(dtype).max
        if value is not None and 2.0 * value > big:
            raise ValueError(
                f"{name} = {value:g} is too large for the layer's dtype {dtype}: the ascent "
                f"needs 2 * l2 below {big:.4g}, the largest {dtype} value. Use a smaller l2: "
                "lambda is on the scale of the class scores over ||H||^2 (l2='auto' chooses "
                "one).")
        step = float(lr) if lr is not None else (0.5 / value if value is not None else None)
        if check_step and step is not None and step > big:
            if lr is not None:
                raise ValueError(f"lr = {step:g} is too large for the layer's dtype {dtype} "
                                 f"(largest value {big:.4g}): use a smaller lr")
            raise ValueError(
                f"{name} = {value:g} is too small for the layer's dtype {dtype}: the step "
                f"1 / (2 * l2) = {step:.4g} exceeds its largest value {big:.4g}. Use a larger "
                f"l2, or pass lr (a step size below {big:.4g}).")
    return l2 if value is None else value


def _check_positive_float(x, name, allow_zero=False):
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {x!r}") from None
    if isinstance(x, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {x!r}")
    return v
