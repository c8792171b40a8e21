"""Evidence, from inside every process of a phase, of what the multi-chip stack really did.

Nothing in vLLM reads `USE_FLAGGEMS`, a missing plugin is silently skipped, and a log line can
claim anything (FACTS.md), so neither the flags we set nor printed lines prove activity. This
recorder is loaded into every Python process of a phase (the phase script, vLLM's engine core,
its workers, the server) through a `sitecustomize` on PYTHONPATH, and writes what happened there:

- the environment the process saw (USE_FLAGGEMS, FLAGCX_PATH, VLLM_PLUGINS, VLLM_FL_*, unset
  told apart from empty);
- which vLLM plugins it loaded, and what each platform plugin answered;
- FlagGems: ops taken over (`torch.library` registrations of `flag_gems` functions, by
  `enable`/`only_enable` or otherwise) and — the strong evidence — which FlagGems kernels really
  ran, through the ATen dispatcher or called directly (the plugin's own op dispatch), with
  call counts at 1, 10, 100, …;
- the plugin's out-of-tree vLLM ops (`CustomOp.register_oot`) and whether their forward ran;
- which Triton was imported and whether FlagTree owns it;
- FlagCX: the distributed backend, collectives per backend, `libflagcx` loaded through ctypes.

One JSON line per event, appended and flushed at once, so a killed process loses nothing it
recorded. Standard library only; it imports nothing of the stack itself, it only wraps functions
when the stack imports them.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV_DIR = "MODELVERIFY_EVIDENCE_DIR"
HOOK_DIR = Path(__file__).resolve().parent / "evidence_hook"
# Variables that switch the stack on or off; None in the record means unset ("" is empty).
STACK_VARIABLES = ("USE_FLAGGEMS", "FLAGCX_PATH", "VLLM_PLUGINS")
STACK_PREFIXES = ("VLLM_FL_", "FLAGGEMS_")
# Call counts at which a kernel's use is written again (1 is its first call).
MILESTONES = frozenset(10**k for k in range(1, 8))
# Callers that are FlagGems itself or the machinery around it, not someone dispatching to it.
_INTERNAL_CALLERS = frozenset(
    {
        "flag_gems",
        "torch",
        "triton",
        "stack_evidence",
        "functools",
        "contextlib",
        "inspect",
        "typing",
        "importlib",
        "abc",
        "copy",
    }
)


# flag_gems packages holding kernels: ops, fused, modules, experimental_ops, fused_moe_…, vendor ops.
def _kernel_package(segment: str) -> bool:
    return segment == "modules" or segment.endswith("ops") or segment.startswith("fused")


_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "broadcast",
    "all_to_all",
    "all_to_all_single",
    "send",
    "recv",
)


def record(event: str, **data: Any) -> None:
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return
    try:
        import multiprocessing

        proc = multiprocessing.current_process().name
    except Exception:  # noqa: BLE001 - evidence must never break the engine
        proc = "?"
    line = {
        "event": event,
        "pid": os.getpid(),
        "process": proc,
        "time": round(time.time(), 3),
        **data,
    }
    try:
        with open(
            os.path.join(folder, f"evidence-{os.getpid()}.jsonl"), "a", encoding="utf-8"
        ) as fh:
            fh.write(json.dumps(line, default=str) + "\n")
    except OSError:
        pass


def stack_environment() -> dict[str, str | None]:
    """The variables that switch the stack, as this process sees them (None = unset)."""
    env: dict[str, str | None] = {name: os.environ.get(name) for name in STACK_VARIABLES}
    env.update({k: v for k, v in sorted(os.environ.items()) if k.startswith(STACK_PREFIXES)})
    return env


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}"


def _compiling() -> Callable[[], bool]:
    """torch's own "am I being traced?" test, taken when a wrapper is made (torch is imported by
    then). Under torch.compile a wrapper calls straight through: file writes and frame lookups
    cannot be traced, and vLLM compiles with fullgraph=True."""
    torch = sys.modules.get("torch")
    test = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return test if callable(test) else (lambda: False)


def _counted(target: Callable, event: str, /, **fields: Any) -> Callable:
    """`target`, writing `event` on its first call and at each milestone of its call count."""
    calls = [0]
    compiling = _compiling()

    @functools.wraps(target)
    def counted(*args: Any, **kwargs: Any) -> Any:
        if compiling():
            return target(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 1 or calls[0] in MILESTONES:
            record(event, calls=calls[0], **fields)
        return target(*args, **kwargs)

    counted.__modelverify_wrapped__ = True  # type: ignore[attr-defined]
    return counted


# ---- vLLM plugins -------------------------------------------------------------------------


def _patch_plugins(module: Any) -> None:
    original = module.load_plugins_by_group

    def load_plugins_by_group(group: str, *args: Any, **kwargs: Any) -> Any:
        plugins = original(group, *args, **kwargs)
        names = sorted(plugins or {})
        record(
            "plugins_loaded",
            group=group,
            names=names,
            vllm_plugins=os.environ.get("VLLM_PLUGINS"),
            modules={n: getattr(f, "__module__", None) for n, f in (plugins or {}).items()},
        )
        if group == "vllm.platform_plugins" and isinstance(plugins, dict):
            for name, func in list(plugins.items()):
                plugins[name] = _platform_answer(name, func)
        return plugins

    module.load_plugins_by_group = load_plugins_by_group


def _platform_answer(name: str, func: Callable) -> Callable:
    """A platform plugin answers a platform class (it takes over) or None (not this machine)."""

    @functools.wraps(func)
    def answer(*args: Any, **kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        record("platform_plugin_answered", name=name, platform=None if out is None else str(out))
        return out

    return answer


def _vllm_op_name(module: Any, class_name: str) -> str | None:
    """vLLM's registry name of the op class an OOT op replaces (class RMSNorm is "rms_norm"): the
    name the plugin's op lists (VLLM_FL_FLAGOS_BLACKLIST) use for its own dispatch."""
    registry = getattr(module, "op_registry", None) or {}
    return next(
        (
            key
            for key, op_cls in registry.items()
            if getattr(op_cls, "__name__", None) == class_name
        ),
        None,
    )


def _patch_custom_op(module: Any) -> None:
    """Out-of-tree ops a plugin registers in vLLM, and whether their forward really ran."""
    custom_op = getattr(module, "CustomOp", None)
    original = getattr(custom_op, "register_oot", None)
    if original is None:
        return
    original = original.__func__

    def register_oot(cls: Any, _decorated_op_cls: Any = None, name: str | None = None) -> Any:
        def note(op_cls: Any) -> Any:
            op = name if name is not None else cls.__name__
            key = _vllm_op_name(module, op)
            record("plugin_op_registered", op=op, cls=_name(op_cls), vllm_op=key)
            for attr in (
                "forward_oot",
                "forward_cuda",
                "forward_cpu",
                "forward_native",
                "forward_xpu",
                "forward_hip",
                "forward_tpu",
                "forward",
            ):
                fn = op_cls.__dict__.get(attr)
                if inspect.isfunction(fn):
                    setattr(
                        op_cls,
                        attr,
                        _counted(
                            fn, "plugin_op_ran", op=op, cls=_name(op_cls), method=attr, vllm_op=key
                        ),
                    )
            return op_cls

        if _decorated_op_cls is None:
            inner = original(cls, None, name)
            return lambda op_cls: inner(note(op_cls))
        return original(cls, note(_decorated_op_cls), name)

    custom_op.register_oot = classmethod(register_oot)


# ---- FlagGems --------------------------------------------------------------------------

_taking_over = threading.local()


def _note_taken_over(key: str, fn: Any, dispatch_key: Any) -> None:
    batch = getattr(_taking_over, "ops", None)
    if batch is not None:
        batch.append(key)
    else:
        record("flaggems_registered", ops=[key], fn=_name(fn), dispatch_key=str(dispatch_key))


_FLAGGEMS_FOLDERS: list[tuple[str, ...]] = []  # found once flag_gems is imported


def _flaggems_folders() -> tuple[str, ...]:
    if not _FLAGGEMS_FOLDERS and "flag_gems" in sys.modules:
        _FLAGGEMS_FOLDERS.append(_find_flaggems_folders())
    return _FLAGGEMS_FOLDERS[0] if _FLAGGEMS_FOLDERS else ()


def _find_flaggems_folders() -> tuple[str, ...]:
    """Where FlagGems' code lives: the `flag_gems` package folder and every top-level folder its
    distribution installed. FlagGems imports arch-specialised and vendor ops as top-level modules
    (`hopper.ops`, `_metax.ops`) from folders inside its package, so a module name says nothing."""
    package = sys.modules.get("flag_gems")
    folders = set()
    if getattr(package, "__file__", None):
        folders.add(os.path.dirname(os.path.realpath(package.__file__)))
    for name in ("flag_gems", "flag-gems"):
        try:
            import importlib.metadata as metadata

            dist = metadata.distribution(name)
        except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
            continue
        for entry in dist.files or ():
            top = entry.parts[0] if entry.parts else ""
            if top and top != ".." and not top.endswith((".dist-info", ".egg-info", ".py")):
                folders.add(os.path.realpath(str(dist.locate_file(top))))
        break
    return tuple(sorted(folders))


def is_flaggems_code(fn: Any) -> bool:
    """A function is FlagGems' when its code file lies in FlagGems' folders, whatever its module
    is called; without a code file (a builtin), its module name decides."""
    code = getattr(inspect.unwrap(fn), "__code__", None) if callable(fn) else None
    if code is None:
        return str(getattr(fn, "__module__", "") or "").split(".")[0] == "flag_gems"
    return _in_flaggems(code.co_filename)


def _in_flaggems(path: str | None) -> bool:
    if not path:
        return False
    where = os.path.realpath(path)
    return any(where.startswith(folder + os.sep) for folder in _flaggems_folders())


def _patch_library(module: Any) -> None:
    """FlagGems takes ATen ops over with `torch.library.Library.impl`: count them, time them."""
    library = getattr(module, "Library", None)
    original = getattr(library, "impl", None)
    if original is None or getattr(original, "__modelverify_wrapped__", False):
        return

    def impl(
        self: Any, op_name: Any, fn: Any, dispatch_key: Any = "", *args: Any, **kwargs: Any
    ) -> Any:
        if callable(fn) and is_flaggems_code(fn):
            key = (
                op_name if isinstance(op_name, str) else str(getattr(op_name, "__name__", op_name))
            )
            _note_taken_over(key, fn, dispatch_key or getattr(self, "dispatch_key", ""))
            fn = _counted(fn, "flaggems_op_ran", op=key, fn=_name(fn), via="aten")
        return original(self, op_name, fn, dispatch_key, *args, **kwargs)

    impl.__modelverify_wrapped__ = True  # type: ignore[attr-defined]
    library.impl = impl


_internal: dict[str, bool] = {}  # caller module -> FlagGems or its machinery (not a dispatcher)


def _direct(fn: Callable) -> Callable:
    """A FlagGems kernel function, writing who called it from outside FlagGems (direct dispatch)."""
    calls: dict[str, int] = {}
    compiling = _compiling()

    @functools.wraps(fn)
    def kernel(*args: Any, **kwargs: Any) -> Any:
        if compiling():
            return fn(*args, **kwargs)
        scope = sys._getframe(1).f_globals
        caller = str(scope.get("__name__", "?"))
        if caller not in _internal:
            _internal[caller] = caller.split(".")[0] in _INTERNAL_CALLERS or _in_flaggems(
                scope.get("__file__")
            )
        if not _internal[caller]:
            n = calls[caller] = calls.get(caller, 0) + 1
            if n == 1 or n in MILESTONES:
                record(
                    "flaggems_op_ran",
                    op=fn.__name__,
                    fn=_name(fn),
                    via="direct",
                    caller=caller,
                    calls=n,
                )
        return fn(*args, **kwargs)

    kernel.__modelverify_wrapped__ = True  # type: ignore[attr-defined]
    return kernel


def _patch_flaggems_kernels(module: Any) -> None:
    """Wrap the kernel functions a `flag_gems.ops|fused|modules…` module defines."""
    if not any(_kernel_package(seg) for seg in module.__name__.split(".")[1:]):
        return
    for attr, value in list(vars(module).items()):
        if (
            not attr.startswith("_")
            and inspect.isfunction(value)
            and value.__module__ == module.__name__
            and not getattr(value, "__modelverify_wrapped__", False)
        ):
            setattr(module, attr, _direct(value))


def _patch_flaggems_elsewhere(package: Any) -> None:
    """Kernels of modules FlagGems imported under another top-level name (`hopper.ops.mm`, a
    vendor's `_metax.ops`) from its own folders: wrapped like `flag_gems.ops.*`, and the copies
    FlagGems already took of them into its own namespaces point at the wrappers."""
    wrapped: dict[int, Any] = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "flag_gems" or not _in_flaggems(getattr(module, "__file__", None)):
            continue
        before = dict(vars(module))
        _patch_flaggems_kernels(module)
        for attr, value in vars(module).items():
            if before.get(attr) is not value:
                wrapped[id(before[attr])] = value
    if not wrapped:
        return
    for module in list(sys.modules.values()):
        if _in_flaggems(getattr(module, "__file__", None)):
            for attr, value in list(vars(module).items()):
                if id(value) in wrapped:
                    setattr(module, attr, wrapped[id(value)])


DISABLE_VAR = (
    "MODELVERIFY_FLAGGEMS_UNUSED"  # comma-separated kernels the culprit-op search switches off
)


def _disable_asked_ops(call: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The culprit-op search's switch where FlagGems is enabled without the FL plugin: the
    kernels named in MODELVERIFY_FLAGGEMS_UNUSED join `enable(unused=…)` or leave
    `only_enable(include=…)`, as if the caller had listed them itself."""
    asked = [o.strip() for o in os.environ.get(DISABLE_VAR, "").split(",") if o.strip()]
    if not asked:
        return args, kwargs
    kw = "unused" if call == "enable" else "include"
    args = list(args)
    given = args[1] if len(args) > 1 else kwargs.get(kw)
    if isinstance(given, str):  # a YAML op list: not ours to rewrite
        record(
            "flaggems_ops_disabled",
            call=call,
            ops=[],
            error=f"{kw} is the file {given}; nothing disabled",
        )
        return tuple(args), kwargs
    if len(args) > 1:
        args.pop(1)
    kwargs.pop(kw, None)
    given = list(given or [])
    kwargs[kw] = (
        sorted(set(given) | set(asked))
        if call == "enable"
        else [o for o in given if o not in asked]
    )
    record("flaggems_ops_disabled", call=call, ops=asked)
    return tuple(args), kwargs


OPLOG_VAR = "MODELVERIFY_FLAGGEMS_OPLOG"  # "1": FlagGems' own op log feeds the evidence


class _OpLog(logging.Handler):
    """FlagGems' own op log, read as it is written: every FlagGems function logs `GEMS <OP>` when
    it runs (what `record=True` writes to oplist.log), whether it was registered through
    torch.library, took over a vLLM layer or is called directly. Each function once."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: set[tuple[str, str]] = set()

    def emit(self, entry: logging.LogRecord) -> None:
        key = (entry.name, entry.funcName)
        if key in self.seen:
            return
        try:
            message = entry.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call is not ours to raise
            message = str(entry.msg)
        if not message.startswith("GEMS"):  # FlagGems' other messages name no op
            return
        self.seen.add(key)
        record(
            "flaggems_op_ran",
            op=entry.funcName,
            fn=f"{entry.name}.{entry.funcName}",
            via="oplog",
            message=message[:120],
        )


def _read_flaggems_oplog() -> None:
    """With OPLOG_VAR set (the culprit search's steps), FlagGems' loggers — `flag_gems` and the
    top-level packages it loads from its own folders (`hopper`, a vendor's) — log to the evidence.
    As with FlagGems' own `record=True`, they log at DEBUG and stop propagating, so the phase's
    console log does not fill with op lines."""
    if os.environ.get(OPLOG_VAR, "") not in ("1", "true", "True"):
        return
    handler = _OpLog()
    tops = {"flag_gems"} | {
        name.split(".")[0]
        for name, module in list(sys.modules.items())
        if _in_flaggems(getattr(module, "__file__", None))
    }
    for top in sorted(tops):
        logger = logging.getLogger(top)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
    record("flaggems_oplog_read", loggers=sorted(tops))


def _patch_flag_gems(module: Any) -> None:
    record(
        "flaggems_imported",
        version=_dist_version("flag-gems") or _dist_version("flag_gems"),
        file=getattr(module, "__file__", None),
    )
    for name in list(sys.modules):
        if name.startswith("flag_gems."):
            _patch_flaggems_kernels(sys.modules[name])
    _patch_flaggems_elsewhere(module)
    _read_flaggems_oplog()
    for name in ("enable", "only_enable"):
        original = getattr(module, name, None)
        if original is None:
            continue

        def wrapper(
            *args: Any, __original: Callable = original, __name: str = name, **kwargs: Any
        ) -> Any:
            args, kwargs = _disable_asked_ops(__name, args, kwargs)
            _taking_over.ops = []
            try:
                out = __original(*args, **kwargs)
            except Exception as exc:
                record("flaggems_enable_failed", call=__name, error=f"{type(exc).__name__}: {exc}")
                raise
            finally:
                taken, _taking_over.ops = _taking_over.ops, None
            try:
                names = [str(o) for o in module.all_registered_ops()]
            except Exception:  # noqa: BLE001 - older releases lack the registrar
                names = None
            record(
                "flaggems_enabled",
                call=__name,
                ops=len(names) if names is not None else len(taken),
                # through torch.library as seen, else what FlagGems says it took over (ops
                # that take over vLLM layers never pass torch.library)
                registered=sorted(set(taken) or set(names or ())),
                # by function name, what `enable(unused=…)` matches (the op search's names)
                registered_ops=sorted(set(names or ())),
                unused=kwargs.get("unused"),
                include=kwargs.get("include"),
                record=kwargs.get("record"),
            )
            return out

        setattr(module, name, wrapper)


# ---- Triton / FlagTree, FlagCX -------------------------------------------------------------


def flagtree_owns_triton() -> str | None:
    """FlagTree's version when the `flagtree` distribution installs the `triton` package.

    Reads only that distribution's file list (scanning every distribution costs 0.4 s, and this
    runs in every process that imports triton).
    """
    from importlib import metadata

    try:
        dist = metadata.distribution("flagtree")
        files = dist.files or []
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None
    return (
        dist.version
        if any(str(f).replace("\\", "/").startswith("triton/") for f in files)
        else None
    )


def _note_triton(module: Any) -> None:
    record(
        "triton_imported",
        version=getattr(module, "__version__", None),
        flagtree=flagtree_owns_triton(),
        file=getattr(module, "__file__", None),
    )


def _patch_dist(module: Any) -> None:
    original = module.init_process_group

    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        backend = kwargs.get("backend", args[0] if args else None)
        out = original(*args, **kwargs)
        try:
            world = module.get_world_size()
        except Exception:  # noqa: BLE001
            world = kwargs.get("world_size")
        record("dist_init", backend=str(backend), world_size=world)
        return out

    module.init_process_group = init_process_group
    for name in _COLLECTIVES:
        fn = getattr(module, name, None)
        if callable(fn):
            setattr(module, name, _collective(module, name, fn))


def _collective(module: Any, name: str, fn: Callable) -> Callable:
    """A torch.distributed collective, writing its group's backend the first time it is seen."""
    seen: set[str] = set()
    compiling = _compiling()
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(fn)
    def collective(*args: Any, **kwargs: Any) -> Any:
        if not compiling():
            try:
                group = (
                    signature.bind_partial(*args, **kwargs).arguments.get("group")
                    if signature
                    else None
                )
                backend, world = str(module.get_backend(group)), module.get_world_size(group)
            except Exception:  # noqa: BLE001 - evidence must never break the engine
                backend, world = "?", None
            if backend not in seen:
                seen.add(backend)
                record(
                    "collective",
                    op=name,
                    backend=backend,
                    world_size=world,
                    via="torch.distributed",
                )
        return fn(*args, **kwargs)

    return collective


def _patch_flagcx_module(module: Any) -> None:
    """FlagCX's own communicators (the FL plugin's PyFlagcxCommunicator calls libflagcx through
    ctypes, not torch.distributed): their collective methods, when the communicator is on."""
    for cls in list(vars(module).values()):
        if not isinstance(cls, type) or cls.__module__ != module.__name__:
            continue
        for name in (
            "all_reduce",
            "all_gather",
            "all_gatherv",
            "reduce_scatter",
            "reduce_scatterv",
            "broadcast",
            "send",
            "recv",
        ):
            method = cls.__dict__.get(name)
            if inspect.isfunction(method) and not getattr(method, "__modelverify_wrapped__", False):
                setattr(
                    cls, name, _communicator_call(method, f"{cls.__module__}.{cls.__qualname__}")
                )


def _communicator_call(method: Callable, owner: str) -> Callable:
    seen = [False]
    compiling = _compiling()

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not seen[0] and not compiling() and not getattr(self, "disabled", False):
            seen[0] = True
            record(
                "collective",
                op=method.__name__,
                backend="flagcx",
                world_size=getattr(self, "world_size", None),
                via=owner,
            )
        return method(self, *args, **kwargs)

    call.__modelverify_wrapped__ = True  # type: ignore[attr-defined]
    return call


def _patch_ctypes() -> None:
    """FlagCX's communicator loads `libflagcx.so` through ctypes: note it, and whether it loaded."""
    import ctypes

    original = ctypes.CDLL.__init__
    if getattr(original, "__modelverify_wrapped__", False):
        return

    def init(self: Any, name: Any, *args: Any, **kwargs: Any) -> None:
        if name and "flagcx" in os.path.basename(str(name)).lower():
            try:
                original(self, name, *args, **kwargs)
            except OSError as exc:
                record("flagcx_library", path=str(name), loaded=False, error=str(exc)[:300])
                raise
            record("flagcx_library", path=str(name), loaded=True)
            return
        original(self, name, *args, **kwargs)

    init.__modelverify_wrapped__ = True  # type: ignore[attr-defined]
    ctypes.CDLL.__init__ = init


WATCH: dict[str, Callable[[Any], None]] = {
    "vllm.plugins": _patch_plugins,
    "vllm.model_executor.custom_op": _patch_custom_op,
    "torch.library": _patch_library,
    "flag_gems": _patch_flag_gems,
    "torch.distributed.distributed_c10d": _patch_dist,
    "triton": _note_triton,
}


def _watcher(name: str) -> Callable[[Any], None] | None:
    if name in WATCH:
        return WATCH[name]
    if name.startswith("flag_gems."):
        return _patch_flaggems_kernels
    if "flagcx" in name.rsplit(".", 1)[-1].lower():
        return _patch_flagcx_module
    return None


class _Loader(importlib.abc.Loader):
    """Runs the real loader, then lets the recorder look at (and wrap) the module."""

    def __init__(self, real: importlib.abc.Loader, after: Callable[[Any], None]) -> None:
        self.real, self.after = real, after

    def create_module(self, spec: Any) -> Any:
        return self.real.create_module(spec)

    def __getattr__(
        self, name: str
    ) -> Any:  # get_source, get_resource_reader, …: the real loader's
        return getattr(self.real, name)

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
        after = _watcher(name)
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
    for name in list(sys.modules):  # imported before us: record and wrap what we can
        after = _watcher(name)
        if after is not None:
            try:
                after(sys.modules[name])
            except Exception:  # noqa: BLE001
                pass
    try:
        _patch_ctypes()
    except Exception:  # noqa: BLE001
        pass
    record("process_started", argv=sys.argv[:3], env=stack_environment())
    # a forked engine process runs no sitecustomize: it inherits the hooks, but says so itself
    os.register_at_fork(
        after_in_child=lambda: record(
            "process_started", argv=sys.argv[:3], forked=True, env=stack_environment()
        )
    )


def activate(folder: str | Path) -> None:
    """Turn recording on for this process and every Python process it starts; what an earlier
    phase left in `folder` is removed first (a phase's evidence is its own)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for stale in Path(folder).glob("evidence-*.jsonl"):
        stale.unlink(missing_ok=True)
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
