"""`gems_rms_forward`, the function vllm-plugin-FL's RMSNormFL calls directly (no `enable`).

Stand-in: torch on CPU, bit-for-bit vLLM's native RMSNorm (x*x summed then divided = mean,
pow(-0.5) = rsqrt), built from ops the stand-in does not override so it never re-enters them.
Returns `out` or `(out, residual)` like the real one (which updates x/residual in place).
"""

import logging

import torch

from flag_gems import _standin as _k

logger = logging.getLogger(__name__)

__all__ = ["gems_rms_forward"]


def gems_rms_forward(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if residual is not None:
        logger.debug("GEMS CUSTOM FUSED_ADD_RMS_NORM")
    else:
        logger.debug("GEMS CUSTOM RMS_NORM")
    _k.ACTIVE.add("rms_norm")
    fault = _k.fault("rms_norm")
    if fault.raise_:
        raise RuntimeError(f"flag_gems rms_norm kernel failed: {fault.reason}")
    orig_dtype = x.dtype
    h = x.to(torch.float32)
    if residual is not None:
        h = h + residual.to(torch.float32)
        residual = h.to(orig_dtype)
    compute = _k.compute_dtype("rms_norm", torch.float32)
    hc = h if compute == torch.float32 else h.to(compute)
    sq = hc * hc
    if _k.variant("rms_norm") == "reorder":
        sq = sq.flip(-1)
    variance = torch.sum(sq, dim=-1, keepdim=True) / hc.shape[-1]
    normed = hc * torch.pow(variance + eps, -0.5)  # = ATen rsqrt bit for bit, without calling it
    if normed.dtype != torch.float32:
        normed = normed.to(torch.float32)
    out = (normed.to(weight.dtype) * weight).to(orig_dtype)
    out = _k.apply_scale(out, fault)
    return out if residual is None else (out, residual)
