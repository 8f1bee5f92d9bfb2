"""Losses: HFC on frozen SAM embeddings and the full registration objective."""

from samir.losses.hfc import HierarchicalFeatureConsistencyLoss
from samir.losses.registration import RegistrationLoss

__all__ = ["HierarchicalFeatureConsistencyLoss", "RegistrationLoss"]
