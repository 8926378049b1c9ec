"""DeepResolve's ensemble summary: FIM -> FIV -> weights -> IL -> GMM/BIC -> OFIV.

Follows the paper (Liu, Zeng & Gifford 2019, "Summarizing feature contributions using OFIV"),
not the authors' code (lgsaber/DeepResolve), whose non-additive branch never runs: it compares
an estimator object to 0, so their OFIV is always the plain weighted mean.
"""
from __future__ import annotations

import json
import numbers
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _stats
from ._io import plain as _plain, write_atomic

__all__ = ["EnsembleSummary", "summarize", "feature_importance_vectors", "trial_weights",
           "CATEGORY_NAMES", "ADDITIVE", "NONADDITIVE_CONSISTENT", "NONADDITIVE_FLIPPING"]

ADDITIVE, NONADDITIVE_CONSISTENT, NONADDITIVE_FLIPPING = 0, 1, 2
CATEGORY_NAMES = ("additive/unimportant", "non-additive, consistent sign",
                  "non-additive, sign-flipping")


@dataclass(eq=False)
class EnsembleSummary:
    """The summary of an ensemble of FIMs (C targets, T starts, K channels).

    Targets are numbered by position, 0..C-1, in the order the FIMs came: with
    ``attribute(target=[50, 51, ...])`` row 0 is output 50. Everything that takes a target
    (``channels``, ``plot_feature_importance``) takes that position. Which model outputs the
    rows are is known only if given: ``summarize(fims, scores, targets=opt.diagnostics.targets,
    target_names=...)`` (or ``load_blocks(folder).targets``) stores them in ``targets`` and
    ``target_names``, which :meth:`save` keeps and the plots label rows with
    (:meth:`target_labels`).

    Attributes
    ----------
    fiv: (C, T, K) feature importance vectors, the spatial mean of each channel's FIM (its own
        array: for a flat layer, a copy of the FIMs given, never a view of them).
    scores: (C, T) the class score of each start; NaN when ``summarize`` was given none (with
        ``weights="uniform"`` or given weights, which need no scores).
    weights: (C, T) the weights of the starts: by default :func:`trial_weights` of the scores
        (``summarize``'s ``weights`` argument; ``settings["weights"]``). See also
        ``effective_starts``.
    mean: (C, K) weighted mean FIV over starts.
    il: (C, K) inconsistency level: the weighted variance of the FIV over starts.
    bic: (C, max_components) BIC of the GMMs with 1..max_components components fitted to the
        relative IL (``il`` in units of the target's mean FIV power, see :func:`summarize`'s
        Notes); NaN where not fitted.
    n_components: (C,) the component count with the lowest BIC.
    nonadditive: (C, K) True for channels outside the lowest-mean IL component, and for every
        channel of the target whose IL is at least the smallest such channel's (a threshold in
        IL, see :func:`summarize`'s Notes).
    sign_flip: (C, K) True where a channel's FIV takes both signs across the starts that carry
        weight (a start weighted 0, see :func:`trial_weights`, has no say, as in ``mean``
        and ``il``).
    category: (C, K) 0 additive/unimportant, 1 non-additive with consistent sign,
        2 non-additive and sign-flipping (see ``CATEGORY_NAMES``).
    ofiv: (C, K) overall FIV: the weighted mean FIV, except for sign-flipping non-additive
        channels, which get the weighted mean of their positive FIVs only.
    settings: the arguments that made it.
    targets: None, or the model output of each row, as given to ``summarize``: a list of C
        ints (flat output indices, e.g. ``opt.diagnostics.targets``), or of C index tuples
        for a multi-dimensional output.
    target_names: None, or a list of C strings naming the rows (e.g. the models of a zoo).
    """

    fiv: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    mean: np.ndarray
    il: np.ndarray
    bic: np.ndarray
    n_components: np.ndarray
    nonadditive: np.ndarray
    sign_flip: np.ndarray
    category: np.ndarray
    ofiv: np.ndarray
    settings: dict = field(default_factory=dict)
    targets: list | None = None
    target_names: list | None = None

    _ARRAYS = ("fiv", "scores", "weights", "mean", "il", "bic", "n_components", "nonadditive",
               "sign_flip", "category", "ofiv")

    def __eq__(self, other):
        """Same arrays (NaN equal to NaN, as in an unfitted BIC), settings, targets and
        target names."""
        if not isinstance(other, EnsembleSummary):
            return NotImplemented
        return (all(np.array_equal(np.asarray(getattr(self, a)), np.asarray(getattr(other, a)),
                                   equal_nan=np.asarray(getattr(self, a)).dtype.kind == "f")
                    for a in self._ARRAYS)
                # via JSON, as saved: NaN settings equal NaN (a round trip stays equal)
                and json.dumps(_plain(self.settings), sort_keys=True)
                == json.dumps(_plain(other.settings), sort_keys=True)
                # as saved too: targets set directly to an array (the field is not checked
                # outside summarize and load) compare by value, not element-wise
                and _plain(self.targets) == _plain(other.targets)
                and _plain(self.target_names) == _plain(other.target_names))

    def __repr__(self):
        C, T, K = np.shape(self.fiv)
        comps = dict(zip(*np.unique(np.asarray(self.n_components), return_counts=True)))
        return (f"EnsembleSummary({C} targets x {T} starts x {K} channels; GMM components "
                f"{ {int(k): int(v) for k, v in comps.items()} }; "
                f"{int(np.asarray(self.nonadditive).sum())} non-additive (target, channel) pairs; "
                f"settings={_short(self.settings)!r})")

    @property
    def n_targets(self):
        return self.fiv.shape[0]

    @property
    def n_channels(self):
        return self.fiv.shape[2]

    def target_labels(self):
        """C strings naming the rows, as the plots label them: ``target_names`` when stored,
        else the stored output indices ("output 500", "output (3, 17)"), else the positions
        ("target 0", "target 1", ...)."""
        if self.target_names is not None:
            return [str(n) for n in self.target_names]
        if self.targets is not None:
            return [f"output {t}" for t in self.targets]
        return [f"target {c}" for c in range(self.n_targets)]

    @property
    def effective_starts(self):
        """(C,) how many equally weighted starts each target's weights amount to,
        (sum w)^2 / sum w^2: T for equal weights, 1 when one start carries all the weight.
        Computed from ``weights`` (not stored)."""
        w = np.asarray(self.weights, dtype=np.float64)
        w = w / w.max(axis=1, keepdims=True)          # ratios only; no overflow in the squares
        return w.sum(axis=1) ** 2 / (w ** 2).sum(axis=1)

    def channels(self, target=0, category=None, order="ofiv"):
        """Channel indices of one target (its position in the summary, not its output index),
        optionally of one category, sorted by descending OFIV (``order="ofiv"``) or IL
        (``order="il"``).

        category: None (all), an int (``ADDITIVE``, ``NONADDITIVE_CONSISTENT``,
            ``NONADDITIVE_FLIPPING``), one of ``CATEGORY_NAMES``, or "additive" /
            "nonadditive" (both non-additive categories).
        Returns an int array of channel indices.
        """
        if order not in ("ofiv", "il"):
            raise ValueError(f"order must be 'ofiv' or 'il', got {order!r}")
        n = self.ofiv.shape[0]
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < n:
            raise ValueError(f"target must be an int in [0, {n}) (this summary has {n} target(s)), "
                             f"got {target!r}{_row_hint(self.targets, target)}")
        key = self.ofiv[target] if order == "ofiv" else self.il[target]
        idx = np.argsort(-key, kind="stable")
        if category is not None:
            idx = idx[np.isin(self.category[target, idx], _category_codes(category))]
        return idx

    def save(self, path, compressed=False):
        """Save to an ``.npz`` file (arrays and settings); reload with :meth:`load`.

        ``path``: a file name (``.npz`` is appended to a name that does not end in it; the
        path written is returned) or a writable binary file object such as ``io.BytesIO``
        (returned as given). A file name is written whole or not at all: into a hidden
        temporary file beside it, flushed to disk, then moved over ``path`` in one step, so an
        interrupted save leaves the previous file (or none), never a truncated one; a symlink
        stays a link and an existing file keeps its permissions. (In a folder where no new file
        may be created, an existing file is overwritten in place, as numpy would: not atomic
        there. See ``_io.write_atomic``.)
        Settings that are not plain numbers, strings, lists or dicts (e.g. a ``RandomState``)
        are saved as their ``repr``. ``targets`` and ``target_names`` set by hand are checked
        as ``summarize`` checks them (C integers within int64, or C index tuples; C names, none
        ending in a NUL character, which numpy's fixed-width strings drop): ``ValueError``
        naming the field otherwise, and nothing is written. ``compressed=True`` writes a
        zip-compressed file (``np.savez_compressed``): float FIVs gain little (25% smaller for
        9x the write time on 2,000 targets x 10 starts x 320 channels in a review), so it is
        off by default.
        """
        arrays = {k: getattr(self, k) for k in self._ARRAYS}    # (asdict would copy them)
        C = np.shape(self.fiv)[0]
        if self.targets is not None:   # (C,) ints or (C, d) index tuples
            # checked as summarize checks them: a field set by hand to [1.5, 2, ...] was saved
            # truncated to [1, 2, ...], and an index beyond int64 raised numpy's OverflowError
            targets = _check_targets(self.targets, C, "EnsembleSummary.targets")
            arrays["targets"] = np.asarray(targets, dtype=np.int64)
        if self.target_names is not None:
            names = _check_names(self.target_names, C, "EnsembleSummary.target_names",
                                 convert=True)
            arrays["target_names"] = np.array(names, dtype=str)
        write = np.savez_compressed if compressed else np.savez
        settings = np.array(json.dumps(_plain(self.settings)))
        if hasattr(path, "write"):
            write(path, settings=settings, **arrays)
            return path
        path = Path(path)
        if not path.name.endswith(".npz"):
            path = path.with_name(path.name + ".npz")
        write_atomic(path, lambda f: write(f, settings=settings, **arrays))
        return path

    @classmethod
    def load(cls, path):
        """Read a summary written by :meth:`save`: ``path`` with or without its ``.npz``, or a
        readable binary file object. A file that is not a saved summary (another npz, a
        ``.npy``, arrays of inconsistent shapes) raises ``ValueError`` saying so; arrays this
        version does not know (a file from a newer version) are ignored with a warning."""
        name = path if hasattr(path, "read") else Path(path)
        if isinstance(name, Path) and not name.exists() and name.suffix != ".npz" \
                and name.with_name(name.name + ".npz").exists():
            name = name.with_name(name.name + ".npz")
        what = f"{name!r}" if hasattr(name, "read") else str(name)
        try:
            f = np.load(name, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            why = "neither an .npz nor an .npy file" if "pickled" in str(e) else str(e)
            raise ValueError(f"{what} is not a saved EnsembleSummary (numpy cannot read it as "
                             f"an .npz file: {why})") from None
        if not hasattr(f, "files"):
            raise ValueError(f"{what} is not a saved EnsembleSummary (it holds one array, "
                             "not the .npz that EnsembleSummary.save writes)")
        try:
            with f:
                data = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"{what} is not a saved EnsembleSummary (an entry cannot be "
                             f"read: {e})") from None
        if "settings" not in data:
            raise ValueError(f"{what} is not a saved EnsembleSummary (no 'settings' entry)")
        text = str(data.pop("settings"))
        try:
            settings = json.loads(text)
        except json.JSONDecodeError:  # files written before 0.1's JSON settings: a dict's repr
            settings = _old_settings(text, what)
        if isinstance(settings, dict) and isinstance(settings.get("random_state"), str):
            # JSON files from before the addresses were dropped: "RandomState(MT19937) at 0x..."
            settings["random_state"] = _ADDRESS.sub("", settings["random_state"])
        if not isinstance(settings, dict):
            raise ValueError(f"{what} is not a saved EnsembleSummary (its 'settings' entry is "
                             f"not a dict: {text[:60]!r})")
        ids = {k: data.pop(k) for k in ("targets", "target_names") if k in data}  # optional
        missing = set(cls._ARRAYS) - set(data)
        if missing:
            raise ValueError(f"{what} is not a saved EnsembleSummary (missing {sorted(missing)})")
        extra = sorted(set(data) - set(cls._ARRAYS))
        if extra:
            warnings.warn(f"{what}: ignoring arrays this version does not know: {extra} (a "
                          "file from a newer version?)", UserWarning, stacklevel=2)
        data = {k: data[k] for k in cls._ARRAYS}
        _check_shapes(data, what)
        return cls(settings=settings, **data, **_loaded_ids(ids, data["fiv"].shape[0], what))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# the numpy scalar types whose repr (numpy >= 2) old settings hold: np.int64(3), np.str_('a')
# (np.timedelta64, an np.signedinteger, is refused where they are called)
_OLD_SCALARS = (np.bool_, np.integer, np.floating, np.str_)


def _old_settings(text, what):
    """The settings of a file written before they were JSON: the ``repr`` of a dict, which
    ``ast.literal_eval`` alone refuses for what those versions stored: numpy scalars
    (``np.int64(3)``, numpy >= 2's repr; ``np.float64(...)``, ``np.True_``, ``np.str_('x')``)
    and a RandomState or Generator (``RandomState(MT19937) at 0x7F...``, read as the string
    ``"RandomState(MT19937)"``, as save now writes it). Only the bool, integer, floating and
    str_ types are called, on a literal; nothing is evaluated. Anything else that cannot be
    read (whatever it raises) keeps the arrays: ``{"unparsed": text}``, with a warning. None
    if ``text`` is not a dict."""
    import ast

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [value(v) for v in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Name) and node.id in ("nan", "inf"):
            return float(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in ("np", "numpy"):                # np.True_, np.nan
            obj = getattr(np, node.attr, None)
            if isinstance(obj, (np.generic, float)):
                return obj.item() if isinstance(obj, np.generic) else obj
        if isinstance(node, ast.Call) and not node.keywords and len(node.args) == 1 \
                and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id in ("np", "numpy"):           # np.int64(3), np.str_('a')
            # only the types those versions wrote, on a number (a string for np.str_): no
            # np.void(N) (N bytes allocated), np.bytes_, np.object_, datetime, complex
            kind = getattr(np, node.func.attr, None)
            arg = node.args[0]
            if isinstance(kind, type) and issubclass(kind, _OLD_SCALARS) \
                    and not issubclass(kind, np.timedelta64) \
                    and isinstance(arg, (ast.Constant, ast.UnaryOp, ast.Name)):
                arg = value(arg)
                if isinstance(arg, str) if issubclass(kind, np.str_) else \
                        type(arg) in (bool, int, float):
                    out = kind(arg).item()
                    if type(out) in (bool, int, float, str):
                        return out
        raise ValueError(f"not a literal: {ast.dump(node)[:60]}")

    settings = None
    try:                            # a plain literal first: as read before 3916df8
        settings = ast.literal_eval(text)
    except Exception:               # noqa: BLE001 -- anything unreadable takes the fallback
        fixed = re.sub(r"\b(\w+\(\w*\)) at 0x[0-9a-fA-F]+", r"'\1'", text)
        try:
            settings = value(ast.parse(fixed, mode="eval").body)
        except Exception:           # noqa: BLE001 -- (OverflowError: np.uint8(-1), ...)
            settings = None
    if isinstance(settings, dict) or not text.lstrip().startswith("{"):
        return settings
    warnings.warn(f"{what}: its settings (written before they were saved as JSON) cannot be "
                  f"read; loaded as settings={{'unparsed': ...}} with the arrays intact: "
                  f"{text[:80]!r}", UserWarning, stacklevel=3)
    return {"unparsed": text}


def _check_shapes(data, what):
    """Raise ValueError unless the arrays of a summary have the shapes :class:`EnsembleSummary`
    documents: fiv (C, T, K), scores/weights (C, T), bic (C, M), n_components (C,), the rest
    (C, K)."""
    fiv = data["fiv"]
    if fiv.ndim != 3:
        raise ValueError(f"{what} is not a saved EnsembleSummary: fiv has shape {fiv.shape}, "
                         "expected (C, T, K)")
    C, T, K = fiv.shape
    want = dict(scores=(C, T), weights=(C, T), n_components=(C,), mean=(C, K), il=(C, K),
                nonadditive=(C, K), sign_flip=(C, K), category=(C, K), ofiv=(C, K))
    bad = {k: data[k].shape for k, shape in want.items() if data[k].shape != shape}
    if data["bic"].ndim != 2 or data["bic"].shape[0] != C:
        bad["bic"] = data["bic"].shape
    if bad:
        raise ValueError(f"{what} is not a saved EnsembleSummary of consistent shapes: with fiv "
                         f"(C, T, K) = {fiv.shape}, got {bad}")
    kinds = dict(nonadditive="b", sign_flip="b", category="iu", n_components="iu")
    odd = {k: str(data[k].dtype) for k, ok in kinds.items() if data[k].dtype.kind not in ok}
    if odd:
        raise ValueError(f"{what} is not a saved EnsembleSummary: {odd} (nonadditive and "
                         "sign_flip are bool, category and n_components integers)")
    if data["category"].size and not np.isin(data["category"], (0, 1, 2)).all():
        raise ValueError(f"{what} is not a saved EnsembleSummary: category holds values other "
                         "than 0, 1, 2")


def _loaded_ids(ids, C, what):
    """The ``targets`` / ``target_names`` entries of a saved summary (absent in files written
    before they were stored: None) as :class:`EnsembleSummary` holds them."""
    out = {}
    t = ids.get("targets")
    if t is not None:
        if t.dtype.kind not in "iu" or t.ndim not in (1, 2) or len(t) != C:
            raise ValueError(f"{what} is not a saved EnsembleSummary: its targets entry has "
                             f"dtype {t.dtype} and shape {t.shape}, expected {C} ints or index "
                             "tuples")
        out["targets"] = ([int(i) for i in t] if t.ndim == 1
                          else [tuple(int(i) for i in row) for row in t])
    n = ids.get("target_names")
    if n is not None:
        if n.dtype.kind != "U" or n.shape != (C,):
            raise ValueError(f"{what} is not a saved EnsembleSummary: its target_names entry "
                             f"has dtype {n.dtype} and shape {n.shape}, expected {C} strings")
        out["target_names"] = [str(s) for s in n]
    return out


def _row_hint(targets, target):
    """'; rows are positions ...: output 500 is row 2' when ``target`` is not a row but one of
    the stored output indices ``targets``; else ''."""
    if targets is None or isinstance(target, bool):
        return ""
    try:
        i = targets.index(target if isinstance(target, tuple) else int(target))
    except (TypeError, ValueError):
        return ""
    return (f"; rows are positions in the summary, not output indices: output {target} is "
            f"row {i}")


def _check_targets(targets, C, what="targets"):
    """summarize's ``targets`` (or a summary's, before a save: ``what`` names the field) -> a
    list of C ints or C index tuples of one length, within int64 as they are saved (or None)."""
    if targets is None:
        return None
    given = targets
    if hasattr(targets, "detach"):
        targets = targets.detach().cpu().numpy()
    if isinstance(targets, np.ndarray):
        targets = targets.tolist()
    items = None if isinstance(targets, (str, bytes, dict)) else list(targets) \
        if hasattr(targets, "__iter__") else None
    out = []
    for t in items or ():
        if isinstance(t, numbers.Integral) and not isinstance(t, (bool, np.bool_)):
            out.append(int(t))
        elif isinstance(t, (tuple, list)) and len(t) and all(
                isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_)) for i in t):
            out.append(tuple(int(i) for i in t))
        else:
            out = None
            break
    kinds = {len(t) if isinstance(t, tuple) else 0 for t in out or ()}
    if items is None or out is None or len(out) != C or len(kinds) != 1:
        raise ValueError(f"{what} must list the model output of each of the {C} target(s): "
                         f"{C} ints (e.g. opt.diagnostics.targets), or {C} index tuples of "
                         f"one length; got {given!r:.200}")
    big = [t for t in out for i in (t if isinstance(t, tuple) else (t,))
           if not -2**63 <= i < 2**63]
    if big:
        raise ValueError(f"{what} must be output indices within the int64 range (they are saved "
                         f"as int64), got {big[0]!r}")
    return out


def _check_names(names, C, what="target_names", convert=False):
    """``target_names`` -> a list of C plain ``str``, none ending in NUL (numpy's fixed-width
    strings, as saved, drop trailing NULs: 'a\\x00' loaded as 'a'). ``convert``: any item is
    taken as its ``str`` (a summary's field set by hand, as save always did)."""
    given = names
    names = None if isinstance(given, (str, bytes)) else list(given)   # any iterable, once
    if names is None or len(names) != C or not (convert or all(isinstance(n, str) for n in names)):
        raise ValueError(f"{what} must be a sequence of {C} strings (one per target), "
                         f"got {given!r:.200}")
    names = [str(n) for n in names]   # plain str: np.str_ prints as np.str_('x')
    nul = [i for i, n in enumerate(names) if n.endswith("\x00")]
    if nul:
        raise ValueError(f"{what}[{nul[0]}] = {names[nul[0]]!r} ends in a NUL character, which "
                         "a saved summary cannot keep (numpy's fixed-width strings drop it)")
    return names


def _short(settings, n=6):
    """settings for a repr: lists longer than n (e.g. the model names of a zoo of 300) shown as
    their first n items and a count."""
    return {k: (list(v[:n]) + [f"... {len(v)} in all"]
                if isinstance(v, (list, tuple)) and len(v) > n else v)
            for k, v in settings.items()}


def _category_codes(category):
    names = {"additive": (ADDITIVE,), "nonadditive": (NONADDITIVE_CONSISTENT, NONADDITIVE_FLIPPING)}
    names.update({n: (i,) for i, n in enumerate(CATEGORY_NAMES)})
    if isinstance(category, str):
        if category not in names:
            raise ValueError(f"category must be one of {sorted(names)} or 0/1/2, got {category!r}")
        return names[category]
    if isinstance(category, (bool, np.bool_)) or not isinstance(category, (int, np.integer)) \
            or int(category) not in (0, 1, 2):
        raise ValueError(f"category must be 0, 1, 2 or one of {sorted(names)}, got {category!r}")
    return (int(category),)


def feature_importance_vectors(fims):
    """FIMs (C, T, K, *spatial) -> FIVs (C, T, K): the mean over the spatial positions.

    A flat layer (C, T, K) is its own FIV. ``fims``: a numpy array or a tensor on any device;
    the FIVs are a numpy array. float32 and float64 FIMs give FIVs of their own dtype; float16
    and bfloat16 FIMs, numpy or torch alike, give float32 FIVs (averaged in float32), integers
    float64 (a flat integer layer is returned as it is).

    The mean is taken a block of targets at a time (at most ``_stats._BLOCK_VALUES`` values),
    a tensor's on its own device: only the (C, T, K) FIVs come to the host, and a 16-bit input
    is made float32 a block at a time, never whole.
    """
    return _fivs(fims)[0]


def _fivs(fims):
    """``feature_importance_vectors(fims)`` and whether ``fims`` was a flat (C, T, K) layer (its
    FIVs may then be the caller's memory: see :func:`_fresh`)."""
    tensor = hasattr(fims, "detach")
    # dtype and shape checks on no data (a tensor's first 0 targets: nothing is copied)
    probe = _to_numpy(fims[:0] if tensor and fims.ndim else fims, "fims")
    shape = tuple(fims.shape) if tensor else probe.shape
    if len(shape) < 3:
        raise ValueError(f"fims must have shape (n_targets, n_starts, K, ...); got {shape}")
    if 0 in shape:
        raise ValueError(f"fims is empty: shape {shape} (n_targets, n_starts, K, ...) needs "
                         "at least one target, one start, one channel and one position")
    half = probe.dtype == np.float16 or (tensor and str(fims.dtype) in ("torch.float16",
                                                                      "torch.bfloat16"))
    if len(shape) == 3:
        x = _to_numpy(fims, "fims") if tensor else probe      # 16-bit tensors: float32
        return (x.astype(np.float32) if x.dtype == np.float16 else x), True
    # before: a 16-bit tensor became a float32 copy of the whole FIMs on the host, and a GPU
    # tensor was moved to the host whole, W times the data needed (review 15c m3)
    C, T, K = shape[:3]
    W = int(np.prod(shape[3:]))
    out = None
    for b in _stats.row_blocks(C, T, K * W):
        x = fims[b].detach() if tensor else probe[b]
        if tensor and x.device.type != "cpu":        # on its own device: float32 for 16 bits
            m = _stats._numpy_of(_stats._torch_float(x.flatten(3)).mean(dim=3))
        else:     # on the host, numpy's sum: the bits of the whole-array mean, whatever the block
            if tensor:
                x = _stats._tensor_to_numpy(x)      # 16-bit tensors: float32
            x = x.reshape((-1, T, K, W))
            m = (x.astype(np.float32, copy=False) if half else x).mean(axis=3)
        if out is None:
            out = np.empty((C, T, K), dtype=m.dtype)
        out[b] = m
    return out, False


_COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")   # scikit-learn's GaussianMixture

#: Scores of one target whose spread is at most this fraction of their largest |value| are
#: equal to float rounding: :func:`trial_weights` weighs their starts equally.
TIE_TOLERANCE = 1e-6


def trial_weights(scores):
    """Trial weights from class scores (C, T), as the paper says: "an offset to the scores
    such that all trials have non-negative weights".

    Per target: if some score is negative the scores are shifted by their minimum (the worst
    start gets weight 0); if all are non-negative they are used as they are (shifting then would
    zero the worst start for nothing, and it is often the only witness of a second mode). When
    all scores of a target are equal (the only way its weights can sum to zero), every start
    weighs the same; so it does when they differ by at most ``TIE_TOLERANCE`` (1e-6) of the
    largest |score|, what a float32 forward summed in another order (other threads, another
    batch size) typically changes: that must not move all the weight to one start. This is a
    threshold, not a cure: rounding is absolute (set by the terms summed), so scores near 0,
    16-bit scores, or a spread just above the threshold still get the paper's zero weight for
    the lowest start.

    Parameters
    ----------
    scores: (C, T) array or tensor, the class score of each start of each target.

    Returns
    -------
    (C, T) float64 numpy array of non-negative weights, not normalised (each target's sum is
    whatever its scores give; only ratios within a target matter, and ``summarize``
    normalises them per target); every target has a weight > 0.

    Notes
    -----
    These weights depend on the logit's constant offset, which no gradient (and so no FIM)
    sees: the same FIVs with every score moved by c get other weights. On the demo's set I
    XOR model (scores 28.0-39.7 at lambda 9.06, 10 starts) the weights range 0.085-0.120
    (effective starts 9.75) and channels [5, 10, 16, 18, 19, 23, 30, 31] are non-additive;
    with the scores lowered by 29 (one becomes negative: shift by the minimum) they range
    0-0.236 (4.66 effective starts) and only [5, 16, 19, 30] remain: no longer the model's
    strongest GCTCAT and CGCTTG detectors, 23 and 31. ``summarize(..., weights="uniform")``
    gives the first channel set for either offset.
    """
    s = _to_numpy(scores, "scores").astype(np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (n_targets, n_starts); got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    lo = s.min(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        w = np.where(lo < 0, s - lo, s)
    big = ~(np.abs(w) < 1e300).all(axis=1)
    if big.any():  # scores near the float64 limit: only ratios matter, so scale such rows by a
        # power of two (exact) that keeps the shift and the weight sums finite
        e = np.frexp(np.abs(s[big]).max(axis=1, keepdims=True))[1]
        sb, lb = np.ldexp(s[big], -e), np.ldexp(lo[big], -e)
        w[big] = np.where(lb < 0, sb - lb, sb)
    with np.errstate(over="ignore"):   # an inf spread near the float64 limit is no tie
        spread = s.max(axis=1) - lo[:, 0]
    w[spread <= TIE_TOLERANCE * np.abs(s).max(axis=1)] = 1.0   # equal, or equal to rounding
    return w


def summarize(fims, scores=None, *, random_state=0, max_components=3, covariance_type="full",
              reg_covar=1e-3, n_jobs=None, verbose=False, weights="paper", targets=None,
              target_names=None):
    """Summarise an ensemble of FIMs as the paper does.

    Parameters
    ----------
    fims: (C, T, K, *spatial) tensor or array, e.g. the output of
        ``LayerFeatureOptimizer.attribute``; (C, T, K) for a flat layer. Axis 2 must be the
        channels: the FIV of a channel is its mean over the spatial axes after it
        (for a channels-last layer, pass ``fims.movedim(-1, 2)``).
    scores: (C, T) class score of each start: ``fims, scores = opt.attribute(...,
        return_scores=True)``, or ``opt.diagnostics.scores`` after the run. Required by the
        paper's weights (the default); with ``weights="uniform"`` or given weights it may be
        None (then ``summary.scores`` is NaN). None with the paper's weights raises a
        TypeError that says where to get them.
    random_state: seed of the Gaussian mixtures: an int in [0, 2**32 - 1], used for every
        target's fits; or a ``numpy.random.RandomState``, a ``numpy.random.Generator`` or None
        (numpy's global RandomState), from which one int seed is drawn up front and used as an
        int would be. Either way a target's result does not depend on ``n_jobs`` nor on which
        other targets are summarised with it, and ``settings["random_state"]`` is the int
        used: ``summarize(..., random_state=summary.settings["random_state"])`` repeats it.
    max_components: GMMs with 1..max_components components are fitted to each target's IL
        values (K of them) and the lowest BIC wins. Needs K >= max_components.
    covariance_type: "full" (default), "diag", "spherical" or "tied", passed to scikit-learn.
        In one dimension "full", "diag" and "spherical" agree; "tied" shares one variance
        across the components, so it has fewer parameters and gives other BIC values and often
        other component counts. (The authors used "diag": the same as "full" here.)
    reg_covar: the smallest variance of a mixture component, in units of the relative IL (see
        Notes): the resolution below which IL differences are noise.
    n_jobs: parallel GMM fits over targets (joblib, in blocks of targets): None or 1 (serial),
        or another int as joblib reads it (-1: every CPU). Starting the workers costs a second
        or more (their scikit-learn import), so it pays only for hundreds of targets or more;
        on a machine whose cores are already busy it can be slower than serial.
    verbose: progress bar over targets.
    weights: how the starts are weighted in the mean, the IL and the OFIV (Notes):
        "paper" (default): :func:`trial_weights` of the scores, the paper's rule;
        "uniform": every start weighs the same (the scores are then only stored);
        or a (C, T) array or tensor of non-negative weights, each target's with a positive
        sum (only ratios within a target matter).
        ``settings["weights"]`` records "paper", "uniform" or "given"; ``summary.weights`` holds
        the weights used.
    targets: optional, the model output of each of the C targets, in the order of ``fims``:
        C ints (e.g. ``opt.diagnostics.targets``, or ``load_blocks(folder).targets``) or C
        index tuples of one length. Stored as ``summary.targets`` (a list), saved with it, and
        used by the plots to label rows ("output 500") and by the warnings to name targets.
    target_names: optional sequence of C strings naming the targets (e.g. the models of a
        zoo). Stored as ``summary.target_names`` and saved; the plots label rows with them
        and the warnings name targets by them (first choice, before ``targets``).

    Returns
    -------
    EnsembleSummary

    Notes
    -----
    The GMMs are fitted to the relative IL: IL in units of the target's mean FIV power (the
    mean over channels of the weighted E_t[FIV^2]), so the result does not depend on the scale
    of the layer or of l2. ``reg_covar`` (default 1e-3, a component standard deviation of at
    least ~0.03 power units) plays the part that scikit-learn's default reg_covar on raw IL
    played in the authors' code: IL spread between nearby optima (starts that all reach
    the same mode, up to a few percent) is one component, not a mixture fitted to noise. With
    1e-6 instead, 2 of 40 classes of our synthetic set II models got 2-3 components although
    every start reached one mode; with 1e-3 all 40 get one, and every set I model still gets
    more than one with the same XOR channels flagged (benchmarks/synthetic.py). The unit is the
    whole target's FIV power, so a channel far stronger than the rest raises that floor for
    all of them: with 32 channels, 10 starts, an XOR pair of FIVs +-1 and one consistent
    channel at +M, the pair was flagged up to M = 10 and lost (one component) at M = 30, where
    the authors' GMM on raw IL still split it off. A target dominated by one channel may hide
    weaker non-additive pairs; lower ``reg_covar`` to look for them. A target whose
    IL values are all equal gets one component. Channels whose IL is not above the mean of the
    lowest component are always additive, and the split is a threshold in IL: if any channel of
    a target is non-additive, so is every channel of that target whose (relative) IL is at
    least the smallest non-additive one's. (The paper's "lowest-mean component is additive",
    read literally, would let a broad lowest component also claim the highest-IL channels.)

    The paper's weights depend on the logit's constant offset: adding c to every score of a
    target (what a different bias of the output unit does, which no gradient and so no FIM
    sees) changes its weights, and with them the mean, the IL, the GMM split and the OFIV (see
    :func:`trial_weights`). Scores well above 0 weigh the starts almost equally; scores of
    which some are negative are shifted by their minimum, so the worst start gets weight 0 and
    the best ones carry most of the weight. Use ``weights="uniform"`` when the offset is
    arbitrary (calibrated or class-imbalanced heads, large negative biases, rare classes) or
    when summaries of targets whose logits sit at different levels must be comparable: then
    the result depends on the FIVs only. ``EnsembleSummary.effective_starts`` tells how many
    starts the weights of each target amount to.

    Each GMM is seeded with k-means++ and fitted once (``init_params="k-means++"``,
    ``n_init=1``), not with scikit-learn's default full k-means (``init_params="kmeans"``,
    which the authors' code used): about 15x faster per fit, which dominates the run time at
    hundreds of targets. The two can disagree on borderline targets: in a review, on 200
    noisy targets with one flipping pair each, the component count differed in 2 and the
    non-additive set in 11. ``settings["init_params"]`` records the seeding.
    """
    if scores is None and isinstance(weights, str) and weights == "paper":
        raise TypeError(
            "summarize needs the class score of every start, scores (n_targets, n_starts), "
            "besides the FIMs: get them with fims, scores = opt.attribute(..., "
            "return_scores=True), or pass opt.diagnostics.scores of the run that made the FIMs "
            "(the paper's weights are made from them); weights='uniform' needs no scores")
    # the arguments that need no data are checked before any work (n_jobs was refused by
    # joblib only after the FIVs and the moments had been computed)
    if isinstance(reg_covar, bool) or not isinstance(reg_covar, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(reg_covar) and reg_covar > 0):
        raise ValueError(f"reg_covar must be a finite number > 0, got {reg_covar!r}")
    if isinstance(max_components, bool) or not isinstance(max_components, (int, np.integer)) \
            or max_components < 1:
        raise ValueError(f"max_components must be an integer >= 1, got {max_components!r}")
    if not isinstance(covariance_type, str) or covariance_type not in _COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {list(_COVARIANCE_TYPES)}, got "
                         f"{covariance_type!r}")
    if n_jobs is not None and (isinstance(n_jobs, (bool, np.bool_))
                               or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0):
        raise ValueError(f"n_jobs must be None or a non-zero int (1: serial; -1: every CPU, "
                         f"as joblib reads it), got {n_jobs!r}")
    fiv, flat = _fivs(fims)
    # (C, T, K) given: the FIVs may be the caller's buffer (or a CPU tensor's); summary.fiv
    # must not change when the caller reuses it, nor write into it. An array made afresh (from
    # a GPU or 16-bit tensor, or float16 made float32) is not copied again (a second full copy
    # of the FIVs)
    if flat and not _fresh(fiv, fims):
        fiv = fiv.copy()
    if scores is None:     # weights "uniform" or given: the scores are not needed
        s = np.full(fiv.shape[:2], np.nan)
    else:
        s = _to_numpy(scores, "scores")
        if s.shape != fiv.shape[:2]:
            raise ValueError(
                f"fims and scores disagree: fims has (n_targets, n_starts) = {fiv.shape[:2]}, "
                f"scores has shape {s.shape}")
    if not np.all(np.isfinite(fiv)):
        raise ValueError("fims contain NaN or inf")
    if scores is not None and not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    C, T, K = fiv.shape
    if K < max_components:
        raise ValueError(
            f"the layer has {K} channel(s), fewer than the {max_components} GMM components to "
            f"compare; pass max_components <= {K}")
    if target_names is not None:
        target_names = _check_names(target_names, C)
    targets = _check_targets(targets, C)
    seed = _gmm_seed(random_state)    # before any fit: see _gmm_seed

    if T == 1:
        warnings.warn(
            "one start per target (T = 1): the inconsistency level is 0 for every channel, so "
            "no channel can be found non-additive and the OFIV is that start's FIV. Run the "
            "ascent with n_starts >= 2 (the paper uses 10).", UserWarning, stacklevel=2)
    w, rule = _start_weights(weights, s)
    lone = np.flatnonzero((w > 0).sum(axis=1) == 1) if T > 1 else np.zeros(0, dtype=int)
    given = np.full(len(lone), rule == "given")
    shifted = ~given & (s[lone].min(axis=1) < 0)   # the paper's offset moved these scores
    for group, why, tip in (
            (lone[given], "the weights given are 0 for every other start", ""),
            (lone[shifted], "a score is negative, so the scores are shifted by their minimum "
             "(the paper's offset), and every other start scored exactly that minimum (they "
             "ended at the same optimum)",
             " With T = 2 this happens whenever a score is negative: run more starts."),
            (lone[~shifted & ~given], "no score is negative, so the scores are the weights, "
             "and every other start scored exactly 0", "")):
        if not len(group):
            continue
        more = " ..." if len(group) > 10 else ""
        which = (f"{[target_names[i] for i in group[:10]]}{more}" if target_names is not None
                 else f"{[targets[i] for i in group[:10]]}{more} (model outputs)"
                 if targets is not None else f"{group[:10].tolist()}{more} (positions in fims)")
        warnings.warn(
            f"target(s) {which} have one start with a non-zero weight: {why}. Their IL is 0 and "
            "their OFIV is that one start's FIV, as with T = 1." + tip, UserWarning,
            stacklevel=2)
    # float32 FIVs stay float32 (the native kernel accumulates in float64 either way; the numpy
    # fallback works a block of targets at a time)
    mean, il = _stats.weighted_moments(fiv, w)
    mean, il = np.asarray(mean, dtype=np.float64), np.asarray(il, dtype=np.float64)

    # IL in units of the target's mean FIV power (mean over channels of E_t[fiv^2]): scale-free,
    # and sklearn's reg_covar (1e-6) then reads as "spread below ~0.1% of a typical FIV is noise".
    power = (mean ** 2 + il).mean(axis=1, keepdims=True)
    il_rel = np.divide(il, power, out=np.zeros_like(il), where=power > 0)
    fits = _fit_all(il_rel, max_components, seed, covariance_type, reg_covar, n_jobs, verbose)
    bic = np.stack([f[0] for f in fits])
    n_comp = np.array([f[1] for f in fits], dtype=np.int64)
    nonadd = np.stack([f[2] for f in fits])

    # signs are judged on the starts that carry weight: a start the offset gives weight 0 (the
    # lowest score, when one is negative) has no say in the mean or the IL, so it must not make a
    # channel "sign-flipping" either, nor alone supply the positive FIVs its OFIV averages
    # (bool (C, T, K) temporaries: a block of targets at a time)
    sign_flip = np.empty((C, K), dtype=bool)
    for b in _stats.row_blocks(C, T, K):
        f, weighted = fiv[b], (w[b] > 0)[:, :, None]
        sign_flip[b] = ((f > 0) & weighted).any(axis=1) & ((f < 0) & weighted).any(axis=1)
    category = np.where(nonadd, np.where(sign_flip, NONADDITIVE_FLIPPING, NONADDITIVE_CONSISTENT),
                        ADDITIVE).astype(np.int8)

    ofiv = mean.copy()
    # the flipping cells only, gathered as (n_flip, T): full (C, T, K) float64 products cost
    # 3 GB more at 21,907 x 10 x 960 for 0.2% of the cells flipping (review 13)
    ci, ki = np.nonzero(category == NONADDITIVE_FLIPPING)
    if len(ci):
        g, wc = fiv[ci, :, ki].astype(np.float64), w[ci]
        wp = wc * ((g > 0) & (wc > 0))
        # summed start by start, in order: the bits of the (C, T, K) sums over axis 1 before
        num, den = wp[:, 0] * g[:, 0], wp[:, 0].copy()
        for t in range(1, T):
            num += wp[:, t] * g[:, t]
            den += wp[:, t]
        ofiv[ci, ki] = num / den   # den > 0: a flipping cell has a weighted positive FIV

    return EnsembleSummary(
        fiv=fiv, scores=s.astype(np.float64), weights=w, mean=mean, il=il, bic=bic,
        n_components=n_comp, nonadditive=nonadd, sign_flip=sign_flip, category=category,
        ofiv=ofiv, settings=dict(random_state=seed, max_components=max_components,
                                 covariance_type=covariance_type, reg_covar=reg_covar,
                                 init_params="k-means++", weights=rule,
                                 il_units="mean FIV power"),
        targets=targets, target_names=target_names)


def _start_weights(weights, scores):
    """summarize's ``weights`` argument -> ((C, T) float64 weights, "paper"/"uniform"/"given")."""
    if isinstance(weights, str):
        if weights == "paper":
            return trial_weights(scores), "paper"
        if weights == "uniform":
            return np.ones(scores.shape), "uniform"
    elif weights is not None and not isinstance(weights, bytes):
        w = np.array(_to_numpy(weights, "weights"), dtype=np.float64)     # its own copy
        if w.shape != scores.shape:
            raise ValueError(f"weights must have the shape of scores, (n_targets, n_starts) = "
                             f"{scores.shape}, got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError("weights contain NaN or inf")
        if (w < 0).any():
            bad = np.flatnonzero((w < 0).any(axis=1))
            raise ValueError(f"weights must be >= 0 (negative in target(s) {bad[:10].tolist()})")
        with np.errstate(over="ignore"):
            sums = w.sum(axis=1)
        zero = np.flatnonzero(~(sums > 0) | ~np.isfinite(sums))
        if len(zero):
            raise ValueError(f"the weights of target(s) {zero[:10].tolist()} are all 0 or sum "
                             "beyond the float64 range: every target needs a start with a "
                             "weight > 0 (only ratios within a target matter)")
        return w, "given"
    raise ValueError("weights must be 'paper', 'uniform' or a (n_targets, n_starts) array of "
                     f"non-negative weights, got {weights!r:.80}")


def _gmm_seed(random_state):
    """The int seed of every target's GMM fits from ``summarize``'s ``random_state``: an int as
    given; one int drawn from a RandomState / Generator / None (numpy's global RandomState).

    One seed for all targets, fixed before any fit: a RandomState passed on to the fits would
    be advanced from target to target when they run one after another but copied into each
    joblib task when they run in parallel, so results changed with ``n_jobs`` and with the
    targets before a given one. (Seeds drawn per target would still tie a target's result to
    its position among the others.)"""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state <= 2**32 - 1:
            raise ValueError(f"random_state must be an int in [0, 2**32 - 1], got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if random_state is None:
        return int(np.random.randint(2**31 - 1))    # numpy's global RandomState
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    raise TypeError("random_state must be an int, a numpy RandomState or Generator, or None; "
                    f"got {random_state!r}")


def _fit_all(il, max_components, random_state, covariance_type, reg_covar, n_jobs, verbose):
    C = il.shape[0]
    bar = None
    if verbose:
        from tqdm.auto import tqdm
        bar = tqdm(total=C, desc="GMM on IL", unit="target")
    args = (max_components, random_state, covariance_type, reg_covar)
    try:
        if n_jobs in (None, 1):
            fits = []
            for c in range(C):
                fits.append(_fit_one(il[c], *args))
                if bar is not None:
                    bar.update(1)
            return fits
        from joblib import Parallel, delayed, effective_n_jobs, wrap_non_picklable_objects
        # one task per block of targets, not per target: a target's fits take ~10 ms, not much
        # more than joblib's cost of sending a task. At 2,000 targets x 320 channels on 2 quiet
        # cores, warm pool, medians of 3: serial 27.1 s, per-target tasks 16.3 s (1.66x),
        # blocks 13.8 s (1.96x); on a loaded machine per-target tasks were slower than serial.
        # A few blocks per worker keep the load even.
        n = max(1, effective_n_jobs(n_jobs))
        blocks = [b for b in np.array_split(np.arange(C), min(C, 4 * n)) if len(b)]
        fits = []
        # cloudpickled whatever the backend's pickler (multiprocessing's is pickle's, which
        # sends functions by reference only); the worker gets the copy itself
        fit_block = wrap_non_picklable_objects(_fit_block_by_value(), keep_wrapper=False)
        with Parallel(n_jobs=n_jobs) as parallel:
            for i in range(0, len(blocks), n):   # n blocks at a time, for the progress bar
                group = blocks[i:i + n]
                for part in parallel(delayed(fit_block)(il[b], *args) for b in group):
                    fits.extend(part)
                if bar is not None:
                    bar.update(sum(len(b) for b in group))
        return fits
    finally:
        if bar is not None:
            bar.close()


def _fit_block_by_value():
    """A copy of ``_fit_block`` (calling its own copy of ``_fit_one``) over globals of its own:
    numpy and warnings. joblib's default loky backend pickles tasks with cloudpickle, which
    sends a function by reference when it is a module's attribute -- each worker then imported
    this module, and with it the package: torch, captum and matplotlib, none of which a GMM fit
    needs (a fresh worker's first task: 4.5 s of CPU, 23 s wall on the 2 shared cores at load
    ~6; 1.6 s, 7.5 s wall with numpy, scipy and scikit-learn only). The copies are no module's
    attribute, so they go by value, and nothing is registered with cloudpickle's process-wide
    registry (registering this module sent EnsembleSummary by value in every other joblib job
    of the process meanwhile). _fit_all wraps the copy for backends that pickle with pickle
    (multiprocessing); the threading backend calls it as it is. The results are the same
    either way. A global name the two functions use must be in ``g``."""
    import builtins
    import types
    g = {"np": np, "warnings": warnings, "__builtins__": builtins}
    g["_fit_one"] = types.FunctionType(_fit_one.__code__, g, "_fit_one")
    return types.FunctionType(_fit_block.__code__, g, "_fit_block")


def _fit_block(il_rows, max_components, random_state, covariance_type, reg_covar):
    return [_fit_one(row, max_components, random_state, covariance_type, reg_covar)
            for row in il_rows]


def _fit_one(il_row, max_components, random_state, covariance_type, reg_covar):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    K = il_row.shape[0]
    bic = np.full(max_components, np.nan)
    n_distinct = len(np.unique(il_row))
    if n_distinct < 2:
        return bic, 1, np.zeros(K, dtype=bool)
    x = il_row.reshape(-1, 1)
    best = None
    for n in range(1, max_components + 1):
        if n > n_distinct:
            break
        # k-means++ seeding: ~15x faster than a full KMeans per fit (which dominates at
        # hundreds of classes); it differs on a few borderline targets (summarize's Notes)
        gmm = GaussianMixture(n_components=n, covariance_type=covariance_type,
                              random_state=random_state, n_init=1, init_params="k-means++",
                              reg_covar=reg_covar)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(x)
        bic[n - 1] = gmm.bic(x)
        if best is None or bic[n - 1] < best[0]:
            best = (bic[n - 1], n, gmm)
    _, n_best, gmm = best
    if n_best == 1:
        return bic, 1, np.zeros(K, dtype=bool)
    means = gmm.means_.ravel()
    low = int(np.argmin(means))
    label = gmm.predict(x)
    nonadd = (label != low) & (il_row > means[low])
    if nonadd.any():
        # a threshold in IL: a broad lowest-mean component can also claim the highest-IL
        # channels (a review found additive channels at IL 2.05-2.17 above non-additive ones at
        # 1.67-1.82); more inconsistency never makes a channel more additive
        nonadd = il_row >= il_row[nonadd].min()
    return bic, n_best, nonadd


def _fresh(arr, given):
    """Whether ``arr``, ``_to_numpy(given)``, surely holds memory of its own: ``given`` is a
    list or tuple, a numpy array or a CPU tensor whose memory ``arr`` does not overlap (a
    float16/bfloat16 one, made float32), or a tensor off the CPU (``.cpu()`` copied it). False
    for anything else (any other array-like): then ``arr`` may be the caller's memory."""
    if isinstance(given, (list, tuple)):
        return True
    if isinstance(given, np.ndarray):    # e.g. float16 made float32
        return not np.may_share_memory(arr, given)
    if not (hasattr(given, "detach") and hasattr(given, "untyped_storage")):
        return False
    if given.device.type != "cpu":
        return True
    store = given.untyped_storage()
    lo = arr.__array_interface__["data"][0]
    return arr.nbytes > 0 and (lo + arr.nbytes <= store.data_ptr()
                               or lo >= store.data_ptr() + store.nbytes())


def _to_numpy(x, name):
    if hasattr(x, "detach"):
        x = _stats._tensor_to_numpy(x)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name} must be a real-valued tensor or array, got dtype {x.dtype}")
    return x
