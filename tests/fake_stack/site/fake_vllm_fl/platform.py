"""PlatformFL: the stand-in platform — vLLM's CPU platform with the plugin's own worker.

Like the real `vllm_fl.platform.PlatformFL` it sets `parallel_config.worker_cls` to its worker
(`fake_vllm_fl.worker.WorkerFL`) and importing it imports `flag_gems`; unlike it, it subclasses
`vllm.platforms.cpu.CpuPlatform` (is_cpu() stays true) so the engine runs normally on CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flag_gems  # noqa: F401  (loading the real plugin imports flag_gems)
from vllm.platforms.cpu import CpuPlatform

if TYPE_CHECKING:
    from vllm.config import VllmConfig

WORKER_CLS = "fake_vllm_fl.worker.WorkerFL"


class PlatformFL(CpuPlatform):
    @classmethod
    def check_and_update_config(cls, vllm_config: VllmConfig) -> None:
        parallel_config = vllm_config.parallel_config
        if parallel_config.worker_cls in ("auto", "vllm.v1.worker.cpu_worker.CPUWorker"):
            parallel_config.worker_cls = WORKER_CLS
        super().check_and_update_config(vllm_config)
