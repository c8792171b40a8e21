"""Stand-in kernel for aten::mean.dim (torch on CPU; the real one is a Triton kernel)."""

import logging
import math

import torch

from flag_gems import _standin as _k

logger = logging.getLogger(__name__)


def mean_dim(inp, dim=None, keepdim=False, *, dtype=None):
    logger.debug("GEMS MEAN_DIM (wrapper)")
    fault = _k.fault("mean_dim")
    if fault.raise_:
        raise RuntimeError(f"flag_gems mean_dim kernel failed: {fault.reason}")
    out_dtype = dtype or inp.dtype
    dims = list(range(inp.ndim)) if not dim else [d % max(inp.ndim, 1) for d in dim]
    n = math.prod(inp.shape[d] for d in dims) if inp.ndim else 1
    x = inp if dtype is None else inp.to(dtype)
    compute = _k.compute_dtype("mean_dim", x.dtype)
    if compute != x.dtype:
        x = x.to(compute)
    if _k.variant("mean_dim") == "reorder" and dims:
        x = x.flip(dims)  # same sum, other order
    # ATen's mean is sum over the dims, then divided by their size
    out = torch.sum(x, dim=dims, keepdim=keepdim) / n
    if out.dtype != out_dtype:
        out = out.to(out_dtype)
    return _k.apply_scale(out, fault)
