"""Step 9: one report dict in the seed's schema → report.json → standalone report.html.

The dict is validated against the JSON Schema shipped in the package before anything is
written; the HTML embeds the same JSON so an archived page carries its own data.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any, Mapping

import jinja2
import jsonschema
import pandas as pd

from .params import Params
from .runs import PHASES, PhaseResult, RunSpec, run_specs
from .verdict import Verdict, run_status

SCHEMA_VERSION = "1.0"
JSON_NAME, HTML_NAME = "report.json", "report.html"
SEED_RUN_KEYS = {"run_a": "run_a_without_multichip", "run_b": "run_b_with_multichip"}
SEED_PHASE_KEYS = {"offline": "phase_a_offline", "serve": "phase_b_serve"}


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(files(__package__).joinpath("report.schema.json").read_text(encoding="utf-8"))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def tool_info() -> dict[str, Any]:
    try:
        version = metadata.version("model-verify")
    except metadata.PackageNotFoundError:
        version = "unknown"
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        rev = None
    return {"name": "model-verify", "version": version, "git_revision": rev}


def _rel(path: str | None, out_dir: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(out_dir))
    except ValueError:
        return path


def _phase_dict(p: PhaseResult, out_dir: Path) -> dict[str, Any]:
    d = p.to_dict()
    d["log"] = _rel(p.log, out_dir)
    d["result_file"] = _rel(p.result_file, out_dir)
    return d


def _error_entry(p: PhaseResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"phase": p.phase, "error": p.error, "error_type": p.error_type}
    if p.diagnosis:
        entry.update({k: v for k, v in p.diagnosis.items() if k != "error"})
    return entry


def _output_sample(phases: Mapping[str, PhaseResult]) -> str | None:
    for phase in PHASES:
        outputs = phases[phase].result.get("outputs") or []
        if outputs:
            return outputs[0].get("text")
    return None


def _run_section(spec: RunSpec, phases: Mapping[str, PhaseResult], out_dir: Path,
                 skip_reason: str | None) -> dict[str, Any]:
    section: dict[str, Any] = {"flags": spec.flags()}
    if spec.name == "run_b":
        section["skipped"] = run_status(phases) == "SKIPPED"
        section["skip_reason"] = skip_reason if section["skipped"] else None
    for phase, key in SEED_PHASE_KEYS.items():
        section[key] = phases[phase].status
    section["output_sample"] = _output_sample(phases)
    section["errors"] = [_error_entry(p) for p in phases.values() if p.status == "FAIL"]
    section["status"] = run_status(phases)
    section["phases"] = {phase: _phase_dict(phases[phase], out_dir) for phase in PHASES}
    return section


def build_report(
    params: Params,
    *,
    started_at: str,
    target: dict[str, Any],
    probe: dict[str, Any] | None,
    model_step: dict[str, Any] | None,
    tp: int | None,
    runs: Mapping[str, Mapping[str, PhaseResult]],
    skip_reason: str | None,
    verdict: Verdict,
    precheck_error: str | None = None,
    comparisons: list[dict[str, Any]] | None = None,
    activity: dict[str, dict[str, Any]] | None = None,
    notebook: str | None = None,
) -> dict[str, Any]:
    out_dir = params.output_path
    specs = dict(zip(("run_a", "run_b"), run_specs(params)))
    logs, results = {}, {}
    for phases in runs.values():
        for p in phases.values():
            if p.log:
                logs[p.key] = _rel(p.log, out_dir)
            if p.result_file:
                results[p.key] = _rel(p.result_file, out_dir)
    for name in ("probe", "download"):
        if (out_dir / "logs" / f"{name}.log").exists():
            logs[name] = f"logs/{name}.log"
        if (out_dir / "results" / f"{name}.json").exists():
            results[name] = f"results/{name}.json"
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": verdict.status,
        "stage": "model-verify",
        "model": params.model_path,
        "tensor_parallel_size": tp,
    }
    for name, key in SEED_RUN_KEYS.items():
        report[key] = _run_section(specs[name], runs[name], out_dir, skip_reason)
    report["diff_analysis"] = {
        "conclusion": verdict.conclusion,
        "detail": verdict.detail,
        "multichip_component": verdict.multichip_component,
        "recommended_stack": verdict.recommended_stack,
        "component": verdict.component,
    }
    report.update(
        output_comparison=comparisons or [],
        stack_activity=activity or {},
        parameters=params.to_dict(),
        environment={"target": target, "probe": probe},
        model_resolution=model_step,
        precheck={"status": "FAIL" if precheck_error else "PASS", "error": precheck_error},
        artifacts={
            "report_json": JSON_NAME,
            "report_html": HTML_NAME,
            "notebook": _rel(notebook, out_dir) if notebook else None,
            "logs": logs,
            "results": results,
        },
        tool=tool_info(),
        started_at=started_at,
        finished_at=now(),
    )
    return report


def validate(report: dict[str, Any]) -> None:
    jsonschema.validate(report, schema())


def _row(run: str, phase: str, p: Mapping[str, Any]) -> dict[str, Any]:
    diag = p.get("diagnosis") or {}
    return {"run": run, "phase": phase, "status": p["status"], "duration_s": p["duration_s"],
            "component": diag.get("component"), "error": p["error"] or p.get("reason")}


def phase_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """The A-vs-B table: one row per run × phase."""
    return pd.DataFrame([
        _row(title, phase, p)
        for key, title in (("run_a_without_multichip", "Run A (base)"), ("run_b_with_multichip", "Run B (multi-chip)"))
        for phase, p in report[key]["phases"].items()
    ])


def run_table(phases: Mapping[str, PhaseResult]) -> pd.DataFrame:
    """One run's phases while the notebook is still running."""
    return pd.DataFrame([_row(p.run, phase, p.to_dict()) for phase, p in phases.items()])


def comparison_table(comparisons: list[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per compared prompt: match, first divergence, judgement."""
    cols = ["phase", "index", "prompt", "exact_match", "first_divergence", "max_logprob_diff_prefix", "judgement", "detail"]
    rows = [{"phase": c["phase"], **{k: p[k] for k in cols[1:]}} for c in comparisons for p in c["prompts"]]
    rows += [{"phase": c["phase"], "index": g["index"], "judgement": f"garbage in Run B: {g['check']}", "detail": g["detail"]}
             for c in comparisons for g in c["new_garbage"]]
    return pd.DataFrame(rows, columns=cols)


def activity_table(activity: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """Per run × component: active / inactive / unknown / not_exercised, with the evidence."""
    return pd.DataFrame(
        [{"run": run, "component": name, "status": a["status"], "evidence": "; ".join(a["evidence"])}
         for run, comps in activity.items() for name, a in comps.items()],
        columns=["run", "component", "status", "evidence"],
    )


def _embed(report: Mapping[str, Any]) -> str:
    """JSON safe inside <script>: no "<" can close the element early."""
    return json.dumps(report, indent=1, ensure_ascii=False).replace("<", "\\u003c")


def render_html(report: Mapping[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    frame = phase_table(report)
    table = frame.astype(object).where(frame.notna(), "").to_html(index=False, classes="phases", border=0)
    return env.get_template("report.html.j2").render(
        r=report, table=table, embedded=_embed(report)
    )


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Validate, then write report.json and report.html (JSON first: it is the record)."""
    validate(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def embedded_json(html: str) -> dict[str, Any]:
    """The report JSON carried inside a report.html."""
    start_tag = '<script type="application/json" id="modelverify-report">'
    start = html.index(start_tag) + len(start_tag)
    return json.loads(html[start: html.index("</script>", start)])
