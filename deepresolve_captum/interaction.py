"""Input-space interaction check for a pair of channels / motifs.

DeepResolve flags channels whose contribution is inconsistent over the gradient-ascent ensemble
(non-additive, e.g. XOR partners). This module checks such a claim on the model's *output* in input
space: plant motif ``a`` alone, ``b`` alone, both, or neither into the same dinucleotide-shuffled
backgrounds (tangermeme ``ersatz.dinucleotide_shuffle``), and compare the model's mean output:

    d_a = f(a) - f(none),  d_b = f(b) - f(none),  d_ab = f(both) - f(none),
    interaction = f(both) - f(a) - f(b) + f(none)   (paired over backgrounds)

and name the pair's logic on the probability scale (sigmoid of the logit) by default -- on the
logit scale a ReLU network often adds the evidence of two motifs, and whether that sum is an AND
(neither alone crosses the decision boundary) or an OR (each does) shows only after the sigmoid --
with ``s = max(|d_a|, |d_b|, |d_ab|)``
and a margin ``m = tol * s``:

* ``"XOR-like"``: each motif alone raises the output (d_a, d_b > m) and adding the second one
  lowers it: both together raise it less than the stronger one alone (d_ab < max(d_a, d_b) - m);
* ``"AND-like"``: both together raise the output (d_ab > m), more than the sum of the parts
  (interaction > m) and more than either alone (d_ab > max(d_a, d_b) + m), and neither motif
  alone lowers it (d_a, d_b > -m: two repressors that cancel are ``"other"``);
* ``"OR-like"``: each alone raises the output and both together at least as much as the stronger
  one (d_ab >= max(d_a, d_b) - m) but not super-additively (interaction <= m);
* ``"uncertain"``: the means look XOR-, AND- or OR-like, but an effect the label rests on does
  not clear its bound by ``z`` standard errors (over the backgrounds): each motif's own effect
  (XOR, OR), the gap between both together and the stronger one alone (XOR, AND; for OR its
  distance above -m, the XOR side), the interaction (AND; for OR its distance below m, the AND
  side) or both together (AND). More backgrounds would decide;
* ``"none"``: no effect above ``min_effect`` and ``z`` standard errors; ``"other"``: anything
  else (e.g. a repressive motif, or an effect of only one of the two motifs).

Motifs that only matter in the presence of a third one (the XOR pair of synthetic set I needs
CAGGTC) are checked with ``context=[...]``: context motifs are planted in all four conditions.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ._modules import (_outside_stacklevel, as_tensor_output, check_layer_calls, module_path,
                       squashing)
from ._stats import _tensor_to_numpy
from .adapters import (_check_channels, _check_model_layer, _check_one_input, _check_X,
                       _describe_unknown, _model_device, _model_float_dtype, _preserved,
                       _unknown_positions)
from .channel_motifs import consensus

__all__ = ["interaction_check", "channel_pair_interaction", "plant_motifs", "classify_interaction",
           "InteractionResult", "motif_to_one_hot", "channel_ablation"]

ALPHABET = "ACGT"
_ONE_HOT_HINT = ("(the model failed on one-hot sequences (N, 4, L): this function calls "
                 "model(x) with them only. For another layout or extra inputs, pass a wrapper "
                 "nn.Module whose forward(x) takes (N, 4, L), e.g. returns model(x.unsqueeze(1)) "
                 "for a (N, 1, 4, L) model or model(x, covariate) with a fixed covariate)")
CONDITIONS = ("none", "a", "b", "both")


def motif_to_one_hot(motif):
    """A motif as a (4, k) float array: a string over ACGT (one-hot) or a (4, k) probability
    matrix / tensor, one row per base A, C, G, T (returned as float64, columns normalised).
    A (4, 4) matrix whose rows sum to 1 and columns do not is warned of: it looks like a (k, 4)
    position-by-base matrix (MEME / JASPAR layout), which needs ``.T``."""
    if isinstance(motif, str):
        s = motif.upper()
        if not s or any(c not in ALPHABET for c in s):
            raise ValueError(f"motif strings must be non-empty over ACGT, got {motif!r}")
        m = np.zeros((4, len(s)))
        m[[ALPHABET.index(c) for c in s], np.arange(len(s))] = 1.0
        return m
    if isinstance(motif, torch.Tensor):
        motif = _tensor_to_numpy(motif)   # bfloat16 too, as float32
    m = np.asarray(motif, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != 4 or m.shape[1] == 0:
        hint = (" (a (k, 4) matrix, one row per position as MEME and JASPAR files write "
                "it: pass its transpose, motif.T)" if m.ndim == 2 and m.shape[1] == 4 else "")
        raise ValueError(f"a motif matrix must have shape (4, k), got {m.shape}{hint}")
    if (m < 0).any() or not np.isfinite(m).all():
        raise ValueError("a motif matrix must be non-negative and finite")
    col = m.sum(0, keepdims=True)
    if (col <= 0).any():
        raise ValueError("a motif matrix has an all-zero column")
    if m.shape[1] == 4 and np.allclose(m.sum(1), 1, atol=1e-3) and \
            not np.allclose(col, 1, atol=1e-3):
        # a (k, 4) matrix with k = 4 has the (4, k) shape: only its sums tell
        warnings.warn(
            "a (4, 4) motif matrix whose rows sum to 1 and columns do not: it looks like a "
            "(k, 4) matrix (one row per position, as MEME and JASPAR files write it), but is "
            "read as (4, k) (one row per base A, C, G, T) and its columns renormalised. If "
            "its rows are positions, pass its transpose, motif.T", UserWarning,
            stacklevel=_outside_stacklevel())
    return m / col


def _draw(m, n, sample, rng):
    """(n, 4, k) one-hot instances of motif matrix m: its consensus, or sampled column-wise."""
    k = m.shape[1]
    if sample:
        u = rng.random((n, k))
        idx = (u[:, :, None] > np.cumsum(m.T, axis=1)[None]).sum(-1).clip(0, 3)
    else:
        idx = np.broadcast_to(m.argmax(0), (n, k))
    out = np.zeros((n, 4, k), dtype=np.float32)
    out[np.arange(n)[:, None], idx, np.arange(k)[None]] = 1.0
    return out


def plant_motifs(X, motifs, starts):
    """Write motif instances into copies of sequences.

    Parameters
    ----------
    X: torch.Tensor (N, 4, L), one-hot backgrounds (not modified).
    motifs: list of M arrays (N, 4, k_m): the instance planted into each sequence.
    starts: int array (N, M): start position of motif m in sequence n (-1: do not plant).

    Returns
    -------
    torch.Tensor (N, 4, L), float32.

    Raises
    ------
    ValueError: X not (N, 4, L), ``starts`` not an integer array of shape (N, M) or holding a
        negative start other than -1, an instance array not (N, 4, k), or a motif that does not
        fit at its start.
    """
    if not isinstance(X, torch.Tensor) or X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"X must be a one-hot tensor of shape (N, 4, L), got "
                         f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}")
    N = len(X)
    starts = np.asarray(starts)
    if starts.shape != (N, len(motifs)) or not (
            np.issubdtype(starts.dtype, np.integer) or starts.size == 0):
        raise ValueError(f"starts must be an integer array of shape (N, M) = ({N}, {len(motifs)}) "
                         f"(one start per sequence and motif, -1: not planted), got "
                         f"{starts.dtype} {starts.shape}")
    if (starts < -1).any():
        raise ValueError(f"starts must be >= 0 (the start position) or -1 (not planted), got "
                         f"{sorted(set(starts[starts < -1].tolist()))[:5]}")
    X = X.clone().float()
    for j, inst in enumerate(motifs):
        inst = torch.as_tensor(np.array(inst, dtype=np.float32) if isinstance(inst, np.ndarray) else inst,
                               dtype=X.dtype)  # a copy: read-only arrays (broadcast views) are fine
        if inst.ndim != 3 or inst.shape[0] != N or inst.shape[1] != 4:
            raise ValueError(f"motifs[{j}] must hold one (4, k) instance per sequence, shape "
                             f"({N}, 4, k), got {tuple(inst.shape)}")
        k = inst.shape[-1]
        rows = np.flatnonzero(starts[:, j] >= 0)
        if len(rows) == 0:
            continue
        if (starts[rows, j] + k > X.shape[-1]).any():
            raise ValueError("a motif does not fit at its start position")
        cols = torch.as_tensor(starts[rows, j])[:, None] + torch.arange(k)[None]
        r = torch.as_tensor(rows)
        X[r[:, None, None], torch.arange(4)[None, :, None], cols[:, None, :]] = inst[r]
    return X


def _non_overlapping_starts(rng, n, lengths, L, gap=1, max_tries=1000):
    """(n, M) random starts such that the M motifs never overlap (at least ``gap`` bases apart),
    uniform over all such placements.

    Each row is drawn by rejection (independent uniform starts, redrawn while two overlap) for
    up to ``max_tries`` tries, then, for a tight fit where overlaps are the rule, directly: a
    random order of the motifs and a uniformly random split of the free bases into the M + 1
    gaps around them (stars and bars). Both give every valid placement the same probability.
    ``max_tries`` is 1000, the tries of the rejection-only version (922584b and before, which
    raised after them), so every random_state draws what it drew then; the direct draw only
    replaces what used to be an error ("could not place the motifs without overlap")."""
    M = len(lengths)
    free = L - sum(lengths) - gap * (M - 1)
    if free < 0:
        raise ValueError(f"motifs of lengths {lengths} do not fit side by side in {L} bp")
    out = np.zeros((n, M), dtype=int)
    for i in range(n):
        for _ in range(max_tries):
            s = np.array([rng.integers(0, L - k + 1) for k in lengths])
            ok = True
            for p in range(M):
                for q in range(p + 1, M):
                    if not (s[p] + lengths[p] + gap <= s[q] or s[q] + lengths[q] + gap <= s[p]):
                        ok = False
            if ok:
                out[i] = s
                break
        else:
            # free bases split into M + 1 gaps: M distinct cuts among free + M slots
            cuts = np.sort(rng.choice(free + M, size=M, replace=False))
            extra = np.diff(np.concatenate([[-1], cuts])) - 1     # bases before each motif
            pos = 0
            for j, m in enumerate(rng.permutation(M)):
                pos += int(extra[j])
                out[i, m] = pos
                pos += lengths[m] + gap
    return out


def _check_thresholds(tol, min_effect, z):
    """Refuse a ``tol``, ``min_effect`` or ``z`` that is not a finite real number >= 0."""
    for name, v in (("tol", tol), ("min_effect", min_effect), ("z", z)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number >= 0, got {v!r}")
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def _real_scalar(name, v):
    """``v`` as a float when it is one real number: a Python or numpy int or float, a
    ``Fraction``, a 0-d numpy array or a one-value 0-d torch tensor (e.g.
    ``(y_ab - y_0).mean()``), anything else ``float()`` reads as a number. Refused (TypeError):
    bools, strings and bytes, complex numbers, and arrays or tensors with a dimension (a list
    or ``np.array([0.5])`` is not one number)."""
    what = None
    if torch.is_tensor(v):
        if v.dim() != 0:
            what = f"a tensor of shape {tuple(v.shape)}"
        elif v.is_complex():
            what = f"a complex tensor {v!r}"
        elif v.dtype == torch.bool:
            what = f"a boolean tensor {v!r}"
        else:
            return float(v.detach())   # no grad warning for (y_ab - y_0).mean()
    elif isinstance(v, np.ndarray) and v.ndim != 0:
        what = f"an array of shape {v.shape}"
    else:
        x = v[()] if isinstance(v, np.ndarray) else v        # a 0-d array: its scalar
        if isinstance(x, (bool, np.bool_, str, bytes, np.str_, np.bytes_)):
            what = repr(v)
        elif isinstance(x, (complex, np.complexfloating)):
            what = f"the complex number {v!r}"
        elif np.ndim(x) != 0:
            what = f"{type(v).__name__} {v!r:.60} (not one number)"
        else:
            try:
                return float(x)
            except OverflowError:       # e.g. 10**400: a number, but no finite float
                raise ValueError(f"{name} must be a finite number, got {v!r:.60}") from None
            except (TypeError, ValueError):
                what = f"{v!r:.60}"
    raise TypeError(f"{name} must be a real number, got {what}")


def _check_effects(d_a, d_b, d_ab, sems, interaction_sem, gap_sem):
    """The effects and standard errors as floats (``sems`` a list of three, or None): effects
    must be finite real numbers, standard errors finite numbers >= 0 (``sems`` one per
    effect: three). Each may be any real scalar :func:`_real_scalar` takes (numpy and torch
    scalars, 0-d arrays, Fractions). A NaN effect (a model whose outputs overflowed) failed
    every comparison and came back ``"none"``, a claim of no effect."""
    effects = []
    for name, v in (("d_a", d_a), ("d_b", d_b), ("d_ab", d_ab)):
        x = _real_scalar(name, v)
        if not np.isfinite(x):
            raise ValueError(
                f"{name} must be a finite number, got {v!r}: a NaN or infinite effect comes "
                "from non-finite model outputs (e.g. float16 overflow); check the model's "
                "outputs on the planted sequences")
        effects.append(x)

    def error(name, e):
        x = _real_scalar(name, e)
        if not (np.isfinite(x) and x >= 0):
            raise ValueError(f"{name} must be a finite standard error >= 0, got {e!r}")
        return x

    if sems is not None:
        if isinstance(sems, (str, bytes)) or not hasattr(sems, "__len__") or \
                np.ndim(sems) != 1 or len(sems) != 3:
            raise ValueError(f"sems must be three standard errors (sem_a, sem_b, sem_ab), one "
                             f"per effect, got {sems!r}")
        sems = [error(f"sems[{i}]", e) for i, e in enumerate(sems)]
    if interaction_sem is not None:
        interaction_sem = error("interaction_sem", interaction_sem)
    if gap_sem is not None:
        gap_sem = error("gap_sem", gap_sem)
    return (*effects, sems, interaction_sem, gap_sem)


def classify_interaction(d_a, d_b, d_ab, tol=0.25, min_effect=0.05, sems=None, z=3.0,
                         interaction_sem=None, gap_sem=None):
    """Name the logic of a motif pair from its effects over the no-motif background.

    With ``s = max(|d_a|, |d_b|, |d_ab|)``, the margin ``m = tol * s``, the gap
    ``d_ab - max(d_a, d_b)`` and the interaction ``d_ab - d_a - d_b``:

    * ``"XOR-like"``: d_a > m, d_b > m and gap < -m;
    * ``"AND-like"``: interaction > m, gap > m and d_ab > m, with neither motif alone
      repressive (d_a, d_b > -m): two repressors that cancel (d_a = d_b < 0, d_ab = 0) have a
      large interaction and gap, but together do not raise the output at all: ``"other"``;
    * ``"OR-like"``: d_a > m, d_b > m, gap >= -m (not XOR) and interaction <= m (not AND).

    Every effect a label rests on must clear its bound by ``z`` of its standard errors, where
    they are given: each motif's own effect (``sems``) for XOR- and OR-like; for XOR- and
    AND-like the gap (``gap_sem``) and, for AND, the interaction (``interaction_sem``) and
    d_ab; for OR-like the bounds that tell it from XOR and AND: the gap above -m
    (``gap - z * gap_sem > -m``) and the interaction at most m
    (``interaction + z * interaction_sem <= m``). A pattern whose means fit a label but one of
    those effects is within ``z`` standard errors is ``"uncertain"``: more backgrounds would
    decide it.

    Parameters
    ----------
    d_a, d_b, d_ab: finite real numbers, mean output change with a alone, b alone, both (see
        module doc): Python, numpy or torch scalars (a 0-d array or tensor, e.g.
        ``(y_ab - y_0).mean()``), Fractions; bools, strings, complex numbers and arrays with a
        dimension are refused (TypeError). The standard errors below take the same.
    tol: relative margin (fraction of the largest effect), a number >= 0.
    min_effect: absolute effect below which the pair is ``"none"``, a number >= 0.
    sems: optional (sem_a, sem_b, sem_ab) standard errors of the three effects (three finite
        numbers >= 0): the pair is ``"none"`` when no effect exceeds ``z`` of its standard
        errors, and ``"uncertain"`` instead of XOR- or OR-like when d_a or d_b does not exceed
        ``z`` of its own (instead of AND-like when d_ab does not).
    z: significance multiple used with the standard errors, a number >= 0.
    interaction_sem, gap_sem: optional standard errors (paired over backgrounds, finite, >= 0)
        of the interaction d_ab - d_a - d_b and of the gap d_ab - max(d_a, d_b): with them an
        XOR-, AND- or OR-like pattern whose gap (and, for AND and OR, interaction) does not
        clear its bound by ``z`` standard errors is ``"uncertain"`` instead of a label that
        changes with the random backgrounds.

    Returns
    -------
    str: ``"XOR-like"``, ``"AND-like"``, ``"OR-like"``, ``"uncertain"``, ``"none"`` or
    ``"other"`` (e.g. a repressive motif, or only one of the two motifs having an effect).

    Raises
    ------
    TypeError, ValueError: ``tol``, ``min_effect`` or ``z`` not a finite number >= 0; an
        effect not one finite real number; ``sems`` not three standard errors, or a standard
        error not a finite number >= 0.
    """
    _check_thresholds(tol, min_effect, z)
    d_a, d_b, d_ab, sems, interaction_sem, gap_sem = _check_effects(
        d_a, d_b, d_ab, sems, interaction_sem, gap_sem)
    s = max(abs(d_a), abs(d_b), abs(d_ab))
    if s < min_effect:
        return "none"
    if sems is not None and not any(abs(d) > z * e for d, e in zip((d_a, d_b, d_ab), sems)):
        return "none"
    m = tol * s
    inter = d_ab - d_a - d_b
    gap = d_ab - max(d_a, d_b)
    sure_gap = gap_sem is None or abs(gap) > z * gap_sem
    sure_inter = interaction_sem is None or abs(inter) > z * interaction_sem
    # each motif's own effect, raised above z standard errors (XOR and OR rest on both)
    sure_each = sems is None or (d_a > z * sems[0] and d_b > z * sems[1])
    if d_a > m and d_b > m and gap < -m:
        return "XOR-like" if sure_gap and sure_each else "uncertain"
    if inter > m and gap > m and d_ab > m and d_a > -m and d_b > -m:
        sure_ab = sems is None or d_ab > z * sems[2]
        return "AND-like" if sure_gap and sure_inter and sure_ab else "uncertain"
    if d_a > m and d_b > m and gap >= -m and inter <= m:
        # not XOR and not AND, each by z standard errors (as XOR and AND need theirs)
        sure_not_xor = gap_sem is None or gap - z * gap_sem > -m
        sure_not_and = interaction_sem is None or inter + z * interaction_sem <= m
        return "OR-like" if sure_each and sure_not_xor and sure_not_and else "uncertain"
    return "other"


@dataclass
class InteractionResult:
    """Result of :func:`interaction_check`.

    Attributes
    ----------
    table: pandas DataFrame indexed by condition (none, a, b, both): ``mean``, ``sem`` of the
        output, ``effect`` (mean change vs none) and ``effect_sem`` (paired).
    interaction: float, mean of f(both) - f(a) - f(b) + f(none); ``interaction_sem`` its SEM.
    logic: str, see :func:`classify_interaction`.
    outputs: numpy (n_backgrounds, 4), the outputs per background and condition.
    motifs: dict with the consensus strings of a, b and the context motifs.
    settings: dict of the arguments that made it, and ``backgrounds_with_motif``: {consensus:
        fraction of the backgrounds that held it before planting} (see ``X`` of
        :func:`interaction_check`).
    """
    table: pd.DataFrame
    interaction: float
    interaction_sem: float
    logic: str
    outputs: np.ndarray
    motifs: dict
    settings: dict = field(default_factory=dict)

    def __repr__(self):
        t = self.table.round(3).to_string()
        return (f"InteractionResult({self.motifs.get('a')} x {self.motifs.get('b')}: "
                f"{self.logic}, interaction={self.interaction:.3f} +- "
                f"{self.interaction_sem:.3f})\n{t}")


_ONE_TARGET = ("an int (the flat index into one sequence's output), a tuple with one index per "
               "output axis (e.g. (track, position) of a (N, C, L) profile), or a one-element "
               "list holding either ([(track, position)], LayerFeatureOptimizer's spelling)")


def _as_target(target):
    """One output, as the functions that read one take it: an int, a tuple with one index per
    output axis, or a one-element list holding either (``[(0, 50)]``, the list of targets
    LayerFeatureOptimizer.attribute takes, with one entry). A one-element integer tensor or
    array counts as an int, one of several integers as a tuple. Returns the int or the tuple of
    ints; anything else is refused here, before any work (:func:`_flat_target` checks the
    ranges once the output shape is known)."""
    t = target
    if isinstance(t, list) and len(t) == 1:  # LayerFeatureOptimizer's [(0, 50)] or [[0, 50]]
        t = tuple(t[0]) if isinstance(t[0], list) else t[0]
    if torch.is_tensor(t) and not t.is_floating_point() and t.dtype != torch.bool:
        t = t.detach().cpu().numpy()
    if isinstance(t, np.ndarray) and np.issubdtype(t.dtype, np.integer) and t.size:
        t = int(t.item()) if t.size == 1 else tuple(int(i) for i in t.ravel())

    def is_int(i):
        return isinstance(i, (int, np.integer)) and not isinstance(i, bool)

    if is_int(t):
        return int(t)
    if isinstance(t, tuple) and t and all(is_int(i) for i in t):
        return tuple(int(i) for i in t)
    several = (" (a list of several targets is what LayerFeatureOptimizer.attribute takes; "
               "this reads one output: call it once per target)"
               if isinstance(target, list) and len(target) > 1 else "")
    raise ValueError(f"target must be {_ONE_TARGET}, got {target!r}{several}")


def _flat_target(target, out_shape):
    """The flat index into a per-example output of shape ``out_shape`` (``()`` for (N,)
    outputs) of ``target``, any spelling :func:`_as_target` takes: the flat index (int), one
    index per output axis (a tuple, e.g. (track, position) of a (N, C, L) profile), or a
    one-element list holding either."""
    target = _as_target(target)
    n_out = int(np.prod(out_shape)) if out_shape else 1
    shape = tuple(out_shape) or (1,)
    if isinstance(target, tuple):
        if len(target) == len(shape) and all(0 <= t < d for t, d in zip(target, shape)):
            return int(np.ravel_multi_index(target, shape))
    elif 0 <= target < n_out:
        return target
    raise ValueError(
        f"target must be an int in [0, {n_out}) (a flat index into the per-example output of "
        f"shape {tuple(out_shape)}), a tuple of {len(shape)} indices within {shape}, or a "
        f"one-element list holding either, got {target!r}")


def _predict(model, X, target, batch_size, device):
    """Output ``target`` of ``model`` on X (N, 4, L) by batches, X cast to the model's float dtype
    -> float64 CPU tensor (N,)."""
    dtype = _model_float_dtype(model) or X.dtype
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            y = as_tensor_output(model(X[i:i + batch_size].to(device=device, dtype=dtype)))
            if y.ndim == 1:
                y = y[:, None]
            y = y.reshape(y.shape[0], -1)
            out.append(y[:, target].double().cpu())
    return torch.cat(out)


def _check_flag(name, v):
    """``v`` as a bool: True or False (numpy's too), or the integers 1 and 0 (``verbose=1``,
    which ``LayerFeatureOptimizer.attribute`` takes too); anything else (a string such as
    "False" or "no", 2, None) is refused, not read by its truthiness."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    raise TypeError(f"{name} must be True or False, got {v!r} (the ints 1 and 0 are taken too; "
                    "a string is not read by its truthiness)")


def _checked_channels(name, channels):
    """:func:`adapters._check_channels`, refusing a bool (True is no channel 1), alone or in a
    sequence, as booleans elsewhere are refused where an int is expected."""
    items = channels if isinstance(channels, (list, tuple)) else [channels]
    if any(isinstance(c, (bool, np.bool_)) for c in items):
        raise TypeError(f"{name} must be channel indices (ints), not booleans, got {channels!r}")
    return _check_channels(channels)


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _softmax_axis(node):
    """(axis, shape) of a softmax / log_softmax autograd node: the axis it normalises over,
    >= 0, and the shape of its result; None for another node (a sigmoid)."""
    dim = getattr(node, "_saved_dim", None)
    if dim is None:
        return None
    shape = tuple(node._saved_result.shape)
    dim = int(dim) - 2**64 if int(dim) >= 2**63 else int(dim)  # saved as uint64: -1 = 2**64 - 1
    return dim % max(len(shape), 1), shape


def _probe_forward(model, x):
    """One small batch through ``model`` -> (how its output is squashed, see :func:`_modules.squashing`,
    or None; True when the outputs are log-probabilities (a log-softmax), not probabilities; the
    shape of one sequence's output, () for (N,) outputs; how to get the logits instead).

    Refuses (ValueError) a softmax / log-softmax over the batch axis, whose values are each
    sequence's share of its batch (they would change with ``batch_size``), and warns for one
    over an axis of size 1 (its output is a constant)."""
    y, how, op, node, advice = squashing(model, x)
    axis = _softmax_axis(node) if node is not None else None
    if axis is not None:
        dim, shape = axis
        name = "LogSoftmax" if op == "log_softmax" else "Softmax"
        if dim == 0 and shape[0] == len(x):
            raise ValueError(
                f"the model {how}, taken over axis 0, the batch: each output is the sequence's "
                "share of its batch, so the results would change with batch_size. Normalise over "
                f"the classes (e.g. {name}(dim=1) on (N, n_classes) logits; {name}() without "
                "dim takes dim 0 on a (N,) or 3-d output), or pass a model that returns the "
                "logits.")
        if shape[dim] == 1:
            warnings.warn(
                f"the model {how}, taken over an axis of size 1 (axis {dim} of "
                f"{shape[1:]} per sequence): its output is a constant "
                f"({'0' if op == 'log_softmax' else '1'}), whatever the sequence; {advice}.",
                UserWarning, stacklevel=_outside_stacklevel())
    return how, op == "log_softmax", tuple(y.shape[1:]), advice


#: rounds of reshuffling a background of X that holds a planted motif (interaction_check)
_SHUFFLE_REDRAWS = 20
#: a row whose shuffle held a motif after this many reshuffles in a row is not reshuffled
#: further (once _SHUFFLE_MIN_TRIED reshuffles were tried in all): its composition (e.g.
#: AT-rich DNA and a poly-A motif) makes nearly every shuffle hold the motif, and 20 rounds of
#: reshuffling such rows cost ~10x the shuffles themselves and freed none (review r1 m4). The
#: stop is per row (review r4 m2): rows that come out motif-free go on as before, whatever
#: the others do; a row motif-free in half its shuffles is freed in 5 with p ~ 0.97.
_SHUFFLE_ROW_FAILS = 5
#: below this many reshuffles in all, no row stops: all 20 rounds run (they cost little, and a
#: few hard rows get all their tries, as at 4bfca84)
_SHUFFLE_MIN_TRIED = 64


def _motif_fractions(B, motifs):
    """{motif: fraction of the one-hot backgrounds B (n, 4, L) that hold it (forward strand)}."""
    from .datasets import contains
    idx = B.argmax(1).numpy()
    return {c: float(contains(idx, c).mean()) for c in motifs}


def _motif_free_shuffles(src, motifs, seed):
    """One dinucleotide shuffle (tangermeme) of each sequence of ``src`` (n, 4, L), a shuffle
    that holds one of ``motifs`` (forward strand) reshuffled up to ``_SHUFFLE_REDRAWS`` times,
    as random backgrounds are redrawn (a sequence whose dinucleotide counts force the motif
    keeps it: :func:`interaction_check` warns with the fraction). Per row: a row still holding
    a motif after ``_SHUFFLE_ROW_FAILS`` reshuffles in a row is not reshuffled further, once
    at least ``_SHUFFLE_MIN_TRIED`` reshuffles were tried in all, so that a row whose
    composition forces a motif costs 5 rounds, not 20; the other rows go on.
    -> ((n, 4, L) float32, rounds run, rows stopped early, rows freed by reshuffling). Shuffles
    that hold none are those of ``seed``; until a row stops, every round draws what it drew
    when no row stopped, so a run where none stops is as it was."""
    from tangermeme.ersatz import dinucleotide_shuffle

    from .datasets import contains

    B = dinucleotide_shuffle(src, n=1, random_state=seed)[:, 0].float()

    def bad_rows(rows):
        idx = B[rows].argmax(1).numpy()
        hit = np.zeros(len(rows), dtype=bool)
        for c in motifs:
            hit |= contains(idx, c)
        return rows[hit]

    bad = bad_rows(np.arange(len(B))) if motifs else np.zeros(0, dtype=int)
    fails = np.zeros(len(B), dtype=int)      # reshuffles in a row that still held a motif
    tried = rounds = freed = 0
    stopped = np.zeros(0, dtype=int)
    for r in range(1, _SHUFFLE_REDRAWS + 1):
        if len(bad) == 0:
            break
        B[bad] = dinucleotide_shuffle(src[bad], n=1,
                                      random_state=(seed + r) % (2**31 - 1))[:, 0].float()
        still = bad_rows(bad)
        tried, freed, rounds = tried + len(bad), freed + len(bad) - len(still), r
        fails[still] += 1
        bad = still
        if r < _SHUFFLE_REDRAWS and tried >= _SHUFFLE_MIN_TRIED:
            done = fails[bad] >= _SHUFFLE_ROW_FAILS
            stopped = np.concatenate([stopped, bad[done]])
            bad = bad[~done]
    return B, rounds, len(stopped), freed


def interaction_check(model, motif_a, motif_b, X=None, *, context=(), n_backgrounds=256,
                      seq_len=None, target=0, output="probability", sample_pwm=False,
                      tol=0.25, min_effect=0.05, z=3.0, batch_size=512, random_state=0):
    """Plant two motifs alone and together into shuffled backgrounds; report the model's outputs.

    Parameters
    ----------
    model: nn.Module, (B, 4, L) -> (B, n_outputs) (pre-sigmoid logits). Left in the mode and state
        it was found in (run in eval mode).
    motif_a, motif_b: str over ACGT, or (4, k) probability matrices (their consensus is planted,
        or, with ``sample_pwm=True``, one instance sampled per background).
    X: torch.Tensor (N, 4, L) one-hot sequences whose dinucleotide shuffles are the backgrounds
        (cycled through when ``n_backgrounds > N``; no N bases), or None: uniform random
        sequences of length ``seq_len``. Either way the backgrounds are kept free of the
        planted motifs' consensus sequences (forward strand) where that is feasible, i.e. for
        each motif expected at most once in a uniform background of that length: a random
        background holding one is redrawn, a shuffle holding one is reshuffled (up to 20
        times; a row still holding one after 5 reshuffles in a row stops there, where 64 or
        more reshuffles were tried in all: a sequence whose dinucleotide counts force the
        motif, e.g. poly-A in AT-rich DNA, keeps it). Backgrounds
        that still hold a motif (e.g. a 4-mer in 1000 bp) are warned of with the fraction per
        motif, which ``settings['backgrounds_with_motif']`` records (0 for each motif kept out).
    context: motifs (str or matrices) planted into every condition, e.g. the AND partner;
        None is no context.
    n_backgrounds: number of backgrounds (each used in all four conditions).
    seq_len: length of random backgrounds when ``X`` is None (default None: then ``X`` is
        required; one of the two must be given, else ValueError). Ignored when ``X`` is given.
    target: the one output to read: an int, the flat index into one sequence's output (its
        column for (N, n_outputs) logits), a tuple with one index per output axis (e.g.
        (track, position) for (N, C, L) profiles), or a one-element list holding either
        (``[(track, position)]``, as LayerFeatureOptimizer.attribute takes one target; it
        refuses the bare tuple for a multi-axis output). Its form is checked before any work.
    output: ``"probability"`` (default: sigmoid of the model's output, the scale on which AND / OR /
        XOR are judged) or ``"logit"`` (the raw output). A model whose output is computed last
        by ``nn.Sigmoid`` or ``nn.Softmax`` (or ``torch.sigmoid`` / ``F.softmax`` /
        ``exp(log_softmax)`` in its forward) already returns probabilities: they are used as
        they are (no second sigmoid), with a warning. One whose output is computed last by
        ``nn.LogSoftmax`` (or ``F.log_softmax``, the usual partner of ``NLLLoss``) returns
        log-probabilities: their ``exp`` is used, the probabilities a Softmax ending would give,
        with a warning. ``"logit"`` is refused for both kinds (the message says how to get the
        logits). What decides is the output's autograd graph (looking through reshapes,
        indexing and casts after the squashing op), not the last module to run: a (Log)Softmax
        over attention weights followed by more maths (a parameter head, ``h[:, 1] - h[:, 0]``)
        leaves logits. A softmax over the batch axis (axis 0; ``nn.Softmax()`` without ``dim``
        on a (N,) output) is refused: its outputs would change with ``batch_size``.
    tol, min_effect, z: finite numbers >= 0, see :func:`classify_interaction` (``tol`` and
        ``min_effect`` in units of ``output``). Each effect a label rests on (each motif's own
        effect for XOR / OR, the gap for XOR / AND, the interaction for AND) counts only if it
        exceeds ``z`` standard errors over the backgrounds (paired); a pattern that fits a
        label only in its means is ``"uncertain"``.
    batch_size: sequences per forward pass.
    random_state: int seed (shuffles, positions, sampled instances); a bool is refused. None
        draws fresh entropy (numpy's convention): the result is then not reproducible.

    Returns
    -------
    :class:`InteractionResult`.

    Raises
    ------
    ValueError: the model's output on the planted sequences is not finite (NaN or inf, e.g. a
        float16 overflow): effects of such outputs would read as "none".
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_one_input(model)
    if output not in ("logit", "probability"):
        raise ValueError("output must be 'logit' or 'probability'")
    if isinstance(n_backgrounds, bool) or not isinstance(n_backgrounds, (int, np.integer)) or \
            n_backgrounds < 2:
        raise ValueError(f"n_backgrounds must be an int >= 2, got {n_backgrounds!r}")
    sample_pwm = _check_flag("sample_pwm", sample_pwm)
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError(f"random_state must be an int seed, not a boolean, got {random_state!r}")
    _check_batch_size(batch_size)
    _check_thresholds(tol, min_effect, z)
    if X is None and seq_len is not None and (
            isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1):
        raise ValueError(f"seq_len must be an integer >= 1 (the length of the random "
                         f"backgrounds), got {seq_len!r}")
    if context is None:
        context = ()
    elif isinstance(context, (str, np.ndarray, torch.Tensor)):
        context = [context]
    target = _as_target(target)
    mats = [motif_to_one_hot(motif_a), motif_to_one_hot(motif_b)]
    mats += [motif_to_one_hot(c) for c in context]
    rng = np.random.default_rng(random_state)
    seed = int(rng.integers(2**31 - 1))

    if X is None:
        if seq_len is None:
            raise ValueError("give X (sequences to shuffle) or seq_len (random backgrounds)")
        L0 = int(seq_len)
    else:
        if not isinstance(X, torch.Tensor) or X.ndim != 3 or X.shape[1] != 4 or len(X) == 0:
            raise ValueError("X must be a non-empty one-hot tensor of shape (N, 4, L)")
        unknown = _unknown_positions(X)
        if unknown.any():
            raise ValueError(
                f"X has N (all-zero) positions ({_describe_unknown(unknown)}); the backgrounds "
                "are dinucleotide shuffles of X (tangermeme), which need ACGT sequences: pass "
                "sequences without N, or X=None with seq_len for random backgrounds")
        L0 = int(X.shape[-1])
    # backgrounds without the planted motifs' consensus (forward strand): one holding a motif
    # by chance would blur the "none" / "a" / "b" contrast. Only for motifs expected at most
    # once per uniform background: a short one in a long sequence is nearly always there (and
    # for shuffles of X, a sequence whose dinucleotide content forces the motif keeps it).
    cons = sorted({consensus(m) for m in mats})
    avoid = [c for c in cons if (L0 - len(c) + 1) / 4.0 ** len(c) <= 1.0]
    if X is None:
        from .datasets import _motif_free_backgrounds
        idx = _motif_free_backgrounds(rng, n_backgrounds, L0, avoid)
        B = torch.nn.functional.one_hot(torch.as_tensor(idx, dtype=torch.long), 4).permute(0, 2, 1).float()
    else:
        src = X[np.arange(n_backgrounds) % len(X)].float().cpu()
        B, rounds, stopped, freed = _motif_free_shuffles(src, avoid, seed)
    held = _motif_fractions(B, cons)
    if any(held.values()):
        kind = "random" if X is None else "dinucleotide-shuffled"
        if X is None:
            redrawn = ""
        elif stopped:
            n = len(B)
            redrawn = (f", and a shuffle of X holding one is reshuffled up to {_SHUFFLE_REDRAWS} "
                       f"times: {stopped / n:.1%} of the backgrounds were not reshuffled further "
                       f"after holding one in {_SHUFFLE_ROW_FAILS} reshuffles in a row (the "
                       "sequences' composition makes their shuffles hold it), "
                       f"{freed / n:.1%} were freed by reshuffling")
        else:
            redrawn = (", and a shuffle of X holding one is reshuffled up to "
                       f"{_SHUFFLE_REDRAWS} times only")
        warnings.warn(
            f"{kind} {L0} bp backgrounds hold planted motifs before any is planted: "
            + ", ".join(f"{c} in {f:.1%}" for c, f in held.items() if f)
            + " of them (forward strand; a motif expected more than once per background is "
            f"not kept out{redrawn}), so they are not kept motif-free: 'none', 'a' and "
            "'b' then already contain it and the effects shrink. Use shorter backgrounds (X cut "
            "to a window, or seq_len) or longer motifs; the fractions are in "
            "settings['backgrounds_with_motif']", UserWarning, stacklevel=2)
    L = B.shape[-1]
    starts = _non_overlapping_starts(rng, n_backgrounds, [m.shape[1] for m in mats], L)
    inst = [_draw(m, n_backgrounds, sample_pwm, rng) for m in mats]

    conds = {"none": (False, False), "a": (True, False), "b": (False, True), "both": (True, True)}
    seqs = []
    for name in CONDITIONS:
        has_a, has_b = conds[name]
        s = starts.copy()
        if not has_a:
            s[:, 0] = -1
        if not has_b:
            s[:, 1] = -1
        seqs.append(plant_motifs(B, inst, s))
    allX = torch.cat(seqs)

    with _preserved(model):
        try:
            dtype = _model_float_dtype(model) or allX.dtype
            squashed, log, out_shape, advice = _probe_forward(
                model, allX[:2].to(device=_model_device(model), dtype=dtype))
        except (RuntimeError, IndexError) as e:
            raise type(e)(f"{e}\n(the sequences were (N, 4, {L}): is {L} bp a length the model "
                          f"takes? set it with X or seq_len)\n{_ONE_HOT_HINT}") from e
        target = _flat_target(target, out_shape)
        y = _predict(model, allX, target, batch_size, _model_device(model))
    kind = "log-probabilities" if log else "probabilities"
    if squashed and output == "logit":
        raise ValueError(
            f"output='logit' asked, but the model {squashed}: its outputs are {kind}, not "
            f"logits. Use output='probability'{' (their exp)' if log else ''}, or {advice}.")
    if squashed and log:
        # a sigmoid of log p would be p / (1 + p), at most 0.5: neither scale
        warnings.warn(
            f"the model {squashed}, so its outputs are log-probabilities; interaction_check "
            "takes their exp (the probabilities a Softmax model gives), not a sigmoid.",
            UserWarning, stacklevel=2)
        y = torch.exp(y)
    elif squashed:
        warnings.warn(
            f"the model {squashed}, so its outputs are already probabilities; "
            "interaction_check uses them as they are (no second sigmoid).", UserWarning, stacklevel=2)
    elif output == "probability":
        y = torch.sigmoid(y)
    Y = y.numpy().reshape(4, n_backgrounds).T.astype(np.float64)  # (n, 4): none, a, b, both
    bad = ~np.isfinite(Y)
    if bad.any():
        raise ValueError(
            f"the model's output {target} is not finite (NaN or inf) on {int(bad.sum())} of the "
            f"{bad.size} planted sequences (in conditions "
            f"{[c for c, b in zip(CONDITIONS, bad.any(0)) if b]}): no effect can be read from "
            "them. Check the model (e.g. a float16 model that overflows: try model.float())")

    n = n_backgrounds
    sem = lambda v: float(v.std(ddof=1) / np.sqrt(n))
    eff = Y - Y[:, :1]
    table = pd.DataFrame({
        "mean": Y.mean(0), "sem": [sem(Y[:, i]) for i in range(4)],
        "effect": eff.mean(0), "effect_sem": [sem(eff[:, i]) for i in range(4)],
    }, index=pd.Index(CONDITIONS, name="condition"))
    inter = Y[:, 3] - Y[:, 1] - Y[:, 2] + Y[:, 0]
    stronger = 1 if eff[:, 1].mean() >= eff[:, 2].mean() else 2
    logic = classify_interaction(float(eff[:, 1].mean()), float(eff[:, 2].mean()),
                                 float(eff[:, 3].mean()), tol=tol, min_effect=min_effect,
                                 sems=[sem(eff[:, i]) for i in (1, 2, 3)], z=z,
                                 interaction_sem=sem(inter), gap_sem=sem(Y[:, 3] - Y[:, stronger]))
    names = {"a": consensus(mats[0]), "b": consensus(mats[1]),
             "context": [consensus(m) for m in mats[2:]]}
    settings = dict(n_backgrounds=n, target=target, output=output, sample_pwm=sample_pwm, tol=tol,
                    min_effect=min_effect, z=z, random_state=random_state,
                    backgrounds="random" if X is None else "dinucleotide_shuffle",
                    backgrounds_with_motif=held)
    return InteractionResult(table, float(inter.mean()), sem(inter), logic, Y, names, settings)


def channel_pair_interaction(model, layer, channel_a, channel_b, X, *, pwms=None, trim=0.5,
                             attribute_to_layer_input=False, **kwargs):
    """:func:`interaction_check` for two channels of ``layer``, using their motifs.

    Parameters
    ----------
    model, layer: the network and the layer whose channels are paired.
    channel_a, channel_b: channel indices (an int, or a 0-d integer tensor / array such as
        ``ofiv.argmax()``).
    X: torch.Tensor (N, 4, L): sequences to shuffle for backgrounds, and to start the deep-layer
        motif search from (see :func:`deepresolve_captum.channel_motifs.channel_pwms`).
    pwms: where the two channels' probability matrices come from:

        - None (default): computed with :func:`~deepresolve_captum.channel_motifs.channel_pwms`:
          filter PWMs for first-layer channels, else the base frequencies of each channel's
          top-activating fragments of ``X`` (``fragment_pwms``: what the channel responds to in
          the data; the gradient-ascent PWM of a channel can drift to a variant the model never
          saw).
        - a :class:`~deepresolve_captum.channel_motifs.ChannelMotifs` (what ``channel_pwms``
          returns, for any list of channels that holds both): its ``pwms``, looked up through
          its ``channels`` (for its fragment frequencies instead, pass
          ``dict(zip(res.channels, res.fragment_pwms))``).
        - a dict {channel index: (4, w) matrix}.
        - a (K, 4, w) array / list indexed by channel id, with one matrix for *every* one of the
          layer's K channels (checked on one forward pass). A ``ChannelMotifs.pwms`` array has
          one row per *requested* channel instead; indexing it by channel id would silently
          plant another channel's motif, so an array whose length is not K is refused: pass the
          ``ChannelMotifs`` itself, or a dict.
    trim: information-content threshold (bits) used to trim each PWM to its core before
        planting. A channel whose matrix has no column at or above it (or is uniform) is
        refused, with the channel named: there is no motif to plant.
    attribute_to_layer_input: True or False: the channels are those of the layer's *input*
        (Captum's name, as in ``LayerFeatureOptimizer.attribute``): e.g. ``layer=model.fc1``
        with True pairs the pooled filters an ``EncodeTFModel`` feeds into ``fc1``, the
        channels its OFIVs are over (``summarize_zoo``'s layer). Used for ``pwms=None`` and for
        the channel count an array of ``pwms`` is checked against.
    kwargs: passed to :func:`interaction_check` (``context``, ``n_backgrounds``, ``target`` ...).

    Returns
    -------
    :class:`InteractionResult` (its ``motifs`` give the consensus strings that were planted).

    Raises
    ------
    ValueError: ``pwms=None`` without ``X``; a channel's matrix uninformative (no column at or
        above ``trim`` bits); a channel missing from ``pwms``; and what
        :func:`interaction_check` raises.
    """
    from collections.abc import Mapping

    from .channel_motifs import ChannelMotifs, _layer_value, channel_pwms, trim_pwm
    from .motifs import column_information

    attribute_to_layer_input = _check_flag("attribute_to_layer_input", attribute_to_layer_input)
    pair = []
    for name, c in (("channel_a", channel_a), ("channel_b", channel_b)):
        ch = _checked_channels(name, c)
        if len(ch) != 1:
            raise ValueError(f"{name} must be one channel index, got {c!r}")
        pair.append(ch[0])
    channel_a, channel_b = pair
    if channel_a == channel_b:
        raise ValueError(f"channel_a and channel_b are the same channel ({channel_a}): a "
                         "channel paired with itself plants one motif twice; pick two channels")
    if pwms is None:
        if X is None:
            raise ValueError(
                "pwms=None needs X: the channels' motifs are read from their top-activating "
                "fragments of the sequences X. Give X (N, 4, L), or pass the motifs as pwms "
                "(a ChannelMotifs, a dict {channel: (4, w) matrix} or one matrix per channel) "
                "with seq_len for random backgrounds")
        res = channel_pwms(model, layer, [channel_a, channel_b], X, n_steps=0,  # fragments only
                           attribute_to_layer_input=attribute_to_layer_input)
        src = res.fragment_pwms if res.fragment_pwms is not None else res.pwms
        pa, pb = src[0], src[1]
    elif isinstance(pwms, ChannelMotifs):
        have = [int(c) for c in pwms.channels]
        missing = [c for c in (channel_a, channel_b) if c not in have]
        if missing:
            raise ValueError(f"channel(s) {missing} not in the ChannelMotifs, whose channels are "
                             f"{have}; make it with channel_pwms(model, layer, [{channel_a}, "
                             f"{channel_b}], X)")
        pa, pb = (pwms.pwms[have.index(c)] for c in (channel_a, channel_b))
    elif isinstance(pwms, Mapping):
        keys = {int(k): k for k in pwms}
        missing = [c for c in (channel_a, channel_b) if c not in keys]
        if missing:
            raise ValueError(f"channel(s) {missing} not among the keys of pwms {sorted(keys)}")
        pa, pb = (pwms[keys[c]] for c in (channel_a, channel_b))
    else:
        _check_model_layer(model, layer)
        if X is not None:
            x1 = _check_X(X[:1], model=model)
        elif kwargs.get("seq_len") is not None:
            x1 = torch.zeros(1, 4, int(kwargs["seq_len"]), dtype=_model_float_dtype(model))
        else:
            raise ValueError("give X (sequences to shuffle) or seq_len (random backgrounds)")
        with torch.no_grad(), _preserved(model):
            v = _layer_value(model, layer, x1.to(_model_device(model)),
                             attribute_to_layer_input)
        where = "input" if attribute_to_layer_input else "output"
        if v.ndim < 2:
            raise ValueError(f"the layer's {where} must be (N, K, ...) to have channels, got "
                             f"{tuple(v.shape)}")
        K = int(v.shape[1])
        if len(pwms) != K:
            other = (" (for the channels of the layer's input, e.g. the pooled filters that "
                     "feed a Linear, pass attribute_to_layer_input=True)"
                     if not attribute_to_layer_input else "")
            raise ValueError(
                f"pwms holds {len(pwms)} matrices, but the layer's {where} has {K} channels"
                f"{other}: an array or list is indexed by channel id and must hold one matrix "
                "per channel. For the matrices of some channels only (e.g. channel_pwms(..., "
                "top, X).pwms, one row per requested channel), pass the ChannelMotifs itself or "
                "a dict {channel: matrix}")
        for c in (channel_a, channel_b):
            if c >= K:
                raise ValueError(f"channel {c} out of range for a layer {where} with {K} "
                                 "channels")
        pa, pb = pwms[channel_a], pwms[channel_b]
    planted = []
    for c, p in ((channel_a, pa), (channel_b, pb)):
        p = motif_to_one_hot(p)
        ic = column_information(p)
        if not ic.max() >= max(trim, 1e-6):
            # trim_pwm keeps a matrix none of whose columns reaches trim as it is, and its
            # consensus breaks ties to 'A': a uniform matrix would be planted as poly-A
            raise ValueError(
                f"channel {c}'s motif is uninformative: no column of its (4, {p.shape[1]}) "
                f"matrix reaches trim={trim} bits (the most informative has {ic.max():.3f} "
                "bits), so there is no motif to plant (a uniform matrix would plant poly-A). "
                "The channel may never switch on for these sequences: with pwms=None pass a "
                "larger X, or one where the channel fires (e.g. sequences that hold its "
                "motif); or pass its motif in pwms, or a lower trim")
        planted.append(trim_pwm(p, trim))
    return interaction_check(model, planted[0], planted[1], X, **kwargs)


def channel_ablation(model, layer, X, channels=None, *, target=0, fill=0.0,
                     attribute_to_layer_input=False, batch_size=256, verbose=False,
                     return_sem=False):
    """How much each channel of ``layer`` supports the model's output on the sequences ``X``.

    For channel k the effect is the mean over the N sequences of ``f(x) - f(x with channel k of
    the layer set to fill)`` at every position: positive when the channel raises output
    ``target`` there, negative when it lowers it. Called on sequences that hold different motif
    combinations (one call per combination), it shows how the network *uses* a channel: a
    channel whose effect changes sign with the presence of another motif (positive with motif a
    alone, negative with a and b together, as in an XOR) is used non-additively, whatever its
    FIVs say; one whose effect keeps its sign is used additively. This is the ground truth
    DeepResolve's IL approximates from the feature space.

    Parameters
    ----------
    model: nn.Module returning (N, n_outputs) (or (N,)) logits.
    layer: a submodule of ``model`` whose output (or input) is (N, K, ...), called once per forward.
    X: torch.Tensor (N, 4, L), one-hot sequences.
    channels: channel indices (an int, a 0-d integer tensor or array such as ``ofiv.argmax()``,
        or a sequence of them), or None (all K channels).
    target: the one output to read: an int (flat index into one sequence's output), a tuple
        with one index per output axis, or a one-element list holding either, as in
        :func:`interaction_check`.
    fill: a finite real number, the value the channel is set to (0: a ReLU channel that does
        not fire).
    attribute_to_layer_input: True or False: ablate the layer's input instead of its output.
    batch_size: sequences per forward pass.
    verbose: True or False: a progress bar over the channels (one forward pass over X each:
        ~18 min for DeepSEA's 480 conv3 channels on 64 x 1000 bp on one CPU thread).
    return_sem: True or False: also return the standard error of each mean effect over the
        N sequences (the SD of the paired differences over sqrt(N); needs N >= 2), to judge
        whether an effect, or its change of sign between two calls, is more than noise.

    Returns
    -------
    numpy float64 (n_channels,), the mean effect per channel, in the output's units; with
    ``return_sem=True`` a tuple (means, sems) of two such arrays.

    Raises
    ------
    ValueError: ``fill`` not a finite real number; the model's output not finite (NaN or inf)
        on X or with a channel ablated; ``return_sem=True`` with one sequence; and a layer,
        channel or target it cannot use (named).
    """
    _check_model_layer(model, layer)
    X = _check_X(X)
    _check_batch_size(batch_size)
    attribute_to_layer_input = _check_flag("attribute_to_layer_input", attribute_to_layer_input)
    verbose = _check_flag("verbose", verbose)
    return_sem = _check_flag("return_sem", return_sem)
    if isinstance(fill, (bool, np.bool_)) or not isinstance(fill, (int, float, np.integer,
                                                                    np.floating)):
        raise TypeError(f"fill must be a finite real number (the value an ablated channel is "
                        f"set to), got {fill!r}")
    if not np.isfinite(fill):
        raise ValueError(f"fill must be a finite real number (the value an ablated channel is "
                         f"set to), got {fill!r}: a NaN or inf fill makes every effect NaN")
    fill = float(fill)
    if return_sem and len(X) < 2:
        raise ValueError("return_sem=True needs at least 2 sequences in X (a standard error "
                         f"over sequences), got {len(X)}")
    if channels is not None:
        channels = _checked_channels("channels", channels)
    target = _as_target(target)
    device = _model_device(model)
    ablate = {"k": None}

    def swap(value):
        if ablate["k"] is None:
            return value
        value = value.clone()
        value[:, ablate["k"]] = fill
        return value

    if attribute_to_layer_input:
        handle = layer.register_forward_pre_hook(lambda m, args: (swap(args[0]),) + tuple(args[1:]))
    else:
        handle = layer.register_forward_hook(lambda m, args, out: swap(out))
    try:
        with _preserved(model):
            seen = {}

            def shape_hook(m, args, out=None):
                v = args[0] if attribute_to_layer_input else out
                seen["shape"] = tuple(v.shape) if torch.is_tensor(v) else None
                seen["calls"] = seen.get("calls", 0) + 1
            h = (layer.register_forward_pre_hook(shape_hook) if attribute_to_layer_input
                 else layer.register_forward_hook(shape_hook))
            try:
                dtype = _model_float_dtype(model) or X.dtype
                squashed, log, out_shape, advice = _probe_forward(
                    model, X[:1].to(device=device, dtype=dtype))
            except (RuntimeError, IndexError) as e:
                raise type(e)(f"{e}\n{_ONE_HOT_HINT}") from e
            finally:
                h.remove()
            check_layer_calls(seen.get("calls", 0),
                              module_path(model, layer) or type(layer).__name__)
            if squashed:
                warnings.warn(
                    f"the model {squashed}: the ablation effects are differences of "
                    + ("log-probabilities, which shrink where the probability nears 1"
                       if log else "probabilities, which shrink where the output saturates "
                       "near 0 or 1")
                    + f"; for effects in logits, {advice}.", UserWarning, stacklevel=2)
            if seen["shape"] is None or len(seen["shape"]) < 2:
                raise ValueError("the layer's value must be one (N, K, ...) tensor to ablate channels")
            target = _flat_target(target, out_shape)
            K = seen["shape"][1]
            channels = list(range(K)) if channels is None else channels
            if not all(0 <= k < K for k in channels):
                raise ValueError(f"channels must lie in [0, {K}) for this layer, got {channels}")
            full = _predict(model, X, target, batch_size, device)
            _check_finite_output(full, target, "on X")
            bar = None
            if verbose:
                from tqdm.auto import tqdm
                bar = tqdm(channels, desc="channel ablation", unit="channel")
            means, sems = [], []
            try:
                for k in (bar if bar is not None else channels):
                    ablate["k"] = k
                    y = _predict(model, X, target, batch_size, device)
                    ablate["k"] = None
                    _check_finite_output(y, target, f"with channel {k} set to {fill}")
                    d = (full - y).numpy()
                    means.append(float(d.mean()))
                    if return_sem:
                        sems.append(float(d.std(ddof=1) / np.sqrt(len(d))))
            finally:
                if bar is not None:
                    bar.close()
            return (np.array(means), np.array(sems)) if return_sem else np.array(means)
    finally:
        ablate["k"] = None
        handle.remove()


def _check_finite_output(y, target, where):
    """Refuse (ValueError) model outputs ``y`` (N,) that are NaN or inf: their effects would be
    NaN, read as no effect."""
    bad = ~torch.isfinite(y)
    if bad.any():
        raise ValueError(
            f"the model's output {target} is not finite (NaN or inf) {where} for "
            f"{int(bad.sum())} of {len(y)} sequences: no effect can be read from it. Check the "
            "model (e.g. a float16 model that overflows: try model.float())")
