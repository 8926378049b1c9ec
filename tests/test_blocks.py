"""attribute_in_blocks: blocks give what one attribute call gives, lambda is chosen once for the
whole run, an interrupted or damaged run resumes computing only what is missing, other
settings are refused by name, and the model is left exactly as found."""
import json
import os

import numpy as np
import pytest
import torch

from deepresolve_captum import LayerFeatureOptimizer
from deepresolve_captum.blocks import attribute_in_blocks, load_blocks
from deepresolve_captum.zoo import PaperCNN

N_OUT, N_STARTS, STEPS = 40, 2, 200


def _model():
    torch.manual_seed(0)
    return PaperCNN(n_outputs=N_OUT, seq_len=50).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.nn.functional.one_hot(torch.randint(0, 4, (32, 50), generator=g), 4) \
        .permute(0, 2, 1).float()


class Counter:
    """A callback that counts ascents (chunks start at step 1; one chunk per block here) and can
    raise KeyboardInterrupt when the ascent of a given block starts."""

    def __init__(self, interrupt_at=None):
        self.chunks = 0
        self.interrupt_at = interrupt_at

    def __call__(self, step, rows, objective):
        if step == 1:
            self.chunks += 1
            if self.interrupt_at is not None and self.chunks == self.interrupt_at:
                raise KeyboardInterrupt


def _close(a, b, rel=1e-3):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rel * float(b.abs().max())


def _run(opt, x, folder, **kw):
    args = dict(folder=folder, block_size=10, n_starts=N_STARTS, seed=0, max_steps=STEPS)
    args.update(kw)
    return attribute_in_blocks(opt, x, **args)


def test_blocks_equal_one_call_and_auto_lambda_is_the_full_lists(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    fivs, scores = _run(opt, x, tmp_path / "run", block_size=16)
    lam = opt.diagnostics.l2
    assert fivs.device.type == "cpu" and fivs.shape == (N_OUT, N_STARTS, 32)
    assert scores.shape == (N_OUT, N_STARTS)
    assert opt.diagnostics.steps.shape == (N_OUT, N_STARTS)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["l2"] == lam

    ref, ref_scores = opt.attribute(x, None, n_starts=N_STARTS, l2="auto", seed=0,
                                    max_steps=STEPS, fiv_only=True, return_scores=True)
    assert lam == pytest.approx(opt.diagnostics.l2, rel=1e-12)   # the whole list's "auto"
    # ... which per-block "auto" would not give: the test above can fail
    first_block = opt.choose_l2(x, list(range(16)), seed=0, max_steps=STEPS)
    assert first_block != pytest.approx(lam, rel=1e-3)
    _close(fivs, ref)
    _close(scores, ref_scores)

    # whole FIMs, targets out of order and split over blocks: attribute's layout and order.
    # (At the default tol=1e-5 one start's FIM here differs by 1.03e-3 of the max between
    # batches of 4 and 10 rows: where the stopping rule fires; tol=1e-6 gives ~1e-4.)
    tg = [5, 39, 0, 17, 3]
    fims, sc = _run(opt, x, tmp_path / "fims", target=tg, block_size=2, l2=lam, fiv_only=False,
                    tol=1e-6)
    ref, ref_scores = opt.attribute(x, tg, n_starts=N_STARTS, l2=lam, seed=0, max_steps=STEPS,
                                    tol=1e-6, return_scores=True)
    assert fims.shape == (5, N_STARTS, 32, 10)
    _close(fims, ref)
    _close(sc, ref_scores)
    r = load_blocks(tmp_path / "fims")
    assert r.complete and r.targets.tolist() == tg and r.values.shape == (5, N_STARTS, 32, 10)
    np.testing.assert_array_equal(r.values, fims.numpy())


def test_interrupt_then_resume_computes_only_missing_blocks(tmp_path, monkeypatch):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    ref, ref_scores = _run(opt, x, tmp_path / "ref", seed=None)       # 4 blocks of 10
    seed = json.loads((tmp_path / "ref" / "run.json").read_text())["seed"]
    assert isinstance(seed, int)

    folder = tmp_path / "run"
    stop = Counter(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        _run(opt, x, folder, seed=seed, callback=stop)
    names = sorted(os.listdir(folder))
    assert names == ["block_00000.npz", "run.json"]          # block 0 kept, no temp file
    partial = load_blocks(folder)
    assert partial.blocks_done == [0] and partial.blocks_missing == [1, 2, 3]
    assert partial.done.tolist() == [True] * 10 + [False] * 30
    assert np.isnan(partial.values[10:]).all()
    np.testing.assert_array_equal(partial.values[:10], ref[:10].numpy())
    kept = os.stat(folder / "block_00000.npz").st_mtime_ns

    # the resume reads lambda and the seed back (choose_l2 must not run again)
    monkeypatch.setattr(opt, "choose_l2", lambda *a, **k: pytest.fail("choose_l2 re-ran"))
    count = Counter()
    fivs, scores = _run(opt, x, folder, seed=None, callback=count)
    assert count.chunks == 3
    assert os.stat(folder / "block_00000.npz").st_mtime_ns == kept
    assert torch.equal(fivs, ref) and torch.equal(scores, ref_scores)
    assert opt.diagnostics.settings["blocks_computed"] == 3

    # one block file deleted: only that block is computed again
    (folder / "block_00002.npz").unlink()
    count = Counter()
    fivs, scores = _run(opt, x, folder, seed=seed, callback=count)
    assert count.chunks == 1
    assert torch.equal(fivs, ref) and torch.equal(scores, ref_scores)
    count = Counter()
    _run(opt, x, folder, seed=seed, callback=count)
    assert count.chunks == 0


def test_truncated_block_is_recomputed_with_a_warning(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    folder = tmp_path / "run"
    ref, ref_scores = _run(opt, x, folder, l2=0.02)
    path = folder / "block_00001.npz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.warns(RuntimeWarning, match="block_00001.npz cannot be used"):
        r = load_blocks(folder)
    assert r.blocks_missing == [1] and not r.done[10:20].any() and r.done[20:].all()
    count = Counter()
    with pytest.warns(RuntimeWarning, match="recomputing block 1"):
        fivs, scores = _run(opt, x, folder, l2=0.02, callback=count)
    assert count.chunks == 1
    assert torch.equal(fivs, ref) and torch.equal(scores, ref_scores)
    r = load_blocks(folder)
    assert r.complete and torch.equal(torch.from_numpy(r.values), ref)


def test_other_settings_are_refused_by_name(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    folder = tmp_path / "run"
    _run(opt, x, folder, target=list(range(20)))
    lam = opt.diagnostics.l2
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    changed = dict(n_starts=dict(n_starts=3), seed=dict(seed=1), l2=dict(l2=2 * lam),
                   max_steps=dict(max_steps=100), tol=dict(tol=1e-3),
                   fiv_only=dict(fiv_only=False), block_size=dict(block_size=5),
                   targets=dict(target=list(range(21))),
                   attribute_to_layer_input=dict(attribute_to_layer_input=True))
    for name, kw in changed.items():
        args = dict(target=list(range(20)))
        args.update(kw)
        with pytest.raises(ValueError, match=rf"{name}: the folder has .*new folder"):
            _run(opt, x, folder, **args)
    with pytest.raises(ValueError, match=r"inputs\[0\]\.sha256: the folder has"):
        _run(opt, x[torch.arange(31, -1, -1)], folder, target=list(range(20)))
    with pytest.raises(ValueError, match=r"n_starts: .*; seed: "):    # every difference named
        _run(opt, x, folder, target=list(range(20)), n_starts=3, seed=1)
    bias = model.fc2.bias.detach().clone()
    with torch.no_grad():
        model.fc2.bias[0] += 1.0
    with pytest.raises(ValueError, match=r"model\.sha256: the folder has"):
        _run(opt, x, folder, target=list(range(20)))
    with torch.no_grad():
        model.fc2.bias.copy_(bias)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    # the recorded lambda given as a number, or "auto" again, resumes the "auto" run
    count = Counter()
    _run(opt, x, folder, target=list(range(20)), l2=lam, callback=count, chunk_size=7)
    assert count.chunks == 0


def test_bad_arguments(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        _run(opt, x, afile)
    with pytest.raises(ValueError, match="block_size"):
        _run(opt, x, tmp_path / "a", block_size=0)
    with pytest.raises(ValueError, match="init"):
        _run(opt, x, tmp_path / "a", init=torch.zeros(N_OUT, N_STARTS, 32, 10))
    with pytest.raises(TypeError, match="return_scores"):
        _run(opt, x, tmp_path / "a", return_scores=True)
    with pytest.raises(TypeError, match="n_start"):
        _run(opt, x, tmp_path / "a", n_start=3)
    with pytest.raises(ValueError, match="max_steps"):
        _run(opt, x, tmp_path / "a", max_steps=0)
    assert not (tmp_path / "a").exists()                 # nothing written for a bad call
    # interrupted in block 0: run.json but no finished block, so other settings start over
    with pytest.raises(KeyboardInterrupt):
        _run(opt, x, tmp_path / "a", l2=0.02, callback=Counter(interrupt_at=1))
    assert sorted(os.listdir(tmp_path / "a")) == ["run.json"]
    with pytest.warns(UserWarning, match="max_steps: the folder has 200, this call 300.*no "
                                         "finished block"):
        _run(opt, x, tmp_path / "a", l2=0.02, max_steps=300, block_size=20)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["max_steps"] == 300
    # chunking passes through and changes nothing beyond the stopping tolerance
    ref, _ = _run(opt, x, tmp_path / "b", l2=0.02)
    chunked, _ = _run(opt, x, tmp_path / "c", l2=0.02, chunk_size=7)
    assert opt.diagnostics.n_chunks == 4 * 3
    _close(chunked, ref)


def test_model_is_left_as_found(tmp_path):
    model, x = _model(), _inputs()
    model.train()
    model.fc1.eval()
    model.conv.bias.requires_grad_(False)
    modes = [(n, m.training) for n, m in model.named_modules()]
    grads = [(n, p.requires_grad) for n, p in model.named_parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = LayerFeatureOptimizer(model, model.pool)
    with pytest.raises(KeyboardInterrupt):
        _run(opt, x, tmp_path / "run", callback=Counter(interrupt_at=2))
    _run(opt, x, tmp_path / "run")
    assert [(n, m.training) for n, m in model.named_modules()] == modes
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == grads
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_files_get_umask_permissions_and_symlinks_stay_links(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    folder = tmp_path / "run"
    # a block file that is a link to a file elsewhere (e.g. on another disk), unreadable:
    # recomputed and written through the link, which stays a link
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere.npz"
    elsewhere.write_bytes(b"not an npz")
    os.chmod(elsewhere, 0o640)
    (folder / "block_00001.npz").symlink_to(elsewhere)
    old = os.umask(0o022)
    try:
        with pytest.warns(RuntimeWarning, match="recomputing block 1"):
            _run(opt, x, folder, target=list(range(20)), l2=0.02)
    finally:
        os.umask(old)
    for name in ("run.json", "block_00000.npz"):
        assert os.stat(folder / name).st_mode & 0o777 == 0o644, name
    assert (folder / "block_00001.npz").is_symlink()
    assert os.stat(elsewhere).st_mode & 0o777 == 0o640          # the file's own permissions
    r = load_blocks(folder)
    assert r.complete and sorted(os.listdir(folder)) == [
        "block_00000.npz", "block_00001.npz", "run.json"]        # no temporary or probe file


def test_unwritable_folder_fails_before_any_model_work(tmp_path, monkeypatch):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    calls = []
    monkeypatch.setattr(opt, "choose_l2", lambda *a, **k: calls.append(1) or 0.02)
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(OSError) as e:
        _run(opt, x, afile / "run")
    assert calls == []                                   # refused before the l2="auto" probes
    assert "cannot use" in str(e.value) and str(afile / "run") in str(e.value)


def test_l2_true_is_refused(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    with pytest.raises(ValueError, match="l2 must be"):
        opt.attribute(x, [0], l2=True)                     # as attribute refuses it
    for bad in (dict(l2=True), dict(n_starts=True), dict(block_size=True)):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            _run(opt, x, tmp_path / "a", **bad)
    assert not (tmp_path / "a").exists()


def test_run_json_of_another_format_or_version_is_refused(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    folder = tmp_path / "run"
    _run(opt, x, folder, target=list(range(10)), l2=0.02)
    run_file = folder / "run.json"
    good = json.loads(run_file.read_text())
    assert good["format"] == 1
    run_file.write_text(json.dumps(dict(good, format=99)))
    msg = "written by another version of deepresolve_captum .*: format 99, this version reads 1"
    with pytest.raises(ValueError, match=msg):
        _run(opt, x, folder, target=list(range(10)), l2=0.02)
    with pytest.raises(ValueError, match=msg):
        load_blocks(folder)
    del good["model"]
    run_file.write_text(json.dumps(good))
    for call in (lambda: _run(opt, x, folder, target=list(range(10)), l2=0.02),
                 lambda: load_blocks(folder)):
        with pytest.raises(ValueError, match=r"written by another version .*no \['model'\]"):
            call()


class _Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean(2))


def test_layer_not_reached_or_called_twice_is_refused_before_run_json(tmp_path):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, torch.nn.Conv1d(4, 8, 3))       # not in the model
    with pytest.raises(ValueError) as by_attribute:
        opt.attribute(x, [0], l2=0.02)
    with pytest.raises(ValueError) as by_blocks:
        _run(opt, x, tmp_path / "run", l2=0.02)
    assert str(by_blocks.value) == str(by_attribute.value)
    assert "was not reached by the forward pass" in str(by_blocks.value)
    assert not (tmp_path / "run").exists()             # refused before the folder is made
    twice = _Twice().eval()
    opt = LayerFeatureOptimizer(twice, twice.conv)
    with pytest.raises(ValueError, match="is called 2 times per forward pass"):
        _run(opt, x, tmp_path / "twice", l2=0.02)
    assert not (tmp_path / "twice").exists()


def test_a_finished_run_on_a_read_only_file_system_resumes(tmp_path, monkeypatch):
    """EROFS (a read-only mount) is a plain OSError, not a PermissionError: a finished run must
    still resume there (it only reads), an unfinished one is refused before any work."""
    import errno

    from deepresolve_captum import blocks

    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    values, scores = _run(opt, x, tmp_path / "run", l2=0.02)
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(blocks.os, "open", read_only)
    again, _ = _run(opt, x, tmp_path / "run", l2=0.02)
    assert torch.equal(again, values)

    def full_disk(path, flags, *args):          # over quota / full: resuming only reads
        if flags & (os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(blocks.os, "open", full_disk)
    assert torch.equal(_run(opt, x, tmp_path / "run", l2=0.02)[0], values)
    monkeypatch.setattr(blocks.os, "open", read_only)
    os.remove(tmp_path / "run" / "block_00001.npz")
    with pytest.raises(OSError, match="cannot use .*Read-only") as e:
        _run(opt, x, tmp_path / "run", l2=0.02)
    assert e.value.errno == errno.EROFS
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")] == []


def test_warnings_point_at_the_callers_line_and_a_duplicate_is_warned_once(tmp_path):
    import warnings

    model = _model()
    opt = LayerFeatureOptimizer(model, model.pool)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        attribute_in_blocks(opt, _inputs()[:1], target=[0, 0, 1], folder=tmp_path / "run",
                            block_size=2, n_starts=2, seed=0, max_steps=20)
    texts = [str(w.message) for w in rec]
    assert {w.filename for w in rec} == {__file__}, [(w.filename, w.lineno) for w in rec]
    assert sum("duplicate" in t for t in texts) == 1
    assert any("one example" in t for t in texts) and any("max_steps" in t for t in texts)


def test_a_run_interrupted_before_run_json_leaves_no_empty_folder(tmp_path, monkeypatch):
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(opt, "choose_l2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(opt, x, tmp_path / "new" / "run", l2="auto")
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "mine").mkdir()                          # a folder the user made stays
    with pytest.raises(KeyboardInterrupt):
        _run(opt, x, tmp_path / "mine", l2="auto")
    assert (tmp_path / "mine").is_dir()


class _Sampling(torch.nn.Module):
    """MC-dropout style: train() also switches a sampling flag of its own."""

    def __init__(self):
        super().__init__()
        self.sampling = False

    def train(self, mode=True):
        self.sampling = mode
        return super().train(mode)

    def forward(self, h):
        return h


def test_a_submodule_train_override_in_another_mode_than_the_root_comes_back(tmp_path):
    # model.eval(); model.mc.train(): the probe before the first block put mc.training back by
    # setting the flag, which left mc.sampling False (its train(True) never ran). attribute
    # repairs it when it runs; a call refused after the probe (other settings) did not.
    model, x = _model(), _inputs()
    model.fc1 = torch.nn.Sequential(model.fc1, _Sampling())
    model.eval()
    model.fc1[1].train()
    assert model.fc1[1].sampling and model.fc1[1].training
    opt = LayerFeatureOptimizer(model, model.pool)
    _run(opt, x, tmp_path / "run", target=[0, 1], l2=0.02)
    assert model.fc1[1].training and model.fc1[1].sampling
    with pytest.raises(ValueError, match="l2"):
        _run(opt, x, tmp_path / "run", target=[0, 1], l2=0.03)
    assert model.fc1[1].training and model.fc1[1].sampling
    assert not model.training and not model.fc1[0].training


def test_scores_in_bfloat16_with_a_float32_layer(tmp_path):
    # the scores keep the output's dtype: a float32 layer under a bfloat16 head gave bfloat16
    # scores, which numpy cannot hold (the block was converted only when the layer was bf16)
    class Bf16Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _model()

        def forward(self, x):
            return self.body(x).bfloat16()

    model, x = Bf16Head().eval(), _inputs()
    opt = LayerFeatureOptimizer(model, model.body.pool)
    fivs, scores = _run(opt, x, tmp_path / "run", target=[0, 1, 2], l2=0.02, block_size=2)
    assert fivs.dtype == torch.float32 and scores.dtype == torch.float32
    ref, ref_scores = opt.attribute(x, [0, 1, 2], n_starts=N_STARTS, l2=0.02, seed=0,
                                    max_steps=STEPS, fiv_only=True, return_scores=True)
    _close(fivs, ref)
    _close(scores, ref_scores.float(), rel=1e-2)
    r = load_blocks(tmp_path / "run")
    assert r.complete and np.array_equal(r.scores, scores.numpy())


def test_a_cut_short_block_file_is_closed(tmp_path):
    """np.load(path) on a block file that is not a whole zip raised with its file still open
    (a ResourceWarning when collected); _read_block opens and closes the file itself."""
    import gc
    import warnings

    model, x = _model(), _inputs()
    folder = tmp_path / "run"
    _run(LayerFeatureOptimizer(model, model.pool), x[:4], folder, target=[0, 1], block_size=1,
         l2=0.02)
    (folder / "block_00000.npz").write_bytes(b"PK\x03\x04cut short")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = load_blocks(folder)
        gc.collect()
    assert r.blocks_missing == [0]
    assert [str(w.message) for w in rec if issubclass(w.category, ResourceWarning)] == []
    assert any("block_00000.npz cannot be used" in str(w.message) for w in rec)


def test_a_failing_first_forward_gets_attributes_hint(tmp_path):
    """attribute adds a hint to a model error on the first example (its shape; a dtype other
    than the model's); attribute_in_blocks, which runs that forward itself first, did not.
    Both now say the same, and no folder is made."""
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    for bad, says in ((x[:, :3], r"the model failed on the first example of `inputs`, shape "
                                 r"\(1, 3, 50\)"),
                      (x.double(), r"`inputs` are torch.float64 but the model's parameters "
                                   r"are torch.float32: cast the inputs")):
        with pytest.raises(RuntimeError, match=says) as by_attribute:
            opt.attribute(bad, [0], l2=0.02)
        with pytest.raises(RuntimeError, match=says) as by_blocks:
            _run(opt, bad, tmp_path / "run", target=[0], l2=0.02)
        assert str(by_blocks.value) == str(by_attribute.value)
        assert not (tmp_path / "run").exists()

    class FailsOnce(torch.nn.Module):        # the probe's second forward passes: error as it was
        def __init__(self):
            super().__init__()
            self.net, self.calls = _model(), 0

        def forward(self, v):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("transient")
            return self.net(v)
    once = FailsOnce().eval()
    with pytest.raises(RuntimeError, match=r"^transient$"):
        _run(LayerFeatureOptimizer(once, once.net.pool), x, tmp_path / "once", target=[0], l2=0.02)


def test_diagnostics_keep_the_scores_computed_or_read_back(tmp_path):
    """attribute keeps its scores in diagnostics.scores (801b858), so that summarize(fims,
    opt.diagnostics.scores) works; attribute_in_blocks' diagnostics had scores=None. They are
    the returned scores now (a copy), also when every block is read back."""
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    for _ in range(2):                                   # computed, then read back
        fivs, scores = _run(opt, x[:4], tmp_path / "run", target=[0, 1, 2], block_size=2,
                            l2=0.02)
        d = opt.diagnostics.scores
        assert isinstance(d, np.ndarray) and d.shape == (3, N_STARTS)
        assert np.array_equal(d, scores.numpy())
        scores[0, 0] = 123.0                              # the caller's tensor is theirs
        assert d[0, 0] != 123.0
    assert opt.diagnostics.settings["blocks_read"] == 2


def _foreign_block_setup(tmp_path):
    """A finished run 'a' of six targets in blocks of three (seed 0) and its reference values."""
    model, x = _model(), _inputs()
    opt = LayerFeatureOptimizer(model, model.pool)
    kw = dict(target=list(range(6)), block_size=3, l2=0.02)
    ref, ref_scores = _run(opt, x[:4], tmp_path / "a", **kw)
    return opt, x[:4], kw, ref, ref_scores


def test_a_block_file_of_another_run_is_recomputed(tmp_path):
    """load_blocks: a block file 'that belongs to another run, counts as missing, with a
    warning'; attribute_in_blocks recomputes it. Block 1 of a seed-1 run (same targets, same
    shape: only its run_id tells it apart) copied into a seed-0 run must not be read as its."""
    import shutil

    opt, x, kw, ref, ref_scores = _foreign_block_setup(tmp_path)
    other, _ = _run(opt, x, tmp_path / "b", seed=1, **kw)
    assert not torch.equal(other[3:], ref[3:])          # its values would show if it were read
    shutil.copy(tmp_path / "b" / "block_00001.npz", tmp_path / "a" / "block_00001.npz")
    with pytest.warns(RuntimeWarning, match="block_00001.npz cannot be used .*another run"):
        r = load_blocks(tmp_path / "a")
    assert r.blocks_done == [0] and r.blocks_missing == [1] and not r.done[3:].any()
    count = Counter()
    with pytest.warns(RuntimeWarning, match="another run.*recomputing block 1"):
        fivs, scores = _run(opt, x, tmp_path / "a", callback=count, **kw)
    assert count.chunks == 1
    assert torch.equal(fivs, ref) and torch.equal(scores, ref_scores)


def test_a_block_file_under_another_blocks_name_is_recomputed(tmp_path):
    """block_00000.npz copied over block_00001.npz in the same run (same run_id, same shape):
    its targets (0-2) are not block 1's (3-5), so it is recomputed, with a warning, not
    returned as targets 3-5."""
    import shutil

    opt, x, kw, ref, ref_scores = _foreign_block_setup(tmp_path)
    assert not torch.equal(ref[:3], ref[3:])
    shutil.copy(tmp_path / "a" / "block_00000.npz", tmp_path / "a" / "block_00001.npz")
    with pytest.warns(RuntimeWarning, match="block_00001.npz cannot be used .*targets are not "
                                            "this block's"):
        r = load_blocks(tmp_path / "a")
    assert r.blocks_missing == [1]
    count = Counter()
    with pytest.warns(RuntimeWarning, match="targets are not this block's.*recomputing block 1"):
        fivs, scores = _run(opt, x, tmp_path / "a", callback=count, **kw)
    assert count.chunks == 1
    assert torch.equal(fivs, ref) and torch.equal(scores, ref_scores)
