"""`model-verify batch MATRIX`: one verification per model × target, resumable, a few at a time.

Each cell is `model-verify run` (the same papermill call, `notebook_runner.run_notebook`) in a child
process of its own process group, so a crashing cell cannot take the batch down and stopping
the batch stops every cell. Cells on one machine (a Docker host, or this one) run at most
`per_host` at a time, because two verifications on one machine would share its devices;
different machines run in parallel. OUT/batch.json records every cell's state after each
change, and a cell folder that already holds a finished report is not run again — unless the
matrix changed that cell's parameters since: then the finished run is kept aside and the cell
runs again.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .matrix import Cell, load_matrix
from .records import now, write_atomic

STATE_FILE = "batch.json"
LOCK_FILE = (
    ".batch.lock"  # held while a batch runs in OUT: a second one would move live cell folders
)
CELL_LOG = "batch-cell.log"  # the cell process's own output (papermill's), inside the cell folder


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
    from .pipeline import rebuild

    try:  # read the evidence, judge it
        note = f"report rebuilt ({rebuild(cell_dir)['diff_analysis']['conclusion']})"
    except (
        UserError,
        OSError,
        ValueError,
    ) as exc:  # e.g. killed before the notebook recorded anything
        note = f"no report rebuilt: {exc}"
    return move_aside(cell_dir, "interrupted"), note


def move_aside(cell_dir: Path, why: str) -> Path:
    """Rename the cell folder to the first free <cell>.<why>-N; returns the new folder."""
    n = 1
    while (cell_dir.parent / f"{cell_dir.name}.{why}-{n}").exists():
        n += 1
    dest = cell_dir.parent / f"{cell_dir.name}.{why}-{n}"
    cell_dir.rename(dest)
    return dest


def changed_parameters(ran_with: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The parameters whose value differs between a cell's finished run and the matrix now
    (output_dir is the cell folder itself and never counts)."""
    before, after = (json.loads(json.dumps(dict(m), sort_keys=True)) for m in (ran_with, now))
    missing = object()
    return sorted(
        name
        for name in before.keys() | after.keys()
        if name != "output_dir" and before.get(name, missing) != after.get(name, missing)
    )


def read_state(out: Path) -> dict[str, dict]:
    """The cell records of OUT/batch.json by cell folder; empty when there is none to read."""
    try:
        data = json.loads((Path(out) / STATE_FILE).read_text(encoding="utf-8"))
        return {c["dir"]: c for c in data["cells"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def stale(cell: Cell, out: Path, records: Mapping[str, dict]) -> list[str]:
    """For a cell whose folder holds a finished report: the parameters the matrix changed since
    that run, as recorded in batch.json (none known: none changed)."""
    ran_with = (records.get(cell.id) or {}).get("parameters")
    if not isinstance(ran_with, Mapping) or not finished_report(Path(out) / cell.id):
        return []
    return changed_parameters(ran_with, cell.parameters)


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
        self.previous = read_state(self.out)
        for cell in self.cells:
            old = self.previous.get(cell.id, {})
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
                "superseded": old.get("superseded", []),
                # what the cell's folder was run with, until the cell runs again: a batch killed
                # before prepare() must not record the new parameters for an old finished run
                "parameters": old["parameters"]
                if stale(cell, self.out, self.previous)
                else dict(cell.parameters),
            }

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
        """Skip finished cells, but set aside a finished run whose parameters the matrix changed;
        set aside (rebuilt) what killed or crashed ones left. Returns the cells to run."""
        todo = []
        for cell in self.cells:
            cell_dir = self.out / cell.id
            changed = stale(cell, self.out, self.previous)
            if changed:
                dest = move_aside(cell_dir, "superseded")
                record = self.records[cell.id]
                record["superseded"].append(dest.name)
                record["parameters"] = dict(cell.parameters)
                self._set(
                    cell,
                    f"parameters changed since its finished run ({', '.join(changed)}): "
                    f"that run kept in {dest.name}; runs again",
                )
                todo.append(cell)
                continue
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
        records = read_state(Path(out).resolve())
        for c in cells:
            changed = stale(c, Path(out).resolve(), records)
            state = (
                f"done, parameters changed ({', '.join(changed)}): kept aside, then runs"
                if changed
                else "done, skipped"
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
        from .resources import session_helper

        terminate_trees(session_helper().child_pids(os.getpid()))
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    from .notebook_runner import run_notebook

    try:
        return run_notebook(json.loads(parameters), notebook, None)
    except UserError as exc:  # as `model-verify run` says it
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if sys.argv[1:2] != ["--cell"]:
        sys.exit(
            "usage: model-verify batch MATRIX (this module's own entry is for the batch's cell processes)"
        )
    sys.exit(_cell_main(sys.argv[2:]))
