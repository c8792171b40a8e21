"""Step 5: Run A and Run B, each as an offline phase and a serve phase.

A run is a set of variables to set and unset; a phase is one container script run under
that environment with a timeout. Each phase's log streams into the output folder while it
runs and its result file is copied there the moment the phase ends, so a killed notebook
loses nothing that finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .params import Params
from .phase_output import ExecResult
from .records import PhaseExit, PhaseResult, RunSpec, now, read, skipped, write
from .target import Target
from .target import progress_window as _progress_window
from .vocabulary import (
    CPU_CORES_VARIABLE,
    PHASE_SCRIPTS,
    PHASE_TIMEOUT_PARAM,
    PHASES,
    RUN_A_ENV,
    RUN_A_UNSET,
    RUN_B_ENV,
    RUN_B_UNSET,
    RUN_TITLES,
    RUNS,
    VISIBLE_DEVICES,
    Layout,
)

__all__ = [
    "PHASES",
    "PhaseResult",
    "RunSpec",
    "skipped",
    "run_phase",
    "run_specs",
    "load_phase",
    "save_phase",
]


def combine(
    default_set: Mapping[str, str],
    default_unset: Iterable[str],
    user_set: Mapping[str, str],
    user_unset: Iterable[str],
) -> tuple[dict[str, str], tuple[str, ...]]:
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
        return {
            "mode": "unknown",
            "reason": "the probe did not run: Run A keeps its flags as given",
            "env": {},
        }
    if "fl" not in platform + general:
        return {
            "mode": "no_plugin",
            "env": {},
            "reason": "no vLLM plugin named 'fl' is installed: Run A leaves VLLM_PLUGINS as it is",
        }
    others = sorted({n for n in platform + general if n and n != "fl"})
    devices = probe_data.get("devices") or {}
    builtin = (
        "CPU"
        if devices.get("kind") == "cpu"
        else BUILTIN_PLATFORM_TOOLS.get(str(devices.get("tool")))
    )
    vendor = sorted({n for n in platform if n and n != "fl"})
    if "fl" in platform and not builtin and not vendor:
        return {
            "mode": "native",
            "env": {},
            "reason": f"the FL plugin is the only platform for these devices ({devices.get('tool') or devices.get('kind')}): "
            "Run A keeps it in its native mode (USE_FLAGGEMS=0, FLAGCX_PATH unset); its recorded "
            "evidence must show FlagGems inactive",
        }
    server = (
        f"vLLM's own {builtin} platform"
        if builtin
        else f"the platform plugin {', '.join(vendor)}"
        if vendor
        else "a platform other than the FL plugin (it is installed only as a general plugin)"
    )
    value = ",".join(others)
    return {
        "mode": "exclude_plugin",
        "env": {"VLLM_PLUGINS": value},
        "reason": f"{server} serves these devices, so Run A excludes the FL plugin with "
        f"VLLM_PLUGINS={value or chr(34) * 2}"
        + (" (every other installed plugin still loads)" if others else " (load no plugin)"),
    }


def _id_list(value: str) -> list[str]:
    """A device or core list as vendors and vLLM write it: "0,1,4-7" -> ["0", "1", "4", …, "7"]."""
    out: list[str] = []
    for part in (p.strip() for p in value.replace("|", ",").split(",")):
        lo, dash, hi = part.partition("-")
        if dash and lo.isdigit() and hi.isdigit():
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part:
            out.append(part)
    return out


def _device_pool(
    params: Params, devices: Mapping[str, Any], variable: str, cpu: bool
) -> tuple[list[str], str] | str:
    """The devices (or cores) the two runs split, and where that pool came from; or why the runs
    go one after the other."""
    if variable in params.env:
        pool, source = _id_list(params.env[variable]), f"{variable}={params.env[variable]} (env)"
        if cpu and not all(c.isdigit() for c in pool):
            return f"{source} is not a core list: one run after the other"
        return pool, source
    if cpu:
        cores = devices.get("cores") or list(range(int(devices.get("cpus") or 1)))
        return [str(c) for c in cores], f"{len(cores)} cores"
    if isinstance(devices.get("count"), int):
        return [str(i) for i in range(devices["count"])], f"{devices['count']} devices"
    return f"the probe could not count the devices ({devices.get('tool')}): one run after the other"


def _split(pool: list[str], tp: int, cpu: bool) -> dict[str, str]:
    """Run A's and Run B's share of the pool: TP devices each, or half the cores, one core list
    per TP rank."""
    if not cpu:
        return {"run_a": ",".join(pool[:tp]), "run_b": ",".join(pool[tp : 2 * tp])}
    size = len(pool) // 2 // tp  # cores per TP rank
    a, b = (pool[h * tp * size : (h + 1) * tp * size] for h in (0, 1))
    return {
        name: "|".join(",".join(half[r * size : (r + 1) * size]) for r in range(tp))
        for name, half in (("run_a", a), ("run_b", b))
    }


def device_plan(
    params: Params, probe_data: Mapping[str, Any] | None, tp: int | None, run_b_runs: bool
) -> dict[str, Any]:
    """Whether Run A and Run B run side by side, and on which devices.

    Side by side when the target has at least 2 × TP devices: Run A gets the first TP, Run B the
    next TP, through the vendor's visible-devices variable (vLLM for CPU: the first and second
    half of the cores, through VLLM_CPU_OMP_THREADS_BIND, one core list per TP rank). A device
    list given in `env` is the pool that is split; one given per run is the user's choice and
    the runs go one after the other. Otherwise (fewer devices, a device count the probe could
    not read, Run B not running, parallel_runs=off) one after the other, as the reason says.
    """

    def serial(reason: str) -> dict[str, Any]:
        return {"parallel": False, "reason": reason, "variable": None, "run_a": None, "run_b": None}

    if params.parallel_runs == "off":
        return serial("parallel_runs=off: one run after the other")
    if not run_b_runs:
        return serial("Run B does not run: Run A runs alone")
    devices = (probe_data or {}).get("devices") or {}
    if not devices or not tp:
        return serial("the probe did not report the devices: one run after the other")
    cpu = devices.get("kind") == "cpu"
    variable = CPU_CORES_VARIABLE if cpu else VISIBLE_DEVICES.get(str(devices.get("tool")))
    if variable is None:
        return serial(
            f"no visible-devices variable is known for {devices.get('tool') or devices.get('kind')}: "
            "one run after the other"
        )
    per_run = [
        name
        for name, given in (("run_a", params.run_a_env), ("run_b", params.run_b_env))
        if variable in given
    ]
    if per_run or variable in (*params.run_a_unset, *params.run_b_unset):
        return serial(
            f"{variable} is chosen per run ({', '.join(f'{n}_env' for n in per_run) or 'run_*_unset'}): "
            "the runs keep the devices given and run one after the other"
        )
    found = _device_pool(params, devices, variable, cpu)
    if isinstance(found, str):
        return serial(found)
    pool, source = found
    if len(pool) < 2 * tp:
        return serial(f"{source} < 2 × TP={tp}: one run after the other")
    value = _split(pool, tp, cpu)
    return {
        "parallel": True,
        "variable": variable,
        **value,
        "reason": f"{source} ≥ 2 × TP={tp}: Run A ({variable}={value['run_a']}) and Run B "
        f"({variable}={value['run_b']}) run side by side",
    }


def run_specs(
    params: Params,
    probe_data: Mapping[str, Any] | None = None,
    plan: Mapping[str, Any] | None = None,
) -> tuple[RunSpec, RunSpec]:
    base = run_a_base(probe_data)
    user_plugins = "VLLM_PLUGINS" in params.run_a_env or "VLLM_PLUGINS" in params.run_a_unset
    if user_plugins and base["mode"] != "no_plugin":
        base = {
            "mode": "user",
            "env": {},
            "reason": "Run A's VLLM_PLUGINS was given in run_a_env/run_a_unset; the probe's choice "
            f"({base['mode']}) was not applied",
        }
    devices = {
        name: {plan["variable"]: plan[name]} if plan and plan.get("parallel") else {}
        for name in RUNS
    }
    a_env, a_unset = combine(
        {**RUN_A_ENV, **base["env"], **devices["run_a"]},
        RUN_A_UNSET,
        params.run_a_env,
        params.run_a_unset,
    )
    b_env, b_unset = combine(
        {**RUN_B_ENV, **devices["run_b"]}, RUN_B_UNSET, params.run_b_env, params.run_b_unset
    )
    run_a = RunSpec(
        "run_a",
        RUN_TITLES["run_a"],
        a_env,
        a_unset,
        {"mode": base["mode"], "reason": base["reason"]},
    )
    run_b = RunSpec("run_b", RUN_TITLES["run_b"], b_env, b_unset)
    return run_a, run_b


def phase_argv(
    params: Params, target: Target, scripts: str, phase: str, model: str, tp: int, output: str
) -> list[str]:
    argv = [
        target.python(),
        f"{scripts}/{PHASE_SCRIPTS[phase]}",
        "--model",
        model,
        "--tp",
        str(tp),
        "--output",
        output,
        "--max-tokens",
        str(params.max_tokens),
    ]
    if params.trust_remote_code:
        argv.append("--trust-remote-code")
    if params.max_model_len:
        argv += ["--max-model-len", str(params.max_model_len)]
    if params.prompts_file:
        argv += ["--prompts", params.prompts_file]
    if params.extra_vllm_args:
        argv += ["--extra-args", json.dumps(list(params.extra_vllm_args))]
    if phase == "serve":
        argv += [
            "--health-timeout",
            str(params.health_timeout),
            "--request-timeout",
            str(params.request_timeout),
            "--port",
            str(params.port),
            "--timeout-cap",
            str(max(params.timeout_cap, params.health_timeout)),
        ]
    return argv


def timeout_param(phase: str) -> str:
    return PHASE_TIMEOUT_PARAM[phase]


def progress_window(timeout: float) -> float:
    """Output this recent at the timeout means the phase was still working, not hung (the
    session helper's rule: one implementation)."""
    return _progress_window(timeout)


def run_phase(
    params: Params,
    target: Target,
    scripts: str,
    spec: RunSpec,
    phase: str,
    model: str,
    tp: int,
    out_dir: Path,
    attempt: int = 1,
    overrides: dict[str, Any] | None = None,
    remote_stem: str | None = None,
) -> PhaseResult:
    """Run one attempt of one phase; how it ended as raw facts (judged by the driver), never an
    exception. Each attempt has its own log, result and record file (vocabulary.Layout), and in the target a
    result path and evidence folder no earlier phase wrote (`fresh_remote`), so a phase that dies
    early never fetches another's result or evidence."""
    layout = Layout(out_dir)
    key = f"{spec.name}_{phase}"
    remote = fresh_remote(target, remote_stem or Layout.stem(key, attempt))
    log = layout.phase_log(key, attempt)
    local = layout.phase_result(key, attempt)
    for stale in (log, local, layout.phase_record(key, attempt)):
        stale.unlink(missing_ok=True)
    command = phase_argv(params, target, scripts, phase, model, tp, remote)
    timeout = params.offline_timeout if phase == "offline" else params.serve_timeout
    cap = max(params.timeout_cap, timeout)
    started_at = now()
    env_set = {**params.env, **spec.env_set}
    res = target.run(
        command, env_set=env_set, env_unset=spec.env_unset, timeout=timeout, log_path=log, cap=cap
    )
    fetched = target.fetch(remote, local)
    result, result_error = _read_result(local) if fetched else ({}, None)
    if not fetched and not res.timed_out:
        result_error = (
            f"the phase wrote no result file {local.name} (exit code {res.exit_code}); "
            f"its log is {log}"
        )
    pr = PhaseResult(
        run=spec.name,
        phase=phase,
        status="FAIL",  # until judged
        duration_s=res.duration_s,
        started_at=started_at,
        exit_code=res.exit_code,
        timed_out=res.timed_out,
        command=command,
        log=str(log),
        result_file=str(local) if fetched else None,
        result=result,
        leftover_pids=res.leftovers,
        attempt=attempt,
        overrides=dict(overrides or {}),
        env={"set": dict(spec.env_set), "unset": list(spec.env_unset)},
        exit=_exit_facts(res, phase, timeout, cap, result_error),
    )
    save_phase(pr, out_dir)
    return pr


def fresh_remote(target: Target, stem: str) -> str:
    """A result path in the target's work folder that nothing has written yet."""
    remote, n = target.work_path(f"{stem}.json"), 1
    while target.path_exists(remote) or target.path_exists(remote[: -len(".json")] + ".evidence"):
        n += 1
        remote = target.work_path(f"{stem}.{n}.json")
    return remote


def _exit_facts(
    res: ExecResult, phase: str, timeout: float, cap: float, result_error: str | None
) -> PhaseExit:
    """How the phase's session ended, as the session helper told it."""
    return PhaseExit(
        timeout=timeout,
        timeout_param=timeout_param(phase),
        cap=cap,
        ended_by=res.ended_by,
        idle_s=res.idle_s,
        ran_s=res.ran_s,
        last_line=res.last_line,
        progress_window=progress_window(timeout),
        dumped=len(res.dumped),
        result_error=result_error,
    )


def _read_result(local: Path) -> tuple[dict[str, Any], str | None]:
    """The (already redacted) result file, and what is wrong with it, if anything."""
    text = local.read_text(encoding="utf-8", errors="replace")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        return (
            {},
            f"result file {local.name} is corrupt: not valid JSON ({exc.msg} at line {exc.lineno})",
        )
    if not isinstance(result, dict) or result.get("status") not in ("PASS", "FAIL"):
        return {}, f"result file {local.name} is not a phase result (no PASS/FAIL status)"
    return result, None


def phase_file(out_dir: Path, key: str, attempt: int = 1) -> Path:
    return Layout(out_dir).phase_record(key, attempt)


def save_phase(pr: PhaseResult, out_dir: Path) -> None:
    """The host's record of a finished attempt: what `report OUTPUT_DIR` rebuilds from."""
    write(phase_file(out_dir, pr.key, pr.attempt), pr)


def load_phase(path: Path) -> PhaseResult:
    return read(PhaseResult, path)


def run_b_skip_reason(params: Params, any_multichip: bool) -> str | None:
    if params.run_b == "never":
        return "Run B skipped: run_b='never' was asked."
    if params.run_b == "auto" and not any_multichip:
        return "Run B skipped: no multi-chip packages installed (none of FlagGems, FlagTree, FlagCX found)."
    return None
