"""Files written whole or not at all, settings as JSON and the versions they came from:
shared by summary, blocks and cli.

Imports nothing from the package (the bottom of the data flow), so any module may use it.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import numpy as np

__all__ = ["write_atomic", "plain", "provenance"]


def write_atomic(path, write):
    """Write ``path`` through ``write(f)`` (``f`` a binary file), whole or not at all where the
    folder allows it.

    The data go to a hidden temporary file beside the real target (a symlink's target, so the
    link stays a link and points at the new data), flushed to disk, then moved over it in one
    ``os.replace``: a killed process or a failed ``write`` leaves the previous file (or none),
    never a truncated one, and no temporary file. The new file gets the previous file's
    permission bits, or, for a new file, the usual ``0o666`` less the umask (as ``open`` would).
    Unlike ``open``, a read-only (0444) file in a writable folder is replaced, and a hard link
    to the old file keeps the old data.

    Where no file can be created beside the target (a writable file in a folder the user may
    not add files to), the file is overwritten in place, as ``open(path, "wb")`` would: then
    a failure half-way leaves a truncated file, as it always did with a plain write. A folder
    in place of ``path``, a missing folder or no permission raise errors that name ``path``.

    Returns the path written (``path`` with symlinks resolved).
    """
    name = os.fspath(path)
    if not name or name.endswith(("/", os.sep)) or os.path.basename(name) in (".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    # the folder as the file system sees it ("sub/../x" needs sub, as open() does), before
    # realpath simplifies the text
    if not os.path.isdir(os.path.dirname(name) or "."):
        raise FileNotFoundError(f"cannot write {name!r}: no folder {os.path.dirname(name)!r}")
    target = Path(os.path.realpath(name))
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a folder")
    try:
        old_mode = target.stat().st_mode & 0o7777 if target.is_file() else None
    except OSError:
        old_mode = None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)    # umask applies
    except PermissionError:
        if old_mode is not None and os.access(target, os.W_OK):
            with open(target, "wb") as f:                                  # in place
                write(f)
            return target
        raise PermissionError(f"cannot write {str(path)!r}: permission denied in "
                              f"{str(target.parent)!r}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot write {str(path)!r}: no folder "
                                f"{str(target.parent)!r}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def plain(x):
    """``x`` as JSON can hold it, the same text in every process: numpy and torch scalars and
    arrays (parameters too) as Python values, tuples as lists, sets as sorted lists, paths as
    strings, dict keys as strings, and anything else as its ``repr`` without memory addresses
    (``"RandomState(MT19937)"``, not ``"... at 0x7F..."``, which differ on every run)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (set, frozenset)):   # a set's order changes with PYTHONHASHSEED
        return sorted((plain(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(x, os.PathLike):
        return os.fsdecode(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray) or type(x).__module__.split(".")[0] == "torch" \
            and hasattr(x, "tolist"):
        if hasattr(x, "detach"):   # a parameter or a tensor that requires grad
            x = x.detach().cpu()
        values = x.tolist()
        return plain(values) if getattr(x, "dtype", None) == object else values
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(x))


def provenance():
    """What a run's numbers depend on besides its arguments, for the settings it saves: the
    package, torch, numpy and scikit-learn versions and torch's thread count (a float32
    forward sums in another order on another thread count: ~1e-8 relative differences)."""
    import sklearn
    import torch

    from . import __version__
    return dict(version=__version__, torch_version=torch.__version__,
                numpy_version=np.__version__, sklearn_version=sklearn.__version__,
                threads=torch.get_num_threads())
