"""The paper's two synthetic datasets, as seeded generators of one-hot sequences.

Both sets are described in Liu, Zeng & Gifford (2019), "Synthetic datasets", without a sequence
length or a background model. The choices made here, and why:

* **Length: 50 bp for set I, 150 bp for set II** (the ``seq_len`` defaults). The paper's held-out
  AUCs are the only measure it gives of how hard each set is, so each length was checked against
  them (``benchmarks/synthetic.py``, the demo's training recipe):

  - Set II: 50 bp gives 0.995/0.995/0.998/1.000 (classes 1-4), far easier than the paper's
    0.968/0.967/0.979/0.994. 100 bp gives 0.987/0.986/0.996/0.999. **150 bp gives
    0.971/0.971/0.989/0.997** (median of 10 models). 200 bp gives 0.959/0.958/0.983/0.997.
    The 4-mers GATA and TCAT occur by chance in ~17% of random 50-mers and ~44% of 150-mers.
    That chance noise is what keeps classes 1-3 apart only imperfectly, as in the paper.
  - Set I: 50 bp (AUC 0.997-0.999) is kept, though the paper reports 0.985. Long enough for the
    largest set I sequence (two copies of each of the three 6-mers, 36 bp) with room to move, and a
    pooled map of 10 positions. At 100 bp (AUC 0.87-0.999 over 4 models) 3 of 4 networks did not
    learn the XOR as two detectors: they counted peaks of one shared GCT detector, or did not learn
    the logic. The dense layer of the paper's CNN is position-specific, so every extra position is
    more to learn.
* **Background: i.i.d. uniform bases** (A, C, G, T each 1/4). This is the only background that adds no
  structure of its own. Its consequence is that short patterns also occur *by chance*: a given 6-mer
  appears in a random 50-mer with probability ~1.1%, a given 4-mer (GATA, TCAT of set II) in ~17%.
  We keep that noise (it is what real backgrounds do, and it explains the paper's AUCs below 1,
  the 4-mer classes of set II lowest, the 6-mer class 4 highest).
* **Placement**: each planted pattern goes to a uniformly random position, patterns of one sequence
  never overlap, forward strand only (the paper mentions no reverse complements).

Set I (``synthetic_set_one``): each of the three patterns CGCTTG, CAGGTC, GCTCAT is chosen
independently with probability 1/2, and a chosen pattern is planted 1 to ``max_copies`` times
(uniformly; default 2). The label is computed from what the finished sequence actually contains
(planted or by chance, forward strand): 1 iff CAGGTC is present AND exactly one of GCTCAT, CGCTTG is
present (AND with XOR), else 0. Why copies: the paper's logic is about which *patterns* are present,
not how often. With exactly one copy of each, "exactly one of GCTCAT/CGCTTG" is the same as "exactly
one GCT-like peak", and because the two motifs share a GCT core (C·GCT·TG, GCT·CAT) an 8 bp filter
easily answers to both: networks then learn the XOR by *counting* peaks of one shared detector, and
there are no two opposed detectors for DeepResolve (or any method) to find. A second copy of the
same pattern breaks the count shortcut (two GCTCATs with CAGGTC are positive, a GCTCAT and a CGCTTG
are not), so the network must tell the two motifs apart. ``max_copies=1`` gives the single-copy
variant. With independent halves, 1/8 of the planted sequences carry none
of the three patterns (the paper's "patterns chosen from" does not say at least one; these are
negatives like the random sequences), 1/4 are
positive, and the two "hard" negatives (CAGGTC with both, CAGGTC with neither) are 1/8 each. Then
``n_random`` fully random sequences are appended with label 0, as the paper does; the rare random
sequence that happens to satisfy the positive rule is redrawn, so every label obeys the logic.

Set II (``synthetic_set_two``): four classes of equal size, exactly one label per sequence
(one-hot ``y``): class 1 = GATA + CAGATG, class 2 = TCAT + CAGATG, class 3 = GATA + TCAT,
class 4 = CGCTTG alone. Labels are the generating class (a class-2 sequence that also carries a GATA
by chance keeps label 2): the set tests feature *sharing*, and the class is its ground truth.

Everything is seeded through ``random_state`` (an int or a ``numpy.random.Generator``); the same seed
gives the same arrays on every platform.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["ALPHABET", "SET_ONE_AND_MOTIF", "SET_ONE_XOR_MOTIFS", "SET_ONE_MOTIFS",
           "SET_TWO_CLASSES", "SET_TWO_MOTIFS", "one_hot", "decode", "contains",
           "synthetic_set_one", "synthetic_set_two", "planted_motif_response"]

ALPHABET = "ACGT"

#: Set I motifs (paper, "Recovering important features and combinatorial interactions").
SET_ONE_AND_MOTIF = "CAGGTC"
SET_ONE_XOR_MOTIFS = ("GCTCAT", "CGCTTG")
SET_ONE_MOTIFS = ("CGCTTG", "CAGGTC", "GCTCAT")

#: Set II: the patterns of each class, classes 1..4 at index 0..3 (paper, "Recovering class relationships").
SET_TWO_CLASSES = (("GATA", "CAGATG"), ("TCAT", "CAGATG"), ("GATA", "TCAT"), ("CGCTTG",))
SET_TWO_MOTIFS = ("GATA", "TCAT", "CAGATG", "CGCTTG")


def _check_random_state(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise TypeError(f"random_state must be None, an int or a numpy.random.Generator, got {random_state!r}")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _encode(motif):
    return np.array([ALPHABET.index(c) for c in motif], dtype=np.int8)


def one_hot(idx):
    """Integer-coded sequences (N, L) with values 0..3 (A, C, G, T) -> one-hot float32 tensor (N, 4, L)."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    if idx.ndim != 2:
        raise ValueError(f"expected integer codes of shape (N, L), got shape {tuple(idx.shape)}")
    return torch.nn.functional.one_hot(idx, 4).permute(0, 2, 1).to(torch.float32).contiguous()


def decode(X):
    """One-hot (N, 4, L) or (4, L) -> list of strings (or one string)."""
    X = torch.as_tensor(X)
    single = X.ndim == 2
    if single:
        X = X[None]
    out = ["".join(ALPHABET[i] for i in row) for row in X.argmax(1).tolist()]
    return out[0] if single else out


def contains(idx, motif):
    """Whether each integer-coded sequence of ``idx`` (N, L) contains ``motif`` (forward strand). -> (N,) bool."""
    idx = np.asarray(idx)
    m = _encode(motif)
    k = len(m)
    if idx.shape[1] < k:
        return np.zeros(len(idx), dtype=bool)
    windows = np.lib.stride_tricks.sliding_window_view(idx, k, axis=1)  # (N, L-k+1, k)
    return (windows == m).all(-1).any(-1)


def _plant(rng, idx, rows, motifs_per_row):
    """Plant motifs (list per row) into idx[rows] at random non-overlapping positions (in place)."""
    L = idx.shape[1]
    codes = {}  # each distinct motif encoded once (set II plants ~175,000 copies of 4)
    for r, motifs in zip(rows, motifs_per_row):
        if not motifs:
            continue
        lengths = [len(m) for m in motifs]
        free = L - sum(lengths)
        if free < 0:
            raise ValueError(f"seq_len={L} is too short to hold {motifs}")
        # Non-overlapping placement: choose the gaps (stars and bars) in a random order of motifs.
        order = rng.permutation(len(motifs))
        cuts = np.sort(rng.integers(0, free + 1, size=len(motifs)))
        pos = 0
        prev = 0
        for j, o in enumerate(order):
            pos += cuts[j] - prev
            prev = cuts[j]
            m = motifs[o]
            if m not in codes:
                codes[m] = _encode(m)
            idx[r, pos:pos + lengths[o]] = codes[m]
            pos += lengths[o]


def _set_one_label(idx):
    has = {m: contains(idx, m) for m in SET_ONE_MOTIFS}
    xor = has[SET_ONE_XOR_MOTIFS[0]] ^ has[SET_ONE_XOR_MOTIFS[1]]
    return has[SET_ONE_AND_MOTIF] & xor


def synthetic_set_one(n_sequences=100_000, n_random=None, seq_len=50, random_state=0, max_copies=2,
                      return_codes=False):
    """Synthetic dataset I: AND (CAGGTC) with XOR (GCTCAT, CGCTTG).

    Parameters
    ----------
    n_sequences: int, sequences with planted patterns (paper: 100,000).
    n_random: int, fully random sequences appended with label 0 (paper: 20,000); None (the
        default): ``n_sequences // 5``, the paper's 100,000 : 20,000, so a smaller set keeps
        its balance (a sixth random, about a fifth positive).
    seq_len: int, length L (>= 18 * max_copies, to hold every copy of the three 6-mers).
    random_state: int, numpy Generator or None.
    max_copies: int >= 1, a chosen pattern is planted 1..max_copies times (uniformly).
    return_codes: bool, also return which patterns were planted.

    Returns
    -------
    X: torch.float32 (N, 4, L) one-hot, N = n_sequences + n_random, in random order.
    y: torch.float32 (N, 1), 1 iff CAGGTC and exactly one of GCTCAT / CGCTTG are present.
    planted: numpy bool (N, 3), only if ``return_codes``: which of ``SET_ONE_MOTIFS`` were planted
        (all False for the random sequences).
    """
    n_sequences = _check_int("n_sequences", n_sequences, 0)
    n_random = n_sequences // 5 if n_random is None else _check_int("n_random", n_random, 0)
    max_copies = _check_int("max_copies", max_copies, 1)
    seq_len = _check_int("seq_len", seq_len, 18 * max_copies)
    if n_sequences + n_random == 0:
        raise ValueError("n_sequences + n_random must be > 0")
    rng = _check_random_state(random_state)

    idx = rng.integers(0, 4, size=(n_sequences + n_random, seq_len), dtype=np.int8)
    planted = np.zeros((n_sequences + n_random, 3), dtype=bool)
    planted[:n_sequences] = rng.random((n_sequences, 3)) < 0.5
    copies = rng.integers(1, max_copies + 1, size=(n_sequences, 3))
    motifs = [[m for m, p, c in zip(SET_ONE_MOTIFS, row, crow) if p for _ in range(c)]
              for row, crow in zip(planted[:n_sequences], copies)]
    _plant(rng, idx, range(n_sequences), motifs)

    # The random tail is labelled 0: redraw the rare random sequence that satisfies the positive rule.
    idx[n_sequences:] = _redraw(rng, idx[n_sequences:], _set_one_label, "satisfying the positive rule")
    y = _set_one_label(idx)

    perm = rng.permutation(len(idx))
    X = one_hot(idx[perm])
    y = torch.from_numpy(y[perm].astype(np.float32))[:, None]
    if return_codes:
        return X, y, planted[perm]
    return X, y


def synthetic_set_two(n_sequences=100_000, seq_len=150, random_state=0):
    """Synthetic dataset II: four classes that share patterns, one label per sequence.

    Class 1 = GATA + CAGATG, class 2 = TCAT + CAGATG, class 3 = GATA + TCAT, class 4 = CGCTTG
    (see ``SET_TWO_CLASSES``); each class has n_sequences // 4 sequences (the remainder is spread
    over the first classes).

    Parameters
    ----------
    n_sequences: int, total number of sequences N (>= 4). The paper gives no size; 100,000 matches set I.
    seq_len: int, length L (>= 10); 150 gives the paper's AUCs (see the module docstring).
    random_state: int, numpy Generator or None.

    Returns
    -------
    X: torch.float32 (N, 4, L) one-hot, in random order.
    y: torch.float32 (N, 4), one-hot class labels (column c = class c + 1).
    """
    n_sequences = _check_int("n_sequences", n_sequences, 4)
    seq_len = _check_int("seq_len", seq_len, 10)
    rng = _check_random_state(random_state)

    cls = np.arange(n_sequences) % 4
    idx = rng.integers(0, 4, size=(n_sequences, seq_len), dtype=np.int8)
    _plant(rng, idx, range(n_sequences), [list(SET_TWO_CLASSES[c]) for c in cls])
    perm = rng.permutation(n_sequences)
    X = one_hot(idx[perm])
    y = torch.nn.functional.one_hot(torch.from_numpy(cls[perm]).long(), 4).to(torch.float32)
    return X, y


def _redraw(rng, idx, is_bad, what, max_rounds=1000):
    """Redraw the rows of i.i.d. uniform sequences idx (n, L) for which is_bad(rows) -> (n,) bool is
    True until none is; returns idx (changed in place). ValueError after ``max_rounds`` rounds."""
    for _ in range(max_rounds):
        bad = np.flatnonzero(is_bad(idx))
        if len(bad) == 0:
            return idx
        idx[bad] = rng.integers(0, 4, size=(len(bad), idx.shape[1]), dtype=np.int8)
    raise ValueError(f"could not draw {idx.shape[1]} bp random sequences without ones {what} in "
                     f"{max_rounds} rounds: the patterns are too short for this length; pass a "
                     "smaller seq_len")


def _motif_free_backgrounds(rng, n, seq_len, motifs):
    """n i.i.d. uniform backgrounds (n, seq_len) in which no motif of ``motifs`` occurs (forward strand)."""
    idx = rng.integers(0, 4, size=(n, seq_len), dtype=np.int8)
    return _redraw(rng, idx, lambda rows: np.any([contains(rows, m) for m in motifs], axis=0),
                   f"holding one of {list(motifs)}")


@torch.no_grad()
def planted_motif_response(model, layer, motifs, n=256, seq_len=50, random_state=0):
    """How much each channel of ``layer`` responds to each planted motif.

    For ``n`` random backgrounds (i.i.d. uniform, as the datasets use) that contain none of
    ``motifs`` (forward strand; a background holding one by chance is redrawn), the motif is
    written at a random position; the response of channel k to motif m is the mean over
    backgrounds of ``max_position(layer_k(with motif)) - max_position(layer_k(background))``. A
    channel that detects the motif gains roughly its activation on the motif over its usual peak
    on random sequence; others gain ~0. Why motif-free backgrounds: a background that already
    holds the motif by chance credits its detector with nothing (a 4-mer is in ~55% of random
    200-mers), and why whole-sequence peaks rather than the gain at the planted position: a filter
    that fires on many random 8-mers is not a detector of the motif, and its usual peak on random
    sequence is what it must beat.

    Parameters
    ----------
    model: torch.nn.Module taking one-hot (N, 4, seq_len).
    layer: a submodule of ``model`` whose output is (N, K, ...) (e.g. ``model.pool``) or
        (N, K) (e.g. a flatten or Linear layer: its value is then the channel's peak).
    motifs: sequence of strings over ACGT.
    n: int, backgrounds per motif.
    seq_len: int, background length.
    random_state: int or Generator.

    Returns
    -------
    numpy float64 (K, M), M = len(motifs).
    """
    n = _check_int("n", n, 1)
    seq_len = _check_int("seq_len", seq_len, 1)
    motifs = [motifs] if isinstance(motifs, str) else list(motifs)
    for m in motifs:
        if not m or any(c not in ALPHABET for c in m) or len(m) > seq_len:
            raise ValueError(f"motif {m!r} must be a non-empty ACGT string no longer than seq_len")
    from .adapters import channel_activations  # the layer hook, eval mode and device handling

    rng = _check_random_state(random_state)

    def peak(idx):   # (N, K): the largest value over the positions; a flat (N, K) layer as is
        a = channel_activations(model, layer, one_hot(idx), reduce=None)
        return (a if a.dim() == 2 else a.flatten(2).amax(2)).double()

    idx = _motif_free_backgrounds(rng, n, seq_len, motifs)
    base = peak(idx)
    out = []
    for m in motifs:
        planted = idx.copy()
        pos = rng.integers(0, seq_len - len(m) + 1, size=n)
        code = _encode(m)
        for r, p in enumerate(pos):
            planted[r, p:p + len(m)] = code
        out.append((peak(planted) - base).mean(0))
    return torch.stack(out, 1).numpy()
