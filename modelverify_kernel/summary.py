"""A fleet of verifications in one place: output folders → index.html, summary.json, junit.xml.

The folders come from a batch or from CI jobs that ran elsewhere and were copied next to each
other; each report.json says which cell it is (model, target label), never its folder's name.
Everything is built from the reports alone and sorted, so the same folders in any order give
the same bytes: a batch's summary equals the summary of its folders merged afterwards.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd

from . import junit
from .errors import UserError
from .records import write_atomic
from .report import FAIL_ON, embed_json, load_report, target_label, template_env, verdict_reason
from .vocabulary import HTML_NAME

SCHEMA_VERSION = "1.0"
INDEX_NAME, SUMMARY_NAME, JUNIT_NAME = "index.html", "summary.json", "junit.xml"
STATUSES = ("PASS", "PARTIAL", "FAIL")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(
        files(__package__).joinpath("summary.schema.json").read_text(encoding="utf-8")
    )


def validate(summary: Mapping[str, Any]) -> None:
    jsonschema.validate(summary, schema())


def check_report(data: Mapping[str, Any]) -> None:
    """What the summary needs from a report.json, of this schema version or an older one."""
    jsonschema.validate(data, {"$defs": schema()["$defs"], "$ref": "#/$defs/report"})


def _duration(started: str | None, finished: str | None) -> float | None:
    try:
        return round(
            (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 1
        )
    except (TypeError, ValueError):
        return None


def cell(report: Mapping[str, Any], folder: str, out_dir: Path) -> dict[str, Any]:
    """One folder's verdict as a summary cell; the link is relative to the summary's folder."""
    da = report["diff_analysis"]
    target = report["environment"]["target"]
    label = target.get("label")
    link = os.path.relpath(Path(folder).resolve() / HTML_NAME, out_dir.resolve())
    return {
        "model": report["model"],
        "target": label or target_label(report["parameters"], target),
        "target_derived": not label,
        "folder": folder,
        "link": Path(link).as_posix(),
        "duplicate": False,
        "status": report["status"],
        "conclusion": da["conclusion"],
        "recommended_stack": da["recommended_stack"],
        "multichip_component": da["multichip_component"],
        "culprit_ops": list(da.get("culprit_ops") or []),
        "reason": verdict_reason(report),
        "schema_version": report["schema_version"],
        "started_at": report.get("started_at"),
        "finished_at": report.get("finished_at"),
        "duration_s": _duration(report.get("started_at"), report.get("finished_at")),
    }


def _key(c: Mapping[str, Any]) -> tuple[str, str, str]:
    return c["model"], c["target"], c["folder"]


def build(
    readable: Iterable[tuple[str, Mapping[str, Any]]],
    unreadable: Iterable[tuple[str, str]],
    out_dir: Path,
) -> dict[str, Any]:
    """The summary dict from (folder, report) pairs and (folder, why) pairs, in any order."""
    cells = sorted((cell(r, folder, out_dir) for folder, r in readable), key=_key)
    seen: dict[tuple[str, str], int] = {}
    for c in cells:
        seen[c["model"], c["target"]] = seen.get((c["model"], c["target"]), 0) + 1
    for c in cells:
        c["duplicate"] = seen[c["model"], c["target"]] > 1
    models = sorted({c["model"] for c in cells})
    targets = sorted({c["target"] for c in cells})
    not_run = [{"model": m, "target": t} for m in models for t in targets if (m, t) not in seen]
    no_report = [{"folder": f, "reason": why} for f, why in sorted(unreadable)]
    try:
        version = metadata.version("model-verify")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "model-verify", "version": version},
        "models": models,
        "targets": targets,
        "totals": {
            "cells": len(cells),
            **{s: sum(c["status"] == s for c in cells) for s in STATUSES},
            "no_report": len(no_report),
            "not_run": len(not_run),
        },
        "cells": cells,
        "not_run": not_run,
        "no_report": no_report,
    }


def pivot(summary: Mapping[str, Any]) -> pd.DataFrame:
    """models × targets → the list of cells there (empty: not run; two or more: duplicates)."""
    cells = summary["cells"]
    frame = pd.DataFrame(
        {
            "model": [c["model"] for c in cells],
            "target": [c["target"] for c in cells],
            "cell": range(len(cells)),
        }
    )
    table = frame.pivot_table(index="model", columns="target", values="cell", aggfunc=list)
    table = table.reindex(index=summary["models"], columns=summary["targets"])
    return table.map(lambda found: [cells[i] for i in found] if isinstance(found, list) else [])


def junit_xml(summary: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]]) -> str:
    """One JUnit file for the fleet: a suite per cell (its phases, then its verdict), and a
    suite of errors for the folders without a report."""
    suites = []
    for c in summary["cells"]:
        name = f"{c['model']} @ {c['target']}" + (f" [{c['folder']}]" if c["duplicate"] else "")
        suites.append(junit.cell_suite(reports[c["folder"]], name))
    if summary["no_report"]:
        suites.append(
            junit.error_suite(
                "no report", [(n["folder"], n["reason"]) for n in summary["no_report"]]
            )
        )
    return junit.document(f"model-verify fleet: {len(summary['cells'])} cells", suites)


def render_html(summary: Mapping[str, Any]) -> str:
    """The standalone index page; everything on it comes from `summary`."""
    return (
        template_env()
        .get_template("summary.html.j2")
        .render(s=summary, pivot=pivot(summary), embedded=embed_json(summary))
    )


def summarize(output_dirs: Sequence[Path | str], out_dir: Path | str) -> dict[str, Any]:
    """Read each folder's report.json, write out_dir/index.html, summary.json and junit.xml,
    and return the summary dict.

    A folder without a readable report is listed under no_report with one sentence why. The
    summary's own folder and a folder given twice are read once.
    """
    out_dir = Path(out_dir)
    reports: dict[str, Mapping[str, Any]] = {}
    unreadable: list[tuple[str, str]] = []
    seen = {out_dir.resolve()}
    for given in output_dirs:
        folder = str(given)
        if Path(folder).resolve() in seen:
            continue
        seen.add(Path(folder).resolve())
        try:
            reports[folder] = load_report(Path(folder), check=check_report)
        except UserError as exc:
            unreadable.append((folder, str(exc)))
    summary = build(reports.items(), unreadable, out_dir)
    validate(summary)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(
            out_dir / SUMMARY_NAME, json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
        )
        write_atomic(out_dir / INDEX_NAME, render_html(summary))
        write_atomic(out_dir / JUNIT_NAME, junit_xml(summary, reports))
    except OSError as exc:
        raise UserError(
            f"Cannot write the summary into {out_dir} ({exc.strerror}); give a writable --out."
        ) from None
    return summary


def failing(summary: Mapping[str, Any], fail_on: str) -> str | None:
    """The sentence that fails the fleet under `fail_on` (never, fail, partial), else None.

    A folder without a report fails it too unless fail_on is never: a CI job that died before
    writing its report must not pass the gate.
    """
    statuses = FAIL_ON[fail_on]
    bad = [c for c in summary["cells"] if c["status"] in statuses]
    lost = summary["no_report"] if statuses else []
    if not bad and not lost:
        return None
    parts = [
        f"{sum(c['status'] == s for c in bad)} cell(s) {s}"
        for s in statuses
        if any(c["status"] == s for c in bad)
    ]
    if lost:
        parts.append(f"{len(lost)} folder(s) without a report")
    return f"{' and '.join(parts)} fail the fleet because fail_on={fail_on}"


def cli(dirs: Sequence[str], out: str, fail_on: str) -> int:
    """`model-verify summarize DIR… [--out DIR] [--fail-on …]`: one line per cell, then the files."""
    if not dirs:
        raise UserError(
            "No output folder given; give the output_dir of one or more runs, "
            "e.g. model-verify summarize outputs/*."
        )
    for d in dirs:
        if not Path(d).exists():
            raise UserError(f"{d} does not exist; give the output_dir of a model-verify run.")
        if not Path(d).is_dir():
            raise UserError(f"{d} is not a folder; give the output_dir of a model-verify run.")
    summary = summarize([Path(d) for d in dirs], Path(out))
    for c in summary["cells"]:
        print(
            f"{c['status']:<8} {c['conclusion']:<17} {c['model']} @ {c['target']}  ({c['folder']})"
        )
    for n in summary["no_report"]:
        print(f"{'NO REPORT':<26} {n['folder']}: {n['reason']}")
    for name in (INDEX_NAME, SUMMARY_NAME, JUNIT_NAME):
        print(f"wrote {Path(out) / name}")
    why = failing(summary, fail_on)
    if why:
        print(f"error: {why}; see {Path(out) / INDEX_NAME}.", file=sys.stderr)
        return 1
    return 0
