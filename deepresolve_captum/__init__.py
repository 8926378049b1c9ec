"""deepresolve-captum: DeepResolve (Liu, Zeng & Gifford 2019) for PyTorch/Captum.

Core API::

    from deepresolve_captum import LayerFeatureOptimizer, summarize, class_similarity
    fims, scores = LayerFeatureOptimizer(model, layer).attribute(x, target=None, n_starts=10,
                                                                  return_scores=True)
    summary = summarize(fims, scores)
    similarity = class_similarity(summary.ofiv)

Further capabilities live in flat modules (``deepresolve_captum.motifs``, ``.adapters``, ...).
"""
from .optimizer import AscentDiagnostics, LayerFeatureOptimizer
from .similarity import class_difference, class_similarity
from .summary import CATEGORY_NAMES, EnsembleSummary, summarize

__version__ = "0.1.0"

__all__ = ["LayerFeatureOptimizer", "AscentDiagnostics", "summarize", "EnsembleSummary",
           "CATEGORY_NAMES", "class_similarity", "class_difference"]
