"""Evidence, from inside every process of a phase, that the multi-chip stack was active.

Nothing in vLLM reads `USE_FLAGGEMS`, and with `VLLM_PLUGINS=fl` but no plugin installed vLLM
silently runs plain (FACTS.md), so the flags we set prove nothing. This recorder is loaded into
every Python process of a phase (the phase script, vLLM's engine core, its workers, the
server) through a `sitecustomize` on PYTHONPATH, and writes what actually happened there:
which vLLM plugins each process loaded, whether `flag_gems` was imported and enabled and how
many ATen ops it took over, which Triton distribution was imported, which distributed backend
was initialised. One JSON line per event, appended and flushed at once, so a killed process
loses nothing it recorded. Standard library only; it imports nothing of the stack itself, it
only wraps functions when the stack imports them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ENV_DIR = "MODELVERIFY_EVIDENCE_DIR"
HOOK_DIR = Path(__file__).resolve().parent / "evidence_hook"


def record(event: str, **data: Any) -> None:
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return
    try:
        import multiprocessing

        proc = multiprocessing.current_process().name
    except Exception:  # noqa: BLE001 - evidence must never break the engine
        proc = "?"
    line = {"event": event, "pid": os.getpid(), "process": proc, "time": round(time.time(), 3), **data}
    try:
        with open(os.path.join(folder, f"evidence-{os.getpid()}.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
    except OSError:
        pass


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _patch_plugins(module: Any) -> None:
    original = module.load_plugins_by_group

    def load_plugins_by_group(group: str, *args: Any, **kwargs: Any) -> Any:
        plugins = original(group, *args, **kwargs)
        record("plugins_loaded", group=group, names=sorted(plugins or {}),
               vllm_plugins=os.environ.get("VLLM_PLUGINS"))
        return plugins

    module.load_plugins_by_group = load_plugins_by_group


def _patch_flag_gems(module: Any) -> None:
    record("flaggems_imported", version=_dist_version("flag-gems") or _dist_version("flag_gems"),
           file=getattr(module, "__file__", None))
    for name in ("enable", "only_enable"):
        original = getattr(module, name, None)
        if original is None:
            continue

        def wrapper(*args: Any, __original: Callable = original, __name: str = name, **kwargs: Any) -> Any:
            try:
                out = __original(*args, **kwargs)
            except Exception as exc:
                record("flaggems_enable_failed", call=__name, error=f"{type(exc).__name__}: {exc}")
                raise
            try:
                ops = len(module.all_registered_ops())
            except Exception:  # noqa: BLE001 - older releases lack the registrar
                ops = None
            record("flaggems_enabled", call=__name, ops=ops,
                   unused=kwargs.get("unused"), record=kwargs.get("record"))
            return out

        setattr(module, name, wrapper)


def _patch_dist(module: Any) -> None:
    original = module.init_process_group

    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        backend = kwargs.get("backend", args[0] if args else None)
        record("dist_init", backend=str(backend), world_size=kwargs.get("world_size"))
        return original(*args, **kwargs)

    module.init_process_group = init_process_group


def _note_triton(module: Any) -> None:
    record("triton_imported", version=getattr(module, "__version__", None),
           flagtree=_dist_version("flagtree"), file=getattr(module, "__file__", None))


WATCH: dict[str, Callable[[Any], None]] = {
    "vllm.plugins": _patch_plugins,
    "flag_gems": _patch_flag_gems,
    "torch.distributed.distributed_c10d": _patch_dist,
    "triton": _note_triton,
}


class _Loader(importlib.abc.Loader):
    """Runs the real loader, then lets the recorder look at (and wrap) the module."""

    def __init__(self, real: importlib.abc.Loader, after: Callable[[Any], None]) -> None:
        self.real, self.after = real, after

    def create_module(self, spec: Any) -> Any:
        return self.real.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self.real.exec_module(module)
        except Exception as exc:
            record("import_failed", module=module.__name__, error=f"{type(exc).__name__}: {exc}")
            raise
        try:
            self.after(module)
        except Exception as exc:  # noqa: BLE001 - evidence must never break the engine
            record("recorder_error", module=module.__name__, error=repr(exc))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        after = WATCH.get(name)
        if after is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, after)
                return spec
        return None


def install() -> None:
    """Watch this process (once) and every child, which inherits the environment."""
    if not os.environ.get(ENV_DIR) or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    for name in list(WATCH):
        if name in sys.modules:  # imported before us: record what we can
            try:
                WATCH[name](sys.modules[name])
            except Exception:  # noqa: BLE001
                pass
    record("process_started", argv=sys.argv[:3])


def activate(folder: str | Path) -> None:
    """Turn recording on for this process and every Python process it starts."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = str(folder)
    paths = [str(HOOK_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    install()


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every event recorded by every process, oldest first."""
    events = []
    for path in sorted(Path(folder).glob("evidence-*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a process killed mid-line
    return sorted(events, key=lambda e: e.get("time", 0))
