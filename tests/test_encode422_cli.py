"""benchmarks/encode422.py's command line: every bad argument is an argparse error before any work,
a JASPAR release other than 2016 finds the known motifs by base id, and authors_ofiv.csv is
optional. A small fake models folder (random ENCODE-architecture models): no ../shared needed."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepresolve_captum.motifs import MotifSet
from deepresolve_captum.zoo import EncodeTFModel

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("encode422", REPO / "benchmarks" / "encode422.py")
E = importlib.util.module_from_spec(spec)
spec.loader.exec_module(E)

# (name, tf, JASPAR 2016 id, name): CTCF's MA0139.1 is MA0139.2 in JASPAR2024, CEBPB's MA0466.2
# is MA0466.4; MA0605.1 (ATF3) is not in JASPAR2014 at all
MODELS = [("wgEncodeAwgTfbsBroadDnd41CtcfUniPk", "CTCF", "MA0139.1", "CTCF"),
          ("wgEncodeAwgTfbsHaibA549CebpbV0422111UniPk", "CEBPB", "MA0466.2", "CEBPB"),
          ("wgEncodeAwgTfbsHaibA549Atf3V0422111Etoh02UniPk", "ATF3", "MA0605.1", "Atf3")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """models.csv, models/*.npz (random weights) and authors_ofiv.csv without the last model."""
    d = tmp_path_factory.mktemp("encode422")
    (d / "models").mkdir()
    torch.manual_seed(0)
    for name, *_ in MODELS:
        m = EncodeTFModel()
        np.savez(d / "models" / f"{name}.npz", dropout=np.float32(0.1),
                 **{k.replace(".", "_"): v.numpy() for k, v in m.state_dict().items()})
    pd.DataFrame(MODELS, columns=["name", "tf", "jaspar2016_id", "jaspar2016_name"]).to_csv(
        d / "models.csv", index=False)
    rng = np.random.default_rng(0)
    pd.DataFrame([{"name": n, "num_components": 1,
                   **{f"ofiv_{k}": v for k, v in enumerate(rng.normal(size=16))}}
                  for n, *_ in MODELS[:2]]).to_csv(d / "authors_ofiv.csv", index=False)
    return d


def _error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        E.parse_args(argv)
    assert e.value.code == 2  # argparse's usage error, not a traceback
    return capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--subset", "first:-2"], r"--subset: 'first:-2': the number of models must be an integer >= 1"),
    (["--subset", "first:0"], r"--subset: 'first:0'.*>= 1"),
    (["--subset", "0"], r"--subset: '0'.*>= 1"),
    (["--subset", "CTCF,NOPE,ctcf"], r"unknown model names or TF symbols \['NOPE', 'ctcf'\].*"
                                     r"'ctcf': did you mean CTCF"),
    (["--subset", ","], r"--subset: ',' names no model"),
    (["--methods", ","], r"--methods: no method given"),
    (["--methods", "saliency,lrp"], r"--methods: unknown \['lrp'\]"),
    (["--starts", "0"], r"argument --starts: must be an integer >= 1, got 0"),
    (["--n-pos", "0"], r"argument --n-pos: must be an integer >= 1"),
    (["--n-pos", "20000"], r"--n-pos \(20000\) must be <= --n-candidates \(10000\)"),
    (["--dm-starts", "2"], r"argument --dm-starts: must be an integer >= 5"),
    (["--dm-steps", "0"], r"argument --dm-steps"),
    (["--threads", "0"], r"argument --threads"),
    (["--seed", "-1"], r"argument --seed: must be >= 0"),
    (["--seed", str(2**63)], r"argument --seed: must be < 2\*\*63"),
    (["--l2", "1e35"], r"argument --l2: must be <= 1e30"),
    (["--l2", "0"], r"argument --l2: lambda must be a positive number or 'auto'"),
    (["--l2", "nan"], r"argument --l2"),
    (["--jaspar", "JASPAR2099"], r"--jaspar: unknown JASPAR release 'JASPAR2099'"),
    (["--jaspar", "JASPAR2014"], r"--jaspar: JASPAR2014 has no version of the known motif of 1 "
                                 r"selected model\(s\): MA0605.1"),
])
def test_bad_arguments_are_argparse_errors(folder, capsys, args, message):
    err = _error(capsys, ["--models", str(folder)] + args)
    assert re.search(message, err), err


def test_models_folder_is_checked(folder, tmp_path, capsys):
    assert "--models: no such folder" in _error(capsys, ["--models", str(tmp_path / "nope")])
    assert "has no models.csv" in _error(capsys, ["--models", str(tmp_path)])
    (tmp_path / "models.csv").write_text((folder / "models.csv").read_text())
    assert "3 selected model(s) have no .npz" in _error(capsys, ["--models", str(tmp_path)])
    args = E.parse_args(["--models", str(folder), "--subset", "CTCF", "--jaspar", "JASPAR2014",
                         "--methods", "saliency,saliency"])
    assert args.methods == ["saliency"]


def test_known_motifs_by_base_id():
    meta = pd.DataFrame(MODELS[:2], columns=["name", "tf", "jaspar2016_id", "jaspar2016_name"])
    J = MotifSet([np.full((4, 5), 0.25)] * 3, ["MA0139.2", "MA0466.1", "MA0466.4"],
                 ["CTCF", "CEBPB", "CEBPB"])
    assert E.known_motifs(meta, J, "X") == {MODELS[0][0]: ("MA0139.2", "CTCF"),
                                            MODELS[1][0]: ("MA0466.4", "CEBPB")}
    with pytest.raises(ValueError, match=r"X has no version of the known motif of 1 selected "
                                         r"model\(s\): MA0466.2"):
        E.known_motifs(meta, MotifSet(J.pwms[:1], J.ids[:1], J.names[:1]), "X")


def _run(folder, tmp_path, *extra):
    out = tmp_path / "new" / "sub" / "out.csv"     # main creates the folder (parse_args does not)
    return E.main(["--models", str(folder), "--subset", "CTCF,CEBPB", "--methods",
                   "deepresolve,saliency", "--starts", "2", "--n-pos", "5", "--n-candidates",
                   "50", "--out", str(out), *extra])


def test_jaspar2024_takes_the_known_motif_by_base_id(folder, tmp_path, capsys):
    """The 2016 ids of models.csv crashed after DeepResolve ran (KeyError 'MA0139.1', JASPAR2024
    holds MA0139.2)."""
    df = _run(folder, tmp_path, "--jaspar", "JASPAR2024")
    assert (tmp_path / "new" / "sub" / "out.csv").is_file()
    assert df["known_id"].tolist() == ["MA0139.2", "MA0466.4"]
    assert df["jaspar2016_id"].tolist() == ["MA0139.1", "MA0466.2"]
    assert "MA0139.1 -> MA0139.2" in capsys.readouterr().out


def test_authors_file_is_optional(folder, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "models").symlink_to(folder / "models")
    (bare / "models.csv").write_text((folder / "models.csv").read_text())
    df = _run(bare, tmp_path)
    out = capsys.readouterr().out
    assert "authors_ofiv.csv not found" in out and "Spearman of our OFIV" not in out
    assert "spearman_authors" not in df and "authors_order" not in df
    assert df["known_id"].tolist() == ["MA0139.1", "MA0466.2"]
    df = _run(folder, tmp_path)  # with the file: the Spearman row for the models it has
    assert df["spearman_authors"].notna().tolist() == [True, True]
    assert "Spearman of our OFIV" in capsys.readouterr().out


def test_gmm_components_are_compared_per_model_not_by_histogram():
    """Audit d #1: the report printed only the two histograms of GMM component counts, which
    matched ({1: 275, 2: 1} both) while the two non-additive models differed (RELA for the
    authors, a K562 CTCF for us). The per-model agreement comes first and each differing model
    is named; a model without an authors' row is left out of the comparison."""
    df = pd.DataFrame({"name": ["m_rela", "m_ctcf", "m_a", "m_b"], "tf": ["RELA", "CTCF", "A", "B"],
                       "n_components": [1, 2, 1, 1],
                       "authors_n_components": [2.0, 1.0, 1.0, np.nan]})
    n, same, differ = E.gmm_agreement(df)
    assert (n, same) == (3, 1) and differ["name"].tolist() == ["m_rela", "m_ctcf"]
    text = E.gmm_agreement_text(df)
    assert text.splitlines()[0].startswith("GMM components: the same count as the authors' in 1/3 models")
    assert "m_rela: ours 1, authors' 2" in text and "m_ctcf: ours 2, authors' 1" in text
    assert "m_a" not in text and "m_b" not in text
