"""TEST-ONLY stand-in for the real vllm-plugin-FL (`vllm_fl`), registered as the vLLM general
plugin `fl`. It stands in for the plugin's switches inside the real vLLM engine; everything
else in the tests (vLLM, torch, flag_gems itself) is real.

Like the real plugin it reads `USE_FLAGGEMS` (default true) and does nothing to the model
when it is "0". With FlagGems on, `FAKE_FL_MODE` picks what it does:
- `flaggems` (default): import and enable the real `flag_gems` package — on a machine without
  a GPU that raises FlagGems' own "No device were detected" error, a real FlagGems failure;
- `perturb`: override a real ATen op (`aten::embedding` on CPU) with a version whose numerics
  are off, as a wrong FlagGems kernel would be — enough to flip greedy tokens;
- `neutral`: a healthy stack: active (loaded into every engine process), numerics untouched;
- `slow`: a healthy stack whose first use is slow: like FlagGems JIT-compiling its Triton
  kernels, it prints a progress line every half second for `FAKE_FL_SLOW_S` seconds (default
  600) before the model loads;
- `stall`: the engine core accepts requests but never finishes one, like a kernel that hangs
  on the first real batch (start-up and the health check are fine);
- `leak`: a plugin that prints its configuration, `HF_TOKEN` included (secrets must be masked).
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
