"""TEST-ONLY stand-in for FlagGems (`flag_gems` 5.0.2) — NOT the real library.

The real flag_gems cannot run on this machine: it is built on Triton kernels and its import
raises "No device were detected on your machine !" without a GPU. This stand-in has the real
5.x API shape and registers its kernels exactly the way the real one does, so the real vLLM
CPU engine really runs them:

- `enable(lib=aten_lib, unused=None, registrar=Register, record=False, once=False, path=None)`
  registers every kernel not named in `unused`; `only_enable(lib=aten_lib, include=None, ...)`
  registers only those named (function name or op key; `include` empty/None → warning, nothing
  registered). Both go through `runtime.register.Register`, which calls
  `torch.library.Library("aten", "IMPL").impl(key, fn, "CPU")` with `fn` the function object
  defined in `flag_gems.ops.<module>` (the real one uses the GPU's dispatch key).
- `all_registered_ops()` / `all_registered_keys()`: what the last enable registered; before
  any enable they raise AttributeError (the registrar is None), as the real ones do.
- `use_gems(exclude=None, include=None, record=False, once=False, path=None)`: context manager
  on its own Library, destroyed on exit.
- `record=True`: op log, one `[DEBUG] flag_gems.ops.<module>.<fn>: GEMS <OP ...>` line per call
  (per call site with `once=True`) in `path` (default ~/.flaggems/oplist.log).
- `flag_gems.modules.normalization.gems_rms_forward(x, residual, weight, eps)`: the function the
  plugin calls directly; it logs `GEMS CUSTOM RMS_NORM` / `GEMS CUSTOM FUSED_ADD_RMS_NORM`
  (into the op log only when an enable with record=True set logging up, as in the real one).

ATen ops taken over (the ones vLLM 0.32's CPU engine really calls for the demo Llama; the real
flag_gems takes over 433): `embedding` (flag_gems/ops/embedding.py:embedding), `silu`
(ops/silu.py:silu), `rsqrt` (ops/rsqrt.py:rsqrt), `mean.dim` (ops/mean.py:mean_dim). Each is
written in torch from other ops (never re-entering the op it overrides) and matches ATen by
default: bit for bit for embedding, rsqrt and mean.dim, and gems_rms_forward equals vLLM's
native RMSNorm bit for bit; silu within 1-2 ulp (ATen's vectorized exp differs from torch.exp).

Fault/variant knobs, read from the environment at every kernel call (see `_standin.py`):
`FAKE_GEMS_FAULT` (`op=raise`, `op=scale:1.05`, `a+b=raise`) and `FAKE_GEMS_VARIANT`
(`op=reorder`, `op=bf16`, `op=float64`), ops `embedding`, `silu`, `rsqrt`, `mean_dim`,
`rms_norm`. `FAKE_GEMS_TAKEOVER=1`: `enable()` takes vLLM layers (embedding, SiluAndMul) over
instead of registering through torch.library (runtime/takeover.py); only FlagGems' op log shows
them running. `FAKE_GEMS_IGNORE_UNUSED=1`: `enable()` ignores `unused` (a switch not honoured).
Read at import: `FAKE_GEMS_ARCH=archx` takes `rsqrt` from an arch-specialised module
imported as top-level `archx.ops` from inside the package (runtime/backend), as FlagGems 5.0.2
does with its Hopper ops.
"""

import os
import warnings

import torch

from flag_gems import _standin
from flag_gems.logging_utils import setup_flaggems_logging, teardown_flaggems_logging
from flag_gems.modules import *  # noqa: F403
from flag_gems.ops import *  # noqa: F403
from flag_gems.ops import embedding, mean_dim, rsqrt, silu
from flag_gems.runtime import takeover
from flag_gems.runtime.backend import arch_ops
from flag_gems.runtime.register import Register

__version__ = "5.0.2+standin"

aten_lib = torch.library.Library("aten", "IMPL")
registrar = Register
current_work_registrar = None

# FAKE_GEMS_ARCH=archx: the arch's kernels replace the generic ones here and in this namespace,
# as the real SpecOpRegistrar does with Hopper's (their __module__ is `archx.ops.<op>`)
globals().update(arch_ops())

_FULL_CONFIG = (
    ("embedding", embedding),
    ("mean.dim", mean_dim),
    ("rsqrt", rsqrt),
    ("silu", silu),
)

FULL_CONFIG_BY_FUNC = {}
for _item in _FULL_CONFIG:
    FULL_CONFIG_BY_FUNC.setdefault(_item[1].__name__, []).append(_item)


def resolve_user_setting(user_setting_info, user_setting_type="include"):
    """A list/tuple/set, or a YAML path with an `include:`/`exclude:` list; None → []."""
    if isinstance(user_setting_info, (list, tuple, set)):
        return list(set(user_setting_info))
    if isinstance(user_setting_info, str) and user_setting_info.endswith((".yml", ".yaml")):
        import yaml

        with open(user_setting_info, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        if isinstance(data, dict):
            data = data.get(user_setting_type, [])
        return list(set(data or []))
    return []  # "default"/None: the stand-in has no per-vendor YAML


def enable(lib=aten_lib, unused=None, registrar=registrar, record=False, once=False, path=None):
    """Register all stand-in ops except those named in `unused`."""
    global current_work_registrar
    exclude_ops = resolve_user_setting(unused, "exclude")
    if os.environ.get("FAKE_GEMS_IGNORE_UNUSED") == "1":  # a build whose enable ignores `unused`
        exclude_ops = []
    if takeover.asked():  # FAKE_GEMS_TAKEOVER=1: vLLM layers taken over, no torch.library
        current_work_registrar = takeover.take_over(exclude_ops)
    else:
        current_work_registrar = registrar(
            _FULL_CONFIG,
            user_include_ops=[],
            user_exclude_ops=exclude_ops,
            cpp_patched_ops=[],
            lib=lib,
        )
    _standin.ACTIVE.update(current_work_registrar.get_all_ops())
    setup_flaggems_logging(path=path, record=record, once=once)


def only_enable(
    lib=aten_lib, include=None, registrar=registrar, record=False, once=False, path=None
):
    """Register only the stand-in ops named in `include`."""
    include_ops = resolve_user_setting(include, "include")
    if not include_ops:
        warnings.warn(
            "only_enable failed: No include entries resolved from list or yaml.", stacklevel=2
        )
        return
    global current_work_registrar
    current_work_registrar = registrar(
        _FULL_CONFIG,
        user_include_ops=include_ops,
        user_exclude_ops=[],
        cpp_patched_ops=[],
        full_config_by_func=FULL_CONFIG_BY_FUNC,
        lib=lib,
    )
    _standin.ACTIVE.update(current_work_registrar.get_all_ops())
    setup_flaggems_logging(path=path, record=record, once=once)


class use_gems:
    """Context manager: enable (or only_enable when `include` is given) on a private Library."""

    def __init__(self, exclude=None, include=None, record=False, once=False, path=None):
        self.lib = torch.library.Library("aten", "IMPL")
        self.exclude = exclude if isinstance(exclude, (list, tuple, set, str)) else []
        self.include = include if isinstance(include, (list, tuple, set, str)) else []
        self.record, self.once, self.path = record, once, path

    def __enter__(self):
        if self.include:
            only_enable(
                lib=self.lib,
                include=self.include,
                record=self.record,
                once=self.once,
                path=self.path,
            )
        else:
            enable(
                lib=self.lib,
                unused=self.exclude,
                record=self.record,
                once=self.once,
                path=self.path,
            )
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        global current_work_registrar
        self.lib._destroy()
        _standin.ACTIVE.clear()
        current_work_registrar = None
        if self.record:
            teardown_flaggems_logging()


def all_registered_ops():
    return current_work_registrar.get_all_ops()


def all_registered_keys():
    return current_work_registrar.get_all_keys()
