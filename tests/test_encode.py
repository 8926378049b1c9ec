"""The authors' ENCODE TF models: loading, orientation of the kernels, zoo stacking, and the
motif / baseline / DeepResolve pipeline on a few real models (needs ../shared)."""
import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from deepresolve_captum import EnsembleSummary, LayerFeatureOptimizer, cli, summarize
from deepresolve_captum import baselines as B
from deepresolve_captum import motifs as M
from deepresolve_captum.zoo import (EncodeTFModel, EncodeZooHeads, EncodeZooStack, load_encode_model,
                                    load_encode_zoo, load_zoo)
from deepresolve_captum.zoo_summary import summarize_zoo, zoo_filter_table

CTCF = "wgEncodeAwgTfbsBroadDnd41CtcfUniPk"


@pytest.fixture(scope="module")
def encode(shared_dir):
    return shared_dir / "data" / "encode422"


@pytest.fixture(scope="module")
def meta(encode):
    return pd.read_csv(encode / "models.csv").set_index("name")


@pytest.fixture(scope="module")
def authors(encode):
    return pd.read_csv(encode / "authors_ofiv.csv").set_index("name")


@pytest.fixture(scope="module")
def jaspar():
    return M.load_jaspar("JASPAR2016", "CORE", "vertebrates")


@pytest.fixture(scope="module")
def ctcf(encode):
    return load_encode_model(encode / "models" / f"{CTCF}.npz")


def test_load_one_model(ctcf, encode):
    assert isinstance(ctcf, EncodeTFModel) and not ctcf.training
    assert ctcf.conv.weight.shape == (16, 4, 25) and ctcf.fc2.weight.shape == (1, 32)
    with np.load(encode / "models" / f"{CTCF}.npz") as z:
        np.testing.assert_array_equal(ctcf.conv.weight.detach().numpy(), z["conv_weight"])
        np.testing.assert_array_equal(ctcf.fc1.bias.detach().numpy(), z["fc1_bias"])
        assert ctcf.dropout.p == pytest.approx(float(z["dropout"]))
    out = ctcf(torch.zeros(3, 4, 101))
    assert out.shape == (3, 1)
    assert ctcf.name == CTCF


def test_ctcf_known_filter_matches_jaspar_ctcf(ctcf, authors, jaspar):
    """The filter the authors' OFIV ranks first is CTCF's motif (rank 1 of 519 JASPAR motifs),
    and only the right kernel orientation gives that: the reversed (uncomplemented) kernel
    does not match."""
    top = int(np.argmax(authors.loc[CTCF, [f"ofiv_{k}" for k in range(16)]].to_numpy(float)))
    w = ctcf.conv.weight[top].detach()
    pwms = M.filter_pwms(torch.stack([w, w.flip(-1), w.flip(0).flip(-1)]))
    hits = M.known_motif_hits(pwms, jaspar, "MA0139.1")
    assert hits["rank"].iloc[0] == 1 and hits["p_value"].iloc[0] < 1e-4
    assert hits["best_name"].iloc[0] == "CTCF"
    assert hits["p_value"].iloc[1] > 100 * hits["p_value"].iloc[0]  # reversed: wrong
    assert hits["rank"].iloc[2] == 1  # the reverse complement is the same motif


def test_known_motif_raises_the_logit(ctcf, jaspar):
    """Writing JASPAR CTCF's consensus into random sequences raises the logit."""
    cons = jaspar.pwms[jaspar.index("CTCF")].argmax(0)
    X = M.random_one_hot(64, 101, random_state=0)
    Y = X.clone()
    Y[:, :, 40:40 + len(cons)] = torch.nn.functional.one_hot(torch.from_numpy(cons), 4).T.float()
    with torch.no_grad():
        gain = (ctcf(Y) - ctcf(X))[:, 0]
    assert gain.median() > 3


def test_load_whole_zoo_and_subsets(encode, meta):
    zoo = load_encode_zoo(encode)
    assert len(zoo) == 276 and set(zoo) == set(meta.index)
    assert all(not m.training for m in zoo.values())
    two = load_encode_zoo(encode / "models", names=[CTCF, meta.index[-1]])
    assert list(two) == [CTCF, meta.index[-1]]
    assert list(load_encode_zoo(encode, names=3)) == sorted(meta.index)[:3]
    assert list(load_encode_zoo(encode, names=[CTCF + ".npz"])) == [CTCF]   # suffix given too
    with pytest.raises(FileNotFoundError):
        load_encode_zoo(encode, names=["no_such_model"])
    with pytest.raises(TypeError):
        load_encode_zoo(encode, names=CTCF)


def test_generic_load_zoo_and_bad_files(tmp_path):
    for i in range(3):
        torch.save(EncodeTFModel(n_filters=4, filter_len=5).state_dict(), tmp_path / f"m{i}.pt")

    def loader(path):
        m = EncodeTFModel(n_filters=4, filter_len=5)
        m.load_state_dict(torch.load(path))
        return m

    zoo = load_zoo(tmp_path, loader, pattern="*.pt")
    assert list(zoo) == ["m0", "m1", "m2"]
    np.savez(tmp_path / "bad.npz", conv_weight=np.zeros((4, 4, 5)))
    with pytest.raises(ValueError):
        load_encode_model(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        load_encode_model(tmp_path / "absent.npz")
    with pytest.raises(ValueError):
        load_zoo(tmp_path, loader, pattern="*.h5")
    for bad_names, err in ((0, ValueError), (-1, ValueError), ([], ValueError), (True, TypeError)):
        with pytest.raises(err):
            load_zoo(tmp_path, loader, names=bad_names, pattern="*.pt")
    assert list(load_zoo(tmp_path, loader, names=np.int64(2), pattern="*.pt")) == ["m0", "m1"]
    # a name twice (here once with its suffix) would silently give fewer models than names
    with pytest.raises(ValueError, match=r"more than once.*\['m1'\]"):
        load_zoo(tmp_path, loader, names=["m1", "m0", "m1.pt"], pattern="*.pt")
    # a file that fails to load is named in the error
    (tmp_path / "m3.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="m3.pt"):
        load_zoo(tmp_path, loader, pattern="*.pt")


def test_load_encode_model_bad_files(tmp_path):
    good = dict(conv_weight=np.zeros((4, 4, 5)), conv_bias=np.zeros(4), fc1_weight=np.zeros((3, 4)),
                fc1_bias=np.zeros(3), fc2_weight=np.zeros((1, 3)), fc2_bias=np.zeros(1))
    np.savez(tmp_path / "ok.npz", dropout=0.2, **good)
    assert load_encode_model(tmp_path / "ok.npz").dropout.p == 0.2
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:300])
    with pytest.raises(ValueError, match="trunc.npz: not a readable npz"):
        load_encode_model(tmp_path / "trunc.npz")
    (tmp_path / "models.csv").write_text("name,tf\nm0,CTCF\n")
    with pytest.raises(ValueError, match="models.csv: not an npz file"):
        load_encode_model(tmp_path / "models.csv")
    (tmp_path / "lfs.npz").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    with pytest.raises(ValueError, match="git-lfs pointer"):
        load_encode_model(tmp_path / "lfs.npz")
    np.savez(tmp_path / "nan.npz", **{**good, "fc1_bias": np.full(3, np.nan)})
    with pytest.raises(ValueError, match="non-finite"):
        load_encode_model(tmp_path / "nan.npz")
    np.savez(tmp_path / "drop.npz", dropout=np.array([0.1, 0.2]), **good)
    with pytest.raises(ValueError, match="dropout"):
        load_encode_model(tmp_path / "drop.npz")


def test_zoo_stack_is_exact(encode):
    zoo = load_encode_zoo(encode, names=6)
    stack = EncodeZooStack(zoo).eval()
    X = M.random_one_hot(5, 101, random_state=1)
    with torch.no_grad():
        ref = torch.cat([m(X) for m in zoo.values()], 1)
        np.testing.assert_allclose(stack(X).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
        H = torch.cat([m.flatten(m.pool(m.relu(m.conv(X)))) for m in zoo.values()], 1)
        np.testing.assert_allclose(stack.head_scores(H).numpy(), ref.numpy(), rtol=1e-5,
                                   atol=1e-5)
        stack.sum_outputs = True
        np.testing.assert_allclose(stack(X)[:, 0].numpy(), ref.sum(1).numpy(), rtol=1e-4)
    with pytest.raises(ValueError):
        EncodeZooStack([EncodeTFModel(), EncodeTFModel(n_filters=8)])


def test_summarize_zoo_gives_each_model_its_own_result():
    """No ../shared needed: random ENCODE-architecture models. A model's result equals running
    it alone with the same seed, whichever other models are in the zoo. (These random heads
    reach one optimum from any start, so this cannot tell which starts a model got:
    test_zoo.py::test_every_model_of_a_zoo_starts_from_the_single_model_draws can.)"""
    torch.manual_seed(0)
    zoo = {f"m{i}": EncodeTFModel().eval() for i in range(4)}
    for m in zoo.values():  # weights as trained models have them: some units off, scores of both signs
        with torch.no_grad():
            m.fc1.bias.uniform_(-0.5, 0.5)
    heads = EncodeZooHeads(zoo).eval()
    h = torch.randn(7, 16)
    with torch.no_grad():
        ref = torch.cat([m.fc2(m.relu2(m.fc1(h))) for m in zoo.values()], 1)
        np.testing.assert_allclose(heads(h).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    full = summarize_zoo(zoo, n_starts=5, l2=2.8, seed=3)
    part = summarize_zoo({k: zoo[k] for k in ("m2", "m0")}, n_starts=5, l2=2.8, seed=3)
    np.testing.assert_allclose(part.fiv, full.fiv[[2, 0]], atol=1e-6)
    m = zoo["m1"]
    alone, sc = LayerFeatureOptimizer(m, m.fc1).attribute(
        torch.zeros(1, 4, 101), target=0, n_starts=5, l2=2.8, seed=3, attribute_to_layer_input=True,
        return_scores=True)
    np.testing.assert_allclose(full.fiv[1], alone[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(full.scores[1], sc[0].numpy(), rtol=1e-5, atol=1e-5)
    assert full.settings["converged"] and full.settings["models"] == list(zoo)
    with pytest.raises(ValueError, match="fc1-input"):
        heads(torch.zeros(2, 4, 101))


def test_deepresolve_agrees_with_the_authors(encode, authors):
    """Our OFIV ranks the 16 channels as the authors' saved OFIVs do (lambda = 2.8, T = 10),
    model by model and for the zoo stacked into one batch."""
    names = sorted(authors.index)[::35]  # 8 models over several factors
    zoo = load_encode_zoo(encode, names=names)
    theirs = authors.loc[names, [f"ofiv_{k}" for k in range(16)]].to_numpy(float)
    x0 = torch.zeros(1, 4, 101)
    fl, sl = [], []
    for m in zoo.values():
        f, s = LayerFeatureOptimizer(m, m.fc1).attribute(
            x0, target=0, n_starts=10, l2=2.8, seed=0, attribute_to_layer_input=True,
            return_scores=True)
        fl.append(f[0])
        sl.append(s[0])
    ours = summarize(torch.stack(fl), torch.stack(sl), random_state=0).ofiv
    rho = [spearmanr(a, b)[0] for a, b in zip(ours, theirs)]
    assert np.median(rho) >= 0.9, rho
    assert np.mean(np.argmax(ours, 1) == np.argmax(theirs, 1)) >= 0.75

    batched = summarize_zoo(zoo, n_starts=10, l2=2.8, seed=0)
    assert batched.settings["models"] == names and batched.fiv.shape == (len(names), 10, 16)
    # a model's FIVs in the zoo are the ones it gets alone (same seed)
    np.testing.assert_allclose(batched.fiv, torch.stack(fl).numpy(), atol=1e-4)
    # each start is weighted by its own model's score: that model alone gives the same score
    with torch.no_grad():
        alone = zoo[names[3]].fc2(zoo[names[3]].relu2(zoo[names[3]].fc1(
            torch.as_tensor(batched.fiv[3], dtype=torch.float32))))[:, 0]
    np.testing.assert_allclose(batched.scores[3], alone.numpy(), rtol=1e-4, atol=1e-5)
    rho_b = [spearmanr(a, b)[0] for a, b in zip(batched.ofiv, theirs)]
    assert np.median(rho_b) >= 0.9, rho_b


def test_zoo_filter_table_and_cli(encode, meta, jaspar, tmp_path, capsys):
    names = [CTCF, meta.index[-1]]
    zoo = load_encode_zoo(encode, names=names)
    s = summarize_zoo(zoo, n_starts=4, l2=2.8, seed=0)
    known = dict(zip(meta.index, meta["jaspar2016_id"]))
    t = zoo_filter_table(s, zoo, jaspar=jaspar, known=known, top=3, verbose=True)
    assert "filter table (TOMTOM)" in capsys.readouterr().err          # one TOMTOM run per model
    assert list(t["model"]) == [CTCF] * 3 + [names[1]] * 3 and list(t["rank"]) == [1, 2, 3] * 2
    assert (t.groupby("model", sort=False)["ofiv"].apply(lambda v: v.is_monotonic_decreasing)).all()
    ctcf_rows = t[t["model"] == CTCF]
    assert ctcf_rows["known_rank"].min() == 1 and ctcf_rows["known_p"].min() < 1e-4
    assert (ctcf_rows["known_motif"] == known[CTCF]).all()
    assert set(t.columns) >= {"filter", "ofiv", "il", "category", "best_name", "best_p"}
    with pytest.raises(ValueError, match="known needs jaspar"):
        zoo_filter_table(s, zoo, known=known)
    # a list of known motifs (a dimer's parts): the best counts; a string is not a dict
    t2 = zoo_filter_table(s, zoo, jaspar=jaspar, known={CTCF: ["MA0139.1", "MA0102.3"]}, top=0)
    assert len(t2) == 32 and t2.loc[t2["model"] == CTCF, "known_rank"].min() == 1
    assert t2.loc[t2["model"] == names[1], "known_p"].isna().all()      # not in known
    assert set(t2.loc[t2["model"] == CTCF, "known_motif"]) == {"MA0139.1|MA0102.3"}
    assert set(t2["category"]) <= {"additive", "non-additive, consistent sign",
                                   "non-additive, sign-flipping"}
    with pytest.raises(TypeError, match="known must be a dict"):
        zoo_filter_table(s, zoo, jaspar=jaspar, known="CTCF")
    with pytest.raises(ValueError, match="top"):
        zoo_filter_table(s, zoo, top=-1)

    out = tmp_path / "zoo_out"
    assert cli.main(["zoo", str(encode), "--models", *names, "--out", str(out), "--starts", "4",
                     "--quiet"]) == 0
    ofiv = pd.read_csv(out / "ofiv.csv", index_col="model")
    assert list(ofiv.index) == names and ofiv.shape == (2, 16)
    np.testing.assert_allclose(ofiv.to_numpy(), s.ofiv, rtol=1e-6)          # same seed, same result
    assert EnsembleSummary.load(out / "summary.npz").settings["models"] == names
    assert len(pd.read_csv(out / "filters.csv")) == 6
    with pytest.raises(SystemExit):
        cli.main(["zoo", str(encode), "--out", str(out), "--starts", "0"])
    assert "--starts" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such folder"):
        cli.main(["zoo", str(tmp_path / "absent"), "--out", str(out)])
    bad = tmp_path / "bad_out"
    with pytest.raises(SystemExit, match="not a JASPAR release"):     # before any work
        cli.main(["zoo", str(encode), "--first", "1", "--out", str(bad), "--jaspar", "JASPAR2099"])
    assert not bad.exists()
    with pytest.raises(SystemExit, match="error: .*NoSuchModel"):      # one line, no traceback
        cli.main(["zoo", str(encode), "--models", "NoSuchModel", "--out", str(bad)])
    assert not bad.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit, match="cannot write to --out"):     # before the ascent
        cli.main(["zoo", str(encode), "--first", "1", "--out", str(a_file / "sub")])


def test_baselines_on_a_real_ctcf_model(ctcf, jaspar):
    """Every baseline puts a CTCF-matching filter among its top 3 channels; DeepLIFT at the fc1
    input is complete on the real model."""
    p_known = M.known_motif_hits(M.filter_pwms(ctcf.conv.weight), jaspar, "MA0139.1")["p_value"]
    ctcf_filters = set(np.where(p_known.to_numpy() < 1e-3)[0])
    assert len(ctcf_filters) >= 1
    X = B.model_positives(ctcf, n=100, n_candidates=4000, random_state=0)
    for method in ("saliency", "grad_x_input", "deeplift"):
        s = B.layer_channel_scores(ctcf, ctcf.fc1, X, method, attribute_to_layer_input=True,
                                   random_state=0, **({"n_shuffles": 3} if method == "deeplift" else {}))
        top3 = set(torch.argsort(s, descending=True)[:3].tolist())
        assert top3 & ctcf_filters, (method, s)
    R = B._shuffled_references(X[:16], 1, 0)
    assert B.deeplift_delta(ctcf, ctcf.fc1, X[:16], R, attribute_to_layer_input=True).abs().max() < 1e-3
    P, _ = B.deepmotif_pwms(ctcf, width=25, n_top=3, n_starts=6, n_steps=150, random_state=0)
    hits = M.known_motif_hits(P, jaspar, "MA0139.1")
    assert (hits["p_value"] < 0.05).any()


def test_zoo_of_two_shapes_names_them(tmp_path, capsys):
    rng = np.random.default_rng(0)

    def model(K):
        shapes = dict(conv_weight=(K, 4, 5), conv_bias=(K,), fc1_weight=(3, K), fc1_bias=(3,),
                      fc2_weight=(1, 3), fc2_bias=(1,))
        return {k: rng.normal(size=v) for k, v in shapes.items()}
    np.savez(tmp_path / "small.npz", **model(4))
    np.savez(tmp_path / "wide.npz", **model(6))
    with pytest.raises(ValueError, match=r"differ in shape.*fc1 4 -> 3.*small.*fc1 6 -> 3.*wide"):
        summarize_zoo(load_encode_zoo(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="deepresolve zoo: error: the models differ in shape"):
        cli.main(["zoo", str(tmp_path), "--out", str(out), "--quiet"])
    assert not out.exists()                                      # refused before any work
    cli.main(["zoo", str(tmp_path), "--models", "wide", "--out", str(out), "--quiet", "--starts", "2"])
    assert (out / "ofiv.csv").exists()
