"""Figures in the style of the paper (matplotlib; only ``demo`` imports this module, lazily).

* :func:`plot_feature_importance` -- Fig. 2: every start's FIV as red/blue circles sized by |FIV|,
  the IL column, the OFIV column with non-additive channels starred, and each channel's filter as a
  sequence logo, channels ordered by OFIV.
* :func:`plot_ofiv` -- Fig. 4a: one OFIV row per class.
* :func:`plot_similarity_matrices` -- Fig. 4b: class x class matrices side by side.
* :func:`filter_logo_matrix`, :func:`plot_filter_logo` -- a convolution filter as a logo.
* :func:`plot_channel_logos`, :func:`plot_channel_attributions`, :func:`plot_interaction`,
  :func:`plot_clustered_heatmap`, :func:`plot_association_index`, :func:`plot_bicluster` --
  channel -> input and class relationships.
* :func:`save_figure` -- PNG and SVG in one call, of a Figure or an Axes' figure.

What the drawing functions return (none calls ``plt.show``):

* a matplotlib **Figure**: :func:`plot_feature_importance`, :func:`plot_ofiv` (``ax.figure``
  when given ``ax``), :func:`plot_similarity_matrices`, :func:`plot_channel_logos`,
  :func:`plot_channel_attributions`, :func:`plot_clustered_heatmap`;
* a matplotlib **Axes** (its figure is ``ax.figure``): :func:`plot_filter_logo`,
  :func:`plot_interaction`, :func:`plot_association_index`, :func:`plot_bicluster` -- the ones
  made to draw into a panel of your own figure (``ax=``). :func:`save_figure` takes either.

Shapes: C targets/classes, T starts, K channels, w filter width.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _stats
from .motifs import _as_matrix_list, _check_probabilities, _normalise_columns, column_information

__all__ = ["save_figure", "filter_logo_matrix", "plot_filter_logo", "plot_feature_importance",
           "plot_ofiv", "plot_similarity_matrices", "pwm_logo_matrix", "plot_channel_logos",
           "plot_channel_attributions", "plot_interaction", "plot_clustered_heatmap",
           "plot_association_index", "plot_bicluster", "MAX_OFIV_ROWS", "MAX_OFIV_COLUMNS",
           "MAX_FIGURE_INCHES", "HEATMAP_MAX_CELLS"]

RED, BLUE, GREY = "#d62728", "#1f77b4", "#555555"
#: plot_ofiv draws at most this many class rows (at 919 it made a 506-inch, 1.75 GB figure).
MAX_OFIV_ROWS = 100
#: plot_ofiv draws at most this many channels (columns); beyond ~130 the figure stops growing
#: (MAX_FIGURE_INCHES) and the circles shrink with the room, so more would be unreadable dots.
#: (2,500 channels made a 112,742-pixel-wide PNG.)
MAX_OFIV_COLUMNS = 500
#: the widest figure plot_ofiv and plot_association_index make by themselves (inches): more
#: columns or bars share it (4,000 association rows made an 84,000-pixel-wide PNG).
MAX_FIGURE_INCHES = 40.0
#: plot_clustered_heatmap draws up to this many classes cell by cell; a larger matrix is drawn as
#: the means of n x n blocks of classes, at most ``HEATMAP_MAX_CELLS // 2`` blocks a side. (Drawn
#: whole, a 6,000-class matrix took +3 GB to build and save, ~22x its float32 size, for an image
#: of ~640 pixels a side; 21,907 classes ran out of 24 GB.)
HEATMAP_MAX_CELLS = 2000


def _check_ax(ax):
    """None or one matplotlib Axes (not the array plt.subplots returns for a grid)."""
    from matplotlib.axes import Axes

    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be one matplotlib Axes, got {type(ax).__name__}"
                        + (f" of shape {ax.shape}: pick one, e.g. axes[0]"
                           if hasattr(ax, "shape") else ""))


def _np(x, name):
    if hasattr(x, "detach"):   # a tensor; float16 / bfloat16 (no numpy dtype) as float32
        x = _stats._tensor_to_numpy(x)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _channel_index(values, K, name):
    """``values`` as a non-empty 1-d int array of distinct channel indices in [0, K)."""
    if hasattr(values, "detach"):
        values = _stats._tensor_to_numpy(values)
    idx = np.asarray(values)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence of channel indices, got "
                         f"{'shape ' + str(idx.shape) if idx.ndim != 1 else 'an empty one'}")
    if idx.dtype == bool:
        raise TypeError(f"{name} must be channel indices, not a boolean mask "
                        f"(use np.flatnonzero(mask))")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name} must be integer channel indices, got dtype {idx.dtype}")
    bad = idx[(idx < 0) | (idx >= K)]
    if bad.size:
        raise ValueError(f"{name} must index channels 0..{K - 1}, got {bad.tolist()}")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{name} repeats channel(s) {uniq[counts > 1].tolist()}")
    return idx.astype(int)


def _root_figure(obj):
    """The matplotlib Figure that ``obj`` (a Figure, an Axes, a SubFigure, ...) is drawn in."""
    from matplotlib.figure import Figure

    fig = obj
    while not isinstance(fig, Figure):   # an Axes' .figure may be a SubFigure: go on up
        parent = getattr(fig, "figure", None)
        if parent is None or parent is fig:
            raise TypeError("fig must be a matplotlib Figure or Axes (what the plot functions "
                            f"return), got {type(obj).__name__}")
        fig = parent
    return fig


def save_figure(fig, path, formats=("png", "svg"), dpi=150):
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (a str or a sequence of them,
    any case, with or without the dot: "PDF" and ".pdf" write one ``.pdf``). A suffix of
    ``path`` that is an image format matplotlib writes (``fig.png``) is replaced; any other
    stays part of the name (``ofiv_lambda2.8`` -> ``ofiv_lambda2.8.png``). Creates the folder;
    an unknown format is refused before anything is written. SVG and PDF files carry no date
    and fixed element ids, so the same figure gives the same bytes on every run.

    ``fig``: a matplotlib Figure, or an Axes (as :func:`plot_filter_logo`,
    :func:`plot_interaction`, :func:`plot_association_index` and :func:`plot_bicluster`
    return), whose whole figure (``ax.figure``) is saved: any plot function's result can be
    passed as it is.
    ``dpi``: resolution of the raster formats (PNG), 150 by default; SVG and PDF are vector.

    Returns
    -------
    list of the written paths (``pathlib.Path``), one per format.
    """
    import matplotlib

    fig = _root_figure(fig)
    if isinstance(formats, str):
        formats = (formats,)
    known = fig.canvas.get_supported_filetypes()
    fmts = list(dict.fromkeys(f.lstrip(".").lower() for f in formats))
    bad = [f for f in fmts if f not in known]
    if bad:
        raise ValueError(f"formats {bad} are not ones matplotlib writes "
                         f"({', '.join(sorted(known))})")
    path = Path(path)
    if path.suffix.lstrip(".").lower() in known:
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in fmts:
        p = path.with_name(f"{path.name}.{fmt}")
        # no date, and element ids from a fixed salt: the same figure gives the same bytes
        meta = ({"Date": None} if fmt in ("svg", "svgz") else
                {"CreationDate": None} if fmt == "pdf" else None)
        with matplotlib.rc_context({"svg.hashsalt": "deepresolve"}):
            fig.savefig(p, dpi=dpi, bbox_inches="tight", metadata=meta)
        written.append(p)
    return written


def filter_logo_matrix(weight, mode="weight"):
    """A convolution filter (4, w) -> a logo matrix (w, 4) (rows positions, columns A, C, G, T).

    mode="weight" (default): the weights centred per position (the mean over the 4 bases
    removed: on one-hot input that mean only adds a constant to the output, so the centred
    weights are what tells the bases apart). Letter heights are weights, in the filter's own
    units: a weak filter gives small letters, and negative weights stay negative.
    mode="information": the filter as a PWM, as the paper does for TOMTOM (negative weights
    clipped to 0, each column normalised to sum 1, an all-zero column uniform), in bits. This
    throws the filter's scale away: a column with one positive weight is 2 bits whether that
    weight is 5 or 0.001, so nearly every filter, random ones included, looks maximally
    specific. Use it for motif matching, not to judge a filter by eye.

    Returns
    -------
    numpy array (w, 4).
    """
    w = _np(weight, "weight")
    if w.ndim != 2 or w.shape[0] != 4:
        raise ValueError(f"weight must have shape (4, w), got {w.shape}")
    if mode == "weight":
        return (w - w.mean(0, keepdims=True)).T
    if mode != "information":
        raise ValueError(f"mode must be 'weight' or 'information', got {mode!r}")
    return pwm_logo_matrix(_normalise_columns(w)).T


#: the y label of a logo, by how its letters are scaled
LOGO_YLABEL = {"weight": "weight (centred)", "information": "bits"}


def _logo_extent(mat):
    """(lowest, highest) stack of a (4, w) logo matrix: the sums of its negative and positive
    entries per position (what tangermeme's plot_logo stacks below and above 0)."""
    mat = np.asarray(mat, dtype=float)
    return (float(np.minimum(mat, 0).sum(0).min(initial=0.0)),
            float(np.maximum(mat, 0).sum(0).max(initial=0.0)))


def _plot_logo(mat, ax, ylim):
    """tangermeme's plot_logo of a (4, w) matrix on ``ax`` with y limits ``ylim``, without its
    'identical low and high ylims' warning for an all-zero matrix (it sets the data's limits
    before ``ylim``)."""
    import warnings

    from tangermeme.plot import plot_logo

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high")
        return plot_logo(mat, ax=ax, ylim=ylim)


def _logo_axes(ax, w, ylabel=None, ticks=True, fontsize=6):
    """Finish a logo of ``w`` positions drawn by tangermeme's plot_logo (position p's letters
    over [p, p + 0.95]): x limits snug around the letters, a baseline under all of them, x ticks
    (1..w) under the letters' centres, and the y label."""
    ax.set_xlim(-0.05, w)
    ax.spines["bottom"].set_visible(False)
    ax.axhline(0, color="k", lw=0.5, zorder=0)        # the baseline, spanning every letter
    if ticks:
        from matplotlib.ticker import MaxNLocator
        loc = MaxNLocator(nbins=max(2, min(w, 8)), steps=[1, 2, 5, 10], integer=True)
        pos = [int(t) for t in loc.tick_values(1, w) if 1 <= t <= w]
        ax.set_xticks([p - 1 + 0.475 for p in pos])
        ax.set_xticklabels([str(p) for p in pos])
    else:
        ax.set_xticks([])
    ax.tick_params(labelsize=fontsize, length=2, pad=1)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=fontsize + 1)


def plot_filter_logo(weight, ax=None, mode="weight", ylim=None, ylabel=True, xticks=True):
    """Draw one filter (4, w) as a sequence logo (tangermeme's ``plot_logo``) on ``ax`` (a new
    small figure if None).

    How the logo is made (``mode``, as in :func:`filter_logo_matrix`):

    * "weight" (default): each position's weights minus their mean over A, C, G, T, drawn as
      letter heights in the filter's units (positive above the baseline, negative below it,
      upside down, as tangermeme draws attributions); y label "weight (centred)". A weak or
      random filter looks weak or random.
    * "information": the clipped, column-normalised PWM in bits (y 0..2, label "bits"), the
      rule TOMTOM matching uses (:mod:`deepresolve_captum.motifs`); it ignores the filter's
      scale, so almost any filter looks like a strong motif.

    Parameters
    ----------
    weight: (4, w) array or tensor, one filter.
    ax: optional Axes.
    ylim: optional (low, high) y limits (e.g. one scale for several filters); default the
        logo's own extent (0..2 bits for "information").
    ylabel: True: the units ("weight (centred)" / "bits"); a str: that; False: none.
    xticks: True: positions 1..w under the letters' centres; False: none.

    Returns
    -------
    matplotlib Axes (its figure is ``ax.figure``).
    """
    _check_ax(ax)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(2.4, 1.1), layout="constrained")
    mat = filter_logo_matrix(weight, mode=mode).T            # (4, w)
    if ylim is None:
        if mode == "information":
            ylim = (0.0, 2.0)
        else:
            lo, hi = _logo_extent(mat)
            pad = 0.05 * max(hi - lo, 1e-12)
            ylim = (lo - pad if lo < 0 else 0.0, hi + pad if hi > 0 else 0.0)
            if ylim[0] == ylim[1]:                           # an all-zero filter
                ylim = (-1.0, 1.0)
    _plot_logo(mat, ax, tuple(ylim))
    if ylabel is True:
        ylabel = LOGO_YLABEL[mode]
    _logo_axes(ax, mat.shape[1], ylabel=ylabel or None, ticks=xticks)
    return ax


def _circles(ax, x, y, values, scale, pos_color=RED, neg_color=BLUE, alpha=0.9):
    values = np.asarray(values, dtype=float)
    sizes = scale * np.abs(values)
    colors = np.where(values >= 0, pos_color, neg_color)
    ax.scatter(x, y, s=sizes, c=list(colors), alpha=alpha, linewidths=0.3, edgecolors="k")


def _footer(fig, text, fontsize=6.5, margin=0.08):
    """Write ``text`` at the bottom left of ``fig``, wrapped to the figure's width and anchored in
    inches from its lower edge (so it stays put when the figure's height changes); returns the
    height (inches) it takes, margins included."""
    import textwrap

    w_in = fig.get_size_inches()[0]
    avail = (w_in - 2 * margin) * fig.dpi
    # a first guess from an average glyph width of ~0.6 em, then narrower until it fits
    chars = max(20, int((w_in - 2 * margin) * 72 / (0.6 * fontsize)))
    t = fig.text(margin, margin, "", fontsize=fontsize, va="bottom", ha="left", color="0.25",
                 transform=fig.dpi_scale_trans)
    while True:
        t.set_text(textwrap.fill(text, chars))
        bb = t.get_window_extent()
        if bb.width <= avail or chars <= 20:
            break
        chars = max(20, int(chars * avail / bb.width) - 1)
    return bb.height / fig.dpi + 2 * margin


def _largest(big):
    """The size key's 'largest = ...' part for circles scaled to ``big`` (the largest |value|)."""
    return f"largest = {big:.3g}" if big > 0 else "all values are 0"


def _flip_sentence(category, idx):
    """The keys' sentence on sign-flipping non-additive channels among the channels ``idx``
    (``category``: (C, K) or (K,) summary categories): their OFIV is the weighted mean of their
    positive FIVs only, so red where most starts may be blue. "" when none is drawn."""
    from .summary import NONADDITIVE_FLIPPING

    cat = np.asarray(category)
    cat = cat[None] if cat.ndim == 1 else cat
    fl = [int(k) for k in idx if (cat[:, k] == NONADDITIVE_FLIPPING).any()]
    if not fl:
        return ""
    shown = ", ".join(f"ch {k}" for k in fl[:6]) + (", ..." if len(fl) > 6 else "")
    every = all((cat[:, k] == NONADDITIVE_FLIPPING).all() for k in fl)
    where = " in some classes" if cat.shape[0] > 1 and not every else ""
    return (f" OFIV: the weighted mean FIV, except for sign-flipping non-additive "
            f"channels ({shown}{where}): the weighted mean of their positive FIVs only, so "
            f"red even where most starts are blue.")


def _ordinal(k):
    """'2nd', '3rd', '11th', ..."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _text_color(rgba):
    """'black' or 'white', whichever reads better on the colour ``rgba`` (WCAG contrast: white
    when the colour's relative luminance is below ~0.18), for any colour map."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "white" if (1.05 / (lum + 0.05)) > ((lum + 0.05) / 0.05) else "black"


def plot_feature_importance(summary, target=0, filters=None, channel_labels=None, order="ofiv",
                            max_channels=None, title=None, max_size=260.0, logo_mode="weight",
                            logo_scale="own"):
    """Fig. 2 of the paper for one target: FIVs of all starts, IL, OFIV and filter logos.

    Channels are rows, sorted by descending OFIV (``order="ofiv"``) or IL (``order="il"``), or
    given as an index array. Columns: the T starts (red = positive FIV, blue = negative, area
    proportional to |FIV|, the same scale for all starts and the OFIV), then IL (grey), then OFIV
    with a star on non-additive channels (the OFIV is the weighted mean FIV, except for a
    sign-flipping non-additive channel: the weighted mean of its positive FIVs only, as in the
    paper, so its circle is red even when most starts are blue; the key names those channels),
    then the channel's filter logo (if ``filters`` is given)
    and its label. The IL circle's area is sqrt(IL), the weighted standard deviation of the
    channel's FIV across starts, on the FIV circles' scale (its darkness grows with it): a channel
    whose FIV swings between +a and -a gets a circle like an FIV of a, and a consistent one a dot.
    (The paper sizes IL circles by IL, scaled to the largest shown, which makes tiny spreads look
    large when every channel is consistent.) A key at the bottom of the figure (inside it, so a
    plain ``fig.savefig`` keeps it) gives the scale.

    The figure grows 0.36 inch per channel drawn (0.45 with ``filters``, room for the logos):
    for many channels (a first layer of hundreds) pass ``max_channels`` (e.g. 30) to draw the top
    ones of ``order``.

    Parameters
    ----------
    summary: ``EnsembleSummary`` (from ``summarize``), with fiv (C, T, K), il/ofiv/nonadditive (C, K).
    target: int, which target (row of the summary, 0..C-1) to draw.
    filters: optional (K, 4, w) convolution weights (e.g. ``model.conv.weight``) for the logos
        (:func:`plot_filter_logo`), each on its own y scale by default (``logo_scale``).
    channel_labels: optional list of K strings shown right of each row (e.g. matched motifs);
        wrapped at 60 characters, the label column as wide as the longest line.
    order: "ofiv", "il" or a non-empty array of distinct channel indices in [0, K) (also selects
        channels).
    max_channels: optional int >= 1, draw only the first ``max_channels`` channels of the order
        (the top ones by OFIV or IL); use it when there are many channels.
    title: figure title. Default: "FIVs of each start, IL and OFIV (* = non-additive)", followed
        by the target's name or output index when the summary stores them
        (``summarize(..., targets=, target_names=)``, see ``EnsembleSummary.target_labels``).
    max_size: marker area (points^2) of the largest |FIV|.
    logo_mode: "weight" (default): the filters' centred weights, negatives below the baseline;
        "information": the clipped-PWM logo in bits (see :func:`filter_logo_matrix`: it makes
        nearly every filter look maximally specific).
    logo_scale: with ``logo_mode="weight"``: "own" (default): each logo on its own y scale, its
        tallest stack of centred weights (above or below the line) written beside it
        ("\u00b10.31"; a filter at 1e-6 of the largest or less is drawn flat, as rounding
        noise), so every filter's pattern
        is visible (on one scale a single large filter flattened all the others), and raw
        weight sizes do not compare across channels anyway (the next layer rescales each
        channel); "shared": all logos on one y scale, given under the column. The key says
        which. (Bits are always 0..2.)

    Returns
    -------
    matplotlib Figure (``fig.axes[0]``: the circles; then the logos, if any, and the labels).
    """
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    fiv = _np(summary.fiv, "fiv")
    C, T, K = fiv.shape
    from .clustering import _as_index

    stored = getattr(summary, "targets", None)
    if stored is not None and isinstance(target, (int, np.integer)) \
            and not isinstance(target, (bool, np.bool_)) and not 0 <= target < C:
        from .summary import _row_hint
        hint = _row_hint(list(stored), target)
        if hint:
            raise ValueError(f"target must be an int in [0, {C}), got {target!r}{hint}")
    target = _as_index(target, "target", 0, C - 1)
    fiv = fiv[target]
    il = _np(summary.il, "il")[target]
    ofiv = _np(summary.ofiv, "ofiv")[target]
    nonadd = np.asarray(summary.nonadditive)[target].astype(bool)
    if isinstance(order, str):
        if order not in ("ofiv", "il"):
            raise ValueError(f"order must be 'ofiv', 'il' or an index array, got {order!r}")
        idx = np.argsort(-(ofiv if order == "ofiv" else il), kind="stable")
    else:
        idx = _channel_index(order, K, "order")
    if max_channels is not None:
        if isinstance(max_channels, (bool, np.bool_)) \
                or not isinstance(max_channels, (int, np.integer)) or max_channels < 1:
            raise ValueError(f"max_channels must be None or an int >= 1, got {max_channels!r}")
        idx = idx[:int(max_channels)]
    if filters is not None:
        filters = _np(filters, "filters")
        if filters.ndim != 3 or filters.shape[0] != K or filters.shape[1] != 4:
            raise ValueError(f"filters must have shape ({K}, 4, w), got {filters.shape}")
    if channel_labels is not None and len(channel_labels) != K:
        raise ValueError(f"channel_labels must have {K} entries, got {len(channel_labels)}")
    if logo_scale not in ("own", "shared"):
        raise ValueError(f"logo_scale must be 'own' or 'shared', got {logo_scale!r}")
    n = len(idx)
    # each logo on its own scale: its tallest stack is written beside it
    own = filters is not None and logo_mode == "weight" and logo_scale == "own"

    sd = np.sqrt(np.maximum(il, 0.0))
    big = max(np.abs(fiv[:, idx]).max(), np.abs(ofiv[idx]).max(), sd[idx].max())
    scale = max_size / big if big > 0 else 0.0

    # channel labels: long ones wrapped at 60 characters; the label column is as wide as the
    # longest (measured), so a plain fig.savefig keeps them whole (they were cut at 1.6 inches)
    labels = ([textwrap.fill(str(channel_labels[k]), 60) for k in idx]
              if channel_labels is not None else None)
    pitch = 0.45 if filters is not None else 0.36      # inches per channel row
    fig = plt.figure(figsize=(4.0, pitch * n + 1.4))
    num_w = 0.42 if own else 0.0      # room for the "\u00b10.31" beside each logo (inches)
    # without labels the column only holds the logos' "\u00b1" numbers (it was 1.25 in blank)
    lab_w = 1.25 if labels else 0.1 + num_w
    if labels:
        r = fig.canvas.get_renderer()
        probe = fig.text(0, 0, "", fontsize=7)
        for t in labels:
            probe.set_text(t)
            lab_w = max(lab_w, probe.get_window_extent(r).width / fig.dpi + 0.15 + num_w)
        probe.remove()
    # column widths in inches: circles, logos, labels; margins for the "ch k" tick labels
    widths = [0.33 * (T + 2), 1.1 if filters is not None else 0.01, lab_w]
    left_in, right_in, wspace = 0.8, 0.1, 0.02
    width = left_in + right_in + sum(widths) * (1 + 2 * wspace / 3)
    fig.set_size_inches(width, pitch * n + 1.4)
    cat = getattr(summary, "category", None)
    flip = _flip_sentence(np.asarray(cat)[target], idx) if cat is not None else ""
    logos = ""
    if own:
        logos = (" Logos: centred filter weights, each on its own y scale, \u00b1 its tallest "
                 "stack (raw weight sizes do not compare across channels).")
    elif filters is not None and logo_mode == "weight":
        logos = " Logos: centred filter weights, all on one y scale."
    key = _footer(fig, f"red: positive, blue: negative; circle area ~ |value|, {_largest(big)}. "
                       f"IL: area ~ sqrt(IL), the FIV's s.d. across starts, on the same "
                       f"scale, and darker the larger; max IL shown {il[idx].max():.3g}. "
                       f"*: non-additive (GMM on IL)."
                       + (" Rows: channels by descending OFIV." if isinstance(order, str)
                          and order == "ofiv" else
                          " Rows: channels by descending IL." if isinstance(order, str) else "")
                       + flip + logos)
    # room at the bottom for the x label (0.55 in) and the key above the figure's lower edge
    bottom = 0.55 + key
    height = pitch * n + 0.85 + bottom
    fig.set_size_inches(width, height)
    gs = GridSpec(1, 3, width_ratios=widths, wspace=wspace, figure=fig, top=1 - 0.45 / height,
                  bottom=bottom / height, left=left_in / width, right=1 - right_in / width)
    ax = fig.add_subplot(gs[0])
    rows = np.arange(n)
    for t in range(T):
        _circles(ax, np.full(n, t), rows, fiv[t, idx], scale)
    sdv = sd[idx]
    dark = sdv / big if big > 0 else np.zeros_like(sdv)
    ax.scatter(np.full(n, T + 0.3), rows, s=scale * sdv, c=[str(0.85 - 0.75 * d) for d in dark],
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
        # "own" (default): each logo on its own scale, its tallest stack beside it
        # (on one scale a single large filter left every other logo a flat line); "shared":
        # one scale (the drawn filters' largest stacks), so a weak channel's letters are small
        mats = [filter_logo_matrix(filters[k], mode=logo_mode).T for k in idx]
        if logo_mode == "information":
            ylims = [(0.0, 2.0)] * n
        elif own:
            ylims = [_logo_extent(m) for m in mats]
            # a filter whose centred weights are rounding noise next to the others' (a dead
            # channel, ~1e-8) is drawn as zero, not blown up into a full-height motif
            top = max((hi - lo for lo, hi in ylims), default=0.0)
            dead = [hi - lo <= 1e-6 * top for lo, hi in ylims]
            mats = [np.zeros_like(m) if d else m for m, d in zip(mats, dead)]
            ylims = [(0.0, 0.0) if d else y for y, d in zip(ylims, dead)]
        else:
            ext = np.array([_logo_extent(m) for m in mats])
            ylims = [(float(ext[:, 0].min()), float(ext[:, 1].max()))] * n
        shared = ylims[0]                                   # the stacks' range, said below
        ylims = [(lo, hi) if hi > lo else (-1.0, 1.0) for lo, hi in ylims]
        # headroom: 12% of the range above the tallest stack and below the deepest one, so the
        # letters of neighbouring rows do not touch (at exactly 0..2 bits they did)
        ylims = [(lo - 0.12 * (hi - lo) if lo < 0 else lo, hi + 0.12 * (hi - lo))
                 for lo, hi in ylims]
        sub = gs[1].subgridspec(n, 1, hspace=0.08)
        for r, k in enumerate(idx):
            lax = fig.add_subplot(sub[r])
            drawn = np.zeros(np.shape(filters[k])) if own and not mats[r].any() else filters[k]
            plot_filter_logo(drawn, ax=lax, mode=logo_mode, ylim=ylims[r], ylabel=False,
                             xticks=False)                  # a dead filter: a flat line
            lax.set_yticks([])
            lax.spines["left"].set_visible(False)
            if own:   # the row's scale: its tallest stack above or below the line
                lo, hi = _logo_extent(mats[r])
                lax.text(1.03, 0.5, f"\u00b1{max(hi, -lo):.2g}",
                         transform=lax.transAxes, ha="left", va="center", fontsize=6,
                         color="0.3")
        if logo_mode == "information":
            what = "filter PWM (negatives\nclipped), bits 0..2"
        elif own:
            what = "filter weights, centred;\neach its own scale\n(\u00b1 tallest stack)"
        else:
            what = (f"filter weights, centred;\none scale: {shared[0]:.2g}..{shared[1]:.2g}")
        lax.set_xlabel(what, fontsize=7)
    lab = fig.add_subplot(gs[2])
    lab.set_ylim(n - 0.5, -0.5)
    lab.set_xlim(0, 1)
    lab.axis("off")
    if labels:
        for r, t in enumerate(labels):
            lab.text((0.1 + num_w) / lab_w, r, t, va="center", fontsize=7)
    if title is None:
        title = "FIVs of each start, IL and OFIV (* = non-additive)"
        if getattr(summary, "target_names", None) is not None or stored is not None:
            title += f": {summary.target_labels()[target]}"
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height)
    return fig


def plot_ofiv(ofiv, class_names=None, channel_order=None, ax=None, max_size=220.0, nonadditive=None,
              title="OFIV per class"):
    """Fig. 4a: one row of OFIV circles per class (red positive, blue negative, area ~ |OFIV|).

    Parameters
    ----------
    ofiv: (C, K) array or tensor, or an ``EnsembleSummary`` (from ``summarize``): its ``ofiv``,
        and its non-additive channels are starred unless ``nonadditive`` is given.
    class_names: optional C strings. Default: for a summary, its ``target_labels()`` (the
        stored ``target_names``, else the stored output indices "output 500", else "target 0",
        "target 1", ...); for an array, "target 0", "target 1", ...
    channel_order: optional non-empty array of distinct channel indices in [0, K) (columns);
        default 0..K-1. A new figure takes at most ``MAX_OFIV_COLUMNS`` (500) columns (more
        raise ValueError) and is 0.3 inch per column, at most ``MAX_FIGURE_INCHES`` (40) wide:
        beyond ~130 columns the circles shrink with the room and every k-th channel is
        labelled. On a given ``ax`` any number of columns is drawn, the circles and labels
        sized to that Axes' width.
    ax: optional Axes to draw on. Without it, the new figure gets a key at the bottom (the
        colours, the largest |OFIV| and the star), like :func:`plot_feature_importance`'s (for a
        summary with sign-flipping non-additive channels it says that their OFIV is the
        weighted mean of their positive FIVs only); on a given Axes the key is left out (the
        figure is the caller's to lay out).
    nonadditive: optional (C, K) bool; starred. None: a summary's ``nonadditive`` (none for an
        array); False: no stars.
    max_size: marker area (points^2) of the largest |OFIV| at 0.3 inch per column (scaled with
        the column width when columns are narrower); the others scale by area, down from it.
    title: the Axes' title.

    Returns
    -------
    matplotlib Figure, also when ``ax`` is given (then ``ax.figure``; the Axes is ``ax``, else
    ``fig.axes[0]``).
    """
    _check_ax(ax)
    import matplotlib.pyplot as plt

    from .summary import EnsembleSummary

    category = None
    if isinstance(ofiv, EnsembleSummary):
        if nonadditive is None:
            nonadditive = ofiv.nonadditive
        if class_names is None:
            class_names = ofiv.target_labels()
        category = getattr(ofiv, "category", None)
        ofiv = ofiv.ofiv
    if nonadditive is False:
        nonadditive = None
    ofiv = _np(ofiv, "ofiv")
    if ofiv.ndim != 2:
        raise ValueError(f"ofiv must have shape (C, K), got {ofiv.shape}")
    C, K = ofiv.shape
    n_cols = K if channel_order is None else len(np.atleast_1d(np.asarray(channel_order)))
    if n_cols > MAX_OFIV_COLUMNS and ax is None:
        raise ValueError(
            f"{n_cols} channels: more than MAX_OFIV_COLUMNS = {MAX_OFIV_COLUMNS} circles a row "
            f"would be unreadable dots in a {MAX_FIGURE_INCHES:.0f}-inch figure. Pass "
            f"channel_order= with at most {MAX_OFIV_COLUMNS} channels (e.g. the top ones by "
            f"|OFIV|), or draw the matrix as a heatmap")
    if C > MAX_OFIV_ROWS:
        raise ValueError(
            f"{C} classes: one row of circles per class would make a figure {0.55 * C:.0f} inches "
            f"tall. Draw a selection (plot_ofiv(ofiv[idx], class_names=...), at most "
            f"{MAX_OFIV_ROWS} rows), or the whole matrix as a heatmap")
    names = list(class_names) if class_names is not None else [f"target {c}" for c in range(C)]
    if len(names) != C:
        raise ValueError(f"class_names must have {C} entries, got {len(names)}")
    if nonadditive is not None:
        if hasattr(nonadditive, "detach"):
            nonadditive = _stats._tensor_to_numpy(nonadditive)
        nonadditive = np.asarray(nonadditive)
        if nonadditive.shape != (C, K):
            raise ValueError(f"nonadditive must have shape ({C}, {K}) like ofiv, got "
                             f"{nonadditive.shape}")
        nonadditive = nonadditive.astype(bool)
    idx = np.arange(K) if channel_order is None else _channel_index(channel_order, K,
                                                                     "channel_order")
    big = np.abs(ofiv[:, idx]).max()
    stars = nonadditive is not None and bool(nonadditive[:, idx].any())
    # 0.3 inch per channel, up to MAX_FIGURE_INCHES wide; beyond, the channels share that
    # width and the circles shrink with their pitch (x labels thinned to stay readable)
    fig_w = min(0.3 * len(idx) + 1.5, MAX_FIGURE_INCHES)
    col_in = min(0.3, (fig_w - 1.5) / len(idx))
    if ax is not None:  # the caller's Axes: the pitch its own width gives, not the cap's
        col_in = min(0.3, max(ax.get_window_extent().width / ax.figure.dpi / len(idx), 1e-3))
    if ax is None:
        fig, ax = plt.subplots(figsize=(fig_w, 0.55 * C + 1.0), layout="constrained")
        # the key at the bottom, in room added below the axes (constrained layout ignores it)
        key = _footer(fig, f"red: positive, blue: negative; circle area ~ |OFIV|, "
                           f"{_largest(big)}." + (" \N{BLACK STAR}: non-additive (GMM on IL)."
                                                  if stars else "")
                           + (_flip_sentence(category, idx) if category is not None else ""))
        w, h = fig.get_size_inches()
        fig.set_size_inches(w, h + key)
        fig.get_layout_engine().set(rect=(0, key / (h + key), 1, 1 - key / (h + key)))
    else:
        fig = ax.figure
    scale = max_size * (col_in / 0.3) ** 2 / big if big > 0 else 0.0
    for c in range(C):
        _circles(ax, np.arange(len(idx)), np.full(len(idx), c), ofiv[c, idx], scale)
        if nonadditive is not None:
            star = nonadditive[c, idx]
            ax.scatter(np.arange(len(idx))[star], np.full(star.sum(), c - 0.38), marker="*", s=30, c="k")
    ax.set_yticks(range(C))
    ax.set_yticklabels(names, fontsize=8)
    # labels at least their own width apart (~0.06 inch a digit at 6 pt, plus a gap)
    room = 0.06 * max(len(str(k)) for k in idx) + 0.04
    step = 1 if col_in >= 0.3 else max(1, int(np.ceil(room / col_in)))
    ax.set_xticks(range(0, len(idx), step))
    ax.set_xticklabels([str(k) for k in idx[::step]], fontsize=6)
    ax.set_xlabel("channel" if step == 1 else f"channel (every {_ordinal(step)} labelled)",
                  fontsize=8)
    ax.set_xlim(-0.7, len(idx) - 0.3)
    ax.set_ylim(C - 0.5, -0.7)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_similarity_matrices(matrices, class_names=None, vmin=-1.0, vmax=1.0, cmap="RdBu_r",
                             annotate=None):
    """Fig. 4b: class x class matrices side by side, one panel per entry of ``matrices``.

    Parameters
    ----------
    matrices: dict {title: (C, C) array}, drawn left to right in order.
    class_names: optional C strings (default: the target indices, from 0 like the channels).
    vmin, vmax, cmap: one colour scale shared by all panels (with one colour bar). Values
        beyond it saturate; the colour bar then has a pointed end on that side (``extend``).
    annotate: write each value in its cell (None: when C <= 12).

    Panels grow with C; class names are drawn when C <= 60 (x labels turned only when the
    longest is wider than its cell), under every panel and left of the first one only (the
    panels share the order). For hundreds of classes use
    :func:`plot_clustered_heatmap`.

    Returns
    -------
    matplotlib Figure (``fig.axes``: one Axes per matrix, then the colour bar).
    """
    import matplotlib.pyplot as plt

    if not isinstance(matrices, dict) or not matrices:
        raise ValueError("matrices must be a non-empty dict {title: (C, C) array}")
    mats = {k: _np(v, f"matrices[{k!r}]") for k, v in matrices.items()}
    C = next(iter(mats.values())).shape[0]
    for k, v in mats.items():
        if v.shape != (C, C):
            raise ValueError(f"matrices[{k!r}] has shape {v.shape}, expected ({C}, {C})")
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(C)]
    if len(names) != C:
        raise ValueError(f"class_names must have {C} entries, got {len(names)}")
    if annotate is None:
        annotate = C <= 12
    labels = C <= 60
    longest = max(len(n) for n in names)
    fontsize = 8 if C <= 20 else 6
    side = min(9.0, max(3.0, 0.32 * C))                      # inches per panel
    # x labels turned only when the longest (~0.6 em a character) would not fit its cell
    turn = labels and (0.6 * fontsize / 72 * longest > 0.8 * side / C)
    label_room = (0.075 * longest * fontsize / 8 + 0.2) if labels else 0.2
    # class names on the first panel's y axis only (the panels share the order): the label
    # room once, not once per panel
    fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats) + label_room
                                                    + 0.2 * (len(mats) - 1) + 0.8,
                                                    side + (label_room if turn else 0.3) + 0.4),
                             squeeze=False, layout="constrained")
    im = None
    for panel, (ax, (t, m)) in enumerate(zip(axes[0], mats.items())):
        im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap)
        ax.set_title(t, fontsize=9)
        if labels:
            ax.set_xticks(range(C))
            ax.set_yticks(range(C))
            ax.set_xticklabels(names, fontsize=fontsize, rotation=90 if turn else 0)
            ax.set_yticklabels(names if panel == 0 else [], fontsize=fontsize)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{C} classes", fontsize=8)
        if annotate:
            for i in range(C):
                for j in range(C):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color=_text_color(im.cmap(im.norm(m[i, j]))))
    # values beyond vmin / vmax saturate: the colour bar's pointed ends say there are some
    lo = min(float(m.min()) for m in mats.values()) < vmin
    hi = max(float(m.max()) for m in mats.values()) > vmax
    extend = "both" if lo and hi else "min" if lo else "max" if hi else "neither"
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, pad=0.02, extend=extend)
    return fig


# ------------------------------------------------------------------ channel -> input, class relationships
# (issue 6: adapters, channel_motifs, interaction, clustering)

def pwm_logo_matrix(pwm):
    """A (4, w) probability matrix scaled to information content (bits) for a logo.

    Returns
    -------
    numpy array (4, w): each column's probabilities times its information content.
    """
    p = _np(pwm, "pwm")
    if p.ndim != 2 or p.shape[0] != 4:
        raise ValueError(f"pwm must have shape (4, w), got {p.shape}")
    (p,) = _check_probabilities(_as_matrix_list([p], "pwm"), "pwm")  # finite, columns sum to 1
    return p * column_information(p)[None]


def plot_channel_logos(pwms, names=None, titles=None, ncols=4, width=2.6, height=1.2):
    """Channel PWMs as information-content logos (tangermeme ``plot_logo``), one panel each.

    Parameters
    ----------
    pwms: (C, 4, w) array or list of (4, w_c) probability matrices (e.g. ``ChannelMotifs.pwms``),
        or a :class:`deepresolve_captum.channel_motifs.ChannelMotifs` (its ``pwms``, titled with
        its ``channels`` unless ``names`` is given).
    names: C channel labels (panel titles; default 0..C-1).
    titles: optional C extra strings appended to the titles (e.g. the best TOMTOM match).
    ncols: int >= 1, panels per row (fewer when there are fewer pwms).
    width, height: size of one panel in inches (the figure is ``ncols`` panels wide).

    Each logo is the PWM's probabilities times its column's information content (y: bits,
    0..2, labelled on the first panel of each row); the x ticks are motif positions 1..w, each
    under the centre of its letters.

    Returns
    -------
    matplotlib Figure (``fig.axes``: the panels row by row; unused ones are hidden).
    """
    import matplotlib.pyplot as plt

    from .channel_motifs import ChannelMotifs

    if isinstance(pwms, ChannelMotifs):
        if names is None:
            names = pwms.channels
        pwms = pwms.pwms
    mats = [pwm_logo_matrix(p) for p in pwms]
    if not mats:
        raise ValueError("no pwms to draw")
    C = len(mats)
    names = list(names) if names is not None else [str(i) for i in range(C)]
    if len(names) != C:
        raise ValueError(f"names must have one entry per pwm ({C}), got {len(names)}")
    if titles is not None and len(titles) != C:
        raise ValueError(f"titles must have one entry per pwm ({C}), got {len(titles)}")
    if isinstance(ncols, (bool, np.bool_)) or not isinstance(ncols, (int, np.integer)) \
            or ncols < 1:
        raise ValueError(f"ncols must be an int >= 1 (panels per row), got {ncols!r}")
    ncols = min(int(ncols), C)
    nrows = int(np.ceil(C / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= C:
            ax.axis("off")
            continue
        _plot_logo(mats[i], ax, (0, 2))
        # ticks 1..w under the letters' centres, x limits snug around them, y in bits
        _logo_axes(ax, mats[i].shape[1], ylabel="bits" if i % ncols == 0 else None)
        t = f"channel {names[i]}"
        if titles is not None:
            t += f"\n{titles[i]}"
        ax.set_title(t, fontsize=8)
    fig.tight_layout()
    return fig


def plot_channel_attributions(attributions, channels=None, seq_idx=0, pwms=None, start=None,
                              end=None, seqlets=None, width=10.0, height=1.1, sharey=False):
    """Per-channel attributions of one sequence as logos, one row per channel.

    Parameters
    ----------
    attributions: (C, N, 4, L) from :func:`deepresolve_captum.adapters.channel_attributions`.
    channels: C labels, one per row of ``attributions`` (default 0..C-1), e.g. the channel indices
        passed to ``channel_attributions``; they also match the ``seqlets``' channel column. To
        draw some of the channels, select them from ``attributions`` (``attributions[[0, 2]]``).
    seq_idx: which of the N sequences.
    pwms: optional (C, 4, w) channel PWMs, drawn as a small logo left of each row (y: bits;
        x: motif positions counted from 1, while the sequence's positions count from 0, as
        the x labels say).
    start, end: the window of the sequence to draw (default all); the x ticks are positions in
        the sequence (``start`` .. ``end - 1``), each under its base's glyph.
    seqlets: optional DataFrame from :func:`deepresolve_captum.channel_motifs.channel_seqlets`
        (columns channel, example_idx, start, end): seqlets of this sequence are shaded. A
        seqlet goes on the row whose label in ``channels`` equals its ``channel`` value (matched
        by label, not by position), so make both with the same labels:
        ``channel_seqlets(attr, channels=top)`` with ``channels=top`` (``channel_seqlets(attr)``
        numbers the rows 0..C-1). Labels that match no row warn (UserWarning) and are not drawn.
    sharey: False (default): each row on its own y scale (a weak channel's glyphs fill its row);
        True: all rows on one scale (the strongest channel's), to compare channels. A row whose
        attributions are all exactly 0 says so in the row ("all attributions are 0"), on a
        plain -1..1 axis (or the shared one).
    width, height: the figure's width and the height of one row, in inches.

    Returns
    -------
    matplotlib Figure (``fig.axes``: row by row, each channel's PWM logo, if ``pwms``, then its
    attributions).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    a = _np(attributions, "attributions")
    if a.ndim != 4 or a.shape[2] != 4:
        raise ValueError(f"attributions must have shape (C, N, 4, L), got {a.shape}")
    C, N, _, L = a.shape
    if not 0 <= seq_idx < N:
        raise ValueError(f"seq_idx must be in [0, {N})")
    from .channel_motifs import _plain_labels

    channels = _plain_labels(channels) if channels is not None else list(range(C))
    if len(channels) != C:
        raise ValueError(
            f"channels must have one label per channel of attributions ({C}), got "
            f"{len(channels)}: {channels!r}. It labels the rows; to draw some channels only, "
            f"select them from attributions first (e.g. attributions[[0]])")
    if pwms is not None and len(pwms) != C:
        raise ValueError(f"pwms must have one matrix per channel of attributions ({C}), got "
                         f"{len(pwms)}")
    start = 0 if start is None else int(start)
    end = L if end is None else int(end)
    if not 0 <= start < end <= L:
        raise ValueError(f"start and end must satisfy 0 <= start < end <= {L}, got {start}, {end}")
    with_pwm = pwms is not None
    # tick positions in the sequence, drawn at the glyphs' centres (plot_logo puts the glyph of
    # window position p over [p, p + 0.95])
    loc = MaxNLocator(nbins=max(2, int(width)), steps=[1, 2, 5, 10], integer=True)
    ticks = [int(t) for t in loc.tick_values(start, end - 1) if start <= t <= end - 1]
    fig, axes = plt.subplots(C, 2 if with_pwm else 1, figsize=(width, height * C + 0.4),
                             squeeze=False,
                             gridspec_kw={"width_ratios": [1, 6]} if with_pwm else None)
    if seqlets is not None and len(seqlets):
        # seqlets are matched to rows by label: a label not in ``channels`` has no row (e.g.
        # channel_seqlets(attr) numbers rows 0..C-1 while channels=[30, 5, 9]): say so
        labels = list(dict.fromkeys(seqlets["channel"].tolist()))
        stray = [c for c in labels if c not in channels]
        if stray:
            import warnings
            warnings.warn(
                f"seqlets of channel label(s) {stray} match no row (channels={channels!r}) and "
                f"are not shaded. Seqlets are matched to rows by their 'channel' column: make "
                f"them with the same labels, channel_seqlets(attributions, channels=channels)",
                UserWarning, stacklevel=2)
    peaks = [np.abs(a[i, seq_idx, :, start:end]).max() for i in range(C)]
    ylims = []
    for i in range(C):
        x = a[i, seq_idx, :, start:end]
        if peaks[i] == 0:          # all zero: a plain -1..1 axis (not a 1e-6 'offset' scale)
            ylims.append(None)
            continue
        lo, hi = _logo_extent(x)    # the stacks plot_logo draws (hypothetical attributions
        lim = max(peaks[i], hi) * 1.1   # stack up to 4 letters a column): none is cut off
        ylims.append((min(-lim * 0.3, x.sum(0).min() * 1.1, lo * 1.1), lim))
    drawn = [y for y in ylims if y is not None]
    if sharey and drawn:
        ylims = [(min(lo for lo, _ in drawn), max(hi for _, hi in drawn))] * C
    ylims = [y if y is not None else (-1.0, 1.0) for y in ylims]
    for i in range(C):
        ax = axes[i, -1]
        _plot_logo(a[i, seq_idx, :, start:end], ax, ylims[i])
        if peaks[i] == 0:
            ax.text(0.5, 0.5, "all attributions are 0", transform=ax.transAxes, ha="center",
                    va="center", fontsize=7, color=GREY)
            if not sharey or not drawn:
                ax.set_yticks([0])
        ax.set_xticks([t - start + 0.475 for t in ticks])
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_ylabel(f"ch {channels[i]}", fontsize=8)
        ax.tick_params(labelsize=6)
        if seqlets is not None and len(seqlets):
            sel = seqlets[(seqlets["channel"] == channels[i])
                          & (seqlets["example_idx"] == seq_idx)]
            for _, r in sel.iterrows():
                # tangermeme's plot_logo draws position p's glyph over [p, p + 0.95] (not
                # centred on p), so the half-open seqlet [start, end) covers [start, end)
                # zorder 0: under the letters (drawn over them it changed their colours)
                if r["end"] > start and r["start"] < end:
                    ax.axvspan(r["start"] - start, r["end"] - start, color="gold", alpha=0.25,
                               lw=0, zorder=0)
        if with_pwm:   # in bits, positions 1..w (the sequence's count from 0: both said)
            m = pwm_logo_matrix(pwms[i])
            _plot_logo(m, axes[i, 0], (0, 2))
            _logo_axes(axes[i, 0], m.shape[1], ylabel="bits")
    if with_pwm:
        axes[-1, 0].set_xlabel("motif position (from 1)", fontsize=8)
    axes[-1, -1].set_xlabel(f"position in sequence {seq_idx} (from 0)", fontsize=8)
    fig.tight_layout()
    return fig


#: plot_interaction's bars (none, a, b, both): greys and hatches, not the red / blue that
#: mean positive / negative in every other figure
INTERACTION_STYLE = (("#d9d9d9", ""), ("#a6a6a6", "///"), ("#a6a6a6", "\\\\\\"),
                     ("#6e6e6e", "xxx"))


def plot_interaction(result, ax=None, names=None):
    """Bars of the model's mean output for none / a / b / both of an
    :class:`deepresolve_captum.interaction.InteractionResult`, titled with its logic.

    A probability is drawn as bars from 0 with each condition's SEM. A logit has no natural
    zero (a bar down to -25 for 'none' looked like the largest effect): 'none' is a point with
    its SEM and a dashed line, and the bars of a, b and both start at that level, so their
    length is the change from 'none', with its paired SEM (the table's ``effect_sem``).

    The conditions are told apart by grey shades and hatches (a: ``///``, b: ``\\\\\\``,
    both: ``xxx``), not by red / blue, which mean positive / negative elsewhere. Condition
    names (``names``, default the motifs) are wrapped at 14 characters; a new figure widens
    with the longest line.

    Parameters
    ----------
    result: an ``InteractionResult``.
    ax: optional Axes to draw on.
    names: optional (name of a, name of b) for the x labels.

    Returns
    -------
    matplotlib Axes (the figure is ``ax.figure``).
    """
    import textwrap

    import matplotlib.pyplot as plt

    _check_ax(ax)
    if names is not None and (isinstance(names, (str, bytes)) or len(names) != 2):
        raise ValueError(f"names must be two names (of a and of b), got {names!r}")
    t = result.table
    a, b = names if names is not None else (result.motifs["a"], result.motifs["b"])
    labels = [textwrap.fill(str(x), 14, break_long_words=True)
              for x in ["none", a, b, "both"]]
    longest = max(len(line) for x in labels for line in x.split("\n"))
    if ax is None:   # each of the 4 slots at least as wide as its longest line (7 pt ~ 0.06 in)
        width = max(3.0, 1.0 + 4 * (0.065 * longest + 0.15))
        _, ax = plt.subplots(figsize=(width, 2.8), layout="constrained")
    colors = [c for c, _ in INTERACTION_STYLE]
    hatches = [h for _, h in INTERACTION_STYLE]
    output = result.settings.get("output", "output")
    mean, sem = t["mean"].values, t["sem"].values
    if output == "logit":
        base = mean[0]
        ax.axhline(base, color=GREY, lw=0.8, ls="--", zorder=0)
        ax.errorbar([0], [base], yerr=[sem[0]], fmt="o", color=GREY, capsize=3)
        bars = ax.bar(range(1, 4), mean[1:] - base, bottom=base,
                      yerr=t["effect_sem"].values[1:], color=colors[1:], capsize=3,
                      edgecolor="k", linewidth=0.6)
        for bar, h in zip(bars, hatches[1:]):
            bar.set_hatch(h)
        ax.set_ylabel("logit (bars: change from none)", fontsize=8)
    else:
        bars = ax.bar(range(4), mean, yerr=sem, color=colors, capsize=3, edgecolor="k",
                      linewidth=0.6)
        for bar, h in zip(bars, hatches):
            bar.set_hatch(h)
        ax.set_ylabel(output, fontsize=8)
    ax.set_xticks(range(4))
    ax.set_xticklabels(labels, fontsize=7)
    ctx = result.motifs.get("context") or []
    sub = f" (+{', '.join(ctx)} in all)" if ctx else ""
    ax.set_title(f"{result.logic}{sub}\ninteraction {result.interaction:+.2f}", fontsize=8)
    ax.tick_params(labelsize=7)
    return ax


def _block_means(s, order, n):
    """Means of the n x n blocks of ``s[np.ix_(order, order)]`` (the last block row and column
    hold the C mod n classes left over, if any), as a float32 (B, B) array, B = ceil(C / n):
    summed in float64, stored in float32 for display (matplotlib keeps a copy of its own).

    ``s`` (any real dtype, e.g. float32 or a memmap) is read n rows at a time, each row block
    checked for NaN / inf, and never copied or converted whole: beside the result the call holds
    one (n, C) block of rows in ``s``'s dtype and a few float64 vectors of length C."""
    C = len(order)
    starts = np.arange(0, C, n)
    counts = np.diff(np.append(starts, C)).astype(np.float64)
    out = np.empty((len(starts), len(starts)), dtype=np.float32)
    for b, r0 in enumerate(starts):
        rows = s[np.sort(order[r0:r0 + n])]     # sorted: a memmap is read forward; same sum
        if not np.all(np.isfinite(rows)):
            raise ValueError("similarity contains NaN or inf")
        colsum = rows.sum(axis=0, dtype=np.float64)[order]          # in clustered order
        out[b] = np.add.reduceat(colsum, starts) / (counts[b] * counts)
    return out


def plot_clustered_heatmap(similarity, clustering=None, class_names=None, vmin=-1.0, vmax=1.0,
                           cmap="RdBu_r", title=None, figsize=None, max_cells=None):
    """A class x class matrix ordered by hierarchical clustering, with its dendrogram on top.

    Parameters
    ----------
    similarity: (C, C) matrix (array, tensor or ``np.memmap``), drawn as given.
    clustering: a :class:`deepresolve_captum.clustering.ClusterResult` (computed with the
        defaults if None: ``similarity`` must then be symmetric up to rounding, 1e-6, as
        :func:`deepresolve_captum.clustering.hierarchical_clustering` requires).
    class_names: optional C labels, drawn up to 80 classes. Above 80 they are not drawn (the
        labels would overlap; a UserWarning says so) and the axes are positions in the
        clustered order, as the x label says.
    vmin, vmax, cmap: colour scale.
    title: optional title above the dendrogram.
    figsize: optional (width, height) in inches; default 0.22 inch per class up to 80 classes,
        10 x 10.4 beyond.
    max_cells: draw up to this many classes cell by cell (default ``HEATMAP_MAX_CELLS``,
        2,000); above it the image shows block means (see Notes).

    Returns
    -------
    matplotlib Figure (``fig.axes``: the dendrogram, the heatmap, the colour bar).

    Notes
    -----
    Beyond ``max_cells`` classes the matrix has many more rows than the heatmap has pixels
    (~640 at the figure's 100 dpi, ~960 at ``save_figure``'s 150), so each colour is the **mean
    of an n x n block of classes** in clustered order, n = ceil(C / (max_cells // 2)): at most
    1,000 blocks a side by default (6 x 6 classes at 6,000 classes, 22 x 22 at 21,907; the last
    block row and column hold the classes left over; a block on the diagonal includes the
    classes' similarities with themselves). The x label says so. The axes stay in
    class positions: the dendrogram and the cluster lines are per class, as below the limit.
    The matrix is then read in blocks of n rows as given (float32, float64 or a memmap: not
    converted or copied whole; NaN or inf is refused, as below the limit): drawing and saving a
    21,907-class float32 matrix (1.9 GB) took ~2 s and ~100 MB beside it, most of that
    matplotlib's own at 150 dpi (drawn whole, 6,000 classes took +2.5 GB and 21,907 ran out of
    24 GB). Up to ``max_cells`` the matrix is copied to float64 and reordered whole, and
    matplotlib shrinks the C x C image itself (~300 MB to build and save at 2,000 classes). With
    ``clustering=None`` the clustering itself needs ~8 C^2 bytes
    (:func:`deepresolve_captum.clustering.hierarchical_clustering`): pass one to avoid that.
    """
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    from .clustering import hierarchical_clustering

    limit = HEATMAP_MAX_CELLS if max_cells is None else max_cells
    if isinstance(limit, (bool, np.bool_)) or not isinstance(limit, (int, np.integer)) \
            or limit < 2:
        raise ValueError(f"max_cells must be None or an int >= 2, got {max_cells!r}")
    raw = _stats._tensor_to_numpy(similarity) if hasattr(similarity, "detach") else similarity
    raw = np.asarray(raw)                   # an ndarray or memmap as it is (no copy)
    if raw.ndim != 2 or raw.shape[0] != raw.shape[1]:
        raise ValueError(f"similarity must be a square (C, C) matrix, got shape {raw.shape}")
    blocks = raw.shape[0] > limit
    if blocks:   # read in row blocks below, in its own dtype
        s = raw if raw.dtype.kind in "fiub" else np.asarray(raw, dtype=np.float64)
    else:
        s = _np(raw, "similarity")
    if clustering is None:
        clustering = hierarchical_clustering(s)
    C = s.shape[0]
    if len(clustering.order) != C:
        raise ValueError(f"clustering is of {len(clustering.order)} classes, the similarity of {C}: "
                         "pass the clustering of this matrix")
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    if len(names) != C:
        raise ValueError(f"class_names must have {C} entries, got {len(names)}")
    if class_names is not None and C > 80:
        import warnings
        warnings.warn(f"class_names are not drawn above 80 classes ({C} here): the axes are "
                      f"positions in the clustered order (clustering.order maps them to "
                      f"classes). Draw a selection of classes to see their names",
                      UserWarning, stacklevel=2)
    order = np.asarray(clustering.order)
    # Labelled (C <= 80): 0.22 inch per class. Beyond, labels are dropped and the figure keeps
    # a fixed size (a 919-class matrix at 0.22 in/class was 204 inches: 20 GB to save at 150 dpi).
    size = figsize or ((max(3.5, 0.22 * C + 2.2), max(3.8, 0.22 * C + 2.6)) if C <= 80
                       else (10.0, 10.4))
    fig = plt.figure(figsize=size)
    ax_d = fig.add_axes([0.18, 0.80, 0.64, 0.15])
    ax_h = fig.add_axes([0.18, 0.10, 0.64, 0.68])
    ax_c = fig.add_axes([0.84, 0.10, 0.03, 0.68])
    if C > 1:
        dendrogram(clustering.linkage, ax=ax_d, no_labels=True, color_threshold=None,
                   link_color_func=lambda k: GREY)
    ax_d.axis("off")
    note = ""
    if blocks:
        n = -(-C // (limit // 2))
        img = _block_means(s, order, n)
        nb = img.shape[0]
        # block b covers positions [b n, (b + 1) n); the last one is cut at C by the limits
        im = ax_h.imshow(img, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto",
                         interpolation="nearest", extent=(-0.5, nb * n - 0.5, nb * n - 0.5, -0.5))
        ax_h.set_xlim(-0.5, C - 0.5)
        ax_h.set_ylim(C - 0.5, -0.5)
        rest = C - (nb - 1) * n
        note = (f"colours: means of {n} \u00d7 {n} blocks of classes ({nb} a side"
                + (f", the last {rest} wide" if rest != n else "") + "), not single pairs")
    else:
        im = ax_h.imshow(s[np.ix_(order, order)], vmin=vmin, vmax=vmax, cmap=cmap,
                         aspect="auto", interpolation="nearest")
    # labels scale with the room per class (half the pitch, in points: ~6 pt at 50 classes in
    # the default size), at most 7 pt, at least 4
    pitch = min(0.64 * fig.get_figwidth(), 0.68 * fig.get_figheight()) * 72 / C
    fs = min(7.0, max(4.0, 0.5 * pitch))
    if C <= 80:
        ax_h.set_xticks(range(C))
        ax_h.set_yticks(range(C))
        ax_h.set_xticklabels([names[i] for i in order], fontsize=fs, rotation=90)
        ax_h.set_yticklabels([names[i] for i in order], fontsize=fs)
        if note:
            ax_h.set_xlabel(note, fontsize=7)
    else:  # the ticks are positions in the clustered order, not class indices: say so
        ax_h.set_xlabel(f"{C} classes in clustered order (position, not class index; "
                        "clustering.order maps positions to classes; deepresolve run: "
                        "run.json's similarity_order)"
                        + (f"\n{note}" if note else ""), fontsize=7)
    if clustering.labels is not None:
        lab = clustering.labels[order]
        cuts = np.flatnonzero(lab[1:] != lab[:-1]) + 0.5
        if blocks:   # the same lines, as two collections (thousands of cuts stay cheap)
            if cuts.size:
                ax_h.hlines(cuts, -0.5, C - 0.5, color="k", lw=0.8)
                ax_h.vlines(cuts, -0.5, C - 0.5, color="k", lw=0.8)
        else:
            for k in cuts:
                ax_h.axhline(k, color="k", lw=0.8)
                ax_h.axvline(k, color="k", lw=0.8)
    fig.colorbar(im, cax=ax_c)
    if title:
        ax_d.set_title(title, fontsize=9)
    return fig


def plot_association_index(df, ax=None, max_labels=60):
    """The paper's Fig. 8b: for each row class, bars up for its strong positive similarities
    (``n_positive``) and down for its negative ones (``n_negative``), in the DataFrame's order.

    Parameters
    ----------
    df: DataFrame from :func:`deepresolve_captum.clustering.association_index`.
    max_labels: write class names on the x axis only up to this many classes. Beyond it the
        x label says "N classes, in the table's order", and the bars are full width without
        edges (drawn as one filled step outline per sign): at ~1 pixel per class, gapped bars
        left white stripes that looked like groups.
    ax: optional Axes; without it a new figure 0.18 inch per class, at most
        ``MAX_FIGURE_INCHES`` (40) wide (more classes share that width, as thinner bars).

    Returns
    -------
    matplotlib Axes (its figure is ``ax.figure``).
    """
    _check_ax(ax)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for col in ("n_positive", "n_negative", "name"):
        if col not in df.columns:
            raise ValueError(f"df lacks column {col!r} (use clustering.association_index)")
    n = len(df)
    own_figure = ax is None
    if ax is None:   # 0.18 inch per class, at most MAX_FIGURE_INCHES wide (then bars share it);
        # constrained: side margins of a fraction of an inch (the default 12.5% / 10% of a
        # 40-inch figure left 5 and 4 inches blank)
        _, ax = plt.subplots(figsize=(min(max(4.0, 0.18 * n + 1.5), MAX_FIGURE_INCHES), 2.8),
                             layout="constrained")
    x = np.arange(n)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # counts
    # signed: -neg of an unsigned count column would wrap around (uint32 -> 4e9)
    pos = np.asarray(df["n_positive"].values, dtype=np.int64)
    neg = np.asarray(df["n_negative"].values, dtype=np.int64)
    if n <= max_labels:
        ax.bar(x, pos, color=RED, label="> upper quantile")
        ax.bar(x, -neg, color=BLUE, label="< lower quantile")
    else:   # full-width bars, no edges, no seams: one step outline per sign
        edges = np.arange(n + 1) - 0.5
        ax.stairs(pos, edges, fill=True, color=RED, lw=0, label="> upper quantile")
        ax.stairs(-neg, edges, fill=True, color=BLUE, lw=0,
                  label="< lower quantile")
        ax.set_xlim(-0.5 - 0.005 * n, n - 0.5 + 0.005 * n)
    ax.axhline(0, color="k", lw=0.6)
    if n <= max_labels:
        ax.set_xticks(x)
        ax.set_xticklabels(df["name"].values, rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{n} classes, in the table's order", fontsize=8)
    up, lo = df.attrs.get("upper_threshold"), df.attrs.get("lower_threshold")
    if up is not None:
        ax.set_ylabel(f"# similarities\n> {up:.2f} / < {lo:.2f}", fontsize=8)
    if n <= max_labels:
        ax.legend(fontsize=7, frameon=False)
    elif not own_figure:   # a caller's Axes: its title may sit above it; the legend inside
        ax.legend(fontsize=7, frameon=True, loc="upper right")
    else:   # the bars fill the axes: the legend above them, not over the data
        ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1), ncol=2,
                  borderaxespad=0.2)
    ax.tick_params(labelsize=7)
    return ax


def plot_bicluster(result, row_names=None, column_names=None, vmin=-1.0, vmax=1.0,
                   cmap="RdBu_r", ax=None):
    """The block of a :class:`deepresolve_captum.clustering.BiclusterResult` with rows and
    columns grouped by bicluster (the paper's Fig. 8a). Names index all classes.

    Up to 80 rows (columns) are labelled one by one: with ``row_names`` (``column_names``), or
    without names with their class indices (``result.rows[result.row_order]``, likewise for
    columns). Beyond 80, names label every k-th row (column), at most 80, and the y (x) label
    says which; without names the ticks are positions in the block, and the y label (rows) or
    x label (columns) says so.

    Parameters
    ----------
    result: a ``BiclusterResult``.
    row_names, column_names: optional sequences naming all classes (indexed by class).
    vmin, vmax, cmap: colour scale.
    ax: optional Axes to draw on.

    Returns
    -------
    matplotlib Axes (its figure, with the colour bar, is ``ax.figure``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    b = result.ordered_block
    _check_ax(ax)
    # each list names the classes of its own axis (a rectangular block given directly has
    # rows 0..R-1 and columns 0..Q-1)
    for what, names, used in (("row_names", row_names, result.rows),
                              ("column_names", column_names, result.columns)):
        n_classes = int(np.max(used, initial=-1)) + 1
        if names is not None and len(names) < n_classes:
            raise ValueError(f"{what} must name all classes (index {n_classes - 1} is used), "
                             f"got {len(names)} names")
    if ax is None:  # 0.2 inch per labelled row/column; a fixed size beyond 80
        w = max(3.0, 0.2 * b.shape[1] + 1.5) if b.shape[1] <= 80 else 10.0
        h = max(3.0, 0.2 * b.shape[0] + 1.0) if b.shape[0] <= 80 else 10.0
        _, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(b, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto", interpolation="nearest")
    rl = result.row_labels[result.row_order]
    cl = result.column_labels[result.column_order]
    for k in np.flatnonzero(rl[1:] != rl[:-1]):
        ax.axhline(k + 0.5, color="k", lw=0.8)
    for k in np.flatnonzero(cl[1:] != cl[:-1]):
        ax.axvline(k + 0.5, color="k", lw=0.8)
    rows = result.rows[result.row_order]
    cols = result.columns[result.column_order]
    # up to 80 rows (columns) each gets a tick: its name, or its class index without names.
    # Beyond 80, with names every k-th is named (at most 80); without names the ticks are
    # positions in the block, and that axis' label says so (rows: the y label, columns: x).
    for axis, cls, names, what in ((ax.yaxis, rows, row_names, "rows"),
                                   (ax.xaxis, cols, column_names, "columns")):
        n = len(cls)
        rot = 90 if what == "columns" else 0
        if n <= 80:
            axis.set_ticks(range(n))
            axis.set_ticklabels([names[i] if names is not None else str(i) for i in cls],
                                fontsize=6, rotation=rot)
        elif names is not None:
            k = -(-n // 80)
            pos = np.arange(0, n, k)
            axis.set_ticks(pos)
            axis.set_ticklabels([names[cls[p]] for p in pos], fontsize=6, rotation=rot)
            axis.set_label_text(f"every {_ordinal(k)} of {n} {what} named", fontsize=7)
        else:
            axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            axis.set_label_text(f"{what}: positions in bicluster order, not class indices "
                                f"(result.{what} maps them to classes)", fontsize=7)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return ax
