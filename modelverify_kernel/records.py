"""What a verification found, as frozen records with one JSON round trip.

The driver appends what happened to one `Evidence` (each attempt a `PhaseResult` with its raw
`PhaseExit` facts); `analysis/` judges it. The same `to_json` / `from_json` pair writes and reads
`state.json`, `phases/*.json`, `bisect/bisection.json` and the records inside `report.json`, so
a field is added in one place and every file follows. `analysis/` imports only this module,
`vocabulary` and itself, never the process runner.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .vocabulary import PHASES, RECORDER_SWITCH


def headline(error: str | None, limit: int = 300) -> str:
    """An error's first line, cut to `limit`: what the verdict and the A-vs-B table show (Dynamo's
    and pydantic's messages run to dozens of lines; the phase record keeps them whole)."""
    text = (error or "").strip()
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def relative_to_output(path: str | None, out_dir: Path) -> str | None:
    """A file's path as the records and the report keep it: relative to the output folder when
    it lies inside it, else as it is."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path(out_dir).resolve()))
    except ValueError:
        return path


def now() -> str:
    """A timestamp as every record writes it (UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


R = TypeVar("R")

# --------------------------------------------------------------------------- the round trip


def to_json(value: Any) -> Any:
    """A record (nested records, tuples, mappings) as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _convert(hint: Any, data: Any) -> Any:
    """`data` read back as the type `hint` names: nested records and tuples rebuilt."""
    if data is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            return _convert(arg, data)
    if dataclasses.is_dataclass(hint) and isinstance(data, Mapping):
        return from_json(hint, data)
    if origin is tuple and isinstance(data, list):
        inner = args[0] if args else Any
        return tuple(_convert(inner, v) for v in data)
    if origin is list and isinstance(data, list):
        inner = args[0] if args else Any
        return [_convert(inner, v) for v in data]
    if origin in (dict, Mapping, typing.Mapping) and isinstance(data, Mapping) and len(args) == 2:
        return {k: _convert(args[1], v) for k, v in data.items()}
    return data


def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
    """The record `cls` from `to_json`'s output; fields it does not know are ignored (older files)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _convert(hints[k], v) for k, v in data.items() if k in known})


def write_atomic(path: Path, text: str) -> None:
    """Whole or not at all: a file another process (a `report` rebuild, a summary reader, two
    batch cells ending at once) may read while it is rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(path: Path, record: Any, redact: typing.Callable[[Any], Any] | None = None) -> Path:
    """One record as a JSON file (through `redact`, the last net for secrets)."""
    data = to_json(record)
    if redact is not None:
        data = redact(data)
    write_atomic(path, json.dumps(data, indent=1, default=str))
    return path


def read(cls: type[R], path: Path) -> R:
    return from_json(cls, json.loads(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- runs and phases


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


@dataclass(frozen=True)
class PhaseExit:
    """How an attempt's process ended, as the runner saw it: the raw facts every judgement of the
    attempt (status, error, timeout rule, diagnosis) is derived from, so a rebuild can re-judge."""

    timeout: float  # the phase's timeout (s)
    timeout_param: str  # offline_timeout | serve_timeout
    cap: float  # timeout_cap as applied (never below the timeout)
    # exit | timeout | silence | cap | terminated (phase_output.ExecResult)
    ended_by: str | None = None
    idle_s: float | None = None  # on timeout: seconds since the last output line
    ran_s: float | None = None  # how long it ran before it ended or was stopped
    last_line: str | None = None  # on timeout: the last line printed
    progress_window: float | None = (
        None  # output this recent at the timeout was progress (the helper's rule)
    )
    dumped: int = 0  # processes that printed their stacks into the log before the kill
    result_error: str | None = None  # what is wrong with the result file (missing, corrupt)


@dataclass(frozen=True)
class PhaseResult:
    """What one attempt of one phase did; `result` is the container script's own JSON."""

    run: str
    phase: str
    status: str = "NOT_RUN"  # PASS | FAIL | SKIPPED | NOT_RUN
    duration_s: float | None = None
    started_at: str | None = None  # when the attempt started (UTC): runs side by side overlap
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
    attempt: int = 1  # 1 for the run itself; 2, 3, … for re-runs made with Verification.run_phase
    overrides: dict[str, Any] = field(
        default_factory=dict
    )  # what the re-run changed (run_phase's arguments)
    env: dict[str, Any] = field(
        default_factory=dict
    )  # {"set": {...}, "unset": [...]} this attempt ran with
    exit: PhaseExit | None = None  # the raw facts (None: skipped, or written before they were kept)

    @property
    def key(self) -> str:
        return f"{self.run}_{self.phase}"

    def to_dict(self) -> dict[str, Any]:
        """The report's view: the record without the script's raw result, plus its timings and outputs."""
        out = {k: v for k, v in to_json(self).items() if k not in ("result", "exit")}
        out["timings"] = self.result.get("timings", {})
        out["outputs"] = self.result.get("outputs", [])
        return out


def run_status(phases: Mapping[str, PhaseResult]) -> str:
    """A run passes only when every phase passes; SKIPPED / NOT_RUN only when no phase ran."""
    statuses = {p.status for p in phases.values()}
    if statuses <= {"SKIPPED"}:
        return "SKIPPED"
    if statuses == {"PASS"}:
        return "PASS"
    if statuses <= {"NOT_RUN"}:
        return "NOT_RUN"
    return "FAIL"


def skipped(spec: RunSpec, reason: str, status: str = "SKIPPED") -> dict[str, PhaseResult]:
    return {p: PhaseResult(run=spec.name, phase=p, status=status, reason=reason) for p in PHASES}


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class PromptComparison:
    index: int
    prompt: str
    kind: str  # completion | chat
    exact_match: bool
    tokens_a: int
    tokens_b: int
    first_divergence: int | None = None
    max_logprob_diff_prefix: float | None = None  # over the common prefix
    judgement: str = (
        "identical"  # identical | near_tie_flip | changed_distribution | logprob_drift | length
    )
    detail: str = ""


@dataclass(frozen=True)
class GarbageFinding:
    check: str  # empty | repetition | nonfinite | same_output
    index: int
    detail: str


@dataclass(frozen=True)
class AggregateJudgement:
    """One phase judged as a whole: flips and the distribution of logprob shifts.

    Shifts are |Δ logprob| between Run A and Run B at positions whose context both runs share
    (each prompt's common prefix and its first divergent position): `shared_*` over every token
    both runs list in their top-k, `chosen_*` over the chosen token on the common prefix.
    `systematic` follows the rule in references/output-comparison.md; `detail` is one sentence
    with the figures (the verdict quotes it).
    """

    prompts_compared: int = 0
    prompts_flipped: int = 0  # tokens differ anywhere, near-tie flips included
    positions_compared: int = 0  # positions with the same context in both runs
    shifts_compared: int = 0  # shared top-k logprobs compared at those positions
    chosen_median: float | None = None
    chosen_p90: float | None = None
    chosen_max: float | None = None
    shared_median: float | None = None
    shared_p90: float | None = None
    shared_max: float | None = None
    systematic: bool = False
    reason: str | None = None  # shift | flips | None
    limits: dict[str, float] = field(default_factory=dict)
    detail: str = "not compared"


@dataclass(frozen=True)
class PhaseComparison:
    phase: str
    prompts: list[PromptComparison] = field(default_factory=list)
    garbage_a: list[GarbageFinding] = field(default_factory=list)
    garbage_b: list[GarbageFinding] = field(default_factory=list)
    note: str | None = None
    aggregate: AggregateJudgement = field(default_factory=AggregateJudgement)

    @property
    def diverged(self) -> list[PromptComparison]:
        return [p for p in self.prompts if p.judgement in ("changed_distribution", "logprob_drift")]

    @property
    def mismatch_reason(self) -> str | None:
        """Why Run B's outputs do not agree with Run A's (a prompt diverged, new garbage, or a
        systematic drift across prompts), as the verdict's detail; None when they agree."""
        if self.diverged:
            d = self.diverged[0]
            return (
                f"Run B's {self.phase} output diverges from Run A's at prompt {d.index} ({d.prompt[:60]!r}), "
                f"token position {d.first_divergence}: {d.judgement} — {d.detail}."
            )
        if self.new_garbage:
            g = self.new_garbage[0]
            return (
                f"Run B's {self.phase} output is garbage where Run A's is not: {g.check} at prompt {g.index} "
                f"({g.detail})."
            )
        if self.aggregate.systematic:
            return (
                f"Run B's {self.phase} outputs drift from Run A's across prompts, beyond the noise of a correct "
                f"but different kernel: {self.aggregate.detail}"
            )
        return None

    @property
    def mismatch(self) -> bool:
        return self.mismatch_reason is not None

    @property
    def new_garbage(self) -> list[GarbageFinding]:
        """Garbage in Run B that Run A did not show for the same prompt and check."""
        seen = {(g.check, g.index) for g in self.garbage_a}
        return [g for g in self.garbage_b if (g.check, g.index) not in seen]

    def to_dict(self) -> dict[str, Any]:
        d = to_json(self)
        d["diverged"] = len(self.diverged)
        d["new_garbage"] = to_json(self.new_garbage)
        d["mismatch"] = self.mismatch
        return d


# --------------------------------------------------------------------------- stack gate, verdict


@dataclass(frozen=True)
class Gate:
    """Did Run B's stack do FlagOS work Run A did not, and was Run A base?"""

    passed: bool
    strength: str  # of the differential evidence: strong | weak | none
    evidence: list[str]  # Run B's work that Run A did not do
    run_a_not_base: list[str]  # Run A's own evidence that it ran FlagOS code
    run_a_unproven: str | None = None  # why Run A cannot be shown base (it recorded nothing)

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True)
class Verdict:
    conclusion: str
    detail: str
    multichip_component: str | None
    recommended_stack: str  # full | base | none
    status: str  # PASS | PARTIAL | FAIL
    component: str | None = None  # what the diagnosis blamed, multi-chip or not
    # how multichip_component was decided: "experiment" (the ablation confirmed it), "log" (the
    # diagnosis named it: a hypothesis), None when no multi-chip component is named
    component_source: str | None = None

    def to_dict(self) -> dict:
        return to_json(self)


# --------------------------------------------------------------------------- the verification's state


@dataclass(frozen=True)
class State:
    """Everything but the phases (saved as they end): what `report OUTPUT_DIR` rebuilds from."""

    params: dict[str, Any]
    started_at: str
    target: dict[str, Any]
    probe: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    tp: int | None = None
    precheck_error: str | None = None
    run_b_skip: str | None = None
    specs: tuple[RunSpec, ...] = ()  # both runs' flags as they ran (older files: derived again)
    device_plan: dict[str, Any] | None = None


# --------------------------------------------------------------------------- the evidence


@dataclass(frozen=True)
class Evidence:
    """Everything a verification did, as it happened: what `analysis.judge` judges.

    The driver never mutates one: each step gives a new Evidence (`dataclasses.replace`), and an
    attempt once recorded stays as it was. Judgements live in `analysis/`, so a report can be
    rebuilt from disk and judged again with today's rules.
    """

    parameters: dict[str, Any]  # Params.to_dict()
    started_at: str
    target: dict[str, Any]
    probe: dict[str, Any] | None = None  # the probe's raw data (versions, devices, entry points)
    model: dict[str, Any] | None = None  # the model step
    tp: int | None = None
    precheck_error: str | None = None
    run_b_skip: str | None = None
    specs: tuple[RunSpec, ...] = ()  # both runs' flags as they ran
    device_plan: dict[str, Any] | None = None
    runs: dict[str, dict[str, PhaseResult]] = field(default_factory=dict)  # latest of each phase
    attempts: tuple[PhaseResult, ...] = ()  # every attempt, in the order they ran
    bisection: Bisection | None = None  # the culprit-op search and its steps, once made
    ablation: Ablation | None = None  # the component ablation and its runs, once made

    def spec(self, name: str) -> RunSpec:
        return {s.name: s for s in self.specs}[name]


# --------------------------------------------------------------------------- culprit-op search


@dataclass(frozen=True)
class BisectStep:
    """One run of the faulty phase with some FlagGems kernels switched off."""

    number: int
    phase: str
    disabled: tuple[str, ...]
    # fail: the same fault (SAME) | pass: gone, the phase passed and agrees with Run A (GONE) |
    # other: another failure than the one searched (OTHER, inconclusive: proves nothing)
    outcome: str
    why: str  # the phase's error or the mismatch, or "passed and agrees with Run A"
    duration_s: float | None = None
    log: str | None = None
    result_file: str | None = None
    # kernels switched off that the step's own evidence shows running, by process ("pid 123"):
    # the switch had no effect (the search stops, status no_effect)
    ran_switched_off: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Bisection:
    """The culprit-op search: whether it ran, every step, the culprits and the confirming run."""

    # found | not_found | unconfirmed | stopped | no_effect (a step's own evidence shows kernels
    # it switched off running) | inconclusive (steps failed with another error) | not_run | off
    status: str
    reason: str
    phase: str | None = None
    # the switch the advice names: VLLM_FL_FLAGOS_BLACKLIST where the evidence shows the plugin
    # applies it, else MODELVERIFY_FLAGGEMS_UNUSED
    switch: str | None = None
    switches: tuple[str, ...] = ()  # every switch each step set (the recorder's always)
    # where the searched kernels came from: ran (recorded running) | oplog (FlagGems' own op
    # log) | registered (the ops FlagGems took over; nothing seen running)
    channel: str | None = None
    ops: tuple[str, ...] = ()  # the FlagGems kernels Run B's phase ran: what was searched
    culprit_ops: tuple[
        str, ...
    ] = ()  # confirmed culprits (status found), else the smallest failing set so far
    steps: tuple[BisectStep, ...] = ()
    confirm: tuple[BisectStep, ...] = ()  # Run B, both phases, culprits off
    inconclusive_steps: tuple[int, ...] = ()  # steps that failed with another error (OTHER)
    elapsed_s: float = 0.0

    @property
    def blacklist(self) -> str | None:
        """The variable assignment that ships the model without the culprits."""
        if self.status != "found" or not self.switch:
            return None
        return f"{self.switch}={','.join(self.culprit_ops)}"

    @property
    def advice(self) -> str | None:
        """The sentence a release engineer needs."""
        if self.blacklist is None:
            return None
        if self.switch == RECORDER_SWITCH:  # FlagGems enabled without the plugin
            ops = ", ".join(repr(o) for o in self.culprit_ops)
            return (
                f"Ship on the full stack with FlagGems enabled as flag_gems.enable(unused=[{ops}]) (the "
                f"confirming Run B, {self.blacklist}, passed and agreed with Run A), or on base."
            )
        return (
            f"Ship on the full stack with {self.blacklist} (the confirming Run B passed and agreed with "
            "Run A), or on base."
        )


# --------------------------------------------------------------------------- component ablation


@dataclass(frozen=True)
class AblationRun:
    """Run B's faulty phase run again with one FlagOS component switched off."""

    number: int
    component: str  # FlagGems | FlagCX | plugin: what was off
    phase: str
    env: Mapping[str, str]  # set on top of Run B's flags
    unset: tuple[str, ...]  # removed from Run B's flags
    outcome: str  # fail (the fault stays) | pass (gone) | other | no_effect | not_alone
    why: str
    duration_s: float | None = None
    log: str | None = None
    result_file: str | None = None
    took_along: tuple[str, ...] = ()  # components that left with it (no code of theirs ran)


@dataclass(frozen=True)
class Ablation:
    """Which FlagOS component, switched off alone, makes Run B's fault go: the experiment that
    proves (or not) what the log's diagnosis only suggests."""

    status: str  # confirmed | inconclusive | not_confirmed | stopped | not_run | off
    reason: str
    phase: str | None = None
    hypothesis: str | None = None  # the component the log's diagnosis named
    suspects: tuple[str, ...] = ()  # the components Run B's evidence shows at work
    order: tuple[str, ...] = ()  # the components tried, in this order
    not_tried: Mapping[str, str] = field(default_factory=dict)  # component -> why not
    runs: tuple[AblationRun, ...] = ()
    component: str | None = None  # confirmed: its removal alone made the fault go
    disagrees: str | None = None  # where the experiment and the log's diagnosis differ
    reproduce: str | None = None  # the -y flags that give the good configuration
    elapsed_s: float = 0.0
