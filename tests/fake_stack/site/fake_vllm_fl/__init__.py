"""TEST-ONLY stand-in for the real vllm-plugin-FL (`vllm_fl`) — not the real plugin.

It is installed (dist-info next to it, put on PYTHONPATH) under two entry points, as the 2026
plugin is:
- `vllm.general_plugins: fl = fake_vllm_fl:register` — runs in every vLLM process;
- `vllm.platform_plugins: fl = fake_vllm_fl:register_platform` — returns
  `fake_vllm_fl.platform.PlatformFL` (vLLM's CPU platform + its own worker
  `fake_vllm_fl.worker.WorkerFL`) in the platform modes below, None otherwise (then vLLM picks
  its own CPU platform and the general plugin alone acts, as before the platform plugin existed).
vLLM logs "Platform plugin fl is activated" in each process where PlatformFL is chosen; vLLM
0.32 drops that INFO line (its logging is configured only after the platform is resolved), so
register_platform configures vLLM's default logging first — set `FAKE_FL_LOG_ACTIVATION=0` to
keep vLLM 0.32's own behaviour (the line is then not printed).
`VLLM_PLUGINS` filters both groups: unset → all installed plugins load, "" → none, "fl" → this.
Everything else in the tests (vLLM, torch) is real; `flag_gems` is either the real 5.0.2 package
(mode `flaggems`) or the CPU stand-in in tests/fake_stack/flaggems_standin (platform modes).

`FAKE_FL_MODE` (default `flaggems`) picks what it does.

General-plugin modes (the general plugin reads `USE_FLAGGEMS`, default true, and does nothing
when it is "0"/"false"/"no"; the platform plugin stays out of these modes):
- `flaggems` (default): import and enable the real `flag_gems` package — on a machine without
  a GPU that raises FlagGems' own "No device were detected" error, a real FlagGems failure
  (`FAKE_FL_TRITON_SITE` = a folder appended to sys.path first: flag_gems needs triton);
  with tests/fake_stack/flaggems_standin ahead of it on PYTHONPATH, the CPU stand-in is
  imported instead and `flag_gems.enable(record=False)` works, in every vLLM process;
- `perturb`: override a real ATen op (`aten::embedding` on CPU) with a version whose numerics
  are off, as a wrong FlagGems kernel would be — enough to flip greedy tokens;
- `neutral`: a healthy stack: active (loaded into every engine process), numerics untouched;
- `slow`: a healthy stack whose first use is slow: like FlagGems JIT-compiling its Triton
  kernels, it prints a progress line every half second for `FAKE_FL_SLOW_S` seconds (default
  600) before the model loads;
- `stall`: the engine core accepts requests but never finishes one, like a kernel that hangs
  on the first real batch (start-up and the health check are fine);
- `leak`: a plugin that prints its configuration, `HF_TOKEN` included (secrets must be masked).

Platform-plugin modes (need tests/fake_stack/flaggems_standin on PYTHONPATH; the platform is
activated whatever `USE_FLAGGEMS` says, as the real plugin's is; FlagGems is turned on in the
worker, see worker.py, and the OOT RMSNorm in ops/layernorm.py calls
`flag_gems.modules.normalization.gems_rms_forward` directly):
- `real`: the 2026 plugin. `use_flaggems()` (utils.py): false if `VLLM_FL_PREFER_ENABLED` is
  false or `VLLM_FL_PREFER` names a backend other than `flagos`, else `USE_FLAGGEMS` (default
  true). When true, in the worker: `flag_gems.only_enable(include=VLLM_FL_FLAGOS_WHITELIST,
  record=rank==0, once=True, path=FLAGGEMS_ENABLE_OPLIST_PATH)` if the whitelist is set, else
  `flag_gems.enable(unused=VLLM_FL_FLAGOS_BLACKLIST, record=rank==0, once=True, path=...)`;
  the OOT RMSNorm goes to FlagGems when use_flaggems() and the lists allow op `rms_norm`;
- `default-on`: the 2025-12 plugin: `flag_gems.enable(record=False, unused=["index",
  "index_put_"])` in the worker whenever loaded (ignores USE_FLAGGEMS and every VLLM_FL_*), and
  the OOT RMSNorm always goes to FlagGems;
- `direct-dispatch`: never calls enable/only_enable; only the OOT RMSNorm calls FlagGems (under
  the same rule as `real`);
- `inert`: loads (platform activated, flag_gems imported), logs "FlagGems enabled: 433 ops"
  lines, does nothing else.
The flag_gems stand-in's own knobs (`FAKE_GEMS_FAULT`, `FAKE_GEMS_VARIANT`) are documented in
flaggems_standin/flag_gems/__init__.py. tests/fake_stack/liar/sitecustomize.py is the lying-log
case with no plugin at all.
"""

import os
import sys

_LIBS = []  # keep torch.library registrations alive


def _perturb_embedding() -> None:
    import torch

    lib = torch.library.Library("aten", "IMPL")

    def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
        out = weight.index_select(0, indices.reshape(-1)).reshape(*indices.shape, weight.shape[-1])
        return out * 1.5 + 0.01

    lib.impl("embedding", embedding, "CPU")
    _LIBS.append(lib)


def register_platform() -> str | None:
    """Platform plugin `fl`: PlatformFL in the platform modes, else None (not activated)."""
    from fake_vllm_fl.utils import PLATFORM_MODES, mode

    if mode() not in PLATFORM_MODES:
        return None
    if os.environ.get("FAKE_FL_LOG_ACTIVATION", "1") != "0":
        # vLLM 0.32 resolves the platform before it configures its logging (that happens
        # lazily, when the engine/worker starts), so its own "Platform plugin fl is activated"
        # INFO line is dropped. Configure vLLM's default logging now, as older vLLM did at
        # import, so that vLLM itself prints that line (FAKE_FL_LOG_ACTIVATION=0: leave it).
        from vllm.logger import _configure_vllm_root_logger

        _configure_vllm_root_logger()
    return "fake_vllm_fl.platform.PlatformFL"


def register() -> None:
    if os.environ.get("USE_FLAGGEMS", "1").lower() in ("0", "false", "no"):
        return
    mode = os.environ.get("FAKE_FL_MODE", "flaggems")
    if mode == "flaggems":
        extra = os.environ.get("FAKE_FL_TRITON_SITE")
        if extra and extra not in sys.path:
            sys.path.append(extra)  # flag_gems needs triton, which the base venv leaves out
        import flag_gems

        flag_gems.enable(record=False)
    elif mode == "perturb":
        _perturb_embedding()
    elif mode == "slow":
        import time

        end = time.monotonic() + float(os.environ.get("FAKE_FL_SLOW_S", "600"))
        n = 0
        while time.monotonic() < end:
            n += 1
            print(f"[fake_vllm_fl] JIT compiling Triton kernel {n}", flush=True)
            time.sleep(0.5)
    elif mode == "stall":
        _stall_requests()
    elif mode == "leak":
        print(f"[fake_vllm_fl] config: HF_TOKEN={os.environ.get('HF_TOKEN')}", flush=True)


def _stall_requests() -> None:
    """In the engine core process only: the first request's step never returns."""
    import time

    from vllm.v1.engine import core

    def add_request(self, *args, **kwargs):
        print("[fake_vllm_fl] stalling the engine core on its first request", flush=True)
        while True:
            time.sleep(60)

    core.EngineCore.add_request = add_request
