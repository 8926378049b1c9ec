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
