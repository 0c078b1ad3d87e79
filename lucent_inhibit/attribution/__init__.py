"""Layer-to-feature attribution and its completeness (Hamblin et al. 2024, section 2).

``attribute`` (S = grad x activation at many layers from one forward and one backward pass, or layer
integrated gradients), the P / N totals and tension scores (``totals``), the census's chunked backward
(``kernel``), the dataset pass that scans, censuses and the completeness study share (``passes``, with the
``precision`` check of autocast), whether E adds up to f (``agreement``) and the completeness study
(``completeness``) with its figures (``figures``).
"""
from .agreement import IncompletenessWarning, PairCompleteness, adds_up, pearson, sum_check, warn_if_incomplete
from .attribute import METHODS, Attribution, attribute, measure
from .completeness import CompletenessResult, completeness, completeness_pair, random_logits
from .figures import plot_attribution_totals, plot_completeness
from .totals import TENSION_SCORES, percentile_ranks, signed_totals, tension

__all__ = ["Attribution", "CompletenessResult", "IncompletenessWarning", "METHODS", "PairCompleteness",
           "TENSION_SCORES", "adds_up", "attribute", "completeness", "completeness_pair", "measure", "pearson",
           "percentile_ranks", "plot_attribution_totals", "plot_completeness", "random_logits", "signed_totals",
           "sum_check", "tension", "warn_if_incomplete"]
