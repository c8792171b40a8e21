"""TEST-ONLY stand-in for the real vllm-plugin-FL (`vllm_fl`), registered as the vLLM general
plugin `fl`. It stands in for the plugin's switches inside the real vLLM engine; everything
else in the tests (vLLM, torch, flag_gems itself) is real.

Like the real plugin it reads `USE_FLAGGEMS` (default true) and does nothing to the model
when it is "0". With FlagGems on, `FAKE_FL_MODE` picks what it does:
- `flaggems` (default): import and enable the real `flag_gems` package — on a machine without
  a GPU that raises FlagGems' own "No device were detected" error, a real FlagGems failure;
- `perturb`: override a real ATen op (`aten::embedding` on CPU) with a version whose numerics
  are off, as a wrong FlagGems kernel would be — enough to flip greedy tokens;
- `neutral`: a healthy stack: active (loaded into every engine process), numerics untouched.
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
