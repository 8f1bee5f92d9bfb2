"""SAMIR: learned 3D medical image registration guided by frozen Segment Anything features."""

__version__ = "0.1.0"
