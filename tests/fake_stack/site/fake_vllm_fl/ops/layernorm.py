"""RMSNormFL: vLLM's RMSNorm with the plugin's own dispatch to FlagGems (like vllm_fl/ops/layernorm.py).

Its forward (forward_oot, and forward_cpu/forward_native, which vLLM CPU calls) calls
`flag_gems.modules.normalization.gems_rms_forward` directly — no `flag_gems.enable` involved —
when `dispatch_to_flagos("rms_norm")` says so; otherwise vLLM's own RMSNorm runs.
"""

from __future__ import annotations

import torch
from flag_gems.modules.normalization import gems_rms_forward
from vllm.model_executor.layers.layernorm import RMSNorm

from fake_vllm_fl.utils import dispatch_to_flagos


class RMSNormFL(RMSNorm):
    def forward_oot(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if self.variance_size_override is not None or not dispatch_to_flagos("rms_norm"):
            return RMSNorm.forward_native(self, x, residual)
        return gems_rms_forward(x, residual, self.weight, self.variance_epsilon)

    forward_cpu = forward_oot
    forward_native = forward_oot


__all__ = ["RMSNormFL"]
