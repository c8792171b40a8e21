"""The driver: runs things and appends what happened to one frozen `records.Evidence`.

The notebook drives a small surface — `Verification.start`, `run_probe`, `resolve_model`,
`run_both`, `run_phase(...)`, `ablate`, `bisect`, `report()`, `close` — with typed hooks `on_attempt`
(every finished attempt) and `on_step` (every step of the culprit-op search). Every judgement
is `analysis.judge.judge(evidence)`; nothing here decides. Each step never raises for a
failure of the model or the stack: the report must always be written. A failed pre-check
(probe, model, TP) leaves the runs NOT_RUN with the cause; after it no engine is started.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import ablation, bisect, records, report, runs
from .analysis.judge import Judgement, judge, judge_attempt, rejudge
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


# What the runs' flags and the device plan follow from.
PLAN_INPUTS = {"probe", "tp", "precheck_error", "run_b_skip"}


def _device_plan(params: Params, e: records.Evidence) -> dict[str, Any]:
    """Side by side or one after the other, and on which devices (runs.device_plan)."""
    run_b_runs = e.probe is not None and not e.precheck_error and not e.run_b_skip
    return runs.device_plan(params, e.probe, e.tp, run_b_runs)


@dataclass
class Verification:
    """One verification: the evidence gathered so far and the target it runs on.

    `evidence` is replaced, never changed in place; `judgement` is judged again from it when
    asked after a change. Hooks: `on_attempt(PhaseResult)` after every attempt of a phase,
    `on_step(BisectStep)` after every step of the culprit-op search.
    """

    params: Params
    target: Target | None
    evidence: records.Evidence | None = None
    scripts: str | None = None
    closed: bool = False
    on_attempt: Callable[[PhaseResult], None] | None = None
    on_step: Callable[[records.BisectStep], None] | None = None
    on_ablation_run: Callable[[records.AblationRun], None] | None = None
    last_report: dict[str, Any] | None = None  # the report the last report() wrote
    _judgement: Judgement | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.evidence is None:
            self.evidence = records.Evidence(
                parameters=self.params.to_dict(), started_at=records.now(), target={}
            )
        self._update()

    # ----------------------------------------------------------------------- the evidence

    def _update(
        self, change: Callable[[records.Evidence], dict[str, Any]] | None = None, **changes: Any
    ) -> records.Evidence:
        """A new Evidence with `changes` (and what `change` makes of the evidence, under the lock:
        runs side by side append at once); the runs' flags and device plan are derived again
        when what they follow from changed (a resumed run keeps the ones it ran with)."""
        with self._lock:
            assert self.evidence is not None
            e = replace(self.evidence, **changes, **(change(self.evidence) if change else {}))
            if not e.specs or set(changes) & PLAN_INPUTS:
                plan = _device_plan(self.params, e)
                e = replace(e, device_plan=plan, specs=runs.run_specs(self.params, e.probe, plan))
            self.evidence = e
            self._judgement = None
            return self.evidence

    @property
    def probe(self) -> Probe | None:
        return Probe(self.evidence.probe) if self.evidence.probe is not None else None

    @property
    def model(self) -> ModelStep | None:
        return ModelStep(**self.evidence.model) if self.evidence.model else None

    @property
    def tp(self) -> int | None:
        return self.evidence.tp

    @property
    def precheck_error(self) -> str | None:
        return self.evidence.precheck_error

    @property
    def run_b_skip(self) -> str | None:
        return self.evidence.run_b_skip

    @property
    def runs(self) -> dict[str, dict[str, PhaseResult]]:
        """The latest attempt of each phase (placeholders for phases not run)."""
        return self.evidence.runs

    @property
    def history(self) -> list[PhaseResult]:
        """Every attempt, in the order they ran."""
        return list(self.evidence.attempts)

    @property
    def bisection(self) -> records.Bisection | None:
        return self.evidence.bisection

    @property
    def ablation(self) -> records.Ablation | None:
        return self.evidence.ablation

    @property
    def out_dir(self) -> Path:
        return self.params.output_path

    # ----------------------------------------------------------------------- the judgement

    @property
    def judgement(self) -> Judgement:
        """analysis.judge of the evidence as it is now (judged again after every change)."""
        judged = self._judgement
        if judged is None:
            judged = self._judgement = judge(self.evidence)
        return judged

    @property
    def verdict(self) -> records.Verdict:
        return self.judgement.verdict

    # ----------------------------------------------------------------------- the steps

    @classmethod
    def start(cls, params: Params, **hooks: Any) -> Verification:
        """Open the target; a target that cannot be used is a failed pre-check, reported.

        A new verification in a folder that held an earlier one drops that one's phase records,
        so a later `report OUTPUT_DIR` never mixes the two (logs are overwritten phase by phase).
        """
        params.output_path.mkdir(parents=True, exist_ok=True)
        for stale in Layout(params.output_path).phases.glob("*.json"):
            stale.unlink()
        v = cls(params=params, target=None, **hooks)
        v._update(runs={s.name: skipped(s, "not run yet", "NOT_RUN") for s in v.specs()})
        try:
            v.target = make_target(params)
            v._update(target=v.target.describe())
        except UserError as exc:
            kind = "docker" if params.container else "local"
            v._update(target={"kind": kind, "error": str(exc)})
            v._precheck_fail(str(exc))
        v.save_state()
        return v

    @classmethod
    def run_all(cls, params: Params, **hooks: Any) -> Verification:
        """Every step in the notebook's order, for scripts and tests; the report is written."""
        v = cls.start(params, **hooks)
        v.run_probe()
        v.resolve_model()
        v.run_both()
        v.ablate()
        if v.op_search_next():
            v.bisect()
        v.report()
        v.close()
        return v

    @classmethod
    def resume(cls, out_dir: Path) -> Verification:
        """What a run left on disk, judged again with today's rules; the phases it never
        finished are NOT_RUN."""
        evidence = load_evidence(Path(out_dir))
        params = validate(evidence.parameters)
        return cls(params=params, target=None, evidence=evidence, closed=True)

    def save_state(self) -> None:
        """Everything but the phases (saved as they end), for `report OUTPUT_DIR`."""
        e = self.evidence
        state = records.State(
            params=self.params.to_dict(),
            started_at=e.started_at,
            target=e.target,
            probe=e.probe,
            model=e.model,
            tp=e.tp,
            precheck_error=e.precheck_error,
            run_b_skip=e.run_b_skip,
            specs=e.specs,
            device_plan=e.device_plan,
        )
        records.write(Layout(self.out_dir).state, state, self.redactor().data)

    def _precheck_fail(self, message: str) -> None:
        error = self.precheck_error or message
        self._update(precheck_error=error)
        not_run = {s.name: skipped(s, f"not run: {error}", "NOT_RUN") for s in self.specs()}
        self._update(lambda e: {"runs": {**e.runs, **not_run}})

    def run_probe(self) -> Probe | None:
        """Copy the scripts in, probe the stack, settle TP and Run B's skip rule."""
        if self.target is None:
            return None
        try:
            self.scripts = self.target.install_scripts(SCRIPTS_DIR)
            flagcx = self.spec("run_b").flagcx_path
            probe = run_probe(
                self.target, self.scripts, flagcx, self.out_dir, dict(self.params.env)
            )
        except (UserError, OSError) as exc:
            found = getattr(
                exc, "probe", None
            )  # a Python without vLLM still leaves its fingerprint
            self._update(probe=found.data if found else None)
            self._precheck_fail(f"{exc}")
            self.save_state()
            return None
        devices = probe.device_count
        tp = self.params.tp_size or devices
        self._update(probe=probe.data, tp=tp)
        if tp > devices:
            self._precheck_fail(f"requested TP={tp} but only {devices} available")
        self._update(run_b_skip=runs.run_b_skip_reason(self.params, probe.any_multichip()))
        self.save_state()
        return probe

    def resolve_model(self) -> ModelStep | None:
        if self.precheck_error or self.target is None:
            return None
        try:
            model = resolve_model(self.params, self.target, self.scripts or "", self.out_dir)
        except UserError as exc:
            model = ModelStep(requested=self.params.model_path, error=str(exc))
            self._precheck_fail(str(exc))
        self._update(model=model.to_dict())
        if not self.precheck_error:
            problem = check_prompts_file(self.params.prompts_file, self.target, self.out_dir)
            if problem:
                self._precheck_fail(problem)
        self.save_state()
        return model

    def specs(self) -> tuple[RunSpec, RunSpec]:
        """Both runs' flags; Run A's way of keeping the FL plugin out comes from the probe, and
        each run's devices from the device plan when they run side by side."""
        run_a, run_b = self.evidence.specs
        return run_a, run_b

    def spec(self, name: str) -> RunSpec:
        return self.evidence.spec(name)

    def device_plan(self) -> dict[str, Any]:
        """Side by side or one after the other, and on which devices (runs.device_plan)."""
        return dict(self.evidence.device_plan or {})

    def run_both(self) -> dict[str, dict[str, PhaseResult]]:
        """Run A and Run B: side by side on disjoint devices when the target has 2 × TP of them
        (parallel_runs=auto), else one after the other. Each run's phases keep their order.

        Ctrl-C (KeyboardInterrupt in this thread) while they run side by side stops both
        running phases, records what they gathered (NOT_RUN: interrupted) and starts no other.
        """
        self._stopping.clear()
        if not self.device_plan()["parallel"]:
            for name in RUNS:
                self.run(name)
            return self.runs
        self._open()  # one work folder for both, made before the runs start
        pool = ThreadPoolExecutor(max_workers=len(RUNS), thread_name_prefix="model-verify")
        try:
            for future in [pool.submit(self.run, name) for name in RUNS]:
                future.result()
        except KeyboardInterrupt:
            self.stop_running()
            raise
        finally:
            pool.shutdown(wait=True)  # after a stop: until both phases have recorded their end
        return self.runs

    def stop_running(self) -> None:
        """Stop every phase session running now (their process groups) and start no new phase."""
        self._stopping.set()
        if self.target is not None:
            self.target.stop_running()

    def run(self, name: str) -> dict[str, PhaseResult]:
        """Both phases of one run, unless the pre-check failed or Run B is skipped."""
        spec = self.spec(name)
        if self.precheck_error:
            return self.runs[name]
        if name == "run_b" and self.run_b_skip:
            skip = skipped(spec, self.run_b_skip)
            self._update(lambda e: {"runs": {**e.runs, name: skip}})
            return self.runs[name]
        for phase in PHASES:
            if self._stopping.is_set():
                break
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
        self._check_phase_call(run, phase, overrides)
        params = validate({**self.params.to_dict(), **overrides}) if overrides else self.params
        spec = self.spec(run)
        if env or unset:
            env_set, env_unset = runs.combine(spec.env_set, spec.env_unset, dict(env or {}), unset)
            spec = replace(spec, env_set=env_set, env_unset=env_unset)
        target, scripts = self._open()
        with self._lock:
            attempt = 1 + sum(1 for p in self.evidence.attempts if p.key == f"{run}_{phase}")
        changed = {
            **({"env": dict(env)} if env else {}),
            **({"unset": list(unset)} if unset else {}),
            **{k: params.to_dict()[k] for k in overrides},
        }
        raw = runs.run_phase(
            params,
            target,
            scripts,
            spec,
            phase,
            self._model_path(),
            self.tp or 1,
            self.out_dir,
            attempt=attempt,
            overrides=changed,
        )
        pr = self._judged(raw, self.out_dir)
        self.add_attempt(pr)
        if self.on_attempt is not None:
            self.on_attempt(pr)
        return pr

    def _check_phase_call(self, run: str, phase: str, overrides: Mapping[str, Any]) -> None:
        """A phase can run only once the pre-check passed, and changes only what a phase reads."""
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

    def _model_path(self) -> str:
        model = self.model
        assert model is not None and model.path
        return model.path

    def _judged(self, raw: PhaseResult, out_dir: Path) -> PhaseResult:
        """The attempt judged from its raw facts, its record on disk rewritten with the judgement."""
        pr = judge_attempt(raw, self.probe.owners if self.probe else None)
        runs.save_phase(pr, out_dir)
        return pr

    def run_step(
        self, run: str, phase: str, *, env: dict[str, str], unset: Sequence[str], folder: Path
    ) -> PhaseResult:
        """One phase with `env`/`unset` on top of the run's flags, its files under `folder`, not
        an attempt of the verification: the `run_phase` the culprit-op search is handed. Its own
        attempt: `folder` is emptied first, and in the target it writes a result file and an
        evidence folder of its own (named after `folder`, never Run B's)."""
        spec = self.spec(run)
        env_set, env_unset = runs.combine(spec.env_set, spec.env_unset, env, unset)
        spec = replace(spec, env_set=env_set, env_unset=env_unset)
        target, scripts = self._open()
        shutil.rmtree(folder, ignore_errors=True)
        try:
            where = Path(folder).resolve().relative_to(self.out_dir.resolve()).parts
        except ValueError:
            where = Path(folder).parts[-2:]
        raw = runs.run_phase(
            self.params,
            target,
            scripts,
            spec,
            phase,
            self._model_path(),
            self.tp or 1,
            folder,
            remote_stem="-".join([*where, f"{run}_{phase}"]),
        )
        return self._judged(raw, folder)

    def add_attempt(self, pr: PhaseResult) -> None:
        """A finished attempt becomes the phase's latest; what was judged before is judged again
        (an earlier culprit-op search no longer applies)."""
        self._update(
            lambda e: {
                "attempts": (*e.attempts, pr),
                "runs": {**e.runs, pr.run: {**e.runs.get(pr.run, {}), pr.phase: pr}},
                "bisection": None,
                "ablation": None,
            }
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

    def bisect(
        self, on_step: Callable[[records.BisectStep], None] | None = None
    ) -> records.Bisection:
        """The culprit-op search (bisect.py) on the judged verdict; each step goes to `on_step`
        (else the verification's own hook)."""
        layout = Layout(self.out_dir)

        def save(b: records.Bisection) -> None:
            records.write(layout.bisection, b, self.redactor().data)

        found = bisect.search(
            self.evidence,
            self.judgement,
            self.run_step,
            self.out_dir,
            on_step=on_step or self.on_step,
            save=save,
        )
        self._update(bisection=found)
        return found

    def ablate(
        self, on_step: Callable[[records.AblationRun], None] | None = None
    ) -> records.Ablation:
        """The component ablation (ablation.py) on the judged verdict: Run B's faulty phase again
        with one FlagOS component off at a time; each run goes to `on_step` (else the
        verification's own hook). Its record is saved after every run."""
        out = ablation.record_path(self.out_dir)

        def save(a: records.Ablation) -> None:
            records.write(out, a, self.redactor().data)

        found = ablation.ablate(
            self.evidence,
            self.judgement,
            self.run_step,
            self.out_dir,
            on_run=on_step or self.on_ablation_run,
            save=save,
        )
        self._update(ablation=found)
        return found

    def op_search_next(self) -> bool:
        """The culprit-op search runs unless the ablation proved a component other than FlagGems."""
        a = self.evidence.ablation
        return a is None or a.status != "confirmed" or a.component == "FlagGems"

    def report(self, notebook: str | None = None) -> dict[str, Any]:
        """Judge the evidence, write report.json and report.html, and return the report."""
        data = report.build(self.evidence, self.judgement, notebook=notebook)
        # the last net: no secret of the host or the target reaches the report
        self.last_report = self.redactor().data(data)
        report.write_report(self.last_report, self.out_dir)
        return self.last_report

    def redactor(self) -> Redactor:
        if self.target is not None:
            return self.target.redactor
        return Redactor(secret_values([os.environ]))


def load_evidence(out_dir: Path) -> records.Evidence:
    """The evidence a run left in its output folder, every attempt judged again with today's
    rules; the phases it never finished are NOT_RUN."""
    state_path = Layout(out_dir).state
    try:
        state = records.read(records.State, state_path)
    except OSError:
        raise UserError(
            f"{state_path} does not exist: {out_dir} is not a model-verify output folder."
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{state_path} is corrupt ({exc.msg}); rerun the notebook.") from None
    params = validate({**state.params, "output_dir": str(Path(out_dir).resolve())})
    e = records.Evidence(
        parameters=params.to_dict(),
        started_at=state.started_at,
        target=state.target,
        probe=state.probe,
        model=state.model,
        tp=state.tp,
        precheck_error=state.precheck_error,
        run_b_skip=state.run_b_skip,
    )
    plan = state.device_plan or _device_plan(params, e)  # as it ran; older files: derived again
    specs = state.specs or runs.run_specs(params, e.probe, plan)
    reason = (
        f"not run: {e.precheck_error}"  # as the live run said it
        if e.precheck_error
        else "NOT_RUN: the verification stopped before this phase finished"
    )
    latest = {s.name: skipped(s, reason, "NOT_RUN") for s in specs}
    if e.run_b_skip:
        latest["run_b"] = skipped(specs[1], e.run_b_skip)
    found = [runs.load_phase(path) for path in Layout(out_dir).phases.glob("*.json")]
    found.sort(key=lambda p: (p.attempt, RUNS.index(p.run), PHASES.index(p.phase)))
    for pr in found:
        latest[pr.run] = {**latest[pr.run], pr.phase: pr}
    bisection = None
    if Layout(out_dir).bisection.is_file():
        bisection = records.read(records.Bisection, Layout(out_dir).bisection)
    found_ablation = None
    if ablation.record_path(out_dir).is_file():
        found_ablation = records.read(records.Ablation, ablation.record_path(out_dir))
    e = replace(
        e,
        specs=specs,
        device_plan=plan,
        runs=latest,
        attempts=tuple(found),
        bisection=bisection,
        ablation=found_ablation,
    )
    return rejudge(e)


def rebuild(out_dir: Path) -> dict[str, Any]:
    """`model-verify report DIR` and the batch's salvage: read the evidence, judge it again,
    write report.json and report.html; the report."""
    return Verification.resume(Path(out_dir)).report()
