"""Class-relationship toolkit (clustering.py): DeepResolve's similarity of a hand-built multi-task
head clusters into its planted class groups; spectral co-clustering recovers planted biclusters;
the association index counts as the paper's Fig. 8b."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer, summarize
from deepresolve_captum.clustering import (association_index, bicluster, class_relationships,
                                           hierarchical_clustering)

GROUPS = np.repeat([0, 1, 2], 3)  # 9 classes in 3 planted groups
K = 12                            # channels, 4 per group


class MultiTaskHead(nn.Module):
    """conv (12 filters) -> ReLU -> global max -> hidden (6 ReLU units, 2 per group) -> 9 logits.
    Hidden units of group g read the 4 channels of group g positively and the rest negatively;
    the classes of group g read the hidden units of group g positively, the others negatively.
    All magnitudes are random, so classes of one group differ but share their positive channels."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        u = lambda *s: torch.rand(*s, generator=g)
        self.conv = nn.Conv1d(4, K, 8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(K, 6)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(6, 9)
        chan_group = np.repeat([0, 1, 2], 4)
        hid_group = np.repeat([0, 1, 2], 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            same = torch.as_tensor(hid_group[:, None] == chan_group[None, :])
            self.fc1.weight.copy_(torch.where(same, 0.5 + u(6, K), -0.5 * u(6, K)))
            self.fc1.bias.fill_(0.1)
            same = torch.as_tensor(GROUPS[:, None] == hid_group[None, :])
            self.fc2.weight.copy_(torch.where(same, 0.5 + u(9, 6), -0.5 * u(9, 6)))
            self.fc2.bias.zero_()

    def forward(self, x):
        h = self.flatten(self.pool(self.relu(self.conv(x))))
        return self.fc2(self.relu2(self.fc1(h)))


def test_hierarchical_clustering_recovers_planted_groups():
    m = MultiTaskHead()
    X = nn.functional.one_hot(torch.randint(0, 4, (16, 60)), 4).permute(0, 2, 1).float()
    fims, scores = LayerFeatureOptimizer(m, m.pool).attribute(
        X, target=None, n_starts=6, l2="auto", seed=0, return_scores=True)
    s = summarize(fims, scores, random_state=0)
    rel = class_relationships(ofiv=s.ofiv, weight=m.fc2.weight)
    sim = rel["deepresolve"]
    assert sim.shape == (9, 9) and list(rel) == ["deepresolve", "signed_ofiv", "weights"]
    res = hierarchical_clustering(sim, n_clusters=3)
    assert adjusted_rand_score(GROUPS, res.labels) == 1.0, (res.labels, np.round(sim, 2))
    assert sorted(res.order) == list(range(9)) and res.linkage.shape == (8, 4)
    # the leaf order keeps each group contiguous
    assert all(len(set(GROUPS[res.order[i:i + 3]])) == 1 for i in (0, 3, 6))
    # a random similarity does not reproduce the groups
    rng = np.random.default_rng(0)
    r = rng.uniform(-1, 1, (9, 9))
    noise = hierarchical_clustering((r + r.T) / 2, n_clusters=3)
    assert adjusted_rand_score(GROUPS, noise.labels) < 0.5


def test_threshold_cut_and_bad_input():
    s = np.array([[1, .9, 0], [.9, 1, .1], [0, .1, 1.]])
    res = hierarchical_clustering(s, threshold=0.5)
    assert res.labels[0] == res.labels[1] != res.labels[2]
    assert np.allclose(res.distance, np.clip(1 - s, 0, None) * (1 - np.eye(3)))
    assert hierarchical_clustering(s).labels is None
    with pytest.raises(ValueError, match="square"):
        hierarchical_clustering(np.ones((2, 3)))
    with pytest.raises(ValueError, match="ward"):
        hierarchical_clustering(s, method="ward")
    with pytest.raises(ValueError, match="not both"):
        hierarchical_clustering(s, n_clusters=2, threshold=0.3)
    with pytest.raises(ValueError, match="NaN"):
        hierarchical_clustering(np.full((2, 2), np.nan))
    # an OFIV matrix passed by mistake, a scaled matrix, a threshold that cannot be a distance
    with pytest.raises(ValueError, match="not symmetric.*class_similarity"):
        hierarchical_clustering(np.random.default_rng(0).normal(size=(4, 4)))
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        hierarchical_clustering(5 * s)
    with pytest.raises(ValueError, match="threshold"):
        hierarchical_clustering(s, threshold=-1)
    with pytest.raises(ValueError, match="int >= 2"):
        bicluster(s, n_clusters=1)


def test_optimal_ordering_auto_by_size():
    from deepresolve_captum.clustering import OPTIMAL_ORDERING_MAX
    s = np.array([[1, .9, 0], [.9, 1, .1], [0, .1, 1.]])
    assert hierarchical_clustering(s).settings["optimal_ordering"] is True
    assert hierarchical_clustering(s, optimal_ordering=False).settings["optimal_ordering"] is False
    rng = np.random.default_rng(0)
    C = OPTIMAL_ORDERING_MAX + 1
    x = rng.normal(size=(C, 8))
    big = np.clip(np.corrcoef(x), -1, 1)
    res = hierarchical_clustering(big, n_clusters=5)
    assert res.settings["optimal_ordering"] is False and sorted(res.order) == list(range(C))
    with pytest.raises(ValueError, match="optimal_ordering"):
        hierarchical_clustering(s, optimal_ordering="yes")


def _planted_similarity(seed=0):
    """16 classes: rows 0-9 ('TFs') x columns 10-15 ('DNase'); TFs 0-4 go with DNase 10-12,
    TFs 5-9 with DNase 13-15 (similarity ~0.7 inside a bicluster, ~0 outside, plus noise)."""
    rng = np.random.default_rng(seed)
    C = 16
    grp = np.array([0] * 5 + [1] * 5 + [0] * 3 + [1] * 3)
    s = np.where(grp[:, None] == grp[None, :], 0.7, 0.0) + rng.normal(0, 0.08, (C, C))
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return np.clip(s, -1, 1), grp


@pytest.mark.parametrize("method,k", [("cocluster", 2), ("bicluster", 2)])
def test_bicluster_recovers_planted_blocks(method, k):
    s, grp = _planted_similarity()
    rows, cols = np.arange(10), np.arange(10, 16)
    res = bicluster(s, rows, cols, n_clusters=k, method=method, random_state=0)
    assert adjusted_rand_score(grp[rows], res.row_labels) == 1.0
    assert adjusted_rand_score(grp[cols], res.column_labels) == 1.0
    ob = res.ordered_block
    assert ob.shape == (10, 6)
    # grouped: the first bicluster's rows are contiguous in the order
    first = res.row_labels[res.row_order[0]]
    assert (res.row_labels[res.row_order[:5]] == first).all()
    with pytest.raises(ValueError):
        bicluster(s, rows, cols, n_clusters=7)


def test_association_index_counts():
    s, grp = _planted_similarity(1)
    rows = np.arange(10)
    cols = np.zeros(16, bool)
    cols[10:] = True
    names = [f"c{i}" for i in range(16)]
    df = association_index(s, rows, cols, row_names=names)
    block = s[:10, 10:]
    hi, lo = np.quantile(block, 0.85), np.quantile(block, 0.15)
    assert np.isclose(df.attrs["upper_threshold"], hi) and np.isclose(df.attrs["lower_threshold"], lo)
    byc = df.set_index("class")
    for i in rows:
        assert byc.loc[i, "n_positive"] == (block[i] > hi).sum()
        assert byc.loc[i, "n_negative"] == (block[i] < lo).sum()
        assert byc.loc[i, "name"] == f"c{i}"
    assert list(df["index"]) == sorted(df["index"], reverse=True)
    # self-pairs are left out when a class is in both groups
    df2 = association_index(s, np.arange(12), np.arange(8, 16), quantiles_of="all")
    assert df2.set_index("class").loc[10, "n_columns"] == 7
    with pytest.raises(ValueError):
        association_index(s, rows, cols, upper=0.1, lower=0.5)
    with pytest.raises(ValueError, match="range"):
        association_index(s, [0, 99], cols)


def test_figures(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepresolve_captum.plot import (plot_association_index, plot_bicluster,
                                         plot_clustered_heatmap, save_figure)

    s, grp = _planted_similarity(2)
    names = [f"TF{i}" for i in range(10)] + [f"DNase{i}" for i in range(6)]
    res = hierarchical_clustering(s, n_clusters=2)
    fig = plot_clustered_heatmap(s, res, class_names=names, title="planted groups")
    paths = save_figure(fig, tmp_path / "heatmap", formats=("png",))
    assert paths[0].stat().st_size > 5000
    # the heatmap is drawn in leaf order
    img = fig.axes[1].images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), s[np.ix_(res.order, res.order)])
    plt.close(fig)
    df = association_index(s, np.arange(10), np.arange(10, 16), row_names=names)
    ax = plot_association_index(df)
    heights = [p.get_height() for p in ax.patches]
    assert heights[:10] == list(df["n_positive"]) and heights[10:] == list(-df["n_negative"])
    save_figure(ax.figure, tmp_path / "assoc", formats=("png",))
    plt.close(ax.figure)
    b = bicluster(s, np.arange(10), np.arange(10, 16), n_clusters=2)
    ax = plot_bicluster(b, row_names=names, column_names=names)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), b.ordered_block)
    save_figure(ax.figure, tmp_path / "bicluster", formats=("png",))
    plt.close("all")
    with pytest.raises(ValueError):
        plot_association_index(pd.DataFrame({"x": [1]}))


def test_figures_refuse_mismatches_and_label_large_matrices():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepresolve_captum.plot import MAX_OFIV_ROWS, plot_clustered_heatmap, plot_ofiv
    from deepresolve_captum.similarity import class_similarity

    rng = np.random.default_rng(0)
    ofiv = rng.normal(size=(90, 6))
    s = class_similarity(ofiv)
    with pytest.raises(ValueError, match="clustering is of 10 classes, the similarity of 90"):
        plot_clustered_heatmap(s, hierarchical_clustering(s[:10, :10]))
    fig = plot_clustered_heatmap(s)                       # > 80 classes: no names, say what ticks are
    assert "clustered order" in fig.axes[1].get_xlabel()
    plt.close(fig)
    with pytest.raises(ValueError, match=f"at most {MAX_OFIV_ROWS} rows"):
        plot_ofiv(rng.normal(size=(MAX_OFIV_ROWS + 1, 6)))


def test_condensed_distance_in_blocks_leaves_input_alone(monkeypatch):
    """The distance is built block by block from S (float64, float32 or a memmap) without
    touching S, and equals 1 - (S + S^T) / 2 clipped at 0, whatever the block size."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    from deepresolve_captum import clustering as CL
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6))
    s = np.corrcoef(x)
    s[2, 5] += 1e-9                                           # symmetric up to rounding
    ref = squareform(np.clip(1 - (s + s.T) / 2, 0, None) * (1 - np.eye(40)), checks=False)
    keep = s.copy()
    whole = hierarchical_clustering(s, n_clusters=4)
    monkeypatch.setattr(CL, "_row_ranges", lambda C, target_bytes=0: [(r, min(C, r + 7))
                                                                       for r in range(0, C, 7)])
    blocked = hierarchical_clustering(s, n_clusters=4)
    assert np.array_equal(s, keep), "the similarity given was modified"
    for res in (whole, blocked):
        assert np.allclose(res.condensed_distance, ref, atol=1e-12)
        assert res.distance.shape == (40, 40) and np.allclose(squareform(res.distance), ref)
    assert np.array_equal(whole.labels, blocked.labels)
    assert np.allclose(whole.linkage, linkage(ref, method="average", optimal_ordering=True))
    s32 = s.astype(np.float32)
    res32 = hierarchical_clustering(s32, n_clusters=4)
    assert s32.dtype == np.float32 and np.allclose(res32.condensed_distance, ref, atol=1e-6)
    bad = s.copy()
    bad[30, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hierarchical_clustering(bad)
    asym = s.copy()
    asym[35, 2] += 0.5                                         # in a later block than its mirror
    with pytest.raises(ValueError, match="not symmetric"):
        hierarchical_clustering(asym)


def _association_index_reference(s, rows, columns, upper=0.85, lower=0.15, quantiles_of="block"):
    """The whole-matrix version association_index replaced: a float64 copy of S, the pool of
    every off-diagonal entry (or of the block), np.quantile. Returns (hi, lo, n_pos, n_neg)."""
    s = np.array(s, dtype=np.float64)
    r, c = np.asarray(rows), np.asarray(columns)
    block = s[np.ix_(r, c)].copy()
    block[r[:, None] == c[None, :]] = np.nan
    pool = block[np.isfinite(block)] if quantiles_of == "block" else s[~np.eye(len(s), dtype=bool)]
    hi, lo = np.quantile(pool, upper), np.quantile(pool, lower)
    with np.errstate(invalid="ignore"):
        return hi, lo, np.sum(block > hi, axis=1), np.sum(block < lo, axis=1)


def test_linear_quantiles_are_numpys():
    """The order-statistic quantiles (pool partitioned in place, optionally standing for every
    value twice) equal np.quantile of the float64 values bit for bit, whatever q's type."""
    from deepresolve_captum.clustering import _linear_quantiles
    rng = np.random.default_rng(11)
    qs = [0, 1, 0.0, 1.0, 0.15, 0.85, 0.5, 1 / 3, 0.999, 1e-9, np.float32(0.85),
          np.float64(0.15), *rng.uniform(size=6)]
    for n in (1, 2, 3, 10, 101, 1000):
        for dtype in (np.float64, np.float32):
            for ties in (False, True):
                x = rng.uniform(-1, 1, size=n)
                if ties:
                    x = np.round(x, 1) + 0.0                    # no -0.0: its order is arbitrary
                x = x.astype(dtype)
                for doubled in (False, True):
                    ref_pool = np.repeat(x, 2) if doubled else x
                    got = _linear_quantiles(x.copy(), qs, doubled=doubled)
                    for q, g in zip(qs, got):
                        want = np.quantile(ref_pool.astype(np.float64), q)
                        assert type(g) is np.float64
                        assert g.tobytes() == np.float64(want).tobytes(), (n, dtype, q, g, want)


@pytest.mark.parametrize("blocks", [None, 7])
def test_association_index_equals_whole_matrix_reference(monkeypatch, blocks):
    """Thresholds and counts as the float64 whole-matrix version gave them, for exactly symmetric
    matrices (class_similarity, float32 and float64: the upper triangle stands for the rest),
    np.corrcoef (symmetric only to rounding) and an asymmetric one (all entries pooled: the
    asymmetry found in the first row block or in a later one), a memmap and a tensor; the input
    is left as it was. ``blocks=7`` reads the matrix 7 rows at a time."""
    from deepresolve_captum import class_similarity
    from deepresolve_captum import clustering as CL
    if blocks:
        monkeypatch.setattr(CL, "_row_ranges", lambda C, target_bytes=0: [
            (r, min(C, r + blocks)) for r in range(0, C, blocks)])
    rng = np.random.default_rng(12)
    C = 40
    x = rng.normal(size=(C, 12))
    x[3] = -1.0                                         # constant once clipped: exact zeros
    asym_late = np.corrcoef(rng.normal(size=(C, 9)))
    asym_late = (asym_late + asym_late.T) / 2          # exactly symmetric, but for:
    asym_late[30, 20] += 0.25                           # row 20: the third block of 7 rows
    asym_early = rng.uniform(-1, 1, size=(C, C))
    mats = [class_similarity(x), class_similarity(x.astype(np.float32)),
            np.corrcoef(rng.normal(size=(C, 9))), asym_late, asym_early,
            asym_early.astype(np.float32), np.round(class_similarity(x), 1) + 0.0]
    assert np.array_equal(mats[0], mats[0].T) and np.array_equal(mats[1], mats[1].T)
    assert not np.array_equal(mats[2], mats[2].T)
    cases = [(np.arange(C), np.arange(C)), (np.arange(10), np.arange(5, C)), ([0, 2, 4], [39])]
    for s in mats:
        keep = s.copy()
        for rows, cols in cases:
            for q in [(0.85, 0.15), (1, 0), (0.5, 0.25), (np.float32(0.9), 0.1)]:
                for how in ("all", "block"):
                    df = association_index(s, rows, cols, *q, quantiles_of=how)
                    hi, lo, n_pos, n_neg = _association_index_reference(s, rows, cols, *q, how)
                    assert df.attrs["upper_threshold"] == hi and df.attrs["lower_threshold"] == lo
                    byc = df.set_index("class")
                    assert list(byc.loc[list(rows), "n_positive"]) == list(n_pos)
                    assert list(byc.loc[list(rows), "n_negative"]) == list(n_neg)
        np.testing.assert_array_equal(s, keep)
    sim = mats[1]
    want = association_index(sim, np.arange(10), np.arange(5, C), quantiles_of="all")
    pd.testing.assert_frame_equal(
        association_index(torch.from_numpy(sim), np.arange(10), np.arange(5, C),
                          quantiles_of="all"), want)


def test_association_index_memmap_and_bad_values(tmp_path):
    from deepresolve_captum import class_similarity
    rng = np.random.default_rng(13)
    sim = class_similarity(rng.normal(size=(30, 8)).astype(np.float32))
    mm = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float32,
                                   shape=(30, 30))
    mm[:] = sim
    mm.flush()
    ro = np.load(tmp_path / "s.npy", mmap_mode="r")     # read-only: nothing may be written
    for how in ("all", "block"):
        pd.testing.assert_frame_equal(association_index(ro, np.arange(5), np.arange(5, 30),
                                                        quantiles_of=how),
                                      association_index(sim, np.arange(5), np.arange(5, 30),
                                                        quantiles_of=how))
        for bad in (np.nan, np.inf):
            s = sim.copy()
            s[25, 27] = bad                                 # outside the rows x columns block
            with pytest.raises(ValueError, match="NaN or inf"):
                association_index(s, np.arange(5), np.arange(5, 10), quantiles_of=how)
        with pytest.raises(ValueError, match="no similarities"):
            association_index(sim[:1, :1], [0], [0], quantiles_of=how)
        with pytest.raises(ValueError, match="no similarities"):
            association_index(sim, [3], [3], quantiles_of="block")


def test_association_index_all_keeps_no_float64_copy():
    """quantiles_of='all' on a float32 (exactly symmetric) similarity at 1,500 classes: beside
    the input, the upper triangle in float32 and the small block, not a float64 copy of the
    matrix, the pool of all off-diagonal values and np.quantile's copy of it (6x the input)."""
    import tracemalloc

    from deepresolve_captum import class_similarity
    sim = class_similarity(np.random.default_rng(14).normal(size=(1500, 32)).astype(np.float32))
    rows, cols = np.arange(100), np.arange(100, 1500)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        association_index(sim, rows, cols, quantiles_of="all")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * sim.nbytes, peak / sim.nbytes


def test_class_relationships_holds_little_beside_its_four_results():
    """At 1,500 classes the peak is the four C x C float64 results plus a label chunk (it was
    ~6.5 of them: label_correlation's temporaries and weight_cosine's second matrix)."""
    import tracemalloc

    from deepresolve_captum.similarity import label_correlation
    rng = np.random.default_rng(15)
    C = 1500
    ofiv = rng.normal(size=(C, 32))
    labels = (rng.uniform(size=(200, C)) < 0.05).astype(np.uint8)
    weight = rng.normal(size=(C, 16)).astype(np.float32)
    label_correlation(labels[:20], chunk_rows=10)        # imports scipy's BLAS outside the trace
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        rel = class_relationships(ofiv, labels, weight)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert list(rel) == ["deepresolve", "signed_ofiv", "labels", "weights"]
    one = C * C * 8
    assert all(v.shape == (C, C) and v.dtype == np.float64 for v in rel.values())
    assert peak < 4.6 * one, peak / one


def test_bfloat16_similarity_is_read_as_float32():
    """bfloat16 tensors raised numpy's 'Got unsupported ScalarType BFloat16'; they give what
    the same values in float32 give."""
    S = torch.from_numpy(_planted_similarity()[0]).to(torch.bfloat16)
    S32 = S.float()
    a, b = hierarchical_clustering(S, n_clusters=3), hierarchical_clustering(S32, n_clusters=3)
    np.testing.assert_array_equal(a.linkage, b.linkage)
    rows, cols = np.arange(10), np.arange(10, len(S))
    pd.testing.assert_frame_equal(association_index(S, rows, cols),
                                  association_index(S32, rows, cols))
    a, b = bicluster(S, n_clusters=2), bicluster(S32, n_clusters=2)
    np.testing.assert_array_equal(a.row_labels, b.row_labels)
    np.testing.assert_array_equal(a.block, b.block)


def test_asymmetry_beyond_rounding_is_refused_as_documented():
    """The docstring said the similarity is 'symmetrised as (S + S^T) / 2' but any asymmetry
    above 1e-6 is refused (a matrix that is not a similarity, e.g. OFIVs with K = C): the doc
    says so now, and the error says how to cluster an asymmetric score on purpose."""
    s = _planted_similarity()[0]
    near = s.copy()
    near[0, 1] += 5e-7                                          # rounding: averaged
    assert np.allclose(hierarchical_clustering(near).condensed_distance,
                       hierarchical_clustering(s).condensed_distance, atol=1e-6)
    far = s.copy()
    far[0, 1] += 1e-3
    with pytest.raises(ValueError, match=r"not symmetric .*pass \(S \+ S\.T\) / 2"):
        hierarchical_clustering(far)
    hierarchical_clustering((far + far.T) / 2)
    doc = " ".join(hierarchical_clustering.__doc__.split())
    assert "symmetrised as" not in doc and "at most 1e-6" in doc and "raises ValueError" in doc


def test_n_clusters_may_be_a_0d_integer_tensor():
    """hierarchical_clustering(n_clusters=torch.tensor(3)) said 'must be an int in [1, C]' with
    3 in range; a float or bool is still refused, with the value shown."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5))
    sim = np.corrcoef(x)
    a = hierarchical_clustering(sim, n_clusters=torch.tensor(3))
    b = hierarchical_clustering(sim, n_clusters=3)
    assert np.array_equal(a.labels, b.labels)
    for bad in (torch.tensor(3.0), True, 7):
        with pytest.raises(ValueError, match=r"n_clusters must be an int in \[1, 6\], got"):
            hierarchical_clustering(sim, n_clusters=bad)


def test_cocluster_blocks_sit_on_the_diagonal():
    """Spectral co-clustering pairs row cluster k with column cluster k. The rows were ordered by
    their clusters' mean row similarity and the columns by their clusters' mean column
    similarity, separately, which can swap the pairs: here co-cluster A (12 rows x 4 columns)
    and B (4 x 12) landed on the anti-diagonal (top-left quadrant -0.57). Both sides now follow
    one order of the co-clusters, so co-cluster k is the k-th diagonal block."""
    rng = np.random.default_rng(0)
    blk = np.full((16, 16), -0.6) + rng.normal(0, 0.05, (16, 16))
    blk[:12, :4] = 0.9 + rng.normal(0, 0.05, (12, 4))      # co-cluster A
    blk[12:, 4:] = 0.9 + rng.normal(0, 0.05, (4, 12))      # co-cluster B
    blk = np.clip(blk, -1, 1)[np.ix_(rng.permutation(16), rng.permutation(16))]
    res = bicluster(blk, n_clusters=2, method="cocluster", random_state=0)
    rl, cl = res.row_labels[res.row_order], res.column_labels[res.column_order]
    seq = lambda lab: list(dict.fromkeys(lab.tolist()))    # cluster labels in drawn order
    assert seq(rl) == seq(cl)
    ob = res.ordered_block
    for k in seq(rl):                                        # diagonal blocks: the co-clusters
        assert ob[np.ix_(rl == k, cl == k)].mean() > 0.8
        assert ob[np.ix_(rl == k, cl != k)].mean() < -0.4
    # the 'bicluster' (checkerboard) method still orders rows and columns separately
    chk = bicluster(blk, n_clusters=2, method="bicluster", random_state=0)
    assert sorted(chk.row_order) == list(range(16)) and sorted(chk.column_order) == list(range(16))


def test_one_class_records_the_same_settings_as_more():
    """With one class the settings held only the method; they have every key of a larger call."""
    one = hierarchical_clustering(np.ones((1, 1)), n_clusters=1)
    two = hierarchical_clustering(np.array([[1, .5], [.5, 1]]), n_clusters=1)
    assert one.settings == two.settings == dict(method="average", n_clusters=1, threshold=None,
                                                optimal_ordering=True)
    assert hierarchical_clustering(np.ones((1, 1)), threshold=0.5,
                                   optimal_ordering=False).settings["threshold"] == 0.5


def test_bicluster_reads_only_the_block_it_clusters():
    """review 15c m1: bicluster made the whole (C, C) matrix float64 (and a bool NaN mask of it)
    to take a small block: a 3.6 GiB copy for a 200 x 200 block of Sei's float32 similarity.
    Now the block is taken first; the result is the one the block itself gives."""
    import tracemalloc

    s, grp = _planted_similarity()
    C = 1500                                 # the planted 16 classes inside a larger matrix
    big = np.zeros((C, C), dtype=np.float32)
    big[:16, :16] = s
    rows, cols = np.arange(10), np.arange(10, 16)
    want = bicluster(s[np.ix_(rows, cols)].astype(np.float32), n_clusters=2)
    tracemalloc.start()
    try:
        res = bicluster(big, rows, cols, n_clusters=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * big.nbytes, peak / big.nbytes      # was > 2x (float64 copy + mask)
    assert res.block.dtype == np.float64
    np.testing.assert_array_equal(res.block, want.block)
    np.testing.assert_array_equal(res.row_labels, want.row_labels)
    np.testing.assert_array_equal(res.column_labels, want.column_labels)
    # a tensor is indexed on its own device, with the same result
    t = bicluster(torch.from_numpy(big), rows, cols, n_clusters=2)
    np.testing.assert_array_equal(t.block, res.block)
    np.testing.assert_array_equal(t.row_labels, res.row_labels)
    # NaN outside the block is not read; inside it, it is refused
    big[20:, 20:] = np.nan
    np.testing.assert_array_equal(bicluster(big, rows, cols, n_clusters=2).block, res.block)
    big[rows[0], cols[0]] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        bicluster(big, rows, cols, n_clusters=2)


def test_threshold_must_be_a_number():
    """review 15c n6: threshold=True was read as the distance 1.0 and threshold='0.5' as 0.5;
    both are refused now. Numbers of any kind (numpy's, a 0-d array or tensor) still work, and
    settings record the float used."""
    s = _planted_similarity()[0]
    for bad in (True, np.True_, torch.tensor(True), "0.5", b"0.5", 0.5 + 0j, [0.5],
                np.array([0.5]), float("nan"), 2.5, -0.1):
        with pytest.raises(ValueError, match="threshold is a distance 1 - similarity"):
            hierarchical_clustering(s, threshold=bad)
    ref = hierarchical_clustering(s, threshold=0.5)
    assert ref.settings["threshold"] == 0.5
    for ok in (np.float32(0.5), np.array(0.5), torch.tensor(0.5), 0.5):
        res = hierarchical_clustering(s, threshold=ok)
        np.testing.assert_array_equal(res.labels, ref.labels)
        assert type(res.settings["threshold"]) is float
    assert hierarchical_clustering(s, threshold=1).settings["threshold"] == 1.0


def test_class_relationships_compares_class_counts_before_computing(monkeypatch):
    """review 15c n6: with 4.4 M DeepSEA label rows, the label correlation was computed and then
    refused because the OFIVs had another number of classes. The counts are compared first."""
    import deepresolve_captum.clustering as cl
    called = []

    def spy(name, fn):
        def run(*a, **k):
            called.append(name)
            return fn(*a, **k)
        return run

    for name in ("class_similarity", "signed_ofiv_correlation", "label_correlation",
                 "weight_cosine"):
        monkeypatch.setattr(cl, name, spy(name, getattr(cl, name)))
    rng = np.random.default_rng(0)
    ofiv, labels, weight = rng.normal(size=(5, 8)), rng.integers(0, 2, (30, 4)), rng.normal(size=(5, 3))
    with pytest.raises(ValueError) as one:
        class_relationships(ofiv, labels, weight)
    with pytest.raises(ValueError) as two:
        class_relationships(labels=torch.from_numpy(labels), weight=weight)
    assert called == []                       # nothing was computed
    assert "different numbers of classes: {'ofiv rows': 5, 'labels columns': 4, " \
           "'weight rows': 5}" in str(one.value)
    assert "{'labels columns': 4, 'weight rows': 5}" in str(two.value)
    rel = class_relationships(ofiv, weight=weight)
    assert list(rel) == ["deepresolve", "signed_ofiv", "weights"] and len(called) == 3
