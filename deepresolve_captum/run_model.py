"""DeepResolve on your own PyTorch model, from the command line.

``deepresolve run --model SPEC --layer NAME --inputs X.npy --out DIR`` (or ``python -m
deepresolve_captum.run_model ...``) builds the model, loads its weights, runs
``LayerFeatureOptimizer(model, layer).attribute`` on the chosen outputs and ``summarize`` on the
result, and writes to DIR, all moved into place together at the end (a run that fails or is
stopped leaves DIR as it was):

* ``summary.npz`` -- the ``EnsembleSummary`` (``EnsembleSummary.load``), row i the model's
  output ``targets[i]``; its settings hold the layer, lambda, seed, files and versions;
* ``ofiv.csv`` -- one row per target, the OFIV of every channel;
* ``channels.csv`` -- one row per (target, channel), each target's channels by OFIV, with IL,
  category and the GMM's component count;
* ``fig2.png`` (the paper's Fig. 2 for one target) and, with several targets, ``ofiv.png`` and
  ``similarity.png``; none with ``--no-plots``;
* ``run.json`` -- the arguments, the SHA-256 of the files read, lambda, versions and times.

``--model`` is ``FILE.py:FACTORY`` or ``package.module:FACTORY`` (a callable that returns the
``nn.Module``), with ``--weights STATE_DICT.pt`` read by ``torch.load(weights_only=True)``; a
whole pickled module (``torch.save(model)``) is loaded only with ``--allow-pickle``, since
unpickling runs the file's code, and a file torch.save did not write is never unpickled. While
the model is built, and only then, ``sys.path`` holds the folder the import needs: a model
file's own folder first (as ``python FILE.py`` has it), the current folder last (an installed
package is never replaced by a folder of the same name there; ``python -m
deepresolve_captum.run_model`` searches the current folder first, as ``python -m`` does).
Everything that can be wrong with the arguments is found before ``--out`` is created (see
``--help`` for the details).
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from .cli import (L2_MAX, TargetList, _bound_text, add_threads_argument, int_at_least, l2_or_auto,
                  out_path, output_folder, replaced_note, seed_argument, target_list,
                  torch_threads, write_errors, write_together)

#: ``--help``'s epilog: the model specs and the outputs
_OUTPUTS = """models (--model):
  FILE.py:FACTORY         a Python file and a callable in it (a function, or an nn.Module class)
                          that returns the model when called without arguments
  package.module:FACTORY  the same from an importable module: installed packages first, then
                          the current folder (python -m deepresolve_captum.run_model searches
                          the current folder first, as python -m does)
  FILE.pt --allow-pickle  a whole module saved with torch.save(model): loading it runs any code
                          the file holds (torch.load(weights_only=False)); the classes it was
                          saved with must be importable (installed, or from the current folder
                          or the file's)
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
                 clustered (above 80 targets unlabelled: run.json's similarity_order names
                 the output at each position)
  run.json       the arguments, the targets, lambda (and how l2=auto chose it), the seed, the
                 files read (with their SHA-256), the versions, the device and the times; with
                 similarity.png, similarity_order (the outputs in the order drawn)
  --no-plots writes no PNG."""

#: every file ``deepresolve run`` can write in --out (which ones a run writes: _output_names)
_OUTPUT_NAMES = ("summary.npz", "ofiv.csv", "channels.csv", "fig2.png", "ofiv.png",
                 "similarity.png", "run.json")


def add_arguments(parser):
    """``deepresolve run`` options (shared by ``python -m deepresolve_captum.run_model``)."""
    parser.epilog = _OUTPUTS
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
                             "earlier run there are replaced, and the final message, which --quiet "
                             "silences, says so)")
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
def _on_sys_path(*folders, first):
    """Within the block, ``folders`` are on ``sys.path`` (those not on it already), removed again
    after it. ``first=True``: before everything else, as ``python FILE.py`` puts the file's
    folder (a model file imports its neighbours); ``first=False``: after everything else, so
    that an installed package is never replaced by a folder of the same name in them (the
    current folder, for package.module:FACTORY and a pickled module's classes)."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    if first:
        sys.path[:0] = added
    else:
        sys.path.extend(added)
    try:
        yield
    finally:
        for f in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(f)


def _warn_if_passed_over(module_name, folder, spec):
    """A warning when ``folder`` holds a module ``module_name`` (top level) other than the one
    imported: an installed package came first."""
    import importlib.machinery
    import os
    import warnings

    top = module_name.split(".")[0]
    imported = getattr(sys.modules.get(top), "__file__", None)
    found = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
    if imported is None or found is None or not found.has_location or found.origin is None:
        return          # nothing to compare, or only a namespace folder (data, not code)
    if os.path.realpath(found.origin) != os.path.realpath(imported):
        warnings.warn(f"--model {spec}: the installed {top} ({imported}) is used, not "
                      f"{found.origin} in the current folder (installed packages come first; "
                      f"to use the current folder's, run python -m deepresolve_captum.run_model "
                      "from it, which searches it first)", UserWarning, stacklevel=2)


def _where(e, path=None):
    """' (FILE, line N)' of the deepest frame of ``e``'s traceback (in ``path`` when given)."""
    import traceback

    if isinstance(e, SyntaxError):    # its message already names the file and the line
        return ""
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

    from pathlib import Path

    ident = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
    left, sep, name = spec.rpartition(":")
    if sep and left.endswith(".py") and not name.strip():
        raise _run_error(f"--model {spec}: name the factory after the colon, e.g. --model "
                         f"{left}:make_model (a function that returns the model, or its "
                         "nn.Module class)")
    if sep and left.endswith(".py"):
        return "file", left, name
    if sep and Path(left).is_file():   # sd.pt:make would be read as a module named 'sd'
        raise _run_error(f"--model {spec}: {left} is not a Python file: FILE.py:FACTORY takes a "
                         ".py file (a state_dict goes to --weights; a module saved with "
                         "torch.save(model) is given alone, --model FILE.pt --allow-pickle)")
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


def _takes_no_arguments(obj):
    """Whether ``obj()`` fits ``obj``'s signature (followed through functools.wraps wrappers
    such as ``@torch.no_grad()``); True when it cannot be read."""
    import inspect

    try:
        inspect.signature(obj).bind()
    except TypeError:
        return False
    except Exception:       # no signature to read (some builtins), or reading it failed
        return True
    return True


def _code_ran(obj, tb):
    """Whether the traceback ``tb`` passes through the code of ``obj`` (unwrapped from its
    decorators and partials; a class: its ``__init__``): the factory's own body started, so an
    error is from inside it."""
    import functools
    import inspect

    try:
        while isinstance(obj, functools.partial):
            obj = obj.func
        if inspect.isclass(obj):       # its __init__ is the code a call runs
            obj = obj.__init__
        code = getattr(inspect.unwrap(obj), "__code__", None)
    except Exception:
        return False
    while tb is not None:
        if code is not None and tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


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
        import os
        import traceback
        deepest = traceback.extract_tb(e.__traceback__)[-1]
        # the call itself failed (wrong arguments, or a class/partial whose own code never ran):
        # no line of the user's file to point at, and ours says nothing
        never_entered = (deepest.name == "_call_factory"
                         and os.path.abspath(deepest.filename) == os.path.abspath(__file__))
        where = "" if never_entered else _where(e)
        hint = (" (the factory is called without arguments: wrap it, e.g. def make_model(): "
                "return Net(n_outputs=...))" if isinstance(e, TypeError) and (
                    never_entered or not (_takes_no_arguments(obj)
                                          or _code_ran(obj, e.__traceback__)))
                else "")   # a TypeError from inside the factory's own code is the user's bug
        raise _run_error(f"--model {what}: calling it raised {_one_line(e)}{where}{hint}") \
            from None
    if not isinstance(model, nn.Module):
        raise _run_error(f"--model {what} returned a {type(model).__name__}, not an nn.Module")
    return model


def _load_model(spec, allow_pickle):
    """The nn.Module of ``--model`` (on the CPU), and run.json's record of the file it came from
    (``{"path", "sha256"}`` of the bytes that were run or unpickled; None for a module)."""
    import importlib.util
    import os
    from pathlib import Path

    kind, where, name = _model_spec_kind(spec)
    if kind == "module":
        importlib.invalidate_caches()    # a module written since this process started
        with _on_sys_path(os.getcwd(), first=False):
            try:
                module = importlib.import_module(where)
            except ImportError as e:
                if isinstance(e, ModuleNotFoundError) and e.name and (
                        where == e.name or where.startswith(e.name + ".")):
                    raise _run_error(f"--model {spec}: no module named {e.name!r} (run from the "
                                     "folder that holds it, install it, or give FILE.py:FACTORY)"
                                     ) from None
                raise _run_error(f"--model {spec}: importing {where} raised {_one_line(e)}"
                                 f"{_where(e)}") from None
            except Exception as e:
                raise _run_error(f"--model {spec}: importing {where} raised {_one_line(e)}"
                                 f"{_where(e)}") from None
            _warn_if_passed_over(where, os.getcwd(), spec)
            return _call_factory(_factory(module, name, spec, where), spec), None
    path = Path(where)
    if not path.is_file():
        what = "folder, not a file" if path.is_dir() else "no such file"
        raise _run_error(f"--model {spec}: {path} is a {what}" if path.is_dir() else
                         f"--model {spec}: {what}: {path}")
    raw, record = _read_once(path)
    if kind == "file":
        import hashlib
        unique = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        mod_name = f"_deepresolve_model_{path.stem if path.stem.isidentifier() else 'file'}_{unique}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module    # dataclasses and pickle look classes up there
        with _on_sys_path(path.resolve().parent, first=True):
            try:     # the source run is the bytes hashed into run.json, not a second read
                # dont_inherit: not this file's `from __future__ import annotations`
                exec(compile(raw, str(path), "exec", dont_inherit=True), module.__dict__)
            except Exception as e:
                sys.modules.pop(mod_name, None)
                raise _run_error(f"--model {spec}: running {path} raised {_one_line(e)}"
                                 f"{_where(e, path)}") from None
            return _call_factory(_factory(module, name, spec, path.name), spec), record
    return _load_pickled_module(path, raw, allow_pickle), record


def _read_once(path):
    """The bytes of the file at ``path``, read once, and run.json's record of them:
    ``{"path": absolute path, "sha256": of these bytes}``. Everything the run uses is parsed
    from these bytes, so the record names what the numbers came from even if another process
    rewrites the file meanwhile (the file is held in memory while it is parsed)."""
    import hashlib
    from pathlib import Path

    raw = Path(path).read_bytes()
    return raw, {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(raw).hexdigest()}


def _torch_file_kind(raw):
    """What the bytes ``raw`` of a file are, without unpickling anything: "torchscript" (a
    torch.jit.save archive), "torch.save" (a zip archive with a pickle in it, or a pickle: the
    old format), or None (neither: an HDF5, an ONNX, a text file)."""
    import io
    import zipfile

    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch.save" if any(n.endswith("/data.pkl") for n in names) else None
    return "torch.save" if raw[:1] == b"\x80" else None   # pickle protocol >= 2


def _not_a_torch_file(flag, path, raw):
    """The SystemExit for a --model / --weights file (``raw``: its bytes) that torch.save did
    not write, or None."""
    kind = _torch_file_kind(raw)
    if kind == "torchscript":
        return _run_error(
            f"{flag} {path} is a TorchScript archive (torch.jit.save): DeepResolve hooks a layer "
            "of the Python module, which a ScriptModule does not allow. Build the model with "
            "--model FILE.py:FACTORY and give its weights as --weights, saved with "
            "torch.save(torch.jit.load(path).state_dict(), 'weights.pt')")
    if kind is None:
        return _run_error(
            f"{flag} {path} is not a file torch.save wrote (neither a zip archive holding "
            "data.pkl nor a pickle)" + (
                "; --model takes FILE.py:FACTORY, package.module:FACTORY or a torch.save'd "
                "module" if flag == "--model" else
                "; save the weights with torch.save(model.state_dict(), path)"))
    return None


def _load_pickled_module(path, raw, allow_pickle):
    """The nn.Module torch.save'd in ``path``, unpickled from its bytes ``raw``."""
    import io
    import pickle
    from collections.abc import Mapping

    import torch
    from torch import nn

    refused = _not_a_torch_file("--model", path, raw)   # before any torch.load, with or without
    if refused is not None:                         # --allow-pickle
        raise refused
    try:   # weights_only=True runs no code: it says what the file is, safely
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
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
    with _on_sys_path(os.getcwd(), path.resolve().parent, first=False):
        try:
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
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
    """Loads the state_dict in ``path`` into ``model``; returns run.json's record of the bytes
    read (``{"path", "sha256"}``)."""
    import io
    import pickle
    from collections.abc import Mapping
    from pathlib import Path

    import torch

    path = Path(path)
    if not path.is_file():
        raise _run_error(f"--weights: no such file: {path}")
    raw, record = _read_once(path)
    refused = _not_a_torch_file("--weights", path, raw)
    if refused is not None:
        raise refused
    try:
        sd = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
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
    return record


def _load_inputs(path, key):
    """The array of ``--inputs`` (numpy), and run.json's record of the bytes it was read from
    (``{"path", "sha256"}``)."""
    import io
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
    raw, record = _read_once(path)
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
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
    return arr, record


def _as_model_input(arr, model):
    """The inputs as a tensor: floats, bools and uint8 (one-hot sequences) in the model's float
    dtype, other integers (token ids) as int64."""
    import numpy as np
    import torch

    from .adapters import _model_float_dtype

    dtype = _model_float_dtype(model) or torch.float32
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


def _device(text):
    import torch

    try:
        dev = torch.device(text)
        torch.empty(1, device=dev)
    except (RuntimeError, ValueError, AssertionError, AttributeError) as e:
        raise _run_error(f"--device {text!r} cannot be used here: {_one_line(e)}") from None
    return dev


def run_from_args(args):
    with torch_threads(args.threads):
        return _run(args)


def _run(args):
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
    # run.json's SHA-256 of each file is of the very bytes parsed (each file is read once): a
    # file rewritten during a long run must not be recorded with bytes the numbers did not
    # come from
    hashes = {}
    arr, hashes["inputs"] = _load_inputs(args.inputs, args.inputs_key)
    device = _device(args.device)
    model, model_record = _load_model(args.model, args.allow_pickle)
    if model_record is not None:
        hashes["model"] = model_record
    if args.weights is not None:
        hashes["weights"] = _load_weights(model, args.weights)
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
    if out1.dim() == 0:
        raise _run_error("the model returns a 0-d tensor (one number for the whole batch); "
                         "DeepResolve needs one row per example, (N, n_outputs)")
    n_out = int(out1[0].numel())
    if n_out == 0:
        raise _run_error(f"the model returns no outputs (shape {tuple(out1.shape)} for one "
                         "example)")
    try:
        targets = args.target.resolve(n_out)
    except ValueError as e:
        raise _run_error(str(e)) from None
    plot_target = targets[0] if args.plot_target is None else args.plot_target
    if plot_target not in targets:
        raise _run_error(f"--plot-target {plot_target} is not one of --target {args.target.text}")
    names = _output_names(len(targets), args.no_plots)
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
    ascent = dict(l2=float(d.l2), l2_auto=d.l2_auto, n_starts=int(args.starts),
                  seed=int(d.settings["seed"]), device=str(device),
                  steps_median=float(np.median(d.steps)), steps_max=int(np.max(d.steps)),
                  converged=bool(np.all(d.converged)))
    s.settings.update(
        # weights_file, not weights: summarize's settings["weights"] is its weighting scheme
        model=args.model, weights_file=hashes.get("weights", {}).get("path"),
        inputs_file=hashes["inputs"]["path"], inputs_key=args.inputs_key, layer=args.layer,
        layer_input=bool(args.layer_input), **ascent, **made_with)

    writers = {"summary.npz": s.save}
    ofiv, table = _ofiv_tables(s, targets)
    writers["ofiv.csv"] = ofiv.to_csv
    writers["channels.csv"] = lambda p: table.to_csv(p, index=False)
    figures, figure_notes = [], {}
    try:
        if not args.no_plots:
            from functools import partial

            from .plot import save_figure
            t1 = time.perf_counter()
            figures, figure_notes = _run_figures(s, targets, targets.index(plot_target), args,
                                                 layer, say)
            for fname, fig in figures:
                writers[fname] = partial(save_figure, fig, formats="png")
            say(f"figures: {time.perf_counter() - t1:.1f} s")
        record = {
            "command": "deepresolve run",
            "arguments": {k: (v.text if isinstance(v, TargetList) else v)
                          for k, v in sorted(vars(args).items())
                          if not k.startswith("_") and k != "command"},
            "files": {k: hashes[k] for k in ("model", "weights", "inputs") if k in hashes},
            "model_class": (type(model).__qualname__ if model_record is not None else
                            f"{type(model).__module__}.{type(model).__qualname__}"),
            "n_outputs": n_out, "targets": targets,
            "inputs_shape": list(arr.shape), "inputs_dtype": str(arr.dtype), "n_channels": K,
            **ascent,
            "gmm_random_state": int(s.settings["random_state"]),
            "max_components": int(s.settings["max_components"]),
            **figure_notes,
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
        if figures:     # (--no-plots: matplotlib never imported)
            import matplotlib.pyplot as plt
            for _, fig in figures:
                plt.close(fig)
    stale = sorted(n for n in _OUTPUT_NAMES if n not in writers and (out / n).is_file())
    if stale:   # a figure of an earlier run beside this run's outputs would read as this run's
        import warnings
        warnings.warn(f"{out} still holds {', '.join(stale)} of an earlier run, left as it was "
                      "(this run does not write it)", UserWarning, stacklevel=2)
    say(f"wrote {', '.join(writers)} to {out} in {time.perf_counter() - t0:.1f} s"
        + replaced_note(replaced))
    return 0


def _output_names(n_targets, no_plots):
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


def _run_figures(s, targets, row, args, layer, say):
    """([(file name, Figure)], run.json entries): fig2.png, and ofiv.png and similarity.png for
    several targets; with similarity.png, ``similarity_order``: the outputs in the order its
    rows and columns are drawn (above 80 targets the figure has no labels to say it)."""
    import matplotlib
    matplotlib.use("Agg")   # the command line draws to files only
    import numpy as np
    from torch import nn

    from .clustering import hierarchical_clustering
    from .plot import MAX_OFIV_ROWS, plot_clustered_heatmap, plot_feature_importance, plot_ofiv
    from .similarity import class_similarity

    C, T, K = s.fiv.shape
    where = f"layer {args.layer}{' (input)' if args.layer_input else ''}"
    # the layer's own filters give Fig. 2's logos when it is a DNA convolution (4 input channels)
    filters = None
    if type(layer) is nn.Conv1d and not args.layer_input and layer.in_channels == 4 \
            and layer.groups == 1:
        filters = layer.weight.detach().cpu().float()
    figs, extra = [], {}
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
            clustering = hierarchical_clustering(sim)   # what the figure would compute
            figs.append(("similarity.png", plot_clustered_heatmap(
                sim, clustering=clustering, class_names=s.target_labels() if C <= 80 else None,
                title=f"class similarity at {where} (Pearson of OFIV >= 0)")))
            extra["similarity_order"] = [targets[i] for i in clustering.order]
    except BaseException:
        import matplotlib.pyplot as plt
        for _, fig in figs:
            plt.close(fig)
        raise
    return figs, extra


def main(argv=None):
    """``python -m deepresolve_captum.run_model ARGS`` is ``deepresolve run ARGS``: the same
    parser, one-line warnings, "interrupted" on Ctrl-C and no empty --out folder left by a
    failed run (``cli.main`` does those)."""
    from .cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
