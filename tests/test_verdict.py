"""The truth table of DESIGN.md, row by row."""

import pytest

from modelverify_kernel.analysis.compare import compare_phase
from modelverify_kernel.analysis.gate import ComponentActivity, gate
from modelverify_kernel.analysis.verdict import decide, precheck_failed, run_status
from modelverify_kernel.runs import PhaseResult


def run(name, offline="PASS", serve="PASS", sig=None, component=None):
    def ph(phase, status):
        if status == "FAIL":
            return PhaseResult(
                run=name,
                phase=phase,
                status=status,
                error=f"RuntimeError: boom {sig}",
                diagnosis={"signature": sig, "component": component},
            )
        return PhaseResult(run=name, phase=phase, status=status)

    return {"offline": ph("offline", offline), "serve": ph("serve", serve)}


ACTIVE = {
    "plugin": ComponentActivity(
        "plugin", "active", ["the plugin's own ops ran: RMSNorm"], "strong", ["op:RMSNorm"]
    ),
    "FlagGems": ComponentActivity("FlagGems", "inactive", []),
}
INACTIVE = {
    "plugin": ComponentActivity("plugin", "inactive", ["no fl"]),
    "FlagGems": ComponentActivity("FlagGems", "unknown", []),
}
INACTIVE_A = {
    "plugin": ComponentActivity("plugin", "inactive", ["no fl"]),
    "FlagGems": ComponentActivity("FlagGems", "inactive", ["no process imported flag_gems"]),
}


def _outputs(ids_b):
    def out(ids):
        return [
            {
                "prompt": "p",
                "token_ids": ids,
                "text": "x",
                "logprobs": [
                    {"token_id": t, "logprob": -1.0, "top": [[t, -1.0], [99, -3.0]]} for t in ids
                ],
            }
        ]

    return compare_phase("offline", out([1, 2, 3, 4]), out(ids_b))


def test_both_pass_needs_agreeing_outputs_and_an_active_stack():
    v = decide(
        run("run_a"),
        run("run_b"),
        comparisons=[_outputs([1, 2, 3, 4])],
        gate=gate(INACTIVE_A, ACTIVE),
    )
    assert (v.conclusion, v.recommended_stack, v.status) == ("BOTH_PASS", "full", "PASS")
    assert "plugin" in v.detail


def test_stack_inactive_when_run_b_passed_without_any_active_component():
    v = decide(
        run("run_a"), run("run_b"), comparisons=[_outputs([1, 2, 3, 4])], gate=gate(None, INACTIVE)
    )
    assert (v.conclusion, v.recommended_stack, v.status) == ("STACK_INACTIVE", "base", "PARTIAL")
    v = decide(run("run_a"), run("run_b"))  # no evidence at all is no sign of activity either
    assert v.conclusion == "STACK_INACTIVE"


def test_output_mismatch_wins_over_stack_inactive_and_names_prompt_and_position():
    v = decide(
        run("run_a"), run("run_b"), comparisons=[_outputs([1, 2, 7, 4])], gate=gate(None, INACTIVE)
    )
    assert (v.conclusion, v.recommended_stack, v.status, v.component) == (
        "OUTPUT_MISMATCH",
        "base",
        "PARTIAL",
        "numerical",
    )
    assert "prompt 0" in v.detail and "position 2" in v.detail


def test_run_b_fails_names_the_multichip_component():
    v = decide(run("run_a"), run("run_b", serve="FAIL", sig="x", component="FlagGems"))
    assert (v.conclusion, v.recommended_stack, v.status, v.multichip_component) == (
        "MULTICHIP_ERROR",
        "base",
        "PARTIAL",
        "FlagGems",
    )
    assert "serve" in v.detail


def test_run_b_fails_for_a_non_multichip_reason_keeps_component_out_of_multichip_field():
    v = decide(run("run_a"), run("run_b", offline="FAIL", sig="x", component="resources"))
    assert (
        v.conclusion == "MULTICHIP_ERROR"
        and v.multichip_component is None
        and v.component == "resources"
    )


def test_run_b_skipped():
    skipped = {p: PhaseResult(run="run_b", phase=p, status="SKIPPED") for p in ("offline", "serve")}
    v = decide(run("run_a"), skipped, "Run B skipped: no multi-chip packages installed.")
    assert (v.conclusion, v.recommended_stack, v.status) == ("RUN_B_SKIPPED", "base", "PARTIAL")
    assert "no multi-chip" in v.detail
    v = decide(run("run_a", offline="FAIL", sig="s"), skipped, "skipped")
    assert (v.status, v.recommended_stack) == ("FAIL", "none")


def test_same_error_by_signature_still_names_component():
    v = decide(
        run("run_a", offline="FAIL", sig="s1", component="FlagTree"),
        run("run_b", offline="FAIL", sig="s1", component="FlagTree"),
    )
    assert (v.conclusion, v.recommended_stack, v.status, v.multichip_component) == (
        "SAME_ERROR",
        "none",
        "FAIL",
        "FlagTree",
    )


def test_different_errors():
    v = decide(
        run("run_a", offline="FAIL", sig="s1", component="vllm"),
        run("run_b", offline="FAIL", sig="s2", component="FlagGems"),
    )
    assert (v.conclusion, v.recommended_stack, v.status) == ("DIFFERENT_ERRORS", "none", "FAIL")


def test_unexpected():
    v = decide(run("run_a", serve="FAIL", sig="s"), run("run_b"))
    assert (v.conclusion, v.recommended_stack, v.status) == ("UNEXPECTED", "full", "FAIL")


def test_a_run_passes_only_when_both_phases_pass():
    assert run_status(run("r", serve="FAIL")) == "FAIL"
    assert run_status(run("r")) == "PASS"


def test_precheck_failed():
    v = precheck_failed("requested TP=8 but only 1 available")
    assert (v.status, v.recommended_stack, v.conclusion) == ("FAIL", "none", "PRECHECK_FAILED")


def _result_pair(tmp_path, log_name):
    """Run A passed; Run B failed with a real log from tests/data/logs beside its result."""
    import json
    import shutil
    from pathlib import Path

    data = Path(__file__).parent / "data" / "logs"
    (tmp_path / "results").mkdir()
    (tmp_path / "logs").mkdir()
    a = tmp_path / "results" / "run_a_offline.json"
    a.write_text(json.dumps({"phase": "offline", "status": "PASS", "outputs": []}))
    b = tmp_path / "results" / "run_b_offline.json"
    b.write_text(
        json.dumps(
            {
                "phase": "offline",
                "status": "FAIL",
                "error": "RuntimeError: Engine core initialization failed. See root cause above.",
            }
        )
    )
    shutil.copy(data / log_name, tmp_path / "logs" / "run_b_offline.log")
    return a, b


@pytest.mark.process
def test_diff_cli_and_seed_front_share_one_verdict(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    a, b = _result_pair(tmp_path, "flaggems_no_device.log")
    repo = Path(__file__).resolve().parents[1]
    outs = []
    for argv in (
        [sys.executable, "-m", "modelverify_kernel", "diff", str(a), str(b)],
        [
            sys.executable,
            str(repo / "container_scripts" / "diff_analysis.py"),
            "--run-a",
            str(a),
            "--run-b",
            str(b),
        ],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1]
    d = outs[0]
    assert (d["conclusion"], d["multichip_component"], d["recommended_stack"]) == (
        "MULTICHIP_ERROR",
        "FlagGems",
        "base",
    )
    assert d["errors"]["run_b"]["component"] == "FlagGems"


@pytest.mark.process
def test_diff_cli_bad_input_is_one_sentence(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.json").write_text("{not json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelverify_kernel",
            "diff",
            str(tmp_path / "bad.json"),
            str(tmp_path / "missing.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "bad.json is not JSON" in proc.stderr


@pytest.mark.process
def test_diff_cli_applies_the_gate_and_the_comparison_to_two_passing_results(tmp_path):
    """Two passing phase results: the diff is BOTH_PASS only with FlagOS work recorded in Run B."""
    import json
    import subprocess
    import sys

    out = [
        {
            "prompt": "p",
            "token_ids": [1, 2],
            "text": "x",
            "logprobs": [
                {"token_id": t, "logprob": -1.0, "top": [[t, -1.0], [9, -3.0]]} for t in (1, 2)
            ],
        }
    ]
    start = {"event": "process_started", "pid": 1, "process": "VllmWorker-0", "time": 1, "env": {}}
    ran = {
        "event": "flaggems_op_ran",
        "pid": 1,
        "process": "VllmWorker-0",
        "time": 2,
        "op": "embedding",
        "fn": "flag_gems.ops.embedding.embedding",
        "via": "aten",
        "calls": 10,
    }
    paths = {}
    for name, events in (("a", [start]), ("b_idle", [start]), ("b_work", [start, ran])):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(
            json.dumps(
                {
                    "phase": "offline",
                    "status": "PASS",
                    "tp": 1,
                    "outputs": out,
                    "stack_evidence": events,
                }
            )
        )

    def diff(b):
        proc = subprocess.run(
            [sys.executable, "-m", "modelverify_kernel", "diff", str(paths["a"]), str(paths[b])],
            capture_output=True,
            text=True,
        )
        return proc.returncode, json.loads(proc.stdout)["conclusion"]

    assert diff("b_idle") == (1, "STACK_INACTIVE")
    assert diff("b_work") == (0, "BOTH_PASS")


def test_the_verdict_shows_each_error_by_its_first_line():
    """Dynamo's and pydantic's errors run to dozens of lines; the verdict is read at a glance,
    the phase record keeps the whole message."""
    long_error = (
        "Unsupported: logging.Logger method not supported for non-export cases\n"
        "  Explanation: logging.Logger methods are not supported.\n\nfrom user code:\n"
        '   File "/x/vllm/model_executor/models/llama.py", line 436, in forward\n' + "x" * 500
    )
    b = run("run_b", offline="FAIL", sig="x", component="FlagGems")
    b["offline"] = PhaseResult(
        run="run_b",
        phase="offline",
        status="FAIL",
        error=long_error,
        diagnosis={
            "signature": "x",
            "component": "FlagGems",
            "error": "torch._dynamo.exc." + "y" * 400,
        },
    )
    v = decide(run("run_a"), b)
    assert (
        "offline: Unsupported: logging.Logger method not supported for non-export cases" in v.detail
    )
    assert "from user code" not in v.detail and "Explanation" not in v.detail
    assert (
        "(root cause: torch._dynamo.exc." in v.detail
        and "y" * 300 not in v.detail
        and "…" in v.detail
    )
    assert b["offline"].error == long_error
