"""Stand-in kernel for aten::silu (torch on CPU; the real one is a Triton kernel)."""

import logging

import torch

from flag_gems import _standin as _k

logger = logging.getLogger(__name__)


def silu(self):
    logger.debug("GEMS SILU FORWARD")
    fault = _k.fault("silu")
    if fault.raise_:
        raise RuntimeError(f"flag_gems silu kernel failed: {fault.reason}")
    # equal to ATen's silu within an ulp or two (ATen's vectorized exp differs); no reduction:
    # `reorder` changes nothing
    return _k.elementwise("silu", self, lambda x: x / (1 + torch.exp(-x)), fault)
