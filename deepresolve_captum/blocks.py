"""Resumable runs over many targets: the ascent in blocks of targets, each block saved as it ends.

A model with thousands of outputs (DeepSEA's 919, a 21,907-output head) takes hours for one
:meth:`LayerFeatureOptimizer.attribute` call, and an interrupt or crash would lose all of it.
:func:`attribute_in_blocks` splits the target list into blocks, runs one ``attribute`` call per
block and writes each block's result to its own file in ``folder`` as soon as it ends. Calling
it again with the same folder and arguments resumes: finished blocks are read, not recomputed.

Everything that must be the same for every block is resolved once, up front, and recorded in
``folder/run.json``: the full target list, lambda (``l2="auto"`` is chosen once, over the whole
target list, with :meth:`LayerFeatureOptimizer.choose_l2`: "auto" per block would choose a
different lambda per block), the seed, the ascent's settings, the layer, and fingerprints of
the inputs, the extra forward arguments and the model's weights (the modules found behind a
forward callable that is not an nn.Module, or those named with ``model=``). Each start is seeded by
(seed, target, start), so a start's draw does not depend on the block it falls in. Where the
start ends can, in float32: a block is a batch of another size than one ``attribute`` call
over all targets (as another ``chunk_size`` is), which rounds differently (~1e-7 relative),
and where a step lands near a ReLU or max-pool kink that can flip the test that accepts the
step, so the start goes on from another point (see ``attribute``'s ``seed``). This is
rounding amplified by the ascent, not the stopping tolerance: ``tol=0`` differs as much.
Measured on small PaperCNN models (7 outputs, 8 filters, 40 bp), H at the conv output,
float32: ``block_size=3`` against one call (lambda 0.1, every start converged), whole FIMs
differed by up to 0.14 of the largest |H| and FIVs by up to 5e-3 of it; ``chunk_size=1``
against one chunk at the ``choose_l2`` lambda (~0.02), FIMs by up to 0.27 and FIVs by up to
8e-3; through ``summarize`` (blocks of 3, 4 models x 2 lambdas, 10 starts) OFIVs moved by up
to 0.4% of the largest OFIV, and no category or top-1 channel changed. In float64 (rounding
~1e-16, so a flipped step is far rarer, though not impossible), on three PaperCNN models (7
outputs, 32 filters, 40 bp) at the conv and the pool output, blocks of 3 and ``chunk_size=1``
against one call gave bit-identical FIVs, but scores that differed by up to 5e-16 relative (a
start's final score is computed with the rows that stop with it, a batch of another size) and
so OFIVs by up to 6e-16 of the largest; on a deeper model (conv, max-pool, conv, tanh, mean,
Linear) ``chunk_size=1`` moved FIMs by 2e-9 of the largest |H|. Use a float64 model and inputs
(``model.double()``) where blocked results must agree closely with one call's; bit for bit is
not promised.

Folder layout::

    folder/run.json            the run's settings (JSON, written once, atomically)
    folder/block_00000.npz     block 0: targets[0:block_size]
    folder/block_00001.npz     block 1: targets[block_size:2 * block_size]
    ...

Each ``block_NNNNN.npz`` (``np.load``-able, no pickles) holds ``values`` (n_block_targets,
n_starts, K) FIVs, or (n_block_targets, n_starts, \\*layer_shape) FIMs with ``fiv_only=False``;
``scores``, ``steps``, ``objective`` and ``converged`` (n_block_targets, n_starts); ``targets``
(n_block_targets,); and ``run_id``, a hash of the settings in run.json. A block file is written
to a temporary file in the same folder and renamed into place (``os.replace``), so a kill leaves
either the whole file or none (at most a stray hidden ``.block_NNNNN.npz.*.partial`` file,
which is ignored and can be deleted). Files get the usual permissions (``0o666`` less the
umask; a file written over keeps its own), and a symlinked run.json or block file stays a
link: the file it points at is written.

Read a finished or partial folder with :func:`load_blocks`.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._io import plain, provenance, write_atomic
from ._modules import _outside_stacklevel, module_modes, restore_modes
from .interaction import _check_flag
from .optimizer import (AscentDiagnostics, LayerFeatureOptimizer, _as_tuple, _check_l2,
                        _check_positive_float, _check_positive_int, _deeper_warnings,
                        _forward_args, _LayerSwap, _owning_module, _parse_targets,
                        _resolve_seed, _Runner, _warn_per_example_target)

__all__ = ["attribute_in_blocks", "load_blocks", "BlockRun"]

RUN_FILE = "run.json"
_FORMAT = 1

#: attribute() arguments that change the results: recorded in run.json and compared on resume
_RESULT_KWARGS = ("init_scale", "lr", "max_steps", "tol", "patience", "attribute_to_layer_input",
                  "target_only_head")
#: attribute() arguments passed on to every block that change the results only through float
#: rounding (chunking: none in float64, see the module docstring) or not at all (callback): not
#: compared on resume
_PASS_KWARGS = ("chunk_size", "memory_budget", "callback")
#: arguments of choose_l2 among the above (they shape the l2="auto" probes)
_PROBE_KWARGS = ("attribute_to_layer_input", "init_scale", "max_steps", "tol", "patience",
                 "chunk_size", "memory_budget", "target_only_head")
#: run.json entries compared on resume, in the order a mismatch lists them
_COMPARED = ("targets", "n_starts", "l2", "seed", "fiv_only", "block_size", "init_scale", "lr",
             "max_steps", "tol", "patience", "attribute_to_layer_input", "target_only_head",
             "layer", "inputs", "additional_forward_args", "model")


@dataclass(repr=False)
class BlockRun:
    """What a block folder holds (:func:`load_blocks`), finished or not.

    Attributes
    ----------
    values: (n_targets, n_starts, K) float array of FIVs, or (n_targets, n_starts,
        \\*layer_shape) FIMs for a run with ``fiv_only=False``, in target order; NaN for the
        targets whose block is not done.
    scores, objective: (n_targets, n_starts) float arrays, NaN where not done.
    steps: (n_targets, n_starts) int array, 0 where not done.
    converged: (n_targets, n_starts) bool array, False where not done.
    targets: (n_targets,) int array, the run's flat output indices.
    done: (n_targets,) bool array, True where the target's block file was read.
    blocks_done, blocks_missing: sorted lists of block indices (block b holds
        ``targets[b * block_size:(b + 1) * block_size]``).
    settings: the run's settings (the contents of run.json: l2, seed, n_starts, fiv_only,
        block_size, the ascent's settings, the layer, fingerprints, versions).
    """

    values: np.ndarray
    scores: np.ndarray
    steps: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    targets: np.ndarray
    done: np.ndarray
    blocks_done: list = field(default_factory=list)
    blocks_missing: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every block is done."""
        return not self.blocks_missing

    def __repr__(self):
        n_b = len(self.blocks_done) + len(self.blocks_missing)
        return (f"BlockRun({len(self.targets)} targets x {self.settings.get('n_starts')} starts, "
                f"{'FIVs' if self.settings.get('fiv_only') else 'FIMs'} "
                f"{tuple(self.values.shape[2:])}, {len(self.blocks_done)}/{n_b} blocks done, "
                f"l2={self.settings.get('l2'):.4g}, seed={self.settings.get('seed')})")


# ---------------------------------------------------------------------------- public API
def attribute_in_blocks(
    optimizer: LayerFeatureOptimizer,
    inputs: Union[Tensor, tuple],
    target: Union[None, int, Sequence[int]] = None,
    additional_forward_args: Any = None,
    *,
    folder: Union[str, os.PathLike],
    block_size: int = 256,
    n_starts: int = 10,
    l2: Union[str, float] = "auto",
    seed: Optional[int] = None,
    fiv_only: bool = True,
    verbose: bool = False,
    model: Optional[torch.nn.Module] = None,
    upgrade: bool = False,
    **attribute_kwargs,
):
    r"""Run ``optimizer.attribute`` in blocks of targets, saving each block as it ends; resume.

    Args:
        optimizer (LayerFeatureOptimizer): the model and layer.
        inputs, target, additional_forward_args: as for
            :meth:`LayerFeatureOptimizer.attribute`. ``target`` is the whole run's list of
            output indices (None: every output of the model, found by one forward of the first
            example in eval mode, the model's modes restored after).
        folder (str or path): where the run lives (created if absent, with its parents; an
            empty path ``""`` is refused). A folder holding a
            run.json resumes that run; the settings of this call must match it: the target
            list, n_starts, l2, seed, fiv_only, block_size, the recorded ascent settings
            below, the layer (class and name in the model), the shape, dtype and sha256 of
            ``inputs`` and of tensor and numpy-array ``additional_forward_args`` (all bytes
            are hashed, ~1 GB/s; plain values as they are, lists, tuples and dicts by a hash
            of their items; any other object by its type only, with a warning that a change
            of it cannot be detected), and a sha256 of the parameters and buffers of the
            model (see ``model``). Versions and chunking are recorded, not compared. While no
            block is finished, a run.json with other settings is replaced, with a warning.
        block_size (int): targets per block (and per ``attribute`` call and file). The last
            block may be smaller.
        n_starts (int): random starts per target.
        l2 (float or "auto"): lambda. ``"auto"`` is chosen once for the whole target list with
            :meth:`LayerFeatureOptimizer.choose_l2` (the lambda ``attribute(l2="auto")`` would
            choose for all targets in one call, with this seed and these settings) before the
            first block, and recorded; a resume reads it back. Passing the recorded number as
            ``l2`` also resumes an "auto" run.
        seed (int, optional): seeds each start as (seed, target, start). None: a new folder
            draws one int from torch's global generator (as ``attribute`` does) and records it;
            a resume with None uses the recorded seed.
        fiv_only (bool): keep each start's FIV, (K,), instead of its FIM (default True here:
            ``summarize`` needs the FIVs only). With False whole FIMs are written to the block
            files and returned: 21,907 targets x 10 starts on a layer of 960 channels x 50
            positions would be ~42 GB, so read such a run block by block from its files.
        verbose (bool): a progress bar over blocks, and the ascent's own bars (and those of the
            l2="auto" probes) inside it.
        model (nn.Module or list of them, optional): the module(s) whose weights the run's
            fingerprint hashes. None (default): ``forward_func`` itself when it is an
            nn.Module, else the modules found behind the callable without running it: a
            ``functools.partial``'s function and arguments, ``__wrapped__``, a bound
            method's object, the variables of a function's closure, its default arguments
            (``lambda x, m=m: m(x)``) and the globals its code loads (not attribute names:
            ``lambda x: w.model(x)`` looks at ``w``, not at a global ``model``), and the
            attributes of the objects found so that are modules or lists, tuples or dicts of
            them (``w.model``; a callable object's, a bound method's object's), also through
            plain objects up to 3 attributes deep (``self.inner.backbone``), and the attributes
            of a Python module that the code reads (``mods.net``)
            (``lambda x: net(x)[:, 0]`` finds ``net``). This may take modules the forward
            never runs (an EMA copy or a helper held by the same object): a resume is then
            refused when their weights change, and the message names the module (e.g.
            ``forward_func: global 'net'``, ``forward_func: closure variable 'net'``,
            ``forward_func.__self__.ema``); ``model=`` pins the check to the module the
            forward runs for a run started with it. A resume makes the same choice as the
            run's start: a run started with ``model=`` is resumed with the same ``model=``
            (the weights of each module given are compared with those the run recorded for
            it), one started without it is resumed without it; otherwise it is refused.
            When none is found only the layer's own weights are hashed (none for a pooling layer), with a
            warning that a resume cannot detect changed weights: pass the model here then.
            The layer is hashed too when it is in none of these modules. run.json's
            ``weights_checked`` lists what was hashed and ``weights`` a hash per module.
        upgrade (bool): go on with a run started by an earlier version of
            deepresolve_captum that did not record everything this one checks: numpy
            arrays, lists, tuples, dicts and numpy scalars among ``additional_forward_args``
            (recorded by type name only), the weights behind a forward callable that is not
            an nn.Module (only the layer's own were hashed), or a hash per module. Such a
            folder is refused without it, with a message that names what was not recorded
            (not a change of this call); with ``upgrade=True`` this call's fingerprints of
            those entries are written into run.json (and checked by later resumes) and the
            finished blocks are read. By passing it the caller asserts that what that version
            did not record is unchanged since the run started: it cannot be checked, and
            blocks of other weights or arguments would be mixed. Everything that version did
            record must still match, and is checked as that version computed it (its one
            hash over the modules it listed is recomputed now; weights that differ from it
            are refused, ``upgrade=True`` or not). No effect on a new folder or one this
            version wrote.
        \**attribute_kwargs: passed to every block's ``attribute`` call. Those that change the
            results (``init_scale``, ``lr``, ``max_steps``, ``tol``, ``patience``,
            ``attribute_to_layer_input``, ``target_only_head``) are recorded and must match on
            resume; ``chunk_size``, ``memory_budget`` (memory and batch size only: in float64
            the results agreed closely across them: FIVs bit for bit and scores to 5e-16
            relative on small PaperCNN models, FIMs to 2e-9 of the largest |H| on a deeper
            one; in float32 a start may end elsewhere; see the module docstring) and
            ``callback``
            (``callback(step, rows, objective)``, rows counted within the block) may change
            between calls. ``init`` is refused (per-target starts cannot be checked on
            resume: use ``seed``); so are ``return_scores`` (always True here) and names
            ``attribute`` does not take.

    Returns:
        values (Tensor): CPU, in target order: (n_targets, n_starts, K) FIVs, or
            (n_targets, n_starts, \*layer_shape) FIMs with ``fiv_only=False``, in the layer's
            dtype (bfloat16 as float32). The same layout ``attribute(..., fiv_only=fiv_only,
            return_scores=True)`` gives; with ``fiv_only=True`` its size is n_targets x n_starts x
            K x 4 bytes in float32: 840 MB for 21,907 targets x 10 starts x 960 channels.
        scores (Tensor): CPU, (n_targets, n_starts), the class score of each start.
        ``optimizer.diagnostics`` is an :class:`AscentDiagnostics` over all blocks (steps,
        objective, converged and ``scores`` per start, the scores as a numpy copy; l2 and, for
        "auto", ``l2_auto``; ``seconds`` of this call), whether the blocks were computed now or
        read back.

    Raises:
        ValueError: the folder's run.json was written with other settings (the message names
            each one, and for the weights the module(s) that differ; use a new folder, or
            delete this one to start over) or by another version of deepresolve_captum
            (another run.json format; or one that did not record all that this version
            checks: ``upgrade``), or cannot be read (the message says how to keep the finished
            blocks); ``folder`` is a file or empty;
            ``block_size``, ``n_starts`` or ``l2`` not valid (``l2=True`` included); ``init``
            given; the layer is not reached by the forward, or is called more than once.
        OSError: ``folder`` cannot be created or written (checked before any model work).
        TypeError: ``return_scores`` or an argument ``attribute`` does not take;
            ``fiv_only``, ``verbose``, ``attribute_to_layer_input`` or ``target_only_head``
            or ``upgrade`` not True or False (numpy's bools and the ints 1 and 0 count, as
            ``attribute`` takes them; a string such as "False" is not read by its truthiness);
            ``model`` not an nn.Module.

    A block file that cannot be read (e.g. cut short by a full disk) is recomputed, with a
    warning. An interrupt or error leaves every finished block in the folder and the model as
    found (mode, ``requires_grad``); one before run.json is written removes the folders this
    call created (only those, and only while empty).
    """
    t0 = time.perf_counter()
    if not isinstance(optimizer, LayerFeatureOptimizer):
        raise TypeError("optimizer must be a LayerFeatureOptimizer, got "
                        f"{type(optimizer).__name__}")
    folder = _check_folder(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} is a file, not a folder: give a folder path "
                         "(it is created if absent)")
    # the same checks (and messages) as attribute's: bool refused, so l2=True is no lambda 1.0
    block_size = _check_positive_int(block_size, "block_size")
    n_starts = _check_positive_int(n_starts, "n_starts")
    l2 = _check_l2(l2)
    kwargs = _check_kwargs(attribute_kwargs)
    fiv_only = _check_flag("fiv_only", fiv_only)
    verbose = _check_flag("verbose", verbose)
    upgrade = _check_flag("upgrade", upgrade)
    _check_model(model)
    # what the run is: its targets, the layer's shape (one cheap forward, which refuses a bad
    # layer or target before any folder is made) ...
    layer_shape, targets = _probe_shapes(optimizer, inputs, target, additional_forward_args,
                                         kwargs["attribute_to_layer_input"])
    # ... then, before the l2="auto" probes (minutes on a large model), a folder that cannot be
    # created or written fails now, not after them
    made = [p for p in (folder, *folder.parents) if not p.exists()]   # deepest first
    try:
        _check_writable(folder)
        settings = _settle_run(optimizer, inputs, additional_forward_args, folder, targets,
                               layer_shape, n_starts, fiv_only, block_size, l2, seed, kwargs,
                               verbose, model, upgrade)
    except BaseException:
        # a run that never started (e.g. interrupted in the l2 probes) leaves no empty folder,
        # nor the parents this call created (mkdir(parents=True)); only empty folders, and
        # only those this call made, are removed: never anything of the user's
        for p in made:
            try:
                p.rmdir()
            except OSError:
                break
        raise
    lam, seed, run_id = float(settings["l2"]), int(settings["seed"]), settings["run_id"]
    n_t = len(targets)
    n_blocks = math.ceil(n_t / block_size)
    values_shape = (n_t, n_starts) + ((layer_shape[0],) if fiv_only else tuple(layer_shape))
    values = scores = None
    steps = np.zeros((n_t, n_starts), dtype=np.int64)
    objective = np.zeros((n_t, n_starts))
    converged = np.zeros((n_t, n_starts), dtype=bool)
    extra = dict(n_chunks=0, rows_per_chunk=0, recompute_upstream=False, target_only_head=False)

    bar = None
    if verbose:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_blocks, desc="DeepResolve blocks", unit="block")
    n_read = n_run = 0
    try:
        for b in range(n_blocks):
            lo, hi = b * block_size, min(n_t, (b + 1) * block_size)
            block_targets = targets[lo:hi]
            path = folder / _block_name(b)
            block = None
            if path.exists():
                try:
                    block = _read_block(path, run_id, block_targets,
                                        (hi - lo,) + values_shape[1:])
                    n_read += 1
                except _Unreadable as e:
                    warnings.warn(f"block file {path} cannot be used ({e}): recomputing "
                                  f"block {b} (targets {lo}-{hi - 1})", RuntimeWarning,
                                  stacklevel=2)
            if block is None:
                if bar is not None:
                    bar.set_postfix_str(f"block {b}: targets {lo}-{hi - 1}", refresh=True)
                block = _run_block(optimizer, inputs, block_targets, additional_forward_args,
                                   n_starts, lam, seed, fiv_only, verbose, kwargs, run_id, b)
                _write(path, lambda f: np.savez(f, **block))
                n_run += 1
            v = torch.from_numpy(block["values"])
            if values is None:
                values = torch.empty(values_shape, dtype=v.dtype)
                scores = torch.empty((n_t, n_starts), dtype=torch.from_numpy(block["scores"]).dtype)
            values[lo:hi] = v
            scores[lo:hi] = torch.from_numpy(block["scores"])
            steps[lo:hi] = block["steps"]
            objective[lo:hi] = block["objective"]
            converged[lo:hi] = block["converged"]
            extra["n_chunks"] += int(block["n_chunks"])
            extra["rows_per_chunk"] = max(extra["rows_per_chunk"], int(block["rows_per_chunk"]))
            extra["recompute_upstream"] |= bool(block["recompute_upstream"])
            extra["target_only_head"] |= bool(block["target_only_head"])
            if bar is not None:
                bar.set_postfix_str(f"{n_run} computed, {n_read} read", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    optimizer.diagnostics = AscentDiagnostics(
        targets=np.asarray(targets), steps=steps, objective=objective, converged=converged,
        l2=lam, lr=float(settings["lr"]) if settings["lr"] is not None else 1.0 / (2.0 * lam),
        l2_auto=settings.get("l2_auto"), seconds=time.perf_counter() - t0,
        settings=dict(n_starts=n_starts, seed=seed, init_scale=settings["init_scale"],
                      max_steps=settings["max_steps"], tol=settings["tol"],
                      patience=settings["patience"],
                      attribute_to_layer_input=settings["attribute_to_layer_input"],
                      fiv_only=fiv_only, block_size=block_size, folder=str(folder),
                      blocks_computed=n_run, blocks_read=n_read),
        scores=scores.numpy().copy(),      # as attribute keeps them: a copy, the output's dtype
        **extra)
    return values, scores


def load_blocks(folder: Union[str, os.PathLike]) -> BlockRun:
    """Read a block folder written by :func:`attribute_in_blocks`, finished or partial.

    Returns a :class:`BlockRun`: ``values`` (n_targets, n_starts, K) FIVs (or FIMs), ``scores``,
    ``steps``, ``objective``, ``converged`` (n_targets, n_starts) as numpy arrays in target
    order (NaN / 0 / False for targets whose block is not done), ``targets`` (n_targets,),
    ``done`` (n_targets,) bool, ``blocks_done``/``blocks_missing`` and ``settings`` (run.json).
    For the done targets only: ``summarize(r.values[r.done], r.scores[r.done],
    targets=r.targets[r.done])`` (numpy arrays, taken as they are). ``targets=`` stores the
    model output of each row, which the summary's plots and ``save`` label the rows with: its
    row ``i`` is output ``r.targets[r.done][i]`` (and row ``np.flatnonzero(r.done)[i]`` of
    ``r.values``), whichever blocks are missing. Methods that take a target
    (``summary.channels(i)``) still take the row's position, not the output index.

    A block file that cannot be read, or that belongs to another run, counts as missing, with a
    warning. ``ValueError`` when ``folder`` has no readable run.json.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    run_file = folder / RUN_FILE
    if not run_file.exists():
        raise ValueError(f"{str(folder)!r} holds no {RUN_FILE}: not a folder written by "
                         "attribute_in_blocks")
    s = _read_run(run_file)
    targets = np.asarray(s["targets"], dtype=np.int64)
    n_t, n_starts, bs = len(targets), int(s["n_starts"]), int(s["block_size"])
    tail = (s["layer_shape"][0],) if s["fiv_only"] else tuple(s["layer_shape"])
    values = None
    scores = np.full((n_t, n_starts), np.nan)
    objective = np.full((n_t, n_starts), np.nan)
    steps = np.zeros((n_t, n_starts), dtype=np.int64)
    converged = np.zeros((n_t, n_starts), dtype=bool)
    done = np.zeros(n_t, dtype=bool)
    blocks_done, blocks_missing = [], []
    for b in range(math.ceil(n_t / bs)):
        lo, hi = b * bs, min(n_t, (b + 1) * bs)
        path = folder / _block_name(b)
        block = None
        if path.exists():
            try:
                block = _read_block(path, s["run_id"], targets[lo:hi].tolist(),
                                    (hi - lo, n_starts) + tail)
            except _Unreadable as e:
                warnings.warn(f"block file {path} cannot be used ({e}): counted as missing",
                              RuntimeWarning, stacklevel=2)
        if block is None:
            blocks_missing.append(b)
            continue
        if values is None:
            dt = np.result_type(block["values"].dtype, np.float32)
            values = np.full((n_t, n_starts) + tail, np.nan, dtype=dt)
        values[lo:hi] = block["values"]
        scores[lo:hi] = block["scores"]
        objective[lo:hi] = block["objective"]
        steps[lo:hi] = block["steps"]
        converged[lo:hi] = block["converged"]
        done[lo:hi] = True
        blocks_done.append(b)
    if values is None:
        values = np.full((n_t, n_starts) + tail, np.nan, dtype=np.float32)
    return BlockRun(values=values, scores=scores, steps=steps, objective=objective,
                    converged=converged, targets=targets, done=done, blocks_done=blocks_done,
                    blocks_missing=blocks_missing, settings=s)


# ---------------------------------------------------------------------------- internals
class _Unreadable(Exception):
    """A block file that is cut short, not an npz, or of another run or shape."""


def _block_name(b):
    return f"block_{b:05d}.npz"


def _attribute_defaults():
    sig = inspect.signature(LayerFeatureOptimizer.attribute)
    return {n: p.default for n, p in sig.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_kwargs(kwargs):
    """The attribute kwargs with defaults filled in for the recorded ones; refuse the rest."""
    if "return_scores" in kwargs:
        raise TypeError("return_scores is not an argument of attribute_in_blocks: it always "
                        "returns (values, scores)")
    if "init" in kwargs:
        raise ValueError(
            "init= is not supported by attribute_in_blocks: per-target starts cannot be checked "
            "when a run resumes. Starts are drawn from (seed, target, start) whatever the block "
            "(deepresolve_captum.optimizer.start_draw gives them); for starts of your own, call "
            "attribute per block yourself")
    defaults = _attribute_defaults()
    allowed = set(_RESULT_KWARGS) | set(_PASS_KWARGS)
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        taken = set(defaults) - {"return_scores", "init", "verbose"} - allowed
        raise TypeError(
            f"attribute_in_blocks got unexpected argument(s) {unknown}: give target, "
            "additional_forward_args, n_starts, l2, seed, fiv_only and verbose as its own "
            f"arguments; it passes on {sorted(allowed)}"
            + (f" (and not {sorted(taken)})" if taken else ""))
    out = {k: defaults[k] for k in _RESULT_KWARGS}
    out.update(kwargs)
    # checked here, as attribute checks them, so that run.json never records a bad value
    out["init_scale"] = _check_positive_float(out["init_scale"], "init_scale")
    out["tol"] = _check_positive_float(out["tol"], "tol", allow_zero=True)
    if out["lr"] is not None:
        out["lr"] = _check_positive_float(out["lr"], "lr")
    out["max_steps"] = _check_positive_int(out["max_steps"], "max_steps")
    out["patience"] = _check_positive_int(out["patience"], "patience")
    for k in ("chunk_size", "memory_budget"):
        if out.get(k) is not None:
            out[k] = _check_positive_int(out[k], k)
    if out.get("callback") is not None and not callable(out["callback"]):
        raise TypeError(f"callback must be callable, got {type(out['callback']).__name__}")
    for k in ("attribute_to_layer_input", "target_only_head"):
        out[k] = _check_flag(k, out[k])
    return out


def _settle_run(optimizer, inputs, additional_forward_args, folder, targets, layer_shape,
                n_starts, fiv_only, block_size, l2, seed, kwargs, verbose, model, upgrade=False):
    """The run's settings: folder/run.json when it matches this call (a resume), else resolved
    now (seed drawn, lambda chosen once over all targets) and written there."""
    scope = _weight_scope(optimizer, model)
    model_digest, weights = _model_fingerprint(scope)
    settings = dict(
        targets=targets, n_starts=n_starts, fiv_only=fiv_only, block_size=block_size,
        **{k: kwargs[k] for k in _RESULT_KWARGS},
        layer=_layer_info(optimizer, scope), layer_shape=list(layer_shape),
        inputs=_fingerprint(_as_tuple(inputs)),
        additional_forward_args=_fingerprint(_forward_args(additional_forward_args),
                                             "additional_forward_args"),
        model=model_digest,
        # what the model fingerprint covers, and its hash per module (recorded, not compared:
        # they name the module whose weights differ when a resume is refused)
        weights_checked=[f"{where}: {type(m).__name__}" for where, m in scope],
        weights=weights)

    run_file = folder / RUN_FILE
    recorded = _read_run(run_file) if run_file.exists() else None
    if recorded is not None:
        asked_l2 = l2
        if seed is None:
            seed = recorded.get("seed")
        settings.update(seed=_resolve_seed(seed), l2_requested=recorded.get("l2_requested"))
        if l2 == "auto" and recorded.get("l2_requested") == "auto":
            settings.update(l2=recorded.get("l2"), l2_auto=recorded.get("l2_auto"))
        else:
            settings.update(l2=l2, l2_auto=None)
        differ, older, hint = _differences(
            recorded, settings, asked_l2, _forward_args(additional_forward_args), optimizer,
            pinned=model is not None, model=model)
        n_done = sum(1 for _ in folder.glob("block_*.npz"))
        if (differ or older) and not n_done:
            warnings.warn(
                f"folder {str(folder)!r} holds a run.json with other settings than this call "
                f"({'; '.join(differ + [t for _, t in older])}) but no finished block: "
                "starting that run over with this call's settings", UserWarning, stacklevel=3)
            recorded = None
        elif differ:
            note = (f" (Besides, the earlier version of deepresolve_captum that started it did "
                    f"not record {'; '.join(t for _, t in older)}.)" if older else "")
            raise ValueError(
                f"folder {str(folder)!r} holds a run with other settings than this call "
                f"({'; '.join(differ)}). Its blocks cannot be mixed with this call's: use a new "
                f"folder, or delete this one to start over.{hint}{note}")
        elif older and not upgrade:
            raise ValueError(_older_message(folder, recorded, older, n_done))
        elif older:
            settings = _upgraded(run_file, recorded, settings, older, n_done)
        else:
            settings = recorded
    if recorded is None:
        seed = _resolve_seed(seed)
        if l2 == "auto":
            probe = {k: kwargs[k] for k in _PROBE_KWARGS if k in kwargs}
            # the distinct targets (the probes take them so; duplicates were warned once
            # already), warnings at the user's line (two frames up: us, attribute_in_blocks)
            with _deeper_warnings(2):
                lam = optimizer.choose_l2(inputs, sorted(set(targets)), additional_forward_args,
                                          seed=seed, verbose=verbose, **probe)
            l2_info = plain(optimizer.l2_auto)
        else:
            lam, l2_info = l2, None
        settings.update(seed=seed, l2=float(lam), l2_requested=l2, l2_auto=l2_info,
                        format=_FORMAT, versions=provenance())
        settings["run_id"] = _run_id(settings)
        _write(run_file, lambda f: f.write(_json_text(settings).encode()))

    return settings


def _older_message(folder, recorded, older, n_done):
    """The refusal of a folder whose run.json an earlier version wrote, where the only
    differences are what that version did not record (``older`` [(key, what)])."""
    versions = recorded.get("versions")
    by = versions.get("version") if isinstance(versions, dict) else None
    keys = sorted({dict(model="the model's weights").get(k, k) for k, _ in older})
    return (
        f"folder {str(folder)!r} holds a run started by an earlier version of "
        f"deepresolve_captum{f' (its run.json says {by})' if by else ''}, which did not "
        "record "
        f"{'; '.join(t for _, t in older)}. All that run recorded matches this call, but "
        f"this version cannot check {' and '.join(keys)} against it. To go on with the run "
        f"and keep its {n_done} finished block file(s), call again with the same arguments and "
        "upgrade=True: run.json then records this call's fingerprints of them (a later resume "
        "checks them) and the blocks are read, not recomputed. Only do so if what was not "
        "recorded is unchanged since the run started (upgrade=True asserts it): blocks of "
        "another model or arguments would be mixed. Or use a new folder")


def _upgraded(run_file, recorded, settings, older, n_done):
    """``upgrade=True`` on a folder of an earlier version (see :func:`_older_entries`): the
    recorded settings with this call's fingerprints of the entries that version did not
    record (the run_id stays, so the finished blocks are read), and the change noted under
    ``upgraded``; written to run.json (a folder that cannot be written keeps its run.json,
    with a warning: the blocks are read all the same)."""
    keys = {k for k, _ in older}
    now = plain(settings)
    new = dict(recorded)
    if "additional_forward_args" in keys:
        new["additional_forward_args"] = now["additional_forward_args"]
    if "model" in keys:
        for k in ("model", "layer", "weights_checked", "weights"):
            new[k] = now[k]
    elif recorded.get("model") == now.get("model"):
        # the same hash over the same modules: their per-module records can be added
        for k in ("weights_checked", "weights"):
            new.setdefault(k, now[k])
    new["upgraded"] = list(recorded.get("upgraded") or []) + [dict(
        by=provenance().get("version"), entries=[t for _, t in older],
        time=time.strftime("%Y-%m-%d %H:%M:%S"))]
    try:
        _write(run_file, lambda f: f.write(_json_text(new).encode()))
        where = f"{run_file} now records them"
    except OSError as e:
        where = f"{run_file} could not be written ({e.strerror or e}) and is as it was"
    warnings.warn(
        f"resuming a run started by an earlier version of deepresolve_captum, which did not "
        f"record {'; '.join(t for _, t in older)}: this call's fingerprints are taken as the "
        f"run's ({where}), and its {n_done} finished block file(s) are kept",
        UserWarning, stacklevel=4)
    return new


def _probe_shapes(optimizer, inputs, target, additional_forward_args, on_input):
    """(layer_shape, flat target list), with attribute's own first checks: one forward of the
    first example (per-example additional arguments sliced the same way) under no_grad, the
    model in eval mode, through attribute's ``_LayerSwap`` and ``_Runner._capture``, so that a
    layer the forward never reaches, or calls twice, or whose value is not one tensor, is
    refused with attribute's message before anything is written, and a model that fails on
    the example gets attribute's hint (from ``_Runner.probe``). Modes and hooks are restored
    after, also on an error."""
    ins = _as_tuple(inputs)
    if not ins or not all(isinstance(x, Tensor) for x in ins):
        raise TypeError("inputs must be a tensor or a tuple of tensors")
    if ins[0].dim() == 0 or ins[0].shape[0] < 1:
        raise ValueError("inputs must hold at least one example (shape (N, ...), N >= 1)")
    owner = _owning_module(optimizer.forward_func)
    scope = owner if owner is not None else optimizer.layer
    modes = module_modes(scope)
    swap = _LayerSwap(optimizer.layer, on_input)
    try:
        scope.eval()
        run = _Runner(optimizer.forward_func, swap, ins, _forward_args(additional_forward_args),
                      ins[0].shape[0])
        try:
            with torch.no_grad():
                value, out = run._capture(run.first, run.first_extra)
        except RuntimeError as first:
            # attribute's hint on a failing first forward (the example's shape; a dtype that is
            # not the model's), from where attribute adds it: _Runner.probe runs the same
            # forward again and raises the error with the hint. Only if that forward now passes
            # (a model that fails once) does the first error go on as it was.
            run.probe(owner)
            raise first
    finally:
        swap.remove()
        restore_modes(modes)   # through train(), as attribute does
    if value.dim() < 2 or value.shape[0] != 1:
        raise ValueError(f"the value of layer {swap.name} has shape {tuple(value.shape)} for one "
                         "example: H must be (N, K, ...), batch first")
    if out.dim() == 0 or out.shape[0] != 1:
        raise ValueError("forward_func must return outputs with a batch dimension, shape "
                         f"(N, ...); got {tuple(out.shape)} for one example")
    targets = _parse_targets(target, tuple(out.shape[1:]))
    # the blocks hand attribute list slices, which never warn: the user's own target is checked
    # here, once (user > attribute_in_blocks > _probe_shapes)
    _warn_per_example_target(target, ins[0].shape[0], stacklevel=3)
    return tuple(value.shape[1:]), targets


def _run_block(optimizer, inputs, block_targets, additional_forward_args, n_starts, lam, seed,
               fiv_only, verbose, kwargs, run_id, b):
    t0 = time.perf_counter()
    # warnings at the user's line (user > attribute_in_blocks > _run_block > attribute); a
    # duplicate target was warned once up front (_probe_shapes), not again in every block
    with _deeper_warnings(2), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"target lists \d+ duplicate output")
        values, scores = optimizer.attribute(
            inputs, block_targets, additional_forward_args, n_starts=n_starts, l2=lam,
            seed=seed, fiv_only=fiv_only, return_scores=True, verbose=verbose, **kwargs)
    d = optimizer.diagnostics
    values, scores = values.detach().cpu(), scores.detach().cpu()
    # numpy has no bfloat16; the scores have the output's dtype, which may differ from the layer's
    if values.dtype == torch.bfloat16:
        values = values.float()
    if scores.dtype == torch.bfloat16:
        scores = scores.float()
    return dict(values=values.numpy(), scores=scores.numpy(),
                targets=np.asarray(block_targets, dtype=np.int64),
                steps=np.asarray(d.steps, dtype=np.int64), objective=np.asarray(d.objective),
                converged=np.asarray(d.converged, dtype=bool), run_id=np.array(run_id),
                block=np.array(b), seconds=np.array(time.perf_counter() - t0),
                n_chunks=np.array(d.n_chunks), rows_per_chunk=np.array(d.rows_per_chunk),
                recompute_upstream=np.array(d.recompute_upstream),
                target_only_head=np.array(d.target_only_head))


_BLOCK_KEYS = ("values", "scores", "targets", "steps", "objective", "converged", "run_id",
               "n_chunks", "rows_per_chunk", "recompute_upstream", "target_only_head")


def _read_block(path, run_id, block_targets, values_shape):
    """The block's arrays (a dict), or _Unreadable saying why not."""
    try:
        # our own handle, closed also when np.load fails on a cut-short zip (np.load(path)
        # leaves the file it opened to the garbage collector then: a ResourceWarning)
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            block = {k: f[k] for k in f.files}
    except Exception as e:  # a cut-short zip raises BadZipFile, EOFError, OSError, ValueError
        raise _Unreadable(f"{type(e).__name__}: {e}") from None
    missing = [k for k in _BLOCK_KEYS if k not in block]
    if missing:
        raise _Unreadable(f"no {missing} entries")
    if str(block["run_id"]) != run_id:
        raise _Unreadable("it was written by another run (its run_id differs from run.json)")
    if block["targets"].tolist() != list(block_targets):
        raise _Unreadable("its targets are not this block's")
    if tuple(block["values"].shape) != tuple(values_shape):
        raise _Unreadable(f"values of shape {tuple(block['values'].shape)}, expected "
                          f"{tuple(values_shape)}")
    for k in ("scores", "steps", "objective", "converged"):
        if tuple(block[k].shape) != tuple(values_shape[:2]):
            raise _Unreadable(f"{k} of shape {tuple(block[k].shape)}, expected "
                              f"{tuple(values_shape[:2])}")
    return block


def _check_folder(folder):
    """``folder`` as a Path; refuses an empty path (``Path("")`` is the current folder: run.json
    and the block files would be scattered into it) and what is not a path."""
    try:
        text = os.fspath(folder)
    except TypeError:
        raise TypeError(f"folder must be a folder path (a str or os.PathLike), got "
                        f"{type(folder).__name__}") from None
    if len(text) == 0:
        raise ValueError("folder is empty (''), which would be the current folder: run.json "
                         "and the block files would be written into it. Give the run a folder "
                         "of its own, e.g. folder='runs/deepsea' (it is created if absent); "
                         "folder='.' if the current folder is really meant")
    return Path(os.fsdecode(text))


def _check_writable(folder):
    """Create ``folder`` (and its parents) and write and remove a small file in it; an OSError
    naming the folder if either fails. A read-only folder whose run.json lists only block files
    that are all there passes: resuming it reads them and writes nothing."""
    probe = folder / f".write_probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            try:
                os.unlink(probe)
            except OSError:
                pass
    except OSError as e:
        # no permission, a read-only file system, a full disk: a finished run still resumes
        # (it only reads)
        if _all_blocks_present(folder):
            return
        raise type(e)(e.errno, f"cannot use {str(folder)!r} as the run's folder: "
                               f"{e.strerror or e}. Give a folder that can be created and "
                               "written; nothing was computed") from None


def _all_blocks_present(folder):
    try:
        s = json.loads((folder / RUN_FILE).read_text())
        n_blocks = math.ceil(len(s["targets"]) / int(s["block_size"]))
    except Exception:
        return False
    return all((folder / _block_name(b)).is_file() for b in range(n_blocks))


def _write(path, write):
    """:func:`write_atomic`, then an fsync of the folder, so that a power cut after this
    returns cannot undo the rename and lose a block that took minutes (not possible on every
    system: skipped there)."""
    target = write_atomic(path, write)
    try:
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _read_run(run_file):
    try:
        s = json.loads(Path(run_file).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{run_file} cannot be read ({e}). Delete only {run_file} (not the folder: its "
            "block files hold finished work) and call again with the same arguments and an "
            "explicit seed, the run's own: run.json is written again, and each block file "
            "whose run_id (a hash of the settings) matches it is read, not recomputed (a run "
            "started with seed=None drew a seed that was only in run.json: its blocks are "
            "recomputed). Or give another folder") from None
    if not isinstance(s, dict):
        raise ValueError(f"{run_file} is not a run.json written by attribute_in_blocks")
    versions = s.get("versions")
    by = versions.get("version") if isinstance(versions, dict) else None
    by = f" ({by})" if by else ""
    if "format" in s and s["format"] != _FORMAT:
        raise ValueError(
            f"{run_file} was written by another version of deepresolve_captum{by}: format "
            f"{s.get('format')!r}, this version reads {_FORMAT}. Read it with that version, or "
            "use a new folder")
    needed = set(_COMPARED) | {"run_id", "layer_shape", "l2_requested", "format"}
    missing = sorted(needed - set(s))
    if missing:
        raise ValueError(
            f"{run_file} was written by another version of deepresolve_captum{by} (or not by "
            f"attribute_in_blocks): it has no {missing}. Use a new folder, or delete this one "
            "to start over")
    return s


def _differences(recorded, settings, asked_l2, extra_args, optimizer, pinned=False,
                 model=None):
    """(differ, older, hint): ``differ`` one 'name: folder has X, this call Y' per compared
    setting that differs; ``older`` [(key, what)] for the entries that differ only because an
    earlier version of deepresolve_captum wrote run.json and did not record them as this one
    does (:func:`_older_entries`), so that the folder is not said to hold other settings;
    ``hint`` a sentence to add when the model's weights differ ('' otherwise)."""
    now = plain(settings)
    older = _older_entries(recorded, now, extra_args, optimizer, model)
    out, hint = [], ""
    for k in _COMPARED:
        a, b = recorded.get(k), now.get(k)
        if k == "l2":
            if asked_l2 == "auto":
                if recorded.get("l2_requested") == "auto":
                    continue
                a, b = recorded.get("l2"), "auto"
            elif a is not None and float(a) == float(asked_l2):
                continue       # the recorded lambda, an "auto" run's included
        if a == b:
            continue
        if k == "additional_forward_args" and isinstance(a, list) and isinstance(b, list) \
                and len(a) == len(b):
            # each argument by itself: those recorded by type name only are in ``older``
            told = {i for key, _, i in older if key == k}
            out += [_describe(f"{k}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b))
                    if x != y and i not in told]
            continue
        if any(key == k for key, *_ in older):
            continue
        if k == "model":
            text, hint = _describe_weights(recorded, now, optimizer, pinned)
            if text:
                out.append(text)
            continue
        out.append(_describe(k, a, b))
    return out, [(key, what) for key, what, _ in older if what], hint


def _older_entries(recorded, now, extra_args, optimizer, model=None):
    """[(key, what, index)] for the run.json entries that differ from this call's only because
    an earlier version wrote them, ``what`` saying what that version did not record:

    - ``additional_forward_args[i]``: recorded by its type name only (``'ndarray'``,
      ``'list'``, ``'float32'``: 922584b and before), where this version records a hash;
    - ``model`` and ``layer`` of a forward callable that is not an nn.Module, in a run.json
      without ``weights_checked`` (922584b and before): only the layer's own weights were
      hashed and the layer's name not recorded. Counted only while the layer's weights match
      the recorded hash (what that version did check);
    - ``model`` (and the layer's name) in a run.json with ``weights_checked`` but no per-module
      ``weights`` whose list of modules differs from this call's: that version's search also
      took modules the forward never runs (attribute names read as globals), and one hash over
      all of them cannot be compared module by module. Counted only while that version's
      hash, recomputed now (:func:`_legacy_fingerprint`), matches the recorded one: a
      difference there is a change of the weights, which ``upgrade=True`` does not pass.
    """
    out = []
    a, b = recorded.get("additional_forward_args"), now.get("additional_forward_args")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == len(extra_args):
        for i, (x, y, obj) in enumerate(zip(a, b, extra_args)):
            if x != y and isinstance(x, str) and not isinstance(y, str) and \
                    x == type(obj).__name__:
                out.append(("additional_forward_args",
                            f"the value of additional_forward_args[{i}] (a {x}: only its "
                            "type name)", i))
    rec_layer, now_layer = recorded.get("layer"), now.get("layer")
    same_cls = (isinstance(rec_layer, dict) and isinstance(now_layer, dict)
                and rec_layer.get("cls") == now_layer.get("cls"))
    old_callable = ("weights_checked" not in recorded
                    and _owning_module(optimizer.forward_func) is None)
    if old_callable and same_cls and rec_layer.get("name") is None:
        out.append(("layer", "", None))         # that version did not name the layer
    if recorded.get("model") != now.get("model"):
        if old_callable:
            old, _ = _model_fingerprint([("layer", optimizer.layer)])
            if recorded.get("model") == old:
                n = old["n_values"]
                out.append(("model", "the weights behind a forward callable that is not an "
                            f"nn.Module (it hashed only the layer's own weights, "
                            f"{type(optimizer.layer).__name__}: {n} values, which match; this "
                            f"version hashes those of {_listed(now.get('weights_checked'))})",
                            None))
        elif "weights" not in recorded and isinstance(recorded.get("weights_checked"), list) \
                and recorded["weights_checked"] != now.get("weights_checked") \
                and recorded.get("model") == _legacy_fingerprint(optimizer, model):
            out.append(("model", "a hash per module, and its search for the modules behind "
                        "forward_func took modules the forward does not run (attribute names "
                        "read as globals, the attributes of attributes): it hashed "
                        f"{_listed(recorded['weights_checked'])} together (that hash, recomputed "
                        "now, matches), this version hashes "
                        f"{_listed(now.get('weights_checked'))}", None))
            if same_cls:
                out.append(("layer", "", None))
    return out


def _listed(where):
    return ", ".join(map(str, where)) if isinstance(where, list) and where else "none"


def _describe_weights(recorded, now, optimizer, pinned):
    """('model: ...' naming the module(s) whose weights differ from the run's, hint). A run
    started with ``model=`` (run.json's ``weights`` under ``model`` / ``model[i]``) and resumed
    without it, or the other way round, is told to resume with the same choice: a pinned
    module is compared only with the hash recorded under its own label. Without per-module
    records (a run.json of an earlier version) only the list is named."""
    rec, cur = recorded.get("weights"), now.get("weights")
    hint = ""
    several = max(len(recorded.get("weights_checked") or ()),
                  len(now.get("weights_checked") or ())) > 1
    if not isinstance(optimizer.forward_func, torch.nn.Module) and not pinned and several:
        hint = (" The weights checked are those of every module found behind forward_func "
                "(run.json's weights_checked), some of which it may never run. A resume checks "
                "what the run's start checked: restore the weights the run was started with, "
                "or use a new folder; there, model=<the nn.Module forward_func runs> pins the "
                "check to that module (a run started with model= is resumed with the same "
                "model=).")
    was_pinned = _pinned_in(recorded)
    if was_pinned != bool(pinned):
        checked = _listed(recorded.get("weights_checked"))
        how = ("with model= (it checked " + checked + "), this call passes none: resume with "
               "the same model= again" if was_pinned else
               "without model= (it checked the modules found behind forward_func: " + checked
               + "), this call passes model=: resume without model=, as the run was started")
        return (f"model: the run was started {how}, or start a new folder (a resume makes the "
                "same choice as the run's start: the weights of a module given as model= are "
                "never matched against those the run recorded for another)"
                + _sha_note(recorded, now), "")
    if "weights_checked" not in recorded and _owning_module(optimizer.forward_func) is None:
        return (f"model: the layer's own weights ({type(optimizer.layer).__name__}), the only "
                "weights hashed by the earlier version of deepresolve_captum that started this "
                "run, differ from the run's" + _sha_note(recorded, now), "")
    if not isinstance(rec, dict) or not isinstance(cur, dict):
        checked = recorded.get("weights_checked") or ["forward_func"]
        return (f"model: the weights of {_listed(checked)}"
                " differ from the run's (its run.json, from an earlier version, holds one hash "
                "over them: which one differs cannot be told)" + _sha_note(recorded, now), hint)
    parts = []
    changed = [w for w in cur if w in rec and cur[w] != rec[w]]
    if changed:
        parts.append("the weights of " + ", ".join(
            f"{w} ({cur[w].get('cls')})" for w in changed) + " differ from the run's")
    new = [w for w in cur if w not in rec]
    if new:
        match = [w for w in new if any(cur[w] == r for r in rec.values())]
        parts.append("this call checks " + ", ".join(
            f"{w} ({cur[w].get('cls')}"
            + (", with the weights of one the run checked" if w in match else "") + ")"
            for w in new) + ", which the run did not")
    gone = [w for w in rec if w not in cur]
    if gone:
        parts.append("the run checked " + ", ".join(
            f"{w} ({rec[w].get('cls')})" for w in gone) + ", which this call does not find")
    return "model: " + "; ".join(parts) + _sha_note(recorded, now), hint


def _pinned_in(recorded):
    """Whether the run of ``recorded`` (run.json) was started with ``model=``: its modules
    are recorded as ``model`` or ``model[i]`` (and ``layer``)."""
    rec = recorded.get("weights")
    if isinstance(rec, dict):
        names = list(rec)
    else:
        names = [str(w).rsplit(": ", 1)[0] for w in recorded.get("weights_checked") or ()]
    return any(n == "model" or n.startswith("model[") for n in names)


def _sha_note(recorded, now):
    a, b = recorded.get("model"), now.get("model")
    a = a.get("sha256") if isinstance(a, dict) else a
    b = b.get("sha256") if isinstance(b, dict) else b
    return f" (model.sha256: the folder has {a!r}, this call {b!r})"


def _describe(k, a, b):
    """'name: the folder has X, this call Y' (per entry for the layer and the model; by
    position for fingerprint lists and targets)."""
    if k == "targets" and isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"targets: the folder has {len(a)} targets, this call {len(b)}"
        i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return (f"targets: the folder has {a[i]} at position {i}, this call {b[i]} (the "
                "first difference)")
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [x for x in sorted(set(a) | set(b)) if a.get(x) != b.get(x)]
        return "; ".join(_describe(f"{k}.{x}", a.get(x), b.get(x)) for x in keys)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return "; ".join(_describe(f"{k}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b))
                         if x != y)
    return f"{k}: the folder has {a!r}, this call {b!r}"


def _tensor_digest(t):
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return hashlib.sha256(t.view(torch.uint8).numpy()).hexdigest()[:16]


#: bytes of a non-contiguous numpy array copied at a time to be hashed (_array_digest)
_HASH_CHUNK = 1 << 24


def _array_digest(a):
    """A short sha256 of a numpy array's bytes in C order (``a.tobytes()``'s), without a copy
    of the whole array: a C-contiguous array's buffer is hashed where it is, any other is
    copied a block of rows (along the first axis, about ``_HASH_CHUNK`` bytes) at a time."""
    h = hashlib.sha256()
    if a.ndim == 0 or a.flags.c_contiguous:
        h.update(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8)))
    else:
        row = max(1, a[:1].nbytes)
        step = max(1, _HASH_CHUNK // row)
        for i in range(0, a.shape[0], step):
            h.update(memoryview(np.ascontiguousarray(a[i:i + step]).reshape(-1).view(np.uint8)))
    return h.hexdigest()[:16]


#: what a plain value (recorded and compared as it is) may be
_PLAIN = (type(None), bool, int, float, str)


def _value_digest(o, where, unchecked, depth=0):
    """What run.json records of one forward argument: a tensor or a numpy array (not of
    objects) by shape, dtype and a short sha256 of its bytes; a plain value (None, bool, int,
    float, str, a numpy scalar) as it is; a list, tuple or dict by its type, length and a short
    sha256 of the JSON of its items' records (items recorded the same way, dict keys by their
    repr). Anything else by its type name only, with ``where`` appended to ``unchecked``."""
    if isinstance(o, Tensor):
        return dict(shape=list(o.shape), dtype=str(o.dtype).replace("torch.", ""),
                    sha256=_tensor_digest(o))
    if isinstance(o, np.ndarray) and o.dtype != object:
        return dict(type="ndarray", shape=list(o.shape), dtype=str(o.dtype),
                    sha256=_array_digest(o))
    if isinstance(o, np.generic) and not isinstance(o, np.object_):
        o = o.item()
    if isinstance(o, _PLAIN):
        return o
    if isinstance(o, (list, tuple, dict)) and depth < 20:
        if isinstance(o, dict):
            items = sorted([repr(k), _value_digest(v, f"{where}[{k!r}]", unchecked, depth + 1)]
                           for k, v in o.items())
        else:
            items = [_value_digest(v, f"{where}[{i}]", unchecked, depth + 1)
                     for i, v in enumerate(o)]
        text = json.dumps(items, sort_keys=True)
        return dict(type=type(o).__name__, len=len(o),
                    sha256=hashlib.sha256(text.encode()).hexdigest()[:16])
    unchecked.append(f"{where} (a {type(o).__name__})")
    return type(o).__name__


def _fingerprint(objs, what="inputs"):
    """One record per object (see :func:`_value_digest`: tensors and numpy arrays by shape,
    dtype and a hash of all their bytes, ~1 GB/s; plain values as they are; lists, tuples and
    dicts by a hash of their items), with a UserWarning naming those that cannot be checked on
    resume (recorded by type name only)."""
    unchecked = []
    out = [_value_digest(o, f"{what}[{i}]", unchecked) for i, o in enumerate(objs)]
    if unchecked:
        warnings.warn(
            f"{', '.join(unchecked)} cannot be fingerprinted (only its type is recorded): a "
            "resume cannot tell whether it changed, and blocks computed with another value "
            "would be mixed. Pass it as a tensor, a numpy array or plain values (numbers, "
            "strings, and lists, tuples or dicts of them) to have it checked",
            UserWarning, stacklevel=_outside_stacklevel())
    return out


#: items of one list, tuple, dict or object __dict__ looked at for modules (_modules_behind)
_MAX_ITEMS = 1000
#: objects looked at in all by one search (_modules_behind): big nested containers reached from
#: a forward's globals cost a bounded time
_MAX_VISITS = 10000
#: the leading items of a list, tuple or dict looked at to tell data (numbers, strings,
#: arrays: passed over) from a holder of modules or objects (_modules_behind)
_PEEK_ITEMS = 16
#: attributes of attributes followed from an object (``self.inner.backbone``: 2)
_MAX_HOPS = 3
#: values with no modules in them (_modules_behind passes them over at no cost)
_VALUES = (Tensor, np.ndarray, np.generic, str, bytes, int, float, complex, type(None))
#: the instructions that read a global name (LOAD_NAME in module-level code, and 3.12's
#: LOAD_FROM_DICT_OR_GLOBALS in class bodies)
_GLOBAL_LOADS = frozenset(("LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"))


def _code_args(code, opnames, depth=0):
    """The string arguments of the ``opnames`` instructions in ``code`` and in the code nested
    in it (lambdas, comprehensions, inner functions), in order."""
    import dis
    import types

    out = [ins.argval for ins in dis.get_instructions(code)
           if ins.opname in opnames and isinstance(ins.argval, str)]
    if depth < 8:
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                out += _code_args(c, opnames, depth + 1)
    return out


def _loaded_globals(code):
    """The names ``code`` (and the code nested in it) reads as globals, in order: the
    arguments of LOAD_GLOBAL / LOAD_NAME. Not ``co_names``, which also holds every attribute
    name (``w.model`` names ``model``)."""
    return _code_args(code, _GLOBAL_LOADS)


def _attribute_names(code):
    """The names ``code`` (and the code nested in it) reads as attributes (``mods.net``:
    ``net``), once each, in order: the arguments of LOAD_ATTR / LOAD_METHOD."""
    return list(dict.fromkeys(_code_args(code, ("LOAD_ATTR", "LOAD_METHOD"))))


def _modules_behind(forward_func, max_depth=4, info=None):
    """[(where, module)]: the nn.Modules a forward callable runs, as far as they can be found
    without running it: the callable itself; a ``functools.partial``'s ``func``, ``args`` and
    ``keywords``; ``__wrapped__`` (``functools.wraps``); a bound method's ``__self__`` and
    function; a function's closure variables, the globals its code (and the code nested in it,
    e.g. a comprehension) loads (LOAD_GLOBAL, not attribute names: ``lambda x: w.model(x)``
    looks at the global ``w``, not at a global named ``model``) and its default arguments
    (``lambda x, m=m: m(x)``); and of any other object reached so (a callable object, a bound
    method's object, a global or closure variable), its attributes that are modules or
    lists, tuples or dicts of them, and those of its plain-object attributes, ``_MAX_HOPS``
    deep (``w.model``, ``self.inner.backbone``); of a Python module reached so, the attributes
    the code reads by name (``mods.net``). Lists, tuples and dicts are looked into for their
    first ``_MAX_ITEMS`` items, ``max_depth`` levels deep, unless their first ``_PEEK_ITEMS``
    items are all values (numbers, strings, tensors, arrays: data, passed over); values cost
    nothing, and at most ``_MAX_VISITS`` other objects are looked at in all
    (``info["truncated"]`` set when the search stopped there, for a dict ``info``). A module
    inside another found one is dropped (its weights are hashed with its parent's). ``where``
    says how each was found, e.g. ``forward_func: global 'net'``, ``forward_func: closure variable 'net'``,
    ``forward_func.__self__.model``."""
    import functools
    import itertools
    import types

    found, seen = [], set()
    budget = [_MAX_VISITS]
    names = {}                        # id(Python module) -> the attribute names the code reads

    def add(obj, where):
        if all(m is not obj for _, m in found):
            found.append((where, obj))

    def items(obj):
        if isinstance(obj, dict):
            return ((f"[{k!r}]", v) for k, v in itertools.islice(obj.items(), _MAX_ITEMS))
        return ((f"[{i}]", v) for i, v in enumerate(itertools.islice(obj, _MAX_ITEMS)))

    def plain(obj):
        # an object whose attributes may hold modules: not a function, class, Python module
        # or value
        if isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                            types.ModuleType, type, functools.partial) + _VALUES):
            return False
        try:
            return isinstance(getattr(obj, "__dict__", None), dict)
        except Exception:             # a __getattr__ that raises something else
            return False

    def holds_objects(obj):
        # a container whose first items are all values (numbers, strings, arrays) is data,
        # not a holder of modules: passed over without spending the budget on it
        first = itertools.islice(obj.values() if isinstance(obj, dict) else obj, _PEEK_ITEMS)
        return any(isinstance(v, (torch.nn.Module, list, tuple, dict)) or plain(v)
                   for v in first)

    def visit(obj, where, depth, hops=0):
        if isinstance(obj, torch.nn.Module):
            add(obj, where)           # also once the budget is spent: found costs nothing
            return
        if depth > max_depth or id(obj) in seen or isinstance(obj, (type,) + _VALUES):
            return                    # values passed over at no cost
        if budget[0] <= 0:
            if info is not None:
                info["truncated"] = True
            return
        budget[0] -= 1                # every other object looked at
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, dict)) and not holds_objects(obj):
            return                    # data: its items are not looked at one by one
        if isinstance(obj, types.ModuleType):
            # a Python module (``mods.net``): its attributes that the code reads by name
            for name in names.get(id(obj), ()):
                try:
                    v = getattr(obj, name, None)
                except Exception:     # a module __getattr__ that raises something else
                    continue
                if isinstance(v, (torch.nn.Module, list, tuple, dict)) or plain(v):
                    visit(v, f"{where}.{name}", depth + 1)
            return
        if isinstance(obj, functools.partial):
            visit(obj.func, f"{where}.func", depth + 1)
            for i, v in enumerate(obj.args):
                visit(v, f"{where}.args[{i}]", depth + 1)
            for k, v in obj.keywords.items():
                visit(v, f"{where}.keywords[{k!r}]", depth + 1)
            return
        if isinstance(obj, (list, tuple, dict)):
            for key, v in items(obj):
                visit(v, f"{where}{key}", depth + 1)
            return
        try:
            wrapped = getattr(obj, "__wrapped__", None)      # functools.wraps
        except Exception:           # a __getattr__ that raises something else
            wrapped = None
        if wrapped is not None and wrapped is not obj:
            visit(wrapped, f"{where}.__wrapped__", depth + 1)
        if isinstance(obj, types.MethodType):
            visit(obj.__self__, f"{where}.__self__", depth + 1)
            visit(obj.__func__, where, depth + 1)
        elif isinstance(obj, types.FunctionType):
            code = obj.__code__
            for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
                try:
                    value = cell.cell_contents
                except ValueError:  # a cell not yet filled
                    continue
                visit(value, f"{where}: closure variable {name!r}", depth + 1)
            g = obj.__globals__
            attr_names = _attribute_names(code)
            for name in dict.fromkeys(_loaded_globals(code)):
                if name in g:
                    if isinstance(g[name], types.ModuleType):
                        names[id(g[name])] = attr_names
                    visit(g[name], f"{where}: global {name!r}", depth + 1)
            positional = code.co_varnames[:code.co_argcount]
            defaults = obj.__defaults__ or ()
            for name, v in zip(positional[len(positional) - len(defaults):], defaults):
                visit(v, f"{where}: default {name!r}", depth + 1)
            for name, v in (obj.__kwdefaults__ or {}).items():
                visit(v, f"{where}: default {name!r}", depth + 1)
        else:
            # an object's own attributes that are modules, or lists, tuples or dicts of them
            try:
                attrs = vars(obj)
            except TypeError:       # no __dict__ (an int, a slotted object)
                return
            if not isinstance(attrs, dict):
                return
            own = list(itertools.islice(attrs.items(), _MAX_ITEMS))
            for name, value in own:           # modules first, then containers of them,
                if isinstance(value, torch.nn.Module):      # then plain objects' attributes
                    add(value, f"{where}.{name}")
            for name, value in own:
                if isinstance(value, (list, tuple, dict)):
                    visit(value, f"{where}.{name}", depth + 1, hops)
            if hops < _MAX_HOPS:
                for name, value in own:
                    if plain(value):
                        visit(value, f"{where}.{name}", depth + 1, hops + 1)

    visit(forward_func, "forward_func", 0)
    inner = {id(sub) for _, m in found for sub in m.modules() if sub is not m}
    return [(w, m) for w, m in found if id(m) not in inner]


def _legacy_modules_behind(forward_func, max_depth=4):
    """The module search of 57f2b68..21361f8 (kept as it was, to recompute the hash that a
    run.json of those versions records: :func:`_legacy_fingerprint`): every name in the code's
    ``co_names`` (attribute names too) looked up in its globals, and the attributes of objects
    followed ``max_depth`` levels deep."""
    import functools
    import types

    found, seen = [], set()

    def code_names(code):
        names = list(code.co_names)
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                names += code_names(c)
        return names

    def visit(obj, where, depth):
        if isinstance(obj, torch.nn.Module):
            if all(m is not obj for _, m in found):
                found.append((where, obj))
            return
        if depth > max_depth or id(obj) in seen or isinstance(obj, (types.ModuleType, type)):
            return
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            visit(obj.func, f"{where}.func", depth + 1)
            for i, v in enumerate(obj.args):
                visit(v, f"{where}.args[{i}]", depth + 1)
            for k, v in obj.keywords.items():
                visit(v, f"{where}.keywords[{k!r}]", depth + 1)
            return
        if isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj[:_MAX_ITEMS]):
                visit(v, f"{where}[{i}]", depth + 1)
            return
        if isinstance(obj, dict):
            for k, v in list(obj.items())[:_MAX_ITEMS]:
                visit(v, f"{where}[{k!r}]", depth + 1)
            return
        try:
            wrapped = getattr(obj, "__wrapped__", None)
        except Exception:
            wrapped = None
        if wrapped is not None and wrapped is not obj:
            visit(wrapped, f"{where}.__wrapped__", depth + 1)
        if isinstance(obj, types.MethodType):
            visit(obj.__self__, f"{where}.__self__", depth + 1)
            visit(obj.__func__, where, depth + 1)
        elif isinstance(obj, types.FunctionType):
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                visit(value, f"{where}: closure variable {name!r}", depth + 1)
            g = obj.__globals__
            for name in dict.fromkeys(code_names(obj.__code__)):
                if name in g:
                    visit(g[name], f"{where}: global {name!r}", depth + 1)
        elif not isinstance(obj, Tensor):
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                for name, value in list(attrs.items())[:_MAX_ITEMS]:
                    visit(value, f"{where}.{name}", depth + 1)

    visit(forward_func, "forward_func", 0)
    inner = {id(sub) for _, m in found for sub in m.modules() if sub is not m}
    return [(w, m) for w, m in found if id(m) not in inner]


def _legacy_fingerprint(optimizer, model=None):
    """The ``model`` hash 57f2b68..21361f8 recorded for this call: over ``model`` when given,
    else the modules :func:`_legacy_modules_behind` finds; the layer too when it is in none."""
    scope = _check_model(model) or _legacy_modules_behind(optimizer.forward_func)
    if not _holds_layer(scope, optimizer.layer):
        scope = scope + [("layer", optimizer.layer)]
    return _model_fingerprint(scope)[0]


def _holds_layer(scope, layer):
    """Whether ``layer`` is one of the modules of ``scope`` [(where, module)] or inside one."""
    return any(any(s is layer for s in m.modules()) for _, m in scope)


def _check_model(model):
    """``model=`` of attribute_in_blocks: None, an nn.Module or a list / tuple of them ->
    a list of (where, module)."""
    if model is None:
        return None
    mods = list(model) if isinstance(model, (list, tuple)) else [model]
    if not mods or not all(isinstance(m, torch.nn.Module) for m in mods):
        raise TypeError("model must be the nn.Module whose weights forward_func uses (or a "
                        f"list of them), got {model!r:.80}")
    return [(f"model[{i}]" if isinstance(model, (list, tuple)) else "model", m)
            for i, m in enumerate(mods)]


def _weight_scope(optimizer, model):
    """[(where, module)] whose parameters and buffers fingerprint the run: ``model`` when
    given, else the modules found behind ``forward_func`` (:func:`_modules_behind`); the
    layer too when it is in none of them. Warns (once, at the user's line) when no module is
    found (then only the layer's own weights are checked), and when modules were found but
    the layer is in none of them (the search missed the model that holds it)."""
    scope = _check_model(model)
    if scope is None:
        info = {}
        scope = _modules_behind(optimizer.forward_func, info=info)
        if not scope:
            stopped = (f" (the search stopped after {_MAX_VISITS} objects)"
                       if info.get("truncated") else "")
            n = sum(t.numel() for t in optimizer.layer.state_dict().values()
                    if isinstance(t, Tensor))
            warnings.warn(
                f"forward_func (a {type(optimizer.forward_func).__name__}) is not an nn.Module "
                "and no nn.Module was found behind it (a partial's arguments, __wrapped__, a "
                "bound method's object, its closure, defaults or the globals it loads, and "
                f"the module attributes of the objects found there){stopped}: only the "
                f"layer's own weights ({type(optimizer.layer).__name__}, {n} values) are "
                "fingerprinted, so a resume cannot detect that the model's weights changed. "
                "Pass model=<the nn.Module> to attribute_in_blocks to have them checked",
                UserWarning, stacklevel=_outside_stacklevel())
        elif info.get("truncated"):
            warnings.warn(
                f"the search for the nn.Modules behind forward_func stopped early, after "
                f"{_MAX_VISITS} objects (large containers reached from it): modules found "
                "later are not fingerprinted, so a resume cannot detect that their weights "
                "changed. Pass model=<the nn.Module forward_func runs> to attribute_in_blocks "
                "to pin the check to it",
                UserWarning, stacklevel=_outside_stacklevel())
    if not _holds_layer(scope, optimizer.layer):
        if model is None and scope:
            # the forward runs the layer, so the model that holds it is behind forward_func
            # somewhere: the search found other modules but missed that one (a dict of
            # settings before it, a helper function in another Python module, ...)
            warnings.warn(
                f"the layer ({type(optimizer.layer).__name__}) is in none of the nn.Modules "
                "found behind forward_func ("
                + ", ".join(f"{w} ({type(m).__name__})" for w, m in scope)
                + "): the model that holds it was not found, so a resume cannot detect that "
                "its weights changed. Pass model=<the nn.Module forward_func runs> to "
                "attribute_in_blocks to have them checked",
                UserWarning, stacklevel=_outside_stacklevel())
        scope = scope + [("layer", optimizer.layer)]
    return scope


def _model_fingerprint(scope):
    """(model, weights): ``model`` a hash over the parameters and buffers of the modules of
    ``scope`` [(where, module)], in order and in state_dict order, and their count (for one
    module the same hash as before ``scope`` was a list: a run of an nn.Module forward resumes
    as it did), compared on resume; ``weights`` {where: {cls, n_values, sha256}}, the same per
    module, recorded so that a refused resume can name the module whose weights differ."""
    h, n, weights = hashlib.sha256(), 0, {}
    for i, (where, module) in enumerate(scope):
        prefix = f"{i}." if len(scope) > 1 else ""
        own, own_n = hashlib.sha256(), 0
        for name, t in module.state_dict(keep_vars=True).items():
            if isinstance(t, Tensor):
                digest = _tensor_digest(t)
                for hh, key in ((h, prefix + name), (own, name)):
                    hh.update(key.encode())
                    hh.update(str(t.dtype).encode())
                    hh.update(digest.encode())
                own_n += t.numel()
        n += own_n
        weights[where] = dict(cls=type(module).__name__, n_values=own_n,
                              sha256=own.hexdigest()[:16])
    return dict(n_values=n, sha256=h.hexdigest()[:16]), weights


def _layer_info(optimizer, scope):
    """The layer's class and its name in the first module of ``scope`` that holds it (None
    when only the layer itself is in scope)."""
    name = None
    for where, module in scope:
        if where == "layer":
            continue
        name = next((n for n, m in module.named_modules() if m is optimizer.layer), None)
        if name is not None:
            break
    return dict(cls=type(optimizer.layer).__name__, name=name)


def _run_id(settings):
    keys = sorted(set(_COMPARED) | {"l2", "seed"})
    text = json.dumps({k: plain(settings.get(k)) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json_text(settings):
    """JSON with one line per setting (the target list on one line, not one per target)."""
    items = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in plain(settings).items()]
    return "{\n" + ",\n".join(items) + "\n}\n"
