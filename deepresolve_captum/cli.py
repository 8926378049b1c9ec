"""The ``deepresolve`` command line.

Subcommands are registered in ``SUBCOMMANDS``: name -> (module path, one-line help). Each module
provides ``add_arguments(parser)`` and ``run_from_args(args) -> int``. To add a subcommand, add a line.

    deepresolve demo --out DIR        # synthetic set I end to end (figures + summary), see demo.py
    deepresolve zoo FOLDER --out DIR  # every model of a TF-model zoo, see zoo_summary.py
    deepresolve run --model M --layer L --inputs X --out DIR   # your own model, see run_model.py

This module holds what the subcommands share: argument types (``int_at_least``, ``l2_value``,
``target_list`` ...), the ``--out`` folder (``output_folder``), writing all outputs together
(``write_together``, ``write_errors``) and the dispatch (``main``). It imports no subcommand
module at import time, and a subcommand module is imported only when its name is on the
command line, so ``deepresolve --help`` does not load them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from pathlib import Path

SUBCOMMANDS = {
    "demo": ("deepresolve_captum.demo",
             "reproduce the paper's synthetic experiment (set I; --set-two for set II): "
             "generate, train, run DeepResolve, write figures and a summary"),
    "zoo": ("deepresolve_captum.zoo_summary",
            "DeepResolve on every model of a folder of ENCODE-style TF models (one batched "
            "ascent): summary.npz, ofiv.csv and filters.csv (with --jaspar: TOMTOM matches)"),
    "run": ("deepresolve_captum.run_model",
            "DeepResolve on your own PyTorch model (FILE.py:FACTORY or package.module:FACTORY, "
            "optionally --weights) at one layer: summary.npz, ofiv.csv, channels.csv, figures "
            "and run.json"),
}


def int_at_least(lo, below=None):
    """argparse ``type``: an integer >= lo, and < ``below`` when given (a usage error
    otherwise)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        if below is not None and v >= below:
            raise argparse.ArgumentTypeError(f"must be < {_bound_text(below)}, got {v}")
        return v
    parse.__name__ = f"integer >= {lo}" + (f" and < {_bound_text(below)}" if below else "")
    return parse


def _bound_text(v):
    """2**63 as '2**63' (a power of two above a million), other bounds as they are."""
    if isinstance(v, int) and v > 2**20 and v & (v - 1) == 0:
        return f"2**{v.bit_length() - 1}"
    return f"{v:g}".replace("e+", "e") if isinstance(v, float) else str(v)


#: the largest seed the command line takes, exclusive: torch's generators take a signed 64-bit
#: seed (``manual_seed(2**64)`` failed with an overflow after the data were generated)
SEED_BELOW = 2 ** 63

#: the largest --l2 the command line takes: the regulariser l2 * ||H||^2 of a float32 ascent
#: overflows (float32 max 3.4e38) from about 1e38 on, so a larger lambda ends in inf, not in an
#: answer; 1e30 leaves room for ||H||^2 up to ~1e8
L2_MAX = 1e30


def seed_argument(parser, help_):
    """``--seed``: an integer in [0, 2**63), default 0 (``help_`` says what it seeds)."""
    parser.add_argument("--seed", type=int_at_least(0, below=SEED_BELOW), default=0,
                        help=f"{help_} (default 0; an integer in [0, 2**63))")


def positive_float(text, at_most=None):
    """argparse ``type``: a finite number > 0 (and <= ``at_most`` when given)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    if at_most is not None and v > at_most:
        raise argparse.ArgumentTypeError(f"must be <= {_bound_text(at_most)}, got {text}")
    return v


def l2_value(text):
    """argparse ``type`` of ``--l2``: a number in (0, L2_MAX]."""
    return positive_float(text, at_most=L2_MAX)


l2_value.__name__ = f"number in (0, {_bound_text(L2_MAX)}]"


def out_path(text):
    """argparse ``type`` of ``--out``: a non-empty path (``--out "$UNSET"`` would otherwise be
    the current folder)."""
    if not text.strip():
        what = "an empty string" if not text else f"only blanks ({text!r})"
        raise argparse.ArgumentTypeError(f"must name a folder, got {what} (an unset shell "
                                         "variable?); use --out . for the current folder")
    return text


class TargetList:
    """``--target``: "all", or ranges of output indices (inclusive), kept as ranges until the
    model's output count is known (``0-999999999`` must not be a list before it is checked)."""

    def __init__(self, text, ranges):
        self.text, self.ranges = text, ranges   # ranges: None for "all", else [(lo, hi), ...]

    def resolve(self, n_outputs):
        """The output indices, in the order given; ValueError (its message names --target)
        when one is not an output."""
        if self.ranges is None:
            return list(range(n_outputs))
        top = max(hi for _, hi in self.ranges)
        if top >= n_outputs:
            raise ValueError(f"--target {self.text}: output {top} does not exist; the model has "
                             + (f"{n_outputs} output(s), 0-{n_outputs - 1}" if n_outputs > 1
                                else "1 output, 0"))
        return [t for lo, hi in self.ranges for t in range(lo, hi + 1)]

    def __repr__(self):
        return self.text


def target_list(text):
    """argparse ``type`` of ``--target``: ``all``, or comma-separated output indices and
    inclusive ranges (``0``, ``0,3,17``, ``0-918``, ``0-9,20``), each output once."""
    import re

    if text.strip().lower() == "all":
        return TargetList("all", None)
    ranges = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not m:
            raise argparse.ArgumentTypeError(
                f"expected output indices from 0 such as 0, 0,3,17, 0-918 or all; got {text!r}"
                + (f" ({item.strip()!r} is not an index or a range)" if item.strip() else
                   " (an empty item)"))
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise argparse.ArgumentTypeError(f"the range {lo}-{hi} runs backwards; write {hi}-{lo}")
        ranges.append((lo, hi))
    seen = sorted(ranges)
    for (a, b), (c, d) in zip(seen, seen[1:]):
        if c <= b:
            raise argparse.ArgumentTypeError(
                f"output {c} is listed twice in {text!r} (each target is optimised on its own: "
                "list it once)")
    return TargetList(",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges),
                      ranges)


target_list.__name__ = "target list"


def l2_or_auto(text):
    """argparse ``type`` of an ``--l2`` that offers the heuristic: ``auto`` or a number in
    (0, L2_MAX]."""
    return "auto" if text.strip().lower() == "auto" else l2_value(text)


l2_or_auto.__name__ = f"auto or a number in (0, {_bound_text(L2_MAX)}]"


def add_threads_argument(parser, why, default=1):
    """``--threads`` (torch CPU threads, default 1); ``why`` says why that is the default
    (``default=0``: torch's own setting)."""
    text = (f"default {default}: {why}; 0: torch's own setting" if default else
            f"default 0: torch's own setting, {why}")
    parser.add_argument("--threads", type=int_at_least(0), default=default,
                        help=f"torch CPU threads ({text})")


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch CPU threads (0 or None: leave torch's setting); the
    caller's setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


_created = []


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until it ends, then give it to the
    handler that was there before (Python's KeyboardInterrupt, a program's own handler, or
    nothing if SIGINT was ignored). Outside the main thread (where no handler can be set) the
    block runs as it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):   # SIG_DFL / SIG_IGN are ints
        previous(*caught[0])
    elif caught and previous == signal.SIG_DFL:
        raise KeyboardInterrupt


def write_together(out, writers):
    """Write every output under a temporary name, then move them all into place: a run stopped
    or failed before the end leaves the previous run's files as they were, never a mix of two
    runs. ``out``: an existing folder (Path). ``writers``: {file name: function(path)}, each
    writing its file at the path it is given (a hidden name in ``out``, unique to this call,
    same suffix). A name that exists in ``out`` as something other than a file is refused
    before anything is written (the command line checks this before any work:
    ``output_folder(..., names=)``).

    Two runs writing into one ``out`` at once (a job array, a re-run started early) each write
    their own temporary files, and their moves into place take turns (an exclusive ``flock``
    on ``out`` where the system offers one): ``out`` ends with every file of one run, the one
    that moved last. Where ``out`` cannot be locked (NFS, no fcntl: see ``_folder_lock``) a
    RuntimeWarning says that runs into it are not serialised.

    A run killed while writing (SIGKILL, the OOM killer: no clean-up runs) leaves its
    temporary files; the next call into ``out`` removes them (``_remove_stale_partials``: only
    names exactly as made here, from this host, whose process is gone).

    Returns the names that replaced a file of an earlier run, in ``writers``' order.

    An exception while a file is written or moved is raised as it is, with the output's path
    in its ``deepresolve_output`` attribute (``write_errors`` turns it into a one-line error).
    """
    import uuid

    clash = _clashes(out, writers)
    if clash:
        raise ValueError(f"{out} holds {clash} as something other than a file: move it away")
    _remove_stale_partials(out)
    tmp, kept, moved = {}, {}, []
    name = None
    run = f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{_host_tag()}"   # another run's differ
    try:
        for name, write in writers.items():
            tmp[name] = out / _partial_name(run, name)
            write(tmp[name])
        # the moves take microseconds: not split by a Ctrl-C, nor by another run's moves
        with _ctrl_c_deferred(), _folder_lock(out):
            for name in tmp:       # a second name for each previous file, to put it back
                if (out / name).exists():
                    kept[name] = _keep_copy(out / name)
            replaced = [n for n in tmp if n in kept]
            try:
                for name, path in tmp.items():
                    os.replace(path, out / name)   # atomic per file: never a missing name
                    moved.append(name)
            except BaseException:
                _put_back(out, moved, kept)
                raise
    except Exception as e:
        if name is not None and getattr(e, "deepresolve_output", None) is None:
            with contextlib.suppress(AttributeError, TypeError):
                e.deepresolve_output = out / name
        raise
    finally:
        for path in list(tmp.values()) + list(kept.values()):
            with contextlib.suppress(OSError):   # a full disk must not hide the first error
                if path.exists():
                    path.unlink()
    return replaced


def _partial_name(run, name):
    """write_together's temporary name for output ``name`` in the call ``run``
    (PID-RANDOM-HOST): hidden, with ``name``'s suffix."""

    return f".{run}.{name}.partial{Path(name).suffix}"


#: a name _partial_name may have made: PID, 8 random hex digits, _host_tag, the rest
_PARTIAL_RUN = r"\.([1-9][0-9]{0,9})-[0-9a-f]{8}-([0-9a-f]{8})\.(.+)"


#: files naming this boot and this machine: the PID namespace's link alone is the same
#: constant (pid:[4026531836]) on every host's init namespace, so two hosts of one name
#: sharing an NFS folder had one tag and removed each other's live files (review r4 m3)
_HOST_ID_FILES = ("/proc/sys/kernel/random/boot_id", "/etc/machine-id")


def _host_ids():
    """The readable, non-empty contents of ``_HOST_ID_FILES`` (boot id, machine id), in order
    (a missing one is ''); None when none can be read: then no tag tells this host apart."""
    ids = []
    for path in _HOST_ID_FILES:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                ids.append(f.read(200).strip())
        except OSError:
            ids.append("")
    return ids if any(ids) else None


def _host_tag():
    """8 hex digits naming this host's process ids (a hash of the host name, the boot id, the
    machine id and the PID namespace): a temporary file's PID says whether its run is alive
    only where this tag is the file's (NFS folders are shared by hosts, a host's containers
    have PIDs of their own, a host's next boot reuses PIDs)."""
    import hashlib
    import socket

    try:
        space = os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):   # no /proc (macOS), no readlink
        space = ""
    ids = "\0".join(_host_ids() or ())
    return hashlib.sha256(f"{socket.gethostname()}\0{space}\0{ids}".encode()).hexdigest()[:8]


def _remove_stale_partials(out):
    """Remove from ``out`` the temporary files of killed write_together calls: regular files
    named exactly as ``_partial_name`` names them, whose run carries this host's tag and whose
    PID is no running process. Nothing else is touched: other hosts' files (their PIDs cannot
    be checked here), a running PID's (a live run, or the PID reused: kept to be safe), links,
    folders, the ``.NAME.previous-*`` copies. A file that cannot be removed is left. Nothing is
    removed where ``os.kill(pid, 0)`` does not test a process (Windows: it would end it), nor
    where neither the boot id nor the machine id can be read (macOS, a locked-down /proc): the
    tag could then be another host's of the same name, whose live files must stay."""
    import re

    if os.name != "posix" or _host_ids() is None:
        return
    host = _host_tag()
    try:
        with os.scandir(out) as it:
            entries = list(it)
    except OSError:
        return
    for entry in entries:
        m = re.fullmatch(_PARTIAL_RUN, entry.name)
        if m is None or m[2] != host:
            continue
        run, rest = entry.name[1:-len(m[3]) - 1], m[3]
        names = [rest[:i] for i in range(1, len(rest)) if rest.startswith(".partial", i)]
        if not any(_partial_name(run, n) == entry.name for n in names):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and not _running(int(m[1])):
                os.unlink(entry.path)


def _running(pid):
    """False only when no process of this host has ``pid`` (another user's counts as
    running)."""

    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):   # PermissionError: another user's; else: cannot tell
        return True
    return True


_unlocked_warned = set()   # the folders _folder_lock could not lock, warned of once each


@contextlib.contextmanager
def _folder_lock(folder):
    """An exclusive ``flock`` on ``folder`` for the block (waiting for another holder): two
    runs' moves into one folder take turns.

    Where no lock can be taken, the block runs unlocked, and one RuntimeWarning (once per
    folder and process) says that runs writing into this folder at the same time are not
    serialised there: each file is still whole, but the folder can end with some files of
    one run and some of the other. That is: no ``fcntl`` (Windows); a folder that cannot be
    opened; a file system that refuses the lock, such as NFS (its clients emulate flock with
    POSIX byte-range locks, which need a file opened for writing, so flock on a folder fails
    with EBADF) or one without lock support (ENOLCK, EOPNOTSUPP). A file system that takes
    the lock but honours it only among the processes of one host (NFS clients before Linux
    2.6.12, some FUSE or SMB mounts) cannot be told apart: runs on several hosts writing into
    one --out are not serialised there either. Give each run its own --out on such a
    system."""

    fd, reason = None, None
    try:
        import fcntl
    except ImportError:
        reason = "this system has no fcntl"
    else:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError as e:
            reason = f"the folder cannot be opened: {e.strerror or e}"
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                reason = f"its file system refuses flock: {e.strerror or e}"
        if reason is not None:
            _warn_unlocked(folder, reason)
        yield
    finally:
        if fd is not None:
            os.close(fd)   # releases the lock


def _warn_unlocked(folder, reason):
    """_folder_lock's warning, once per folder."""
    import warnings

    key = os.path.realpath(folder)
    if key in _unlocked_warned:
        return
    _unlocked_warned.add(key)
    warnings.warn(f"{folder} cannot be locked ({reason}): runs writing into this folder at the "
                  "same time are not serialised here, and it can end with some files of each "
                  "run; give each run its own --out", RuntimeWarning, stacklevel=2)


def _clashes(out, names):
    """The names that exist in ``out`` as something other than a file (a folder, a socket)."""
    return [n for n in names if (out / n).exists() and not (out / n).is_file()]


@contextlib.contextmanager
def write_errors(command):
    """Within the block, an error that ``write_together`` tagged with the output it was writing
    (a full disk, a permission refused, a writer's ValueError) ends the command as one line,
    ``deepresolve COMMAND: error: cannot write PATH: REASON`` (exit code 1), not a traceback.
    Other exceptions pass unchanged."""
    try:
        yield
    except (OSError, ValueError) as e:
        path = getattr(e, "deepresolve_output", None)
        if path is None:
            raise
        reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
        raise SystemExit(f"deepresolve {command}: error: cannot write {path}: "
                         f"{reason.strip().splitlines()[0]}") from None


def replaced_note(replaced):
    """'' or '; replaced a, b from an earlier run' for a command's final message."""
    return f"; replaced {', '.join(replaced)} from an earlier run" if replaced else ""


def _keep_copy(path):
    """A hidden second name (hard link, or a copy where links are refused) for ``path``,
    unused until now, in its folder."""
    import shutil
    import uuid

    kept = path.with_name(f".{path.name}.previous-{uuid.uuid4().hex[:12]}")
    try:
        os.link(path, kept)
    except OSError:
        shutil.copy2(path, kept)
    return kept


def _put_back(out, moved, kept):
    """After a failed move: the previous file of every name already moved goes back (a name
    that had none is removed). Each is tried; the ones that could not be restored keep their
    hidden copy, named in the error."""

    lost = []
    for name in moved:
        try:
            if name in kept:
                os.replace(kept.pop(name), out / name)
            else:
                (out / name).unlink()
        except OSError:
            lost.append(str(kept.pop(name, out / name)))
    if lost:
        raise OSError(f"could not restore the previous outputs; their copies are kept as {lost}")


def check_output_file(parser, option, text):
    """For scripts (benchmarks/encode422.py, synthetic.py): a file the run writes only at its
    end (``--out``, ``--json``), checked before any work and without creating anything (the
    caller makes its folder once every check has passed): a non-empty path, not a folder,
    whose nearest existing ancestor is a writable folder (and the file, if there, writable);
    ``parser.error`` otherwise (a directory or an unwritable path used to fail with a
    traceback after all the work)."""
    if not str(text).strip():       # before Path: Path("") is "."
        parser.error(f"{option}: empty path; name a file")
    path = Path(text)
    if path.is_dir():
        parser.error(f"{option}: {path} is a folder; name a file (e.g. {path / 'encode422.csv'})")
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        parser.error(f"{option}: cannot create the folder {path.parent}: {anc} is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"{option}: cannot write {path}")


def output_folder(out, command, names=()):
    """Create the ``--out`` folder before any work starts, so that a path that cannot be written
    ends the command at once with a usage-style error, not with a traceback after the work.
    ``names``: the files the command will write there; one that exists as something other than
    a file (a folder named ``summary.npz``) is refused now too. Every folder this creates
    (``--out`` and the parents it lacked) is recorded, so that ``main`` removes again the ones a
    failed run leaves empty. Returns it as a Path."""
    import tempfile

    if not str(out).strip():
        raise SystemExit(f"deepresolve {command}: error: --out is empty; name a folder "
                         "(--out . for the current one)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"deepresolve {command}: error: --out {out} exists and is not a folder")
    missing, p = [], out
    while not p.exists() and p != p.parent:
        if p.name not in ("", ".", ".."):
            missing.append(p)
        p = p.parent
    # removed again by main(), deepest first, if the command fails and leaves them empty
    _created.extend(reversed(missing))
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write_test_")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"deepresolve {command}: error: cannot write to --out {out}: "
                         f"{e.strerror or e}") from None
    clash = _clashes(out, names)
    if clash:
        raise SystemExit(f"deepresolve {command}: error: --out {out} holds {', '.join(clash)} as "
                         "something other than a file (the command writes a file there): move "
                         "it away")
    return out


def build_parser(argv=None):
    """The parser; only the subcommand named in ``argv`` (all of them when argv is None) imports
    its module, so ``deepresolve --help`` does not wait for torch."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="deepresolve",
        description="DeepResolve (Liu, Zeng & Gifford 2019) for PyTorch/Captum.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if argv is None else {a for a in argv if a in SUBCOMMANDS}
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if wanted is None or name in wanted:
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


@contextlib.contextmanager
def one_line_warnings(prog="deepresolve"):
    """Within the block, warnings print as ``prog: warning: message`` (no file, line or source
    line: a command-line user did not write that code); the usual format is restored after."""
    import warnings

    before = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: f"{prog}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = before


def _remove_empty_outputs():
    for d in reversed(_created):
        with contextlib.suppress(OSError):   # gone already, or not ours to remove
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    _created.clear()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _created.clear()
    ok = False
    try:
        with one_line_warnings():
            rc = int(importlib.import_module(args._module).run_from_args(args) or 0)
        ok = rc == 0
        return rc
    except KeyboardInterrupt:
        print(f"deepresolve {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if not ok:  # an --out folder this run created and left empty goes again
            _remove_empty_outputs()


if __name__ == "__main__":
    # ``python -m deepresolve_captum.cli``: this file runs as __main__, but the subcommands
    # import deepresolve_captum.cli, a second copy whose _created records the --out folders
    # made; run that copy's main, so that a failed run removes them
    from deepresolve_captum.cli import main as _main
    sys.exit(_main())
