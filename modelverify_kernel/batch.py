"""`model-verify batch MATRIX`: one verification per model × target, resumable, a few at a time.

Each cell is `model-verify run` (the same papermill call, `__main__.run_notebook`) in a child
process of its own process group, so a crashing cell cannot take the batch down and stopping
the batch stops every cell. Cells on one machine (a Docker host, or this one) run at most
`per_host` at a time, because two verifications on one machine would share its devices;
different machines run in parallel. OUT/batch.json records every cell's state after each
change, and a cell folder that already holds a finished report is never run again.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ParameterError, UserError
from .params import PARAMETER_NAMES, validate
from .records import now, write_atomic

STATE_FILE = "batch.json"
LOCK_FILE = (
    ".batch.lock"  # held while a batch runs in OUT: a second one would move live cell folders
)
CELL_LOG = "batch-cell.log"  # the cell process's own output (papermill's), inside the cell folder
THIS_MACHINE = "local"  # the per-host key of `local: true` targets and of daemons on this machine
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Parameters each cell gets from the matrix's entries, never from a `parameters` section.
SET_BY_BATCH = ("model_path", "container", "docker_host", "output_dir", "target_label")

_PARAMS = {"type": "object"}
_NAME = {"type": "string", "pattern": NAME.pattern}
SCHEMA = {
    "type": "object",
    "required": ["models", "targets"],
    "additionalProperties": False,
    "properties": {
        "parameters": _PARAMS,
        "models": {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "required": ["model_path"],
                        "additionalProperties": False,
                        "properties": {
                            "model_path": {"type": "string", "minLength": 1},
                            "name": _NAME,
                            "parameters": _PARAMS,
                        },
                    },
                ]
            },
        },
        "targets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": _NAME,
                    "container": {"type": "string", "minLength": 1},
                    "docker_host": {"type": ["string", "null"]},
                    "local": {"type": "boolean"},
                    "host": _NAME,
                    "parameters": _PARAMS,
                },
            },
        },
        "cells": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model", "target"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string"},
                    "target": {"type": "string"},
                    "skip": {"type": "boolean"},
                    "parameters": _PARAMS,
                },
            },
        },
    },
}
FIXES = {  # what to write instead, by the schema rule that failed
    "required": "add it",
    "additionalProperties": "the keys are {allowed}",
    "type": "give a {expected}",
    "minItems": "give at least one entry",
    "minLength": "give a non-empty string",
    "pattern": "use letters, digits, '.', '_' or '-' (it names the cell's folder)",
    "anyOf": "give a model_path string or a mapping with model_path (and optional name, parameters)",
}


@dataclass(frozen=True)
class Cell:
    """One verification of the matrix: a model on a target, in OUT/<model>__<target>/."""

    model: str
    target: str
    host: str  # machine whose devices the cell uses: the per-host limit counts cells by it
    parameters: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{self.model}__{self.target}"

    @property
    def label(self) -> str:
        return f"{self.model} × {self.target}"


def model_slug(model_path: str) -> str:
    """The folder name of a model: a hub ID org/name gives org--name, a path its last part."""
    text = model_path.rstrip("/")
    base = (
        text.replace("/", "--")
        if not text.startswith((".", "/")) and text.count("/") == 1
        else text.rsplit("/", 1)[-1]
    )
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"


def host_key(target: Mapping[str, Any]) -> str:
    """The machine a target's cells run on: `host` if given; this machine for `local: true`, the
    default daemon and unix:// sockets; else the daemon's host name (tcp:// and ssh:// to one
    machine are one host)."""
    if target.get("host"):
        return target["host"]
    docker_host = target.get("docker_host")
    if target.get("local") or not docker_host or docker_host.startswith("unix://"):
        return THIS_MACHINE
    return urlparse(docker_host).hostname or docker_host


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; mapping values (env, run_a_env, …) are merged key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                value = {**out[key], **value}
            out[key] = value
    return out


def _entry(path: list, data: Any) -> str:
    """`targets[1] (gpu-a)` for the schema path of an error."""
    words, node = [], data
    for part in path:
        node = node[part] if isinstance(node, (list, dict)) else None
        if isinstance(part, int):
            words[-1] += f"[{part}]"
            if isinstance(node, dict) and isinstance(
                node.get("name") or node.get("model_path"), str
            ):
                words[-1] += f" ({node.get('name') or node.get('model_path')})"
        else:
            words.append(str(part))
    return ".".join(words) or "the top level"


def _schema_error(source: str, data: Any) -> UserError | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(SCHEMA).iter_errors(data))
    if error is None:
        return None
    where = _entry(list(error.absolute_path), data)
    rule = error.validator
    if rule == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))[0]
        close = get_close_matches(extra, allowed, n=1)
        problem = f"has the unknown key {extra!r}" + (
            f" (did you mean {close[0]}?)" if close else ""
        )
        fix = FIXES[rule].format(allowed=", ".join(allowed))
    elif rule == "required":
        missing = [k for k in error.validator_value if k not in error.instance][0]
        problem, fix = f"lacks {missing}", FIXES[rule]
    else:
        problem = f"is {error.instance!r}, which does not fit ({error.message})"
        expected = (
            error.validator_value
            if isinstance(error.validator_value, str)
            else "value of the right type"
        )
        fix = FIXES.get(rule, "see the matrix format in the README").format(expected=expected)
    return UserError(f"Matrix {source}: {where} {problem}; {fix}.")


def _check_names(source: str, where: str, section: Mapping[str, Any]) -> None:
    for name in section:
        if name in SET_BY_BATCH:
            raise UserError(
                f"Matrix {source}: {where} sets {name}, which the batch sets from the model and target "
                "entries; give it there (model_path in models, container/docker_host in targets)."
            )
        if name not in PARAMETER_NAMES:
            close = get_close_matches(name, PARAMETER_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(
                f"Matrix {source}: {where} has {name!r}, which is no parameter{hint}; "
                "`model-verify run --help-notebook` lists them."
            )


def load_matrix(path: Path, out: Path) -> list[Cell]:
    """The cells of a matrix file, every cell's parameters validated; a bad entry is a user error."""
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"Cannot read the matrix {source} ({getattr(exc, 'strerror', None) or exc}); "
            "give a YAML or JSON file."
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"Matrix {source} is not JSON ({exc.msg} at line {exc.lineno}); fix the file."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(
            f"Matrix {source} is not YAML ({getattr(exc, 'problem', None) or 'syntax error'}{at}); "
            "fix the file."
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"Matrix {source} is not a mapping; give models: and targets: (see the README's Batch section)."
        )
    error = _schema_error(source, data)
    if error:
        raise error

    models: dict[str, dict] = {}
    for i, entry in enumerate(data["models"]):
        entry = {"model_path": entry} if isinstance(entry, str) else entry
        slug = entry.get("name") or model_slug(entry["model_path"])
        if slug in models:
            raise UserError(
                f"Matrix {source}: models[{i}] ({entry['model_path']}) gets the name {slug}, like an "
                "earlier model; give each a distinct name: (it names the cell folders)."
            )
        _check_names(source, f"models[{i}] ({slug}).parameters", entry.get("parameters") or {})
        models[slug] = entry
    targets: dict[str, dict] = {}
    for i, entry in enumerate(data["targets"]):
        name, where = entry["name"], f"targets[{i}] ({entry['name']})"
        if name in targets:
            raise UserError(
                f"Matrix {source}: {where} repeats the name {name}; give each target a distinct name."
            )
        if bool(entry.get("container")) == bool(entry.get("local")):
            raise UserError(
                f"Matrix {source}: {where} needs either container: NAME (and docker_host: unix://, "
                "tcp:// or ssh://) or local: true, not both or neither."
            )
        if entry.get("local") and entry.get("docker_host"):
            raise UserError(
                f"Matrix {source}: {where} is local: true but has a docker_host; remove one."
            )
        _check_names(source, f"{where}.parameters", entry.get("parameters") or {})
        targets[name] = entry
    overrides: dict[tuple[str, str], dict] = {}
    for i, entry in enumerate(data.get("cells") or []):
        for key, known in (("model", models), ("target", targets)):
            if entry[key] not in known:
                raise UserError(
                    f"Matrix {source}: cells[{i}] names the {key} {entry[key]!r}, which is not in "
                    f"{key}s; use one of {', '.join(known)}."
                )
        _check_names(source, f"cells[{i}].parameters", entry.get("parameters") or {})
        overrides[(entry["model"], entry["target"])] = entry
    _check_names(source, "parameters", data.get("parameters") or {})

    cells = []
    for slug, model in models.items():
        for name, target in targets.items():
            override = overrides.get((slug, name), {})
            if override.get("skip"):
                continue
            cell_dir = Path(out).resolve() / f"{slug}__{name}"
            values = _merge(
                data.get("parameters") or {},
                model.get("parameters") or {},
                target.get("parameters") or {},
                override.get("parameters") or {},
            )
            values.update(
                model_path=model["model_path"],
                container=target.get("container"),
                docker_host=target.get("docker_host"),
                output_dir=str(cell_dir),
                target_label=name,
            )
            try:
                validate(values)
            except ParameterError as exc:
                # the notebook's sentence, its `-p NAME VALUE` example spelled as the matrix writes it
                said = re.sub(
                    r"; for example: -p (\w+) (.*)$", r"; for example \1: \2", str(exc)
                ).rstrip(".")
                raise UserError(f"Matrix {source}, cell {slug} × {name}: {said}.") from None
            cells.append(Cell(slug, name, host_key(target), values))
    if not cells:
        raise UserError(f"Matrix {source}: every cell is skipped; remove a skip: true from cells.")
    return cells


def finished_report(cell_dir: Path) -> dict | None:
    """The cell's report.json when a verification ran to its end (a rebuilt INCOMPLETE one does not count)."""
    try:
        data = json.loads((cell_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("finished_at"):
        return None
    return None if (data.get("diff_analysis") or {}).get("conclusion") == "INCOMPLETE" else data


def set_aside(cell_dir: Path) -> tuple[Path, str]:
    """What a killed or crashed cell left, kept as its interrupted attempt: the report rebuilt from
    it (`model-verify report DIR`), the folder moved to <cell>.interrupted-N. Returns the new
    folder and one line saying what happened."""
    from .pipeline import Verification

    try:
        v = Verification.resume(cell_dir)
        v.decide()
        v.write_report()
        note = f"report rebuilt ({v.verdict.conclusion})"
    except (
        UserError,
        OSError,
        ValueError,
    ) as exc:  # e.g. killed before the notebook recorded anything
        note = f"no report rebuilt: {exc}"
    n = 1
    while (cell_dir.parent / f"{cell_dir.name}.interrupted-{n}").exists():
        n += 1
    dest = cell_dir.parent / f"{cell_dir.name}.interrupted-{n}"
    cell_dir.rename(dest)
    return dest, note


def terminate_trees(pids: list[int]) -> None:
    """SIGTERM every process of these trees (a cell, papermill, its kernel in a session of its
    own, the phase's session helper and vLLM), SIGKILL what is left after the nested grace.

    The one kill-with-grace implementation, `run_in_session.kill_trees`: the helper inside the
    trees kills its session with the same code and waits the plain grace first."""
    from .resources import session_helper

    session_helper().kill_trees(pids)


def cell_command(cell: Cell) -> list[str]:
    """The cell's process: `model-verify run` with the cell's parameters, under this module's
    child entry (which makes the cell die with the batch)."""
    return [
        sys.executable,
        "-m",
        "modelverify_kernel.batch",
        "--cell",
        str(os.getpid()),
        json.dumps(dict(cell.parameters), sort_keys=True),
        str(Path(cell.parameters["output_dir"]) / "verify.ipynb"),
    ]


@dataclass
class Batch:
    """The cells of one matrix run into OUT; `command(cell)` gives a cell's argv (tests inject one)."""

    cells: list[Cell]
    out: Path
    per_host: int = 1
    command: Callable[[Cell], list[str]] = cell_command
    matrix: str = ""
    echo: Callable[[str], None] = lambda line: print(
        line, flush=True
    )  # progress reaches a CI log as it happens
    records: dict[str, dict] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    _running: dict[str, subprocess.Popen] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.out = Path(self.out).resolve()
        previous = self._load_state()
        for cell in self.cells:
            old = previous.get(cell.id, {})
            self.records[cell.id] = {
                "model": cell.model,
                "target": cell.target,
                "host": cell.host,
                "dir": cell.id,
                "state": "pending",
                "exit_code": None,
                "started_at": None,
                "ended_at": None,
                "duration_s": None,
                "status": None,
                "conclusion": None,
                "interrupted": old.get("interrupted", []),
                "parameters": dict(cell.parameters),
            }

    def _load_state(self) -> dict[str, dict]:
        try:
            data = json.loads((self.out / STATE_FILE).read_text(encoding="utf-8"))
            return {c["dir"]: c for c in data["cells"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    # -- bookkeeping -------------------------------------------------------------------------
    def save(self) -> None:
        with self._lock:
            write_atomic(
                self.out / STATE_FILE,
                json.dumps(
                    {
                        "matrix": self.matrix,
                        "per_host": self.per_host,
                        "updated_at": now(),
                        "cells": [self.records[c.id] for c in self.cells],
                    },
                    indent=2,
                )
                + "\n",
            )

    def _set(self, cell: Cell, line: str, **changes: Any) -> None:
        with self._lock:
            self.records[cell.id].update(changes)
            self.save()
            n = [c.id for c in self.cells].index(cell.id) + 1
            self.echo(f"[{n}/{len(self.cells)}] {cell.label}: {line}")

    def _finish(
        self, cell: Cell, started: float | None, code: int | None, summarize: bool = True
    ) -> None:
        report = finished_report(self.out / cell.id)
        took = None if started is None else round(time.monotonic() - started, 1)
        if report:
            status, conclusion = (
                report.get("status"),
                (report.get("diff_analysis") or {}).get("conclusion"),
            )
            line = f"done {status} {conclusion}" + (
                f" ({took:.0f} s)" if took is not None else ", finished earlier: skipped"
            )
            times = (
                {"started_at": report.get("started_at"), "ended_at": report.get("finished_at")}
                if started is None
                else {"ended_at": now()}
            )
            self._set(
                cell,
                line,
                state="done",
                exit_code=code,
                status=status,
                conclusion=conclusion,
                duration_s=took,
                **times,
            )
        else:
            state = "killed" if self.stop.is_set() else "failed"
            why = (
                "stopped with the batch"
                if state == "killed"
                else f"exit {code}, no report; see {cell.id}/{CELL_LOG}"
            )
            self._set(
                cell,
                f"{state}: {why} ({took:.0f} s)",
                state=state,
                exit_code=code,
                ended_at=now(),
                duration_s=took,
            )
        if summarize:
            self.summarize()

    def summarize(self) -> None:
        """OUT/index.html, summary.json, junit.xml over every cell folder there is (issue 14 point 2)."""
        from . import summary

        with self._lock:
            dirs = [self.out / c.id for c in self.cells if (self.out / c.id).is_dir()]
            try:
                summary.summarize(dirs, self.out)
            except Exception as exc:  # a summary problem must not stop the verifications
                self.echo(f"warning: the summary was not written: {exc}")

    # -- running -----------------------------------------------------------------------------
    def prepare(self) -> list[Cell]:
        """Skip finished cells; set aside (rebuilt) what killed or crashed ones left. Returns the cells to run."""
        todo = []
        for cell in self.cells:
            cell_dir = self.out / cell.id
            if finished_report(cell_dir):
                self._finish(cell, None, self.records[cell.id]["exit_code"], summarize=False)
                continue
            if cell_dir.exists():
                dest, note = set_aside(cell_dir)
                self.records[cell.id]["interrupted"].append(dest.name)
                self._set(cell, f"interrupted attempt kept in {dest.name} ({note}); runs again")
            todo.append(cell)
        self.summarize()
        return todo

    def _run_cell(self, cell: Cell) -> None:
        cell_dir = self.out / cell.id
        with self._lock:
            if self.stop.is_set():
                return  # stays pending
            cell_dir.mkdir(parents=True, exist_ok=True)
            with open(cell_dir / CELL_LOG, "wb") as log:
                proc = subprocess.Popen(
                    self.command(cell),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                )
            self._running[cell.id] = (
                proc  # this thread waits for it: the cell's PR_SET_PDEATHSIG stays armed
            )
            started = time.monotonic()
            self._set(
                cell,
                f"running (host {cell.host}, pid {proc.pid})",
                state="running",
                started_at=now(),
                ended_at=None,
                exit_code=None,
                pid=proc.pid,
            )
        code = proc.wait()
        with self._lock:
            del self._running[cell.id]
        self._finish(cell, started, code)

    def stop_all(self) -> None:
        """Stop every running cell (SIGINT/SIGTERM to the batch); pending ones never start."""
        with self._lock:
            self.stop.set()
            pids = [p.pid for p in self._running.values()]
        terminate_trees(pids)

    def run(self) -> int:
        """Run what is left; 0 when every cell has a finished report, 1 when some has none."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / LOCK_FILE, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"Another batch is running in {self.out}; wait for it to end or give another --out."
                ) from None
            return self._run()

    def _run(self) -> int:
        self.save()
        todo = self.prepare()
        by_host: dict[str, list[Cell]] = {}
        for cell in todo:
            by_host.setdefault(cell.host, []).append(cell)
        pools = [
            ThreadPoolExecutor(max_workers=self.per_host, thread_name_prefix=f"batch-{host}")
            for host in by_host
        ]
        futures = [
            pool.submit(self._run_cell, cell)
            for pool, cells in zip(pools, by_host.values())
            for cell in cells
        ]
        previous = (
            {
                sig: signal.signal(sig, lambda *_: self.stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)
            }
            if threading.current_thread() is threading.main_thread()
            else {}
        )  # tests drive it from a thread
        try:
            while not all(f.done() for f in futures):
                if self.stop.wait(0.2):
                    self.stop_all()
                    break
        finally:
            for pool in pools:
                pool.shutdown(wait=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for f in futures:
            f.result()  # a bug in the runner itself surfaces here
        self.save()
        self.table()
        return 0 if all(r["state"] == "done" for r in self.records.values()) else 1

    def table(self) -> None:
        rows = [("cell", "state", "status", "conclusion", "seconds")]
        for c in self.cells:
            r = self.records[c.id]
            rows.append(
                (
                    c.id,
                    r["state"],
                    r["status"] or "-",
                    r["conclusion"] or "-",
                    "-" if r["duration_s"] is None else f"{r['duration_s']:.0f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def main(matrix: str, out: str, per_host: int, dry_run: bool) -> int:
    """`model-verify batch`: exit 0 every cell has a report, 1 some has none, 2 bad matrix."""
    if per_host < 1:
        raise UserError(f"--per-host must be at least 1, got {per_host}; give e.g. --per-host 1.")
    cells = load_matrix(Path(matrix), Path(out))
    if dry_run:
        for c in cells:
            state = (
                "done, skipped"
                if finished_report(Path(out).resolve() / c.id)
                else "interrupted: rebuilt, then runs"
                if (Path(out).resolve() / c.id).exists()
                else "runs"
            )
            print(
                f"{c.id}  host {c.host}  {state}  {json.dumps(dict(c.parameters), sort_keys=True)}"
            )
        return 0
    return Batch(cells, Path(out), per_host, matrix=str(Path(matrix).resolve())).run()


def _cell_main(argv: list[str]) -> int:
    """A cell's process: `model-verify run` with the cell's parameters, dying with the batch.

    PR_SET_PDEATHSIG sends SIGTERM when the batch dies, even by SIGKILL; on SIGTERM the
    notebook's kernel (in a session of its own, so not in our process group) is stopped too.
    """
    batch_pid, parameters, notebook = int(argv[0]), argv[1], argv[2]
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the batch's own SIGTERM handling still stops the cell
    if os.getppid() != batch_pid:
        return 1  # the batch died before we got here

    def on_term(*_: Any) -> None:
        terminate_trees([p.pid for p in __import__("psutil").Process().children(recursive=True)])
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    from .__main__ import main as cli

    return cli(["run", "-y", parameters, "--output-notebook", notebook])


if __name__ == "__main__":
    if sys.argv[1:2] != ["--cell"]:
        sys.exit(
            "usage: model-verify batch MATRIX (this module's own entry is for the batch's cell processes)"
        )
    sys.exit(_cell_main(sys.argv[2:]))
