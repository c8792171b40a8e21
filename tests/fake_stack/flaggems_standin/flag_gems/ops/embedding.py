"""Stand-in kernel for aten::embedding (torch on CPU; the real one is a Triton kernel)."""

import logging

from flag_gems import _standin as _k

logger = logging.getLogger(__name__)


def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    logger.debug("GEMS EMBEDDING FORWARD")
    fault = _k.fault("embedding")
    if fault.raise_:
        raise RuntimeError(f"flag_gems embedding kernel failed: {fault.reason}")
    assert not sparse, "Currently do not support sparse format"
    dtype = _k.compute_dtype("embedding", weight.dtype)
    w = weight if dtype == weight.dtype else weight.to(dtype)
    out = w.index_select(0, indices.reshape(-1)).reshape(*indices.shape, weight.shape[-1])
    if out.dtype != weight.dtype:
        out = out.to(weight.dtype)
    return _k.apply_scale(out, fault)
