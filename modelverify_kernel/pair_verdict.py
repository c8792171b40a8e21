"""The verdict of two phase result files (Run A, Run B) on their own, without a run around them.

What `model-verify diff A.json B.json` and the seed-compatible `container_scripts/diff_analysis.py
--run-a A.json --run-b B.json` print: one implementation behind both fronts, with the
notebook's rules (outputs compared, each run's recorded stack evidence assessed and put
through the gate, the truth table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .analysis import compare, gate
from .analysis.judge import diagnose
from .analysis.verdict import decide
from .errors import UserError
from .records import PhaseResult


def from_result_file(run: str, path: Path) -> PhaseResult:
    """A judged PhaseResult from a phase's result JSON and its log (beside it, or in ../logs/):
    what `diff --run-a --run-b` compares."""
    result = json.loads(path.read_text(encoding="utf-8"))
    logs = [path.with_suffix(".log"), path.parent.parent / "logs" / f"{path.stem}.log"]
    pr = PhaseResult(
        run=run,
        phase=result.get("phase", "offline"),
        result=result,
        result_file=str(path),
        status="PASS" if result.get("status") == "PASS" else "FAIL",
        error=result.get("error"),
        error_type=result.get("error_type"),
        log=next((str(log) for log in logs if log.is_file()), None),
    )
    return diagnose(pr) if pr.status == "FAIL" else pr


def judge_result_files(path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """The seed's diff_analysis fields (and `status`) for two phase results, plus each failed
    run's diagnosis under `errors`. An unreadable file is a UserError."""
    phases = {}
    for run, path in (("run_a", Path(path_a)), ("run_b", Path(path_b))):
        try:
            phases[run] = from_result_file(run, path)
        except OSError as exc:
            raise UserError(
                f"Cannot read {path}: {exc.strerror}; give a phase result JSON."
            ) from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not JSON ({exc.msg}); give a phase result JSON.") from None
    activity = {}
    for run, pr in phases.items():
        events = pr.result.get("stack_evidence") or []
        activity[run] = gate.assess(
            events,
            gate.claims_in_log(pr.log),
            pr.result.get("tp"),
            gate.engine_environment(events).get("FLAGCX_PATH"),
        )
    a, b = phases["run_a"], phases["run_b"]
    comparisons = (
        [
            compare.compare_phase(
                a.phase, a.result.get("outputs") or [], b.result.get("outputs") or []
            )
        ]
        if a.status == b.status == "PASS"
        else []
    )
    verdict = decide(
        {"phase": a},
        {"phase": b},
        comparisons=comparisons,
        gate=gate.gate(activity["run_a"], activity["run_b"]),
    )
    out = verdict.to_dict()
    out["errors"] = {run: pr.diagnosis for run, pr in phases.items() if pr.diagnosis}
    return out


def print_verdict(path_a: str | Path, path_b: str | Path) -> int:
    """Print the verdict of two phase results as JSON; exit code 0 when it is PASS, else 1."""
    out = judge_result_files(path_a, path_b)
    print(json.dumps(out, indent=2))
    return 0 if out["status"] == "PASS" else 1
