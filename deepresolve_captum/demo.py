"""The paper's synthetic experiments end to end: generate, train, run DeepResolve, draw, check.

``python -m deepresolve_captum.demo --out DIR`` (or ``deepresolve demo --out DIR``) generates
synthetic set I, trains the paper's CNN, runs DeepResolve on the layer between the convolution
block and the dense layer (``model.pool``) with ``l2="auto"``, and writes to DIR:

* ``fig2_set1.png`` / ``.svg`` -- the paper's Fig. 2: every start's FIV, IL, OFIV (non-additive
  channels starred) and each channel's filter logo, channels ordered by OFIV;
* ``summary_set1.txt`` -- AUC, the lambda used, the BIC choice, the non-additive channels and the
  planted motifs they respond to, and which of the paper's claims this model satisfies;
* ``summary_set1.npz`` -- the ``EnsembleSummary`` (reload with ``EnsembleSummary.load``);
* ``model_set1.pt`` -- the trained weights, a state_dict of ``PaperCNN(n_outputs=1, seq_len=50)``
  (``model.load_state_dict(torch.load(path))``; set II: ``model_set2.pt``,
  ``PaperCNN(n_outputs=4, seq_len=150)``);
* with ``--set-two``: the same for synthetic set II (``summary_set2.*``) and the paper's Fig. 4:
  ``fig4a_set2_ofiv.png`` (the four OFIV rows) and ``fig4b_set2_similarity.png`` (four class x class
  matrices side by side: class similarity, label correlation, Pearson of the signed OFIV, cosine of
  the last-layer weight rows).

The functions below are what the demo, ``benchmarks/synthetic.py`` and the tests share.
"""
from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ._io import provenance
from .cli import (_clashes, add_threads_argument, int_at_least, out_path, output_folder,
                  replaced_note, seed_argument, torch_threads, write_errors, write_together)
from .datasets import (_check_int, SET_ONE_AND_MOTIF, SET_ONE_MOTIFS, SET_ONE_XOR_MOTIFS, SET_TWO_CLASSES,
                       SET_TWO_MOTIFS, _motif_free_backgrounds, _plant, one_hot, planted_motif_response, synthetic_set_one,
                       synthetic_set_two)
from .optimizer import LayerFeatureOptimizer
from .similarity import class_similarity, label_correlation, signed_ofiv_correlation, weight_cosine
from .summary import CATEGORY_NAMES, summarize
from .train import train_classifier
from .zoo import PaperCNN, keras_init_

__all__ = ["SET_ONE_CLAIMS", "SET_TWO_CLAIMS", "SEQ_LEN", "DEFAULTS", "SyntheticRun", "detectors",
           "channel_labels", "check_set_one", "logic_table", "xor_learned", "XOR_CONTEXTS",
           "xor_ablation", "xor_strength", "used_in_xor", "SHARING_PAIRS", "CLASS4_PAIRS",
           "check_set_two", "run_synthetic", "describe_set_one", "describe_set_two",
           "figure_set_one", "figure_set_two", "run_demo"]

#: The paper's claims checked per model (``check_set_one`` / ``check_set_two``); ``all`` is their
#: conjunction. The checks return more booleans than these: those are reported, not claimed.
SET_ONE_CLAIMS = ("xor_nonadditive", "xor_opposite", "top_nonadditive_is_xor", "and_additive", "bic_gt1")
SET_TWO_CLAIMS = ("similarity_order", "cosine_fails", "top_channel_own_motif", "bic_one")
#: Sequence length of each set (see ``datasets``: 150 bp gives set II the paper's AUCs).
SEQ_LEN = {"one": 50, "two": 150}
#: Defaults of the demo and the benchmark (set I / set II); the sizes are the paper's.
#: ``seq_len=None``: the set's own length from ``SEQ_LEN``.
DEFAULTS = dict(seq_len=None, max_copies=2, epochs=12, batch_size=128, lr=2e-3, n_starts=10, n_probe=256)
#: Size of the independent test set relative to the dataset (the paper held out 20% as its test
#: set). Our 20% validation split chooses the kept epoch, so its AUC is not a test AUC.
TEST_FRACTION = 0.2


def test_seed(data_seed):
    """The numpy ``SeedSequence`` of the independent test set of the data made with ``data_seed``.

    Its first child, ``SeedSequence(data_seed).spawn(1)[0]``: numpy appends the spawn key (here
    0) to the seed's words, padded to 4, so the test set's entropy is at least 5 words ending in a
    0 word, which no integer seed produces (an int >= 2**128 has a non-zero top word, a smaller
    one fewer words). No training ``data_seed`` can therefore draw the test sequences, and
    drawing them takes nothing from the training data's stream.
    """
    return np.random.SeedSequence(data_seed).spawn(1)[0]


@dataclass
class SyntheticRun:
    """One trained model and its DeepResolve analysis.

    Attributes
    ----------
    dataset: "one" or "two".
    model: the trained ``PaperCNN``.
    train: ``TrainResult`` (``val_auc`` per output, on the validation rows that chose the kept
        epoch; ``test_auc`` per output on the independent test set, None without one).
    summary: ``EnsembleSummary`` of the ascent at ``model.pool`` for every output.
    l2: the lambda ``l2="auto"`` chose.
    response: (K, M) ``planted_motif_response`` of each channel to each motif in ``motifs``.
    motifs: the motifs of the dataset (``SET_ONE_MOTIFS`` or ``SET_TWO_MOTIFS``).
    labels: (N_val, n_outputs) validation labels (for the label correlation of set II).
    checks: dict, the paper's claims for this model (see ``check_set_one`` / ``check_set_two``).
    seconds: dict of timings.
    """
    dataset: str
    model: torch.nn.Module
    train: object
    summary: object
    l2: float
    response: np.ndarray
    motifs: tuple
    labels: np.ndarray
    checks: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def detectors(response, frac=0.5):
    """Which channels detect which motif, from a (K, M) response matrix -> (K, M) bool.

    Channel k detects motif m when m is the motif k responds to most, the response is positive,
    and it is at least ``frac`` of the strongest channel's response to m. Each channel detects at
    most one motif: a linear 8 bp filter tuned to CGCTTG still gives about half its response on
    GCTCAT (they share a GCT core), which says nothing about what the network uses it for.
    """
    r = np.asarray(response, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"response must have shape (K, M), got {r.shape}")
    best = r.max(0, keepdims=True)
    own = r == r.max(1, keepdims=True)
    return own & (r > 0) & (best > 0) & (r >= frac * best)


def channel_labels(response, motifs, frac=0.5):
    """One string per channel naming the motif it detects with its response (the gain in the
    channel's peak activation when the motif is planted, see ``planted_motif_response``), e.g.
    ``"GCTCAT (gain 0.71)"``; ``""`` for channels that detect none (see :func:`detectors`)."""
    det = detectors(response, frac)
    out = []
    for k in range(det.shape[0]):
        hits = [f"{motifs[m]} (gain {response[k, m]:.2f})" for m in np.argsort(-response[k]) if det[k, m]]
        out.append(", ".join(hits))
    return out


def check_set_one(summary, response, frac=0.5, target=0, ablation=None):
    """The paper's claims on synthetic set I (Fig. 2), for one model.

    Parameters
    ----------
    summary: ``EnsembleSummary`` of the set I model (one target).
    response: (K, 3) ``planted_motif_response`` to ``SET_ONE_MOTIFS`` (in that order).
    frac: detector threshold (see :func:`detectors`).
    ablation: optional (K, 3) ``xor_ablation`` table of the model: adds the ablation readings
        below (reported, not claimed).

    Returns
    -------
    dict with one bool per claim, ``all`` (every claim holds) and the numbers behind them:

    * ``xor_nonadditive``: every GCTCAT / CGCTTG detector is flagged non-additive;
    * ``xor_opposite``: there is a GCTCAT and a CGCTTG detector, and every (GCTCAT detector,
      CGCTTG detector) pair has FIVs of opposite signs in every start that carries weight
      (``summary.weights`` > 0, the starts the summary judges signs on) -- the issue's "the
      filters that detect GCTCAT and CGCTTG ... with FIVs of opposite sign across starts", the
      paper's "the corresponding filters tend to have opposite signs all the time".
      ``opposite_min_fraction`` is the smallest share of those starts with opposite signs over
      the pairs (0 with no pair), ``opposite_weakest_pair`` the pair that has it
      ((-1, -1) with none), ``opposite_pairs`` the number of pairs;
    * ``top_nonadditive_is_xor``: the non-additive channel with the highest OFIV is a GCTCAT /
      CGCTTG detector;
    * ``and_additive``: every CAGGTC detector that is not also an XOR detector is additive, and the
      additive channel with the highest OFIV is a CAGGTC detector;
    * ``bic_gt1``: BIC picks more than one mixture component. (The paper's network got exactly
      3, "The optimal number of Gaussian mixture components of the IL score is 3"; ``bic_three``
      reports that stricter reading.)

    Reported, not part of ``all``: ``opposite_fraction``, the share of all starts in which the
    two *strongest* detectors (``strongest_xor`` = (GCTCAT's, CGCTTG's): the channel with the
    highest response to the motif among those :func:`detectors` accepts for it, -1 where none
    does) have opposite signs (0 when they are missing or the same channel; up to audit d this
    claim was ``opposite_fraction >= 0.5``);
    ``bic_three`` (BIC picks exactly 3 components), ``xor_sign_flip`` (both strongest XOR detectors change sign
    across the starts, i.e. the ascent found both XOR modes), ``strongest_xor_nonadditive`` and
    ``mode_split``: how many starts ended in the GCTCAT mode and how many in the CGCTTG mode (the
    strongest detector of that motif has the larger FIV of the two). The split does not change a
    channel's IL relative to the others' (every channel's weighted variance scales with the same
    p(1 - p)), but a 9:1 split shows that one mode scores far higher than the other.
    ``selective_xor_nonadditive``: every *selective* XOR detector (one whose response to the other
    XOR motif is below half its response to its own) is flagged non-additive. Channels that answer
    to both through the shared GCT core are left out of this reading.
    With ``ablation``: ``xor_used`` (channels the network uses in its XOR, :func:`used_in_xor`),
    ``xor_captured`` (the share of the summed :func:`xor_strength` carried by the channels
    flagged non-additive), ``ablation_top_nonadditive`` (the channel with the strongest XOR
    role is flagged), and, for the XOR
    detectors flagged additive, ``xor_additive`` (them), ``xor_additive_used`` (those the
    network uses in its XOR all the same) and ``xor_additive_both`` (those that respond to both
    XOR patterns at least half as much as to their own). Without it too: ``xor_additive_flip``,
    the XOR detectors flagged additive whose FIV changes sign across the starts all the same
    (on our benchmark models their spread across the starts was 4-39% of the top channel's, so
    their IL fell in the GMM's lowest component).
    """
    det = detectors(response, frac)
    i_and = SET_ONE_MOTIFS.index(SET_ONE_AND_MOTIF)
    i_xor = [SET_ONE_MOTIFS.index(m) for m in SET_ONE_XOR_MOTIFS]
    xor = det[:, i_xor].any(1)
    and_ = det[:, i_and] & ~xor
    nonadd = np.asarray(summary.nonadditive[target]).astype(bool)
    ofiv = np.asarray(summary.ofiv[target])
    fiv = np.asarray(summary.fiv[target])                      # (T, K)
    # the strongest detector of each XOR motif, among the channels that detect it (-1: none; a
    # plain argmax of the response can be a CAGGTC channel in a weakly trained model)
    a, b = (int(np.argmax(np.where(det[:, i], response[:, i], -np.inf))) if det[:, i].any() else -1
            for i in i_xor)
    found = a >= 0 and b >= 0 and a != b
    opposite = float(np.mean(np.sign(fiv[:, a]) * np.sign(fiv[:, b]) < 0)) if found else 0.0
    # every (GCTCAT detector, CGCTTG detector) pair, on the starts that carry weight (as the
    # summary's sign_flip): the claim asks for opposite signs in all of them
    weighted = np.asarray(summary.weights[target]) > 0
    sg = np.sign(fiv[weighted])                                # (T_weighted, K)
    pairs = [(int(g), int(h)) for g in np.flatnonzero(det[:, i_xor[0]])
             for h in np.flatnonzero(det[:, i_xor[1]])]
    pair_fracs = [float(np.mean(sg[:, g] * sg[:, h] < 0)) if len(sg) else 0.0 for g, h in pairs]
    weakest = int(np.argmin(pair_fracs)) if pairs else -1
    opposite_min = pair_fracs[weakest] if pairs else 0.0
    top_nonadd = int(np.argmax(np.where(nonadd, ofiv, -np.inf))) if nonadd.any() else -1
    top_add = int(np.argmax(np.where(~nonadd, ofiv, -np.inf))) if (~nonadd).any() else -1
    out = dict(
        xor_nonadditive=bool(xor.any() and nonadd[xor].all()),
        xor_opposite=bool(pairs and opposite_min == 1.0),
        top_nonadditive_is_xor=bool(top_nonadd >= 0 and xor[top_nonadd]),
        and_additive=bool(and_.any() and not nonadd[and_].any() and top_add >= 0 and and_[top_add]),
        bic_gt1=bool(summary.n_components[target] > 1),
    )
    out["all"] = all(out[k] for k in SET_ONE_CLAIMS)
    # the summary's own sign rule (starts with weight > 0), so this agrees with the category
    flips = [k >= 0 and bool(summary.sign_flip[target][k]) for k in (a, b)]
    in_a = int(np.sum(fiv[:, a] > fiv[:, b])) if found else 0
    r_xor = np.asarray(response, dtype=float)[:, i_xor]                  # (K, 2)
    selective = xor & (r_xor.min(1) < 0.5 * r_xor.max(1))
    out.update(xor_sign_flip=bool(found and all(flips)),
               strongest_xor_nonadditive=bool(found and nonadd[a] and nonadd[b]),
               xor_channels=np.flatnonzero(xor).tolist(), and_channels=np.flatnonzero(and_).tolist(),
               nonadditive_channels=np.flatnonzero(nonadd).tolist(), strongest_xor=(a, b),
               opposite_fraction=opposite, opposite_min_fraction=opposite_min,
               opposite_weakest_pair=pairs[weakest] if pairs else (-1, -1),
               opposite_pairs=len(pairs), top_nonadditive=top_nonadd, top_additive=top_add,
               mode_split=(in_a, int(fiv.shape[0]) - in_a) if found else (0, 0),
               selective_xor_nonadditive=bool(selective.any() and nonadd[selective].all()),
               xor_additive_flip=np.flatnonzero(
                   xor & ~nonadd & np.asarray(summary.sign_flip[target]).astype(bool)).tolist(),
               n_components=int(summary.n_components[target]),
               bic_three=bool(summary.n_components[target] == 3))
    if ablation is not None:
        ablation = np.asarray(ablation, dtype=float)
        if ablation.shape != (len(nonadd), len(XOR_CONTEXTS)):
            raise ValueError(f"ablation must have shape ({len(nonadd)}, {len(XOR_CONTEXTS)}), "
                             f"got {ablation.shape}")
        if not np.all(np.isfinite(ablation)):
            raise ValueError("ablation holds NaN or inf")
        used = used_in_xor(ablation)
        strength = xor_strength(ablation)
        left = xor & ~nonadd
        both = r_xor.min(1) >= 0.5 * r_xor.max(1)
        out.update(xor_used=np.flatnonzero(used).tolist(),
                   xor_captured=float(strength[nonadd].sum() / strength.sum()) if strength.sum() > 0
                   else 0.0,
                   ablation_top_nonadditive=bool(strength.max() > 0 and nonadd[int(np.argmax(strength))]),
                   xor_additive=np.flatnonzero(left).tolist(),
                   xor_additive_used=np.flatnonzero(left & used).tolist(),
                   xor_additive_both=np.flatnonzero(left & both).tolist(),
                   ablation=np.round(ablation, 3).tolist())
    return out


@torch.no_grad()
def logic_table(model, seq_len=None, n=500, max_copies=1, random_state=0):
    """What a set I model predicts for each combination of the three patterns.

    For each of the 8 subsets of ``SET_ONE_MOTIFS``, ``n`` random backgrounds get one copy (or
    1..``max_copies``) of each pattern of the subset; returns a dict {subset string: mean logit},
    the subset written like ``"CGCTTG+CAGGTC"`` (``"-"`` for none). A network that learnt the
    paper's logic scores CAGGTC+GCTCAT and CAGGTC+CGCTTG high and everything else, notably
    CAGGTC with both or neither XOR pattern, low.
    """
    from itertools import product

    from .adapters import _preserved

    seq_len = int(seq_len or getattr(model, "seq_len", SEQ_LEN["one"]))
    rng = np.random.default_rng(random_state)
    out = {}
    # eval mode for the call; every module's own mode is restored afterwards
    with _preserved(model), torch.no_grad():
        for combo in product([0, 1], repeat=3):
            chosen = [m for m, c in zip(SET_ONE_MOTIFS, combo) if c]
            idx = rng.integers(0, 4, size=(n, seq_len), dtype=np.int8)
            copies = rng.integers(1, max_copies + 1, size=(n, len(chosen)))
            _plant(rng, idx, range(n), [[m for m, k in zip(chosen, row) for _ in range(k)] for row in copies])
            out["+".join(chosen) or "-"] = float(model(one_hot(idx))[:, 0].mean())
    return out


def xor_learned(table):
    """True when a ``logic_table`` scores both positive combinations above every negative one."""
    pos = [table[k] for k in ("CAGGTC+GCTCAT", "CGCTTG+CAGGTC")]
    neg = [v for k, v in table.items() if k not in ("CAGGTC+GCTCAT", "CGCTTG+CAGGTC")]
    return bool(min(pos) > max(neg))


#: The planted combinations of ``xor_ablation``: the two positive ones, then the negative one.
XOR_CONTEXTS = ("CAGGTC+GCTCAT", "CGCTTG+CAGGTC", "CGCTTG+CAGGTC+GCTCAT")


def xor_ablation(model, layer=None, seq_len=None, n=500, random_state=0):
    """How a set I model uses each channel, by ablation in input space -> (K, 3) float array.

    For each of ``XOR_CONTEXTS`` (one copy of each pattern planted into ``n`` backgrounds that
    hold none of the three), column j is ``interaction.channel_ablation``: the mean drop of the
    logit when channel k of ``layer`` (default ``model.pool``) is set to 0. A channel the
    network uses in its XOR supports the logit with one XOR pattern and opposes it with both
    (positive in column 0 or 1, negative in column 2); see ``check_set_one``.
    """
    from .interaction import channel_ablation

    layer = model.pool if layer is None else layer
    seq_len = int(seq_len or getattr(model, "seq_len", SEQ_LEN["one"]))
    rng = np.random.default_rng(random_state)
    cols = []
    for ctx in XOR_CONTEXTS:
        idx = _motif_free_backgrounds(rng, n, seq_len, SET_ONE_MOTIFS)
        _plant(rng, idx, range(n), [ctx.split("+")] * n)
        cols.append(channel_ablation(model, layer, one_hot(idx)))
    return np.stack(cols, axis=1)


def xor_strength(ablation):
    """(K,) float from a ``xor_ablation`` table: how strongly the network uses each channel in
    its XOR, ``min(max(effect with one XOR pattern), -effect with both)``, 0 when negative."""
    a = np.asarray(ablation, dtype=float)
    return np.clip(np.minimum(a[:, :2].max(1), -a[:, 2]), 0, None)


def used_in_xor(ablation, min_effect=0.1):
    """(K,) bool from a ``xor_ablation`` table: the channel raises the logit by more than
    ``min_effect`` with one XOR pattern and lowers it by more than ``min_effect`` with both."""
    return xor_strength(ablation) > min_effect


SHARING_PAIRS = ((0, 1), (0, 2), (1, 2))
CLASS4_PAIRS = ((0, 3), (1, 3), (2, 3))


def _ranks_sharing_pairs(m):
    m = np.asarray(m)
    return bool(min(m[p] for p in SHARING_PAIRS) > max(m[p] for p in CLASS4_PAIRS))


def check_set_two(summary, response, last_weight, frac=0.5):
    """The paper's claims on synthetic set II (Fig. 4), for one model.

    Parameters
    ----------
    summary: ``EnsembleSummary`` with the 4 classes as targets.
    response: (K, 4) ``planted_motif_response`` to ``SET_TWO_MOTIFS`` (in that order).
    last_weight: (4, H) weight of the last layer.
    frac: detector threshold (see :func:`detectors`), as in set I.

    Returns
    -------
    dict with one bool per claim, ``all``, and the numbers (``similarity`` and ``cosine``: the
    4 x 4 matrices as nested lists, unrounded):

    * ``similarity_order``: class similarity (Pearson of non-negative OFIV) ranks each of (1,2),
      (1,3), (2,3) above every pair with class 4;
    * ``cosine_fails``: the cosine of the last-layer weight rows does not;
    * ``top_channel_own_motif``: each class's top OFIV channel has a positive OFIV and detects one
      of the class's own patterns by the set I rule (:func:`detectors`: the pattern it responds to
      most, with at least ``frac`` of the strongest channel's response to that pattern);
      ``top_channels`` lists (channel, the pattern it responds to most) per class and
      ``top_detects`` whether it passes the threshold for that pattern;
    * ``bic_one``: BIC picks one component for every class.

    Reported, not part of ``all`` (the paper's other Fig. 4 statements): ``signed_fails``, the
    Pearson of *signed* OFIVs does not give that order either ("suggest similar pattern as the
    last layer weight"); ``negative_share``, per class, its most negative OFIV as a share of its
    largest |OFIV| (0 when none is negative; the paper: "strong negative terms (blue) in OFIVs
    for all classes").
    """
    ofiv = np.asarray(summary.ofiv)
    sim = class_similarity(ofiv)
    cos = weight_cosine(np.asarray(last_weight))
    det = detectors(response, frac)
    tops, own, detects = [], [], []
    for c, pats in enumerate(SET_TWO_CLASSES):
        k = int(np.argmax(ofiv[c]))
        best = int(np.argmax(response[k]))
        tops.append((k, SET_TWO_MOTIFS[best]))
        detects.append(bool(det[k, best]))
        own.append(bool(ofiv[c, k] > 0 and any(det[k, SET_TWO_MOTIFS.index(m)] for m in pats)))
    out = dict(similarity_order=_ranks_sharing_pairs(sim), cosine_fails=not _ranks_sharing_pairs(cos),
               top_channel_own_motif=all(own), bic_one=bool(np.all(np.asarray(summary.n_components) == 1)))
    out["all"] = all(out[k] for k in SET_TWO_CLAIMS)
    # unrounded: describe_set_two rounds once when it prints (rounding here to 3 decimals first
    # printed a raw -0.0645 as -0.07 next to the figure's -0.06)
    scale = np.abs(ofiv).max(axis=1)
    out.update(signed_fails=not _ranks_sharing_pairs(signed_ofiv_correlation(ofiv)),
               negative_share=np.divide(np.maximum(-ofiv.min(axis=1), 0), scale,
                                        out=np.zeros_like(scale), where=scale > 0).tolist())
    out.update(similarity=sim.tolist(), cosine=cos.tolist(),
               top_channels=tops, top_detects=detects, own_motif=own,
               n_components=np.asarray(summary.n_components).tolist())
    return out


def run_synthetic(dataset="one", *, n_sequences=100_000, n_random=None, seq_len=None, max_copies=None,
                  epochs=None,
                  batch_size=None, lr=None, n_starts=None, n_probe=None, data_seed=0, init_seed=0,
                  optimizer="adam", test_fraction=TEST_FRACTION, verbose=False):
    """Generate a synthetic set, train the paper's CNN on it, run DeepResolve, check the claims.

    Parameters
    ----------
    dataset: "one" or "two".
    n_sequences, n_random: dataset sizes (``n_random`` is set I only; None:
        ``n_sequences // 5``, the paper's ratio, see ``synthetic_set_one``).
    max_copies: set I, copies of each chosen pattern (see ``synthetic_set_one``).
    seq_len, epochs, batch_size, lr, n_starts, n_probe: None takes ``DEFAULTS`` (``seq_len``:
        ``SEQ_LEN[dataset]``, 50 bp for set I, 150 bp for set II); ``n_probe``
        validation sequences are the ``inputs`` of the ascent (the ``l2="auto"`` reference).
    data_seed: seeds the data, the split and the batch order; init_seed seeds the weights.
    test_fraction: an independent test set of ``test_fraction`` times the dataset's size (set I:
        that share of ``n_sequences`` planted and of ``n_random`` random sequences) is drawn from
        the same generator with :func:`test_seed` (``data_seed``), never trained on and never used
        to choose the epoch, and scored with the kept weights (``run.train.test_auc``). 0: none.
        It changes nothing else: the same data, training, model and DeepResolve numbers.
    optimizer: "adam" (the default, with ``lr`` 2e-3) or "adadelta" (the authors' Keras-1.2
        recipe; ``lr=None`` then means Adadelta's 1.0, and it needs more ``epochs``).
    verbose: progress bars and messages on stderr.

    Returns
    -------
    SyntheticRun
    """
    if dataset not in ("one", "two"):
        raise ValueError(f"dataset must be 'one' or 'two', got {dataset!r}")
    if n_random is None and dataset == "one":   # synthetic_set_one's default, named for the test set
        n_random = _check_int("n_sequences", n_sequences, 0) // 5
    d = {k: v for k, v in DEFAULTS.items()}
    if optimizer == "adadelta" and lr is None:
        d["lr"] = None  # train_classifier's Adadelta default (1.0), not Adam's 2e-3
    for k, v in dict(seq_len=seq_len, max_copies=max_copies, epochs=epochs, batch_size=batch_size, lr=lr, n_starts=n_starts,
                     n_probe=n_probe).items():
        if v is not None:
            d[k] = v
    if d["seq_len"] is None:
        d["seq_len"] = SEQ_LEN[dataset]
    if not 0 <= float(test_fraction) <= 1:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    seconds = {}
    t = time.perf_counter()
    if dataset == "one":
        X, y = synthetic_set_one(n_sequences, n_random, seq_len=d["seq_len"], max_copies=d["max_copies"],
                                 random_state=data_seed)
        motifs, n_out = SET_ONE_MOTIFS, 1
    else:
        X, y = synthetic_set_two(n_sequences, seq_len=d["seq_len"], random_state=data_seed)
        motifs, n_out = SET_TWO_MOTIFS, 4
    test = None
    if test_fraction > 0:   # its own stream (test_seed): the training data above are unchanged
        rng = np.random.default_rng(test_seed(data_seed))
        if dataset == "one":
            test = synthetic_set_one(round(test_fraction * n_sequences), round(test_fraction * n_random),
                                     seq_len=d["seq_len"], max_copies=d["max_copies"], random_state=rng)
        else:
            test = synthetic_set_two(max(4, round(test_fraction * n_sequences)), seq_len=d["seq_len"],
                                     random_state=rng)
    seconds["generate"] = time.perf_counter() - t
    say(f"set {dataset}: {len(X)} sequences of {d['seq_len']} bp; fraction positive per output: "
        + " ".join(f"{v:.3f}" for v in y.mean(0).tolist()))

    # torch's global generator seeds the weights and drives training (dropout); forked, so the
    # caller's own random stream is as it was afterwards
    with torch.random.fork_rng(devices=[]):
        t = time.perf_counter()
        torch.default_generator.manual_seed(init_seed)   # the CPU's only: CUDA's is not forked
        model = keras_init_(PaperCNN(n_outputs=n_out, seq_len=d["seq_len"]))
        res = train_classifier(model, X, y, epochs=d["epochs"], batch_size=d["batch_size"], lr=d["lr"],
                               optimizer=optimizer, random_state=data_seed, test=test, verbose=verbose)
        seconds["train"] = time.perf_counter() - t
        say(f"validation AUC {np.round(res.val_auc, 4).tolist()} (best epoch {res.best_epoch + 1}, "
            "chosen on these rows)" + ("" if test is None else
                                      f"; test AUC {np.round(res.test_auc, 4).tolist()} on "
                                      f"{len(test[1])} independent sequences"))

        t = time.perf_counter()
        probe = X[res.val_index[:d["n_probe"]]]
        opt = LayerFeatureOptimizer(model, model.pool)
        fims, scores = opt.attribute(probe, target=None, n_starts=d["n_starts"], l2="auto", seed=init_seed,
                                     return_scores=True, verbose=verbose)
        summary = summarize(fims, scores, random_state=0)
        # what made these numbers, kept in summary_*.npz (EnsembleSummary.load(...).settings)
        summary.settings.update(
            **provenance(), dataset=dataset, layer="pool", l2=float(opt.diagnostics.l2),
            l2_auto=opt.diagnostics.l2_auto,
            n_starts=int(d["n_starts"]), seed=int(init_seed), data_seed=int(data_seed),
            n_probe=int(len(probe)), seq_len=int(d["seq_len"]), epochs=int(d["epochs"]),
            val_auc=[float(a) for a in res.val_auc],
            test_auc=None if res.test_auc is None else [float(a) for a in res.test_auc],
            n_test=res.settings["n_test"], n_sequences=int(n_sequences),
            n_random=int(n_random) if dataset == "one" else None,
            max_copies=d["max_copies"] if dataset == "one" else None,
            batch_size=int(d["batch_size"]), lr=d["lr"], optimizer=optimizer)
        response = planted_motif_response(model, model.pool, motifs, seq_len=d["seq_len"], random_state=data_seed)
        seconds["deepresolve"] = time.perf_counter() - t
        run = SyntheticRun(dataset=dataset, model=model, train=res, summary=summary, l2=float(opt.diagnostics.l2),
                           response=response, motifs=motifs, labels=y[res.val_index].numpy(), seconds=seconds)
        if dataset == "one":
            ablation = xor_ablation(model, model.pool, d["seq_len"], random_state=data_seed)
            run.checks = check_set_one(summary, response, ablation=ablation)
            table = logic_table(model, d["seq_len"], random_state=data_seed)
            run.checks.update(logic_table=table, xor_learned=xor_learned(table))
        else:
            run.checks = check_set_two(summary, response, model.fc2.weight.detach().numpy())
        return run


# ---------------------------------------------------------------------------------- reporting
def _fmt_checks(checks, claims):
    """'claim=yes, ..., all=yes', then the other booleans of ``checks`` as reported, not claimed."""
    yn = {True: "yes", False: "NO"}
    text = ", ".join(f"{k}={yn[checks[k]]}" for k in claims + ("all",))
    extra = [f"{k}={yn[v]}" for k, v in checks.items()
             if isinstance(v, bool) and k not in claims and k != "all"]
    return text + (f" (also reported: {', '.join(extra)})" if extra else "")


def _auc_line(run, paper):
    """The summaries' AUC line: the test AUC (the paper's figure is a test AUC on 20% held out),
    then the validation AUC, which is measured on the rows that chose the kept epoch."""
    fmt = lambda a: " ".join(f"{v:.4f}" for v in a)   # noqa: E731
    val = f"validation AUC {fmt(run.train.val_auc)} (the 20% split that chose the epoch)"
    test = getattr(run.train, "test_auc", None)      # a TrainResult-like object may lack it
    if test is None:
        return f"{val}; no independent test set (paper's test AUC: {paper})"
    return (f"test AUC {fmt(test)} on {run.train.settings['n_test']} independent "
            f"sequences (paper's test AUC: {paper}); {val}")


def describe_set_one(run):
    """A short text summary of a set I run (what ``summary_set1.txt`` holds)."""
    s, r, c = run.summary, run.response, run.checks
    labels = channel_labels(r, run.motifs)
    lines = [
        "DeepResolve on synthetic set I (label = CAGGTC AND (GCTCAT XOR CGCTTG))",
        _auc_line(run, "0.985"),
        f"lambda (l2='auto') {run.l2:.3g}; "
        f"{s.fiv.shape[1]} starts; BIC picks {int(s.n_components[0])} IL component(s)",
        "",
        "non-additive channels (by OFIV):" + ("" if s.nonadditive[0].any() else " (none)"),
    ]
    order = np.argsort(-s.ofiv[0])
    for k in order:
        if s.nonadditive[0, k]:
            fiv = s.fiv[0, :, k]
            lines.append(f"  ch {k:2d}  OFIV {s.ofiv[0, k]:+.3f}  IL {s.il[0, k]:.2e}  "
                         f"{CATEGORY_NAMES[s.category[0, k]]}, positive in {np.sum(fiv > 0)}/{len(fiv)} "
                         f"starts  matches: {labels[k] or '-'}")
    lines.append("top additive channels (by OFIV):")
    n = 0
    for k in order:
        if not s.nonadditive[0, k] and n < 5:
            lines.append(f"  ch {k:2d}  OFIV {s.ofiv[0, k]:+.3f}  matches: {labels[k] or '-'}")
            n += 1
    a, b = c["strongest_xor"]
    lines += ["", "mean logit per planted combination (is the logic learnt?):"]
    lines += [f"  {k:22s} {v:+.2f}" for k, v in c["logic_table"].items()]
    if a >= 0 and b >= 0:
        g, h = c["opposite_weakest_pair"]
        n = c["opposite_pairs"]
        xor_line = (f"all {n} GCTCAT x CGCTTG detector pairs take opposite FIV signs in every weighted start"
                    if c["opposite_min_fraction"] == 1.0 else
                    f"GCTCAT x CGCTTG detector pairs ({n}): the least opposite, ch {g} x ch {h}, takes "
                    f"opposite FIV signs in {c['opposite_min_fraction']:.0%} of the weighted starts")
        xor_line += (f"; the strongest GCTCAT detector ch {a} and CGCTTG detector ch {b}: in "
                     f"{c['opposite_fraction']:.0%} of the starts")
    else:
        xor_line = ("no channel detects " + " or ".join(m for m, k in zip(SET_ONE_XOR_MOTIFS, (a, b)) if k < 0)
                    + " (a detector responds to it more than to the other planted motifs; train longer?)")
    lines += [
        "",
        xor_line,
        "paper's claims: " + _fmt_checks(c, SET_ONE_CLAIMS),
    ]
    if "xor_used" in c:
        used = c["xor_used"]
        flagged = [k for k in used if k in c["nonadditive_channels"]]
        others = [int(k) for k in c["nonadditive_channels"] if k not in used]
        lines += [
            f"by ablation (one channel zeroed in sequences with CAGGTC and one or both XOR patterns) the "
            f"network uses channels {used} in its XOR; DeepResolve flags {len(flagged)} of them "
            f"non-additive: {flagged}"
            + (f"; it also flags {others}, which the ablation does not find used in the XOR"
               if others else ""),
        ]
    lines += ["", _LEGEND_COMMON, _LEGEND_SET_ONE]
    return "\n".join(lines) + "\n"


_LEGEND_COMMON = """\
How to read this
  FIV   a channel's mean value over positions in the feature map one gradient-ascent start
        found (the map that maximises the class score minus lambda * its squared norm).
  OFIV  overall FIV: the weighted mean over the starts (weights from each start's score);
        for a non-additive channel whose sign flips, the weighted mean of its positive FIVs.
        Large positive = the class wants this channel on; negative = wants it off.
  IL    inconsistency level: the weighted variance of a channel's FIV over the starts.
  BIC   Gaussian mixtures with 1-3 components are fitted to the IL values of all channels;
        the count with the lowest BIC wins. Channels outside the lowest-IL component are
        non-additive (their contribution depends on other channels, as in XOR); one component
        means every channel is additive.
  lambda  the L2 penalty of the ascent; l2='auto' picks it so that the maps have about the norm of
        the layer's mean activation on real sequences.
  matches / gain  the planted motif a channel responds to most: the rise of its peak activation
        when the motif is written into motif-free random sequence (see planted_motif_response);
        "-": the channel detects none of them (by the detector rule under the claims below).
  also reported   yes/NO readings printed after the claims: not part of them (a NO there is
        not a failed claim); explained below the claims."""

_LEGEND_SET_ONE = """\
  paper's claims (Fig. 2), per model:
    (a detector of a motif: a channel that responds to it most of the planted motifs, with at
    least half the gain of the motif's strongest channel)
    xor_nonadditive        every GCTCAT and CGCTTG detector is flagged non-additive
    xor_opposite           every GCTCAT detector and every CGCTTG detector take opposite FIV
                           signs in every start that carries weight
    top_nonadditive_is_xor the non-additive channel with the highest OFIV detects one of them
    and_additive           every CAGGTC-only detector is additive, and the additive channel with
                           the highest OFIV detects CAGGTC
    bic_gt1                BIC picks more than one IL component
  also reported:
    xor_sign_flip          the strongest GCTCAT and CGCTTG detectors both change FIV sign
                           across the starts (the ascent found both XOR modes)
    strongest_xor_nonadditive  those two strongest detectors are both flagged non-additive
    selective_xor_nonadditive  every XOR detector that answers to one XOR motif only (less than
                           half as much to the other) is flagged non-additive
    bic_three              BIC picks exactly 3 components, as for the paper's network (ours get
                           2 or 3)
    ablation_top_nonadditive  the channel whose zeroing changes the network's XOR most is
                           flagged non-additive
    xor_learned            the logit table shows the logic: both positive combinations score
                           above every negative one
  One model can fail a claim that holds on most: benchmarks/synthetic.py retrains 10 models and
  counts them (README, "What reproduces")."""

_LEGEND_SET_TWO = """\
  class similarity  Pearson correlation of two classes' OFIVs with negative values set to 0
        (the paper's choice: features a class wants, not those it uses to rule others out).
  last-layer cosine  cosine of the two classes' rows of the final dense layer's weights.
  paper's claims (Fig. 4), per model:
    similarity_order      each of (1,2), (1,3), (2,3) (classes sharing a motif) is more similar
                          than every pair with class 4 (which shares none)
    cosine_fails          the last-layer cosine does not give that order
    top_channel_own_motif each class's top OFIV channel detects one of its own motifs (responds
                          to it most of the four, with at least half the gain of the
                          motif's strongest channel, as in set I)
    bic_one               BIC picks one IL component for every class (all additive)
  also reported:
    signed_fails          the Pearson of the signed OFIVs misorders the pairs too (the paper's
                          reading of its Fig. 4c: negative terms confound similarity)
  One model can fail a claim that holds on most: benchmarks/synthetic.py retrains 10 models and
  counts them (README, "What reproduces")."""


def describe_set_two(run):
    """A short text summary of a set II run."""
    c = run.checks
    lines = ["DeepResolve on synthetic set II (1 = GATA+CAGATG, 2 = TCAT+CAGATG, 3 = GATA+TCAT, 4 = CGCTTG)",
             _auc_line(run, "0.968 0.967 0.979 0.994"),
             f"lambda {run.l2:.3g}; BIC components per class {c['n_components']}"]
    for ci, (k, best) in enumerate(c["top_channels"]):
        how = ("detects it" if c["top_detects"][ci] else
               "below half the strongest channel's response to it: not a detector")
        lines.append(f"  class {ci + 1}: top OFIV channel {k} responds most to {best} ({how})")
    sim = np.asarray(c["similarity"])
    cos = np.asarray(c["cosine"])
    lines.append("class similarity (1,2) (1,3) (2,3) | (1,4) (2,4) (3,4): "
                 + " ".join(f"{sim[p]:+.2f}" for p in SHARING_PAIRS) + " | "
                 + " ".join(f"{sim[p]:+.2f}" for p in CLASS4_PAIRS))
    lines.append("last-layer cosine same pairs:                         "
                 + " ".join(f"{cos[p]:+.2f}" for p in SHARING_PAIRS) + " | "
                 + " ".join(f"{cos[p]:+.2f}" for p in CLASS4_PAIRS))
    lines.append("paper's claims: " + _fmt_checks(c, SET_TWO_CLAIMS))
    lines += ["", _LEGEND_COMMON, _LEGEND_SET_TWO]
    return "\n".join(lines) + "\n"


def figure_set_one(run):
    """The paper's Fig. 2 for a set I run -> matplotlib Figure."""
    from .plot import plot_feature_importance
    return plot_feature_importance(
        run.summary, target=0, filters=run.model.conv.weight.detach(),
        channel_labels=channel_labels(run.response, run.motifs),
        title=f"Synthetic set I: FIVs of {run.summary.fiv.shape[1]} starts, IL, OFIV (* non-additive)")


def figure_set_two(run):
    """The paper's Fig. 4 for a set II run -> (Figure of the four OFIV rows, Figure of the four
    class x class matrices: class similarity, label correlation, signed-OFIV Pearson, last-layer
    weight cosine)."""
    from .plot import plot_ofiv, plot_similarity_matrices

    s = run.summary
    names = [f"class {c + 1}: {'+'.join(p)}" for c, p in enumerate(SET_TWO_CLASSES)]
    top = plot_ofiv(s.ofiv, class_names=names, title="Synthetic set II: OFIV per class")
    try:
        mats = {"class similarity\n(Pearson, OFIV >= 0)": class_similarity(s.ofiv),
                "label correlation": label_correlation(run.labels),
                "Pearson, signed OFIV": signed_ofiv_correlation(s.ofiv),
                "last-layer weight cosine": weight_cosine(run.model.fc2.weight.detach().numpy())}
        bottom = plot_similarity_matrices(mats, class_names=["1", "2", "3", "4"])
    except BaseException:
        import matplotlib.pyplot as plt
        plt.close(top)   # no figure left open when the second one fails
        raise
    return top, bottom


def run_demo(out, *, set_two=False, n_sequences=100_000, n_random=None, epochs=None, seed=0,
             threads=1, verbose=True):
    """The demo: set I (and optionally set II) end to end, figures and summaries written to ``out``.

    ``threads``: torch CPU threads while it runs (0 or None: leave torch's setting); the caller's
    setting is restored afterwards. Returns a dict {name: path} of the files written
    (``output_names(set_two)``). ``out`` holding one of them as something other than a file (a
    folder named ``fig2_set1.png``) raises ValueError before any work.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    clash = _clashes(out, output_names(set_two))
    if clash:   # before the training, not after it (write_together would refuse them there)
        raise ValueError(f"{out} holds {clash} as something other than a file: move it away")
    with torch_threads(threads):
        return _run_demo(out, set_two, n_sequences, n_random, epochs, seed, verbose)


def _run_demo(out, set_two, n_sequences, n_random, epochs, seed, verbose):
    import matplotlib.pyplot as plt

    figures = []   # the demo's own, closed at the end whatever happens (not the caller's)
    try:
        return _make_and_write(out, set_two, n_sequences, n_random, epochs, seed, verbose,
                               figures)
    finally:
        for fig in figures:
            plt.close(fig)


def _make_and_write(out, set_two, n_sequences, n_random, epochs, seed, verbose, figures):
    from .plot import save_figure

    writers = {}   # every file is written at the end, all or nothing (cli.write_together)
    t0 = time.perf_counter()
    runs = [("one", "set1")] + ([("two", "set2")] if set_two else [])
    for dataset, tag in runs:
        run = run_synthetic(dataset, n_sequences=n_sequences, n_random=n_random, epochs=epochs,
                            data_seed=seed, init_seed=seed, verbose=verbose)
        if dataset == "one":
            text = describe_set_one(run)
            figs = {"fig2_set1": figure_set_one(run)}
        else:
            text = describe_set_two(run)
            a, b = figure_set_two(run)
            figs = {"fig4a_set2_ofiv": a, "fig4b_set2_similarity": b}
        figures.extend(figs.values())
        for name, fig in figs.items():
            for fmt in ("png", "svg"):
                writers[f"{name}.{fmt}"] = partial(save_figure, fig, formats=fmt)
        writers[f"summary_{tag}.txt"] = partial(_write_text, text=text)
        writers[f"summary_{tag}.npz"] = run.summary.save
        writers[f"model_{tag}.pt"] = partial(_save_state, run.model.state_dict())
        if verbose:
            print(text, flush=True)
    replaced = write_together(out, writers)
    written = {name: out / name for name in writers}
    if not set_two:   # a set II of an earlier run beside this set I would read as one run
        stale = sorted(p.name for p in out.iterdir() if p.is_file() and p.name in _SET_TWO_FILES)
        if stale:
            warnings.warn(f"{out} still holds set II files of an earlier run, left as they were "
                          f"(this run made set I only): {', '.join(stale)}", UserWarning,
                          stacklevel=4)    # _make_and_write < _run_demo < run_demo < caller
    if verbose:
        print(f"wrote {len(written)} files to {out} in {time.perf_counter() - t0:.0f} s"
              + replaced_note(replaced), flush=True)
    return written


#: the files ``--set-two`` adds (see the module docstring)
_SET_TWO_FILES = frozenset(f"{name}.{fmt}" for name in ("fig4a_set2_ofiv", "fig4b_set2_similarity")
                           for fmt in ("png", "svg")) | {"summary_set2.txt", "summary_set2.npz",
                                                         "model_set2.pt"}


def output_names(set_two=False):
    """The files a demo run writes in its folder (set I's, and set II's with ``set_two``)."""
    names = [f"{n}.{fmt}" for n in ("fig2_set1",) for fmt in ("png", "svg")]
    names += ["summary_set1.txt", "summary_set1.npz", "model_set1.pt"]
    return names + (sorted(_SET_TWO_FILES) if set_two else [])


def _write_text(path, text):
    Path(path).write_text(text)


def _save_state(state, path):
    torch.save(state, path)


def add_arguments(parser):
    """The demo's command-line options (shared by ``deepresolve demo`` and ``python -m``)."""
    parser.add_argument("--out", required=True, type=out_path,
                        help="folder for the figures and summaries (created if missing; files "
                             "of an earlier run there are replaced, and the final message, which "
                             "--quiet silences, says so)")
    parser.add_argument("--set-two", action="store_true", help="also run synthetic set II (Fig. 4)")
    parser.add_argument("--n-sequences", type=int_at_least(100), default=100_000,
                        help="planted sequences (default 100000)")
    parser.add_argument("--n-random", type=int_at_least(0), default=None,
                        help="fully random set I sequences, label 0 (default: a fifth of "
                             "--n-sequences, the paper's 100000 : 20000)")
    parser.add_argument("--epochs", type=int_at_least(1), default=None,
                        help=f"training epochs (default {DEFAULTS['epochs']})")
    seed_argument(parser, "data and initialisation seed")
    add_threads_argument(parser, "this small CNN gains little from more, and loses a lot when the "
                                 "cores are shared")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary on the terminal")
    return parser


def run_from_args(args):
    # before any work: an unwritable --out, or a folder named like an output, fails at once
    output_folder(args.out, "demo", names=output_names(args.set_two))
    import matplotlib
    matplotlib.use("Agg")  # the command line draws to files only; run_demo keeps a caller's backend
    with write_errors("demo"):   # a full disk: one line naming the file; earlier outputs kept
        run_demo(args.out, set_two=args.set_two, n_sequences=args.n_sequences,
                 n_random=args.n_random, epochs=args.epochs, seed=args.seed,
                 threads=args.threads, verbose=not args.quiet)
    return 0


def main(argv=None):
    """``python -m deepresolve_captum.demo ARGS`` is ``deepresolve demo ARGS``: the same parser,
    one-line warnings, "interrupted" on Ctrl-C and no empty --out folder left by a failed run."""
    from .cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
