"""The data flow of DESIGN.md as one object the notebook drives cell by cell.

Each step records what it found and never raises for a failure of the model or the stack:
the report must always be written. A failed pre-check (probe, model, TP) leaves the runs
NOT_RUN with the cause; after it no engine is started.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import bisect, compare, records, report, runs, stack, verdict
from .errors import ParameterError, UserError
from .model import ModelStep, resolve_model
from .params import Params, validate
from .probe import Probe, run_probe
from .records import PhaseResult, RunSpec, skipped
from .redact import Redactor, secret_values
from .target import SCRIPTS_DIR, DockerTarget, LocalTarget, Target
from .vocabulary import PHASES, RUNS, Layout


def make_target(params: Params) -> Target:
    """A container name or id means the Docker target; none means this machine."""
    if params.container:
        return DockerTarget(
            params.container,
            docker_host=params.docker_host,
            python=params.target_python,
            keep_files=params.keep_files,
        )
    return LocalTarget(
        python=params.target_python,
        keep_files=params.keep_files,
        work_root=Layout(params.output_path).work,
    )


# What run_phase may change for one attempt: the parameters a phase reads.
PHASE_OVERRIDES = (
    "extra_vllm_args",
    "offline_timeout",
    "serve_timeout",
    "health_timeout",
    "request_timeout",
    "timeout_cap",
    "max_tokens",
    "max_model_len",
)


def _container_common() -> Any:
    """`container_scripts/_common.py`, the one implementation the phases use inside the target."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "modelverify_container_common", SCRIPTS_DIR / "_common.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_prompts_file(path: str | None, target: Target, out_dir: Path) -> str | None:
    """Pre-check: the prompts_file is read from the target and validated before any engine starts.

    Returns one sentence naming the parameter and the file when it is unusable, else None.
    """
    if not path:
        return None
    common = _container_common()
    local = Layout(out_dir).step_result("prompts_file")
    local.parent.mkdir(parents=True, exist_ok=True)
    if not target.fetch(path, local):
        return (
            f"Parameter prompts_file: {path} does not exist in the target or is not a readable file; "
            f"give the path of a JSON prompt set inside the target, {common.PROMPTS_SHAPE}."
        )
    try:
        data = json.loads(local.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        why = (
            f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else str(exc)
        )
        return (
            f"Parameter prompts_file: {path} is not valid JSON ({why}); it must be "
            f"{common.PROMPTS_SHAPE}."
        )
    try:
        common.check_prompts(data, path)
    except common.PromptsFileError as exc:
        return str(exc)
    return None


@dataclass
class Verification:
    params: Params
    target: Target | None
    started_at: str = field(default_factory=report.now)
    target_info: dict[str, Any] = field(default_factory=dict)
    scripts: str | None = None
    probe: Probe | None = None
    model: ModelStep | None = None
    tp: int | None = None
    precheck_error: str | None = None
    run_b_skip: str | None = None
    runs: dict[str, dict[str, PhaseResult]] = field(
        default_factory=dict
    )  # the latest attempt of each phase
    history: list[PhaseResult] = field(default_factory=list)  # every attempt, in the order they ran
    comparisons: list[compare.PhaseComparison] = field(default_factory=list)
    activity: dict[str, dict[str, stack.ComponentActivity]] = field(default_factory=dict)
    engine_env: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # stack variables each run's processes saw
    gate: stack.Gate | None = None  # Run B's FlagOS work that Run A did not do; Run A base or not
    verdict: records.Verdict | None = None
    bisection: records.Bisection | None = None  # the culprit-op search, once made
    report: dict[str, Any] | None = None
    closed: bool = False
    _lock: threading.Lock = field(
        default_factory=threading.Lock, repr=False, compare=False
    )  # runs side by side

    @classmethod
    def start(cls, params: Params) -> Verification:
        """Open the target; a target that cannot be used is a failed pre-check, reported.

        A new verification in a folder that held an earlier one drops that one's phase records,
        so a later `report OUTPUT_DIR` never mixes the two (logs are overwritten phase by phase).
        """
        params.output_path.mkdir(parents=True, exist_ok=True)
        for stale in Layout(params.output_path).phases.glob("*.json"):
            stale.unlink()
        v = cls(params=params, target=None)
        v.runs = {
            spec.name: skipped(spec, "not run yet", "NOT_RUN") for spec in runs.run_specs(params)
        }
        try:
            v.target = make_target(params)
            v.target_info = v.target.describe()
        except UserError as exc:
            v.target_info = {"kind": "docker" if params.container else "local", "error": str(exc)}
            v._precheck_fail(str(exc))
        v.save_state()
        return v

    @classmethod
    def run_all(cls, params: Params) -> Verification:
        """Every step in the notebook's order, for scripts and tests; the report is written."""
        v = cls.start(params)
        v.run_probe()
        v.resolve_model()
        v.run_both()
        v.decide()
        v.bisect()
        v.write_report()
        v.close()
        return v

    @classmethod
    def resume(cls, out_dir: Path) -> Verification:
        """What a run left on disk, the phases it never finished marked NOT_RUN."""
        state_path = Layout(Path(out_dir)).state
        try:
            state = records.read(records.State, state_path)
        except OSError:
            raise UserError(
                f"{state_path} does not exist: {out_dir} is not a model-verify output folder."
            ) from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{state_path} is corrupt ({exc.msg}); rerun the notebook.") from None
        params = validate({**state.params, "output_dir": str(Path(out_dir).resolve())})
        v = cls(
            params=params,
            target=None,
            started_at=state.started_at,
            target_info=state.target,
            tp=state.tp,
            precheck_error=state.precheck_error,
            run_b_skip=state.run_b_skip,
            closed=True,
        )
        if state.probe:
            v.probe = Probe(state.probe)
        if state.model:
            v.model = ModelStep(**state.model)
        reason = "NOT_RUN: the verification stopped before this phase finished"
        v.runs = {
            spec.name: skipped(spec, v.precheck_error or reason, "NOT_RUN") for spec in v.specs()
        }
        if v.run_b_skip:
            v.runs["run_b"] = skipped(v.spec("run_b"), v.run_b_skip)
        attempts = [runs.load_phase(path) for path in Layout(v.out_dir).phases.glob("*.json")]
        for pr in sorted(
            attempts, key=lambda p: (p.attempt, RUNS.index(p.run), PHASES.index(p.phase))
        ):
            v.add_attempt(pr)
        if Layout(v.out_dir).bisection.is_file():
            v.bisection = records.read(records.Bisection, Layout(v.out_dir).bisection)
        return v

    def save_state(self) -> None:
        """Everything but the phases (saved as they end), for `report OUTPUT_DIR`."""
        state = records.State(
            params=self.params.to_dict(),
            started_at=self.started_at,
            target=self.target_info,
            probe=self.probe.data if self.probe else None,
            model=self.model.to_dict() if self.model else None,
            tp=self.tp,
            precheck_error=self.precheck_error,
            run_b_skip=self.run_b_skip,
        )
        records.write(Layout(self.out_dir).state, state, self.redactor().data)

    @property
    def out_dir(self) -> Path:
        return self.params.output_path

    def _precheck_fail(self, message: str) -> None:
        self.precheck_error = self.precheck_error or message
        for spec in runs.run_specs(self.params):
            self.runs[spec.name] = skipped(spec, f"not run: {self.precheck_error}", "NOT_RUN")

    def run_probe(self) -> Probe | None:
        """Copy the scripts in, probe the stack, settle TP and Run B's skip rule."""
        if self.target is None:
            return None
        try:
            self.scripts = self.target.install_scripts(SCRIPTS_DIR)
            flagcx = self.spec("run_b").flagcx_path
            self.probe = run_probe(
                self.target, self.scripts, flagcx, self.out_dir, dict(self.params.env)
            )
        except (UserError, OSError) as exc:
            self.probe = getattr(
                exc, "probe", None
            )  # a Python without vLLM still leaves its fingerprint
            self._precheck_fail(f"{exc}")
            self.save_state()
            return None
        devices = self.probe.device_count
        self.tp = self.params.tp_size or devices
        if self.tp > devices:
            self._precheck_fail(f"requested TP={self.tp} but only {devices} available")
        self.run_b_skip = runs.run_b_skip_reason(self.params, self.probe.any_multichip())
        self.save_state()
        return self.probe

    def resolve_model(self) -> ModelStep | None:
        if self.precheck_error or self.target is None:
            return None
        try:
            self.model = resolve_model(self.params, self.target, self.scripts or "", self.out_dir)
        except UserError as exc:
            self.model = ModelStep(requested=self.params.model_path, error=str(exc))
            self._precheck_fail(str(exc))
        if not self.precheck_error:
            problem = check_prompts_file(self.params.prompts_file, self.target, self.out_dir)
            if problem:
                self._precheck_fail(problem)
        self.save_state()
        return self.model

    def specs(self) -> tuple[RunSpec, RunSpec]:
        """Both runs' flags; Run A's way of keeping the FL plugin out comes from the probe, and
        each run's devices from the device plan when they run side by side."""
        return runs.run_specs(
            self.params, self.probe.data if self.probe else None, self.device_plan()
        )

    def device_plan(self) -> dict[str, Any]:
        """Side by side or one after the other, and on which devices (runs.device_plan)."""
        run_b_runs = self.probe is not None and not self.precheck_error and not self.run_b_skip
        return runs.device_plan(
            self.params, self.probe.data if self.probe else None, self.tp, run_b_runs
        )

    def run_both(self) -> dict[str, dict[str, PhaseResult]]:
        """Run A and Run B: side by side on disjoint devices when the target has 2 × TP of them
        (parallel_runs=auto), else one after the other. Each run's phases keep their order."""
        if not self.device_plan()["parallel"]:
            for name in RUNS:
                self.run(name)
            return self.runs
        self._open()  # one work folder for both, made before the runs start
        with ThreadPoolExecutor(max_workers=len(RUNS), thread_name_prefix="model-verify") as pool:
            for future in [pool.submit(self.run, name) for name in RUNS]:
                future.result()
        return self.runs

    def spec(self, name: str) -> RunSpec:
        return {s.name: s for s in self.specs()}[name]

    def run(self, name: str) -> dict[str, PhaseResult]:
        """Both phases of one run; failures are diagnosed from their logs."""
        spec = self.spec(name)
        if self.precheck_error:
            return self.runs[name]
        if name == "run_b" and self.run_b_skip:
            self.runs[name] = skipped(spec, self.run_b_skip)
            return self.runs[name]
        for phase in PHASES:
            self.run_phase(name, phase)
        return self.runs[name]

    def run_phase(
        self,
        run: str,
        phase: str,
        *,
        env: Mapping[str, str] | None = None,
        unset: Sequence[str] = (),
        **overrides: Any,
    ) -> PhaseResult:
        """Run one phase again — with variables set (`env`) or removed (`unset`) on top of the run's
        flags, or with other phase parameters (`extra_vllm_args`, the timeouts, `max_tokens`,
        `max_model_len`) — as a new numbered attempt with its own log and result.

        Comparison, stack activity and verdict always use the latest attempt of each phase; the
        report lists every attempt. This is the debugging loop: change one thing, re-run, re-read.
        """
        if run not in RUNS or phase not in PHASES:
            raise ParameterError(
                f"run_phase({run!r}, {phase!r}): run is one of {', '.join(RUNS)} and phase one "
                f"of {', '.join(PHASES)}, e.g. v.run_phase('run_b', 'serve')."
            )
        unknown = sorted(set(overrides) - set(PHASE_OVERRIDES))
        if unknown:
            raise ParameterError(
                f"run_phase cannot change {unknown[0]}: it changes env, unset and "
                f"{', '.join(PHASE_OVERRIDES)}; start a new verification for anything else."
            )
        if self.precheck_error:
            raise UserError(
                f"The pre-check failed ({self.precheck_error}); no phase can run until it passes: "
                "fix it and run the notebook again."
            )
        if self.model is None or not self.model.path or not self.tp:
            raise UserError(
                "The probe and model steps have not run yet: call v.run_probe() and "
                "v.resolve_model() (or run the notebook's first cells) before run_phase."
            )
        params = validate({**self.params.to_dict(), **overrides}) if overrides else self.params
        spec = self.spec(run)
        if env or unset:
            env_set, env_unset = runs.combine(spec.env_set, spec.env_unset, dict(env or {}), unset)
            spec = replace(spec, env_set=env_set, env_unset=env_unset)
        target, scripts = self._open()
        with self._lock:
            attempt = 1 + sum(1 for p in self.history if p.run == run and p.phase == phase)
        changed = {
            **({"env": dict(env)} if env else {}),
            **({"unset": list(unset)} if unset else {}),
            **{k: params.to_dict()[k] for k in overrides},
        }
        pr = runs.run_phase(
            params,
            target,
            scripts,
            spec,
            phase,
            self.model.path,
            self.tp,
            self.out_dir,
            attempt=attempt,
            overrides=changed,
        )
        self.add_attempt(pr)
        return pr

    def attempts(self, run: str | None = None, phase: str | None = None) -> list[PhaseResult]:
        """Every attempt (of one run / phase), oldest first."""
        return [p for p in self.history if run in (None, p.run) and phase in (None, p.phase)]

    def add_attempt(self, pr: PhaseResult) -> None:
        """A finished attempt becomes the phase's latest; what was judged before is judged again."""
        with self._lock:
            self.history.append(pr)
            self.runs.setdefault(pr.run, {})[pr.phase] = pr
            self.comparisons, self.gate, self.verdict, self.report, self.bisection = (
                [],
                None,
                None,
                None,
                None,
            )

    def _open(self) -> tuple[Target, str]:
        """The target with our scripts in it; a closed verification opens a fresh work folder."""
        if self.target is None or self.closed or self.scripts is None:
            if self.target is not None and not self.closed:
                self.target.cleanup()
            self.target = make_target(self.params)
            self.scripts = self.target.install_scripts(SCRIPTS_DIR)
            self.closed = False
        return self.target, self.scripts

    def close(self) -> None:
        """Remove what we copied into the target (unless keep_files). Safe to call twice; a later
        run_phase opens a new work folder."""
        if self.target is not None and not self.closed:
            self.target.cleanup()
        self.closed = True

    def __enter__(self) -> Verification:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def compare(self) -> list[records.PhaseComparison]:
        """Run A vs Run B outputs of the phases both passed, and the stack's activity per run."""
        tol = self.tolerances()
        outputs = {
            run: {
                ph: pr.result.get("outputs") or []
                for ph, pr in phases.items()
                if pr.status == "PASS"
            }
            for run, phases in self.runs.items()
        }
        shared = [ph for ph in PHASES if ph in outputs["run_a"] and ph in outputs["run_b"]]
        self.comparisons = [
            compare.compare_phase(ph, outputs["run_a"][ph], outputs["run_b"][ph], tol)
            for ph in shared
        ]
        flagcx = (self.probe.data.get("flagcx") or {}) if self.probe else {}
        for name, phases in self.runs.items():
            spec = self.spec(name)
            library = flagcx.get("library") if spec.flagcx_path == flagcx.get("path") else None
            ran = [pr for pr in phases.values() if pr.status in ("PASS", "FAIL")]
            events = [pr.result.get("stack_evidence") or [] for pr in ran]
            self.activity[name] = (
                stack.merge(
                    {
                        pr.phase: stack.assess(
                            ev, stack.claims_in_log(pr.log), self.tp, spec.flagcx_path, library
                        )
                        for pr, ev in zip(ran, events)
                    }
                )
                if ran
                else {}
            )
            self.engine_env[name] = stack.engine_environment(e for ev in events for e in ev)
        self.gate = stack.gate(self.activity.get("run_a"), self.activity.get("run_b"))
        return self.comparisons

    def tolerances(self) -> compare.Tolerances:
        """The comparison's thresholds from the parameters (the rest from references/)."""
        p = self.params
        shift = {} if p.systematic_shift is None else {"systematic_shift": p.systematic_shift}
        return compare.Tolerances(
            tie=p.tie_tolerance,
            logprob=p.logprob_tolerance,
            repeat_fraction=p.repeat_fraction,
            **shift,
        )

    def decide(self) -> records.Verdict:
        """The verdict from the latest attempt of each phase (compared again every time)."""
        if self.precheck_error:
            self.verdict = verdict.precheck_failed(self.precheck_error)
        else:
            self.compare()
            self.verdict = verdict.decide(
                self.runs["run_a"],
                self.runs["run_b"],
                self.run_b_skip,
                self.comparisons,
                self.gate,
                self.in_both_runs(),
                self.spec("run_a").base_mode,
            )
            if self.bisection is not None:
                self.verdict = verdict.with_culprits(self.verdict, self.bisection)
        return self.verdict

    def bisect(self, on_step: Any = None) -> records.Bisection:
        """The culprit-op search (bisect.py) on the decided verdict; `on_step(step)` sees each step."""
        self.decide()
        self.bisection = bisect.search(self, on_step)
        self.decide()
        return self.bisection

    def in_both_runs(self) -> list[str]:
        """FlagOS parts the probe found that Run A does not leave out."""
        present = self.probe.multichip_present if self.probe else {}
        both = ["FlagTree"] if present.get("FlagTree") else []
        plugin_a = self.activity.get("run_a", {}).get("plugin")
        native = (self.spec("run_a").base_mode or {}).get("mode") == "native"
        if (plugin_a is not None and plugin_a.loaded) or (present.get("plugin") and native):
            both.append("the FL plugin")
        return both

    def warnings(self) -> list[str]:
        """What the engineer should know although no rule of the verdict turned on it."""
        out = []
        flagcx = (self.probe.data.get("flagcx") or {}) if self.probe else {}
        path = self.spec("run_b").flagcx_path
        if (
            path
            and flagcx.get("path") == path
            and not flagcx.get("library")
            and self.run_b_skip is None
        ):
            relevance = (
                "it matters only at TP>1: at TP=1 FlagCX is never exercised"
                if (self.tp or 1) <= 1
                else "so FlagCX is counted inactive in Run B"
            )
            out.append(
                f"Run B's FLAGCX_PATH={path} does not hold {flagcx.get('expected_library') or 'build/lib/libflagcx.so'}: "
                f"the FL plugin's FlagCX communicator turns itself off silently ({relevance}). Point FLAGCX_PATH "
                'at a FlagCX build with -y \'run_b_env: {"FLAGCX_PATH": "…"}\'.'
            )
        return out

    def write_report(self, notebook: str | None = None) -> tuple[Path, Path]:
        """report.json and report.html from what is known now; the target stays open (see close)."""
        self.decide()
        assert self.verdict is not None
        self.report = report.build_report(
            self.params,
            started_at=self.started_at,
            target=self.target_info,
            probe=self.probe.data if self.probe else None,
            model_step=self.model.to_dict() if self.model else None,
            tp=self.tp,
            runs=self.runs,
            specs=self.specs(),
            device_plan=self.device_plan(),
            engine_env=self.engine_env,
            gate=self.gate.to_dict() if self.gate else None,
            warnings=self.warnings(),
            skip_reason=self.run_b_skip,
            verdict=self.verdict,
            precheck_error=self.precheck_error,
            comparisons=[c.to_dict() for c in self.comparisons],
            activity={run: stack.to_dict(a) for run, a in self.activity.items()},
            notebook=notebook,
            attempts=self.history,
            bisection=self.bisection,
        )
        # the last net: no secret of the host or the target reaches the report
        self.report = self.redactor().data(self.report)
        return report.write_report(self.report, self.out_dir)

    def redactor(self) -> Redactor:
        if self.target is not None:
            return self.target.redactor
        return Redactor(secret_values([os.environ]))
