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


# ------------------------------------------------------------------ F2: convergence per model
def test_models_that_did_not_converge_are_named_and_recorded(tmp_path):
    zoo = small_zoo(4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = summarize_zoo(zoo, n_starts=3, max_steps=2, group_size=2, seed=0)
    texts = [str(w.message) for w in rec]
    mine = [t for t in texts if "stopped at max_steps=2" in t]
    assert len(mine) == 1, texts                       # one warning, not one per group
    assert mine[0].startswith("4 of 4 model(s) have starts that stopped at max_steps=2")
    assert "m0 (3 of 3 starts)" in mine[0] and "deepresolve zoo --max-steps" in mine[0]
    assert not any("self.diagnostics" in t for t in texts)   # an object the user never sees
    assert s.settings["max_steps"] == 2 and s.settings["converged"] is False
    assert s.settings["model_converged"] == [False] * 4
    assert s.settings["model_open_starts"] == [3] * 4 and s.settings["model_steps_max"] == [2] * 4
    ok = summarize_zoo(zoo, n_starts=3, seed=0)
    assert ok.settings["model_converged"] == [True] * 4 and ok.settings["model_open_starts"] == [0] * 4
    assert max(ok.settings["model_steps_max"]) == ok.settings["steps_max"]
    assert zoo_filter_table(s, zoo, top=1)["converged"].tolist() == [False] * 4
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        summarize_zoo(zoo, max_steps=0)
    # the command line: --max-steps, recorded, and filters.csv's converged column
    write_models(tmp_path / "m", ["tfA", "tfB"])
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match=r"2 of 2 model\(s\) .*tfA \(2 of 2 starts\)"):
        assert cli.main(["zoo", str(tmp_path / "m"), "--out", str(out), "--starts", "2",
                         "--max-steps", "1", "--quiet"]) == 0
    assert EnsembleSummary.load(out / "summary.npz").settings["max_steps"] == 1
    assert pd.read_csv(out / "filters.csv")["converged"].tolist() == [False] * 6


# ------------------------------------------------------------------ F3: errors name the model
def test_ascent_errors_name_the_model_not_its_position_in_the_group():
    zoo = small_zoo(4)
    with torch.no_grad():
        zoo["m3"].fc2.weight.mul_(1e38)
        zoo["m3"].fc1.bias.fill_(1.0)
    with pytest.raises(ValueError, match=r"non-finite class score during the ascent "
                                         r"\(model m3, start 0\)") as e:
        summarize_zoo(zoo, n_starts=2, group_size=2)
    assert "target" not in str(e.value) and isinstance(e.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="l2"):   # an argument error passes as it was
        summarize_zoo(zoo, l2=-1.0)


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


def test_a_folder_that_cannot_be_locked_is_warned_once(tmp_path, monkeypatch):
    """Review 15 r1 m5: on NFS, flock on the folder fails (EBADF: NFS emulates flock with POSIX
    locks, which need a file opened for writing) and the moves ran unlocked in silence, so two
    runs into one --out could end with files of both. Now one RuntimeWarning per folder says
    so; the files are written as before. Without fcntl (Windows) likewise; a folder that locks
    gives no warning."""
    import errno
    import fcntl

    def write(path):
        Path(path).write_text("x")

    def refuse(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    def runs(folder, names):
        folder.mkdir()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for n in range(1, len(names) + 1):
                cli.write_together(folder, {name: write for name in names[:n]})
        assert sorted(p.name for p in folder.iterdir()) == sorted(names)
        return [w for w in rec if "serialised" in str(w.message)]

    assert runs(tmp_path / "local", ["a.txt", "b.txt"]) == []
    with monkeypatch.context() as mp:
        mp.setattr(fcntl, "flock", refuse)
        nfs = runs(tmp_path / "nfs", ["a.txt", "b.txt", "c.txt"])
    assert len(nfs) == 1 and nfs[0].category is RuntimeWarning, [str(w.message) for w in nfs]
    text = str(nfs[0].message)
    assert str(tmp_path / "nfs") in text and "Bad file descriptor" in text
    assert "runs writing into this folder at the same time are not serialised" in text
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "fcntl", None)          # import fcntl: ImportError
        windows = runs(tmp_path / "win", ["a.txt", "b.txt"])
    assert len(windows) == 1 and "no fcntl" in str(windows[0].message)
    assert "not serialised" in (cli._folder_lock.__doc__ or "")   # the docstring says it


_KILLED_WRITE = """
import importlib.util, os, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("cli_alone", sys.argv[1])   # without torch: fast
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)
def whole(path): Path(path).write_text("x" * 1000)
def killed(path): Path(path).write_text("half"); os._exit(137)   # SIGKILL, the OOM killer
cli.write_together(Path(sys.argv[2]), {"summary.npz": whole, "ofiv.csv": killed})
"""


def test_partial_files_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    """Review 15 r1 n1: each run's temporary files have their own names, so a run killed while
    writing (no clean-up runs) left its .PID-....partial.* files for good (a big zoo's
    summary.npz: hundreds of MB each time). The next write into the folder removes them when
    their PID is no running process of this host, and touches nothing else."""
    out = tmp_path / "out"
    out.mkdir()

    def killed_run():
        p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITE,
                              str(REPO / "deepresolve_captum" / "cli.py"), str(out)])
        assert p.wait(timeout=60) == 137
        return p.pid            # reaped: no process has it now

    def write(path):
        Path(path).write_text("new")

    outputs = ["ofiv.csv", "summary.npz"]
    for _ in range(3):   # each killed run's write removes the one before's files
        pid = killed_run()
        left = sorted(p.name for p in out.iterdir())
        assert len(left) == 2 and all(n.startswith(f".{pid}-") for n in left), left
    cli.write_together(out, {n: write for n in outputs})
    assert sorted(p.name for p in out.iterdir()) == outputs

    # only names exactly as write_together makes them, of this host, from a dead PID, files
    dead, tag = killed_run(), cli._host_tag()
    other_host = f"{int(tag, 16) ^ 1:08x}"
    gone = [f".{dead}-0123abcd-{tag}.README.partial",               # a name without suffix
            f".{dead}-0123abcd-{tag}.a.partial.partial.partial"]     # the name 'a.partial'
    kept = [f".{os.getpid()}-0123abcd-{tag}.summary.npz.partial.npz",   # a live run (this one)
            f".1-0123abcd-{tag}.summary.npz.partial.npz",              # pid 1: a running PID
            f".{dead}-0123abcd-{other_host}.summary.npz.partial.npz",   # another host's
            f".{dead}-0123abcd.summary.npz.partial.npz",               # no host: not ours
            f".{dead}-0123abcd-{tag}.summary.npz.partial.csv",         # not the name's suffix
            f".{dead}-0123abcd-{tag}.summary.npz.partial",
            f".{dead}-0123abc-{tag}.ofiv.csv.partial.csv",
            f".0{dead}-0123abcd-{tag}.ofiv.csv.partial.csv",
            f".{dead}-0123ABCD-{tag}.ofiv.csv.partial.csv",
            f"{dead}-0123abcd-{tag}.ofiv.csv.partial.csv",             # not hidden
            f".{dead}-0123abcd-{tag}.ofiv.csv.partial.csv~",
            ".summary.npz.previous-0123456789ab",                       # kept on purpose
            "notes.partial.txt", "target.txt"]
    for name in gone + kept:
        (out / name).write_text("someone's")
    folder = out / f".{dead}-0123abcd-{tag}.dir.csv.partial.csv"
    folder.mkdir()
    (folder / "inside.txt").write_text("keep")
    link = out / f".{dead}-0123abcd-{tag}.link.csv.partial.csv"
    link.symlink_to(out / "target.txt")
    cli.write_together(out, {n: write for n in outputs})
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs + kept + [folder.name,
                                                                             link.name])
    assert all((out / n).read_text() == "someone's" for n in kept)
    assert (folder / "inside.txt").read_text() == "keep"


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


# ------------------------------------------------------------------ F6: known, checked first
def test_known_ids_are_all_checked_before_any_tomtom(monkeypatch):
    zoo = small_zoo(3)
    s = summarize_zoo(zoo, n_starts=2, seed=0)
    rng = np.random.default_rng(0)
    jaspar = MotifSet([rng.dirichlet([0.3] * 4, size=6).T for _ in range(12)],
                      [f"MA{i:04d}.1" for i in range(12)], [f"TF{i}" for i in range(12)])
    ran = []
    import deepresolve_captum.motifs as M
    real_t, real_k = M.tomtom, M.known_motif_hits
    monkeypatch.setattr(M, "tomtom", lambda *a, **k: ran.append(1) or real_t(*a, **k))
    monkeypatch.setattr(M, "known_motif_hits", lambda *a, **k: ran.append(1) or real_k(*a, **k))
    with pytest.raises(ValueError, match=r"(?s)the entries of 2 model\(s\) .*m1: 'MA0001.9' not in "
                                         r"this motif set.*did you mean MA0001.1.*\n  m2: .*"
                                         r"missing value \(nan\)") as e:
        zoo_filter_table(s, zoo, jaspar=jaspar,
                         known={"m0": "MA0003.1", "m1": "MA0001.9", "m2": ["MA0002.1", np.nan]})
    assert ran == [] and "m0" not in str(e.value)
    # a missing value alone, or an empty list, still means no known motif for that model
    t = zoo_filter_table(s, zoo, jaspar=jaspar, top=1,
                         known={"m0": "MA0003.1", "m1": np.nan, "m2": [], "other": "nope"})
    assert t["known_motif"].tolist()[0] == "MA0003.1" and t["known_p"].iloc[1:].isna().all()


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


# ------------------------------------------------------------------ F8: progress
def test_progress_counts_models_and_shows_the_gmm_fits(capsys):
    summarize_zoo(small_zoo(3), n_starts=2, seed=0, verbose=True)
    err = capsys.readouterr().err
    assert "DeepResolve on the zoo" in err and "3/3" in err and "model" in err
    assert "group" not in err
    assert "GMM on IL" in err


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


# ------------------------------------------------------------------ F11: the model that is no EncodeTFModel named
def test_a_model_that_is_no_encode_model_is_named():
    zoo = {**small_zoo(2), "a": nn.Linear(4, 1)}
    with pytest.raises(TypeError, match=r"1 are not: 'a' \(Linear\)"):
        summarize_zoo(zoo)


# ------------------------------------------------------------------ F12: the settings listed
def test_zoo_help_lists_every_setting_summary_npz_holds(tmp_path, capsys):
    write_models(tmp_path / "m", ["tfA", "tfB"])
    assert cli.main(["zoo", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--starts", "2",
                     "--quiet"]) == 0
    keys = EnsembleSummary.load(tmp_path / "o" / "summary.npz").settings
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["zoo", "--help"])
    text = capsys.readouterr().out
    import re
    listed = set(re.findall(r"[a-z_0-9]+", text[text.index("settings:"):]))
    assert not set(keys) - listed, sorted(set(keys) - listed)


# ------------------------------------------------------------------ real models
def test_real_models_name_the_ones_that_stopped_early(shared_dir):
    folder = shared_dir / "data" / "encode422"
    zoo = load_encode_zoo(folder, names=4)
    with pytest.warns(RuntimeWarning, match=r"model\(s\) have starts that stopped at "
                                            r"max_steps=5 .*wgEncodeAwgTfbs") as rec:
        s = summarize_zoo(zoo, n_starts=3, max_steps=5, group_size=2)
    assert sum("stopped at max_steps" in str(w.message) for w in rec) == 1
    open_ = dict(zip(s.settings["models"], s.settings["model_open_starts"]))
    assert set(open_) == set(zoo) and any(open_.values())
    named = [str(w.message) for w in rec if "stopped at max_steps" in str(w.message)][0]
    assert all((n in named) == bool(k) for n, k in open_.items())
    full = summarize_zoo(zoo, n_starts=3)
    assert full.settings["model_converged"] == [True] * 4    # the default 2000 steps suffice


def test_the_host_tag_tells_same_named_hosts_apart_by_boot_and_machine_id(tmp_path,
                                                                          monkeypatch):
    """Review 15 r4 m3: the tag hashed the host name and the PID namespace's link, which is
    the constant pid:[4026531836] in every host's init namespace: two machines of one name
    sharing an NFS --out had one tag, and each removed the other's live temporary files as a
    dead PID's. The boot id (and machine id) are now in the tag; where neither can be read,
    no temporary file is removed at all."""
    def ids(boot, machine):
        files = []
        for name, text in (("boot_id", boot), ("machine-id", machine)):
            p = tmp_path / name
            if text is None:
                p.unlink(missing_ok=True)
            else:
                p.write_text(text + "\n")
            files.append(str(p))
        monkeypatch.setattr(cli, "_HOST_ID_FILES", tuple(files), raising=False)

    ids("707dffa9-fc3d-4da0-80f2-a0d508a75315", "3d1219c7c4c5404aaa1f6d2a48adfda4")
    here = cli._host_tag()
    ids("0b4f03c2-1111-4a4a-9e9e-000000000001", "3d1219c7c4c5404aaa1f6d2a48adfda4")  # a clone
    other = cli._host_tag()
    assert other != here
    ids("0b4f03c2-1111-4a4a-9e9e-000000000001", None)            # no machine id: boot id does
    assert cli._host_tag() not in (here, other)

    out = tmp_path / "out"
    out.mkdir()
    dead = 4000000                      # no such PID here (pid_max is at most 4194304)
    assert not cli._running(dead)
    ids("707dffa9-fc3d-4da0-80f2-a0d508a75315", "3d1219c7c4c5404aaa1f6d2a48adfda4")
    mine = out / cli._partial_name(f"{dead}-0123abcd-{cli._host_tag()}", "ofiv.csv")
    ids("0b4f03c2-1111-4a4a-9e9e-000000000001", "3d1219c7c4c5404aaa1f6d2a48adfda4")
    clone = out / cli._partial_name(f"{dead}-0123abcd-{cli._host_tag()}", "ofiv.csv")
    ids("707dffa9-fc3d-4da0-80f2-a0d508a75315", "3d1219c7c4c5404aaa1f6d2a48adfda4")
    for p in (mine, clone):
        p.write_text("partial")
    cli.write_together(out, {"x.txt": lambda p: Path(p).write_text("x")})
    assert not mine.exists() and clone.exists()       # the clone's live file is left alone

    ids(None, None)                                    # nothing tells this host apart
    stale = out / cli._partial_name(f"{dead}-0123abcd-{cli._host_tag()}", "ofiv.csv")
    stale.write_text("partial")
    cli.write_together(out, {"x.txt": lambda p: Path(p).write_text("y")})
    assert stale.exists() and (out / "x.txt").read_text() == "y"
