"""Model architectures used in the paper (and loaders for trained zoos).

Every network here returns pre-sigmoid logits of shape (N, n_outputs) and uses module
nonlinearities (``nn.ReLU``), so that Captum and tangermeme's DeepLIFT rules see them.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["PaperCNN", "EncodeTFModel", "DeepSEA", "keras_init_", "load_encode_model", "load_zoo",
           "load_encode_zoo", "encode_models_folder", "BlockLinear", "EncodeZooHeads", "EncodeZooStack", "HEAD_LAYERS"]


def _check_seq_len(model, seq_len, stages, what):
    """ValueError unless ``seq_len`` leaves at least one position after ``stages``, a sequence of
    (convolution width, pooling) applied in order (valid convolutions, floor pooling)."""
    smallest = 1
    for k, p in reversed(stages):  # the shortest input giving `smallest` outputs of this stage
        smallest = p * smallest + k - 1
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len < smallest:
        raise ValueError(f"{model}: seq_len must be an integer >= {smallest} (the shortest input "
                         f"that leaves one position after {what}), got {seq_len!r}")


class PaperCNN(nn.Module):
    """The synthetic-data CNN of the paper: Conv1d(4, 32, 8) -> ReLU -> MaxPool1d(4) -> Linear(64)
    -> ReLU -> Linear(n_outputs).

    DeepResolve's layer is ``model.pool`` (output (N, n_filters, W), W = (seq_len - filter_len + 1) // pool).

    The paper describes the set II network without a pooling layer ("a single convolutional
    layer that has 32 8bp long filters, one fully connected layer with 64 hidden neurons");
    we use the set I architecture, max-pooling of stride 4 included, for both sets, so that
    both are analysed at the same pooled layer (``pool=1`` gives a network without pooling).

    Parameters
    ----------
    n_outputs: 1 for synthetic set I, 4 for set II.
    seq_len: input length L of the one-hot (N, 4, L) sequences, at least filter_len + pool - 1
        (11 by default: one pooled position).
    n_filters: convolution filters (channels of ``model.pool``), 32 in the paper.
    filter_len: filter width in bp, 8 in the paper.
    pool: max-pooling width and stride, 4 (1: no pooling).
    n_hidden: units of the hidden dense layer ``fc1``, 64 in the paper.
    """

    def __init__(self, n_outputs=1, seq_len=100, n_filters=32, filter_len=8, pool=4, n_hidden=64):
        super().__init__()
        _check_seq_len("PaperCNN", seq_len, ((filter_len, pool),),
                       f"filter_len {filter_len} and pool {pool}")
        self.seq_len = seq_len
        self.conv = nn.Conv1d(4, n_filters, filter_len)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool1d(pool, pool)
        self.flatten = nn.Flatten()
        width = (seq_len - filter_len + 1) // pool
        self.fc1 = nn.Linear(n_filters * width, n_hidden)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(n_hidden, n_outputs)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))
        return self.fc2(self.relu2(self.fc1(self.flatten(x))))


class EncodeTFModel(nn.Module):
    """The ENCODE single-TF CNN of the paper (the authors' 422 models): one-hot (N, 4, 101) ->
    Conv1d(4, 16, 25, padding=12) -> ReLU -> global max -> Linear(16, 32) -> ReLU -> Dropout ->
    Linear(32, 1) = the logit.

    DeepResolve's H is the *input* of ``model.fc1`` (16 values): use
    ``attribute_to_layer_input=True`` with ``layer=model.fc1``, or ``layer=model.flatten``.

    The convolution pads ``filter_len // 2`` on both sides: "same" for odd widths (all the
    authors' models are 25 wide). An even width gives L + 1 positions, one more window than
    Keras's "same" would; global max-pooling follows, so only that edge window differs.

    Parameters
    ----------
    n_filters: convolution filters K (16 in the authors' models): the width of DeepResolve's H.
    filter_len: filter width in bp (25).
    n_hidden: units of ``fc1`` (32).
    dropout: dropout probability after ``fc1`` (0.1; active in train mode only).
    """

    def __init__(self, n_filters=16, filter_len=25, n_hidden=32, dropout=0.1):
        super().__init__()
        self.conv = nn.Conv1d(4, n_filters, filter_len, padding=filter_len // 2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(n_filters, n_hidden)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(n_hidden, 1)

    def forward(self, x):
        x = self.flatten(self.pool(self.relu(self.conv(x))))
        return self.fc2(self.dropout(self.relu2(self.fc1(x))))


class DeepSEA(nn.Module):
    """DeepSEA (Zhou & Troyanskaya 2015) without the final sigmoid: (N, 4, 1000) -> (N, 919) logits.

    The paper analyses the input of the third convolution: ``layer=model.conv3`` with
    ``attribute_to_layer_input=True`` (480 channels x 60 positions at 1000 bp).

    ``seq_len`` must be at least 163: three width-8 convolutions and two 4-wide poolings leave
    one position there.

    Parameters
    ----------
    n_outputs: outputs of the last layer (919 chromatin features in DeepSEA).
    seq_len: input length L of the one-hot (N, 4, L) sequences (1000 in DeepSEA), >= 163.
    """

    #: (convolution width, pooling) of each stage, input to output
    _STAGES = ((8, 4), (8, 4), (8, 1))

    def __init__(self, n_outputs=919, seq_len=1000):
        super().__init__()
        _check_seq_len("DeepSEA", seq_len, self._STAGES, "its three width-8 convolutions and "
                       "two 4-wide poolings")
        self.conv1 = nn.Conv1d(4, 320, 8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool1d(4, 4)
        self.drop1 = nn.Dropout(0.2)
        self.conv2 = nn.Conv1d(320, 480, 8)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool1d(4, 4)
        self.drop2 = nn.Dropout(0.2)
        self.conv3 = nn.Conv1d(480, 960, 8)
        self.relu3 = nn.ReLU()
        self.drop3 = nn.Dropout(0.5)
        w = seq_len
        for k, p in self._STAGES:
            w = (w - k + 1) // p
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(960 * w, 925)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(925, n_outputs)

    def forward(self, x):
        x = self.drop1(self.pool1(self.relu1(self.conv1(x))))
        x = self.drop2(self.pool2(self.relu2(self.conv2(x))))
        x = self.drop3(self.relu3(self.conv3(x)))
        return self.fc2(self.relu4(self.fc1(self.flatten(x))))


@torch.no_grad()
def keras_init_(model):
    """Initialise like Keras 1.2 did for the paper's models: glorot_uniform weights, zero biases.

    PyTorch's default (kaiming-uniform with a=sqrt(5)) often makes the synthetic XOR be learned as
    "positive by default, vetoed" instead of as two opposed detectors, and then DeepResolve has
    no XOR modes to find. Returns model.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                m.bias.zero_()
    return model


# ---------------------------------------------------------------------------------------------
# Loaders for trained zoos (the DeepResolve authors' ENCODE TF models, or any folder of weights)
# ---------------------------------------------------------------------------------------------

_ENCODE_KEYS = ("conv_weight", "conv_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")


def load_encode_model(path, eval=True):
    """Load one of the authors' ENCODE TF models from its npz file into an :class:`EncodeTFModel`.

    The npz holds PyTorch-layout arrays (kernels already flipped from Theano's true convolution):
    ``conv_weight`` (16, 4, 25), ``conv_bias`` (16,), ``fc1_weight`` (32, 16), ``fc1_bias`` (32,),
    ``fc2_weight`` (1, 32), ``fc2_bias`` (1,) and the scalar ``dropout``. Sizes are read from the
    arrays, so other filter counts or widths load too.

    Parameters
    ----------
    path: str or Path to the ``.npz`` file.
    eval: put the model in eval mode (dropout off). Default True.

    Returns
    -------
    EncodeTFModel with float32 parameters; ``model(x)`` maps one-hot (N, 4, L) to logits (N, 1).
    """
    import numpy as np
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, not a model file")
        if path.is_symlink():   # a link whose target is gone (or a loop)
            import os
            raise FileNotFoundError(f"{path} is a broken symbolic link (to "
                                    f"{os.readlink(path)}, which does not exist)")
        raise FileNotFoundError(f"no such model file: {path}")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise ValueError(f"{path}: a git-lfs pointer, not the model; fetch it with `git lfs pull`")
    if not head.startswith(b"PK"):
        raise ValueError(f"{path}: not an npz file (an npz is a zip archive; this one starts with "
                         f"{head[:16]!r})")
    try:  # our own handle: np.load leaves the one it opens unclosed when the zip is broken
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # truncated, object arrays, ...
        why = ("it holds Python objects (pickled arrays); save plain numeric arrays"
               if isinstance(e, ValueError) and "pickle" in str(e) else "a truncated download?")
        raise ValueError(f"{path}: not a readable npz file ({type(e).__name__}: {e}); {why}"
                         ) from e
    missing = [k for k in _ENCODE_KEYS if k not in data]
    if missing and {"ofiv", "fiv", "settings"} <= set(data):
        raise ValueError(f"{path}: a DeepResolve summary (EnsembleSummary.save, e.g. an earlier "
                         "'deepresolve zoo' output), not a model: move it out of the models "
                         "folder")
    if missing:
        raise ValueError(f"{path.name}: not an ENCODE TF model npz, missing {missing}")
    arrays = {k: np.asarray(data[k], dtype=np.float32) for k in _ENCODE_KEYS}
    dropout = np.asarray(data.get("dropout", 0.1))
    bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"{path.name}: non-finite values in {bad}")
    if dropout.shape != () or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{path.name}: 'dropout' must be one number in [0, 1), got {dropout!r}")
    dropout = float(dropout)
    if arrays["conv_weight"].ndim != 3:
        raise ValueError(f"{path.name}: conv_weight must be (n_filters, 4, width), got "
                         f"{arrays['conv_weight'].shape}")
    if arrays["fc1_weight"].ndim != 2:
        raise ValueError(f"{path.name}: fc1_weight must be (n_hidden, n_filters), got "
                         f"{arrays['fc1_weight'].shape}")
    n_filters, n_alpha, filter_len = arrays["conv_weight"].shape
    n_hidden = arrays["fc1_weight"].shape[0]
    expected = {"conv_weight": (n_filters, 4, filter_len), "conv_bias": (n_filters,),
                "fc1_weight": (n_hidden, n_filters), "fc1_bias": (n_hidden,),
                "fc2_weight": (1, n_hidden), "fc2_bias": (1,)}
    wrong = {k: v.shape for k, v in arrays.items() if v.shape != expected[k]}
    if wrong:    # every shape here: load_state_dict's RuntimeError would name one at a time
        raise ValueError(f"{path.name}: inconsistent shapes {wrong}, expected "
                         f"{ {k: expected[k] for k in wrong} } (from conv_weight "
                         f"{arrays['conv_weight'].shape} and fc1_weight "
                         f"{arrays['fc1_weight'].shape})")
    model = EncodeTFModel(n_filters=n_filters, filter_len=filter_len, n_hidden=n_hidden,
                          dropout=dropout)
    state = {k.replace("_weight", ".weight").replace("_bias", ".bias"): torch.from_numpy(v)
             for k, v in arrays.items()}
    model.load_state_dict(state)
    model.name = path.stem
    return model.eval() if eval else model


def load_zoo(folder, loader, names=None, pattern="*.npz", verbose=False, skip_bad=False):
    """Load many models from a folder with one call.

    Parameters
    ----------
    folder: directory holding one file per model.
    loader: callable ``loader(path) -> nn.Module`` (e.g. :func:`load_encode_model`). Anything
        else it returns (None, a state dict, ...) raises TypeError naming the file.
    names: optional list of distinct model names, in the order wanted, or an int n >= 1 for the
        first n files in sorted order; None loads every file matching ``pattern``. A name is a
        key this function returns (the file's stem), the file's name, or, for a pattern
        ``"*SUFFIX"``, the name without SUFFIX: with ``pattern="*_model.pt"``, ``"a_model"``,
        ``"a_model.pt"`` and ``"a"`` all mean ``a_model.pt`` (key ``"a_model"``). A name that
        could mean two files raises ValueError naming both; names that match no file raise
        FileNotFoundError naming them.
    pattern: glob for the model files. Default ``"*.npz"``. Hidden files (``.name``, e.g. a
        temporary file a killed writer left) are skipped unless ``pattern`` starts with ".".
    verbose: tqdm progress bar.
    skip_bad: what a file that fails to load does. False (default): every file is tried, then
        one ValueError names each that failed (all of them, up to 20 lines), whatever the
        loader raised: with one bad file, that file's own error (the loader's exception is its
        ``__cause__``, unless it was a ValueError naming the file: that one is raised as it
        is). True: the bad files are left out and one RuntimeWarning names them; a ValueError
        only when no file loads.

    Returns
    -------
    dict name -> model, name = the file's stem (``Path(file).stem``), in the order of ``names``
    (or sorted file order).
    """
    import warnings

    models, bad = _load_zoo(folder, loader, names=names, pattern=pattern, verbose=verbose,
                            skip_bad=skip_bad)
    if bad:
        warnings.warn(_skipped_text(bad), RuntimeWarning, stacklevel=2)
    return models


#: lines of bad files an error or warning of load_zoo lists before "... and N more"
_BAD_SHOWN = 20


def _skipped_text(bad):
    """The warning of ``load_zoo(..., skip_bad=True)``: each file left out and why."""
    return (f"skipped {len(bad)} file(s) that could not be loaded:\n"
            + _bad_lines(bad))


def _bad_lines(bad):
    lines = [f"  {name}: {why}" for name, why in list(bad.items())[:_BAD_SHOWN]]
    if len(bad) > _BAD_SHOWN:
        lines.append(f"  ... and {len(bad) - _BAD_SHOWN} more")
    return "\n".join(lines)


def _load_zoo(folder, loader, names=None, pattern="*.npz", verbose=False, skip_bad=False):
    """load_zoo's work: (dict name -> model, {file name: why it failed} of the files left out
    with ``skip_bad``)."""
    from pathlib import Path

    import numpy as np
    from tqdm.auto import tqdm

    folder = Path(folder)
    if folder.is_file():
        raise NotADirectoryError(f"{folder} is a file, not a folder of models (one model: "
                                 f"{getattr(loader, '__name__', 'its loader')}(path))")
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    hidden_ok = pattern.startswith(".")   # hidden files only when the pattern asks for them
    files = sorted(f for f in folder.glob(pattern) if hidden_ok or not f.name.startswith("."))
    # pattern "*SUFFIX" (no other wildcard): a name may leave SUFFIX out
    suffix = pattern[1:] if pattern.startswith("*") and not any(c in pattern[1:] for c in "*?[") else ""
    if isinstance(names, (bool, np.bool_, str, bytes)):
        raise TypeError(f"names must be a list of model names, an int or None, not {names!r}")
    if isinstance(names, (int, np.integer)):
        if names < 1:
            raise ValueError(f"names as an int is how many models to load (>= 1), got {names}")
        files = files[:int(names)]
    elif names is not None:
        names = [str(n) for n in names]
        if not names:
            raise ValueError("names is empty")
        meaning = {}  # every way of naming a file of the pattern -> the files so named
        for f in files:
            keys = {f.stem, f.name}
            if suffix and f.name.endswith(suffix):
                keys.add(f.name[:-len(suffix)])
            for k in keys:
                meaning.setdefault(k, []).append(f)
        chosen, absent = [], []
        for n in names:
            found = meaning.get(n)
            if found is None:  # a path the pattern does not list (e.g. "sub/x"): as before
                f = folder / (n if suffix and n.endswith(suffix) else f"{n}{suffix}")
                if not f.is_file():
                    absent.append(f.name)
                found = [f]
            if len(found) > 1:
                raise ValueError(f"names: {n!r} could mean {[f.name for f in found]} in {folder}; "
                                 f"give the file name")
            chosen.append(found[0])
        if absent:
            raise FileNotFoundError(f"{len(absent)} model(s) not in {folder}: {absent[:5]}")
        files = chosen
        repeated = sorted({f.stem for f in files if files.count(f) > 1})
        if repeated:  # a dict keeps one: results would no longer line up with the caller's list
            raise ValueError(f"names lists {len(repeated)} model(s) more than once (with or "
                             f"without the file suffix): {repeated[:5]}")
    if not files:
        raise ValueError(f"no files matching {pattern!r} in {folder}")
    stems = {}
    for f in files:
        stems.setdefault(f.stem, []).append(f.name)
    clash = [v for v in stems.values() if len(v) > 1]
    if clash:  # e.g. pattern "*" over a.npz and a.pt: one key, one model would be lost
        raise ValueError(f"files with one name but different extensions would load as one model: "
                         f"{clash[:3]}; narrow pattern")
    models, failed = {}, {}   # failed: file name -> a ValueError naming the file
    for f in tqdm(files, disable=not verbose, desc="loading models"):
        try:
            model = loader(f)
        except Exception as e:  # a ValueError naming the file, the loader's error its cause
            if isinstance(e, ValueError) and f.name in str(e):
                failed[f.name] = e   # already one (load_encode_model's): not wrapped again
            else:
                err = ValueError(f"could not load {f}: {type(e).__name__}: {e}")
                err.__cause__ = e
                failed[f.name] = err
            continue
        if not isinstance(model, nn.Module):   # the loader's fault, the same for every file
            raise TypeError(f"loader returned {type(model).__name__} for {f}, not an nn.Module "
                            f"(a loader must build the model, e.g. load a state dict into one)")
        models[f.stem] = model
    if failed and (not skip_bad or not models):
        first = next(iter(failed.values()))
        if len(failed) > 1:
            hint = ("none loaded" if not models else
                    "skip_bad=True leaves them out and loads the others")
            err = ValueError(f"{len(failed)} of {len(files)} model files in {folder} could not "
                             f"be loaded ({hint}):\n"
                             + _bad_lines({n: str(e) for n, e in failed.items()}))
            err.__cause__ = first.__cause__ or first
            first = err
        # for a caller that offers a way past them (deepresolve zoo --skip-bad)
        first.deepresolve_bad_files = list(failed)
        raise first
    return models, {n: str(e) for n, e in failed.items()}


def load_encode_zoo(folder, names=None, verbose=False, skip_bad=False):
    """Load the authors' ENCODE TF models from a folder (``encode422/`` or its ``models/``).

    Parameters
    ----------
    folder: the ``encode422`` data folder (with ``models/`` inside) or the ``models`` folder itself.
    names: list of model names (ENCODE track names, as in ``models.csv``), an int n for the first n,
        or None for all (276 in ``../shared/data/encode422``).
    verbose: tqdm progress bar.
    skip_bad: as in :func:`load_zoo` (False: one ValueError naming every file that fails to
        load; True: they are left out, named in a RuntimeWarning).

    Returns
    -------
    dict name -> EncodeTFModel in eval mode. Loading all 276 takes well under a second or two.
    """
    return load_zoo(encode_models_folder(folder), load_encode_model, names=names, verbose=verbose,
                    skip_bad=skip_bad)


def encode_models_folder(folder):
    """The folder of model files: ``folder/models`` when it holds model files (the ``encode422``
    layout, with ``models.csv`` beside it), else ``folder`` itself. -> pathlib.Path.

    ``models/`` counts when one of its ``.npz`` files is an ENCODE model (its zip directory
    lists ``conv_weight``, ``fc1_weight``, ...), or when ``folder`` itself holds no ``.npz`` but
    ``models/`` does (so that loading names the files it cannot read). So a flat folder of
    models whose ``models/`` subfolder holds other things (an earlier ``deepresolve zoo FOLDER
    --out FOLDER/models``, the example's ``channel_pwms.npz``) stays the models folder. Hidden
    files (``.name``) are not model files.

    When ``folder`` itself and ``models/`` both hold ENCODE models (a flat folder of models
    with an older set, or someone else's, in ``models/``), which set is meant cannot be told:
    ValueError with both counts (pass ``folder/models``, or move one set away)."""
    from pathlib import Path

    folder = Path(folder)
    sub = folder / "models"
    if not sub.is_dir():
        return folder
    candidates = _npz_files(sub)
    if any(_is_encode_npz(f) for f in candidates):
        here = _npz_files(folder)
        if any(_is_encode_npz(f) for f in here):
            n_here = sum(map(_is_encode_npz, here))
            n_sub = sum(map(_is_encode_npz, candidates))
            raise ValueError(
                f"{folder} holds {n_here} ENCODE model file(s) and its models/ subfolder "
                f"{n_sub} more: which set is meant is ambiguous. Pass {sub} for the subfolder's "
                "models, or move one set away (the folder's own models are read only when "
                "models/ holds none)")
        return sub
    return sub if candidates and not _npz_files(folder) else folder


def _npz_files(folder):
    return [f for f in sorted(folder.glob("*.npz")) if not f.name.startswith(".")]


def _zip_names(path):
    """The member names of an npz (its zip directory only), or None when it is not readable."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return set(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def _is_encode_npz(path):
    names = _zip_names(path)
    return names is not None and {f"{k}.npy" for k in _ENCODE_KEYS} <= names


class BlockLinear(nn.Module):
    """M independent ``Linear(in_features, out_features)`` layers applied block-wise:
    (N, M * in_features) -> (N, M * out_features). Weight (M, out, in), bias (M, out)."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())

    @classmethod
    def stack(cls, linears):
        """M ``nn.Linear`` of one shape as one BlockLinear (their weights copied)."""
        return cls(torch.stack([l.weight for l in linears]), torch.stack([l.bias for l in linears]))

    def forward(self, x):
        M, out_f, in_f = self.weight.shape
        y = torch.einsum("nmi,moi->nmo", x.reshape(x.shape[0], M, in_f), self.weight) + self.bias
        return y.reshape(x.shape[0], M * out_f)


#: The layers whose shapes the batched heads of a zoo must share (``EncodeZooHeads``).
HEAD_LAYERS = ("fc1", "fc2")


def _same_shape_models(models, layers):
    """models (dict name -> EncodeTFModel, or a list) as a list, checked non-empty, with one
    weight shape in each of ``layers`` and one dtype and device for their parameters; otherwise
    ValueError naming the models of each shape (or dtype and device)."""
    named = dict(models) if isinstance(models, dict) else dict(enumerate(models))
    if not named or not all(isinstance(m, EncodeTFModel) for m in named.values()):
        raise TypeError("models must be a non-empty list (or dict) of EncodeTFModel")
    groups = {}
    for name, m in named.items():
        groups.setdefault(tuple(tuple(getattr(m, l).weight.shape) for l in layers), []).append(name)
    if len(groups) > 1:
        def describe(shapes):  # weight (out, in[, width]) as "in -> out"
            return ", ".join(f"{l} {w[1]} -> {w[0]}" + (f" (width {w[2]})" if len(w) > 2 else "")
                             for l, w in zip(layers, shapes))
        parts = "; ".join(
            f"{len(v)} with {describe(k)} ({', '.join(map(str, v[:3]))}{', ...' if len(v) > 3 else ''})"
            for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1])))
        raise ValueError(f"the models differ in shape: {parts}. Use models of one shape (choose "
                         "them by name)")
    # the stacked layers are built with one dtype on one device: a float64 model among float32
    # ones (or one on another device) would fail deep in the forward
    kinds = {}
    for name, m in named.items():
        kind = sorted({(str(p.dtype).replace("torch.", ""), str(p.device))
                       for l in layers for p in getattr(m, l).parameters()})
        kinds.setdefault(" + ".join(f"{d} on {v}" for d, v in kind), []).append(name)
    if len(kinds) > 1:
        parts = "; ".join(
            f"{len(v)} with {k} ({', '.join(map(str, v[:3]))}{', ...' if len(v) > 3 else ''})"
            for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
        raise ValueError(f"the models differ in dtype or device: {parts}. Move them to one, e.g. "
                         "`for m in zoo.values(): m.to(torch.float32)`")
    return list(named.values())


class EncodeZooHeads(nn.Module):
    """The dense heads (fc1 -> ReLU -> fc2) of many :class:`EncodeTFModel` as one network on a
    shared input (submodules ``input``, ``fc1`` = every model's fc1 as one ``Linear(K, M *
    hidden)``, ``relu2``, ``fc2`` (:class:`BlockLinear`)): ``forward(h)`` takes fc1-input values h (N, K) (K pooled filter activations)
    and returns (N, M), column m = model m's logit for h. DeepResolve at ``input`` (an
    ``nn.Identity``, its value is H) with target m then optimises model m alone: one row per
    (model, start), each with its own step control, so a model's result does not depend on the
    other models of the zoo (:func:`zoo_summary.summarize_zoo`). The heads take the models'
    dtype and device (the models must share them: ValueError naming the odd ones otherwise).
    """

    def __init__(self, models):
        super().__init__()
        models = _same_shape_models(models, HEAD_LAYERS)
        self.n_models = len(models)
        self.n_filters = models[0].fc1.weight.shape[1]
        self.input = nn.Identity()
        # every model's fc1 reads the same h: one Linear(K, M * hidden), rows model by model
        w1 = torch.cat([m.fc1.weight for m in models])
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], dtype=w1.dtype, device=w1.device)
        with torch.no_grad():
            self.fc1.weight.copy_(w1)
            self.fc1.bias.copy_(torch.cat([m.fc1.bias for m in models]))
        self.relu2 = nn.ReLU()
        self.fc2 = BlockLinear.stack([m.fc2 for m in models])

    def forward(self, h):
        h = self.input(h)
        if h.dim() != 2 or h.shape[1] != self.n_filters:
            raise ValueError(f"EncodeZooHeads takes fc1-input values (N, {self.n_filters}), got "
                             f"{tuple(h.shape)}")
        return self.fc2(self.relu2(self.fc1(h)))


class EncodeZooStack(nn.Module):
    """Many :class:`EncodeTFModel` (same filter count and width) as one network: one forward
    of a sequence batch gives every model's logit (e.g. to score sequences with a whole zoo).

    ``forward(x)``: one-hot (N, 4, L) -> (N, M) logits, column m = model m's logit (exactly).
    With ``sum_outputs=True`` it returns their sum (N, 1) instead, an experiment in one joint
    ascent: DeepResolve's objective is separable, sum_m [S_m(H_m) - l2 ||H_m||^2], so one
    ascent of ``fc1``'s input (N, M * 16) climbs every model's H_m together; read the
    per-model class scores of the result with :meth:`head_scores`. Its results are *not* each
    model's own DeepResolve result: a start is one draw of all M * 16 values (not each model's
    own draws) and the stopping rule is shared by the models (one model's slow convergence
    keeps the others stepping), so the FIVs differ from a single-model run (8 ENCODE models,
    T = 10: up to 0.08, top filters and categories unchanged). For per-model results of a zoo
    use :func:`zoo_summary.summarize_zoo` (equal to single-model runs up to rounding).
    Submodules: ``conv`` (every model's filters in one
    ``Conv1d(4, M * 16)``: they all read the same sequence), ``relu``, ``pool``,
    ``flatten``, ``fc1`` (:class:`BlockLinear`), ``relu2``, ``fc2`` (:class:`BlockLinear`),
    all with the models' dtype and device (which the models must share).
    """

    def __init__(self, models, sum_outputs=False):
        super().__init__()
        models = _same_shape_models(models, ("conv", "fc1"))
        self.n_models = M = len(models)
        k, _, w = models[0].conv.weight.shape
        self.n_filters = k
        self.sum_outputs = sum_outputs
        w0 = models[0].conv.weight
        self.conv = nn.Conv1d(4, k * M, w, padding=models[0].conv.padding, dtype=w0.dtype,
                              device=w0.device)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([m.conv.weight for m in models]))
            self.conv.bias.copy_(torch.cat([m.conv.bias for m in models]))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.flatten = nn.Flatten()
        self.fc1 = BlockLinear.stack([m.fc1 for m in models])
        self.relu2 = nn.ReLU()
        self.fc2 = BlockLinear.stack([m.fc2 for m in models])

    def head_scores(self, h):
        """Per-model logits from fc1-input values h (..., M * n_filters) -> (..., M)."""
        lead = h.shape[:-1]
        out = self.fc2(self.relu2(self.fc1(h.reshape(-1, h.shape[-1]))))
        return out.reshape(*lead, self.n_models)

    def forward(self, x):
        x = self.flatten(self.pool(self.relu(self.conv(x))))
        out = self.fc2(self.relu2(self.fc1(x)))
        return out.sum(1, keepdim=True) if self.sum_outputs else out
