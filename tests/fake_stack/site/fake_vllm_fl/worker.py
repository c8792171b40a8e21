"""WorkerFL: vLLM's CPU worker that turns FlagGems on in the worker, as the real WorkerFL.__init__.

By FAKE_FL_MODE:
- `real` (2026 plugin): register the OOT RMSNorm; if use_flaggems():
  `flag_gems.only_enable(include=VLLM_FL_FLAGOS_WHITELIST, record=rank==0, once=True,
  path=FLAGGEMS_ENABLE_OPLIST_PATH)` when a whitelist is set, else
  `flag_gems.enable(unused=VLLM_FL_FLAGOS_BLACKLIST, record=rank==0, once=True, path=...)`;
- `default-on` (2025-12 plugin): register the OOT RMSNorm and
  `flag_gems.enable(record=False, unused=["index", "index_put_"])`, whatever the environment;
- `direct-dispatch`: register the OOT RMSNorm only, never enable/only_enable;
- `inert`: log "FlagGems enabled" lines and do nothing.

`FAKE_FL_WORKER_FAULT=1`: the worker's second model step raises a RuntimeError of the plugin's
own, whatever FlagGems does — a fault outside FlagGems after its kernels ran in the first step.
"""

from __future__ import annotations

import os

from vllm.logger import init_logger
from vllm.v1.worker.cpu_worker import CPUWorker

from fake_vllm_fl import utils

# under "vllm." so vLLM's configured handler prints it (a bare "fake_vllm_fl" logger is silent)
logger = init_logger("vllm." + __name__)


class WorkerFL(CPUWorker):
    def __init__(
        self, vllm_config, local_rank, rank, distributed_init_method, is_driver_worker=False
    ):
        super().__init__(
            vllm_config,
            local_rank,
            rank,
            distributed_init_method,
            is_driver_worker=is_driver_worker,
        )
        enable_flaggems(self.rank)
        self._fake_steps = 0

    def execute_model(self, *args, **kwargs):
        self._fake_steps += 1
        if os.environ.get("FAKE_FL_WORKER_FAULT") == "1" and self._fake_steps == 2:
            raise RuntimeError(
                "fake_vllm_fl WorkerFL fault: FAKE_FL_WORKER_FAULT=1 (in the worker itself)"
            )
        return super().execute_model(*args, **kwargs)


def enable_flaggems(rank: int) -> None:
    mode = utils.mode()
    if mode == "inert":
        logger.info(
            "WorkerFL: FlagGems enabled: 433 ops (record=%s, path=%s)",
            rank == 0,
            utils.oplist_path(),
        )
        logger.info("FlagGems enabled: 433 ops")
        return
    from fake_vllm_fl.ops.custom_ops import register_oot_ops

    register_oot_ops()
    import flag_gems

    if mode == "default-on":
        flag_gems.enable(record=False, unused=["index", "index_put_"])
    elif mode == "real" and utils.use_flaggems():
        kwargs = dict(record=rank == 0, once=True, path=utils.oplist_path())
        if utils.whitelist():
            flag_gems.only_enable(include=utils.whitelist(), **kwargs)
        else:
            flag_gems.enable(unused=utils.blacklist(), **kwargs)
    else:
        logger.info(
            "WorkerFL: FlagGems not enabled (mode %s, use_flaggems()=%s)",
            mode,
            utils.use_flaggems(),
        )
        return
    try:
        ops = flag_gems.all_registered_ops()
    except AttributeError:  # only_enable registered nothing
        ops = []
    logger.info(
        "WorkerFL: FlagGems enabled: %d ops %s (mode %s, rank %d)", len(ops), ops, mode, rank
    )
