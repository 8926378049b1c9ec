"""Review 15d: benchmarks/*.py and examples/channel_then_input.py check their arguments and
output paths before any work (argparse usage errors, exit code 2, instead of a traceback after
the work), and say what they ran. Each script is loaded from the source tree and called through
its parse function or ``main(argv)`` with tiny options."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(rel):
    path = REPO / rel
    if not path.exists():
        pytest.skip(f"needs the source tree's {rel}")
    spec = importlib.util.spec_from_file_location("_review15_" + path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _usage_error(capsys, fn, argv):
    """fn(argv) must end in argparse's usage error; returns stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2, e.value.code
    return " ".join(capsys.readouterr().err.split())


# ------------------------------------------------------------------ m3: output paths up front

def test_encode422_out_is_checked_before_any_work(tmp_path, capsys):
    """--out a folder, or under a file, failed with a traceback after every model had run."""
    E = _load("benchmarks/encode422.py")
    nodata = str(tmp_path / "no_models_here")      # --out is checked before the models folder
    err = _usage_error(capsys, E.parse_args, ["--models", nodata, "--out", str(tmp_path)])
    assert "--out: " in err and "is a folder; name a file" in err
    (tmp_path / "afile").write_text("x")
    err = _usage_error(capsys, E.parse_args,
                       ["--models", nodata, "--out", str(tmp_path / "afile" / "x.csv")])
    assert "--out: cannot create the folder" in err


def test_encode422_out_default_is_in_the_help(capsys):
    E = _load("benchmarks/encode422.py")
    with pytest.raises(SystemExit):
        E.parse_args(["--help"])
    assert "default: bench_out/encode422.csv" in " ".join(capsys.readouterr().out.split())


SYN_TINY = ["--models", "1", "--sets", "one", "--n-sequences", "200", "--n-random", "50",
            "--epochs", "1"]


def test_synthetic_json_is_checked_before_training(tmp_path, capsys):
    """--json into a folder or a path that cannot be created failed after all the training."""
    S = _load("benchmarks/synthetic.py")
    err = _usage_error(capsys, S.main, SYN_TINY + ["--json", str(tmp_path)])
    assert "--json: " in err and "is a folder" in err
    (tmp_path / "afile").write_text("x")
    err = _usage_error(capsys, S.main, SYN_TINY + ["--json", str(tmp_path / "afile" / "r.json")])
    assert "--json: cannot create the folder" in err


# ------------------------------------------------------------------ m10: out-of-range numbers

@pytest.mark.parametrize("extra, message", [
    (["--models", "0"], "argument --models: must be >= 1"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--epochs", "0"], "argument --epochs: must be >= 1"),
    (["--max-copies", "0"], "argument --max-copies: must be >= 1"),
    (["--n-sequences", "10"], "argument --n-sequences: must be >= 100"),
    (["--lr", "0"], "argument --lr: must be a finite number > 0"),
    (["--seq-len", "20"], "set one at --seq-len 20 and --max-copies 2: seq_len must be >= 36"),
])
def test_synthetic_bad_numbers_are_usage_errors(capsys, extra, message):
    S = _load("benchmarks/synthetic.py")
    assert message in _usage_error(capsys, S.main, SYN_TINY + extra)


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "argument --repeats: must be >= 1"),
    (["--authors-starts", "0"], "argument --authors-starts: must be >= 1"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--classes", "0"], "argument --classes: must be >= 1"),
    (["--steps", "0"], "argument --steps: must be >= 1"),
    (["--starts", "0"], "argument --starts: must be >= 1"),
    (["--authors-lr", "-1"], "argument --authors-lr"),
    (["--seed", "-1"], "argument --seed: must be >= 0"),
])
def test_ascent_bad_numbers_are_usage_errors(capsys, argv, message):
    A = _load("benchmarks/ascent.py")
    assert message in _usage_error(capsys, A.parse_args, argv)
    assert A.parse_args([]).repeats == 3


@pytest.mark.parametrize("argv, message", [
    (["--steps", "1"], "argument --steps: must be >= 2"),
    (["--repeats", "0"], "argument --repeats: must be >= 1"),
    (["--targets", "0"], "argument --targets: must be >= 1"),
    (["--starts", "0"], "argument --starts: must be >= 1"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--seq-len", "162"], "argument --seq-len: must be >= 163"),
    (["--outputs", "919", "63"], "argument --outputs: must be >= 64"),
])
def test_wide_head_bad_numbers_are_usage_errors(capsys, argv, message):
    W = _load("benchmarks/wide_head.py")
    assert message in _usage_error(capsys, W.parse_args, argv)
    assert W.parse_args([]).steps == 6


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "50"], "argument --sizes: each class count must be >= 101"),
    (["--sizes", "2000,100"], "got [100]"),
    (["--sizes", "2k"], "argument --sizes: expected comma-separated integers"),
    (["--sizes", ","], "argument --sizes: no class count given"),
    (["--rows", "1"], "argument --rows: must be >= 2"),
])
def test_comparisons_memory_bad_values_are_usage_errors(capsys, argv, message):
    Cm = _load("benchmarks/comparisons_memory.py")
    assert message in _usage_error(capsys, Cm.parse_args, argv)
    assert Cm.parse_args(["--sizes", "101,300"]).sizes == [101, 300]


def test_comparisons_memory_help_has_its_whole_description(capsys):
    """n1: the description was the docstring's first line, cut mid-sentence."""
    Cm = _load("benchmarks/comparisons_memory.py")
    with pytest.raises(SystemExit):
        Cm.parse_args(["--help"])
    assert "association_index), by tracemalloc, as multiples of one C x C float64 matrix." in " ".join(
        capsys.readouterr().out.split())


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "argument --repeats: must be >= 1"),
    (["--big-repeats", "0"], "argument --big-repeats: must be >= 1"),
    (["--dtypes", "foo"], "argument --dtypes: expected a comma-separated subset of float32,float64"),
    (["--dtypes", ","], "argument --dtypes"),
    (["--gap", "-1"], "argument --gap: must be a finite number >= 0"),
    (["--gap", "nan"], "argument --gap"),
    (["--warm", "-1"], "argument --warm: must be >= 0"),
    (["--threads", "5000"], "argument --threads: must be 0 to 4096"),
])
def test_stats_bad_values_are_usage_errors(capsys, argv, message):
    St = _load("benchmarks/stats.py")
    assert message in _usage_error(capsys, St.parse_args, argv)
    assert St.parse_args([]).dtypes == ["float32", "float64"]
    assert St.parse_args(["--dtypes", "float64,float64"]).dtypes == ["float64"]


# ------------------------------------------------------------------ m5: stats.py threads

def test_stats_threads_sets_both_sides_and_the_header_says_so(tmp_path):
    """--threads N set the native pool only, and the header did not show numpy's BLAS threads."""
    from deepresolve_captum import _stats
    if _stats._C is None or not _stats.native_available():
        pytest.skip("needs the native extension")
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DEEPRESOLVE_NUM_THREADS")}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stats.py"), "--threads", "1",
                          "--repeats", "1", "--no-big", "--dtypes", "float32", "--gap", "0"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[0]
    assert "1 native threads" in header and "each side's default" not in header, header
    # any BLAS threadpoolctl reports (openblas, mkl, blis, ...), each at 1 thread; or none seen
    assert (re.search(r"numpy BLAS \S+ \S+: 1 threads", header)
            or "numpy's BLAS: threadpoolctl sees none" in header), header


# ------------------------------------------------------------------ m4, n3: heatmap_memory

def test_heatmap_png_is_the_callers_folder_and_both_sides_save_alike(tmp_path, monkeypatch, capsys):
    """A relative --png was resolved in the checkout (the children run there), and only the
    current version saved a real PNG (the other wrote to os.devnull), so the two times differed
    by the file writing."""
    H = _load("benchmarks/heatmap_memory.py")
    monkeypatch.chdir(tmp_path)
    a = H.parse_args(["--png", "rel/pngs", "--before", ""])
    assert a.png == str(tmp_path / "rel" / "pngs") and (tmp_path / "rel" / "pngs").is_dir()
    (tmp_path / "afile").write_text("x")
    assert "--png: " in _usage_error(capsys, H.parse_args, ["--png", "afile"])
    assert "argument --sizes: must be >= 40" in _usage_error(capsys, H.parse_args, ["--sizes", "39"])

    calls = []

    def fake_run(C, plot_path, mode, png=""):
        calls.append((bool(plot_path), mode, png))
        return dict(matrix_mb=0.0, seconds=0.1, rss_peak_mb=1.0, rss_added_mb=0.5,
                    trace_peak_mb=0.2)

    monkeypatch.setattr(H, "run", fake_run)
    H.main(["--sizes", "40", "--png", "out", "--before", "HEAD"])
    pngs = {(before, mode): png for before, mode, png in calls}
    assert set(pngs) == {(b, m) for b in (False, True) for m in ("rss", "trace")}
    assert pngs[(False, "rss")] == str(tmp_path / "out" / "heatmap_40.png")
    assert pngs[(True, "rss")] == str(tmp_path / "out" / "heatmap_40_before.png")
    assert pngs[(False, "trace")] == pngs[(False, "rss")] and pngs[(True, "trace")] == pngs[(True, "rss")]
    calls.clear()
    H.main(["--sizes", "40", "--before", "HEAD"])      # no --png: both to os.devnull
    assert {png for *_, png in calls} == {""}


# ------------------------------------------------------------------ m8, m9: the example

def test_example_out_is_checked_before_training(tmp_path, capsys):
    X = _load("examples/channel_then_input.py")
    (tmp_path / "afile").write_text("x")
    assert "--out: " in _usage_error(capsys, X.main, ["--out", str(tmp_path / "afile")])
    assert "argument --top: must be >= 1" in _usage_error(capsys, X.main, ["--top", "0"])


def test_example_interaction_table_names_the_planted_motifs():
    """The interaction table the example now writes (channel_interactions.csv): what was planted
    (the known motifs), the channels that chose them, and the model's P(+) per condition."""
    import torch

    from deepresolve_captum.interaction import interaction_check
    from deepresolve_captum.zoo import PaperCNN

    X = _load("examples/channel_then_input.py")
    torch.manual_seed(0)
    model = PaperCNN(seq_len=50).eval()
    r0 = interaction_check(model, "GCTCAT", "CGCTTG", seq_len=50, n_backgrounds=8)
    r1 = interaction_check(model, "GCTCAT", "CGCTTG", seq_len=50, n_backgrounds=8,
                           context=["CAGGTC"])
    t = X.interaction_table([((31, 29), r0), ((31, 29), r1)])
    assert list(t.columns) == ["motif_a", "motif_b", "context", "channel_a", "channel_b", "p_none",
                               "p_a", "p_b", "p_both", "interaction", "interaction_sem", "logic"]
    assert t[["motif_a", "motif_b", "channel_a", "channel_b"]].values.tolist() == \
        [["GCTCAT", "CGCTTG", 31, 29]] * 2
    assert t["context"].tolist() == ["", "CAGGTC"]
    assert t["p_both"].tolist() == [r0.table["mean"]["both"], r1.table["mean"]["both"]]
    assert t["logic"].tolist() == [r0.logic, r1.logic]


# ------------------------------------------------------------------ re-review r2

def test_encode422_parse_args_creates_no_folder(tmp_path, monkeypatch, capsys):
    """r2 m1: parse_args created --out's folder (default ./bench_out) before its other checks,
    so a refused command, and every parse_args call in the tests, left a folder behind. The
    folder is now made in main, after every check."""
    E = _load("benchmarks/encode422.py")
    monkeypatch.chdir(tmp_path)
    nodata = str(tmp_path / "no_models_here")
    assert "--models: no such folder" in _usage_error(capsys, E.parse_args, ["--models", nodata])
    assert "--models: no such folder" in _usage_error(
        capsys, E.parse_args, ["--models", nodata, "--out", "other/deeper/x.csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", " "])
def test_encode422_empty_out_is_refused(capsys, text):
    """r2 n3: Path('') is '.', so --out '' was called a folder and the "empty path" branch could
    not run."""
    E = _load("benchmarks/encode422.py")
    assert "--out: empty path; name a file" in _usage_error(capsys, E.parse_args, ["--out", text])


@pytest.mark.parametrize("text", ["", " "])
def test_synthetic_empty_json_is_refused_before_training(capsys, monkeypatch, text):
    """r2 n3: --json '' trained every model and wrote no JSON, without a word."""
    S = _load("benchmarks/synthetic.py")
    monkeypatch.setattr(S, "run_synthetic", lambda *a, **k: pytest.fail("trained"))
    assert "--json: empty path; name a file" in _usage_error(capsys, S.main,
                                                              SYN_TINY + ["--json", text])


def test_synthetic_git_commit_takes_no_index_lock(tmp_path, monkeypatch):
    """r2 n2: `git status` refreshed (rewrote) .git/index when a tracked file's stat data was
    stale, taking .git/index.lock while other git commands in the same checkout could run."""
    S = _load("benchmarks/synthetic.py")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    try:
        subprocess.run(git + ["init", "-q"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs git")
    f = tmp_path / "a.txt"
    f.write_text("x\n")
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "a"], check=True)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))   # stale stat data only
    index = tmp_path / ".git" / "index"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    monkeypatch.setattr(S, "REPO", tmp_path)
    monkeypatch.delenv("GIT_OPTIONAL_LOCKS", raising=False)
    commit = S._git_commit()
    assert commit and not commit.endswith("+dirty"), commit      # same content: clean
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    f.write_text("y\n")
    assert S._git_commit().endswith("+dirty")


def test_example_pwm_title_gives_the_fragments_own_p_value():
    """r2 n1: the second line of a channel's PWM title, "fragments ~ M (p=...)", showed the best
    planted-motif p over the ascent and the fragment hits, so the ascent's p when it was the
    better one (ch 9: ascent CAGGTC 4.2e-06, fragments 1.3e-05, titled 4e-06)."""
    import pandas as pd

    X = _load("examples/channel_then_input.py")
    best = pd.DataFrame({"target_name": ["CAGGTC", "GCTCAT"], "p_value": [4.2e-6, 2e-3]},
                        index=pd.Index([9, 31], name="query"))
    hits = pd.DataFrame({"query": [9, 31, 31], "target_name": ["CAGGTC", "GCTCAT", "CGCTTG"],
                         "p_value": [4.2e-6, 2e-3, 4e-3]})
    fhits = pd.DataFrame({"query": [9, 9, 31], "target_name": ["MA0001.1", "CAGGTC", "GCTCAT"],
                          "p_value": [1e-6, 1.3e-5, 3e-7]})
    title = lambda *a: X.pwm_title(*a)
    assert title(9, best, hits, fhits, ["CAGGTC"]) == "CAGGTC (p=4e-06)\nfragments ~ CAGGTC (p=1e-05)"
    assert title(31, best, hits, fhits, ["GCTCAT"]) == "GCTCAT (p=2e-03)\nfragments ~ GCTCAT (p=3e-07)"
    assert title(31, best, hits, fhits, []) == "GCTCAT (p=2e-03)"
    # chosen by its ascent PWM alone: no fragments p to show; the ascent's, labelled as such,
    # unless the first line already gives it
    nofrag = fhits[fhits["query"] != 9]
    assert title(9, best, hits, nofrag, ["CAGGTC"]) == "CAGGTC (p=4e-06)"
    assert title(31, best, hits, fhits, ["CGCTTG"]) == "GCTCAT (p=2e-03)\nascent ~ CGCTTG (p=4e-03)"


def test_stats_header_pattern_takes_any_blas(monkeypatch):
    """r2 n4: the --threads test asked for "openblas"; numpy on MKL or BLIS reads otherwise."""
    St = _load("benchmarks/stats.py")
    for libs in ([("mkl", "2024.0", 1)], [("blis", "0.9.0", 1), ("openblas", "0.3.31", 1)]):
        monkeypatch.setattr(St, "blas_threads", lambda libs=libs: libs)
        assert re.search(r"numpy BLAS \S+ \S+: 1 threads", St.blas_text()), St.blas_text()
