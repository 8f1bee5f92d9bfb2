"""Per-pair (instance) optimisation: registrations with no training, or refining a network's output."""

from .pair import DEFAULT_ITERATIONS, coarse_search, optimize_pair, pca_project, pyramid_sizes

__all__ = ["optimize_pair", "pca_project", "pyramid_sizes", "coarse_search", "DEFAULT_ITERATIONS"]
