"""Zoo building blocks without ../shared: model constructors, ``load_zoo`` names, the batched
zoo heads in the models' dtype and device, ``summarize_zoo``'s argument checks and the
``deepresolve zoo`` folder handling, on random ENCODE-architecture models."""
import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer, cli
from deepresolve_captum.zoo import (DeepSEA, EncodeTFModel, EncodeZooHeads, EncodeZooStack, PaperCNN,
                                    load_encode_zoo, load_zoo)
from deepresolve_captum.zoo_summary import summarize_zoo


def random_zoo(n=3, seed=0):
    torch.manual_seed(seed)
    zoo = {f"m{i}": EncodeTFModel(n_filters=4, filter_len=5, n_hidden=6).eval() for i in range(n)}
    for m in zoo.values():  # some units off, scores of both signs, as in trained models
        with torch.no_grad():
            m.fc1.bias.uniform_(-0.5, 0.5)
    return zoo


def write_npz_models(folder, names, seed=0):
    """ENCODE-style npz files (load_encode_model's layout) of random 4-filter models."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = dict(conv_weight=(4, 4, 5), conv_bias=(4,), fc1_weight=(3, 4), fc1_bias=(3,),
                  fc2_weight=(1, 3), fc2_bias=(1,))
    for n in names:
        np.savez(folder / f"{n}.npz", **{k: rng.normal(size=v) for k, v in shapes.items()})


# ------------------------------------------------------------------ item 1: dtype and device
def test_summarize_zoo_runs_float64_models_in_float64():
    zoo = random_zoo()
    for m in zoo.values():
        m.double()
    heads = EncodeZooHeads(zoo)
    assert {p.dtype for p in heads.parameters()} == {torch.float64}
    h = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        ref = torch.cat([m.fc2(m.relu2(m.fc1(h))) for m in zoo.values()], 1)
        np.testing.assert_allclose(heads(h).numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
        x = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 30)), 4).permute(0, 2, 1).double()
        stack = EncodeZooStack(zoo).eval()
        ref = torch.cat([m(x) for m in zoo.values()], 1)
        np.testing.assert_allclose(stack(x).numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    s = summarize_zoo(zoo, n_starts=3, seed=5)
    m = zoo["m1"]
    alone, _ = LayerFeatureOptimizer(m, m.fc1).attribute(
        torch.zeros(1, 4, 30, dtype=torch.float64), target=0, n_starts=3, l2=2.8, seed=5,
        attribute_to_layer_input=True, return_scores=True)
    np.testing.assert_allclose(s.fiv[1], alone[0].numpy(), atol=1e-9)


def test_summarize_zoo_float32_models_under_float64_default():
    zoo = random_zoo()
    ref = summarize_zoo(zoo, n_starts=3, seed=5)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        s = summarize_zoo(zoo, n_starts=3, seed=5)
    finally:
        torch.set_default_dtype(before)
    assert s.fiv.shape == ref.fiv.shape
    np.testing.assert_allclose(s.fiv, ref.fiv, atol=1e-4)



def _two_optima_model(scale):
    """An ENCODE-architecture model whose head is scale * |h_0| (fc1 units scale * h_0 and
    -scale * h_0, each through the ReLU, summed by fc2): at l2 the optima are H = (+-scale /
    (2 l2), 0, 0, 0), and which one a start reaches is the sign of its channel 0. The random
    heads of random_zoo reach one optimum from any start, so they cannot show the starts."""
    m = EncodeTFModel(n_filters=4, filter_len=5, n_hidden=2).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.fc1.weight[0, 0], m.fc1.weight[1, 0] = scale, -scale
        m.fc2.weight[0] = 1.0
    return m


def test_every_model_of_a_zoo_starts_from_the_single_model_draws():
    """summarize_zoo: start t of every model is start_draw(seed, 0, t), whatever its place in
    its group, so a model's result does not depend on the other models of the zoo (without
    ../shared; test_encode's authors' comparison needs it)."""
    from deepresolve_captum.optimizer import start_draw

    T, seed, l2 = 6, 3, 0.5
    scales = [1.0, 1.5, 2.0, 2.5]
    zoo = {f"m{i}": _two_optima_model(sc) for i, sc in enumerate(scales)}
    sign = np.sign(torch.stack([start_draw(seed, 0, t, (4,)) for t in range(T)])[:, 0].numpy())
    assert 0 < (sign > 0).sum() < T                    # both optima are reached
    expect = np.zeros((len(zoo), T, 4))
    expect[:, :, 0] = np.outer(scales, sign) / (2 * l2)
    s = summarize_zoo(zoo, n_starts=T, seed=seed, l2=l2, group_size=3)   # groups m0-m2, m3
    np.testing.assert_allclose(s.fiv, expect, atol=1e-4)
    alone = summarize_zoo({"m2": zoo["m2"]}, n_starts=T, seed=seed, l2=l2)
    np.testing.assert_allclose(alone.fiv[0], s.fiv[2], atol=1e-6)


def test_zoo_of_mixed_dtypes_or_devices_names_the_odd_ones():
    zoo = random_zoo(4)
    zoo["m2"].double()
    with pytest.raises(ValueError, match=r"differ in dtype or device: 3 with float32 on cpu "
                                         r"\(m0, m1, m3\); 1 with float64 on cpu \(m2\)"):
        summarize_zoo(zoo, n_starts=2)
    with pytest.raises(ValueError, match="differ in dtype"):
        EncodeZooHeads(zoo)
    with pytest.raises(ValueError, match="differ in dtype"):
        EncodeZooStack(zoo)
    zoo["m2"].float()
    zoo["m3"].to("meta")  # another device, without needing a GPU
    with pytest.raises(ValueError, match=r"1 with float32 on meta \(m3\)"):
        summarize_zoo(zoo, n_starts=2)


# ------------------------------------------------------------------ item 2: argument checks
def test_summarize_zoo_checks_n_starts_seed_and_names():
    zoo = random_zoo(2)
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="n_starts must be an integer >= 1"):
            summarize_zoo(zoo, n_starts=bad)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        summarize_zoo(zoo, n_starts=2, seed=-1)
    for bad in (1.5, "0", True):
        with pytest.raises(TypeError, match="seed must be a non-negative int"):
            summarize_zoo(zoo, n_starts=2, seed=bad)
    drawn = summarize_zoo(zoo, n_starts=2, seed=None)       # a drawn seed, recorded
    seed = drawn.settings["seed"]
    assert isinstance(seed, int) and seed >= 0
    np.testing.assert_array_equal(summarize_zoo(zoo, n_starts=2, seed=seed).fiv, drawn.fiv)
    assert summarize_zoo(zoo, n_starts=np.int64(2), seed=np.int64(3)).settings["n_starts"] == 2
    with pytest.raises(TypeError, match=r"names must be strings.*\(0, 'a'\)"):
        summarize_zoo({(0, "a"): zoo["m0"], "b": zoo["m1"]}, n_starts=2)


# ------------------------------------------------------------------ item 3: load_zoo names
def test_load_zoo_names_round_trip(tmp_path):
    for n in ("a", "b", "c"):
        (tmp_path / f"{n}_model.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")

    def loader(path):
        m = nn.Linear(1, 1)
        m.path = path
        return m

    for pattern in ("*_model.pt", "*.pt", "*"):
        if pattern == "*":
            (tmp_path / "notes.txt").unlink()
        zoo = load_zoo(tmp_path, loader, pattern=pattern)
        assert list(zoo) == ["a_model", "b_model", "c_model"]
        again = load_zoo(tmp_path, loader, names=list(zoo)[::-1], pattern=pattern)  # round trip
        assert list(again) == ["c_model", "b_model", "a_model"]
        assert again["a_model"].path.name == "a_model.pt"
    # what worked before still works: the name without the pattern's suffix, or the file name
    assert list(load_zoo(tmp_path, loader, names=["b", "a_model.pt", "c_model"],
                         pattern="*_model.pt")) == ["b_model", "a_model", "c_model"]
    with pytest.raises(ValueError, match=r"more than once.*\['a_model'\]"):
        load_zoo(tmp_path, loader, names=["a", "a_model"], pattern="*_model.pt")
    with pytest.raises(FileNotFoundError, match="d_model.pt"):
        load_zoo(tmp_path, loader, names=["d"], pattern="*_model.pt")
    # "a_model" is a_model.pt's key and a_model_model.pt without its suffix: refused, both named
    (tmp_path / "a_model_model.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'a_model' could mean.*a_model.pt.*a_model_model.pt"):
        load_zoo(tmp_path, loader, names=["a_model"], pattern="*_model.pt")
    assert list(load_zoo(tmp_path, loader, names=["a_model.pt"], pattern="*_model.pt")) == ["a_model"]


def test_load_zoo_refuses_a_loader_that_returns_no_module(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"")
    with pytest.raises(TypeError, match=r"loader returned NoneType for .*a.pt, not an nn.Module"):
        load_zoo(tmp_path, lambda p: None, pattern="*.pt")
    with pytest.raises(TypeError, match=r"loader returned dict for .*a.pt"):
        load_zoo(tmp_path, lambda p: {"w": torch.zeros(1)}, pattern="*.pt")


def test_load_zoo_refuses_two_files_with_one_name(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"")
    (tmp_path / "a.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"one name.*\['a.npz', 'a.pt'\]"):
        load_zoo(tmp_path, lambda p: nn.Identity(), pattern="a.*")


# ------------------------------------------------------------------ item 4: the command line
def test_cli_zoo_reads_models_csv_beside_the_models_folder(tmp_path, capsys):
    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB"])
    pd.DataFrame({"name": ["tfA", "tfB"], "jaspar2016_id": ["MA0139.1", "MA0102.3"]}).to_csv(
        data / "models.csv", index=False)
    for folder in (data / "models", data):  # models/ (csv in the parent), or the encode folder
        out = tmp_path / f"out_{folder.name}"
        assert cli.main(["zoo", str(folder), "--out", str(out), "--starts", "2", "--top", "1",
                         "--jaspar", "JASPAR2016"]) == 0
        t = pd.read_csv(out / "filters.csv")
        assert {"known_motif", "known_p", "known_rank"} <= set(t.columns), folder
        assert list(t["known_motif"]) == ["MA0139.1", "MA0102.3"]
        assert "known motifs from" in capsys.readouterr().err
    # another release: the known motif is that release's version of the 2016 base id
    out = tmp_path / "out_2024"
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--top", "1",
                     "--jaspar", "JASPAR2024"]) == 0
    assert list(pd.read_csv(out / "filters.csv")["known_motif"]) == ["MA0139.2", "MA0102.5"]
    capsys.readouterr()
    (data / "models.csv").unlink()
    out = tmp_path / "out_no_csv"
    assert cli.main(["zoo", str(data / "models"), "--out", str(out), "--starts", "2", "--top", "1",
                     "--jaspar", "JASPAR2016"]) == 0
    assert "known_p" not in pd.read_csv(out / "filters.csv").columns
    assert "no models.csv in" in capsys.readouterr().err


def test_cli_zoo_refuses_the_models_folder_as_out(tmp_path, capsys):
    write_npz_models(tmp_path / "models", ["tfA", "tfB"])
    for folder, out in ((tmp_path / "models", tmp_path / "models"),
                        (tmp_path, tmp_path / "models"),           # encode layout: models/ inside
                        (tmp_path / "models", tmp_path / "x" / ".." / "models")):
        with pytest.raises(SystemExit, match="is the models folder"):
            cli.main(["zoo", str(folder), "--out", str(out), "--starts", "2", "--quiet"])
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tfA.npz", "tfB.npz"]
    for _ in range(2):  # beside the models (the encode folder itself) works, run after run
        assert cli.main(["zoo", str(tmp_path), "--out", str(tmp_path), "--starts", "2",
                         "--quiet"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["zoo", "--help"])
    assert "not the models folder itself" in " ".join(capsys.readouterr().out.split())



@pytest.mark.filterwarnings("ignore:target\\(s\\) .* have one start with a non-zero weight")
def test_cli_zoo_failures_leave_no_mixed_or_empty_output(tmp_path, capsys, monkeypatch):
    """From a CLI review: a re-run stopped after summary.npz/ofiv.csv were written left them
    beside the previous run's filters.csv; a bad models.csv or a tiny --l2 gave a traceback
    after (or with) an output folder; Ctrl-C printed a traceback. Now every file of a run is
    moved into place together at the end, errors are one line, an --out folder this run created
    is removed again when it stays empty, and Ctrl-C is 'interrupted', rc 130."""
    from deepresolve_captum import zoo_summary

    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB", "tfC"])
    out = tmp_path / "out"
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["filters.csv", "ofiv.csv", "summary.npz"]

    def stop(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(zoo_summary, "zoo_filter_table", stop)  # the last step before writing
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--seed", "1",
                     "--quiet"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "deepresolve zoo: interrupted"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old run, whole
    monkeypatch.undo()

    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit, match="deepresolve zoo: error: non-finite"):
        cli.main(["zoo", str(data), "--out", str(fresh), "--starts", "2", "--l2", "1e-30",
                  "--quiet"])
    assert not fresh.exists()
    (data / "models.csv").write_text("")
    with pytest.raises(SystemExit, match=r"cannot read .*models.csv: No columns"):
        cli.main(["zoo", str(data), "--out", str(fresh), "--jaspar", "JASPAR2016", "--quiet"])
    assert not fresh.exists()
    with pytest.raises(SystemExit, match=r"--starts 10000000000000 .* needs about .* GiB"):
        cli.main(["zoo", str(data), "--out", str(fresh), "--starts", "10000000000000"])
    assert not fresh.exists()
    # an earlier run's summary.npz left among the models is named as such
    (data / "models.csv").unlink()
    (out / "summary.npz").rename(data / "models" / "summary.npz")
    with pytest.raises(SystemExit, match=r"a DeepResolve summary .* move it out of the models"):
        cli.main(["zoo", str(data), "--out", str(fresh), "--quiet"])


@pytest.mark.filterwarnings("ignore:one start per target")
def test_cli_zoo_records_its_settings_and_says_what_models_csv_lacks(tmp_path, capsys):
    from deepresolve_captum import __version__
    from deepresolve_captum.summary import EnsembleSummary

    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB"])
    pd.DataFrame({"name": ["tfA"], "jaspar2016_id": ["MA0139.1"]}).to_csv(data / "models.csv",
                                                                          index=False)
    out = tmp_path / "out"
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "1", "--top", "2",
                     "--jaspar", "JASPAR2016"]) == 0
    err = capsys.readouterr().err
    assert "1 model(s) have no JASPAR id there" in err and "['tfB']" in err
    # warnings print as one line, without this package's file name and source line
    import warnings
    with cli.one_line_warnings():
        assert warnings.formatwarning("T = 1", UserWarning, "/x/zoo_summary.py", 112) == \
            "deepresolve: warning: T = 1\n"
    assert warnings.formatwarning("T = 1", UserWarning, "/x/zoo_summary.py", 112) != \
        "deepresolve: warning: T = 1\n"
    s = EnsembleSummary.load(out / "summary.npz")
    assert s.settings["jaspar"] == "JASPAR2016" and s.settings["top"] == 2
    assert s.settings["version"] == __version__ and s.settings["group_size"] == 32
    assert s.settings["torch_version"] == torch.__version__
    import sklearn   # enough to repeat the run: versions, threads, the folder
    assert s.settings["sklearn_version"] == sklearn.__version__
    assert s.settings["threads"] >= 1 and Path(s.settings["models_folder"]).is_absolute()
    t = pd.read_csv(out / "filters.csv")
    assert str(t["known_rank"].dtype) == "Int64" or t["known_rank"].dropna().map(float.is_integer).all()
    assert ",1.0," not in (out / "filters.csv").read_text()  # ranks stay integers beside NaNs

# ------------------------------------------------------------------ item 5: too-short seq_len
def test_models_name_the_shortest_seq_len():
    with pytest.raises(ValueError, match=r"PaperCNN: seq_len must be an integer >= 11 .*got 10"):
        PaperCNN(seq_len=10)
    with pytest.raises(ValueError, match=r"seq_len must be an integer >= 16 .*got 15"):
        PaperCNN(seq_len=15, filter_len=8, pool=9)
    assert PaperCNN(seq_len=11)(torch.zeros(2, 4, 11)).shape == (2, 1)
    assert PaperCNN(seq_len=np.int64(50)).fc1.in_features == 32 * 10
    with pytest.raises(ValueError, match=r"DeepSEA: seq_len must be an integer >= 163 .*got 100"):
        DeepSEA(seq_len=100)
    with pytest.raises(ValueError, match=">= 163"):
        DeepSEA(seq_len=162)
    assert DeepSEA(n_outputs=2, seq_len=163)(torch.zeros(1, 4, 163)).shape == (1, 2)


def test_load_zoo_failures_are_value_errors_naming_the_file(tmp_path):
    """A loader error that already named the file used to escape with its own type (here a
    RuntimeError), against the doc's 'raises ValueError naming it'."""
    (tmp_path / "a_model.pt").write_bytes(b"x")

    def naming(path):
        raise RuntimeError(f"cannot parse {path}")

    def silent(path):
        raise KeyError("conv.weight")

    for loader in (naming, silent):
        with pytest.raises(ValueError, match=r"could not load .*a_model\.pt: (Runtime|Key)Error") as e:
            load_zoo(tmp_path, loader, pattern="*_model.pt")
        assert type(e.value.__cause__) in (RuntimeError, KeyError)

    def own(path):   # a ValueError naming the file is already what the doc promises
        raise ValueError(f"{path.name}: not a model")

    with pytest.raises(ValueError, match=r"^a_model\.pt: not a model$"):
        load_zoo(tmp_path, own, pattern="*_model.pt")


def test_load_encode_model_closes_a_truncated_file(tmp_path):
    """np.load left its handle on a truncated npz open (a ResourceWarning, an error under
    -W error) while load_encode_model raised its ValueError."""
    import gc
    import warnings

    from deepresolve_captum.zoo import load_encode_model

    np.savez(tmp_path / "ok.npz", a=np.zeros(100))
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:300])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="trunc.npz: not a readable npz"):
            load_encode_model(tmp_path / "trunc.npz")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_outputs_are_not_mixed_by_a_ctrl_c_between_the_moves(tmp_path, monkeypatch):
    """A Ctrl-C that arrives while the finished outputs are moved into place waits until all
    of them are there: the folder holds one run's files, then KeyboardInterrupt is raised.

    Python's own SIGINT handler is installed for the test: pytest started as a background job
    of a non-interactive shell (``cmd &`` in a script, some CI runners) inherits SIGINT ignored,
    and an ignored SIGINT rightly stays ignored (test_a_deferred_ctrl_c_goes_to_the_handler...)."""
    import os
    import signal

    from deepresolve_captum.cli import write_together

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    real_replace, moved = os.replace, []

    def replace(src, dst):
        real_replace(src, dst)
        moved.append(dst)
        if len(moved) == 1:
            signal.raise_signal(signal.SIGINT)   # the user presses Ctrl-C after the first move

    monkeypatch.setattr(os, "replace", replace)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_together(tmp_path, {n: (lambda p: p.write_text("new"))
                                      for n in ("a.txt", "b.txt")})
    finally:
        signal.signal(signal.SIGINT, before)
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["new", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_failed_move_puts_the_previous_files_back(tmp_path, monkeypatch):
    """A move that fails half-way (e.g. Windows refusing to replace a file open elsewhere)
    leaves the previous run's files, not a mix."""
    import os

    from deepresolve_captum.cli import write_together

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    real = os.replace

    def replace(src, dst):
        if str(src).endswith("b.txt.partial.txt"):
            raise PermissionError("b.txt is open in another program")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        write_together(tmp_path, {n: (lambda p: p.write_text("new")) for n in ("a.txt", "b.txt")})
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_deferred_ctrl_c_goes_to_the_handler_that_was_there(tmp_path):
    import signal

    from deepresolve_captum.cli import _ctrl_c_deferred

    seen = []
    before = signal.signal(signal.SIGINT, lambda *a: seen.append("program's handler"))
    try:
        with _ctrl_c_deferred():
            signal.raise_signal(signal.SIGINT)
            assert seen == []                       # held inside the block
        assert seen == ["program's handler"]        # then given to the program's own handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _ctrl_c_deferred():                    # an ignored SIGINT stays ignored
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)


def test_write_together_refuses_a_folder_in_place_and_leaves_others_files_alone(tmp_path):
    from deepresolve_captum.cli import write_together

    (tmp_path / "a.txt").mkdir()
    with pytest.raises(ValueError, match="something other than a file"):
        write_together(tmp_path, {"a.txt": lambda p: p.write_text("new")})
    assert (tmp_path / "a.txt").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    (tmp_path / "a.txt").rmdir()
    (tmp_path / "a.txt").write_text("old")
    (tmp_path / ".a.txt.previous.txt").write_text("another program's")   # an older helper name
    write_together(tmp_path, {"a.txt": lambda p: p.write_text("new")})
    assert (tmp_path / "a.txt").read_text() == "new"
    assert (tmp_path / ".a.txt.previous.txt").read_text() == "another program's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.txt.previous.txt", "a.txt"]


def test_a_rollback_that_fails_keeps_the_previous_file(tmp_path, monkeypatch):
    import os

    from deepresolve_captum.cli import write_together

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    real = os.replace

    def replace(src, dst):
        if str(src).endswith("b.txt.partial.txt") or ".previous-" in str(src):
            raise PermissionError(f"{src} is locked")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="copies are kept as"):
        write_together(tmp_path, {n: (lambda p: p.write_text("new")) for n in ("a.txt", "b.txt")})
    kept = [p for p in tmp_path.iterdir() if ".previous-" in p.name]
    assert len(kept) == 1 and kept[0].read_text() == "old"    # a's previous file is not lost
    assert (tmp_path / "b.txt").read_text() == "old"


# ------------------------------------------------------------------ review 12 (r3): the command line
def _no_work(*a, **k):
    raise AssertionError("the command did work before refusing its --out")


def test_cli_zoo_output_clash_is_refused_before_any_work(tmp_path, monkeypatch):
    """A folder named like an output (OUT/summary.npz) was refused only by write_together,
    after the whole ascent (and TOMTOM), with a traceback. Now output_folder checks the
    command's output names when it prepares --out."""
    import subprocess
    import sys

    from deepresolve_captum import zoo_summary

    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB"])
    out = tmp_path / "out"
    (out / "filters.csv").mkdir(parents=True)
    (out / "ofiv.csv").write_text("an earlier run")
    monkeypatch.setattr(zoo_summary, "summarize_zoo", _no_work)
    with pytest.raises(SystemExit, match=r"^deepresolve zoo: error: --out .*out holds filters.csv "
                                         r"as something other than a file"):
        cli.main(["zoo", str(data), "--out", str(out), "--quiet"])
    assert (out / "filters.csv").is_dir() and (out / "ofiv.csv").read_text() == "an earlier run"
    # as a user sees it: one line, exit code 1
    r = subprocess.run([sys.executable, "-m", "deepresolve_captum.cli", "zoo", str(data), "--out",
                        str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("deepresolve zoo: error: --out")


# --starts 2 on random models: summarize warns about the one-start weights; not the point here
@pytest.mark.filterwarnings(r"ignore:target\(s\) .* have one start with a non-zero weight:UserWarning")
@pytest.mark.parametrize("fail", ["disk full", "writer ValueError", "move refused"])
def test_cli_zoo_write_failure_is_one_line_and_keeps_the_previous_outputs(tmp_path, capsys,
                                                                          monkeypatch, fail):
    """A full disk while writing ended in three chained OSError tracebacks; a writer's
    ValueError in one. Now: 'deepresolve zoo: error: cannot write OUT/NAME: REASON', and the
    previous run's files stay as they were, with no partial files."""
    import errno
    import os

    from deepresolve_captum.summary import EnsembleSummary

    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB"])
    out = tmp_path / "out"
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if fail == "disk full":
        def save(self, path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        monkeypatch.setattr(EnsembleSummary, "save", save)
        name, reason = "summary.npz", "No space left on device"
    elif fail == "writer ValueError":
        real = pd.DataFrame.to_csv

        def to_csv(self, path, *a, **k):
            if str(path).endswith("filters.csv.partial.csv"):
                raise ValueError("a writer's complaint\nsecond line")
            return real(self, path, *a, **k)
        monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
        name, reason = "filters.csv", "a writer's complaint"
    else:
        real = os.replace

        def replace(src, dst):
            if str(src).endswith("ofiv.csv.partial.csv"):
                raise PermissionError(errno.EACCES, "Permission denied", str(src))
            real(src, dst)
        monkeypatch.setattr(os, "replace", replace)
        name, reason = "ofiv.csv", "Permission denied"
    with pytest.raises(SystemExit) as e:
        cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--seed", "1", "--quiet"])
    assert str(e.value.code) == f"deepresolve zoo: error: cannot write {out / name}: {reason}"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.filterwarnings(r"ignore:target\(s\) .* have one start with a non-zero weight:UserWarning")
@pytest.mark.filterwarnings("ignore:the FIMs of model:RuntimeWarning")   # at l2 = 1e30
def test_cli_out_seed_and_l2_out_of_range_are_usage_errors(tmp_path, capsys, monkeypatch):
    """--out "" (an unset shell variable) wrote into the current folder; --l2 4e38 or 1e300
    and --seed 2**64 passed the parser and crashed with a traceback (the l2 one after the
    loading, the seed one after the data were generated). Now all are argparse errors, before
    anything is made; the bounds are in --help."""
    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA"])
    out = tmp_path / "never"
    monkeypatch.chdir(out.parent)   # where --out "" wrote before
    for cmd, bad, message in (
            ("zoo", ["--out", ""], "argument --out: must name a folder, got an empty string"),
            ("zoo", ["--out", " "], "argument --out: must name a folder, got only blanks (' ')"),
            ("zoo", ["--out", str(out), "--l2", "4e38"], "argument --l2: must be <= 1e30"),
            ("zoo", ["--out", str(out), "--l2", "1e300"], "argument --l2: must be <= 1e30"),
            ("zoo", ["--out", str(out), "--seed", str(2**63)], "argument --seed: must be < 2**63"),
            ("demo", ["--out", ""], "argument --out: must name a folder"),
            ("demo", ["--out", str(out), "--seed", str(2**64)], "argument --seed: must be < 2**63")):
        with pytest.raises(SystemExit) as e:
            cli.main([cmd] + ([str(data)] if cmd == "zoo" else []) + bad)
        assert e.value.code == 2, bad
        assert message in capsys.readouterr().err, bad
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encode"]
    with pytest.raises(SystemExit, match="--out is empty"):   # the library path too
        cli.output_folder("", "zoo")
    with pytest.raises(SystemExit):
        cli.main(["zoo", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "(0, 1e30]" in help_ and "[0, 2**63)" in help_
    # the largest values the parser takes do run
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--l2", "1e30",
                     "--seed", str(2**63 - 1), "--quiet"]) == 0


def test_cli_zoo_runtime_error_of_the_ascent_is_one_line(tmp_path, monkeypatch):
    """torch's 'value cannot be converted to type float without overflow' (a RuntimeError)
    escaped _run, which caught only ValueError."""
    from deepresolve_captum import zoo_summary

    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA"])

    def overflow(*a, **k):
        raise RuntimeError("value cannot be converted to type float without overflow")

    monkeypatch.setattr(zoo_summary, "summarize_zoo", overflow)
    with pytest.raises(SystemExit) as e:
        cli.main(["zoo", str(data), "--out", str(tmp_path / "o" / "p"), "--quiet"])
    assert e.value.code == ("deepresolve zoo: error: value cannot be converted to type float "
                            "without overflow")
    assert not (tmp_path / "o").exists()   # the folders this run made are gone again


def test_cli_zoo_records_the_threads_of_the_ascent_not_those_after_tomtom(tmp_path, monkeypatch):
    """With --jaspar, TOMTOM (numba's OpenMP) reset torch's thread count, and provenance(),
    read after it, recorded 2 threads for an ascent run with --threads 1."""
    import torch

    from deepresolve_captum import zoo_summary
    from deepresolve_captum.summary import EnsembleSummary

    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB"])
    real = zoo_summary.zoo_filter_table

    def table_that_changes_threads(*a, **k):
        torch.set_num_threads(2)
        return real(*a, **k)

    monkeypatch.setattr(zoo_summary, "zoo_filter_table", table_that_changes_threads)
    before = torch.get_num_threads()
    try:
        assert cli.main(["zoo", str(data), "--out", str(tmp_path / "out"), "--starts", "2",
                         "--threads", "1", "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    assert EnsembleSummary.load(tmp_path / "out" / "summary.npz").settings["threads"] == 1


def test_summarize_zoo_warnings_name_the_models(monkeypatch):
    """'target(s) [220, 261] (positions in fims)' meant nothing to a command-line user:
    summarize_zoo passes the model names to summarize."""
    import warnings

    from deepresolve_captum import zoo_summary

    real, seen = zoo_summary.summarize, []

    def summarize(fims, scores, **k):
        seen.append(k.get("target_names"))
        scores = scores.clone()
        scores[1] = torch.tensor([1.0, -1.0])    # model m1: one start weighted
        return real(fims, scores, **k)

    monkeypatch.setattr(zoo_summary, "summarize", summarize)
    zoo = random_zoo(3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        zoo_summary.summarize_zoo(zoo, n_starts=2)
    assert seen == [["m0", "m1", "m2"]]
    msgs = [str(w.message) for w in rec if "one start with a non-zero weight" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith("target(s) ['m1'] have one start")


def test_a_flat_models_folder_keeps_its_models_after_out_folder_models(tmp_path, capsys):
    """For a flat folder of models, --out FOLDER/models was accepted and the next run took
    that output folder for the models folder (and refused its summary.npz). Now a models/
    subfolder is the models folder only when it holds model files."""
    from deepresolve_captum.summary import EnsembleSummary
    from deepresolve_captum.zoo import encode_models_folder

    flat = tmp_path / "flat"
    write_npz_models(flat, ["tfA", "tfB"])
    assert cli.main(["zoo", str(flat), "--out", str(flat / "models"), "--starts", "2",
                     "--quiet"]) == 0
    assert encode_models_folder(flat) == flat
    assert cli.main(["zoo", str(flat), "--out", str(tmp_path / "again"), "--starts", "2",
                     "--quiet"]) == 0
    assert EnsembleSummary.load(tmp_path / "again" / "summary.npz").settings["models"] == \
        ["tfA", "tfB"]
    empty = tmp_path / "e"
    (empty / "models").mkdir(parents=True)
    assert encode_models_folder(empty) == empty                    # an empty models/ too
    (empty / "models" / "x.npz").write_text("not a zip")           # a broken model file counts:
    assert encode_models_folder(empty) == empty / "models"         # loading it names the problem
    # other npz files in models/ beside a flat folder of models: the example's channel_pwms.npz,
    # a temporary file a killed writer left; the flat folder stays the models folder
    np.savez(flat / "models" / "channel_pwms.npz", pwms=np.ones((2, 4, 5)))
    (flat / "models" / ".summary.npz.1.ab.partial.npz").write_bytes(b"PK\x03\x04 truncated")
    assert encode_models_folder(flat) == flat
    assert cli.main(["zoo", str(flat), "--out", str(tmp_path / "third"), "--starts", "2",
                     "--quiet"]) == 0
    (flat / ".tfZ.npz").write_bytes(b"hidden, not a model")        # hidden files are skipped
    assert list(load_encode_zoo(flat)) == ["tfA", "tfB"]
    from deepresolve_captum.zoo import load_encode_model
    with pytest.raises(ValueError, match=r"\.tfZ\.npz"):           # unless the pattern asks
        load_zoo(flat, load_encode_model, pattern=".*.npz")
    write_npz_models(flat / "models", ["tfC"])     # models in both: which set is ambiguous
    with pytest.raises(ValueError, match=r"holds 2 ENCODE model file\(s\) and its models/ "
                                         r"subfolder 1 more: .* ambiguous"):
        encode_models_folder(flat)                 # (review 15b F1: models/ won, silently)
    (flat / "tfA.npz").unlink(), (flat / "tfB.npz").unlink()
    assert encode_models_folder(flat) == flat / "models"


def test_cli_says_which_outputs_of_an_earlier_run_it_replaced(tmp_path, capsys):
    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA", "tfB"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "ofiv.csv").write_text("an earlier run")
    (out / "notes.txt").write_text("the user's")
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("wrote summary.npz, ofiv.csv and filters.csv to")
    assert last.endswith("; replaced ofiv.csv from an earlier run")
    assert cli.main(["zoo", str(data), "--out", str(out), "--starts", "2"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "; replaced summary.npz, ofiv.csv, filters.csv from an earlier run")
    assert (out / "notes.txt").read_text() == "the user's"
    fresh = tmp_path / "fresh"
    assert cli.main(["zoo", str(data), "--out", str(fresh), "--starts", "2"]) == 0
    assert "replaced" not in capsys.readouterr().err


def test_a_failed_run_removes_every_folder_it_created(tmp_path, capsys):
    """Only the --out leaf was recorded: --out par/a/b of a failed run left par/a behind."""
    data = tmp_path / "encode"
    write_npz_models(data / "models", ["tfA"])
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "par" / "a" / "b", tmp_path / "kept" / "x" / "y"):
        with pytest.raises(SystemExit, match="deepresolve zoo: error: non-finite"):
            cli.main(["zoo", str(data), "--out", str(out), "--starts", "2", "--l2", "1e-30",
                      "--quiet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encode", "kept"]
    assert list((tmp_path / "kept").iterdir()) == []      # there before: left alone
    out = tmp_path / "par" / "a" / "b"                     # one that is not empty stays
    out.mkdir(parents=True)
    (tmp_path / "par" / "mine.txt").write_text("x")
    with pytest.raises(SystemExit):
        cli.main(["zoo", str(data), "--out", str(out / "c" / ".." / "d"), "--l2", "1e-30",
                  "--quiet"])
    assert sorted(p.name for p in (tmp_path / "par").iterdir()) == ["a", "mine.txt"]
    assert list(out.iterdir()) == []


def test_all_zero_fims_are_named_by_model(tmp_path):
    """The optimizer's 'FIMs of target(s) [0] are all zero' counted positions within a group of
    models: from summarize_zoo, the warning names the models (once, at the caller's line)."""
    write_npz_models(tmp_path / "models", ["tfA", "tfB", "tfC"])
    zoo = load_encode_zoo(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"the FIMs of model\(s\) \['tfA', 'tfB', 'tfC'\] "
                                            r"are all zero") as rec:
        summarize_zoo(zoo, l2=1e30, n_starts=2, group_size=2, seed=0)
    zero = [w for w in rec if "are all zero" in str(w.message)]
    assert len(zero) == 1 and zero[0].filename == __file__
    assert not any("target(s)" in str(w.message) and "all zero" in str(w.message) for w in rec)


@pytest.mark.parametrize("key, shape", [("conv_bias", (5,)), ("fc1_bias", (2,)),
                                        ("fc2_bias", (2,)), ("fc1_weight", (12,))])
def test_load_encode_model_names_every_wrong_shape_in_one_value_error(tmp_path, key, shape):
    """From review 14: a bias of the wrong length passed the shape check and surfaced as
    load_state_dict's RuntimeError."""
    from deepresolve_captum.zoo import load_encode_model

    write_npz_models(tmp_path, ["m"])
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = np.zeros(shape)
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=rf"m\.npz: .*{key}"):
        load_encode_model(tmp_path / "m.npz")


def test_load_encode_model_says_when_an_npz_holds_python_objects(tmp_path):
    from deepresolve_captum.zoo import load_encode_model

    np.savez(tmp_path / "m.npz", conv_weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds Python objects") as e:
        load_encode_model(tmp_path / "m.npz")
    assert "truncated" not in str(e.value)


def test_loading_a_zoo_from_a_model_file_names_the_one_model_loader(tmp_path):
    """From review 14: load_encode_zoo(<an .npz file>) said "no such folder" for a path that
    exists."""
    from deepresolve_captum.zoo import load_encode_zoo

    write_npz_models(tmp_path, ["a"])
    with pytest.raises(NotADirectoryError, match=r"a\.npz is a file, not a folder of models "
                                                 r"\(one model: load_encode_model\(path\)\)"):
        load_encode_zoo(tmp_path / "a.npz")
