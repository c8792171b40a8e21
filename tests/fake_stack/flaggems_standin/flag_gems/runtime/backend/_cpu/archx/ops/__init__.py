"""Arch-specialised stand-in kernels (FlagGems' `hopper/ops/__init__.py` shape)."""

from .rsqrt import rsqrt

__all__ = ["rsqrt"]
