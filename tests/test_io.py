"""_io.write_atomic: whole or nothing, and what a plain open() would allow where it cannot be."""
import os

import pytest

from deepresolve_captum import _io


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path):
    p = tmp_path / "f.bin"
    _io.write_atomic(p, lambda f: f.write(b"old"))

    def fails(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _io.write_atomic(p, fails)
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_write_atomic_falls_back_to_in_place_in_a_folder_it_cannot_create_files_in(
        tmp_path, monkeypatch):
    """A writable file in a read-only folder: np.savez could overwrite it, so we must too
    (simulated: root ignores folder permissions)."""
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    real_open = os.open

    def no_new_files(path, flags, *args):
        if str(path).endswith(".partial"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(_io.os, "open", no_new_files)
    assert _io.write_atomic(p, lambda f: f.write(b"new")) == p
    assert p.read_bytes() == b"new"
    with pytest.raises(PermissionError, match="cannot write .*g.bin"):   # no file to overwrite
        _io.write_atomic(tmp_path / "g.bin", lambda f: f.write(b"x"))


def test_plain_makes_settings_json_ready():
    import json

    import numpy as np
    import torch

    v = _io.plain({1: np.float32(1.5), "t": torch.tensor([1, 2]), "x": (np.int64(2), np.arange(2)),
                   "rng": np.random.RandomState(0)})
    assert v == {"1": 1.5, "t": [1, 2], "x": [2, [0, 1]], "rng": "RandomState(MT19937)"}
    json.dumps(v)


def test_write_atomic_refuses_a_folder_and_a_non_name_by_name(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError, match="adir"):
        _io.write_atomic(tmp_path / "adir", lambda f: f.write(b"x"))
    for bad in ("", str(tmp_path / "new") + "/.", str(tmp_path / "adir") + "/"):
        with pytest.raises(ValueError, match="not a file name"):
            _io.write_atomic(bad, lambda f: f.write(b"x"))
    with pytest.raises(FileNotFoundError, match="no folder"):     # open() needs sub too
        _io.write_atomic(str(tmp_path / "sub" / ".." / "x"), lambda f: f.write(b"x"))
    assert sorted(os.listdir(tmp_path)) == ["adir"]


def test_plain_gives_the_same_json_in_every_process_for_sets_paths_parameters_and_objects():
    """From review 14: a set was written as its repr (its order changes with PYTHONHASHSEED),
    a Path as "PosixPath('...')", an nn.Parameter as its multi-line repr, and an object array
    kept objects json.dumps refuses."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    value = {"p": Path("/tmp/x y"), "w": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
             "o": np.array([Path("a"), np.float32(1.5)], dtype=object),
             "t": torch.tensor([0.5], requires_grad=True)}
    assert json.loads(json.dumps(_io.plain(value))) == {
        "p": "/tmp/x y", "w": [1.0, 2.0], "o": ["a", 1.5], "t": [0.5]}
    code = ("import importlib.util as u, json, sys; s = u.spec_from_file_location('io', "
            "sys.argv[1]); m = u.module_from_spec(s); s.loader.exec_module(m); "   # not torch
            "print(json.dumps(m.plain({'s': {'beta', 'delta', 'gamma', 'alpha', 'eps'}})))")
    texts = {subprocess.run([sys.executable, "-c", code, _io.__file__], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
             for seed in range(4)}
    assert texts == {'{"s": ["alpha", "beta", "delta", "eps", "gamma"]}\n'}
