"""Figures in the style of the paper (matplotlib; nothing else in the package imports this module).

* :func:`plot_feature_importance` -- Fig. 2: every start's FIV as red/blue circles sized by |FIV|,
  the IL column, the OFIV column with non-additive channels starred, and each channel's filter as a
  sequence logo, channels ordered by OFIV.
* :func:`plot_ofiv` -- Fig. 4a: one OFIV row per class.
* :func:`plot_similarity_matrices` -- Fig. 4b: class x class matrices side by side.
* :func:`filter_logo_matrix`, :func:`plot_filter_logo` -- a convolution filter as a logo.
* :func:`save_figure` -- PNG and SVG in one call.

All functions return the matplotlib Figure (or Axes) they drew and never call ``plt.show``.
Shapes: C targets/classes, T starts, K channels, w filter width.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

RED, BLUE, GREY = "#d62728", "#1f77b4", "#555555"


def _np(x, name):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def save_figure(fig, path, formats=("png", "svg"), dpi=150):
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (any suffix of ``path`` is
    replaced). Creates the folder. Returns the list of written paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        p = path.with_suffix("." + fmt.lstrip("."))
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        written.append(p)
    return written


def filter_logo_matrix(weight, mode="information"):
    """A convolution filter (4, w) -> a logo matrix (w, 4) (rows positions, columns A, C, G, T).

    mode="information": the filter as a PWM, as the paper does for TOMTOM (negative weights
    clipped to 0, each column normalised to sum 1, an all-zero column uniform), in bits.
    mode="weight": the weights centred per position (mean over the 4 bases removed).
    """
    w = _np(weight, "weight")
    if w.ndim != 2 or w.shape[0] != 4:
        raise ValueError(f"weight must have shape (4, w), got {w.shape}")
    if mode == "weight":
        return (w - w.mean(0, keepdims=True)).T
    if mode != "information":
        raise ValueError(f"mode must be 'information' or 'weight', got {mode!r}")
    p = np.clip(w, 0, None)
    tot = p.sum(0, keepdims=True)
    p = np.where(tot > 0, p / np.where(tot > 0, tot, 1), 0.25)
    ic = 2 + (p * np.log2(np.clip(p, 1e-12, 1))).sum(0, keepdims=True)
    return (p * ic).T


def plot_filter_logo(weight, ax=None, mode="information"):
    """Draw one filter (4, w) as a sequence logo with logomaker on ``ax``; returns the Axes."""
    import logomaker
    import matplotlib.pyplot as plt
    import pandas as pd

    if ax is None:
        _, ax = plt.subplots(figsize=(2, 0.8))
    mat = filter_logo_matrix(weight, mode=mode)
    df = pd.DataFrame(mat, columns=list("ACGT"))
    logomaker.Logo(df, ax=ax, color_scheme="classic", show_spines=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if mode == "information":
        ax.set_ylim(0, 2)
    return ax


def _circles(ax, x, y, values, scale, pos_color=RED, neg_color=BLUE, alpha=0.9):
    values = np.asarray(values, dtype=float)
    sizes = scale * np.abs(values)
    colors = np.where(values >= 0, pos_color, neg_color)
    ax.scatter(x, y, s=sizes, c=list(colors), alpha=alpha, linewidths=0.3, edgecolors="k")


def plot_feature_importance(summary, target=0, filters=None, channel_labels=None, order="ofiv",
                            max_channels=None, title=None, max_size=260.0):
    """Fig. 2 of the paper for one target: FIVs of all starts, IL, OFIV and filter logos.

    Channels are rows, sorted by descending OFIV (``order="ofiv"``) or IL (``order="il"``), or
    given as an index array. Columns: the T starts (red = positive FIV, blue = negative, area
    proportional to |FIV|, the same scale for all starts and the OFIV), then IL (grey, area and
    darkness proportional to IL), then OFIV with a star on non-additive channels, then the
    channel's filter logo (if ``filters`` is given) and its label.

    Parameters
    ----------
    summary: ``EnsembleSummary`` (from ``summarize``), with fiv (C, T, K), il/ofiv/nonadditive (C, K).
    target: int, which target (row of the summary) to draw.
    filters: optional (K, 4, w) convolution weights (e.g. ``model.conv.weight``) for the logos.
    channel_labels: optional list of K strings shown right of each row (e.g. matched motifs).
    order: "ofiv", "il" or an array of channel indices (also selects channels).
    max_channels: draw only the first ``max_channels`` channels of the order.
    title: figure title.
    max_size: marker area (points^2) of the largest |FIV|.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    fiv = _np(summary.fiv, "fiv")
    C, T, K = fiv.shape
    if not (isinstance(target, (int, np.integer)) and 0 <= target < C):
        raise ValueError(f"target must be an int in [0, {C}), got {target!r}")
    fiv = fiv[target]
    il = _np(summary.il, "il")[target]
    ofiv = _np(summary.ofiv, "ofiv")[target]
    nonadd = np.asarray(summary.nonadditive)[target].astype(bool)
    if isinstance(order, str):
        if order not in ("ofiv", "il"):
            raise ValueError(f"order must be 'ofiv', 'il' or an index array, got {order!r}")
        idx = np.argsort(-(ofiv if order == "ofiv" else il), kind="stable")
    else:
        idx = np.asarray(order, dtype=int)
        if idx.ndim != 1 or idx.min() < 0 or idx.max() >= K:
            raise ValueError(f"order must index channels 0..{K - 1}")
    if max_channels is not None:
        idx = idx[:int(max_channels)]
    if filters is not None:
        filters = _np(filters, "filters")
        if filters.ndim != 3 or filters.shape[0] != K or filters.shape[1] != 4:
            raise ValueError(f"filters must have shape ({K}, 4, w), got {filters.shape}")
    if channel_labels is not None and len(channel_labels) != K:
        raise ValueError(f"channel_labels must have {K} entries, got {len(channel_labels)}")
    n = len(idx)

    big = max(np.abs(fiv[:, idx]).max(), np.abs(ofiv[idx]).max(), 1e-12)
    scale = max_size / big
    il_scale = max_size / max(il[idx].max(), 1e-30)

    height = 0.36 * n + 1.4
    fig = plt.figure(figsize=(0.42 * (T + 2) + (3.6 if filters is not None else 1.6), height))
    widths = [0.42 * (T + 2), 1.4 if filters is not None else 0.01, 1.6]
    gs = GridSpec(1, 3, width_ratios=widths, wspace=0.02, figure=fig, top=1 - 0.45 / height,
                  bottom=0.55 / height)
    ax = fig.add_subplot(gs[0])
    rows = np.arange(n)
    for t in range(T):
        _circles(ax, np.full(n, t), rows, fiv[t, idx], scale)
    ilv = il[idx]
    dark = ilv / max(ilv.max(), 1e-30)
    ax.scatter(np.full(n, T + 0.3), rows, s=il_scale * ilv, c=[str(0.85 - 0.75 * d) for d in dark],
               linewidths=0.3, edgecolors="k")
    _circles(ax, np.full(n, T + 1.3), rows, ofiv[idx], scale)
    star = nonadd[idx]
    ax.scatter(np.full(star.sum(), T + 1.85), rows[star], marker="*", s=70, c="k")
    ax.set_xlim(-0.7, T + 2.2)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xticks(list(range(T)) + [T + 0.3, T + 1.3])
    ax.set_xticklabels([str(t + 1) for t in range(T)] + ["IL", "OFIV"], fontsize=8)
    ax.set_yticks(rows)
    ax.set_yticklabels([f"ch {k}" for k in idx], fontsize=7)
    ax.axvline(T - 0.35, color="0.8", lw=0.8)
    ax.set_xlabel("gradient-ascent start (FIV)", fontsize=8)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)

    if filters is not None:
        sub = gs[1].subgridspec(n, 1, hspace=0.15)
        for r, k in enumerate(idx):
            lax = fig.add_subplot(sub[r])
            plot_filter_logo(filters[k], ax=lax)
    lab = fig.add_subplot(gs[2])
    lab.set_ylim(n - 0.5, -0.5)
    lab.set_xlim(0, 1)
    lab.axis("off")
    if channel_labels is not None:
        for r, k in enumerate(idx):
            lab.text(0.04, r, str(channel_labels[k]), va="center", fontsize=7)
    if title is None:
        title = "FIVs of each start, IL and OFIV (* = non-additive)"
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height)
    return fig


def plot_ofiv(ofiv, class_names=None, channel_order=None, ax=None, max_size=220.0, nonadditive=None,
              title="OFIV per class"):
    """Fig. 4a: one row of OFIV circles per class (red positive, blue negative, area ~ |OFIV|).

    Parameters
    ----------
    ofiv: (C, K) array or tensor.
    class_names: optional C strings.
    channel_order: optional index array of channels (columns); default 0..K-1.
    ax: optional Axes to draw on.
    nonadditive: optional (C, K) bool; starred.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    ofiv = _np(ofiv, "ofiv")
    if ofiv.ndim != 2:
        raise ValueError(f"ofiv must have shape (C, K), got {ofiv.shape}")
    C, K = ofiv.shape
    names = list(class_names) if class_names is not None else [f"class {c + 1}" for c in range(C)]
    if len(names) != C:
        raise ValueError(f"class_names must have {C} entries")
    idx = np.arange(K) if channel_order is None else np.asarray(channel_order, dtype=int)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.3 * len(idx) + 1.5, 0.55 * C + 1.0))
    else:
        fig = ax.figure
    scale = max_size / max(np.abs(ofiv[:, idx]).max(), 1e-12)
    for c in range(C):
        _circles(ax, np.arange(len(idx)), np.full(len(idx), c), ofiv[c, idx], scale)
        if nonadditive is not None:
            star = np.asarray(nonadditive)[c, idx].astype(bool)
            ax.scatter(np.arange(len(idx))[star], np.full(star.sum(), c - 0.38), marker="*", s=30, c="k")
    ax.set_yticks(range(C))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xticks(range(len(idx)))
    ax.set_xticklabels([str(k) for k in idx], fontsize=6)
    ax.set_xlabel("channel", fontsize=8)
    ax.set_xlim(-0.7, len(idx) - 0.3)
    ax.set_ylim(C - 0.5, -0.7)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_similarity_matrices(matrices, class_names=None, vmin=-1.0, vmax=1.0, cmap="RdBu_r",
                             annotate=True):
    """Fig. 4b: class x class matrices side by side, one panel per entry of ``matrices``.

    Parameters
    ----------
    matrices: dict {title: (C, C) array}, drawn left to right in order.
    class_names: optional C strings.
    vmin, vmax, cmap: one colour scale shared by all panels (with one colour bar).
    annotate: write each value in its cell.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(matrices, dict) or not matrices:
        raise ValueError("matrices must be a non-empty dict {title: (C, C) array}")
    mats = {k: _np(v, f"matrices[{k!r}]") for k, v in matrices.items()}
    C = next(iter(mats.values())).shape[0]
    for k, v in mats.items():
        if v.shape != (C, C):
            raise ValueError(f"matrices[{k!r}] has shape {v.shape}, expected ({C}, {C})")
    names = list(class_names) if class_names is not None else [str(c + 1) for c in range(C)]
    fig, axes = plt.subplots(1, len(mats), figsize=(3.0 * len(mats) + 0.8, 3.2), squeeze=False)
    im = None
    for ax, (t, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap)
        ax.set_title(t, fontsize=9)
        ax.set_xticks(range(C))
        ax.set_yticks(range(C))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
        if annotate:
            for i in range(C):
                for j in range(C):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(m[i, j]) > 0.6 * max(abs(vmin), abs(vmax)) else "black")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, pad=0.02)
    return fig
