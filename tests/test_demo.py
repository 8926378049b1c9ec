import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from deepresolve_captum import cli, demo  # noqa: E402
from deepresolve_captum.summary import EnsembleSummary  # noqa: E402


def test_cli_demo_writes_figures_and_summary(tmp_path):
    import torch
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    rc = cli.main(["demo", "--out", str(out), "--n-sequences", "1500", "--n-random", "300",
                   "--epochs", "1", "--threads", "1", "--quiet", "--set-two"])
    assert rc == 0
    assert torch.get_num_threads() == threads        # the caller's setting is restored
    for name in ("fig2_set1", "fig4a_set2_ofiv", "fig4b_set2_similarity"):
        png = mpimg.imread(out / f"{name}.png")
        assert png.ndim == 3 and png.shape[0] > 200 and png.shape[1] > 200
        assert png[..., :3].std() > 0.05          # not blank
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    text = (out / "summary_set1.txt").read_text()
    assert "non-additive channels" in text and "paper's claims" in text
    # the paper's figure is a test AUC: quoted from an independent 20% set (1800 * 0.2 = 360
    # sequences), beside the validation AUC of the rows that chose the epoch
    assert "test AUC" in text and "on 360 independent sequences" in text, text
    assert "validation AUC" in text and "held-out AUC" not in text
    text2 = (out / "summary_set2.txt").read_text()
    assert "class similarity" in text2
    # every term and claim the summaries print is explained in them
    for t, claims in ((text, demo.SET_ONE_CLAIMS), (text2, demo.SET_TWO_CLAIMS)):
        legend = t.split("How to read this", 1)[1]
        for term in ("OFIV", "IL", "BIC", "lambda") + claims:
            assert f"\n  {term}" in legend or f"\n    {term}" in legend, term
        # and so is every flag printed as "also reported" (review 14g: bic_three=NO unexplained)
        reported = re.search(r"\(also reported: ([^)]*)\)", t).group(1)
        for flag in (part.split("=")[0] for part in reported.split(", ")):
            assert f"\n    {flag} " in legend, flag
    s = EnsembleSummary.load(out / "summary_set1.npz")
    assert s.fiv.shape == (1, 10, 32) and s.ofiv.shape == (1, 32)
    # the npz keeps what made it (it held only the GMM settings; lambda was in the text only)
    assert s.settings["n_starts"] == 10 and s.settings["layer"] == "pool"
    assert f"{s.settings['l2']:.3g}" in text and s.settings["l2_auto"] is not None
    assert s.settings["seed"] == 0 and len(s.settings["val_auc"]) == 1
    assert len(s.settings["test_auc"]) == 1 and s.settings["n_test"] == 360
    assert f"test AUC {s.settings['test_auc'][0]:.4f}" in text
    for key in ("n_sequences", "n_random", "max_copies", "batch_size", "lr", "optimizer",
                "threads", "sklearn_version", "numpy_version"):   # enough to repeat the run
        assert s.settings.get(key) is not None, key
    s2 = EnsembleSummary.load(out / "summary_set2.npz")
    assert s2.ofiv.shape == (4, 32) and np.all(np.isfinite(s2.ofiv))


def test_cli_help_and_errors(capsys, tmp_path):
    assert cli.main([]) == 2
    assert "zoo" in capsys.readouterr().out and "demo" in cli.build_parser([]).format_help()
    with pytest.raises(SystemExit) as e:
        cli.main(["zoo", "--help"])                 # only the named subcommand's options are built
    assert e.value.code == 0 and "--jaspar" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["demo"])                          # --out is required
    assert "--out" in capsys.readouterr().err
    for bad in (["--n-sequences", "-5"], ["--epochs", "0"], ["--threads", "-1"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["demo", "--out", "never_made"] + bad)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert ("expected an integer" if bad[0] == "--seed" else "must be >=") in err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit, match="not a folder"):
        cli.main(["demo", "--out", str(a_file)])
    with pytest.raises(SystemExit, match="cannot write to --out"):   # at once, not after the work
        cli.main(["demo", "--out", str(a_file / "sub")])


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "deepresolve_captum.demo", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--out" in r.stdout


def test_zoo_threads_option_restores_torch_threads(tmp_path, monkeypatch):
    """--threads sets torch's CPU threads for the run and puts the caller's setting back."""
    import argparse

    import torch

    from deepresolve_captum import zoo_summary

    seen = []
    monkeypatch.setattr(zoo_summary, "_run", lambda args: seen.append(torch.get_num_threads()) or 0)
    args = zoo_summary.add_arguments(argparse.ArgumentParser()).parse_args(
        [str(tmp_path), "--out", str(tmp_path / "o"), "--threads", "1"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert zoo_summary.run_from_args(args) == 0
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_logic_table_leaves_every_module_mode_as_found():
    import torch

    from deepresolve_captum.zoo import PaperCNN
    m = PaperCNN(n_outputs=1, seq_len=50)
    m.eval()
    m.drop.train() if hasattr(m, "drop") else m.fc1.train()      # one module left in train mode
    modes = [mod.training for mod in m.modules()]
    table = demo.logic_table(m, n=20)
    assert [mod.training for mod in m.modules()] == modes
    assert len(table) == 8 and all(p.grad is None for p in m.parameters())
    assert torch.is_grad_enabled()


def test_set_two_summary_rounds_the_cosine_once():
    """summary_set2.txt printed a raw cosine of -0.0645 as -0.07 (rounded to 3 decimals when
    stored, then to 2 when printed) where the figure, from the raw matrix, shows -0.06."""
    from types import SimpleNamespace

    from deepresolve_captum.similarity import weight_cosine

    c = -0.06453892443242416
    W = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [c, np.sqrt(1 - c * c), 0.0], [0.3, 1.0, 0.2]])
    rng = np.random.default_rng(0)
    summary = SimpleNamespace(ofiv=rng.normal(size=(4, 6)), n_components=[1, 1, 1, 1])
    checks = demo.check_set_two(summary, rng.random((6, 4)), W)
    run = SimpleNamespace(checks=checks, train=SimpleNamespace(val_auc=np.full(4, 0.9)), l2=0.1)
    line = next(ln for ln in demo.describe_set_two(run).splitlines()
                if ln.startswith("last-layer cosine"))
    same = line.split(":", 1)[1].split("|")[0].split()
    assert same[2] == f"{weight_cosine(W)[1, 2]:+.2f}" == "-0.06"
    assert np.array_equal(np.asarray(checks["cosine"]), weight_cosine(W))    # stored unrounded


def test_a_demo_that_fails_while_writing_leaves_the_previous_files(tmp_path, monkeypatch):
    """The demo writes all its files or none: a failure on one of them leaves the folder as
    the previous run left it, without partial files."""
    from deepresolve_captum import demo
    from deepresolve_captum.summary import EnsembleSummary

    (tmp_path / "summary_set1.txt").write_text("previous run")
    (tmp_path / "fig2_set1.png").write_bytes(b"previous run")

    def disk_full(self, path):
        raise OSError("No space left on device")

    monkeypatch.setattr(EnsembleSummary, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        demo.run_demo(tmp_path, n_sequences=300, n_random=50, epochs=1, verbose=False)
    assert (tmp_path / "summary_set1.txt").read_text() == "previous run"
    assert (tmp_path / "fig2_set1.png").read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2_set1.png", "summary_set1.txt"]


def test_a_set_one_demo_names_set_two_files_left_from_an_earlier_run(tmp_path):
    from deepresolve_captum import demo

    (tmp_path / "summary_set2.txt").write_text("earlier run")
    (tmp_path / "fig4b_set2_similarity.png").write_bytes(b"earlier run")
    with pytest.warns(UserWarning, match="set II files of an earlier run.*"
                                         "fig4b_set2_similarity.png, summary_set2.txt") as rec:
        written = demo.run_demo(tmp_path, n_sequences=300, n_random=50, epochs=1, verbose=False)
    assert [w.filename for w in rec if "earlier run" in str(w.message)] == [__file__]
    assert "summary_set2.txt" not in written
    assert (tmp_path / "summary_set2.txt").read_text() == "earlier run"


def test_demo_output_clash_is_refused_before_the_training(tmp_path, monkeypatch, capsys):
    """A folder named like an output (OUT/fig2_set1.png) was refused only after the whole
    training (about 40 s at default sizes), with a traceback. Now the command line checks the
    demo's output names when it prepares --out, and run_demo before it trains."""
    def no_work(*a, **k):
        raise AssertionError("trained before refusing its --out")

    monkeypatch.setattr(demo, "run_synthetic", no_work)
    (tmp_path / "fig2_set1.png").mkdir()
    with pytest.raises(SystemExit, match=r"^deepresolve demo: error: --out .* holds fig2_set1.png "
                                         r"as something other than a file"):
        cli.main(["demo", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(ValueError, match=r"holds \['fig2_set1.png'\] as something other"):
        demo.run_demo(tmp_path, verbose=False)
    (tmp_path / "fig2_set1.png").rmdir()
    (tmp_path / "model_set2.pt").mkdir()          # a set II name counts only with --set-two
    with pytest.raises(SystemExit, match="holds model_set2.pt"):
        cli.main(["demo", "--out", str(tmp_path), "--quiet", "--set-two"])
    with pytest.raises(AssertionError, match="trained"):
        cli.main(["demo", "--out", str(tmp_path), "--quiet"])


def test_cli_demo_write_failure_is_one_line_and_says_what_it_replaced(tmp_path, monkeypatch,
                                                                       capsys):
    """A write failure (a full disk) ended in a traceback; a run over an earlier one replaced
    its files without a word. Now: 'deepresolve demo: error: cannot write OUT/NAME: REASON'
    with the previous files intact, and the final message names the files it replaced."""
    import errno
    import os

    (tmp_path / "summary_set1.txt").write_text("previous run")
    (tmp_path / "fig2_set1.png").write_bytes(b"previous run")
    real = EnsembleSummary.save

    def disk_full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(EnsembleSummary, "save", disk_full)
    args = ["demo", "--out", str(tmp_path), "--n-sequences", "300", "--n-random", "50",
            "--epochs", "1"]
    with pytest.raises(SystemExit) as e:
        cli.main(args + ["--quiet"])
    assert e.value.code == (f"deepresolve demo: error: cannot write {tmp_path / 'summary_set1.npz'}: "
                            "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2_set1.png", "summary_set1.txt"]
    assert (tmp_path / "summary_set1.txt").read_text() == "previous run"
    monkeypatch.setattr(EnsembleSummary, "save", real)
    capsys.readouterr()
    assert cli.main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote 5 files to {tmp_path}")
    assert last.endswith("; replaced fig2_set1.png, summary_set1.txt from an earlier run")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(demo.output_names())


def test_python_m_demo_and_zoo_are_the_commands_ctrl_c_and_empty_folders_included(
        tmp_path, monkeypatch, capsys):
    """From review 14: ``python -m deepresolve_captum.demo`` (and ``.zoo_summary``) parsed and
    ran on their own, so Ctrl-C ended in a traceback and the --out folder a stopped run had
    made stayed behind; they now are ``deepresolve demo`` / ``deepresolve zoo``."""
    from deepresolve_captum import zoo_summary

    def interrupted(args):
        cli.output_folder(args.out, "x", names=[])      # the folder a run makes first
        raise KeyboardInterrupt

    for module, name in ((demo, "demo"), (zoo_summary, "zoo")):
        monkeypatch.setattr(module, "run_from_args", interrupted)
        out = tmp_path / name / "new"
        extra = [str(tmp_path)] if name == "zoo" else []       # zoo's FOLDER
        try:
            rc = module.main(["--out", str(out), *extra])
        except KeyboardInterrupt:   # not let through to pytest, which would stop the session
            pytest.fail(f"Ctrl-C escaped python -m {module.__name__} as a traceback")
        assert rc == 130
        assert f"deepresolve {name}: interrupted" in capsys.readouterr().err
        assert not out.exists()


def test_n_random_defaults_to_a_fifth_of_n_sequences(tmp_path):
    """From review 14: --n-random stayed 20,000 when --n-sequences was made smaller, so a
    1,000-sequence demo was 95% random sequences with 1.2% positives; it now keeps the
    paper's 100,000 : 20,000 unless given."""
    from deepresolve_captum.datasets import synthetic_set_one

    X, y = synthetic_set_one(1000, random_state=0)
    assert len(X) == 1200 and len(synthetic_set_one(1000, 7, random_state=0)[0]) == 1007
    args = cli.build_parser(["demo"]).parse_args(["demo", "--out", str(tmp_path)])
    assert args.n_random is None and args.n_sequences == 100_000
    run = demo.run_synthetic("one", n_sequences=300, epochs=1, n_starts=2, n_probe=8)
    assert run.summary.settings["n_random"] == 60 and run.summary.settings["n_sequences"] == 300
