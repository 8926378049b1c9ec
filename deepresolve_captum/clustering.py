"""Class-relationship toolkit for multi-task models: clustering the class x class matrices.

Beside DeepResolve's class similarity (Pearson of the non-negative OFIVs,
:func:`deepresolve_captum.similarity.class_similarity`) the paper sets the label correlation, the
last-layer weights and the signed OFIV correlation (Fig. 7); it then bi-clusters a block of the
similarity matrix (TFs / histone marks x DNase experiments, Fig. 8a) and collapses it to an
*association index* (Fig. 8b): for each row class, how many of its similarities to a column group
are above the 85% and below the 15% quantile.

* :func:`class_relationships` -- the four matrices in one dict.
* :func:`hierarchical_clustering` -- scipy linkage on the distance 1 - similarity; leaf order and
  flat clusters.
* :func:`bicluster` -- scikit-learn spectral co-clustering / biclustering of a rows x columns
  block.
* :func:`association_index` -- the paper's Fig. 8b counts, as a DataFrame.

Shapes: C classes; similarity matrices are (C, C) numpy arrays with values in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numbers
import operator

import numpy as np
import pandas as pd

from . import _stats
from .similarity import (_row_ranges, class_similarity, label_correlation,
                         signed_ofiv_correlation, weight_cosine)

__all__ = ["class_relationships", "hierarchical_clustering", "ClusterResult", "bicluster",
           "BiclusterResult", "association_index", "OPTIMAL_ORDERING_MAX"]


def _square(similarity, name="similarity", copy=True):
    """A (C, C) numpy matrix: float64 and checked finite, or with ``copy=False`` any float
    matrix as given (float32 or a memmap stay so; the caller checks the values block by block)."""
    if hasattr(similarity, "detach"):   # a tensor; float16 / bfloat16 as float32
        similarity = _stats._tensor_to_numpy(similarity)
    s = np.asarray(similarity)
    if copy or not np.issubdtype(s.dtype, np.floating):
        s = np.asarray(s, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise ValueError(f"{name} must be a square (C, C) matrix, got shape {s.shape}")
    if copy and not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or inf")
    return s


def _index(idx, C, name):
    if idx is None:
        return np.arange(C)
    a = np.asarray(idx)
    if a.dtype == bool:
        if a.shape != (C,):
            raise ValueError(f"{name}: a boolean mask must have length {C}")
        a = np.flatnonzero(a)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-d array of class indices or a mask")
    if a.min() < 0 or a.max() >= C:
        raise ValueError(f"{name}: class index out of range [0, {C})")
    if len(np.unique(a)) != len(a):
        raise ValueError(f"{name} has repeated class indices")
    return a.astype(int)


def class_relationships(ofiv=None, labels=None, weight=None):
    """The paper's class x class comparisons, for whichever inputs are given.

    Parameters
    ----------
    ofiv: (C, K) OFIVs (``EnsembleSummary.ofiv``) -> ``"deepresolve"`` (class similarity) and
        ``"signed_ofiv"`` (Pearson of the signed OFIVs).
    labels: (N, C) labels -> ``"labels"`` (label correlation).
    weight: (C, H) last-layer weights (e.g. ``model.fc2.weight``) -> ``"weights"`` (row cosine).

    Returns
    -------
    dict {name: (C, C) numpy array}, in the order above.

    Memory: the results (float64, 8 C^2 bytes each: 3.8 GB at 21,907 classes; ``"deepresolve"``
    is float32 for float32 OFIVs) and, while the label correlation runs, one float64 chunk of the
    labels; no other C x C temporaries.
    """
    # the class counts are compared before anything is computed: with DeepSEA's 4.4 M label
    # rows, the label correlation took a while only to be refused (shapes of the wrong rank
    # are left to each function, which says what it expects)
    sizes = {}
    for name, x, axis in (("ofiv rows", ofiv, 0), ("labels columns", labels, 1),
                          ("weight rows", weight, 0)):
        try:
            shape = np.shape(x) if x is not None else ()
        except ValueError:          # a ragged list: its function says what is wrong
            shape = ()
        if len(shape) == 2:
            sizes[name] = shape[axis]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the inputs describe different numbers of classes: {sizes}")
    out = {}
    if ofiv is not None:
        out["deepresolve"] = class_similarity(ofiv)
        out["signed_ofiv"] = signed_ofiv_correlation(ofiv)
    if labels is not None:
        out["labels"] = label_correlation(labels)
    if weight is not None:
        out["weights"] = weight_cosine(weight)
    if not out:
        raise ValueError("give at least one of ofiv, labels, weight")
    sizes = {k: v.shape[0] for k, v in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the inputs describe different numbers of classes: {sizes}")
    return out


@dataclass
class ClusterResult:
    """Result of :func:`hierarchical_clustering`.

    Attributes
    ----------
    linkage: numpy (C - 1, 4), scipy linkage matrix.
    order: numpy (C,), leaf order (rows/columns of a clustered heatmap).
    labels: numpy (C,) int flat cluster of each class (1..n), or None if no cut was asked for.
    condensed_distance: numpy (C (C - 1) / 2,) float64, the distance 1 - similarity that was
        clustered, in scipy's condensed form (half the memory of the square matrix).
    distance: numpy (C, C), the same as a square matrix, built on each access.
    settings: dict.
    """
    linkage: np.ndarray
    order: np.ndarray
    labels: np.ndarray | None
    condensed_distance: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def distance(self):
        from scipy.spatial.distance import squareform
        if self.condensed_distance.size == 0:
            return np.zeros((len(self.order), len(self.order)))
        return squareform(self.condensed_distance, checks=False)


def _condensed_distance(s):
    """Checks a square similarity and returns the condensed ``1 - (S + S^T) / 2`` (clipped at 0),
    in row blocks: no C x C temporary (a float32 S is read as it is, not copied to float64).
    Returns (condensed float64 (C (C - 1) / 2,), largest |S|, largest |S - S^T|)."""
    C = s.shape[0]
    out = np.empty(C * (C - 1) // 2, dtype=np.float64)
    top = asym = 0.0
    pos = 0
    for r0, r1 in _row_ranges(C):
        rows = np.asarray(s[r0:r1], dtype=np.float64)
        if not np.all(np.isfinite(rows)):
            raise ValueError("similarity contains NaN or inf")
        cols = np.asarray(s[:, r0:r1], dtype=np.float64).T          # (S^T)[r0:r1]
        top = max(top, float(np.abs(rows).max()))
        asym = max(asym, float(np.abs(rows - cols).max()))
        sym = rows + cols                                           # a new block: S stays as given
        sym *= -0.5
        sym += 1.0                                                  # 1 - (S + S^T) / 2
        np.clip(sym, 0.0, None, out=sym)
        for i in range(r0, r1):
            n = C - 1 - i
            out[pos:pos + n] = sym[i - r0, i + 1:]
            pos += n
    return out, top, asym


def _as_index(value, name, lo, hi):
    """``value`` as an int in [lo, hi]: an int, a numpy integer or a 0-d integer tensor or array
    (what ``argmax`` returns); a bool (``True``, ``np.True_``, a bool tensor), a float or
    anything with more than 0 dimensions (``torch.tensor([3])``) is refused, with the value
    shown."""
    dtype = getattr(value, "dtype", None)
    boolean = isinstance(value, (bool, np.bool_)) or (
        dtype is not None and ("bool" in str(dtype)))
    try:
        v = (None if boolean or getattr(value, "ndim", 0) != 0
             or not hasattr(value, "__index__") else operator.index(value))
    except TypeError:
        v = None
    if v is None or not lo <= v <= hi:
        bounds = f"[{lo}, {hi + 1})" if lo == 0 else f"[{lo}, {hi}]"
        raise ValueError(f"{name} must be an int in {bounds}, got {value!r}")
    return v


def _as_distance(value):
    """``hierarchical_clustering``'s ``threshold`` as a float in [0, 2]: a real number (int or
    float, numpy's too) or a 0-d array or tensor of one. A bool (``True`` read as 1.0), a string
    (``'0.5'``), a complex number or anything with more than 0 dimensions is refused."""
    dtype = str(getattr(value, "dtype", ""))
    real = (isinstance(value, numbers.Real) or (
        getattr(value, "ndim", None) == 0 and any(k in dtype for k in ("int", "float")))) \
        and not isinstance(value, (bool, np.bool_)) and "bool" not in dtype \
        and "complex" not in dtype
    v = float(value) if real else None
    if v is None or not (np.isfinite(v) and 0 <= v <= 2):
        raise ValueError(f"threshold is a distance 1 - similarity, a number in [0, 2]; got "
                         f"{value!r}")
    return v


def _check_finite(s, name="similarity"):
    """Raise if the square ``s`` holds NaN or inf; read in row blocks (no C x C temporary)."""
    for r0, r1 in _row_ranges(s.shape[0]):
        if not np.all(np.isfinite(s[r0:r1])):
            raise ValueError(f"{name} contains NaN or inf")


def _linear_quantiles(pool, qs, doubled=False):
    """``np.quantile(P, q)`` (method ``"linear"``, in float64) for each q of ``qs``, where P is
    ``pool`` or, with ``doubled``, every value of ``pool`` twice -- from the order statistics
    alone: ``pool`` (1-D, any real dtype) is partitioned in place, nothing is copied. Follows
    numpy's own steps (virtual index (n - 1) q, gamma, and its lerp), so the thresholds are
    numpy's to the bit (tests compare the two); a float32 pool gives what its float64 copy would.
    One exception, in numpy too: with both 0.0 and -0.0 in the pool, which one a partition puts
    at a rank is arbitrary, so a zero threshold may come out with either sign (equal under ==).
    """
    n = 2 * pool.size if doubled else pool.size
    steps = []
    for q in qs:
        weak = type(q) in (int, float)
        v = np.asanyarray((n - 1) * np.asanyarray(q))          # numpy's virtual index
        if v >= n - 1:
            i0 = i1 = n - 1
            prev = -1                                           # numpy's index of the last value
        else:
            i0 = prev = int(np.floor(v))
            i1 = i0 + 1
        gamma = np.asanyarray(v - np.asarray(prev, dtype=np.intp), dtype=v.dtype)
        steps.append((i0, i1, float(gamma) if weak else gamma))
    rank = (lambda i: i // 2) if doubled else (lambda i: i)     # P sorted = pool sorted, twice
    pool.partition(sorted({rank(i) for i0, i1, _ in steps for i in (i0, i1)}))
    out = []
    for i0, i1, t in steps:
        a, b = np.float64(pool[rank(i0)]), np.float64(pool[rank(i1)])
        diff = b - a                                            # numpy's _lerp
        res = np.add(a, diff * t)
        if t >= 0.5:
            res = np.subtract(b, diff * (1 - t))
        out.append(np.float64(res))
    return out


def _offdiagonal_quantiles(s, qs):
    """The ``qs`` quantiles of every off-diagonal entry of the square ``s`` (C >= 2), as
    ``np.quantile`` of them in float64 would give, in row blocks and in ``s``'s own dtype. An
    exactly symmetric ``s`` (as class_similarity returns) holds each value twice: its upper
    triangle, C (C - 1) / 2 values, is enough. Otherwise (e.g. np.corrcoef, symmetric only to
    rounding) all C (C - 1) entries are pooled."""
    C = s.shape[0]
    pool = np.empty(C * (C - 1) // 2, dtype=s.dtype)
    pos = 0
    for r0, r1 in _row_ranges(C):
        if not np.array_equal(s[r0:r1, r0:], s[r0:, r0:r1].T):
            break
        for i in range(r0, r1):
            pool[pos:pos + C - 1 - i] = s[i, i + 1:]
            pos += C - 1 - i
    else:
        return _linear_quantiles(pool, qs, doubled=True)
    del pool
    pool = np.empty(C * (C - 1), dtype=s.dtype)
    for i in range(C):
        pool[i * (C - 1):i * (C - 1) + i] = s[i, :i]
        pool[i * (C - 1) + i:(i + 1) * (C - 1)] = s[i, i + 1:]
    return _linear_quantiles(pool, qs)


#: Above this many classes ``optimal_ordering="auto"`` skips scipy's optimal leaf ordering, whose
#: cost grows about cubically (measured on 2 cores: 1.4 s at 919 classes, 15 s at 2,000, 75 s at
#: 3,000; hours at 21,907) while the linkage itself takes 0.03 s / 0.5 s / 1.5 s at 919-4,000.
OPTIMAL_ORDERING_MAX = 1000


def hierarchical_clustering(similarity, n_clusters=None, threshold=None, method="average",
                            optimal_ordering="auto"):
    """Agglomerative clustering of classes on the distance ``1 - similarity``.

    Parameters
    ----------
    similarity: (C, C) matrix of values in [-1, 1] (correlations, cosines), symmetric: S and
        S^T may differ by rounding only, at most 1e-6 (times max |S| where that is above 1),
        and are then averaged ((S + S^T) / 2). A larger asymmetry raises ValueError: none of
        the package's matrices has one, and a matrix that is not a similarity (e.g. (C, K)
        OFIVs with K = C) usually does; to cluster an asymmetric score on purpose, pass
        ``(S + S.T) / 2`` yourself. The distance ``1 - S`` is clipped at 0 and its diagonal
        set to 0.
    n_clusters: cut the tree into this many flat clusters (scipy ``maxclust``), or
    threshold: cut it at this distance (scipy ``distance``); neither: no flat clusters.
    method: scipy linkage method: ``"average"`` (default), ``"complete"``, ``"single"``,
        ``"weighted"``. (Ward / centroid / median assume Euclidean distances and are refused.)
    optimal_ordering: reorder leaves so that similar neighbours sit together (scipy). ``"auto"``
        (default): only up to ``OPTIMAL_ORDERING_MAX`` (1,000) classes, as its cost grows about
        cubically (75 s at 3,000 classes on 2 cores, hours at 21,907); the clusters are the
        same either way, only the order of the leaves inside the tree changes.

    Returns
    -------
    :class:`ClusterResult`.

    Notes
    -----
    Memory: the similarity is read in row blocks (float32, float64 or a memmap, never copied
    whole) into the condensed distance, 4 C^2 bytes, which the result keeps; scipy's linkage
    needs about as much again. At 21,907 classes that is ~1.9 GB each, beside the similarity
    itself (1.9 GB in float32, 3.8 GB in float64).
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    s = _square(similarity, copy=False)
    if method not in ("average", "complete", "single", "weighted"):
        raise ValueError("method must be 'average', 'complete', 'single' or 'weighted' (ward, "
                         "centroid and median need Euclidean distances, not 1 - similarity)")
    if n_clusters is not None and threshold is not None:
        raise ValueError("give n_clusters or threshold, not both")
    C = s.shape[0]
    if n_clusters is not None:
        n_clusters = _as_index(n_clusters, "n_clusters", 1, C)
    if threshold is not None:
        threshold = _as_distance(threshold)
    if optimal_ordering == "auto":
        optimal_ordering = C <= OPTIMAL_ORDERING_MAX
    elif not isinstance(optimal_ordering, (bool, np.bool_)):
        raise ValueError(f"optimal_ordering must be True, False or 'auto', got {optimal_ordering!r}")
    d, top, asym = _condensed_distance(s)
    if asym > 1e-6 * max(1.0, top):
        raise ValueError(f"similarity is not symmetric (largest |S - S^T| = {asym:.3g}, more "
                         "than rounding): pass a class x class similarity, e.g. "
                         "class_similarity(ofiv), not the OFIVs; to cluster an asymmetric "
                         "score on purpose, pass (S + S.T) / 2")
    if top > 1 + 1e-6:
        raise ValueError(f"similarity has values outside [-1, 1] (up to {top:.3g}): "
                         "the distance 1 - similarity expects correlations or cosines")
    settings = dict(method=method, n_clusters=n_clusters, threshold=threshold,
                    optimal_ordering=bool(optimal_ordering))
    if C == 1:
        Z = np.zeros((0, 4))
        order = np.array([0])
        labels = np.array([1]) if (n_clusters or threshold is not None) else None
        return ClusterResult(Z, order, labels, d, settings)
    Z = linkage(d, method=method, optimal_ordering=optimal_ordering)
    labels = None
    if n_clusters is not None:
        labels = fcluster(Z, t=n_clusters, criterion="maxclust")
    elif threshold is not None:
        labels = fcluster(Z, t=threshold, criterion="distance")
    return ClusterResult(Z, leaves_list(Z), labels, d, settings)


@dataclass
class BiclusterResult:
    """Result of :func:`bicluster`.

    Attributes
    ----------
    rows, columns: numpy int arrays, the class indices of the block (into the full matrix).
    row_labels, column_labels: numpy int arrays, bicluster of each block row / column.
    row_order, column_order: positions in ``rows`` / ``columns`` that group the biclusters
        (draw ``block[np.ix_(row_order, column_order)]``, :attr:`ordered_block`). For
        ``"cocluster"`` row cluster k goes with column cluster k, and both sides follow one
        order of the co-clusters (by the mean of each co-cluster's own block, descending), so
        the co-clusters are the blocks on the diagonal, as in the paper's Fig. 8a. For
        ``"bicluster"`` (a checkerboard: every row cluster meets every column cluster) rows and
        columns are ordered separately, by their clusters' mean row / column similarity.
    block: numpy (len(rows), len(columns)), the similarity block as given.
    method: ``"cocluster"`` or ``"bicluster"``.
    """
    rows: np.ndarray
    columns: np.ndarray
    row_labels: np.ndarray
    column_labels: np.ndarray
    row_order: np.ndarray
    column_order: np.ndarray
    block: np.ndarray
    method: str
    settings: dict = field(default_factory=dict)

    @property
    def ordered_block(self):
        """The block with rows and columns grouped by bicluster."""
        return self.block[np.ix_(self.row_order, self.column_order)]


def _group_order(labels, values=None, rank=None):
    """Order items by cluster, stable inside: clusters in ``rank`` ({label: position}) or, if
    None, by the mean of ``values`` over their items (descending)."""
    if rank is None:
        means = {c: values[labels == c].mean() for c in np.unique(labels)}
        rank = {c: r for r, c in enumerate(sorted(means, key=lambda c: -means[c]))}
    return np.array(sorted(range(len(labels)), key=lambda i: (rank[labels[i]], i)))


def _cocluster_rank(block, row_labels, column_labels):
    """{label: position} of spectral co-clusters, shared by rows and columns: by the mean of the
    co-cluster's own block (its rows x its columns), descending; a label with no rows or no
    columns (k-means can leave one side empty) after the others. Row cluster k goes with
    column cluster k, so ranking each side by its own means could swap them and put the
    co-clusters off the diagonal."""
    def score(k):
        r, c = row_labels == k, column_labels == k
        return block[np.ix_(r, c)].mean() if r.any() and c.any() else -np.inf

    labels = np.union1d(row_labels, column_labels)
    return {k: i for i, k in enumerate(sorted(labels, key=lambda k: (-score(k), k)))}


def bicluster(similarity, rows=None, columns=None, n_clusters=3, method="cocluster",
              random_state=0):
    """Spectral co-/bi-clustering of a class-subset x class-subset block (the paper's Fig. 8a).

    Parameters
    ----------
    similarity: (C, C) matrix, or an (R, Q) block given directly (then ``rows``/``columns`` must
        be None): a numpy array (float32, float64, a memmap) or a tensor. Only the block is read
        (made float64 and checked for NaN/inf): the matrix is not copied whole.
    rows, columns: class indices (or boolean masks) of the block's rows and columns (default:
        all classes).
    n_clusters: number of biclusters (``"cocluster"``), or an int / (n_row, n_col) tuple of
        checkerboard clusters (``"bicluster"``).
    method: ``"cocluster"`` (sklearn ``SpectralCoclustering``) or ``"bicluster"``
        (``SpectralBiclustering``). Both need non-negative data: the block is mapped to
        ``(1 + s) / 2`` (correlations in [-1, 1] -> [0, 1]) plus a small offset.
    random_state: int seed of the spectral embedding's k-means.

    Returns
    -------
    :class:`BiclusterResult`.
    """
    from sklearn.cluster import SpectralBiclustering, SpectralCoclustering

    # the block is taken first, then made float64 and checked: the matrix itself is read as
    # given (a float32 matrix or a memmap is not copied whole, a tensor is indexed on its own
    # device), so a 200 x 200 block of a 21,907 x 21,907 float32 matrix no longer costs a
    # 3.6 GiB float64 copy (review 15c m1)
    tensor = hasattr(similarity, "detach")
    s = similarity if tensor else np.asarray(similarity)
    shape = tuple(s.shape)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"similarity must be a 2-d matrix, got shape {shape}")
    if shape[0] == shape[1]:
        r = _index(rows, shape[0], "rows")
        c = _index(columns, shape[0], "columns")
    else:
        if rows is not None or columns is not None:
            raise ValueError("rows/columns select from a square (C, C) matrix only")
        r, c = np.arange(shape[0]), np.arange(shape[1])
    if tensor:
        import torch
        ri, ci = (torch.as_tensor(i, device=s.device) for i in (r, c))
        block = _stats._tensor_to_numpy(s.detach()[ri[:, None], ci[None, :]])
    else:
        block = s[np.ix_(r, c)]
    block = np.asarray(block, dtype=np.float64)
    if not np.all(np.isfinite(block)):
        raise ValueError("similarity contains NaN or inf (in the block clustered)")
    if method not in ("cocluster", "bicluster"):
        raise ValueError("method must be 'cocluster' or 'bicluster'")
    k = n_clusters if isinstance(n_clusters, tuple) else (n_clusters, n_clusters)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2 for v in k):
        raise ValueError(f"n_clusters must be an int >= 2 (or a tuple of two for 'bicluster'): "
                         f"spectral (co)clustering into one group is undefined; got {n_clusters!r}")
    if k[0] > block.shape[0] or k[1] > block.shape[1]:
        raise ValueError(f"{n_clusters} clusters for a {block.shape} block")
    data = (1.0 + np.clip(block, -1, 1)) / 2.0 + 1e-6
    if method == "cocluster":
        if isinstance(n_clusters, tuple):
            raise ValueError("'cocluster' takes one int n_clusters")
        model = SpectralCoclustering(n_clusters=int(n_clusters), random_state=random_state)
    else:
        model = SpectralBiclustering(n_clusters=n_clusters, method="log",
                                     random_state=random_state)
    model.fit(data)
    rl, cl = np.asarray(model.row_labels_), np.asarray(model.column_labels_)
    if method == "cocluster":     # co-cluster k: its rows and its columns, one shared order
        rank = _cocluster_rank(block, rl, cl)
        ro, co = _group_order(rl, rank=rank), _group_order(cl, rank=rank)
    else:                         # checkerboard: row and column clusters are separate sets
        ro = _group_order(rl, block.mean(1))
        co = _group_order(cl, block.mean(0))
    return BiclusterResult(r, c, rl, cl, ro, co, block, method,
                           dict(n_clusters=n_clusters, random_state=random_state))


def association_index(similarity, rows, columns, upper=0.85, lower=0.15, quantiles_of="block",
                      row_names=None):
    """The paper's association index (Fig. 8b) of each row class with a column group.

    For each row class: ``n_positive`` = how many of its similarities to the column classes
    exceed the ``upper`` quantile, ``n_negative`` = how many fall below the ``lower`` quantile.
    (The paper: TF / histone-mark rows against DNase columns, quantiles 85% (0.52) and 15% (0)
    "of all correlations".) Self-pairs (a class in both groups) are left out.

    Parameters
    ----------
    similarity: (C, C) matrix.
    rows, columns: class indices or boolean masks of the row classes and the column group.
    upper, lower: quantiles (0 <= lower < upper <= 1).
    quantiles_of: ``"block"`` (the rows x columns similarities, default) or ``"all"`` (every
        off-diagonal entry of the matrix). The paper's "all correlations" are those of the map
        it collapses, its Fig. 8a, which is itself the TF-histone mark x DNase block: hence the
        default. The two can differ a lot (a review's example: thresholds 0.16 / -0.17 on the
        block, 0.25 / -0.16 on the whole matrix); ``df.attrs`` records the values used.
    row_names: optional C names (of all classes) for the ``name`` column.

    Returns
    -------
    pandas DataFrame, one row per row class sorted by ``index`` (descending) then class:
    ``class`` (index into the matrix), ``name``, ``n_positive``, ``n_negative``,
    ``index`` = n_positive - n_negative (our one-number summary for sorting; the paper plots
    the two counts side by side), ``n_columns`` (compared columns). The thresholds are in
    ``df.attrs["upper_threshold"]`` and ``df.attrs["lower_threshold"]``.

    Notes
    -----
    The thresholds are ``np.quantile`` (method ``"linear"``) of the similarities in float64. The
    matrix is read as given (float32, float64 or a memmap: not copied), checked in row blocks;
    beside it the call holds the rows x columns block in float64 and, for ``"all"``, the
    off-diagonal values in the matrix's own dtype: only its upper triangle when the matrix is
    exactly symmetric (as :func:`class_similarity` makes it), 2 C^2 bytes for float32, else all
    C (C - 1) values.
    """
    s = _square(similarity, copy=False)    # float32 / a memmap stay as given: no C x C copy
    C = s.shape[0]
    _check_finite(s)
    r, c = _index(rows, C, "rows"), _index(columns, C, "columns")
    if not 0 <= lower < upper <= 1:
        raise ValueError("need 0 <= lower < upper <= 1")
    if quantiles_of not in ("block", "all"):
        raise ValueError("quantiles_of must be 'block' or 'all'")
    block = np.asarray(s[np.ix_(r, c)], dtype=np.float64)    # a new array (fancy indexing)
    block[r[:, None] == c[None, :]] = np.nan
    if (quantiles_of == "block" and np.isnan(block).all()) or C < 2:
        raise ValueError("no similarities to compare (rows and columns are the same single class)")
    if quantiles_of == "block":
        pool = block[np.isfinite(block)]
        # pool is ours: partitioned in place instead of copied by each np.quantile
        hi = np.quantile(pool, upper, overwrite_input=True)
        lo = np.quantile(pool, lower, overwrite_input=True)
    else:
        hi, lo = _offdiagonal_quantiles(s, (upper, lower))
    with np.errstate(invalid="ignore"):
        n_pos = np.sum(block > hi, axis=1)
        n_neg = np.sum(block < lo, axis=1)
    if row_names is not None:
        if len(row_names) != C:
            raise ValueError(f"row_names must have {C} entries (all classes)")
        names = [str(row_names[i]) for i in r]
    else:
        names = [str(i) for i in r]
    df = pd.DataFrame({"class": r, "name": names, "n_positive": n_pos, "n_negative": n_neg,
                       "index": n_pos - n_neg, "n_columns": np.isfinite(block).sum(1)})
    df = df.sort_values(["index", "class"], ascending=[False, True], kind="stable")
    df = df.reset_index(drop=True)
    df.attrs["upper_threshold"] = float(hi)
    df.attrs["lower_threshold"] = float(lo)
    df.attrs["upper"], df.attrs["lower"] = upper, lower
    return df
