"""Motif tools: PWM rules, JASPAR loading, the memelite TOMTOM wrapper."""
import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

import numpy as np
import pandas as pd
import pytest
import torch

from deepresolve_captum import motifs as M

BASES = "ACGT"


def one_hot(seq):
    x = np.zeros((4, len(seq)), dtype=np.float32)
    for i, b in enumerate(seq):
        x[BASES.index(b), i] = 1
    return x


@pytest.fixture(scope="module")
def jaspar():
    return M.load_jaspar("JASPAR2016", "CORE", "vertebrates")


# ------------------------------------------------------------------ PWM rules

def test_filter_pwms_clip_rule():
    w = np.array([[1.0, -1.0, 0.5],
                  [1.0, -2.0, 0.0],
                  [-2.0, -0.5, 1.5],
                  [0.0, -1.0, 0.0]])
    p = M.filter_pwms(w)
    assert p.shape == (1, 4, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p[0, :, 0], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(p[0, :, 1], [0.25] * 4)  # no positive weight -> uniform
    np.testing.assert_allclose(p[0, :, 2], [0.25, 0, 0.75, 0])
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_filter_pwms_torch_batch_and_pseudocount():
    w = torch.randn(6, 4, 9, generator=torch.Generator().manual_seed(0))
    p = M.filter_pwms(w)
    assert p.shape == (6, 4, 9)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p, M.filter_pwms(w.numpy()))
    q = M.filter_pwms(w, pseudocount=1.0)
    assert q.min() > 0 and np.allclose(q.sum(1), 1.0)
    # the clip rule ignores negative weights entirely
    w2 = w.clone()
    w2[w2 < 0] *= 10
    np.testing.assert_allclose(M.filter_pwms(w2), p)


def test_filter_pwms_bad_input():
    with pytest.raises(ValueError):
        M.filter_pwms(np.zeros((3, 5, 7)))
    with pytest.raises(TypeError):
        M.filter_pwms([[1, 2, 3, 4]])
    with pytest.raises(ValueError):
        M.filter_pwms(np.zeros((1, 4, 3)), pseudocount=-1)
    w = np.ones((3, 4, 5))
    w[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"filter\(s\) \[1\] are not finite"):
        M.filter_pwms(w)


def test_information_content_and_reverse_complement():
    uni = np.full((4, 5), 0.25)
    det = one_hot("ACGTT").astype(np.float64)
    np.testing.assert_allclose(M.information_content([uni, det]), [0.0, 10.0], atol=1e-6)
    rc = M.reverse_complement(det)
    np.testing.assert_array_equal(rc, one_hot("AACGT"))
    np.testing.assert_array_equal(M.reverse_complement(rc), det)


def test_window_pwms_recovers_planted_kmer():
    rng = np.random.default_rng(0)
    N, L, kmer = 300, 40, "GATTACA"
    X = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (N, L))].transpose(0, 2, 1).copy()
    pos = rng.integers(0, L - len(kmer) + 1, N)
    A = np.zeros((N, 2, L - len(kmer) + 1), dtype=np.float32)
    for n in range(0, N, 2):  # half the sequences carry the k-mer, where channel 0 fires
        X[n, :, pos[n]:pos[n] + len(kmer)] = one_hot(kmer)
        A[n, 0, pos[n]] = 1.0 + rng.random()
    p, counts = M.window_pwms(X, A, width=len(kmer), n_top=1000, pseudocount=0.0,
                              return_counts=True)
    assert p.shape == (2, 4, len(kmer))
    assert counts.tolist() == [N // 2, 0]
    np.testing.assert_allclose(p[0], one_hot(kmer))
    np.testing.assert_allclose(p[1], 0.25)  # a channel that never fires is uniform


def test_activation_pwms_reads_padding_and_finds_the_motif():
    kmer = "CACGTGAT"
    conv = torch.nn.Conv1d(4, 2, len(kmer), padding=4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = torch.from_numpy(2 * one_hot(kmer) - 1)
        conv.weight[1] = torch.from_numpy(2 * one_hot("TTTTAAAA") - 1)
        conv.bias.fill_(-len(kmer) + 2.5)  # fires on >= 7 of 8 matching bases
    p, counts = M.activation_pwms(conv, n_seqs=4000, seq_len=60, n_top=200, pseudocount=0.0,
                                  random_state=1, return_counts=True)
    assert p.shape == (2, 4, len(kmer))
    assert (counts > 0).all()
    assert "".join(BASES[i] for i in p[0].argmax(0)) == kmer
    assert "".join(BASES[i] for i in p[1].argmax(0)) == "TTTTAAAA"
    # at least 7 of 8 bases match on each window used -> consensus columns carry most mass
    assert (p[0].max(0) >= 0.75).all()
    with pytest.raises(TypeError):
        M.activation_pwms(torch.nn.Conv1d(3, 2, 4))


@pytest.mark.parametrize("padding, as_int", [("valid", 0), ("same", 3)])
def test_activation_pwms_takes_string_padding(padding, as_int):
    """padding='valid' / 'same' were refused; they are 0 and (k - 1) // 2 on the left."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(4, 3, 7, padding=padding)
    ref = torch.nn.Conv1d(4, 3, 7, padding=as_int)
    ref.load_state_dict(conv.state_dict())
    kw = dict(n_seqs=300, seq_len=40, n_top=50, random_state=2)
    assert np.array_equal(M.activation_pwms(conv, **kw), M.activation_pwms(ref, **kw))


# ------------------------------------------------------------------ JASPAR

def test_load_jaspar_2016_core_vertebrates(jaspar):
    assert len(jaspar) == 519
    assert len(jaspar.pwms) == len(jaspar.names) == 519
    i = jaspar.index("MA0139.1")
    assert jaspar.names[i] == "CTCF" and jaspar.index("CTCF") == i and jaspar.index("MA0139") == i
    for m in jaspar.pwms[:50]:
        assert m.shape[0] == 4 and m.dtype == np.float64
        np.testing.assert_allclose(m.sum(0), 1.0)
    with pytest.raises(KeyError):
        jaspar.index("NOT_A_MOTIF")
    for near in ("ctcf", "MA0139.2"):                       # wrong case / another version
        with pytest.raises(KeyError, match="did you mean MA0139.1 CTCF"):
            jaspar.index(near)


def test_load_jaspar_other_release():
    j24 = M.load_jaspar("JASPAR2024")
    assert len(j24) > 519
    with pytest.raises(ValueError, match="JASPAR2016"):             # the valid releases listed
        M.load_jaspar("JASPAR1999")
    with pytest.raises(ValueError, match="vertebrates"):            # the valid tax groups listed
        M.load_jaspar("JASPAR2016", tax_group="vertebrate")


# ------------------------------------------------------------------ TOMTOM

def test_tomtom_motif_matches_itself_first_both_strands(jaspar):
    names = ["CTCF", "REST", "SPI1"]
    idx = [jaspar.index(n) for n in names]
    Q = [jaspar.pwms[i] for i in idx] + [M.reverse_complement(jaspar.pwms[i]) for i in idx]
    df = M.tomtom(Q, jaspar, query_names=[f"{n}+" for n in names] + [f"{n}-" for n in names])
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["query", "query_idx", "target_id", "target_name", "target_idx",
                                "p_value", "score", "offset", "overlap", "strand", "rank",
                                "query_bits"]
    assert len(df) == len(Q) * len(jaspar)
    top = df[df["rank"] == 1].set_index("query_idx")
    for q, i in enumerate(idx * 2):
        assert top.loc[q, "target_idx"] == i
        assert top.loc[q, "target_name"] == jaspar.names[i]
        assert top.loc[q, "p_value"] < 1e-8
        assert top.loc[q, "strand"] == ("+" if q < 3 else "-")
        assert top.loc[q, "offset"] == 0
        assert top.loc[q, "overlap"] == jaspar.pwms[i].shape[1]
    # ranks follow the p-values: competition ranks (a tie shares the first rank of its run)
    for _, g in df.groupby("query_idx"):
        p, r = g["p_value"].to_numpy(), g["rank"].to_numpy()
        assert np.all(np.diff(p) >= 0) and r[0] == 1
        assert np.array_equal(r, [1 + np.searchsorted(p, x, side="left") for x in p])


def test_tomtom_offset_is_in_target_coordinates(jaspar):
    """memelite flips the target, not the query: offset is the target column (of the target's
    reverse complement on '-') that query column 0 lines up with."""
    T = jaspar.pwms[jaspar.index("CTCF")]
    W = T.shape[1]
    core = T[:, 2:14]
    overhang = np.hstack([np.full((4, 1), 0.25), T[:, :10]])  # one column before the target
    df = M.tomtom([core, M.reverse_complement(core), overhang], jaspar)
    top = df[df["target_name"] == "CTCF"].set_index("query_idx")
    assert (top.loc[0, "strand"], top.loc[0, "offset"]) == ("+", 2)
    assert (top.loc[1, "strand"], top.loc[1, "offset"]) == ("-", W - 14)
    assert (top.loc[2, "strand"], top.loc[2, "offset"]) == ("+", -1)


def test_tomtom_flat_queries_warned_and_ties_share_a_rank(jaspar):
    """A uniform matrix (a filter with no positive weight, a channel nothing activated) gets
    small p-values against some targets anyway: warned, with query_bits 0; the many p = 1
    targets tie and share one rank."""
    flat = np.full((4, 25), 0.25)
    ctcf = jaspar.pwms[jaspar.index("CTCF")]
    with pytest.warns(RuntimeWarning, match=r"1 of 2 queries carry less than 3 bits.*\['flat'\]"):
        df = M.tomtom([flat, ctcf], jaspar, query_names=["flat", "ctcf"])
    g = df[df["query_idx"] == 0]
    assert g["query_bits"].iloc[0] == pytest.approx(0.0)
    assert df[df["query_idx"] == 1]["query_bits"].iloc[0] > 10
    ones = g[g["p_value"] == g["p_value"].max()]
    assert len(ones) > 1 and ones["rank"].nunique() == 1
    assert ones["rank"].iloc[0] == 1 + (g["p_value"] < g["p_value"].max()).sum()


def test_tomtom_nearest_and_plain_targets(jaspar):
    q = jaspar.pwms[jaspar.index("CTCF")]
    near = M.tomtom([q], jaspar, n_nearest=3)
    assert len(near) == 3 and near["rank"].tolist() == [1, 2, 3]
    assert near["target_name"].iloc[0] == "CTCF"
    plain = M.tomtom(np.stack([q[:, :10]]), jaspar.pwms[:40] + [q])
    assert plain["target_id"].iloc[0] == "40"
    with pytest.raises(ValueError):
        M.tomtom([q], jaspar, query_names=["a", "b"])
    with pytest.raises(ValueError):
        M.tomtom([q[:3]], jaspar)
    # raw filter weights (negative values, columns not summing to 1) are refused
    raw = np.random.default_rng(0).normal(size=(4, 8))
    with pytest.raises(ValueError, match="filter_pwms"):
        M.tomtom([raw], jaspar)
    with pytest.raises(ValueError, match="probability"):
        M.tomtom([q], [2 * q])


def test_tomtom_leaves_torch_thread_count_as_found():
    # memelite resets numba's thread count at its end; under numba's OpenMP layer that set the
    # process's OpenMP threads, so torch.set_num_threads(1) came back as 2 (as many as cores)
    # after tomtom. A fresh process: the reset shows on the first numba call of a process.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import warnings, torch
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        import numpy as np
        from deepresolve_captum import motifs as M
        rng = np.random.default_rng(0)
        T = [M._normalise_columns(rng.random((4, 8))) for _ in range(20)]
        torch.nn.Conv1d(4, 2, 3)(torch.randn(2, 4, 10))   # torch's thread pool is started
        assert torch.get_num_threads() == 1
        M.tomtom(T[:2], T, n_nearest=1)
        a = torch.get_num_threads()
        names = [str(i) for i in range(20)]
        M.known_motif_hits(T[:1], M.MotifSet(T, names, names), "3")
        print(a, torch.get_num_threads())
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="2")   # numba's count memelite restores
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1"], r.stdout


def test_known_motif_hits(jaspar):
    ctcf = jaspar.pwms[jaspar.index("CTCF")]
    rng = np.random.default_rng(0)
    noise = rng.dirichlet(np.ones(4), size=12).T  # a flat-ish random matrix (4, 12)
    h = M.known_motif_hits([noise, ctcf, M.reverse_complement(ctcf)], jaspar, "MA0139.1")
    assert h["query_idx"].tolist() == [0, 1, 2]
    assert h["rank"].tolist()[1:] == [1, 1]
    assert h["strand"].tolist()[1:] == ["+", "-"]
    assert h["p_value"].iloc[0] > 1e3 * h["p_value"].iloc[1]
    assert (h["best_name"].iloc[1:] == "CTCF").all()
    with pytest.raises(TypeError):
        M.known_motif_hits([ctcf], jaspar.pwms, "MA0139.1")
    with pytest.raises(TypeError, match="n_nearest"):
        M.known_motif_hits([ctcf], jaspar, "MA0139.1", n_nearest=3)
    with pytest.raises(ValueError, match="known is empty"):
        M.known_motif_hits([ctcf], jaspar, [])


def test_known_motif_by_name_uses_every_matrix_of_that_name():
    """JASPAR 2024 has two RORA matrices; the name used to mean the first one only, so a query
    equal to the second came out rank 3 against 'RORA'."""
    j24 = M.load_jaspar("JASPAR2024")
    rora = j24.indices("RORA")
    assert len(rora) == 2 and j24.index("RORA") == rora[0]
    q = j24.pwms[rora[1]]
    h = M.known_motif_hits([q], j24, "RORA")
    assert h["rank"].iloc[0] == 1 and h["best_id"].iloc[0] == j24.ids[rora[1]]
    assert h["p_value"].iloc[0] == h["best_p"].iloc[0]


def test_known_motif_hits_one_row_per_query_when_the_best_p_ties(jaspar):
    """Two identical targets tie at rank 1: still one row per query (the best-match columns
    once made the DataFrame constructor fail with 'All arrays must be of the same length')."""
    i = jaspar.index("CTCF")
    twice = M.MotifSet(jaspar.pwms + [jaspar.pwms[i]], jaspar.ids + ["copy"],
                       jaspar.names + ["CTCF_copy"])
    q = jaspar.pwms[i]
    df = M.tomtom([q], twice)
    assert (df["rank"] == 1).sum() == 2
    h = M.known_motif_hits([q, M.reverse_complement(q)], twice, "REST")
    assert len(h) == 2 and h["best_name"].isin(["CTCF", "CTCF_copy"]).all()


def test_load_jaspar_bad_arguments():
    with pytest.raises(ValueError, match="pseudocount"):
        M.load_jaspar("JASPAR2016", pseudocount=-1)
    with pytest.raises(ValueError, match="tax_group is empty"):
        M.load_jaspar("JASPAR2016", tax_group=[])


def test_write_meme_round_trip(jaspar, tmp_path):
    from memelite.io import read_meme
    pwms = M.filter_pwms(np.random.default_rng(0).normal(size=(3, 4, 9)))
    path = M.write_meme(tmp_path / "f.meme", pwms, names=["ch 0", "ch 1", "ch 2"])
    back = read_meme(str(path))
    assert list(back) == ["ch_0", "ch_1", "ch_2"]
    for m, b in zip(pwms, back.values()):
        np.testing.assert_allclose(np.asarray(b), m, atol=1e-6)
    sub = M.MotifSet(jaspar.pwms[:2], jaspar.ids[:2], jaspar.names[:2])
    back = read_meme(str(M.write_meme(tmp_path / "j.meme", sub)))
    assert list(back) == [f"{i}_{n}" for i, n in zip(sub.ids, sub.names)]
    with pytest.raises(ValueError, match="probability"):
        M.write_meme(tmp_path / "x.meme", np.random.default_rng(1).normal(size=(1, 4, 5)))
    with pytest.raises(ValueError, match="distinct"):
        M.write_meme(tmp_path / "x.meme", pwms[:2], names=["a", "a"])


def test_window_pwms_stride_reads_pooled_channels():
    """Max-pooled activations: position p starts at p * 4 + offset. With stride the planted
    9-mer comes back (blurred over the pool's 4 shifts), read at stride 1 it is lost."""
    from torch import nn
    conv = nn.Conv1d(4, 1, 9, padding=4)
    with torch.no_grad():
        conv.weight.fill_(-1.0)
        for j, b in enumerate("GATTACAGC"):
            conv.weight[0, "ACGT".index(b), j] = 1.0
        conv.bias.fill_(-6.0)
    X = M.random_one_hot(3000, 100, random_state=0)
    with torch.no_grad():
        A = nn.functional.max_pool1d(torch.relu(conv(X)), 4)
    good = M.window_pwms(X, A, 12, offset=-4, stride=4, n_top=300)
    bad = M.window_pwms(X, A, 12, offset=-4, n_top=300)
    assert M.information_content(good)[0] > 2 * M.information_content(bad)[0]

    def motif_share(p):  # mean probability of the 9-mer's bases, at its best of the 4 shifts
        return max(np.mean([p["ACGT".index(b), s + j] for j, b in enumerate("GATTACAGC")])
                   for s in range(4))
    assert motif_share(good[0]) > 0.35 > 0.3 > motif_share(bad[0])   # measured 0.40 vs 0.26
    with pytest.raises(ValueError, match="stride"):
        M.window_pwms(X, A, 12, stride=0)


def test_motifset_of_counts_is_refused(jaspar):
    counts = M.MotifSet([p * 20 for p in jaspar.pwms[:5]], jaspar.ids[:5], jaspar.names[:5])
    with pytest.raises(ValueError, match=r"targets \(MotifSet.pwms\)\[0\] is not a probability"):
        M.tomtom([jaspar.pwms[0]], counts)


def test_small_conveniences(jaspar):
    """Lists of collections; bfloat16 filters; repeated query names warned; the warning of a
    flat query seen through known_motif_hits points at the caller."""
    both = M.load_jaspar(collection=["CORE", "CNE"], tax_group=None)
    assert len(both) == len(M.load_jaspar(collection="CORE", tax_group=None)) + \
        len(M.load_jaspar(collection="CNE", tax_group=None))
    w = torch.randn(3, 4, 8)
    assert np.allclose(M.filter_pwms(w.bfloat16()), M.filter_pwms(w.bfloat16().float()))
    ctcf = jaspar.pwms[jaspar.index("CTCF")]
    with pytest.warns(UserWarning, match="repeated labels"):
        M.tomtom([ctcf, ctcf], jaspar, query_names=["a", "a"], n_nearest=1)
    with pytest.warns(RuntimeWarning, match="less than 3 bits") as rec:
        M.known_motif_hits([np.full((4, 10), 0.25)], jaspar, "CTCF")
    assert rec[0].filename == __file__


def test_id_index_takes_another_release_by_base_id():
    J = M.MotifSet([np.full((4, 5), 0.25)] * 4, ["MA0139.2", "MA0466.1", "MA0466.4", "MA0466.3"],
                   ["CTCF", "CEBPB", "CEBPB", "CEBPB"])
    assert J.id_index("MA0466.1") == 1                  # that version, when held
    assert J.id_index("MA0139.1") == 0                  # else the base id's
    assert J.id_index("MA0466.2") == 2                  # ... latest version
    assert J.id_index("MA9999.1") is None


def test_known_motif_by_position_as_motifset_index_gives_it(jaspar):
    """known=<int> (what MotifSet.index returns) failed with "'int' object is not iterable";
    a position names that one matrix; a wrong type or position says what is expected."""
    i = jaspar.index("CTCF")
    ctcf = jaspar.pwms[i]
    q = [ctcf, M.reverse_complement(ctcf)]
    by_id = M.known_motif_hits(q, jaspar, "MA0139.1")
    for known in (i, np.int64(i), [i], ["MA0139.1", i]):
        pd.testing.assert_frame_equal(M.known_motif_hits(q, jaspar, known), by_id)
    with pytest.raises(IndexError, match="out of range"):
        M.known_motif_hits(q, jaspar, len(jaspar))
    with pytest.raises(TypeError, match="bool"):
        M.known_motif_hits(q, jaspar, True)
    with pytest.raises(TypeError, match=r"position in targets \(int"):
        M.known_motif_hits(q, jaspar, 1.5)
    with pytest.raises(TypeError, match="float"):
        M.known_motif_hits(q, jaspar, [1.5])


def test_memelites_warnings_point_at_the_callers_line(jaspar):
    """memelite's 'fewer than 25 targets' warning pointed at motifs.py, not at the user's call
    as the package's own warnings do."""
    from deepresolve_captum.channel_motifs import channel_tomtom
    ctcf = jaspar.pwms[jaspar.index("CTCF")]
    few = M.MotifSet(jaspar.pwms[:5] + [ctcf], jaspar.ids[:5] + ["MA0139.1"],
                     jaspar.names[:5] + ["CTCF"])
    for call in (lambda: M.tomtom([ctcf], few.pwms),
                 lambda: M.known_motif_hits([ctcf], few, "CTCF"),
                 lambda: channel_tomtom([ctcf], few, n_nearest=1)):
        with pytest.warns(UserWarning, match="6 target motifs") as rec:
            call()
        assert [w.filename for w in rec] == [__file__], [(w.filename, str(w.message)) for w in rec]
