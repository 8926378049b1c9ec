import numpy as np
import pytest
import torch

from deepresolve_captum.datasets import (SET_ONE_MOTIFS, SET_TWO_CLASSES, decode, planted_motif_response,
                                         synthetic_set_one, synthetic_set_two)


def _rule(s):
    a, b, c = ("GCTCAT" in s), ("CGCTTG" in s), ("CAGGTC" in s)
    return c and (a != b)


def test_set_one_shapes_and_one_hot():
    X, y = synthetic_set_one(300, 60, seq_len=50, random_state=1)
    assert X.shape == (360, 4, 50) and X.dtype == torch.float32
    assert y.shape == (360, 1) and y.dtype == torch.float32
    assert torch.all(X.sum(1) == 1)
    assert set(y.unique().tolist()) <= {0.0, 1.0}


def test_set_one_labels_follow_and_xor():
    X, y, planted = synthetic_set_one(2000, 500, random_state=3, return_codes=True)
    seqs = decode(X)
    rule = np.array([_rule(s) for s in seqs])
    is_random = ~planted.any(1)
    # every planted pattern is really in the sequence
    for j, m in enumerate(SET_ONE_MOTIFS):
        assert all(m in s for s, p in zip(seqs, planted[:, j]) if p)
    lab = y[:, 0].numpy().astype(bool)
    # planted sequences: the label is exactly the rule; random ones are 0 and never satisfy it
    assert np.array_equal(lab[~is_random | rule], rule[~is_random | rule])
    assert not lab[is_random].any()
    # about a quarter of the planted sequences are positive, and both XOR branches occur
    frac = lab[planted.any(1)].mean()
    assert 0.18 < frac < 0.32
    with_a = np.array(["GCTCAT" in s and "CGCTTG" not in s for s in seqs])
    with_b = np.array(["CGCTTG" in s and "GCTCAT" not in s for s in seqs])
    assert lab[with_a].sum() > 100 and lab[with_b].sum() > 100


def test_set_one_seeded():
    a = synthetic_set_one(200, 40, random_state=7)
    b = synthetic_set_one(200, 40, random_state=7)
    c = synthetic_set_one(200, 40, random_state=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_set_two_classes_carry_their_patterns():
    X, y = synthetic_set_two(400, seq_len=60, random_state=0)
    assert X.shape == (400, 4, 60) and y.shape == (400, 4)
    assert torch.all(y.sum(1) == 1)
    assert torch.all(y.sum(0) == 100)
    for s, c in zip(decode(X), y.argmax(1).tolist()):
        assert all(m in s for m in SET_TWO_CLASSES[c])


@pytest.mark.parametrize("kwargs, err", [
    (dict(n_sequences=-1), ValueError), (dict(n_sequences=1.5), TypeError), (dict(seq_len=10), ValueError),
    (dict(n_sequences=0, n_random=0), ValueError), (dict(random_state="a"), TypeError)])
def test_set_one_validation(kwargs, err):
    with pytest.raises(err):
        synthetic_set_one(**{"n_sequences": 10, "n_random": 2, **kwargs})


def test_set_two_validation():
    with pytest.raises(ValueError):
        synthetic_set_two(3)
    with pytest.raises(ValueError):
        synthetic_set_two(8, seq_len=5)


def test_planted_motif_response_finds_the_detector():
    # channel 0 is an exact GATTACA detector, channel 1 a CCC detector, channel 2 all zeros
    conv = torch.nn.Conv1d(4, 3, 7, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for i, c in enumerate("GATTACA"):
            conv.weight[0, "ACGT".index(c), i] = 1.0
        for i in range(3):
            conv.weight[1, 1, i] = 1.0
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool1d(2))
    r = planted_motif_response(model, model[2], ["GATTACA", "CCC"], n=64, seq_len=40, random_state=0)
    assert r.shape == (3, 2)
    assert r[0, 0] > 1.0 and r[0, 0] > 5 * abs(r[0, 1])
    assert r[1, 1] > 0.3 and r[1, 1] > r[0, 1]
    assert np.allclose(r[2], 0)
    with pytest.raises(ValueError):
        planted_motif_response(model, model[2], ["GAXT"], n=4, seq_len=40)


def test_planted_motif_response_on_a_flat_layer_is_the_peak_itself():
    """From review 14: a layer with a (N, K) output (a flatten after a global max-pool, the
    layer EncodeTFModel's docstring names, or a Linear) raised IndexError in .flatten(2)."""
    conv = torch.nn.Conv1d(4, 3, 7, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for i, c in enumerate("GATTACA"):
            conv.weight[0, "ACGT".index(c), i] = 1.0
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveMaxPool1d(1),
                                torch.nn.Flatten())
    flat = planted_motif_response(model, model[3], ["GATTACA"], n=32, seq_len=40, random_state=0)
    pooled = planted_motif_response(model, model[2], ["GATTACA"], n=32, seq_len=40,
                                    random_state=0)
    assert flat.shape == (3, 1) and np.array_equal(flat, pooled) and flat[0, 0] > 1.0


def test_planted_motif_response_is_not_hidden_by_chance_copies_in_the_background():
    # an exact GATA detector (1 on GATA, 0 elsewhere); ~2/3 of random 300 bp backgrounds hold a
    # GATA by chance, which must not hide the detector's response to the planted copy
    conv = torch.nn.Conv1d(4, 1, 4)
    with torch.no_grad():
        conv.weight.zero_()
        for i, c in enumerate("GATA"):
            conv.weight[0, "ACGT".index(c), i] = 1.0
        conv.bias.fill_(-3.0)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool1d(4))
    r = planted_motif_response(model, model[2], ["GATA", "CCCC"], n=128, seq_len=300, random_state=0)
    # (a copy planted at the last position falls outside the pooled map: 1/297 of them)
    assert r[0, 0] == pytest.approx(1.0, abs=0.02)  # backgrounds with chance copies: ~0.3
    assert r[0, 1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="too short"):
        planted_motif_response(model, model[2], ["A"], n=4, seq_len=40)
