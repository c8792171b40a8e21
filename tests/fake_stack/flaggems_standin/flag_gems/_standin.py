"""Fault and variant knobs of the TEST-ONLY flag_gems stand-in (read at every kernel call).

`FAKE_GEMS_FAULT`, a comma list:
- `op=raise`         the op's kernel raises RuntimeError from `flag_gems/ops/<module>.py`
                     (or `flag_gems/modules/normalization.py` for `rms_norm`);
- `op=scale:1.05`    the kernel's output is multiplied by the factor (a numerically wrong kernel);
- `a+b=raise`        raise only when ops a and b are both enabled in this process (two kernels
                     that fail only together); raised by whichever of the two runs.
`FAKE_GEMS_VARIANT`, a comma list (results stay correct, bits may differ):
- `op=reorder`       another summation order (ops without a reduction are unchanged);
- `op=bf16` / `op=float64`   computed at that precision, cast back to the input's dtype.

Op names: the kernel function names `embedding`, `silu`, `rsqrt`, `mean_dim` (also accepted:
`mean`, `mean.dim`), and `rms_norm` for `flag_gems.modules.normalization.gems_rms_forward`, the
function the plugin calls directly. An op counts as enabled when `enable`/`only_enable`
registered it in this process, or — for `rms_norm` — once `gems_rms_forward` has been called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

OPS = ("embedding", "silu", "rsqrt", "mean_dim", "rms_norm")
_ALIASES = {
    "mean": "mean_dim",
    "mean.dim": "mean_dim",
    "rms": "rms_norm",
    "gems_rms_forward": "rms_norm",
}
VARIANTS = ("reorder", "bf16", "float64")

# function names registered by enable/only_enable in this process, plus "rms_norm" once called
ACTIVE: set[str] = set()


def canonical(name: str) -> str:
    name = name.strip()
    return _ALIASES.get(name, name)


@dataclass(frozen=True)
class Fault:
    raise_: bool = False
    scale: float | None = None
    reason: str = ""


def _items(var: str):
    for item in os.environ.get(var, "").split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            yield key.strip(), value.strip()


def fault(op: str) -> Fault:
    """The fault configured for `op` right now (FAKE_GEMS_FAULT), or no fault."""
    for key, value in _items("FAKE_GEMS_FAULT"):
        names = [canonical(k) for k in key.split("+")]
        if op not in names:
            continue
        if value == "raise":
            if len(names) == 1:
                return Fault(raise_=True, reason=f"FAKE_GEMS_FAULT {key}=raise")
            if all(n in ACTIVE for n in names):
                return Fault(raise_=True, reason=f"FAKE_GEMS_FAULT {key}=raise (both enabled)")
        elif value.startswith("scale:") and len(names) == 1:
            return Fault(
                scale=float(value.split(":", 1)[1]), reason=f"FAKE_GEMS_FAULT {key}={value}"
            )
    return Fault()


def variant(op: str) -> str | None:
    """The variant configured for `op` right now (FAKE_GEMS_VARIANT): reorder, bf16, float64."""
    for key, value in _items("FAKE_GEMS_VARIANT"):
        if canonical(key) == op and value in VARIANTS:
            return value
    return None


def compute_dtype(op: str, dtype: torch.dtype) -> torch.dtype:
    v = variant(op)
    if v == "bf16" and dtype.is_floating_point:
        return torch.bfloat16
    if v == "float64" and dtype.is_floating_point:
        return torch.float64
    return dtype


def apply_scale(out, f: Fault):
    return out * f.scale if f.scale is not None else out


def elementwise(op: str, x, fn, f: Fault):
    """`fn(x)` at the precision `op`'s variant asks for, cast back, scaled by its fault. (Raising
    stays in each kernel file: its frame is what names the culprit op.)"""
    dtype = compute_dtype(op, x.dtype)
    out = fn(x if dtype == x.dtype else x.to(dtype))
    return apply_scale(out if out.dtype == x.dtype else out.to(x.dtype), f)
