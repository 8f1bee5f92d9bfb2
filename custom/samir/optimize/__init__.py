"""Per-pair (instance) optimisation: registrations with no training, or refining a network's output.

``fast_optimize_pair`` (:mod:`.fast`) is the training-free core that ``samir register`` runs;
``optimize_pair`` (:mod:`.pair`) is the earlier, slower Adam on SAM features + LNCC, kept for comparison.
"""

from .fast import fast_optimize_pair
from .pair import DEFAULT_ITERATIONS, coarse_search, optimize_pair, pca_project, pyramid_sizes

__all__ = ["fast_optimize_pair", "optimize_pair", "pca_project", "pyramid_sizes", "coarse_search", "DEFAULT_ITERATIONS"]
