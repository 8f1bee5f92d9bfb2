"""Networks: FeatureHead3D and the SAMIR registration network (the bundle's ``network_def``)."""

from samir.networks.head import FeatureHead3D, ResidualBlock3D
from samir.networks.samir_net import SAMIR, ImagePyramid, build_samir, resample_embedding

__all__ = ["FeatureHead3D", "ResidualBlock3D", "SAMIR", "ImagePyramid", "build_samir", "resample_embedding"]
