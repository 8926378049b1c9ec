"""The ``deepresolve`` command line.

Subcommands are registered in ``SUBCOMMANDS``: name -> (module path, one-line help). Each module
provides ``add_arguments(parser)`` and ``run_from_args(args) -> int``; ``"module:name"`` names an
object of the module that provides them instead (``run``'s, defined here). To add a subcommand,
add a line.

    deepresolve demo --out DIR        # synthetic set I end to end (figures + summary), see demo.py
    deepresolve zoo FOLDER --out DIR  # every model of a TF-model zoo, see zoo_summary.py
    deepresolve run --model M --layer L --inputs X --out DIR   # your own model, see run_command
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("deepresolve_captum.demo",
             "reproduce the paper's synthetic experiment (set I; --set-two for set II): "
             "generate, train, run DeepResolve, write figures and a summary"),
    "zoo": ("deepresolve_captum.zoo_summary",
            "DeepResolve on every model of a folder of ENCODE-style TF models (one batched "
            "ascent): summary.npz, ofiv.csv and filters.csv (with --jaspar: TOMTOM matches)"),
    "run": ("deepresolve_captum.cli:run_command",
            "DeepResolve on your own PyTorch model (FILE.py:FACTORY or package.module:FACTORY, "
            "optionally --weights) at one layer: summary.npz, ofiv.csv, channels.csv, figures "
            "and run.json"),
}


def _command(spec):
    """The object that provides ``add_arguments`` / ``run_from_args`` for a ``SUBCOMMANDS``
    entry: the module, or ``module:name``'s object."""
    module, _, name = spec.partition(":")
    found = importlib.import_module(module)
    return getattr(found, name) if name else found


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
    writing its file at the path it is given (a hidden name in ``out``, same suffix). A name
    that exists in ``out`` as something other than a file is refused before anything is
    written (the command line checks this before any work: ``output_folder(..., names=)``).

    Returns the names that replaced a file of an earlier run, in ``writers``' order.

    An exception while a file is written or moved is raised as it is, with the output's path
    in its ``deepresolve_output`` attribute (``write_errors`` turns it into a one-line error).
    """
    import os
    from pathlib import Path

    clash = _clashes(out, writers)
    if clash:
        raise ValueError(f"{out} holds {clash} as something other than a file: move it away")
    tmp, kept, moved = {}, {}, []
    name = None
    try:
        for name, write in writers.items():
            tmp[name] = out / f".{name}.partial{Path(name).suffix}"
            write(tmp[name])
        with _ctrl_c_deferred():   # the moves take microseconds: not split by a Ctrl-C
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
    import os
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
    import os

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


def output_folder(out, command, names=()):
    """Create the ``--out`` folder before any work starts, so that a path that cannot be written
    ends the command at once with a usage-style error, not with a traceback after the work.
    ``names``: the files the command will write there; one that exists as something other than
    a file (a folder named ``summary.npz``) is refused now too. Every folder this creates
    (``--out`` and the parents it lacked) is recorded, so that ``main`` removes again the ones a
    failed run leaves empty. Returns it as a Path."""
    import os
    import tempfile
    from pathlib import Path

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


# ------------------------------------------------------------------ deepresolve zoo: a file
def _before_work(args):
    """Checks of a subcommand's arguments that its module does not make, before it starts."""
    from pathlib import Path

    if args.command == "zoo" and Path(args.folder).is_file():
        f = Path(args.folder)
        more = "; to run it alone, put it in a folder of its own" if f.suffix == ".npz" else ""
        raise SystemExit(
            f"deepresolve zoo: error: {f} is a file; zoo takes a folder of ENCODE-style .npz "
            f"models (or the encode422 folder){more}. For a PyTorch model of your own, use "
            "deepresolve run --model FILE.py:FACTORY [--weights STATE_DICT.pt] (deepresolve run "
            "--help)")


# ------------------------------------------------------------------ deepresolve run
_RUN_OUTPUTS = """models (--model):
  FILE.py:FACTORY         a Python file and a callable in it (a function, or an nn.Module class)
                          that returns the model when called without arguments
  package.module:FACTORY  the same from an importable module (the current folder is searched
                          first, as with python -m)
  FILE.pt --allow-pickle  a whole module saved with torch.save(model): loading it runs any code
                          the file holds (torch.load(weights_only=False)); the classes it was
                          saved with must be importable (from the current folder or the file's)
  --weights STATE_DICT.pt is loaded with torch.load(weights_only=True) (tensors only, no code)
  into the model, strictly (every key must match). The model runs in eval mode.

outputs (in --out, all moved into place together at the end of a run):
  summary.npz    EnsembleSummary.load(path): fiv (targets x starts x channels), il, ofiv,
                 category, n_components ... and targets (row i is the model's output
                 targets[i]); settings hold the layer, l2 (and l2_auto), n_starts, seed,
                 model, weights_file, inputs_file and the package, torch and numpy
                 versions. The arrays are those of the Python API's
                 LayerFeatureOptimizer(model, layer).attribute(x, target=targets, n_starts=,
                 l2=, seed=, return_scores=True, fiv_only=True) and summarize(fivs, scores,
                 random_state=0, targets=targets)
  ofiv.csv       one row per target: output (the model's output index), ofiv_0 .. ofiv_{K-1}
                 (channels numbered from 0)
  channels.csv   one row per (target, channel), each target's channels by OFIV: output, rank
                 (1 = highest OFIV), channel, ofiv, il, category (additive; non-additive,
                 consistent sign; non-additive, sign-flipping), n_components (GMM components
                 chosen by BIC)
  fig2.png       the paper's Fig. 2 for one target (--plot-target): every start's FIVs, IL and
                 OFIV of the top --plot-channels channels by OFIV
  ofiv.png       with more than one target: OFIV rows (at most 100 targets and 100 channels,
                 the channels with the largest |OFIV|)
  similarity.png with more than one target: class similarity (Pearson of the OFIVs >= 0),
                 clustered
  run.json       the arguments, the targets, lambda (and how l2=auto chose it), the seed, the
                 files read (with their SHA-256), the versions, the device and the times
  --no-plots writes no PNG."""

#: every file ``deepresolve run`` can write in --out (which ones a run writes: _run_outputs)
_RUN_NAMES = ("summary.npz", "ofiv.csv", "channels.csv", "fig2.png", "ofiv.png",
              "similarity.png", "run.json")


class TargetList:
    """``--target``: "all", or ranges of output indices (inclusive), kept as ranges until the
    model's output count is known (``0-999999999`` must not be a list before it is checked)."""

    def __init__(self, text, ranges):
        self.text, self.ranges = text, ranges   # ranges: None for "all", else [(lo, hi), ...]

    def resolve(self, n_outputs):
        """The output indices, in the order given; SystemExit when one is not an output."""
        if self.ranges is None:
            return list(range(n_outputs))
        top = max(hi for _, hi in self.ranges)
        if top >= n_outputs:
            raise SystemExit(f"deepresolve run: error: --target {self.text}: output {top} does "
                             f"not exist; the model has {n_outputs} output(s), 0-{n_outputs - 1}"
                             if n_outputs > 1 else
                             f"deepresolve run: error: --target {self.text}: output {top} does "
                             "not exist; the model has 1 output, 0")
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
    """argparse ``type`` of ``run --l2``: ``auto`` or a number in (0, L2_MAX]."""
    return "auto" if text.strip().lower() == "auto" else l2_value(text)


l2_or_auto.__name__ = f"auto or a number in (0, {_bound_text(L2_MAX)}]"


def add_run_arguments(parser):
    """``deepresolve run`` options."""
    parser.epilog = _RUN_OUTPUTS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, metavar="SPEC",
                        help="FILE.py:FACTORY or package.module:FACTORY (a callable that returns "
                             "the nn.Module when called without arguments), or FILE.pt with "
                             "--allow-pickle (see below)")
    parser.add_argument("--weights", default=None, metavar="STATE_DICT.pt",
                        help="a state_dict (torch.save(model.state_dict(), path)) loaded into "
                             "the model with torch.load(weights_only=True)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="let --model be a whole pickled module (torch.save(model)). "
                             "UNSAFE: torch.load(weights_only=False) runs any code the file "
                             "holds, so pass it only for files you trust; a factory and "
                             "--weights need no such trust")
    parser.add_argument("--layer", required=True, metavar="NAME",
                        help="the layer, by its qualified module name (as in "
                             "model.named_modules(): conv3, features.3, blocks.0.attn); its "
                             "output is the feature map H")
    parser.add_argument("--layer-input", action="store_true",
                        help="optimise the layer's input instead of its output "
                             "(attribute_to_layer_input=True)")
    parser.add_argument("--inputs", required=True, metavar="FILE",
                        help="example inputs for the model, shape (N, ...): a .npy, or an .npz "
                             "holding one array (or name it with --inputs-key). The first "
                             "example fixes the layer's shape and the path into it; with "
                             "--l2 auto all N set lambda (pass a few hundred realistic ones, e.g. "
                             "held-out sequences). Float, bool and uint8 arrays are cast to the "
                             "model's float dtype, other integers to int64")
    parser.add_argument("--inputs-key", default=None, metavar="KEY",
                        help="the array of an .npz --inputs to use")
    parser.add_argument("--target", type=target_list, default=TargetList("all", None),
                        metavar="OUTPUTS",
                        help="the outputs (classes) to optimise, each on its own: all (default), "
                             "an index (0), a list (0,3,17), an inclusive range (0-918) or a mix "
                             "(0-9,20); indices into the model's flattened output per example")
    parser.add_argument("--starts", type=int_at_least(1), default=10,
                        help="random starts per target (default 10, the paper's)")
    parser.add_argument("--l2", type=l2_or_auto, default="auto",
                        help=f"lambda: auto (default; the paper's heuristic, from --inputs) or a "
                             f"number in (0, {_bound_text(L2_MAX)}]")
    seed_argument(parser, "seed of the starts")
    parser.add_argument("--out", required=True, type=out_path,
                        help="folder for the outputs below (created if missing; files of an "
                             "earlier run there are replaced, and the final message says so)")
    parser.add_argument("--device", default="cpu",
                        help="torch device for the model and the ascent (default cpu; cuda, "
                             "cuda:1, mps)")
    parser.add_argument("--plot-target", type=int_at_least(0), default=None, metavar="OUTPUT",
                        help="the output fig2.png shows (one of --target; default the first)")
    parser.add_argument("--plot-channels", type=int_at_least(1), default=30, metavar="N",
                        help="channels in fig2.png, the top ones by OFIV (default 30)")
    parser.add_argument("--no-plots", action="store_true",
                        help="write no figures (thousands of targets: the clustering of "
                             "similarity.png needs about 8 x targets^2 bytes)")
    add_threads_argument(parser, "a model of unknown size may gain from more", default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    return parser


def _run_error(message):
    return SystemExit(f"deepresolve run: error: {message}")


@contextlib.contextmanager
def _on_sys_path(*folders):
    """Within the block, ``folders`` come first on ``sys.path`` (a user's model file imports
    its neighbours; a pickled module names classes from the current folder)."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(f)


def _where(e, path=None):
    """' (FILE, line N)' of the deepest frame of ``e``'s traceback (in ``path`` when given)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    if path is not None:
        from pathlib import Path
        frames = [f for f in frames if Path(f.filename).resolve() == Path(path).resolve()] or frames
    return f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""


def _one_line(e):
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _model_spec_kind(spec):
    """("file", path, name), ("module", module, name) or ("pickle", path, None)."""
    import re

    ident = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
    left, sep, name = spec.rpartition(":")
    if sep and left.endswith(".py"):
        return "file", left, name
    if sep and re.fullmatch(ident, left) and re.fullmatch(ident, name):
        return "module", left, name
    if spec.endswith(".py"):
        raise _run_error(f"--model {spec}: name the factory in it, e.g. --model {spec}:make_model "
                         "(a function that returns the model, or its nn.Module class)")
    return "pickle", spec, None


def _factory(owner, name, spec, owner_name):
    """``owner``'s attribute ``name`` (dotted: ``Class.build``), or a SystemExit naming close
    names."""
    import difflib

    obj = owner
    for i, part in enumerate(name.split(".")):
        if not hasattr(obj, part):
            known = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, known, n=5, cutoff=0.5)
            raise _run_error(f"--model {spec}: {'.'.join(name.split('.')[:i]) or owner_name} "
                             f"has no {part!r}"
                             + (f"; close names: {', '.join(close)}" if close else ""))
        obj = getattr(obj, part)
    return obj


def _call_factory(obj, what):
    from torch import nn

    if isinstance(obj, nn.Module):     # a module-level instance: used as it is
        return obj
    if not callable(obj):
        raise _run_error(f"--model {what} is a {type(obj).__name__}, not a callable that "
                         "returns an nn.Module")
    try:
        model = obj()
    except Exception as e:
        hint = (" (the factory is called without arguments: wrap it, e.g. def make_model(): "
                "return Net(n_outputs=...))" if isinstance(e, TypeError) else "")
        raise _run_error(f"--model {what}: calling it raised {_one_line(e)}{_where(e)}{hint}") \
            from None
    if not isinstance(model, nn.Module):
        raise _run_error(f"--model {what} returned a {type(model).__name__}, not an nn.Module")
    return model


def _load_model(spec, allow_pickle):
    """The nn.Module of ``--model`` (on the CPU), and the file it came from (None for a
    module)."""
    import importlib.util
    import os
    from pathlib import Path

    kind, where, name = _model_spec_kind(spec)
    if kind == "module":
        with _on_sys_path(os.getcwd()):
            try:
                module = importlib.import_module(where)
            except ImportError as e:
                if isinstance(e, ModuleNotFoundError) and e.name and where.startswith(e.name):
                    raise _run_error(f"--model {spec}: no module named {e.name!r} (run from the "
                                     "folder that holds it, install it, or give FILE.py:FACTORY)"
                                     ) from None
                raise _run_error(f"--model {spec}: importing {where} raised {_one_line(e)}"
                                 f"{_where(e)}") from None
            except Exception as e:
                raise _run_error(f"--model {spec}: importing {where} raised {_one_line(e)}"
                                 f"{_where(e)}") from None
            return _call_factory(_factory(module, name, spec, where), spec), None
    path = Path(where)
    if not path.is_file():
        what = "folder, not a file" if path.is_dir() else "no such file"
        raise _run_error(f"--model {spec}: {path} is a {what}" if path.is_dir() else
                         f"--model {spec}: {what}: {path}")
    if kind == "file":
        import hashlib
        unique = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        mod_name = f"_deepresolve_model_{path.stem if path.stem.isidentifier() else 'file'}_{unique}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module    # dataclasses and pickle look classes up there
        with _on_sys_path(path.resolve().parent):
            try:
                loader_spec.loader.exec_module(module)
            except Exception as e:
                sys.modules.pop(mod_name, None)
                raise _run_error(f"--model {spec}: running {path} raised {_one_line(e)}"
                                 f"{_where(e, path)}") from None
            return _call_factory(_factory(module, name, spec, path.name), spec), path
    return _load_pickled_module(path, allow_pickle), path


def _load_pickled_module(path, allow_pickle):
    import pickle
    from collections.abc import Mapping

    import torch
    from torch import nn

    try:   # weights_only=True runs no code: it says what the file is, safely
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = None      # it holds objects other than tensors: a pickled module, perhaps
    except Exception as e:
        raise _run_error(f"--model {path}: torch.load cannot read it ({_one_line(e)}); --model "
                         "takes FILE.py:FACTORY, package.module:FACTORY or a torch.save'd "
                         "module") from None
    if obj is not None:
        if isinstance(obj, Mapping):
            raise _run_error(f"--model {path} holds a state_dict (weights only), not a model: "
                             "build the model with --model FILE.py:FACTORY and pass this file "
                             "as --weights")
        raise _run_error(f"--model {path} holds a {type(obj).__name__}, not an nn.Module")
    if not allow_pickle:
        raise _run_error(f"--model {path} is a pickled object (torch.save(model)?): loading it "
                         "runs arbitrary code from the file (torch.load(weights_only=False)). "
                         "If you trust it, pass --allow-pickle; safer: --model FILE.py:FACTORY "
                         "--weights STATE_DICT.pt")
    import os
    with _on_sys_path(os.getcwd(), path.resolve().parent):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ImportError) as e:
            raise _run_error(
                f"--model {path}: {_one_line(e)}: the file names the classes it was saved with "
                "by module, and that module must be importable here (a model saved from a "
                "script's __main__ is not): save model.state_dict() instead and use --model "
                "FILE.py:FACTORY --weights") from None
        except Exception as e:
            raise _run_error(f"--model {path}: torch.load raised {_one_line(e)}") from None
    if not isinstance(obj, nn.Module):
        raise _run_error(f"--model {path} holds a {type(obj).__name__}, not an nn.Module")
    return obj


def _load_weights(model, path):
    import pickle
    from collections.abc import Mapping
    from pathlib import Path

    import torch

    path = Path(path)
    if not path.is_file():
        raise _run_error(f"--weights: no such file: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _run_error(f"--weights {path} holds pickled objects, not only tensors (a whole "
                         "module saved with torch.save(model)?): save it with torch.save(model."
                         "state_dict(), path); --weights never runs code from a file") from None
    except Exception as e:
        raise _run_error(f"--weights {path}: torch.load cannot read it ({_one_line(e)}); save "
                         "it with torch.save(model.state_dict(), path)") from None
    if isinstance(sd, Mapping) and not all(isinstance(v, torch.Tensor) for v in sd.values()):
        nested = [k for k in ("state_dict", "model_state_dict") if isinstance(sd.get(k), Mapping)]
        if nested:     # a training checkpoint {"state_dict": ..., "epoch": ...}
            sd = sd[nested[0]]
    if not isinstance(sd, Mapping):
        raise _run_error(f"--weights {path} holds a {type(sd).__name__}, not a state_dict")
    try:
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        text = "; ".join(lines[1:] or lines)
        raise _run_error(f"--weights {path} does not fit the model: "
                         f"{text[:600]}{' ...' if len(text) > 600 else ''}") from None


def _load_inputs(path, key):
    """The array of ``--inputs`` (numpy)."""
    import zipfile
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise _run_error(f"--inputs: {path} is a folder, not a file" if path.is_dir() else
                         f"--inputs: no such file: {path}")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise _run_error(f"--inputs {path}: expected a .npy or an .npz file (numpy); save a "
                         "tensor with np.save(path, x.cpu().numpy())")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as e:
        why = ("it holds Python objects (pickled); save a numeric array" if "pickle" in str(e)
               else str(e))
        raise _run_error(f"--inputs {path}: {why}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise _run_error(f"--inputs {path}: numpy cannot read it as .npy or .npz ({e})") from None
    if hasattr(data, "files"):
        with data:
            names = list(data.files)
            if key is None and len(names) != 1:
                raise _run_error(f"--inputs {path} holds {len(names)} arrays "
                                 f"({', '.join(names[:10])}{' ...' if len(names) > 10 else ''}): "
                                 "name one with --inputs-key")
            key = names[0] if key is None else key
            if key not in names:
                raise _run_error(f"--inputs-key {key!r}: {path} holds {', '.join(names[:10])}"
                                 f"{' ...' if len(names) > 10 else ''}")
            try:
                arr = data[key]
            except ValueError as e:
                raise _run_error(f"--inputs {path}[{key!r}]: {e}") from None
    else:
        if key is not None:
            raise _run_error(f"--inputs-key is for an .npz; {path} holds one array")
        arr = data
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise _run_error(f"--inputs {path}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise _run_error(f"--inputs {path}: expected examples along axis 0, shape (N, ...) with "
                         f"N >= 1; got shape {arr.shape}")
    return arr


def _as_model_input(arr, model):
    """The inputs as a tensor: floats, bools and uint8 (one-hot sequences) in the model's float
    dtype, other integers (token ids) as int64."""
    import numpy as np
    import torch

    dtype = next((t.dtype for t in (*model.parameters(), *model.buffers())
                  if t.is_floating_point()), torch.float32)
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype in (np.bool_, np.uint8):
        if arr.dtype in (np.bool_, np.uint8):   # exact in every float dtype
            arr = arr.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    return torch.from_numpy(np.ascontiguousarray(arr).astype(np.int64))


def _find_layer(model, name):
    import difflib

    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    if name in modules and name:
        return modules[name]
    if not name.strip():
        raise _run_error("--layer is empty: name a module inside the model")
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    if not close:   # a case or separator slip: conv3 vs Conv3, features_3 vs features.3
        squash = {n.lower().replace("_", ".").replace("/", "."): n for n in names}
        close = [squash[n] for n in difflib.get_close_matches(
            name.lower().replace("_", ".").replace("/", "."), list(squash), n=6, cutoff=0.5)]
    if close:
        listing = f"close names: {', '.join(close)}"
    else:
        listing = (f"its modules: {', '.join(names[:20])}"
                   + (f" ... ({len(names)} in all)" if len(names) > 20 else "")) if names else \
            "it has no submodules"
    raise _run_error(f"--layer {name!r}: the model ({type(model).__name__}) has no module of "
                     f"that name; {listing}")


def _sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _device(text):
    import torch

    try:
        dev = torch.device(text)
        torch.empty(1, device=dev)
    except (RuntimeError, ValueError, AssertionError, AttributeError) as e:
        raise _run_error(f"--device {text!r} cannot be used here: {_one_line(e)}") from None
    return dev


def run_from_args_run(args):
    """``deepresolve run``."""
    with torch_threads(args.threads):
        return _run_own_model(args)


def _run_own_model(args):
    import datetime
    import json
    import time
    from pathlib import Path

    import numpy as np
    import torch

    from ._io import plain, provenance
    from .optimizer import LayerFeatureOptimizer
    from .summary import summarize

    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    t0, started = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc)
    # everything that can be wrong with the arguments, before any work and before --out exists
    if args.weights is not None and not Path(args.weights).is_file():
        raise _run_error(f"--weights: no such file: {args.weights}")
    arr = _load_inputs(args.inputs, args.inputs_key)
    device = _device(args.device)
    model, model_file = _load_model(args.model, args.allow_pickle)
    if args.weights is not None:
        _load_weights(model, args.weights)
    model = model.eval().to(device)
    layer = _find_layer(model, args.layer)
    x = _as_model_input(arr, model).to(device)
    try:    # one example: the output count, and a clear error for inputs the model cannot take
        with torch.no_grad():
            out1 = model(x[:1])
    except Exception as e:
        raise _run_error(f"the model's forward on the first example of --inputs (shape "
                         f"{tuple(x[:1].shape)}, {str(x.dtype).replace('torch.', '')}) raised "
                         f"{_one_line(e)}{_where(e)}") from None
    if not isinstance(out1, torch.Tensor):
        raise _run_error(f"the model returns a {type(out1).__name__}; DeepResolve needs one "
                         "tensor of logits, (N, n_outputs)")
    n_out = int(out1[0].numel()) if out1.dim() > 0 else 1
    targets = args.target.resolve(n_out)
    plot_target = targets[0] if args.plot_target is None else args.plot_target
    if plot_target not in targets:
        raise _run_error(f"--plot-target {plot_target} is not one of --target {args.target.text}")
    names = _run_outputs(len(targets), args.no_plots)
    # before the ascent: an unwritable --out, or a folder named like an output, fails at once
    out = output_folder(args.out, "run", names=names)
    say(f"model {type(model).__name__}: {n_out} output(s); layer {args.layer} "
        f"({'input' if args.layer_input else 'output'}); {len(targets)} target(s) x "
        f"{args.starts} starts; {len(x)} example input(s) on {device}")

    t1 = time.perf_counter()
    opt = LayerFeatureOptimizer(model, layer)
    try:
        fivs, scores = opt.attribute(x, target=targets, n_starts=args.starts, l2=args.l2,
                                     seed=args.seed, attribute_to_layer_input=args.layer_input,
                                     return_scores=True, fiv_only=True, verbose=not args.quiet)
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        raise _run_error(str(e).strip() or type(e).__name__) from None
    d = opt.diagnostics
    t_ascent = time.perf_counter() - t1
    say(f"DeepResolve on {len(targets)} target(s) (T = {args.starts}, l2 = {d.l2:.4g}"
        f"{' (auto)' if d.l2_auto is not None else ''}): {t_ascent:.1f} s")
    # the versions and threads the numbers came from, now (as zoo records them)
    made_with = provenance()
    t1 = time.perf_counter()
    K = int(fivs.shape[2])
    try:
        s = summarize(fivs, scores, random_state=0, max_components=min(3, K),
                      verbose=not args.quiet, targets=targets)   # rows know their outputs
    except ValueError as e:     # non-finite FIVs or scores
        raise _run_error(str(e).strip()) from None
    t_summary = time.perf_counter() - t1
    files = {"model": None if model_file is None else str(Path(model_file).resolve()),
             "weights": None if args.weights is None else str(Path(args.weights).resolve()),
             "inputs": str(Path(args.inputs).resolve())}
    s.settings.update(
        # weights_file, not weights: summarize's settings["weights"] is its weighting scheme
        model=args.model, weights_file=files["weights"],
        inputs_file=files["inputs"], inputs_key=args.inputs_key, layer=args.layer, layer_input=bool(args.layer_input),
        l2=float(d.l2), l2_auto=d.l2_auto, n_starts=int(args.starts), seed=int(d.settings["seed"]),
        device=str(device), steps_median=float(np.median(d.steps)),
        steps_max=int(np.max(d.steps)), converged=bool(np.all(d.converged)), **made_with)

    writers = {"summary.npz": s.save}
    ofiv, table = _ofiv_tables(s, targets)
    writers["ofiv.csv"] = ofiv.to_csv
    writers["channels.csv"] = lambda p: table.to_csv(p, index=False)
    figures = []
    try:
        if not args.no_plots:
            t1 = time.perf_counter()
            figures = _run_figures(s, targets, targets.index(plot_target), args, layer, say)
            for fname, fig in figures:
                writers[fname] = _figure_writer(fig)
            say(f"figures: {time.perf_counter() - t1:.1f} s")
        hashes = {k: {"path": v, "sha256": _sha256(v)} for k, v in files.items() if v}
        record = {
            "command": "deepresolve run",
            "arguments": {k: (v.text if isinstance(v, TargetList) else v)
                          for k, v in sorted(vars(args).items())
                          if not k.startswith("_") and k != "command"},
            "files": hashes,
            "model_class": (type(model).__qualname__ if model_file is not None else
                            f"{type(model).__module__}.{type(model).__qualname__}"),
            "n_outputs": n_out, "targets": targets,
            "inputs_shape": list(arr.shape), "inputs_dtype": str(arr.dtype), "n_channels": K, "l2": float(d.l2), "l2_auto": d.l2_auto,
            "seed": int(d.settings["seed"]), "n_starts": int(args.starts),
            "gmm_random_state": int(s.settings["random_state"]),
            "max_components": int(s.settings["max_components"]),
            "device": str(device), "steps_median": float(np.median(d.steps)),
            "steps_max": int(np.max(d.steps)), "converged": bool(np.all(d.converged)),
            "versions": made_with, "started": started.isoformat(timespec="seconds"),
            "seconds": {"ascent": round(t_ascent, 3), "summarize": round(t_summary, 3),
                        "total": None},
            "outputs": list(writers) + ["run.json"]}

        def write_record(path):
            record["seconds"]["total"] = round(time.perf_counter() - t0, 3)
            Path(path).write_text(json.dumps(plain(record), indent=1) + "\n")

        writers["run.json"] = write_record
        with write_errors("run"):   # a full disk: one line naming the file; earlier outputs kept
            replaced = write_together(out, writers)
    finally:
        import matplotlib.pyplot as plt
        for _, fig in figures:
            plt.close(fig)
    stale = sorted(n for n in _RUN_NAMES if n not in writers and (out / n).is_file())
    if stale:   # a figure of an earlier run beside this run's outputs would read as this run's
        import warnings
        warnings.warn(f"{out} still holds {', '.join(stale)} of an earlier run, left as it was "
                      "(this run does not write it)", UserWarning, stacklevel=2)
    say(f"wrote {', '.join(writers)} to {out} in {time.perf_counter() - t0:.1f} s"
        + replaced_note(replaced))
    return 0


def _run_outputs(n_targets, no_plots):
    """The files a ``deepresolve run`` of ``n_targets`` targets writes."""
    names = ["summary.npz", "ofiv.csv", "channels.csv"]
    if not no_plots:
        names += ["fig2.png"] + (["ofiv.png", "similarity.png"] if n_targets > 1 else [])
    return names + ["run.json"]


def _ofiv_tables(s, targets):
    """(ofiv.csv's wide table, channels.csv's long one) as pandas DataFrames."""
    import numpy as np
    import pandas as pd

    from .zoo_summary import _CSV_CATEGORY

    C, K = s.ofiv.shape
    wide = pd.DataFrame(s.ofiv, index=pd.Index(targets, name="output"),
                        columns=[f"ofiv_{k}" for k in range(K)])
    order = np.argsort(-s.ofiv, axis=1, kind="stable")         # as summary.channels(i)
    rows = np.repeat(np.arange(C), K)
    chan = order.ravel()
    long = pd.DataFrame({
        "output": np.repeat(np.asarray(targets, dtype=np.int64), K),
        "rank": np.tile(np.arange(1, K + 1), C), "channel": chan,
        "ofiv": s.ofiv[rows, chan], "il": s.il[rows, chan],
        "category": np.asarray(_CSV_CATEGORY, dtype=object)[s.category[rows, chan]],
        "n_components": np.repeat(np.asarray(s.n_components, dtype=np.int64), K)})
    return wide, long


def _figure_writer(fig):
    def write(path):
        from .plot import save_figure
        save_figure(fig, path, formats="png")
    return write


def _run_figures(s, targets, row, args, layer, say):
    """[(file name, Figure)]: fig2.png, and ofiv.png and similarity.png for several targets."""
    import matplotlib
    matplotlib.use("Agg")   # the command line draws to files only
    import numpy as np
    from torch import nn

    from .plot import MAX_OFIV_ROWS, plot_clustered_heatmap, plot_feature_importance, plot_ofiv
    from .similarity import class_similarity

    C, T, K = s.fiv.shape
    where = f"layer {args.layer}{' (input)' if args.layer_input else ''}"
    # the layer's own filters give Fig. 2's logos when it is a DNA convolution (4 input channels)
    filters = None
    if type(layer) is nn.Conv1d and not args.layer_input and layer.in_channels == 4 \
            and layer.groups == 1:
        filters = layer.weight.detach().cpu().float()
    figs = []
    try:
        shown = min(K, args.plot_channels)
        figs.append(("fig2.png", plot_feature_importance(
            s, target=row, filters=filters, max_channels=shown,
            title=f"{where}, output {targets[row]}: FIVs of {T} starts, IL, OFIV (* non-additive)"
                  + (f"; top {shown} of {K} channels" if shown < K else ""))))
        if C > 1:
            rows = np.arange(min(C, MAX_OFIV_ROWS))
            cols = np.arange(K)
            if K > 100:   # the channels with the largest |OFIV| among the rows drawn
                cols = np.sort(np.argsort(-np.abs(s.ofiv[rows]).max(axis=0), kind="stable")[:100])
            title = (f"OFIV at {where}" + (f", first {len(rows)} of {C} targets" if len(rows) < C
                                           else "")
                     + (f", top {len(cols)} of {K} channels by |OFIV|" if len(cols) < K else ""))
            figs.append(("ofiv.png", plot_ofiv(
                s.ofiv[rows], class_names=[s.target_labels()[i] for i in rows],
                channel_order=cols, nonadditive=s.nonadditive[rows], title=title)))
            if C > 500:
                say(f"clustering {C} targets for similarity.png")
            sim = class_similarity(s.ofiv)
            figs.append(("similarity.png", plot_clustered_heatmap(
                sim, class_names=s.target_labels() if C <= 80 else None,
                title=f"class similarity at {where} (Pearson of OFIV >= 0)")))
    except BaseException:
        import matplotlib.pyplot as plt
        for _, fig in figs:
            plt.close(fig)
        raise
    return figs


#: ``deepresolve run``'s entry in SUBCOMMANDS
run_command = argparse.Namespace(add_arguments=add_run_arguments, run_from_args=run_from_args_run)


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
            _command(module).add_arguments(p)
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
            _before_work(args)
            rc = int(_command(args._module).run_from_args(args) or 0)
        ok = rc == 0
        return rc
    except KeyboardInterrupt:
        print(f"deepresolve {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if not ok:  # an --out folder this run created and left empty goes again
            _remove_empty_outputs()


if __name__ == "__main__":
    sys.exit(main())
