"""``deepresolve run`` (a user's own model from the command line) and the CLI's messages for
arguments of the wrong kind (``deepresolve zoo FILE``), on a tiny CNN written to a temp .py."""
import json
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from deepresolve_captum import LayerFeatureOptimizer, cli, run_model, summarize
from deepresolve_captum.summary import EnsembleSummary

NET = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, n_out=3):
            super().__init__()
            self.conv = nn.Conv1d(4, 6, 5)
            self.act = nn.ReLU()
            self.pool = nn.MaxPool1d(2)
            self.fc = nn.Linear(6 * 8, n_out)

        def forward(self, x):
            return self.fc(self.pool(self.act(self.conv(x))).flatten(1))

    def make():
        return Net()
    """)


@pytest.fixture
def user_model(tmp_path):
    """(folder, the model with its trained weights): net.py with ``make``, its state dict
    sd.pt and one-hot inputs x.npy (16 sequences of 20 bp) in ``folder``."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "net.py").write_text(NET)
    space = {}
    exec(compile(NET, str(folder / "net.py"), "exec"), space)
    torch.manual_seed(0)
    model = space["make"]().eval()
    with torch.no_grad():
        model.fc.bias.uniform_(-0.5, 0.5)   # scores of both signs, as in a trained model
    torch.save(model.state_dict(), folder / "sd.pt")
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(0).integers(0, 4, (16, 20))]
    np.save(folder / "x.npy", x.transpose(0, 2, 1))
    return folder, model


def _run(folder, out, *extra):
    return cli.main(["run", "--model", str(folder / "net.py") + ":make", "--weights",
                     str(folder / "sd.pt"), "--layer", "pool", "--inputs", str(folder / "x.npy"),
                     "--out", str(out), "--quiet", *extra])


def test_run_writes_outputs_equal_to_the_python_api(user_model, tmp_path):
    """The summary of ``deepresolve run`` is the one LayerFeatureOptimizer + summarize give with
    the same seed (fiv_only=True, summarize's random_state 0), its rows the outputs of
    --target in the order given; the tables, figures and run.json agree with it."""
    folder, model = user_model
    out = tmp_path / "out"
    assert _run(folder, out, "--target", "2,0", "--starts", "3", "--seed", "7") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.npz", "ofiv.csv", "channels.csv", "fig2.png", "ofiv.png", "similarity.png",
         "run.json"])
    s = EnsembleSummary.load(out / "summary.npz")

    x = torch.from_numpy(np.load(folder / "x.npy"))
    opt = LayerFeatureOptimizer(model, model.pool)
    fivs, scores = opt.attribute(x, target=[2, 0], n_starts=3, l2="auto", seed=7,
                                 return_scores=True, fiv_only=True)
    api = summarize(fivs, scores, random_state=0, targets=opt.diagnostics.targets)
    assert {k: s.settings[k] for k in api.settings} == json.loads(json.dumps(api.settings))
    assert s.targets == [2, 0] and s.settings["layer"] == "pool"
    assert s.settings["l2"] == pytest.approx(opt.diagnostics.l2, rel=1e-12)
    api.settings = s.settings
    assert s == api                      # every array equal, bit for bit, and the targets

    ofiv = pd.read_csv(out / "ofiv.csv", index_col="output")
    assert list(ofiv.index) == [2, 0]
    np.testing.assert_allclose(ofiv.to_numpy(), s.ofiv, rtol=1e-15)
    table = pd.read_csv(out / "channels.csv")
    assert len(table) == 2 * 6 and list(table.columns) == [
        "output", "rank", "channel", "ofiv", "il", "category", "n_components"]
    assert list(table[table.output == 0].channel) == list(s.channels(1))
    record = json.loads((out / "run.json").read_text())
    assert record["targets"] == [2, 0] and record["l2"] == s.settings["l2"]
    assert record["arguments"]["target"] == "2,0" and record["seed"] == 7
    assert record["files"]["weights"]["sha256"] and record["versions"]["torch_version"]
    assert record["l2_auto"] is not None and record["seconds"]["total"] > 0
    # the outputs in similarity.png's order (above 80 targets the figure has no labels; review
    # 14g): the clustering of the summary's similarity, in model outputs
    from deepresolve_captum.clustering import hierarchical_clustering
    from deepresolve_captum.similarity import class_similarity
    order = hierarchical_clustering(class_similarity(s.ofiv)).order
    assert record["similarity_order"] == [int(s.targets[i]) for i in order]


def test_run_layer_input_one_target_and_npz_inputs(user_model, tmp_path):
    """--layer-input optimises the layer's input; one target writes no ofiv.png or
    similarity.png (and says which of an earlier run's are left); an .npz needs --inputs-key
    when it holds several arrays."""
    folder, model = user_model
    x = np.load(folder / "x.npy")
    np.savez(folder / "several.npz", seqs=x, labels=np.zeros(len(x)))
    out = tmp_path / "out"
    base = ["run", "--model", f"{folder / 'net.py'}:make", "--weights", str(folder / "sd.pt"),
            "--layer", "fc", "--out", str(out), "--starts", "2", "--l2", "1", "--quiet"]
    with pytest.raises(SystemExit, match=r"holds 2 arrays \(seqs, labels\): name one with "
                                         "--inputs-key"):
        cli.main(base + ["--inputs", str(folder / "several.npz")])
    assert not out.exists()
    (out / "ofiv.png").parent.mkdir()
    (out / "ofiv.png").write_bytes(b"an earlier run's")
    with pytest.warns(UserWarning, match="still holds ofiv.png of an earlier run"):
        assert cli.main(base + ["--inputs", str(folder / "several.npz"), "--inputs-key", "seqs",
                                "--target", "1", "--layer-input"]) == 0
    s = EnsembleSummary.load(out / "summary.npz")
    assert s.fiv.shape == (1, 2, 48) and s.settings["layer_input"] is True
    assert s.targets == [1] and s.settings["l2"] == 1.0
    assert not (out / "similarity.png").exists() and (out / "fig2.png").is_file()


def test_run_bad_layer_and_target_fail_before_any_output(user_model, tmp_path, capsys):
    folder, _ = user_model
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        _run(folder, out, "--layer", "Pool")
    assert str(e.value.code) == ("deepresolve run: error: --layer 'Pool': the model (Net) has no "
                                 "module of that name; close names: pool")
    with pytest.raises(SystemExit, match=r"no module of that name; its modules: conv, act, pool, "
                                         r"fc$"):
        _run(folder, out, "--layer", "zzz")
    with pytest.raises(SystemExit, match=r"--target 0-3: output 3 does not exist; the model has "
                                         r"3 output\(s\), 0-2"):
        _run(folder, out, "--target", "0-3")
    with pytest.raises(SystemExit, match=r"--plot-target 2 is not one of --target 0-1"):
        _run(folder, out, "--target", "0-1", "--plot-target", "2")
    assert not out.exists()
    for bad, message in (("x", "expected output indices from 0 such as 0, 0,3,17, 0-918 or all"),
                         ("3-1", "the range 3-1 runs backwards; write 1-3"),
                         ("0-2,1", "output 1 is listed twice"),
                         ("0,,1", "an empty item")):
        with pytest.raises(SystemExit) as e:
            _run(folder, out, "--target", bad)
        assert e.value.code == 2 and message in capsys.readouterr().err, bad
    assert cli.target_list(" 5, 0-2 ,9").resolve(10) == [5, 0, 1, 2, 9]
    assert cli.target_list("ALL").resolve(3) == [0, 1, 2]
    assert not out.exists()


def test_run_refuses_a_pickled_module_without_allow_pickle(user_model, tmp_path):
    """torch.load(weights_only=False) runs the file's code: a whole saved module needs
    --allow-pickle; a state dict given as --model is named as one; --weights never unpickles."""
    folder, _ = user_model
    model, _ = run_model._load_model(f"{folder / 'net.py'}:make", allow_pickle=False)
    model.load_state_dict(torch.load(folder / "sd.pt", weights_only=True))
    torch.save(model, folder / "whole.pt")
    out = tmp_path / "out"
    args = ["run", "--model", str(folder / "whole.pt"), "--layer", "pool", "--inputs",
            str(folder / "x.npy"), "--out", str(out), "--starts", "2", "--l2", "1", "--quiet"]
    with pytest.raises(SystemExit, match=r"whole.pt is a pickled object .* runs arbitrary code .* "
                                         r"pass --allow-pickle"):
        cli.main(args)
    assert not out.exists()
    with pytest.raises(SystemExit, match=r"sd.pt holds a state_dict \(weights only\), not a "
                                         r"model: .* as --weights"):
        cli.main(args[:2] + [str(folder / "sd.pt")] + args[3:])
    with pytest.raises(SystemExit, match=r"--weights .*whole.pt holds pickled objects"):
        _run(folder, out, "--weights", str(folder / "whole.pt"))
    assert not out.exists()
    assert cli.main(args + ["--allow-pickle", "--target", "0", "--no-plots"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["channels.csv", "ofiv.csv", "run.json",
                                                     "summary.npz"]


def test_run_help_names_the_risk_of_allow_pickle(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "UNSAFE: torch.load(weights_only=False) runs any code the file holds" in help_
    assert "summary.npz" in help_ and "run.json" in help_
    assert "DeepResolve on your own PyTorch model" in cli.build_parser([]).format_help()


def test_run_is_a_subcommand_module_like_the_others():
    """Every SUBCOMMANDS entry is a module with add_arguments / run_from_args (run's is
    run_model.py, not an object inside cli.py); ``deepresolve --help`` imports none of them,
    in a fresh interpreter; ``python -m deepresolve_captum.run_model`` is run's own entry."""
    import importlib
    import subprocess
    import sys

    for name, (module, _) in cli.SUBCOMMANDS.items():
        assert ":" not in module, name
        found = importlib.import_module(module)
        assert callable(found.add_arguments) and callable(found.run_from_args), name
    assert cli.SUBCOMMANDS["run"][0] == "deepresolve_captum.run_model"
    probe = ("import sys; from deepresolve_captum import cli\n"
             "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('deepresolve_captum.')))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = r.stdout.strip().splitlines()[-1]
    for name, (module, _) in cli.SUBCOMMANDS.items():
        assert f"'{module}'" not in loaded, (name, loaded)
    r = subprocess.run([sys.executable, "-m", "deepresolve_captum.run_model", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--allow-pickle" in r.stdout and "run.json" in r.stdout


def test_run_model_spec_errors_are_one_line(user_model, tmp_path):
    folder, _ = user_model
    out = tmp_path / "out"
    (folder / "broken.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(\n"
                                      "        4)\n")
    for spec, message in (
            (f"{folder / 'net.py'}", r"name the factory in it, e.g. --model \S+net.py:make_model"),
            (f"{folder / 'net.py'}:mak", r"net.py has no 'mak'; close names: make$"),
            (f"{folder / 'nope.py'}:make", r"no such file: \S+nope.py$"),
            ("no_such_package.models:make", r"no module named 'no_such_package'"),
            # a TypeError inside the factory: its own line, not advice about the call (r1)
            (f"{folder / 'broken.py'}:make", r"calling it raised TypeError: .*out_features' "
                                             r"\(\S+broken.py, line 4\)$"),
            # from a review: "net.py has no ''" and "no module named 'sd'" before
            (f"{folder / 'net.py'}:", r"name the factory after the colon, e.g. --model "
                                      r"\S+net.py:make_model"),
            (f"{folder / 'sd.pt'}:make", r"\S+sd.pt is not a Python file: FILE.py:FACTORY "
                                         r"takes a .py file")):
        with pytest.raises(SystemExit, match=r"^deepresolve run: error: --model \S+: " + message):
            cli.main(["run", "--model", spec, "--layer", "x", "--inputs", str(folder / "x.npy"),
                      "--out", str(out)])
    assert not out.exists()


def test_zoo_given_a_file_says_it_takes_a_folder(tmp_path):
    """From a review: ``deepresolve zoo c_model.pt`` said 'no such folder' for a file."""
    f = tmp_path / "c_model.pt"
    f.write_bytes(b"not read")
    with pytest.raises(SystemExit) as e:
        cli.main(["zoo", str(f), "--out", str(tmp_path / "out")])
    assert str(e.value.code).startswith(f"deepresolve zoo: error: {f} is a file; zoo takes a "
                                        "folder of ENCODE-style .npz models")
    assert "deepresolve run --model FILE.py:FACTORY" in str(e.value.code)
    assert not (tmp_path / "out").exists()
    from deepresolve_captum import zoo_summary
    with pytest.raises(SystemExit) as e:                     # python -m ...zoo_summary FILE too
        zoo_summary.main([str(f), "--out", str(tmp_path / "out")])
    assert f"{f} is a file; zoo takes a folder" in str(e.value.code)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_run_model_file_that_is_no_pickle_is_never_unpickled(user_model, tmp_path, monkeypatch):
    """From a review: a file torch.save did not write (an HDF5, random bytes) was called 'a
    pickled object ... If you trust it, pass --allow-pickle', and with --allow-pickle went to
    torch.load(weights_only=False); a TorchScript archive got torch's advice to load it with
    weights_only=False, and could not be used even then (no hooks on a ScriptModule)."""
    folder, model = user_model
    out = tmp_path / "out"
    h5 = folder / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    torch.jit.save(torch.jit.script(model), folder / "scripted.pt")
    unpickled = []
    real_load = torch.load

    def load(*a, **k):
        unpickled.append(k.get("weights_only"))
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", load)
    args = ["run", "--layer", "pool", "--inputs", str(folder / "x.npy"), "--out", str(out),
            "--quiet"]
    for extra in ([], ["--allow-pickle"]):
        with pytest.raises(SystemExit) as e:
            cli.main(args + ["--model", str(h5), *extra])
        assert "is not a file torch.save wrote" in str(e.value.code)
        assert "pickled object" not in str(e.value.code) and unpickled == []
        with pytest.raises(SystemExit) as e:
            cli.main(args + ["--model", str(folder / "scripted.pt"), *extra])
        assert "is a TorchScript archive (torch.jit.save)" in str(e.value.code)
        assert "--model FILE.py:FACTORY" in str(e.value.code) and unpickled == []
    with pytest.raises(SystemExit, match=r"--weights \S+scripted.pt is a TorchScript archive .*"
                                         r"torch.jit.load\(path\).state_dict\(\)"):
        _run(folder, out, "--weights", str(folder / "scripted.pt"))
    with pytest.raises(SystemExit, match=r"--weights \S+model.h5 is not a file torch.save wrote"):
        _run(folder, out, "--weights", str(h5))
    assert unpickled == [] and not out.exists()
    # torch.save's old format is a pickle: probed with weights_only=True, refused without the flag
    importable, _ = run_model._load_model(f"{folder / 'net.py'}:make", allow_pickle=False)
    with warnings.catch_warnings():   # "Couldn't retrieve source code for container"
        warnings.simplefilter("ignore", UserWarning)
        torch.save(importable, folder / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(SystemExit, match=r"old.pt is a pickled object .* pass --allow-pickle"):
        cli.main(args + ["--model", str(folder / "old.pt")])
    assert unpickled == [True]


def test_run_module_spec_takes_installed_packages_before_the_current_folder(tmp_path,
                                                                             monkeypatch):
    """From a review: for package.module:FACTORY the current folder was put first on sys.path,
    so a folder named like an installed package (a checkout, a stray torchvision.py) replaced
    it silently for the whole import. Installed packages now come first, the current folder
    after them (for modules found nowhere else), and a same-named module there that was not
    used is named in a warning. sys.path is as it was afterwards. A module of the current
    folder whose own import fails says so (it was told to 'run from the folder that holds
    it' when the missing module's name began its name)."""
    import sys

    def package(root, out_features):
        (root / "drtest_shadow").mkdir(parents=True)
        (root / "drtest_shadow" / "__init__.py").write_text("")
        (root / "drtest_shadow" / "models.py").write_text(
            f"from torch import nn\n\ndef make():\n    return nn.Linear(2, {out_features})\n")

    package(tmp_path / "site", 3)           # the installed one
    here = tmp_path / "here"
    package(here, 5)                        # the current folder's
    (here / "drtest_local.py").write_text("from torch import nn\n\ndef make():\n"
                                          "    return nn.Linear(2, 7)\n")
    (here / "drtest_models.py").write_text("import drtest\n")   # its dependency is missing
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(here)
    before = list(sys.path)
    try:
        with pytest.warns(UserWarning, match=r"the installed drtest_shadow \(\S+site\S+\) is "
                                             r"used, not \S+here\S+drtest_shadow"):
            model, file = run_model._load_model("drtest_shadow.models:make", allow_pickle=False)
        assert model.out_features == 3 and file is None and sys.path == before
        with warnings.catch_warnings():
            warnings.simplefilter("error")      # found in the current folder only: no warning
            model, _ = run_model._load_model("drtest_local:make", allow_pickle=False)
        assert model.out_features == 7 and sys.path == before
        with pytest.raises(SystemExit, match=r"--model drtest_models:make: importing "
                                             r"drtest_models raised ModuleNotFoundError: No "
                                             r"module named 'drtest' \(\S+drtest_models.py, line "
                                             r"1\)$"):
            run_model._load_model("drtest_models:make", allow_pickle=False)
        assert sys.path == before
    finally:
        for name in [m for m in sys.modules if m.startswith("drtest_")]:
            del sys.modules[name]


def test_run_json_hashes_the_files_as_they_were_read(user_model, tmp_path, monkeypatch):
    """From a review: run.json's SHA-256 of --model, --weights and --inputs were taken after the
    ascent, so a file replaced during a long run (a retrained sd.pt) was recorded with the new
    bytes, not the ones the numbers came from."""
    import hashlib

    folder, _ = user_model
    names = ("net.py", "sd.pt", "x.npy")
    read = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    ascent = LayerFeatureOptimizer.attribute

    def attribute_then_replace(self, *a, **k):
        for n in names:      # another process rewrites the files while the ascent runs
            with open(folder / n, "ab") as f:
                f.write(b"\n# rewritten\n")
        return ascent(self, *a, **k)

    monkeypatch.setattr(LayerFeatureOptimizer, "attribute", attribute_then_replace)
    out = tmp_path / "out"
    assert _run(folder, out, "--starts", "2", "--target", "0", "--no-plots") == 0
    files = json.loads((out / "run.json").read_text())["files"]
    assert {k: v["sha256"] for k, v in files.items()} == {
        "model": read["net.py"], "weights": read["sd.pt"], "inputs": read["x.npy"]}
    assert files["weights"]["path"] == str((folder / "sd.pt").resolve())


def test_run_json_hashes_the_bytes_parsed_not_a_second_read(user_model, tmp_path, monkeypatch):
    """Each file is read once and parsed from those bytes: a file rewritten right after numpy
    or torch parsed it (or by the model's own factory) is recorded as it was parsed. Before,
    the hash was a second read taken after the parse."""
    import hashlib

    folder, _ = user_model
    names = ("net.py", "sd.pt", "x.npy")
    read = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}

    def rewriting(load, name):    # ``load``, then another process appends to file ``name``
        def wrapped(*a, **k):
            try:
                return load(*a, **k)
            finally:
                with open(folder / name, "ab") as f:
                    f.write(b"\n# rewritten\n")
        return wrapped

    monkeypatch.setattr(np, "load", rewriting(np.load, "x.npy"))
    monkeypatch.setattr(torch, "load", rewriting(torch.load, "sd.pt"))
    monkeypatch.setattr(run_model, "_call_factory", rewriting(run_model._call_factory, "net.py"))
    out = tmp_path / "out"
    assert _run(folder, out, "--starts", "2", "--target", "0", "--no-plots") == 0
    files = json.loads((out / "run.json").read_text())["files"]
    assert {k: v["sha256"] for k, v in files.items()} == {
        "model": read["net.py"], "weights": read["sd.pt"], "inputs": read["x.npy"]}
    assert all(hashlib.sha256((folder / n).read_bytes()).hexdigest() != read[n] for n in names)


def test_run_model_file_runs_without_this_packages_future_imports(tmp_path):
    """From review r1: the model file compiled from its bytes inherited run_model.py's
    ``from __future__ import annotations``, so a dataclass field's type became a string (and
    ``fields(Cfg)[0].type(value)`` failed)."""
    (tmp_path / "cfgnet.py").write_text(
        "import dataclasses, torch\n"
        "@dataclasses.dataclass\nclass Cfg:\n    width: int = 3\n"
        "def make():\n"
        "    width = dataclasses.fields(Cfg)[0].type('5')\n"
        "    return torch.nn.Linear(4, width)\n")
    model, record = run_model._load_model(f"{tmp_path / 'cfgnet.py'}:make", allow_pickle=False)
    assert model.out_features == 5 and record["path"] == str((tmp_path / "cfgnet.py").resolve())


def test_run_model_file_with_a_syntax_error_is_one_line(tmp_path):
    """A model file that does not compile is named with its line once, not followed by the
    frame of the code that compiled it (it was "(<frozen importlib._bootstrap>, line 241)")."""
    (tmp_path / "bad.py").write_text("import torch\ndef make(:\n    pass\n")
    with pytest.raises(SystemExit, match=r"--model \S+bad.py:make: running \S+bad.py raised "
                                         r"SyntaxError: invalid syntax \(bad.py, line 2\)$"):
        run_model._load_model(f"{tmp_path / 'bad.py'}:make", allow_pickle=False)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")
def test_run_model_without_one_output_row_per_example_is_one_line(user_model, tmp_path):
    """From a review: a model with no outputs (a Linear(..., 0) head) or one scalar for the
    whole batch ended in a traceback (IndexError), not in the run's one-line error."""
    folder, _ = user_model
    (folder / "odd.py").write_text(textwrap.dedent("""
        from torch import nn

        class Total(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv1d(4, 3, 5)

            def forward(self, x):
                return self.conv(x).sum()

        def empty():
            return nn.Sequential(nn.Conv1d(4, 3, 5), nn.Flatten(), nn.Linear(48, 0))
        """))
    out = tmp_path / "out"
    for factory, layer, message in (
            ("empty", "0", r"the model returns no outputs \(shape \(1, 0\) for one example\)"),
            ("Total", "conv", r"the model returns a 0-d tensor \(one number for the whole "
                              r"batch\); DeepResolve needs one row per example")):
        with pytest.raises(SystemExit, match=r"^deepresolve run: error: " + message):
            cli.main(["run", "--model", f"{folder / 'odd.py'}:{factory}", "--layer", layer,
                      "--inputs", str(folder / "x.npy"), "--out", str(out), "--quiet"])
    assert not out.exists()
