"""Review 15b of the model-zoo workflow (zoo.py, zoo_summary.py, cli.py): each test here failed
on the code the review read (922584b). Tiny synthetic ENCODE-style models, except the last
test, which runs a handful of the real encode422 models (needs ../shared; skips without it,
fails under CI=true)."""
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepresolve_captum import cli
from deepresolve_captum.motifs import MotifSet
from deepresolve_captum.summary import EnsembleSummary
from deepresolve_captum.zoo import (EncodeTFModel, encode_models_folder, load_encode_model,
                                    load_encode_zoo, load_zoo)
from deepresolve_captum.zoo_summary import summarize_zoo, zoo_filter_table

REPO = Path(__file__).resolve().parents[1]
SHAPES = dict(conv_weight=(4, 4, 5), conv_bias=(4,), fc1_weight=(3, 4), fc1_bias=(3,),
              fc2_weight=(1, 3), fc2_bias=(1,))


def write_models(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in names:
        np.savez(folder / f"{n}.npz", **{k: rng.normal(size=v) for k, v in SHAPES.items()})


def small_zoo(n=3, seed=0):
    torch.manual_seed(seed)
    zoo = {f"m{i}": EncodeTFModel(n_filters=4, filter_len=5, n_hidden=6).eval() for i in range(n)}
    for m in zoo.values():
        with torch.no_grad():
            m.fc1.bias.uniform_(-0.5, 0.5)
    return zoo


# ------------------------------------------------------------------ F1: which folder was read
def test_models_in_a_folder_and_its_models_subfolder_are_refused_as_ambiguous(tmp_path, capsys):
    """FOLDER with 5 models and FOLDER/models with 2 others loaded the 2 in silence, and
    settings['models_folder'] recorded FOLDER."""
    flat = tmp_path / "flat"
    write_models(flat, ["a", "b", "c"])
    write_models(flat / "models", ["old1", "old2"], seed=1)
    with pytest.raises(ValueError, match=r"holds 3 ENCODE model file\(s\) and its models/ "
                                         r"subfolder 2 more"):
        load_encode_zoo(flat)
    with pytest.raises(SystemExit, match=r"deepresolve zoo: error: .*ambiguous. Pass "
                                         r".*flat/models"):
        cli.main(["zoo", str(flat), "--out", str(tmp_path / "out"), "--starts", "2"])
    assert not (tmp_path / "out").exists()
    # the encode422 layout: the folder read is printed and recorded
    data = tmp_path / "encode"
    write_models(data / "models", ["tfA", "tfB"])
    assert cli.main(["zoo", str(data), "--out", str(tmp_path / "o2"), "--starts", "2"]) == 0
    err = capsys.readouterr().err
    assert f"2 models loaded from {data / 'models'}" in err
    s = EnsembleSummary.load(tmp_path / "o2" / "summary.npz")
    assert s.settings["models_folder"] == str((data / "models").resolve())


# ------------------------------------------------------------------ F4: concurrent runs
def test_two_runs_writing_into_one_folder_at_once_never_mix(tmp_path, monkeypatch):
    """The temporary names were fixed: run A moved run B's half-written file into place, and
    failed (ofiv.csv held 'run B part 1 | run A part 2')."""
    out = tmp_path / "out"
    out.mkdir()
    errors, tmp_names = [], []

    def writer(run, slow):
        def write(path):
            tmp_names.append(path.name)
            with open(path, "w") as f:
                f.write(f"run {run} part 1 | ")
                f.flush()
                time.sleep(slow)
                f.write(f"run {run} part 2 |")
        return write

    def go(run, slow):
        try:
            cli.write_together(out, {n: writer(run, slow) for n in ("summary.txt", "ofiv.csv")})
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(f"run {run}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=go, args=("A", 0.3)),
               threading.Thread(target=go, args=("B", 0.05))]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    assert errors == []
    texts = {n: (out / n).read_text() for n in ("summary.txt", "ofiv.csv")}
    runs = {t.split()[1] for t in texts.values()}
    assert len(runs) == 1, texts                             # every file from one run
    assert all(t == f"run {t.split()[1]} part 1 | run {t.split()[1]} part 2 |"
               for t in texts.values()), texts               # each whole
    assert len(set(tmp_names)) == 4 and all(n.startswith(".") for n in tmp_names)
    assert sorted(p.name for p in out.iterdir()) == ["ofiv.csv", "summary.txt"]

    # the moves of two runs take turns: never A's first file with B's second
    import os
    real, order = os.replace, []

    def slow_replace(src, dst):
        order.append(Path(src).name.split(".")[1])   # the run's id
        time.sleep(0.05)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    threads = [threading.Thread(target=go, args=(r, 0.0)) for r in "CD"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert order[0] == order[1] and order[2] == order[3] and order[1] != order[2], order
    assert len({(out / n).read_text() for n in ("summary.txt", "ofiv.csv")}) == 1


# ------------------------------------------------------------------ F5: every bad file at once
def test_every_bad_file_is_named_in_one_error_and_skip_bad_leaves_them_out(tmp_path, capsys):
    folder = tmp_path / "zoo"
    write_models(folder, ["a", "c", "e"])
    (folder / "b_bad.npz").write_bytes(b"PK\x03\x04 truncated")
    (folder / "d_bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"2 of 5 model files .* could not be loaded "
                                         r"\(skip_bad=True leaves them out") as e:
        load_encode_zoo(folder)
    assert "b_bad.npz" in str(e.value) and "d_bad.npz" in str(e.value)
    with pytest.warns(RuntimeWarning, match=r"skipped 2 file\(s\)") as rec:
        zoo = load_encode_zoo(folder, skip_bad=True)
    assert list(zoo) == ["a", "c", "e"]
    assert "b_bad.npz" in str(rec[0].message) and "d_bad.npz" in str(rec[0].message)
    # one bad file: its own error, as before
    with pytest.raises(ValueError, match=r"b_bad\.npz: not a readable npz"):
        load_encode_zoo(folder, names=["a", "b_bad"])
    def unreadable(path):
        raise OSError("no access")

    with pytest.raises(ValueError, match=r"3 of 3 model files .* \(none loaded\)"):
        load_zoo(folder, unreadable, names=3, skip_bad=True)
    # the command line: every file named before any work, --skip-bad named in the error
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        cli.main(["zoo", str(folder), "--out", str(out), "--starts", "2"])
    assert "b_bad.npz" in str(e.value) and "d_bad.npz" in str(e.value)
    assert "--skip-bad leaves them out" in str(e.value) and not out.exists()
    (folder / "d_bad.npz").unlink()
    with pytest.raises(SystemExit, match=r"b_bad\.npz.* \(--skip-bad leaves out"):
        cli.main(["zoo", str(folder), "--out", str(out), "--starts", "2"])
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match=r"(?s)--skip-bad: left out 1 file\(s\).*b_bad\.npz"):
        assert cli.main(["zoo", str(folder), "--out", str(out), "--starts", "2", "--skip-bad",
                         "--quiet"]) == 0
    s = EnsembleSummary.load(out / "summary.npz")
    assert s.settings["models"] == ["a", "c", "e"] and list(s.settings["skipped"]) == ["b_bad.npz"]


# ------------------------------------------------------------------ F7: python -m ...cli
def test_python_m_cli_removes_the_folders_a_failed_run_made(tmp_path):
    write_models(tmp_path / "m", ["tfA"])
    out = tmp_path / "new" / "deeper"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "deepresolve_captum.cli", "zoo", str(tmp_path / "m"),
                        "--out", str(out), "--starts", "2", "--l2", "1e-30", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "deepresolve zoo: error: non-finite" in p.stderr, p.stderr
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ F10: a folder or broken link named *.npz
def test_a_folder_or_a_broken_link_named_npz_is_said_to_be_one(tmp_path):
    (tmp_path / "zz_dir.npz").mkdir()
    with pytest.raises(IsADirectoryError, match=r"zz_dir\.npz is a folder, not a model file"):
        load_encode_model(tmp_path / "zz_dir.npz")
    (tmp_path / "link.npz").symlink_to(tmp_path / "gone.npz")
    with pytest.raises(FileNotFoundError, match=r"link\.npz is a broken symbolic link \(to "
                                                r".*gone\.npz"):
        load_encode_model(tmp_path / "link.npz")
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_encode_model(tmp_path / "absent.npz")
