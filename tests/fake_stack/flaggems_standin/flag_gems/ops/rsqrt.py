"""Stand-in kernel for aten::rsqrt (torch on CPU; the real one is a Triton kernel)."""

import logging

import torch

from flag_gems import _standin as _k

logger = logging.getLogger(__name__)


def rsqrt(A):
    logger.debug("GEMS RSQRT")
    fault = _k.fault("rsqrt")
    if fault.raise_:
        raise RuntimeError(f"flag_gems rsqrt kernel failed: {fault.reason}")
    # bit-equal to ATen's rsqrt; no reduction: `reorder` changes nothing
    return _k.elementwise("rsqrt", A, lambda x: torch.pow(x, -0.5), fault)
