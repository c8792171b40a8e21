"""The truth table of DESIGN.md, row by row."""

import pytest

from modelverify_kernel.runs import PhaseResult
from modelverify_kernel.verdict import decide, precheck_failed, run_status


def run(name, offline="PASS", serve="PASS", sig=None, component=None):
    def ph(phase, status):
        p = PhaseResult(run=name, phase=phase, status=status)
        if status == "FAIL":
            p.error = f"RuntimeError: boom {sig}"
            p.diagnosis = {"signature": sig, "component": component}
        return p
    return {"offline": ph("offline", offline), "serve": ph("serve", serve)}


def test_both_pass():
    v = decide(run("run_a"), run("run_b"))
    assert (v.conclusion, v.recommended_stack, v.status) == ("BOTH_PASS", "full", "PASS")


def test_run_b_fails_names_the_multichip_component():
    v = decide(run("run_a"), run("run_b", serve="FAIL", sig="x", component="FlagGems"))
    assert (v.conclusion, v.recommended_stack, v.status, v.multichip_component) == (
        "MULTICHIP_ERROR", "base", "PARTIAL", "FlagGems")
    assert "serve" in v.detail


def test_run_b_fails_for_a_non_multichip_reason_keeps_component_out_of_multichip_field():
    v = decide(run("run_a"), run("run_b", offline="FAIL", sig="x", component="resources"))
    assert v.conclusion == "MULTICHIP_ERROR" and v.multichip_component is None and v.component == "resources"


def test_run_b_skipped():
    skipped = {p: PhaseResult(run="run_b", phase=p, status="SKIPPED") for p in ("offline", "serve")}
    v = decide(run("run_a"), skipped, "Run B skipped: no multi-chip packages installed.")
    assert (v.conclusion, v.recommended_stack, v.status) == ("RUN_B_SKIPPED", "base", "PARTIAL")
    assert "no multi-chip" in v.detail
    v = decide(run("run_a", offline="FAIL", sig="s"), skipped, "skipped")
    assert (v.status, v.recommended_stack) == ("FAIL", "none")


def test_same_error_by_signature_still_names_component():
    v = decide(run("run_a", offline="FAIL", sig="s1", component="FlagTree"),
               run("run_b", offline="FAIL", sig="s1", component="FlagTree"))
    assert (v.conclusion, v.recommended_stack, v.status, v.multichip_component) == (
        "SAME_ERROR", "none", "FAIL", "FlagTree")


def test_different_errors():
    v = decide(run("run_a", offline="FAIL", sig="s1", component="vllm"),
               run("run_b", offline="FAIL", sig="s2", component="FlagGems"))
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
