"""The project's words, said once: components and layers, runs and phases, each run's default
flags, the verdict's truth table, and where each file of an output folder lives.

Every other module imports these names instead of spelling them again, so that a new
component, phase or file moves in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- layers, components

# DESIGN.md "Layers and components": the lowest layer that explains a failure is the answer.
COMPONENT_LAYER: dict[str, int] = {
    "environment": 0,
    "dependency": 1,
    "model": 2,
    "resources": 3,
    "vllm": 4,
    "FlagGems": 5,
    "FlagTree": 5,
    "FlagCX": 5,
    "plugin": 5,
    "numerical": 6,
}
MULTICHIP: tuple[str, ...] = ("FlagGems", "FlagTree", "FlagCX", "plugin")
NO_FAILURE, UNEXPLAINED = "none", "unknown"
COMPONENTS: tuple[str, ...] = (*COMPONENT_LAYER, NO_FAILURE, UNEXPLAINED)

# --------------------------------------------------------------------------- runs, phases, flags

RUNS: tuple[str, ...] = ("run_a", "run_b")
RUN_TITLES = {
    "run_a": "Run A — without the multi-chip stack",
    "run_b": "Run B — with the full multi-chip stack",
}
PHASES: tuple[str, ...] = ("offline", "serve")
PHASE_SCRIPTS = {"offline": "run_offline_inference.py", "serve": "run_serve.py"}
PHASE_TIMEOUT_PARAM = {"offline": "offline_timeout", "serve": "serve_timeout"}
PHASE_STATUSES = ("PASS", "FAIL", "SKIPPED", "NOT_RUN")

# Each run's default flags. `run_*_env` / `run_*_unset` add to these (a user value wins), so
# passing one variable never drops the others; removing a default goes through `run_*_unset`.
# Run A's VLLM_PLUGINS is chosen from the probe (runs.run_a_base).
RUN_A_ENV = {"USE_FLAGGEMS": "0"}
RUN_A_UNSET: tuple[str, ...] = ("FLAGCX_PATH",)
RUN_B_ENV = {"USE_FLAGGEMS": "1", "FLAGCX_PATH": "/tmp/FlagCX", "VLLM_PLUGINS": "fl"}
RUN_B_UNSET: tuple[str, ...] = ()

# The switches the culprit-op search turns kernels off with: the FL plugin's own, and ours for
# FlagGems enabled without the plugin (container_scripts/stack_evidence.py DISABLE_VAR, which
# cannot import this package, spells it too).
PLUGIN_SWITCH = "VLLM_FL_FLAGOS_BLACKLIST"
RECORDER_SWITCH = "MODELVERIFY_FLAGGEMS_UNUSED"
# "1": FlagGems' own op log feeds the evidence (stack_evidence.py OPLOG_VAR); on in every step
OPLOG_SWITCH = "MODELVERIFY_FLAGGEMS_OPLOG"

# Runs A and B side by side (runs.device_plan): each on its own devices, chosen with the vendor's
# visible-devices variable (by the probe's device tool), or on its own cores for vLLM for CPU.
VISIBLE_DEVICES = {
    "nvidia-smi": "CUDA_VISIBLE_DEVICES",
    "ixsmi": "CUDA_VISIBLE_DEVICES",  # NVIDIA, Iluvatar (CUDA-compatible)
    "rocm-smi": "HIP_VISIBLE_DEVICES",
    "hy-smi": "HIP_VISIBLE_DEVICES",  # AMD, Hygon DCU (ROCm/HIP)
    "npu-smi": "ASCEND_RT_VISIBLE_DEVICES",
    "cnmon": "MLU_VISIBLE_DEVICES",  # Ascend, Cambricon
    "mthreads-gmi": "MUSA_VISIBLE_DEVICES",
    "xpu-smi": "XPU_VISIBLE_DEVICES",  # Moore Threads, Kunlun
}
CPU_CORES_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"  # "0,1|2,3": one core list per TP rank
PARALLEL_RUNS = ("auto", "off")

# --------------------------------------------------------------------------- the truth table


@dataclass(frozen=True)
class Conclusion:
    """One row of the verdict's truth table (DESIGN.md): when it applies and what it recommends."""

    name: str
    when: str
    recommended_stack: str  # full | base | none
    status: str  # PASS | PARTIAL | FAIL
    run_a_failed: bool = False  # RUN_B_SKIPPED has a second row for a failed Run A


TRUTH_TABLE: tuple[Conclusion, ...] = (
    Conclusion("BOTH_PASS", "both runs pass, Run B passed the gate, outputs agree", "full", "PASS"),
    Conclusion("MULTICHIP_ERROR", "Run A passes, Run B fails", "base", "PARTIAL"),
    Conclusion(
        "OUTPUT_MISMATCH",
        "both pass, Run B's outputs diverge, drift or are garbage",
        "base",
        "PARTIAL",
    ),
    Conclusion(
        "STACK_INACTIVE",
        "both pass, no FlagOS work recorded in Run B that Run A did not do",
        "base",
        "PARTIAL",
    ),
    Conclusion(
        "RUN_B_SKIPPED",
        "Run A passes, Run B skipped (no multi-chip package, or run_b=never)",
        "base",
        "PARTIAL",
    ),
    Conclusion("RUN_B_SKIPPED", "Run A fails, Run B skipped", "none", "FAIL", run_a_failed=True),
    Conclusion("SAME_ERROR", "both fail with the same normalised signature", "none", "FAIL"),
    Conclusion("DIFFERENT_ERRORS", "both fail with different signatures", "none", "FAIL"),
    Conclusion("UNEXPECTED", "Run A fails, Run B passes (investigate)", "full", "FAIL"),
    Conclusion(
        "RUN_A_NOT_BASE",
        "Run A's own evidence shows FlagOS work: the comparison is invalid",
        "none",
        "FAIL",
    ),
    Conclusion(
        "PRECHECK_FAILED",
        "target, probe, model or TP check failed; no engine started",
        "none",
        "FAIL",
    ),
    Conclusion(
        "INCOMPLETE", "a report rebuilt after a kill; unfinished phases NOT_RUN", "none", "FAIL"
    ),
)
CONCLUSIONS: tuple[str, ...] = tuple(dict.fromkeys(row.name for row in TRUTH_TABLE))


def conclusion(name: str, run_a_failed: bool = False) -> Conclusion:
    """The truth table's row for a conclusion (and, for RUN_B_SKIPPED, whether Run A failed)."""
    rows = [row for row in TRUTH_TABLE if row.name == name]
    return next((row for row in rows if row.run_a_failed == run_a_failed), rows[0])


# --------------------------------------------------------------------------- output folder


@dataclass(frozen=True)
class Layout:
    """Where each file of an output folder lives.

    A phase's first attempt keeps the plain names (``logs/run_b_serve.log``); a re-run made with
    ``Verification.run_phase`` is attempt 2, 3, … and gets ``logs/run_b_serve.2.log``, so no
    attempt overwrites another.
    """

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def phases(self) -> Path:
        return self.root / "phases"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def work(self) -> Path:
        """The local target's work folder (scripts and raw results), removed on close."""
        return self.root / ".work"

    @staticmethod
    def stem(key: str, attempt: int = 1) -> str:
        return key if attempt <= 1 else f"{key}.{attempt}"

    def phase_log(self, key: str, attempt: int = 1) -> Path:
        return self.logs / f"{self.stem(key, attempt)}.log"

    def phase_result(self, key: str, attempt: int = 1) -> Path:
        return self.results / f"{self.stem(key, attempt)}.json"

    def phase_record(self, key: str, attempt: int = 1) -> Path:
        return self.phases / f"{self.stem(key, attempt)}.json"

    @property
    def bisection(self) -> Path:
        """The culprit-op search's record, rewritten after every step."""
        return self.root / "bisect" / "bisection.json"

    def bisect_step(self, number: int) -> Path:
        """The output folder of one search step (its own logs/, results/, phases/)."""
        return self.root / "bisect" / f"{number:02d}"

    @property
    def bisect_confirm(self) -> Path:
        return self.root / "bisect" / "confirm"

    def step_log(self, step: str) -> Path:
        """probe, download: steps before the runs."""
        return self.logs / f"{step}.log"

    def step_result(self, step: str) -> Path:
        return self.results / f"{step}.json"


JSON_NAME, HTML_NAME = "report.json", "report.html"
