"""Step 9: one report dict in the seed's schema → report.json → standalone report.html.

The dict is validated against the JSON Schema shipped in the package before anything is
written; the HTML embeds the same JSON so an archived page carries its own data.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import pandas as pd

from .analysis import ablation as ablation_plan
from .analysis import gate, knowledge
from .analysis.judge import Judgement
from .analysis.logformat import strip_ansi
from .errors import UserError
from .params import Params
from .records import (
    Ablation,
    Bisection,
    Evidence,
    PhaseResult,
    RunSpec,
    Verdict,
    now,
    relative_to_output,
    run_status,
    to_json,
)
from .report_views import (  # noqa: F401  (the notebook and junit read them here)
    RUN_TITLES,
    _phases,
    ablation_table,
    activity_table,
    attempts_table,
    bisection_table,
    comparison_table,
    flags_table,
    phase_table,
    run_table,
    timeline_svg,
)
from .vocabulary import HTML_NAME, JSON_NAME, PHASE_TIMEOUT_PARAM, PHASES, Layout

SCHEMA_VERSION = "1.3"
SEED_RUN_KEYS = {"run_a": "run_a_without_multichip", "run_b": "run_b_with_multichip"}
SEED_PHASE_KEYS = {"offline": "phase_a_offline", "serve": "phase_b_serve"}
LOG_TAIL_LINES, LOG_TAIL_WIDTH = 60, 400
FAILED_LOG_TAIL_LINES = 200  # a failed phase keeps more: the lines before a hang or crash
STACK_ADVICE = {
    "full": "run the downstream tests on the full multi-chip stack",
    "base": "run the downstream tests on the base stack only (USE_FLAGGEMS=0, no FlagCX)",
    "none": "do not run downstream tests: no stack was shown to serve the model (see why below)",
}
FAIL_ON = {"never": (), "fail": ("FAIL",), "partial": ("FAIL", "PARTIAL")}


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(files(__package__).joinpath("report.schema.json").read_text(encoding="utf-8"))


def tool_info() -> dict[str, Any]:
    try:
        version = metadata.version("model-verify")
    except metadata.PackageNotFoundError:
        version = "unknown"
    here = Path(__file__).resolve().parent
    try:
        rev = (
            subprocess.run(
                ["git", "-C", str(here), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        rev = None
    # which knowledge judged: the rule, owner, timeout and comparison tables and the kernel index
    return {
        "name": "model-verify",
        "version": version,
        "git_revision": rev,
        "knowledge_digest": knowledge.digest(),
    }


def target_label(
    parameters: Mapping[str, Any], target: Mapping[str, Any], hostname: str | None = None
) -> str:
    """The target's name in fleet summaries: the target_label parameter, else the container
    (`NAME@DOCKER_HOST` when a docker_host was given), else `local:HOSTNAME`.

    Also derives a label for reports written before the parameter existed (`local` when
    they did not record the host).
    """
    if parameters.get("target_label"):
        return str(parameters["target_label"])
    container = parameters.get("container") or target.get("container_name")
    if container:
        host = parameters.get("docker_host")
        return f"{container}@{host}" if host else str(container)
    host = target.get("hostname") or hostname
    return f"local:{host}" if host else "local"


def log_tail(path: str | Path | None, lines: int = LOG_TAIL_LINES) -> list[str] | None:
    """The last lines of a log, colour codes removed and long lines cut.

    Kept in report.json so the archived page shows the end of each log even when the log
    files are gone, and so `render` needs nothing but report.json.
    """
    if not path or not Path(path).is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        tail = deque(fh, maxlen=lines)
    out = []
    for line in tail:
        line = strip_ansi(line.rstrip("\r\n"))
        out.append(line if len(line) <= LOG_TAIL_WIDTH else line[:LOG_TAIL_WIDTH] + " …")
    return out


def _phase_dict(p: PhaseResult, out_dir: Path) -> dict[str, Any]:
    d = p.to_dict()
    d["log"] = relative_to_output(p.log, out_dir)
    d["result_file"] = relative_to_output(p.result_file, out_dir)
    # a failed phase keeps more: the lines before a hang or a crash are the evidence
    d["log_tail"] = log_tail(p.log, FAILED_LOG_TAIL_LINES if p.status == "FAIL" else LOG_TAIL_LINES)
    return d


def _error_entry(p: PhaseResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"phase": p.phase, "error": p.error, "error_type": p.error_type}
    if p.diagnosis:
        entry.update({k: v for k, v in p.diagnosis.items() if k != "error"})
        root = p.diagnosis.get("error")
        if root and root not in (p.error or ""):
            entry["root_cause"] = root  # the diagnosis' root cause, beside the recorded error
    return entry


def _output_sample(phases: Mapping[str, PhaseResult]) -> str | None:
    for phase in PHASES:
        outputs = phases[phase].result.get("outputs") or []
        if outputs:
            return outputs[0].get("text")
    return None


def _run_section(
    spec: RunSpec,
    phases: Mapping[str, PhaseResult],
    out_dir: Path,
    skip_reason: str | None,
    engine_env: Mapping[str, Any] | None,
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "flags": spec.flags(),
        "env": {"set": dict(spec.env_set), "unset": list(spec.env_unset)},
        "engine_env": dict(engine_env or {}),
    }
    if spec.base_mode is not None:
        section["base_mode"] = dict(spec.base_mode)
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


def _artifacts(
    latest: Mapping[str, Mapping[str, PhaseResult]], out_dir: Path, notebook: str | None
) -> dict[str, Any]:
    """Where each log and result file of the latest attempts (and the probe's, the download's) is."""
    logs, results = {}, {}
    for phases in latest.values():
        for p in phases.values():
            if p.log:
                logs[p.key] = relative_to_output(p.log, out_dir)
            if p.result_file:
                results[p.key] = relative_to_output(p.result_file, out_dir)
    layout = Layout(out_dir)
    for name in ("probe", "download"):
        if layout.step_log(name).exists():
            logs[name] = relative_to_output(str(layout.step_log(name)), out_dir)
        if layout.step_result(name).exists():
            results[name] = relative_to_output(str(layout.step_result(name)), out_dir)
    return {
        "report_json": JSON_NAME,
        "report_html": HTML_NAME,
        "notebook": relative_to_output(notebook, out_dir) if notebook else None,
        "logs": logs,
        "results": results,
    }


def _diff_analysis(
    verdict: Verdict, bisection: Bisection | None, ablation: Ablation | None
) -> dict[str, Any]:
    found = bisection is not None and bisection.status == "found"
    return {
        "conclusion": verdict.conclusion,
        "detail": verdict.detail,
        "multichip_component": verdict.multichip_component,
        "component_source": verdict.component_source,
        "hypothesis": ablation.hypothesis if ablation and ablation.status != "off" else None,
        "recommended_stack": verdict.recommended_stack,
        "component": verdict.component,
        "culprit_ops": list(bisection.culprit_ops) if found and bisection else [],
        "blacklist": bisection.blacklist if bisection else None,
    }


NOT_PLANNED = {
    "parallel": False,
    "reason": "not planned",
    "variable": None,
    "run_a": None,
    "run_b": None,
}
NO_GATE = {"passed": False, "strength": "none", "evidence": [], "run_a_not_base": []}


def build(
    evidence: Evidence, judgement: Judgement, *, notebook: str | None = None
) -> dict[str, Any]:
    """The report: the evidence (what ran, what it recorded) beside its judgement."""
    parameters = evidence.parameters
    out_dir = Path(parameters["output_dir"]).resolve()
    specs = {s.name: s for s in evidence.specs}
    verdict = judgement.verdict
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": verdict.status,
        "stage": "model-verify",
        "model": parameters["model_path"],
        "tensor_parallel_size": evidence.tp,
    }
    for name, key in SEED_RUN_KEYS.items():
        report[key] = _run_section(
            specs[name],
            evidence.runs[name],
            out_dir,
            evidence.run_b_skip,
            judgement.engine_env.get(name),
        )
    report["diff_analysis"] = _diff_analysis(verdict, evidence.bisection, evidence.ablation)
    target = evidence.target
    report.update(
        output_comparison=[c.to_dict() for c in judgement.comparisons],
        stack_activity={run: gate.to_dict(a) for run, a in judgement.activity.items()},
        stack_gate=judgement.gate.to_dict() if judgement.gate else dict(NO_GATE),
        warnings=list(judgement.warnings),
        parameters=dict(parameters),
        environment={
            "target": {
                **target,
                "label": target_label(parameters, target, socket.gethostname()),
            },
            "probe": evidence.probe,
        },
        model_resolution=evidence.model,
        parallel_runs=dict(evidence.device_plan or NOT_PLANNED),
        precheck={
            "status": "FAIL" if evidence.precheck_error else "PASS",
            "error": evidence.precheck_error,
        },
        artifacts=_artifacts(evidence.runs, out_dir, notebook),
        tool=tool_info(),
        started_at=evidence.started_at,
        finished_at=now(),
    )
    report["attempts"] = [_attempt_entry(p, out_dir) for p in evidence.attempts]
    report["bisection"] = _bisection_entry(evidence.bisection)
    report["ablation"] = _ablation_entry(evidence.ablation)
    report["reproduce"] = reproduce(report)
    return report


def _ablation_entry(a: Ablation | None) -> dict[str, Any]:
    """The component ablation as the report keeps it (not run: the notebook's cell did not run)."""
    if a is None:
        a = Ablation(
            status="not_run",
            reason="No ablation was made (the notebook's ablation cell did not run).",
        )
    return to_json(a)


def good_configuration(report: Mapping[str, Any]) -> str | None:
    """The -y flags that make Run B pass, as the experiments found: the culprit kernels off
    (a confirmed op search), else the confirmed component off (the ablation)."""
    params = report["parameters"]
    bisection = report.get("bisection") or {}
    if bisection.get("status") == "found" and bisection.get("switch"):
        off = {bisection["switch"]: ",".join(bisection["culprit_ops"])}
        return ablation_plan.reproduce(ablation_plan.Switch("FlagGems", off), params)
    ablation = report.get("ablation") or {}
    if ablation.get("status") == "confirmed":
        return ablation.get("reproduce")
    return None


def _bisection_entry(b: Bisection | None) -> dict[str, Any]:
    """The culprit-op search as the report keeps it, with the sentence to act on."""
    if b is None:
        return {
            "status": "not_run",
            "reason": "No culprit-op search was made (the notebook's search cell did not run).",
            "steps": [],
            "confirm": [],
            "culprit_ops": [],
            "blacklist": None,
            "advice": None,
        }
    return {**to_json(b), "blacklist": b.blacklist, "advice": b.advice}


def _attempt_entry(p: PhaseResult, out_dir: Path) -> dict[str, Any]:
    """One line of the attempts list: what ran, with what changed, and how it ended."""
    return {
        "run": p.run,
        "phase": p.phase,
        "attempt": p.attempt,
        "status": p.status,
        "started_at": p.started_at,
        "duration_s": p.duration_s,
        "overrides": dict(p.overrides),
        "env": dict(p.env),
        "log": relative_to_output(p.log, out_dir),
        "result_file": relative_to_output(p.result_file, out_dir),
        "error": p.error,
        "component": (p.diagnosis or {}).get("component"),
        "command": list(p.command),
    }


def _papermill_option(name: str, value: Any) -> list[str]:
    """One papermill option that gives the notebook exactly `value` back.

    -r keeps strings raw (papermill would turn "8" into 8), -y carries lists and dicts as
    YAML flow (= JSON), -p the rest.
    """
    if isinstance(value, str):
        return ["-r", name, value]
    if isinstance(value, (list, dict)):
        return ["-y", f"{name}: {json.dumps(value, ensure_ascii=False)}"]
    return ["-p", name, str(value)]


def _env_prefix(set_: Mapping[str, str], unset: Iterable[str]) -> list[str]:
    argv = ["env"]
    for name in unset:
        argv += ["-u", name]
    return argv + [f"{k}={v}" for k, v in set_.items()]


REPRODUCE_SCRIPTS = (
    "/tmp/model-verify-scripts"  # Docker target: where a reproduce command copies the scripts
)


def _phase_reproduce(
    key: str, command: list[str], env: list[str], target: Mapping[str, Any], timeout: int, cap: int
) -> str:
    """One phase's command, runnable as written: the scripts of the installed package, not the
    deleted work folder; the result file lands where the command can write it.

    Local target: the package's own script, result `KEY.json` in the current folder. Docker
    target: `docker cp` the package's scripts into the container, then `docker exec` the phase
    in a process session of its own with the phase's timeout (closing `docker exec` stops
    nothing inside the container), result in /tmp; the same daemon (-H) as the run.
    """
    from .resources import scripts_dir

    python, script, args = command[0], command[1].rsplit("/", 1)[-1], list(command[2:])
    docker = target.get("kind") == "docker"
    if "--output" in args[:-1]:
        args[args.index("--output") + 1] = (
            f"/tmp/model-verify-{key}.json" if docker else f"{key}.json"
        )
    if not docker:
        return shlex.join(env + [python, str(scripts_dir() / script), *args])
    host = target.get("docker_host_url")  # the daemon the SDK really used, as `docker -H` takes it
    cli = (
        ["docker"]
        + (["-H", host] if host else [])
        + (["--tlsverify"] if target.get("docker_tls") else [])
    )
    container = target.get("container_name") or target.get("container_id") or "CONTAINER"
    copy = cli + ["cp", f"{scripts_dir()}/.", f"{container}:{REPRODUCE_SCRIPTS}"]
    session = [
        python,
        f"{REPRODUCE_SCRIPTS}/run_in_session.py",
        "--timeout",
        str(timeout),
        "--cap",
        str(cap),
        "--",
    ]
    run = (
        cli + ["exec", container] + env + session + [python, f"{REPRODUCE_SCRIPTS}/{script}", *args]
    )
    return f"{shlex.join(copy)} && {shlex.join(run)}"


def _confirm_command(
    params: Mapping[str, Any], defaults: Mapping[str, Any], out_dir: str, bisection: Mapping
) -> str:
    """The confirming run as a whole verification: Run B with the culprits off, in its own folder."""
    confirm = {
        **params,
        "output_dir": f"{out_dir}-without-culprits",
        "bisect": False,
        "run_b_env": {
            **params.get("run_b_env", {}),
            bisection["switch"]: ",".join(bisection["culprit_ops"]),
        },
    }
    options = [
        o
        for name, value in confirm.items()
        if name == "model_path" or name not in defaults or value != defaults[name]
        for o in _papermill_option(name, value)
    ]
    return shlex.join(["model-verify", "run", *options])


def reproduce(report: Mapping[str, Any]) -> dict[str, Any]:
    """The commands that rerun this verification (`model-verify run`, or papermill from a
    checkout) and each phase alone, every one runnable as written.

    Only parameters that differ from their defaults are passed; the tool's version and git
    revision in the report pin those defaults.
    """
    params = report["parameters"]
    defaults = Params(model_path="").to_dict()
    out_dir = params.get("output_dir") or "outputs/run"
    options: list[str] = []
    for name, value in params.items():
        if name == "model_path" or name not in defaults or value != defaults[name]:
            options += _papermill_option(name, value)
    papermill = ["papermill", "notebooks/verify.ipynb", f"{out_dir}/verify.ipynb", *options]
    target = report["environment"]["target"]
    phases: dict[str, str] = {}
    for key, run in SEED_RUN_KEYS.items():
        for phase, p in report[run]["phases"].items():
            if len(p.get("command") or []) >= 2:
                # the latest attempt's own flags and timeouts: a debugging re-run may have changed them
                env = p.get("env") or report[run]["env"]
                env_set = {**params.get("env", {}), **env["set"]}  # as runs.run_phase sets it
                given = {**params, **(p.get("overrides") or {})}
                timeout = (
                    given.get(PHASE_TIMEOUT_PARAM[phase]) or defaults[PHASE_TIMEOUT_PARAM[phase]]
                )
                cap = max(given.get("timeout_cap") or defaults["timeout_cap"], timeout)
                phases[f"{key}_{phase}"] = _phase_reproduce(
                    f"{key}_{phase}",
                    p["command"],
                    _env_prefix(env_set, env["unset"]),
                    target,
                    timeout,
                    cap,
                )
    out = {
        "run": shlex.join(["model-verify", "run", *options]),
        "papermill": f"{shlex.join(['mkdir', '-p', out_dir])} && {shlex.join(papermill)}",  # papermill needs the folder
        "phases": phases,
    }
    bisection = report.get("bisection") or {}
    if bisection.get("status") == "found":
        out["bisection"] = _confirm_command(params, defaults, out_dir, bisection)
    good = good_configuration(report)
    if good:
        out["good_configuration"] = good
    return out


def validate(report: dict[str, Any]) -> None:
    jsonschema.validate(report, schema())


def _styled(
    frame: pd.DataFrame,
    uuid: str,
    classes: Mapping[str, str],
    formats: Mapping[str, str] | None = None,
    caption: str | None = None,
) -> str:
    """A table as HTML through pandas' Styler, every cell escaped (logs and model output are
    text, never markup); cells of `classes` columns get a CSS class named prefix-value (e.g.
    st-FAIL), so the colours live in the page's stylesheet."""
    if frame.empty:
        return ""
    cls = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for col, prefix in classes.items():
        cls[col] = [
            f"{prefix}-{re.sub(r'[^A-Za-z0-9_]', '_', str(v).split(':')[0])}" for v in frame[col]
        ]
    frame = frame.map(lambda v: visible(v) if isinstance(v, str) else v)
    styler = (
        frame.style.hide(axis="index")
        .set_uuid(uuid)
        .set_td_classes(cls)
        .format(na_rep="", escape="html")
        .format(formats or {}, na_rep="", escape="html")
    )
    if caption:
        styler = styler.set_caption(caption)
    return styler.to_html(table_attributes=f'class="{uuid}"', doctype_html=False)


def diagnosis_message(p: Mapping[str, Any]) -> str:
    """One line for a failed phase: the component (layer, culprit op) and the root-cause error."""
    d = p.get("diagnosis") or {}
    where = d.get("component") or "unknown"
    if d.get("layer") is not None:
        where += f" (layer {d['layer']})"
    if d.get("culprit_op"):
        where += f", op {d['culprit_op']}"
    recorded, root = p.get("error"), d.get("error")
    if recorded and root and root not in recorded:
        return f"{where}: {recorded} (root cause: {root})"
    return f"{where}: {recorded or root or 'failed'}"


def verdict_reason(report: Mapping[str, Any]) -> str:
    """One sentence of why, for the banner: the first failure's diagnosis, else the detail."""
    for title, phase, p in _phases(report):
        if p["status"] == "FAIL":
            return f"{title} {phase} failed in {diagnosis_message(p)}"
    return report["diff_analysis"]["detail"]


def failure_text(phases: Mapping[str, PhaseResult], lines: int = 20) -> str:
    """For the notebook: each failed phase's diagnosis and the tail of its log (else "")."""
    out = []
    for phase, p in phases.items():
        if p.status == "FAIL":
            out.append(
                f"{p.run} {phase} FAILED in {diagnosis_message(p.to_dict())}\n"
                f"--- last lines of {p.log} ---"
            )
            out += log_tail(p.log, lines) or ["(no log)"]
    return "\n".join(out)


def embed_json(report: Mapping[str, Any]) -> str:
    """JSON safe inside <script>: no "<" can close the element early."""
    return json.dumps(report, indent=1, ensure_ascii=False).replace("<", "\\u003c")


def visible(text: str) -> str:
    """Control characters as \\xNN: a random model's output shows what it really was, and
    the text stays valid in HTML and XML."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


@lru_cache(maxsize=1)
def template_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        keep_trailing_newline=True,
    )
    env.filters["visible"] = visible
    return env


def _tables(report: Mapping[str, Any]) -> dict[str, Any]:
    """The page's tables, styled."""
    comparison = comparison_table(report.get("output_comparison") or [])
    comparison["prompt"] = comparison["prompt"].map(
        lambda t: t if not isinstance(t, str) or len(t) <= 60 else t[:60] + "…"
    )
    comparison["exact_match"] = comparison["exact_match"].map({True: "yes", False: "no"})
    return {
        "phases": _styled(
            phase_table(report).rename(columns={"duration_s": "duration (s)"}),
            "phases",
            {"status": "st", "component": "comp"},
            {"duration (s)": "{:.1f}"},
        ),
        "comparison": _styled(
            comparison,
            "comparison",
            {"judgement": "j"},
            {"max_logprob_diff_prefix": "{:.4f}", "first_divergence": "{:.0f}"},
        ),
        "activity": _styled(
            activity_table(report.get("stack_activity") or {}), "activity", {"status": "a"}
        ),
        "flags": _styled(flags_table(report), "flags", {}),
        "attempts": _styled(
            attempts_table(report.get("attempts") or []).rename(
                columns={"duration_s": "duration (s)"}
            ),
            "attempts",
            {"status": "st"},
            {"duration (s)": "{:.1f}"},
        ),
        "bisection": _styled(
            bisection_table(report.get("bisection") or {}).rename(
                columns={"duration_s": "duration (s)"}
            ),
            "bisection",
            {"outcome": "bo"},
            {"duration (s)": "{:.1f}"},
        ),
        "ablation": _styled(
            ablation_table(report.get("ablation") or {}).rename(
                columns={"duration_s": "duration (s)"}
            ),
            "ablation",
            {"outcome": "bo"},
            {"duration (s)": "{:.1f}"},
        ),
        "reruns": any(a.get("attempt", 1) > 1 for a in report.get("attempts") or []),
    }


def render_html(report: Mapping[str, Any]) -> str:
    """The standalone page; everything on it comes from `report` (render reproduces it)."""
    return (
        template_env()
        .get_template("report.html.j2")
        .render(
            r=report,
            tables=_tables(report),
            timeline=timeline_svg(report),
            reason=verdict_reason(report),
            advice=STACK_ADVICE,
            reproduce=report.get("reproduce") or reproduce(report),
            run_titles=RUN_TITLES,
            embedded=embed_json(report),
        )
    )


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Validate, then write report.json and report.html (JSON first: it is the record).

    The page is rendered from the JSON text just written, as `render` does later, so both
    give the same bytes.
    """
    validate(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    json_path.write_text(text, encoding="utf-8")
    html_path.write_text(render_html(json.loads(text)), encoding="utf-8")
    return json_path, html_path


def load_report(
    out_dir: Path, check: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """A validated report.json from an output folder; a user error when it is not one.

    `check` validates instead of this version's schema (the fleet summary reads older reports too).
    """
    path = Path(out_dir) / JSON_NAME
    if not Path(out_dir).is_dir():
        raise UserError(f"{out_dir} is not a folder; give the output_dir of a model-verify run.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist; give the output_dir of a finished model-verify run."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"Cannot read {path} ({exc}); check the file.") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); rerun the notebook."
        ) from None
    try:
        (check or validate)(data)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(x) for x in exc.absolute_path) or "the top level"
        raise UserError(
            f"{path} is not a model-verify report ({exc.message} at {where})."
        ) from None
    return data


def rerender(out_dir: Path) -> Path:
    """report.html again from report.json alone (same bytes as when the run wrote it)."""
    data = load_report(out_dir)
    html_path = Path(out_dir) / HTML_NAME
    html_path.write_text(render_html(data), encoding="utf-8")
    return html_path


class VerdictFailed(UserError):
    """The verdict is one the `fail_on` parameter asked to fail on."""


def check_fail_on(report: Mapping[str, Any], fail_on: str) -> None:
    """Raise after every artifact is written, so a pipeline's papermill step fails on the verdict."""
    if report["status"] in FAIL_ON[fail_on]:
        da = report["diff_analysis"]
        out = report["parameters"].get("output_dir", ".")
        raise VerdictFailed(
            f"Verdict {report['status']} ({da['conclusion']}) fails this run because fail_on={fail_on}: "
            f"{da['detail'].rstrip('.')}; every artifact is written, see {out}/{HTML_NAME}."
        )


def embedded_json(html: str) -> dict[str, Any]:
    """The report JSON carried inside a report.html."""
    start_tag = '<script type="application/json" id="modelverify-report">'
    start = html.index(start_tag) + len(start_tag)
    return json.loads(html[start : html.index("</script>", start)])
