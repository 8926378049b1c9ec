"""Usability of the figures (plot.py): the key of plot_feature_importance inside the canvas,
argument checks with clear messages, and the package's result objects accepted where a user
would pass them."""
import os
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))

from deepresolve_captum.plot import (plot_bicluster, plot_channel_attributions,  # noqa: E402
                                     plot_channel_logos, plot_clustered_heatmap,
                                     plot_feature_importance, plot_ofiv, save_figure)
from deepresolve_captum.summary import summarize  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _summary(C=2, T=4, K=6, seed=0):
    rng = np.random.default_rng(seed)
    fims = rng.normal(size=(C, T, K))
    fims[:, ::2, 1], fims[:, 1::2, 1] = 4.0, -4.0          # one sign-flipping, high-IL channel
    with warnings.catch_warnings():                         # T = 1 warns that IL is 0
        warnings.simplefilter("ignore", UserWarning)
        return summarize(fims, rng.normal(size=(C, T)))


def _key(fig):
    texts = [t for t in fig.texts if t.get_text().startswith("red: positive")]
    assert len(texts) == 1
    return texts[0]


@pytest.mark.parametrize("variant", ["plain", "one channel", "filters"])
@pytest.mark.parametrize("T", [1, 4])                      # T = 1: the narrowest figure
def test_feature_importance_key_inside_canvas(variant, T):
    s = _summary(T=T)
    kwargs = {"plain": {}, "one channel": {"max_channels": 1},
              "filters": {"filters": np.random.default_rng(1).normal(size=(6, 4, 5))}}[variant]
    fig = plot_feature_importance(s, **kwargs)
    fig.canvas.draw()
    canvas = fig.bbox
    bb = _key(fig).get_window_extent()
    assert bb.x0 >= canvas.x0 and bb.y0 >= canvas.y0
    assert bb.x1 <= canvas.x1 and bb.y1 <= canvas.y1
    # below the x label of the circles, not over it
    ax = fig.axes[0]
    assert bb.y1 <= ax.xaxis.label.get_window_extent().y0


def test_feature_importance_key_survives_plain_and_tight_savefig(tmp_path):
    import matplotlib.image as mpimg

    fig = plot_feature_importance(_summary())
    key = _key(fig)
    for how in ("plain", "tight"):
        imgs = []
        for visible in (True, False):
            key.set_visible(visible)
            if how == "plain":
                p = tmp_path / f"{how}{visible}.png"
                fig.savefig(p, dpi=60)
            else:
                p, = save_figure(fig, tmp_path / f"{how}{visible}", formats=("png",), dpi=60)
            imgs.append(mpimg.imread(p))
        # the key is drawn: hiding it changes the picture (an off-canvas key changes nothing)
        assert imgs[0].shape != imgs[1].shape or not np.array_equal(*imgs), how


def test_feature_importance_order_and_max_channels_checked():
    s = _summary()
    with pytest.raises(ValueError, match="order must be a non-empty"):
        plot_feature_importance(s, order=[])
    with pytest.raises(ValueError, match=r"order must index channels 0\.\.5, got \[6\]"):
        plot_feature_importance(s, order=[0, 6])
    with pytest.raises(ValueError, match="order repeats"):
        plot_feature_importance(s, order=[1, 1])
    with pytest.raises(TypeError, match="boolean mask"):
        plot_feature_importance(s, order=np.ones(6, dtype=bool))
    with pytest.raises(TypeError, match="integer"):
        plot_feature_importance(s, order=[0.5, 1.0])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_channels"):
            plot_feature_importance(s, max_channels=bad)
    fig = plot_feature_importance(s, order=np.array([3, 0]), max_channels=1)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["ch 3"]


def test_plot_ofiv_accepts_a_summary():
    s = _summary()
    assert s.nonadditive.any()
    fig = plot_ofiv(s)
    ax = fig.axes[0]
    n_star = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets())
                 and c.get_paths() and c.get_sizes()[0] == 30)
    assert n_star == int(s.nonadditive.sum())
    ref = plot_ofiv(s.ofiv, nonadditive=s.nonadditive)
    assert len(ref.axes[0].collections) == len(ax.collections)
    assert len(plot_ofiv(s, nonadditive=False).axes[0].collections) == s.n_targets
    with pytest.raises(ValueError, match=r"nonadditive must have shape \(2, 6\)"):
        plot_ofiv(s, nonadditive=np.zeros((2, 5), dtype=bool))


def test_plot_ofiv_channel_order_checked():
    ofiv = np.random.default_rng(0).normal(size=(2, 4))
    with pytest.raises(ValueError, match=r"channel_order must index channels 0\.\.3, got \[99\]"):
        plot_ofiv(ofiv, channel_order=[0, 99])
    with pytest.raises(ValueError, match=r"channel_order must index channels 0\.\.3, got \[-1\]"):
        plot_ofiv(ofiv, channel_order=[-1, 2])
    with pytest.raises(ValueError, match="channel_order repeats channel"):
        plot_ofiv(ofiv, channel_order=[2, 2])
    with pytest.raises(ValueError, match="channel_order must be a non-empty"):
        plot_ofiv(ofiv, channel_order=[])
    fig = plot_ofiv(ofiv, channel_order=[3, 1])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["3", "1"]


def test_plot_channel_attributions_channels_checked():
    a = np.random.default_rng(0).normal(size=(2, 1, 4, 12))
    with pytest.raises(ValueError, match=r"channels must have one label per channel of "
                                         r"attributions \(2\), got 1"):
        plot_channel_attributions(a, channels=[9])
    with pytest.raises(ValueError, match="pwms must have one matrix"):
        plot_channel_attributions(a, pwms=np.full((1, 4, 3), 0.25))
    with pytest.raises(ValueError, match="start and end"):
        plot_channel_attributions(a, start=8, end=4)
    fig = plot_channel_attributions(a[[1]], channels=[9])
    assert fig.axes[0].get_ylabel() == "ch 9"


def test_plot_channel_logos_accepts_channel_motifs():
    from deepresolve_captum.channel_motifs import channel_pwms

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 5, 6), nn.ReLU())
    res = channel_pwms(model, model[0], [3, 1], method="filter")
    fig = plot_channel_logos(res)
    assert [a.get_title() for a in fig.axes] == ["channel 3", "channel 1"]
    fig = plot_channel_logos(res, names=["a", "b"], titles=["x", "y"])
    assert [a.get_title() for a in fig.axes] == ["channel a\nx", "channel b\ny"]
    with pytest.raises(ValueError, match=r"titles must have one entry per pwm \(2\), got 1"):
        plot_channel_logos(res, titles=["x"])
    # raw filter weights are refused (they drew meaningless logos)
    with pytest.raises(ValueError, match="not a probability matrix.*filter_pwms"):
        plot_channel_logos(model[0].weight[:2])


@pytest.mark.parametrize("C", [30, 300])
def test_clustered_heatmap_and_bicluster_keep_a_sane_size(C):
    """Labelled matrices grow with the class count; beyond 80 classes (no labels) the figure
    stays about 10 inches. At 919 classes it was 204 inches wide, 20 GB to save."""
    from deepresolve_captum.clustering import bicluster, hierarchical_clustering
    rng = np.random.default_rng(0)
    S = np.corrcoef(rng.normal(size=(C, 12)))
    fig = plot_clustered_heatmap(S, hierarchical_clustering(S))
    w, h = fig.get_size_inches()
    assert (w, h) == pytest.approx((0.22 * C + 2.2, 0.22 * C + 2.6)) if C <= 80 \
        else max(w, h) <= 12
    ax = plot_bicluster(bicluster(S, n_clusters=3), row_names=[f"c{i}" for i in range(C)])
    assert max(ax.figure.get_size_inches()) <= (0.2 * C + 1.5 if C <= 80 else 12)
    plt.close("all")


def test_clustered_heatmap_and_bicluster_check_names():
    from deepresolve_captum.clustering import bicluster
    S = np.corrcoef(np.random.default_rng(1).normal(size=(4, 6)))
    with pytest.raises(ValueError, match="class_names must have 4 entries, got 1"):
        plot_clustered_heatmap(S, class_names=["a"])
    with pytest.raises(ValueError, match="row_names must name all classes"):
        plot_bicluster(bicluster(S, n_clusters=2), row_names=["a", "b"])
    plt.close("all")


def _reference_block_means(S, order, n):
    """The n x n block means of the reordered matrix, the plain way (the last blocks ragged)."""
    R = np.asarray(S, dtype=np.float64)[np.ix_(order, order)]
    edges = list(range(0, len(order), n)) + [len(order)]
    return np.array([[R[a:b, c:d].mean() for c, d in zip(edges[:-1], edges[1:])]
                     for a, b in zip(edges[:-1], edges[1:])])


@pytest.mark.parametrize("C", [37, 40, 95])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, "tensor"])
def test_clustered_heatmap_block_means_above_max_cells(C, dtype):
    """Above max_cells classes the image is the n x n block means of the matrix in clustered
    order (n = ceil(C / (max_cells // 2))), the last block row / column ragged when n does not
    divide C, in class-position coordinates (cluster lines at the same places); the x label
    says so. Up to max_cells the image is the reordered matrix itself, as before."""
    from deepresolve_captum.clustering import hierarchical_clustering
    S = _blocky(C, k=3).astype(np.float64 if dtype == "tensor" else dtype)
    cl = hierarchical_clustering(S, n_clusters=3)
    arg = torch.from_numpy(S) if dtype == "tensor" else S
    fig = plot_clustered_heatmap(arg, cl, max_cells=10)
    ax = fig.axes[1]
    n = -(-C // 5)
    img = ax.images[0].get_array()
    np.testing.assert_allclose(img, _reference_block_means(S, cl.order, n), rtol=1e-6, atol=1e-7)
    assert ax.get_xlim() == (-0.5, C - 0.5) and ax.get_ylim() == (C - 0.5, -0.5)
    nb = -(-C // n)
    assert ax.images[0].get_extent() == [-0.5, nb * n - 0.5, nb * n - 0.5, -0.5]
    assert f"means of {n} \u00d7 {n} blocks of classes" in ax.get_xlabel()
    assert ("the last" in ax.get_xlabel()) == (C % n != 0)
    lab = cl.labels[cl.order]
    cuts = np.flatnonzero(lab[1:] != lab[:-1]) + 0.5
    assert sorted(np.ravel([seg[0][1] for c in ax.collections for seg in c.get_segments()
                            if seg[0][1] == seg[1][1]])) == sorted(cuts)
    fig.canvas.draw()
    full = plot_clustered_heatmap(arg, cl, max_cells=C)          # at the limit: cell by cell
    np.testing.assert_array_equal(full.axes[1].images[0].get_array(),
                                  np.asarray(S, dtype=np.float64)[np.ix_(cl.order, cl.order)])
    assert "blocks" not in full.axes[1].get_xlabel()
    with pytest.raises(ValueError, match="max_cells must be None or an int >= 2"):
        plot_clustered_heatmap(S, cl, max_cells=1)


def test_clustered_heatmap_reads_a_memmap_in_blocks_and_refuses_nan(tmp_path):
    """A float32 np.memmap is drawn as the same block means as the array in memory, and left
    as it was; a NaN anywhere in the matrix is still refused."""
    from deepresolve_captum.clustering import hierarchical_clustering
    S = _blocky(120, k=4).astype(np.float32)
    cl = hierarchical_clustering(S, n_clusters=4)
    mm = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float32, shape=S.shape)
    mm[:] = S
    mm.flush()
    ro = np.load(tmp_path / "s.npy", mmap_mode="r")
    img = plot_clustered_heatmap(ro, cl, max_cells=40).axes[1].images[0].get_array()
    np.testing.assert_array_equal(
        img, plot_clustered_heatmap(S, cl, max_cells=40).axes[1].images[0].get_array())
    np.testing.assert_allclose(img, _reference_block_means(S, cl.order, 6), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), S)
    bad = S.copy()
    bad[cl.order[-1], cl.order[3]] = np.nan             # in the last row block
    with pytest.raises(ValueError, match="similarity contains NaN or inf"):
        plot_clustered_heatmap(bad, cl, max_cells=40)


def test_clustered_heatmap_does_not_copy_a_large_float32_matrix():
    """3,000 classes (above HEATMAP_MAX_CELLS) in float32, 34 MB: building the figure allocates
    less than half of the matrix (it read it in row blocks). It made a float64 copy and a
    reordered float64 copy (216 MB, 6x the matrix); saving it took +2.5 GB at 6,000 classes."""
    import tracemalloc

    from deepresolve_captum.clustering import hierarchical_clustering
    C = 3000                                            # HEATMAP_MAX_CELLS is 2,000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((C, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    S = x @ x.T                                         # float32, symmetric
    cl = hierarchical_clustering(S, n_clusters=5)
    tracemalloc.start()
    try:
        fig = plot_clustered_heatmap(S, cl)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert S.dtype == np.float32
    assert peak < 0.5 * S.nbytes, \
        f"peak {peak / 2**20:.1f} MB for a {S.nbytes / 2**20:.0f} MB matrix"
    assert fig.axes[1].images[0].get_array().shape == (1000, 1000)
    assert "means of 3 \u00d7 3 blocks" in fig.axes[1].get_xlabel()


def _glyph_x_ranges(ax):
    """(left, right) x of each glyph tangermeme's plot_logo drew on ``ax`` (the curves' extents,
    not their control points, which stick out)."""
    out = []
    for c in ax.collections:
        for p in c.get_paths():
            if len(p.vertices):
                e = p.get_extents()
                out.append((e.x0, e.x1))
    return sorted(out)


@pytest.mark.parametrize("window", [None, 5])
def test_channel_attributions_seqlet_shading_covers_its_glyphs(window):
    """plot_logo draws position p over [p, p + 0.95]; the shading of the half-open seqlet
    [10, 16) must cover exactly its six glyphs (it was half a base to the left)."""
    import pandas as pd

    a = np.zeros((1, 1, 4, 30))
    a[0, 0, [0, 1, 2, 3, 0, 1], range(10, 16)] = 1.0
    seqlets = pd.DataFrame({"channel": [0], "example_idx": [0], "start": [10], "end": [16]})
    fig = plot_channel_attributions(a, seqlets=seqlets, start=window)
    ax = fig.axes[0]
    spans = [p for p in ax.patches if p is not ax.patch]
    assert len(spans) == 1
    x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    off = window or 0
    assert (x0, x1) == pytest.approx((10 - off, 16 - off))
    glyphs = _glyph_x_ranges(ax)
    assert len(glyphs) == 6
    assert all(x0 - 1e-6 <= g0 and g1 <= x1 + 1e-6 for g0, g1 in glyphs)
    assert glyphs[0][0] - x0 < 0.1 and x1 - glyphs[-1][1] < 0.1       # snug at both ends


def test_channel_attributions_seqlet_shading_is_under_the_letters():
    """The gold seqlet shading was drawn over the glyphs and tinted their colours."""
    import pandas as pd

    a = np.zeros((1, 1, 4, 30))
    a[0, 0, [0, 1, 2, 3, 0, 1], range(10, 16)] = 1.0
    seqlets = pd.DataFrame({"channel": [0], "example_idx": [0], "start": [10], "end": [16]})
    ax = plot_channel_attributions(a, seqlets=seqlets).axes[0]
    spans = [p for p in ax.patches if p is not ax.patch]
    glyph_z = [c.get_zorder() for c in ax.collections]
    assert spans and glyph_z
    assert max(p.get_zorder() for p in spans) < min(glyph_z)


def test_channel_attributions_pwm_column_has_units_and_says_where_positions_start():
    """The PWM column had no 'bits' label, and its positions count from 1 while the
    sequence's count from 0: the x labels now say which."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 1, 4, 20))
    pwms = rng.dirichlet(np.ones(4), size=(2, 6)).transpose(0, 2, 1)       # (2, 4, 6)
    fig = plot_channel_attributions(a, pwms=pwms)
    pwm_axes, attr_axes = fig.axes[0::2], fig.axes[1::2]
    assert all(ax.get_ylabel() == "bits" for ax in pwm_axes)
    assert "from 1" in pwm_axes[-1].get_xlabel()
    assert "from 0" in attr_axes[-1].get_xlabel()
    fig.canvas.draw()
    assert _tick_texts(pwm_axes[-1].xaxis)[0] == "1"


def test_channel_attributions_ticks_are_sequence_positions_and_sharey():
    """With start=10 the x tick labels read 10.., not 0.. (window positions), each under its
    base's glyph; sharey=True puts every row on one y scale, the default keeps one per row."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 1, 4, 40)) * np.array([1.0, 0.05])[:, None, None, None]
    fig = plot_channel_attributions(a, start=10, end=35)
    fig.canvas.draw()
    ax = fig.axes[-1]
    labels = [int(t.get_text().replace("\N{MINUS SIGN}", "-")) for t in ax.get_xticklabels()]
    assert labels and min(labels) >= 10 and max(labels) <= 34 and 10 in labels
    glyphs = _glyph_x_ranges(ax)            # the glyphs of one window position share an x range
    for pos, x in zip(labels, ax.get_xticks()):
        g0, g1 = min(g for g in glyphs if g[0] >= pos - 10 - 0.2)
        assert g0 < x < g1                  # the tick is under that position's glyph
    assert fig.axes[0].get_ylim() != pytest.approx(fig.axes[1].get_ylim())
    fig = plot_channel_attributions(a, start=10, end=35, sharey=True)
    assert fig.axes[0].get_ylim() == pytest.approx(fig.axes[1].get_ylim())
    assert fig.axes[1].get_ylim()[1] >= np.abs(a[0, 0, :, 10:35]).max()


def _blocky(C, k=4, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, k, C)
    return np.corrcoef(rng.standard_normal((k, 12))[lab] + 0.6 * rng.standard_normal((C, 12)))


def _tick_texts(axis):
    return [t.get_text() for t in axis.get_ticklabels()]


def test_bicluster_without_names_labels_ticks_with_class_indices():
    """Rows 0..19 against columns 20..49: the ticks name the classes each row/column shows
    (they were plot positions, -2.5 .. 17.5, which read like class indices)."""
    from deepresolve_captum.clustering import bicluster
    b = bicluster(_blocky(50), rows=np.arange(20), columns=np.arange(20, 50), n_clusters=3)
    ax = plot_bicluster(b)
    ax.figure.canvas.draw()
    assert _tick_texts(ax.yaxis) == [str(c) for c in b.rows[b.row_order]]
    assert _tick_texts(ax.xaxis) == [str(c) for c in b.columns[b.column_order]]
    assert list(ax.get_yticks()) == list(range(20)) and ax.get_xlabel() == ""
    # beyond 80 columns: integer position ticks, and the label says which axis they are on
    b = bicluster(_blocky(100), rows=np.arange(10), columns=np.arange(10, 100), n_clusters=2)
    ax = plot_bicluster(b)
    ax.figure.canvas.draw()
    assert _tick_texts(ax.yaxis) == [str(c) for c in b.rows[b.row_order]]
    xt = ax.get_xticks()
    assert len(xt) > 1 and np.all(xt == np.round(xt))
    assert ax.get_xlabel().startswith("columns: positions in bicluster order")


def test_count_axes_have_integer_ticks():
    """plot_association_index counts similarities: its y ticks are integers (were -12.5, ...)."""
    from deepresolve_captum.clustering import association_index
    from deepresolve_captum.plot import plot_association_index
    S = _blocky(50)
    ax = plot_association_index(association_index(S, np.arange(20), np.arange(20, 50)))
    ax.figure.canvas.draw()
    yt = ax.get_yticks()
    assert len(yt) > 2 and np.all(yt == np.round(yt))


def test_plot_ofiv_has_a_key_inside_the_canvas():
    """plot_ofiv had no key: which colour is which sign, what the area means, the star."""
    s = _summary()
    fig = plot_ofiv(s)
    fig.canvas.draw()
    key = _key(fig)
    text = key.get_text().replace("\n", " ")
    assert "|OFIV|" in text and f"largest = {np.abs(s.ofiv).max():.3g}" in text
    assert "\N{BLACK STAR}: non-additive" in text
    bb, canvas = key.get_window_extent(), fig.bbox
    assert bb.x0 >= canvas.x0 and bb.y0 >= canvas.y0 and bb.x1 <= canvas.x1
    assert bb.y1 <= fig.axes[0].xaxis.label.get_window_extent().y0      # below the x label
    # no stars drawn, no star in the key; on the caller's Axes no key at all
    assert "non-additive" not in _key(plot_ofiv(s.ofiv)).get_text()
    f2, ax = plt.subplots()
    plot_ofiv(s, ax=ax)
    assert not f2.texts


def test_all_zero_values_key_says_so():
    """An all-zero FIV/OFIV key read 'largest = 1e-12' (an internal floor)."""
    import dataclasses
    s = _summary()
    z = dataclasses.replace(s, fiv=np.zeros_like(s.fiv), il=np.zeros_like(s.il),
                            ofiv=np.zeros_like(s.ofiv), nonadditive=np.zeros_like(s.nonadditive))
    for fig in (plot_feature_importance(z), plot_ofiv(z)):
        text = _key(fig).get_text().replace("\n", " ")
        assert "all values are 0" in text and "1e-12" not in text and "largest" not in text


def test_similarity_cell_text_reads_on_any_cmap():
    """Cell text was white for |v| > 0.6 of the scale, right for a diverging map only: on
    viridis 0..1 the 0 cell (dark purple) got black text and the 1 cell (yellow) white."""
    from deepresolve_captum.plot import plot_similarity_matrices
    m = np.linspace(0, 1, 16).reshape(4, 4)
    m = (m + m.T) / 2
    for cmap, vmin, dark, light in (("viridis", 0.0, 0.0, 1.0), ("RdBu_r", -1.0, 1.0, 0.0)):
        fig = plot_similarity_matrices({"a": m}, vmin=vmin, vmax=1.0, cmap=cmap)
        color = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
        assert color[f"{dark:.2f}"] == "white" and color[f"{light:.2f}"] == "black", cmap


@pytest.mark.parametrize("C", [10, 50, 80])
def test_clustered_heatmap_label_font_scales_with_room(C):
    """41-80 classes got 4 pt labels in rows 12 pt apart; the font follows the room per class
    (~6 pt at 50), at most 7 pt, and neighbouring labels still do not overlap."""
    S = np.corrcoef(np.random.default_rng(0).normal(size=(C, 12)))
    fig = plot_clustered_heatmap(S)
    fig.canvas.draw()
    ax = fig.axes[1]
    labels = ax.get_yticklabels()
    fs = labels[0].get_fontsize()
    assert (fs == 7) if C == 10 else (5.5 <= fs <= 7)
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.y0)
    assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:]))


def _interaction(output, mean):
    import pandas as pd

    from deepresolve_captum.interaction import InteractionResult
    mean = np.asarray(mean, dtype=float)
    table = pd.DataFrame({"mean": mean, "sem": [0.3] * 4, "effect": mean - mean[0],
                          "effect_sem": [0.0, 0.2, 0.2, 0.25]},
                         index=pd.Index(["none", "a", "b", "both"], name="condition"))
    return InteractionResult(table=table, interaction=float(mean[3] - mean[1] - mean[2] + mean[0]),
                             interaction_sem=0.1, logic="OR-like", outputs=np.zeros((5, 4)),
                             motifs={"a": "CAGGTC", "b": "GCTCAT"}, settings={"output": output})


def test_interaction_logit_bars_start_at_none():
    """With output='logit' the bars went down from 0, so 'none' (-25) looked like the largest
    effect; a, b and both now start at the 'none' level and end at their means."""
    from deepresolve_captum.plot import plot_interaction
    mean = [-25.0, -7.6, -14.0, 5.0]
    ax = plot_interaction(_interaction("logit", mean))
    bars = [p for p in ax.patches if p is not ax.patch]
    assert len(bars) == 3
    for bar, m in zip(bars, mean[1:]):
        assert bar.get_y() == pytest.approx(-25.0) and bar.get_y() + bar.get_height() == \
            pytest.approx(m)
    assert any(np.allclose(ln.get_ydata(), -25.0) for ln in ax.lines)     # the 'none' level
    # probabilities keep bars from 0
    ax = plot_interaction(_interaction("probability", [0.04, 0.9, 0.9, 0.13]))
    bars = [p for p in ax.patches if p is not ax.patch]
    assert [b.get_y() for b in bars] == [0.0] * 4
    assert [b.get_height() for b in bars] == pytest.approx([0.04, 0.9, 0.9, 0.13])


def test_save_figure_keeps_a_dot_in_the_name_and_lowercases_formats(tmp_path):
    """'ofiv_lambda2.8' lost its '.8' (any suffix was replaced), and formats=('PDF', 'pdf')
    wrote ofiv.PDF next to ofiv.pdf."""
    fig = plot_ofiv(np.random.default_rng(0).normal(size=(2, 3)))
    assert save_figure(fig, tmp_path / "ofiv_lambda2.8", formats="png") == \
        [tmp_path / "ofiv_lambda2.8.png"]
    assert save_figure(fig, tmp_path / "a.png", formats=("PDF", ".pdf", "SVG")) == \
        [tmp_path / "a.pdf", tmp_path / "a.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.svg", "ofiv_lambda2.8.png"]
    with pytest.raises(ValueError, match=r"formats \['docx'\] are not ones matplotlib writes"):
        save_figure(fig, tmp_path / "b", formats=("png", "docx"))
    assert not (tmp_path / "b.png").exists()          # refused before writing anything


def test_plot_channel_logos_ncols_checked():
    """ncols=0 raised ZeroDivisionError from deep inside."""
    pwms = np.tile(np.array([0.7, 0.1, 0.1, 0.1])[None, :, None], (2, 1, 3))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="ncols must be an int >= 1"):
            plot_channel_logos(pwms, ncols=bad)
    assert len(plot_channel_logos(pwms, ncols=np.int64(1)).axes) == 2


def test_docstrings_say_what_each_function_returns():
    """Some functions return the Figure, some the Axes: each docstring's Returns section says
    which, and it is what the function returns."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    import deepresolve_captum.plot as P
    from deepresolve_captum.clustering import association_index, bicluster

    S = _blocky(12)
    calls = {
        "plot_filter_logo": lambda: P.plot_filter_logo(np.random.default_rng(0).normal(size=(4, 5))),
        "plot_feature_importance": lambda: P.plot_feature_importance(_summary()),
        "plot_ofiv": lambda: P.plot_ofiv(_summary()),
        "plot_similarity_matrices": lambda: P.plot_similarity_matrices({"a": np.eye(3)}),
        "plot_channel_logos": lambda: P.plot_channel_logos(
            np.tile(np.array([0.7, 0.1, 0.1, 0.1])[None, :, None], (1, 1, 3))),
        "plot_channel_attributions": lambda: P.plot_channel_attributions(np.ones((1, 1, 4, 6))),
        "plot_interaction": lambda: P.plot_interaction(_interaction("probability", [0, 1, 1, 0])),
        "plot_clustered_heatmap": lambda: P.plot_clustered_heatmap(S),
        "plot_association_index": lambda: P.plot_association_index(
            association_index(S, np.arange(5), np.arange(5, 12))),
        "plot_bicluster": lambda: P.plot_bicluster(bicluster(S, n_clusters=2)),
    }
    assert set(calls) == {n for n in P.__all__ if n.startswith("plot_")}
    for name, call in calls.items():
        doc = getattr(P, name).__doc__
        assert "Returns\n    -------\n    matplotlib " in doc, name
        says = doc.split("Returns\n    -------\n    matplotlib ", 1)[1].split()[0].strip(".,")
        assert says in ("Figure", "Axes"), name
        assert isinstance(call(), Figure if says == "Figure" else Axes), name
        assert f":func:`{name}`" in P.__doc__, name          # listed in the module's summary
        plt.close("all")
    for name in ("save_figure", "filter_logo_matrix", "pwm_logo_matrix"):
        assert "Returns\n    -------\n" in getattr(P, name).__doc__, name
    assert "max_channels" in P.plot_feature_importance.__doc__.split("Parameters")[0]


def test_bfloat16_tensors_are_drawn_as_float32():
    """The optimizer, summary and similarity take bfloat16; the figures raised numpy's
    'Got unsupported ScalarType BFloat16' for a bf16 filter, OFIV or similarity tensor."""
    from deepresolve_captum.plot import filter_logo_matrix, plot_filter_logo

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 5, generator=g).to(torch.bfloat16)
    np.testing.assert_array_equal(filter_logo_matrix(w[0]), filter_logo_matrix(w[0].float()))
    plot_filter_logo(w[0])
    fig = plot_feature_importance(_summary(K=6), filters=w)
    assert len(fig.axes) == 2 + 6                                     # circles, labels, 6 logos
    ofiv = torch.randn(3, 6, generator=g).to(torch.bfloat16)
    plot_ofiv(ofiv, channel_order=torch.tensor([2, 0]), nonadditive=torch.ones(3, 6).bool())
    S = torch.from_numpy(_blocky(12)).to(torch.bfloat16)
    ax = plot_clustered_heatmap(S).axes[1]
    np.testing.assert_array_equal(np.sort(ax.images[0].get_array().ravel()),
                                  np.sort(S.float().numpy().ravel()))


def test_save_figure_takes_what_any_plot_function_returns(tmp_path):
    """plot_interaction, plot_association_index and plot_bicluster return an Axes, and
    save_figure(ax, ...) failed with AttributeError ('Axes' object has no attribute 'canvas')."""
    from deepresolve_captum.clustering import bicluster

    ax = plot_bicluster(bicluster(_blocky(12), n_clusters=2))
    assert save_figure(ax, tmp_path / "bic", formats="png") == [tmp_path / "bic.png"]
    assert len(ax.figure.axes) == 2                                   # the colour bar is saved too
    sub = plt.figure().subfigures(1, 2)[1].subplots()                # an Axes in a SubFigure
    assert save_figure(sub, tmp_path / "sub", formats="svg") == [tmp_path / "sub.svg"]
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure or Axes.*got ndarray"):
        save_figure(np.zeros(3), tmp_path / "x")
    assert "an Axes" in save_figure.__doc__


def test_saved_svg_and_pdf_are_the_same_bytes_every_time(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from deepresolve_captum.plot import save_figure
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_clip_on(True)
    a = save_figure(fig, tmp_path / "a" / "fig", formats=("svg", "pdf"))
    b = save_figure(fig, tmp_path / "b" / "fig", formats=("svg", "pdf"))
    plt.close(fig)
    for p, q in zip(a, b):
        assert p.read_bytes() == q.read_bytes(), p.suffix
        assert b"CreationDate" not in p.read_bytes() and b"<dc:date>" not in p.read_bytes()


def test_filter_logo_shows_the_filters_scale_and_units():
    """The default logo clipped negatives, normalised columns and scaled to bits: a filter of
    weights 0.001 and a random N(0, 1) filter drew full 2-bit letters, with no y axis. The
    default is now the centred weights (negatives below the baseline), with its units."""
    from deepresolve_captum.plot import filter_logo_matrix, plot_filter_logo
    w = np.random.default_rng(0).normal(size=(4, 6))
    np.testing.assert_allclose(filter_logo_matrix(1e-3 * w), 1e-3 * filter_logo_matrix(w))
    assert (filter_logo_matrix(w) < 0).any()                      # negatives are kept
    ax = plot_filter_logo(w)
    assert ax.get_ylabel() == "weight (centred)"
    lo, hi = ax.get_ylim()
    assert lo < 0 < hi and hi <= 1.1 * np.maximum(filter_logo_matrix(w), 0).sum(1).max()
    ax = plot_filter_logo(1e-3 * w)
    assert ax.get_ylim()[1] < 0.01                                # small weights, small axis
    # the PWM logo (TOMTOM's rule) is still there, labelled in bits
    ax = plot_filter_logo(w, mode="information")
    assert ax.get_ylabel() == "bits" and ax.get_ylim() == (0.0, 2.0)
    np.testing.assert_allclose(filter_logo_matrix(w, mode="information").sum(1) <= 2 + 1e-9, True)


def _logo_height(ax):
    """The data height of the glyphs tangermeme's plot_logo drew on ``ax``."""
    ext = [c.get_paths() for c in ax.collections]
    ys = [p.get_extents() for ps in ext for p in ps if len(p.vertices)]
    return max(e.y1 for e in ys) - min(e.y0 for e in ys)


def test_feature_importance_logos_share_one_scale():
    """logo_scale="shared": the logos share one y scale (said under the column and in the
    key), so a 100x weaker filter draws 100x smaller letters."""
    s = _summary(K=3)
    rng = np.random.default_rng(2)
    filters = rng.normal(size=(3, 4, 5)) * np.array([1.0, 0.01, 0.5])[:, None, None]
    fig = plot_feature_importance(s, filters=filters, order=np.array([0, 1, 2]),
                                  logo_scale="shared")
    logos = fig.axes[1:4]
    assert len({a.get_ylim() for a in logos}) == 1
    assert "one scale" in logos[-1].get_xlabel()
    assert "all on one y scale" in _key(fig).get_text().replace("\n", " ")
    assert _logo_height(logos[1]) < 0.05 * _logo_height(logos[0])


@pytest.mark.parametrize("kw", [{"logo_mode": "information"}, {"logo_scale": "own"},
                                {"logo_scale": "shared"}])
def test_feature_importance_logos_leave_headroom_between_rows(kw):
    """In bits the logos' y limits were exactly 0..2 with a small row gap: the letters of
    neighbouring rows touched. Each logo now leaves room above (and below) its letters."""
    s = _summary(K=3)
    filters = np.zeros((3, 4, 5))
    filters[:, 0, :] = 1.0                           # one base per position: full-height stacks
    filters[1] *= 0.5
    fig = plot_feature_importance(s, filters=filters, order=np.array([0, 1, 2]), **kw)
    for ax in fig.axes[1:4]:
        lo, hi = ax.get_ylim()
        ys = [p.get_extents() for c in ax.collections for p in c.get_paths() if len(p.vertices)]
        top, bottom = max(e.y1 for e in ys), min(e.y0 for e in ys)
        assert top <= hi - 0.08 * (hi - lo)
        assert bottom >= lo + 0.08 * (hi - lo) or bottom >= 0 >= lo


def test_feature_importance_logos_each_on_its_own_scale_by_default():
    """On one shared scale a single large filter (ch9 x10 in the review, a third of the rows of
    the demo's Fig. 2) left every other logo a flat line, and raw conv-weight sizes do not
    compare across channels. By default each logo fills its own row, its largest |centred
    weight| written beside it, and the key and the column's label say so."""
    from deepresolve_captum.plot import filter_logo_matrix
    s = _summary(K=3)
    rng = np.random.default_rng(2)
    filters = rng.normal(size=(3, 4, 5)) * np.array([1.0, 0.01, 0.5])[:, None, None]
    fig = plot_feature_importance(s, filters=filters, order=np.array([0, 1, 2]))
    logos = fig.axes[1:4]
    for ax, k in zip(logos, [0, 1, 2]):
        lo, hi = ax.get_ylim()
        assert _logo_height(ax) > 0.6 * (hi - lo)                 # fills its row
        m = filter_logo_matrix(filters[k])                        # (w, 4): the row's stacks
        tallest = max(np.maximum(m, 0).sum(1).max(), -np.minimum(m, 0).sum(1).min())
        assert [t.get_text() for t in ax.texts] == [f"\u00b1{tallest:.2g}"]
    assert "own scale" in logos[-1].get_xlabel()
    assert "each on its own y scale" in _key(fig).get_text().replace("\n", " ")
    with pytest.raises(ValueError, match="logo_scale"):
        plot_feature_importance(s, filters=filters, logo_scale="one")


def test_channel_logos_have_units_and_centred_ticks():
    """plot_channel_logos had no 'bits' label and its x ticks sat at the letters' left edges."""
    pwms = np.tile(np.array([0.7, 0.1, 0.1, 0.1])[None, :, None], (2, 1, 5))
    fig = plot_channel_logos(pwms)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "bits"
    glyphs = _glyph_x_ranges(ax)
    centres = sorted({round((g0 + g1) / 2, 3) for g0, g1 in glyphs})
    assert list(ax.get_xticks()) == pytest.approx(centres)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4", "5"]
    x0, x1 = ax.get_xlim()
    assert x0 <= min(g[0] for g in glyphs) and max(g[1] for g in glyphs) <= x1


def test_channel_attributions_seqlets_match_by_label_and_warn_on_strays():
    """channels=[30, 5, 9] with seqlets from channel_seqlets(attr) (labels 0, 1, 2): the
    shading vanished, or landed on another channel's row, without a word."""
    import pandas as pd

    a = np.random.default_rng(0).normal(size=(3, 1, 4, 20))
    seqlets = pd.DataFrame({"channel": [0, 1, 2], "example_idx": [0] * 3, "start": [2, 4, 6],
                            "end": [5, 7, 9]})
    with pytest.warns(UserWarning, match=r"label\(s\) \[0, 1, 2\] match no row.*channels=channels"):
        plot_channel_attributions(a, channels=[30, 5, 9], seqlets=seqlets)
    with pytest.warns(UserWarning, match=r"label\(s\) \[0\] match no row"):
        plot_channel_attributions(a, channels=[30, 1, 2], seqlets=seqlets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_channel_attributions(a, channels=[30, 5, 9],
                                        seqlets=seqlets.assign(channel=[30, 5, 9]))
    # each seqlet on the row of its label
    for ax, (s0, s1) in zip(fig.axes, [(2, 5), (4, 7), (6, 9)]):
        spans = [p for p in ax.patches if p is not ax.patch]
        assert [(p.get_x(), p.get_x() + p.get_width()) for p in spans] == [(s0, s1)]


@pytest.mark.parametrize("sharey", [False, True])
def test_channel_attributions_all_zero_row_says_so(sharey):
    """A row of exact zeros was drawn on a 1e-6 scale (an offset axis), as if tiny."""
    a = np.random.default_rng(0).normal(size=(2, 1, 4, 20))
    a[1] = 0.0
    fig = plot_channel_attributions(a, sharey=sharey)
    fig.canvas.draw()
    ax = fig.axes[1]
    assert any(t.get_text() == "all attributions are 0" for t in ax.texts)
    assert ax.get_ylim()[1] >= 0.5                       # not a 1e-6 scale
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert not any(t.get_text() == "all attributions are 0" for t in fig.axes[0].texts)


def test_bicluster_notes_sit_on_their_axis_and_names_label_every_kth_row():
    """Beyond 80 rows the note 'rows: positions ...' sat under the x tick labels (class
    indices there), and row_names were dropped without a word."""
    from deepresolve_captum.clustering import bicluster
    C = 200
    b = bicluster(_blocky(C), rows=np.arange(170), columns=np.arange(170, 200), n_clusters=2)
    ax = plot_bicluster(b)
    ax.figure.canvas.draw()
    assert ax.get_ylabel().startswith("rows: positions in bicluster order")
    assert ax.get_xlabel() == ""                    # the columns are labelled with classes
    assert _tick_texts(ax.xaxis) == [str(c) for c in b.columns[b.column_order]]
    names = [f"class{i}" for i in range(C)]
    ax = plot_bicluster(b, row_names=names, column_names=names)
    ax.figure.canvas.draw()
    rows = b.rows[b.row_order]
    assert _tick_texts(ax.yaxis) == [names[rows[p]] for p in range(0, 170, 3)]
    assert list(ax.get_yticks()) == list(range(0, 170, 3))
    assert ax.get_ylabel() == "every 3rd of 170 rows named"


def test_clustered_heatmap_warns_when_it_cannot_draw_class_names():
    """class_names were ignored above 80 classes without a word."""
    S = np.corrcoef(np.random.default_rng(0).normal(size=(90, 12)))
    with pytest.warns(UserWarning, match="class_names are not drawn above 80 classes"):
        plot_clustered_heatmap(S, class_names=[f"c{i}" for i in range(90)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_clustered_heatmap(S)
        plot_clustered_heatmap(S[:80, :80], class_names=[f"c{i}" for i in range(80)])


def test_feature_importance_key_explains_a_red_ofiv_over_blue_starts():
    """A sign-flipping non-additive channel's OFIV is the weighted mean of its positive FIVs
    (the paper's rule): red although most starts may be blue. The key did not say so."""
    s = _summary()
    flip = np.flatnonzero(s.category[0] == 2)
    assert flip.size                                          # channel 1 flips by construction
    text = _key(plot_feature_importance(s)).get_text().replace("\n", " ")
    assert "weighted mean of their positive FIVs only" in text
    assert all(f"ch {k}" in text for k in flip)
    # no flipping channel drawn: no such sentence
    other = np.flatnonzero(s.category[0] != 2)
    text = _key(plot_feature_importance(s, order=other)).get_text()
    assert "positive FIVs" not in text


def test_plot_ofiv_key_explains_a_red_ofiv_of_a_flipping_channel():
    """Given a summary, plot_ofiv's key did not say that a sign-flipping non-additive channel's
    OFIV is the weighted mean of its positive FIVs only (red though most starts are blue):
    it now uses plot_feature_importance's sentence, and only when such a channel is drawn."""
    s = _summary()
    flip = np.flatnonzero((s.category == 2).any(0))
    assert flip.size                                          # channel 1 flips by construction
    text = _key(plot_ofiv(s)).get_text().replace("\n", " ")
    assert "weighted mean of their positive FIVs only" in text
    assert all(f"ch {k}" in text for k in flip)
    other = np.flatnonzero(~(s.category == 2).any(0))
    assert "positive FIVs" not in _key(plot_ofiv(s, channel_order=other)).get_text()
    assert "positive FIVs" not in _key(plot_ofiv(np.asarray(s.ofiv))).get_text()


@pytest.mark.parametrize("filters", [False, True])
def test_feature_importance_without_labels_has_no_blank_label_column(filters):
    """Without channel_labels the figure kept a 1.25-inch empty label column; now it is only
    as wide as the logos' "\u00b1" numbers need, and those stay inside the figure."""
    s = _summary()
    f = np.random.default_rng(1).normal(size=(6, 4, 5)) if filters else None
    fig = plot_feature_importance(s, filters=f)
    fig.canvas.draw()
    lab = fig.axes[-1]
    assert lab.get_window_extent().width / fig.dpi < 0.6
    for ax in fig.axes[1:-1]:
        for t in ax.texts:
            assert t.get_window_extent().x1 <= fig.bbox.x1
    widths = [plot_feature_importance(s, filters=f, channel_labels=[f"m{k}" for k in range(6)])
              .get_size_inches()[0], fig.get_size_inches()[0]]
    assert widths[1] < widths[0] - 0.6


def test_feature_importance_long_labels_survive_a_plain_savefig():
    """The label column was 1.6 inches whatever the labels: long ones ran off the canvas of a
    plain fig.savefig (the docstring promises the figure keeps everything inside)."""
    s = _summary()
    labels = [f"ch{k}: best JASPAR match MA0139.1 CTCF (p=1e-5), {'x' * 10 * k}"
              for k in range(6)]
    fig = plot_feature_importance(s, channel_labels=labels, max_channels=6)
    fig.canvas.draw()
    texts = [t for t in fig.axes[-1].texts]
    assert len(texts) == 6
    for t in texts:
        bb = t.get_window_extent()
        assert fig.bbox.x0 <= bb.x0 and bb.x1 <= fig.bbox.x1, t.get_text()


def test_plot_ofiv_and_association_index_have_a_width_cap():
    """2,500 channels made a 112,742-pixel-wide OFIV PNG and 4,000 association rows an
    84,000-pixel one: the width stops at MAX_FIGURE_INCHES, and plot_ofiv refuses more than
    MAX_OFIV_COLUMNS channels, as it refuses more than MAX_OFIV_ROWS rows."""
    import pandas as pd

    from deepresolve_captum.plot import (MAX_FIGURE_INCHES, MAX_OFIV_COLUMNS,
                                         plot_association_index)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="MAX_OFIV_COLUMNS"):
        plot_ofiv(rng.normal(size=(2, MAX_OFIV_COLUMNS + 1)))
    fig = plot_ofiv(rng.normal(size=(2, 400)))
    assert fig.get_size_inches()[0] <= MAX_FIGURE_INCHES
    labels = fig.axes[0].get_xticklabels()
    assert 0 < len(labels) < 400 and "every" in fig.axes[0].get_xlabel()
    # the selection of a big layer is fine
    fig = plot_ofiv(rng.normal(size=(2, 2500)), channel_order=np.arange(30))
    assert fig.get_size_inches()[0] == pytest.approx(0.3 * 30 + 1.5)
    df = pd.DataFrame({"name": [f"c{i}" for i in range(4000)],
                       "n_positive": rng.integers(0, 9, 4000), "n_negative": rng.integers(0, 9, 4000)})
    ax = plot_association_index(df)
    assert ax.figure.get_size_inches()[0] <= MAX_FIGURE_INCHES


def test_association_index_with_thousands_of_classes_has_no_white_stripes():
    """At ~1 pixel per class, bars of width 0.8 left white stripes that looked like groups;
    the 40-inch figure had 5- and 4-inch blank side margins and no x label once the names
    were dropped."""
    import pandas as pd

    from deepresolve_captum.plot import plot_association_index
    n = 4000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"name": [f"c{i}" for i in range(n)],
                       "n_positive": rng.integers(3, 9, n), "n_negative": rng.integers(3, 9, n)})
    ax = plot_association_index(df)
    fig = ax.figure
    fig.set_dpi(100)
    fig.canvas.draw()
    assert ax.get_xlabel() == f"{n} classes, in the table's order"
    lo, hi = ax.get_xlim()
    assert -0.5 - 0.02 * n <= lo and hi <= n - 0.5 + 0.02 * n
    box = ax.get_window_extent()
    assert box.x0 / fig.dpi < 1.2 and (fig.bbox.x1 - box.x1) / fig.dpi < 1.0
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    to_px = ax.transData.transform
    (x0, y_up), (x1, y_dn) = to_px([(-0.5, 1.5), (n - 0.5, -1.5)])
    H = img.shape[0]
    for y in (y_up, y_dn):          # a row of pixels just above and just below the zero line
        row = img[int(round(H - y)), int(np.ceil(x0)) + 1:int(np.floor(x1)) - 1]
        white = (row > 235).all(axis=1)
        assert not white.any(), f"{white.sum()} white pixel columns"


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_interaction_bars_are_not_signed_colours(output):
    """Red / blue meant motif a / motif b here, positive / negative everywhere else."""
    from matplotlib.colors import to_hex

    from deepresolve_captum.plot import BLUE, RED, plot_interaction
    ax = plot_interaction(_interaction(output, [0.04, 0.9, 0.5, 0.13]))
    bars = [p for p in ax.patches if p is not ax.patch]
    faces = {to_hex(b.get_facecolor()) for b in bars}
    assert not faces & {RED, BLUE}
    a, b = bars[-3], bars[-2]                   # a and b are told apart (by hatch)
    assert (to_hex(a.get_facecolor()), a.get_hatch()) != (to_hex(b.get_facecolor()), b.get_hatch())


def test_interaction_long_names_do_not_overlap():
    """Long condition names ran into each other under the bars."""
    from deepresolve_captum.plot import plot_interaction
    ax = plot_interaction(_interaction("probability", [0.04, 0.9, 0.5, 0.13]),
                          names=("ch 9 CAGGTC (AND partner)", "ch 5 GCTCAT (XOR) with a long tail"))
    fig = ax.figure
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
    assert all(l.x1 <= r.x0 for l, r in zip(boxes, boxes[1:]))
    assert all(fig.bbox.x0 <= bb.x0 and bb.x1 <= fig.bbox.x1 for bb in boxes)


def test_similarity_colour_bar_extends_when_values_leave_the_range():
    """Values beyond vmin / vmax saturated with no sign of it on the colour bar."""
    from deepresolve_captum.plot import plot_similarity_matrices
    m = np.corrcoef(np.random.default_rng(0).normal(size=(5, 8)))
    for scale, ext in ((1.0, "neither"), (3.0, "both")):
        fig = plot_similarity_matrices({"a": scale * m, "b": m})
        assert fig.axes[-1]._colorbar.extend == ext
    fig = plot_similarity_matrices({"a": m + 1.0})
    assert fig.axes[-1]._colorbar.extend == "max"


def test_similarity_single_digit_labels_are_not_turned():
    """C = 7..10 classes named 0..9 had their x labels turned 90 degrees."""
    from deepresolve_captum.plot import plot_similarity_matrices
    m = np.corrcoef(np.random.default_rng(0).normal(size=(10, 12)))
    fig = plot_similarity_matrices({"a": m})
    assert all(t.get_rotation() == 0 for t in fig.axes[0].get_xticklabels())
    fig = plot_similarity_matrices({"a": m}, class_names=[f"long class name {i}" for i in range(10)])
    assert all(t.get_rotation() == 90 for t in fig.axes[0].get_xticklabels())


def test_similarity_long_names_label_only_the_first_panels_y_axis():
    """Long class names were repeated as y labels left of every panel (the panels share the
    order), each panel paying their width: only the first panel's y axis is labelled now."""
    from deepresolve_captum.plot import plot_similarity_matrices
    m = np.corrcoef(np.random.default_rng(0).normal(size=(8, 10)))
    names = [f"wgEncodeAwgTfbsHaibGm12878Pol2Pravastatin{i}V0416102UniPk" for i in range(8)]
    fig = plot_similarity_matrices({"a": m, "b": m, "c": m}, class_names=names)
    fig.canvas.draw()
    panels = fig.axes[:3]
    assert _tick_texts(panels[0].yaxis) == names
    for ax in panels[1:]:
        assert not any(_tick_texts(ax.yaxis))
        assert _tick_texts(ax.xaxis) == names                     # x labels stay on each
    # the names' room is paid once, whatever the panel count (it was paid per panel)
    short = [str(i) for i in range(8)]
    width = {(k, long): plot_similarity_matrices(dict(list({"a": m, "b": m, "c": m}.items())[:k]),
                                                 class_names=names if long else short)
             .get_size_inches()[0] for k in (1, 3) for long in (True, False)}
    room1, room3 = width[1, True] - width[1, False], width[3, True] - width[3, False]
    assert room1 > 1 and abs(room3 - room1) < 0.5


def test_plot_ofiv_on_a_callers_wide_axes_is_not_held_to_the_new_figure_caps():
    import matplotlib.pyplot as plt

    from deepresolve_captum.plot import MAX_OFIV_COLUMNS, plot_ofiv

    o = np.random.default_rng(0).normal(size=(2, 300))
    capped = plot_ofiv(o)
    small = max(c.get_sizes().max() for c in capped.axes[0].collections)
    fig, ax = plt.subplots(figsize=(80, 2))
    plot_ofiv(o, ax=ax)
    assert max(c.get_sizes().max() for c in ax.collections) > 2 * small   # room used
    wide = np.random.default_rng(1).normal(size=(1, MAX_OFIV_COLUMNS + 100))
    fig2, ax2 = plt.subplots(figsize=(200, 2))
    plot_ofiv(wide, ax=ax2)                                                 # drawn, not refused
    with pytest.raises(ValueError, match="MAX_OFIV_COLUMNS"):
        plot_ofiv(wide)
    plt.close("all")


def test_own_scale_draws_a_dead_filter_flat_and_says_every_class_when_all_flip():
    """A filter whose centred weights are float rounding (~1e-8) was blown up to a
    full-height motif on its own scale; the flip sentence said 'in some classes' when the
    channel flipped in all of them."""
    s = _summary(C=3, K=3)
    rng = np.random.default_rng(0)
    filters = rng.normal(size=(3, 4, 8))
    c, d = rng.normal(size=8) * 0.7, np.array([0.1, 0.2, 0.3, 0.4])[:, None]
    filters[1] = (c[None] + d) - d                         # centred: ~1e-8 of rounding
    fig = plot_feature_importance(s, filters=filters, order=np.arange(3))
    dead = fig.axes[2]
    assert _logo_height(dead) == 0 and [t.get_text() for t in dead.texts] == ["\u00b10"]
    assert _logo_height(fig.axes[1]) > 0
    from deepresolve_captum.plot import _flip_sentence
    from deepresolve_captum.summary import NONADDITIVE_FLIPPING
    assert (s.category[:, 1] == NONADDITIVE_FLIPPING).all()
    assert "in some classes" not in _flip_sentence(s.category, [1])
    cat = s.category.copy()
    cat[0, 1] = 0
    assert "in some classes" in _flip_sentence(cat, [1])


def test_association_index_on_a_callers_axes_keeps_its_legend_inside_and_unsigned_counts():
    import pandas as pd

    from deepresolve_captum.plot import plot_association_index
    n = 200
    df = pd.DataFrame({"name": [f"c{i}" for i in range(n)],
                       "n_positive": np.arange(n, dtype=np.uint32) % 7,
                       "n_negative": np.arange(n, dtype=np.uint32) % 5})
    fig, (a1, a2) = plt.subplots(2, 1)
    plot_association_index(df, ax=a1)
    a1.set_title("my title")
    fig.canvas.draw()
    leg, box = a1.get_legend().get_window_extent(), a1.get_window_extent()
    assert leg.y1 <= box.y1 + 1 and leg.y0 >= box.y0 - 1            # inside, under the title
    assert a1.get_ylim()[0] > -10                                  # -uint32 no longer wraps
    plt.close(fig)


def _drawn(fig):
    """The circles of a figure: every scatter's offsets and sizes, axis by axis."""
    return [(np.asarray(c.get_offsets()).round(9).tolist(), np.asarray(c.get_sizes()).round(9).tolist())
            for ax in fig.axes for c in ax.collections]


def test_tensor_labels_targets_and_axes_from_a_review(monkeypatch):
    """From a review of plot inputs: channels=top as a tensor (an argsort) drew no seqlet at all
    and warned of nothing (tensor(30) == 30 held in the stray check, not in the table); a 0-d
    tensor target was 'not an int in [0, C)'; a rectangular bicluster block needed as many row
    names as columns; three names for plot_interaction failed to unpack; the array of a
    subplot grid as ax failed with an AttributeError."""
    import pandas as pd

    import tangermeme.seqlet

    from deepresolve_captum.channel_motifs import channel_seqlets
    from deepresolve_captum.clustering import bicluster
    from deepresolve_captum.plot import plot_interaction

    def seqlets_at_the_peak(track, threshold=0.01, **kw):   # tangermeme's is numba-compiled
        best = track.abs().argmax(1)                        # without a cache: ~13 s per process
        return pd.DataFrame({"example_idx": range(len(track)), "start": best, "end": best + 1,
                             "attribution": track.max(1).values, "p-value": 0.0})

    monkeypatch.setattr(tangermeme.seqlet, "recursive_seqlets", seqlets_at_the_peak)

    a = np.random.default_rng(0).normal(size=(3, 1, 4, 20))
    seqlets = pd.DataFrame({"channel": [30, 5, 9], "example_idx": [0] * 3, "start": [2, 4, 6],
                            "end": [5, 7, 9]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_channel_attributions(a, channels=torch.tensor([30, 5, 9]), seqlets=seqlets)
    assert [len([p for p in ax.patches if p is not ax.patch]) for ax in fig.axes] == [1, 1, 1]
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(2, 3, 4, 60, generator=g) * 0.01
    attr[:, :, 0, 20:28] = 3.0
    top = torch.tensor([1, 2])
    table = channel_seqlets(attr, channels=top)
    assert set(table["channel"]) == {1, 2} and all(type(c) is int for c in table["channel"])

    s = _summary(C=3)
    drawn = _drawn(plot_feature_importance(s, target=torch.tensor(1)))
    assert drawn == _drawn(plot_feature_importance(s, target=1))      # target 1's circles,
    assert drawn != _drawn(plot_feature_importance(s, target=0))      # not target 0's
    with pytest.raises(ValueError, match=r"target must be an int in \[0, 3\)"):
        plot_feature_importance(s, target=torch.tensor(1.0))

    block = np.random.default_rng(1).uniform(-1, 1, size=(4, 8))
    r = bicluster(block, n_clusters=2)
    fig = plot_bicluster(r, row_names=[f"r{i}" for i in range(4)],
                         column_names=[f"c{j}" for j in range(8)])
    assert fig is not None

    _, grid = plt.subplots(1, 2)
    with pytest.raises(TypeError, match=r"one matplotlib Axes, got ndarray of shape \(2,\)"):
        plot_ofiv(s, ax=grid)
    assert plot_ofiv(s, ax=grid[0]) is grid[0].figure
    with pytest.raises(ValueError, match="names must be two names"):
        plot_interaction(object(), names=("a", "b", "c"))


def test_rows_are_labelled_with_the_summarys_targets_or_names():
    """A summary of outputs 3, 17 and 500 was drawn as 'target 0, 1, 2' (user report c.md #2):
    the plots take the stored names, else the stored output indices; explicit labels win."""
    rng = np.random.default_rng(0)
    fims, scores = rng.normal(size=(3, 4, 6)), rng.uniform(1, 2, size=(3, 4))
    s = summarize(fims, scores, targets=[3, 17, 500])

    def rows(fig):
        return [t.get_text() for t in fig.axes[0].get_yticklabels()]

    assert rows(plot_ofiv(s)) == ["output 3", "output 17", "output 500"]
    assert rows(plot_ofiv(s, class_names=["a", "b", "c"])) == ["a", "b", "c"]
    assert rows(plot_ofiv(s.ofiv)) == ["target 0", "target 1", "target 2"]
    named = summarize(fims, scores, targets=[3, 17, 500], target_names=["CTCF", "GATA1", "JUN"])
    assert rows(plot_ofiv(named)) == ["CTCF", "GATA1", "JUN"]
    assert plot_feature_importance(s, target=2)._suptitle.get_text().endswith(": output 500")
    assert plot_feature_importance(named, target=1)._suptitle.get_text().endswith(": GATA1")
    assert plot_feature_importance(s, target=1, title="mine")._suptitle.get_text() == "mine"
    plain = plot_feature_importance(summarize(fims, scores), target=1)._suptitle.get_text()
    assert plain == "FIVs of each start, IL and OFIV (* = non-additive)"
    with pytest.raises(ValueError, match="output 500 is row 2"):
        plot_feature_importance(s, target=500)
    with pytest.raises(ValueError, match=r"target must be an int in \[0, 3\), got 7$"):
        plot_feature_importance(s, target=7)
