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
    dtype = _k.compute_dtype("rsqrt", A.dtype)
    x = A if dtype == A.dtype else A.to(dtype)
    out = torch.pow(x, -0.5)  # bit-equal to ATen's rsqrt; no reduction: `reorder` changes nothing
    if out.dtype != A.dtype:
        out = out.to(A.dtype)
    return _k.apply_scale(out, fault)
