"""Step 5: Run A and Run B, each as an offline phase and a serve phase.

A run is a set of variables to set and unset; a phase is one container script run under
that environment with a timeout. Each phase's log streams into the output folder while it
runs and its result file is copied there the moment the phase ends, so a killed notebook
loses nothing that finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import classify
from .params import RUN_A_ENV, RUN_A_UNSET, RUN_B_ENV, RUN_B_UNSET, Params
from .target import ExecResult, Target
from .target import progress_window as _progress_window

PHASES = ("offline", "serve")
PHASE_SCRIPTS = {"offline": "run_offline_inference.py", "serve": "test_serve_mode.py"}


@dataclass(frozen=True)
class RunSpec:
    """One run: its name, the variables it sets and the ones it removes."""

    name: str  # run_a | run_b
    title: str
    env_set: Mapping[str, str]
    env_unset: tuple[str, ...]
    base_mode: Mapping[str, str] | None = None  # Run A: how it keeps the FL plugin out, and why

    def flags(self) -> dict[str, str]:
        """The seed's `flags`: set values, and "unset" for removed variables."""
        out = {k: "unset" for k in self.env_unset}
        out.update(self.env_set)
        return out

    @property
    def flagcx_path(self) -> str | None:
        return None if "FLAGCX_PATH" in self.env_unset else self.env_set.get("FLAGCX_PATH")


def combine(default_set: Mapping[str, str], default_unset: Iterable[str], user_set: Mapping[str, str],
            user_unset: Iterable[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """A run's flags: the defaults plus the user's; a user's value or removal wins over a default."""
    user_unset = tuple(user_unset)
    env = {k: v for k, v in default_set.items() if k not in user_unset}
    env.update(user_set)
    unset = tuple(dict.fromkeys(k for k in (*default_unset, *user_unset) if k not in user_set))
    return env, unset


# Device tools whose devices vLLM serves with a platform of its own (CUDA, ROCm; CPU needs no tool).
BUILTIN_PLATFORM_TOOLS = {"nvidia-smi": "CUDA", "rocm-smi": "ROCm"}


def run_a_base(probe_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """How Run A keeps the FL plugin out, from what the probe found installed.

    Where vLLM's own platform or another vendor's platform plugin serves the devices, Run A
    excludes `fl` through VLLM_PLUGINS (every other installed plugin still loads). Where `fl` is
    the chip's only platform, Run A keeps it in its native mode (USE_FLAGGEMS=0, FLAGCX_PATH
    unset), and its recorded evidence must then show FlagGems inactive.
    """
    eps = (probe_data or {}).get("entry_points") or {}
    platform = [e.get("name") for e in eps.get("vllm.platform_plugins") or []]
    general = [e.get("name") for e in eps.get("vllm.general_plugins") or []]
    if probe_data is None:
        return {"mode": "unknown", "reason": "the probe did not run: Run A keeps its flags as given", "env": {}}
    if "fl" not in platform + general:
        return {"mode": "no_plugin", "env": {},
                "reason": "no vLLM plugin named 'fl' is installed: Run A leaves VLLM_PLUGINS as it is"}
    others = sorted({n for n in platform + general if n and n != "fl"})
    devices = probe_data.get("devices") or {}
    builtin = "CPU" if devices.get("kind") == "cpu" else BUILTIN_PLATFORM_TOOLS.get(str(devices.get("tool")))
    vendor = sorted({n for n in platform if n and n != "fl"})
    if "fl" in platform and not builtin and not vendor:
        return {"mode": "native", "env": {},
                "reason": f"the FL plugin is the only platform for these devices ({devices.get('tool') or devices.get('kind')}): "
                          "Run A keeps it in its native mode (USE_FLAGGEMS=0, FLAGCX_PATH unset); its recorded "
                          "evidence must show FlagGems inactive"}
    server = (f"vLLM's own {builtin} platform" if builtin else f"the platform plugin {', '.join(vendor)}" if vendor
              else "a platform other than the FL plugin (it is installed only as a general plugin)")
    value = ",".join(others)
    return {"mode": "exclude_plugin", "env": {"VLLM_PLUGINS": value},
            "reason": f"{server} serves these devices, so Run A excludes the FL plugin with "
                      f"VLLM_PLUGINS={value or chr(34) * 2}"
                      + (" (every other installed plugin still loads)" if others else " (load no plugin)")}


def run_specs(params: Params, probe_data: Mapping[str, Any] | None = None) -> tuple[RunSpec, RunSpec]:
    base = run_a_base(probe_data)
    user_plugins = "VLLM_PLUGINS" in params.run_a_env or "VLLM_PLUGINS" in params.run_a_unset
    if user_plugins and base["mode"] != "no_plugin":
        base = {"mode": "user", "env": {},
                "reason": "Run A's VLLM_PLUGINS was given in run_a_env/run_a_unset; the probe's choice "
                          f"({base['mode']}) was not applied"}
    a_env, a_unset = combine({**RUN_A_ENV, **base["env"]}, RUN_A_UNSET, params.run_a_env, params.run_a_unset)
    b_env, b_unset = combine(RUN_B_ENV, RUN_B_UNSET, params.run_b_env, params.run_b_unset)
    run_a = RunSpec("run_a", "Run A — without the multi-chip stack", a_env, a_unset,
                    {"mode": base["mode"], "reason": base["reason"]})
    run_b = RunSpec("run_b", "Run B — with the full multi-chip stack", b_env, b_unset)
    return run_a, run_b


@dataclass
class PhaseResult:
    """What one phase did; `result` is the container script's own JSON."""

    run: str
    phase: str
    status: str = "NOT_RUN"  # PASS | FAIL | SKIPPED | NOT_RUN
    duration_s: float | None = None
    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None
    error_type: str | None = None
    command: list[str] = field(default_factory=list)
    log: str | None = None
    result_file: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    diagnosis: dict[str, Any] | None = None
    leftover_pids: list[int] = field(default_factory=list)
    reason: str | None = None  # why SKIPPED / NOT_RUN
    timeout_note: str | None = None  # ran past its timeout because it kept making progress

    @property
    def key(self) -> str:
        return f"{self.run}_{self.phase}"

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "result"}
        out["timings"] = self.result.get("timings", {})
        out["outputs"] = self.result.get("outputs", [])
        return out


def phase_argv(params: Params, target: Target, scripts: str, phase: str, model: str,
               tp: int, output: str) -> list[str]:
    argv = [target.python(), f"{scripts}/{PHASE_SCRIPTS[phase]}", "--model", model,
            "--tp", str(tp), "--output", output, "--max-tokens", str(params.max_tokens)]
    if params.trust_remote_code:
        argv.append("--trust-remote-code")
    if params.max_model_len:
        argv += ["--max-model-len", str(params.max_model_len)]
    if params.prompts_file:
        argv += ["--prompts", params.prompts_file]
    if params.extra_vllm_args:
        argv += ["--extra-args", json.dumps(list(params.extra_vllm_args))]
    if phase == "serve":
        argv += ["--health-timeout", str(params.health_timeout), "--request-timeout",
                 str(params.request_timeout), "--port", str(params.port),
                 "--timeout-cap", str(max(params.timeout_cap, params.health_timeout))]
    return argv


def timeout_param(phase: str) -> str:
    return "offline_timeout" if phase == "offline" else "serve_timeout"


def progress_window(timeout: float) -> float:
    """Output this recent at the timeout means the phase was still working, not hung (the
    session helper's rule: one implementation)."""
    return _progress_window(timeout)


def run_phase(params: Params, target: Target, scripts: str, spec: RunSpec, phase: str,
              model: str, tp: int, out_dir: Path) -> PhaseResult:
    """Run one phase; every way it can end becomes a PhaseResult, never an exception."""
    pr = PhaseResult(run=spec.name, phase=phase)
    remote = target.work_path(f"{pr.key}.json")
    log = out_dir / "logs" / f"{pr.key}.log"
    local = out_dir / "results" / f"{pr.key}.json"
    for stale in (log, local, phase_file(out_dir, pr.key)):
        stale.unlink(missing_ok=True)
    pr.command = phase_argv(params, target, scripts, phase, model, tp, remote)
    timeout = params.offline_timeout if phase == "offline" else params.serve_timeout
    env_set = {**params.env, **spec.env_set}
    res = target.run(pr.command, env_set=env_set, env_unset=spec.env_unset, timeout=timeout, log_path=log,
                     cap=max(params.timeout_cap, timeout))
    pr.duration_s, pr.exit_code, pr.timed_out = res.duration_s, res.exit_code, res.timed_out
    pr.leftover_pids = res.leftovers
    pr.log = str(log)
    file_error = None
    if target.fetch(remote, local):
        pr.result_file = str(local)
        file_error = _read_result(pr, local)
    elif not res.timed_out:
        file_error = f"the phase wrote no result file {local.name} (exit code {res.exit_code}); its log is {log}"
    if not res.timed_out and res.duration_s > timeout:
        pr.timeout_note = (f"took {res.duration_s:.0f} s, past {timeout_param(phase)}={timeout:g} s: output was "
                           f"still coming at the timeout (loading, compiling kernels), so it ran on — up to "
                           f"timeout_cap={max(params.timeout_cap, timeout):g} s — and finished by itself")
    if res.timed_out:
        _timed_out(pr, res, timeout_param(phase), timeout, max(params.timeout_cap, timeout))
    elif pr.result.get("status") == "PASS" and res.exit_code == 0 and not file_error:
        pr.status = "PASS"
    elif file_error:
        # what happened is the broken result file, whatever the log last said
        pr.status, pr.error, pr.error_type = "FAIL", file_error, "ResultFileError"
        diagnose(pr, keep_error=True)
    else:
        pr.status = "FAIL"
        pr.error = pr.result.get("error") or f"exit code {res.exit_code}"
        pr.error_type = pr.result.get("error_type")
        if pr.error_type == "StartupStillProgressing":  # the serve script's health wait hit the cap
            pr.diagnosis = {
                "component": "none", "layer": None, "rule": "TIMEOUT-CAP", "evidence": [pr.error],
                "culprit_op": None, "confidence": "high", "signature": "Timeout: still progressing (health)",
                "hint": "The server was still starting (loading, compiling kernels) when timeout_cap ran "
                        "out: raise timeout_cap and health_timeout; no component is blamed.",
                "error": pr.error,
            }
        else:
            diagnose(pr)
    save_phase(pr, out_dir)
    return pr


def _read_result(pr: PhaseResult, local: Path) -> str | None:
    """Load the (already redacted) result file; what is wrong with it, if anything."""
    text = local.read_text(encoding="utf-8", errors="replace")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"result file {local.name} is corrupt: not valid JSON ({exc.msg} at line {exc.lineno})"
    if not isinstance(result, dict) or result.get("status") not in ("PASS", "FAIL"):
        return f"result file {local.name} is not a phase result (no PASS/FAIL status)"
    pr.result = result
    return None


def _timed_out(pr: PhaseResult, res: ExecResult, param: str, timeout: float, cap: float) -> None:
    """A hang and a slow start both hit the timeout; only a hang is a failure of a component.

    Past its timeout a phase whose output keeps coming runs on, up to `cap` (timeout_cap); only
    silence or the cap stop it. Stopped at the cap while still progressing is never blamed on a
    component; stopped by silence, the stacks every process printed before the kill say where
    it waited.
    """
    pr.status, pr.error_type = "FAIL", "Timeout"
    window = progress_window(timeout)
    last = (res.last_line or "").strip()
    ran = res.ran_s if res.ran_s is not None else res.duration_s
    progressing = res.ended_by == "cap" or (
        res.ended_by in (None, "timeout") and res.idle_s is not None and res.idle_s <= window)
    if progressing:
        at_cap = res.ended_by == "cap"
        limit = f"the hard cap timeout_cap={cap:g} s" if at_cap else f"{param}={timeout:g} s"
        raise_what = "timeout_cap" if at_cap else param
        idle = f"output {res.idle_s:.0f} s before it" if res.idle_s is not None else "output until the end"
        pr.error = (f"timed out after {ran:.0f} s ({limit}) while still making progress: {idle}, last "
                    f"line: {last[:300]!r}")
        pr.diagnosis = {
            "component": "none", "layer": None, "rule": "TIMEOUT-CAP" if at_cap else "TIMEOUT-PROGRESS",
            "evidence": [last] if last else [], "culprit_op": None, "confidence": "high",
            "signature": f"Timeout: still progressing ({raise_what})",
            "hint": f"The phase was still working (loading, compiling kernels) when {limit} ran out: raise "
                    f"{raise_what} and rerun; this is not a hang and no component is blamed.",
            "error": pr.error,
        }
        return
    silent = f"no output for the last {res.idle_s:.0f} s" if res.idle_s is not None else "no output at all"
    if res.ended_by == "silence":
        pr.error = (f"ran past {param}={timeout:g} s while output kept coming, then hung: {silent} "
                    f"(stopped after {ran:.0f} s); every process of the phase was killed")
    else:
        pr.error = (f"timed out after {timeout:g} s ({param}) with {silent}: hung; every process of the "
                    f"phase was killed")
    if res.dumped:
        pr.error += f" after printing the stacks of {len(res.dumped)} process(es) into the log"
    diagnose(pr)
    assert pr.diagnosis is not None
    if pr.diagnosis["component"] in ("none", "unknown"):
        pr.diagnosis.update(
            component="unknown", layer=None, rule="TIMEOUT-HANG", confidence="low",
            evidence=(pr.diagnosis.get("evidence") or ([last] if last else []))[:6],
            signature=f"Timeout: hung ({param})",
            hint="The phase stopped making progress and no frame in the stacks printed before the kill "
                 "(or no stack at all) names a component: read the last log lines and the stacks; "
                 "rerun with VLLM_LOGGING_LEVEL=DEBUG.",
        )
        pr.diagnosis["error"] = pr.error
    elif pr.diagnosis.get("error") and not pr.diagnosis["error"].startswith(("stack dump", "traceback cut")):
        pr.error = f"{pr.error}; before it: {pr.diagnosis['error']}"  # it failed first, then hung


def phase_file(out_dir: Path, key: str) -> Path:
    return out_dir / "phases" / f"{key}.json"


def save_phase(pr: PhaseResult, out_dir: Path) -> None:
    """The host's record of a finished phase: what `report OUTPUT_DIR` rebuilds from."""
    path = phase_file(out_dir, pr.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(vars(pr)), indent=1, default=str), encoding="utf-8")


def load_phase(path: Path) -> PhaseResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    return PhaseResult(**{k: v for k, v in data.items() if k in PhaseResult.__dataclass_fields__})


def diagnose(pr: PhaseResult, keep_error: bool = True) -> None:
    """Attach the log's diagnosis *beside* the phase's own recorded error, never over it.

    The error the phase recorded (the script's exception, a timeout, a broken result file) is
    what happened; the diagnosis (component, rule, evidence, and its own `error`: the root cause
    it settled on) sits next to it. Only a phase that recorded no error at all borrows the
    diagnosis' one. `keep_error` is kept for callers of the old signature; it is always true.
    """
    log = Path(pr.log) if pr.log and Path(pr.log).is_file() else []
    recorded = pr.result if pr.result.get("error") else \
        {**pr.result, "status": "FAIL", "error": pr.error, "error_type": pr.error_type}
    diag = classify.classify_log(log, recorded)
    pr.diagnosis = diag.to_dict()
    if not pr.error and diag.error:
        pr.error = diag.error
        pr.error_type = diag.error.split(":", 1)[0].rsplit(".", 1)[-1]


def from_result_file(run: str, path: Path) -> PhaseResult:
    """A PhaseResult rebuilt from a phase's result JSON and its log (beside it, or in ../logs/)."""
    result = json.loads(path.read_text(encoding="utf-8"))
    pr = PhaseResult(run=run, phase=result.get("phase", "offline"), result=result,
                     result_file=str(path), status="PASS" if result.get("status") == "PASS" else "FAIL",
                     error=result.get("error"), error_type=result.get("error_type"))
    logs = [path.with_suffix(".log"), path.parent.parent / "logs" / f"{path.stem}.log"]
    pr.log = next((str(log) for log in logs if log.is_file()), None)
    if pr.status == "FAIL":
        diagnose(pr)
    return pr


def skipped(spec: RunSpec, reason: str, status: str = "SKIPPED") -> dict[str, PhaseResult]:
    return {p: PhaseResult(run=spec.name, phase=p, status=status, reason=reason) for p in PHASES}


def run_b_skip_reason(params: Params, any_multichip: bool) -> str | None:
    if params.run_b == "never":
        return "Run B skipped: run_b='never' was asked."
    if params.run_b == "auto" and not any_multichip:
        return "Run B skipped: no multi-chip packages installed (none of FlagGems, FlagTree, FlagCX found)."
    return None
