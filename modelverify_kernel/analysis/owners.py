"""Who owns the code of a frame: the name tables of owners.md, plus what is installed.

Pure: a map of what is installed (``probe_stack.py``'s ``owners``: top-level import name →
distributions, versions, vLLM plugin entry points), the tables of ``references/owners.md`` and,
optionally, the plugins a log lists, in; the owner of each frame out, with how it was decided
(``name table``, ``installed map``, ``native library``, ``loader``). ``local_map()`` reads the
map of the environment this process runs in with the probe's own code (one implementation).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .knowledge import Tables
from .logformat import STDLIB
from .logread import Frame

PROBE_SCRIPT = "probe_stack.py"
# the words of a CamelCase class name: NPUModelRunner -> NPU, Model, Runner
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
NAME_TABLE = "name table"
INSTALLED = "installed map"
NATIVE = "native library"
LOADER = "loader"

# a shared library in a frame path: /usr/lib/libnccl.so.2, libtriton.so, x.cpython-311-….so
_NATIVE = re.compile(r"(?:^|/)([^/]*?\.(?:so|dylib|dll))(?:[.\d]*)(?:$|[(\s])")


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Installed:
    """What is installed in the target (probe_stack.py's ``owners`` map)."""

    modules: dict[str, list[str]] = field(default_factory=dict)  # import name -> distributions
    versions: dict[str, str] = field(default_factory=dict)
    plugins: list[dict[str, Any]] = field(default_factory=list)  # group, name, value, dist

    @classmethod
    def from_map(cls, data: dict | None) -> Installed:
        """From the probe's JSON (its ``owners`` key, or the whole probe result)."""
        data = data or {}
        if "owners" in data and isinstance(data["owners"], dict):
            data = data["owners"]
        modules = {
            str(k): [_dist_name(str(d)) for d in (v if isinstance(v, list) else [v])]
            for k, v in (data.get("modules") or {}).items()
        }
        plugins = [p for p in data.get("plugins") or [] if isinstance(p, dict)]
        return cls(modules, dict(data.get("versions") or {}), plugins)


@cache
def local_map() -> dict[str, Any]:
    """The map of the environment this process runs in, by the probe script's own function."""
    from ..resources import scripts_dir

    folder = str(scripts_dir())
    added = folder not in sys.path
    if added:  # the script imports its sibling helpers (_common, stack_evidence)
        sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(
            "modelverify_probe_stack", scripts_dir() / PROBE_SCRIPT
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.installed_owners()
    finally:
        if added:
            sys.path.remove(folder)


def _top(value: str) -> str:
    return value.split(":")[0].split(".")[0].strip()


class Owners:
    """The owner function the judging uses: a frame's path → (component or None, how)."""

    def __init__(
        self, tables: Tables, installed: Installed | None = None, log_plugins: Iterable[str] = ()
    ) -> None:
        self.tables = tables
        self.installed = installed or Installed()
        # modules a plugin entry point names (installed map) or a log lists: the plugin's code
        self.plugin_modules: dict[str, str] = {}
        plugin_dists: set[str] = set()
        for ep in self.installed.plugins:
            comp = tables.plugin_groups.get(str(ep.get("group")))
            top = _top(str(ep.get("value", "")))
            if comp and top and not self._named(top):
                self.plugin_modules[top] = comp
                if ep.get("dist"):
                    plugin_dists.add(_dist_name(str(ep["dist"])))
        for module in log_plugins:
            top = _top(module)
            if top and not self._named(top):
                self.plugin_modules.setdefault(top, "plugin")
        self._plugin_dists = plugin_dists

    def _named(self, pkg: str) -> bool:
        """The name tables give this package to a component (or call it a library)."""
        return pkg in self.tables.packages

    def package(self, path: str) -> str | None:
        """The top-level package a frame's file belongs to."""
        parts = path.replace("\\", "/").split("/")
        for marker in ("site-packages", "dist-packages"):
            if marker in parts:
                idx = len(parts) - 1 - parts[::-1].index(marker)
                return parts[idx + 1].removesuffix(".py") if idx + 1 < len(parts) else None
        t = self.tables
        for p in parts[:-1]:  # a source checkout: the names known exactly first
            if p in t.packages or p in self.plugin_modules:
                return p
            for folder, pkg in t.checkout_folders:
                if folder.fullmatch(p):
                    return pkg
        # then by the shape of a name (a user's "vllm_ci" folder above vLLM's checkout is not one)
        return next(
            (p for p in parts[:-1] if any(pat.fullmatch(p) for pat, _ in t.package_patterns)), None
        )

    def package_owner(self, pkg: str | None) -> tuple[str | None, str]:
        """(component, how) of a top-level package: name tables, then the installed map."""
        if not pkg:
            return None, NAME_TABLE
        t = self.tables
        if pkg in t.packages:
            return t.packages[pkg], NAME_TABLE
        if pkg in self.plugin_modules:
            return self.plugin_modules[pkg], INSTALLED
        for dist in self.installed.modules.get(pkg, []):
            if dist in self._plugin_dists:
                return "plugin", INSTALLED
            for pat, comp in t.distributions:
                if pat.fullmatch(dist):
                    return comp, INSTALLED
        comp = next((c for pat, c in t.package_patterns if pat.fullmatch(pkg)), None)
        return comp, NAME_TABLE

    def native(self, path: str) -> tuple[bool, str | None]:
        """(a row of the native libraries' table decides, its component) of a frame path."""
        m = _NATIVE.search(path.replace("\\", "/"))
        if m is None:
            return False, None
        for pat, comp in self.tables.native_libs:
            if pat.search(m.group(1)):
                return True, comp
        return False, None  # a package's own extension module: its package decides

    def frame(self, fr: Frame, caller: bool = False) -> tuple[str | None, str]:
        """(component, how) owning one frame's code (None: a library's, skipped)."""
        is_native, comp = self.native(fr.path)
        if is_native:
            return comp, NATIVE
        if "/" not in fr.path and "." not in fr.path.split("::", 1)[0]:  # a bare native symbol
            hit = next((c for p, c in self.tables.native_symbols if p.fullmatch(fr.path)), None)
            return hit, NATIVE
        pkg = self.package(fr.path)
        if not caller:  # caller(...) rows skip the kernel machinery (Triton) altogether
            path = fr.path.replace("\\", "/")
            for owner_pkg, where, owner in self.tables.owned_code:
                if pkg == owner_pkg and where.search(path):
                    return owner, NAME_TABLE
        return self.package_owner(pkg)

    def loaded(self, frames: list[Frame]) -> dict[str, str]:
        """Folders of code a loader frame called into → the component owning it (a plugin's
        ``register()`` reached from vLLM's plugin loader, whatever its module is called)."""
        out: dict[str, str] = {}
        for i, fr in enumerate(frames):
            path = fr.path.replace("\\", "/")
            comp = next((c for pat, c in self.tables.loaders if pat.search(path)), None)
            if comp is None:
                continue
            loader_pkg = self.package(path)
            for callee in frames[i + 1 :]:
                cpath = callee.path.replace("\\", "/")
                if STDLIB.search(cpath) or any(p.search(cpath) for p, _ in self.tables.loaders):
                    continue
                pkg = self.package(cpath)
                if pkg is not None and pkg == loader_pkg:
                    break  # the loader went on in its own package: it called no plugin code
                key = _folder_of(cpath, pkg)
                out.setdefault(key, comp)
                break
        return out

    def class_owner(self, text: str) -> str | None:
        """The component whose code a class the exception names is (owners.md, *Classes named
        in the failure's text*): a word of its name is a device platform's or a plugin module's."""
        plugin_words = {
            m.removeprefix("vllm_").lower(): c
            for m, c in self.plugin_modules.items()
            if len(m.removeprefix("vllm_")) >= 3
        }
        for pattern in self.tables.named_classes:
            for match in pattern.finditer(text):
                for word in _CAMEL.findall(match.group(1)):
                    if word.lower() in plugin_words:
                        return plugin_words[word.lower()]
                    hit = next((c for p, c in self.tables.class_words if p.fullmatch(word)), None)
                    if hit:
                        return hit
        return None

    def module_owner(self, text: str) -> str | None:
        """The component owning a module the exception blames (owners.md, *module named in the
        text*): its top-level package's owner."""
        for pattern in self.tables.named_modules:
            match = pattern.search(text)
            if match:
                return self.package_owner(match.group(1).split(".", 1)[0])[0]
        return None

    def owner_of(
        self, frames: list[Frame], caller: bool = False
    ) -> tuple[str | None, str, Frame | None]:
        """The innermost frame with an owner: (component, how, frame)."""
        loaded = self.loaded(frames)
        for fr in reversed(frames):
            path = fr.path.replace("\\", "/")
            hit = next((c for folder, c in loaded.items() if path.startswith(folder)), None)
            if hit:
                return hit, LOADER, fr
            comp, how = self.frame(fr, caller)
            if comp:
                return comp, how, fr
        return None, NAME_TABLE, None


def _folder_of(path: str, pkg: str | None) -> str:
    """The folder holding a package's code (the package folder, else the file's own folder)."""
    if pkg:
        i = path.find(f"/{pkg}/")
        if i >= 0:
            return path[: i + len(pkg) + 2]
        i = path.find(f"/{pkg}.py")
        if i >= 0:
            return path[: i + len(pkg) + 4]
    return path.rsplit("/", 1)[0] + "/" if "/" in path else path


def listed_plugins(lines: Iterable[str], tables: Tables) -> list[str]:
    """Plugin modules a log lists (vLLM prints them at start-up)."""
    out: list[str] = []
    for line in lines:
        if "->" not in line:
            continue
        for pat in tables.log_plugins:
            m = pat.search(line.rstrip("\n"))
            if m and m.group(1) not in out:
                out.append(m.group(1))
    return out
