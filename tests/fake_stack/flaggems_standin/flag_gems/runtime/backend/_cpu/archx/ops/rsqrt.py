"""Arch-specialised stand-in kernel for aten::rsqrt; same knobs and results as ops/rsqrt.py."""

import logging

import torch
from flag_gems import _standin as _k

logger = logging.getLogger(__name__)


def rsqrt(A):
    logger.debug("GEMS RSQRT")
    fault = _k.fault("rsqrt")
    if fault.raise_:
        raise RuntimeError(f"flag_gems rsqrt kernel failed: {fault.reason}")
    return _k.elementwise("rsqrt", A, lambda x: torch.pow(x, -0.5), fault)
