"""Issue 4 end to end: papermill on the demo model with a stand-in for the FL plugin.

What stands in for the real plugin: `tests/fake_stack/site/fake_vllm_fl`, a vLLM general plugin
registered under the entry-point name `fl`, put on PYTHONPATH for both runs (as an installed
plugin is). Everything else is real: the vLLM engine, torch, the `flag_gems` 5.0.2 package and
its `triton` (installed by `make test` into `.venv/test-stack/`, outside the venv, so the demo
stays an honest base-only environment). The evidence of activity is what the engine processes
recorded themselves (container_scripts/stack_evidence.py), never the flags.
"""

import json
import os
import sys
from pathlib import Path

import papermill as pm
import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO

pytestmark = pytest.mark.slow
NOTEBOOK = REPO / "notebooks" / "verify.ipynb"
FAKE_PLUGIN_SITE = REPO / "tests" / "fake_stack" / "site"
TEST_STACK = Path(sys.prefix) / "test-stack"
RUN_B_ENV = {"USE_FLAGGEMS": "1", "FLAGCX_PATH": "/tmp/FlagCX", "VLLM_PLUGINS": "fl"}


@pytest.fixture(scope="module")
def test_stack() -> Path:
    if not (TEST_STACK / "flaggems" / "flag_gems").is_dir() or not (TEST_STACK / "triton" / "triton").is_dir():
        message = f"{TEST_STACK} lacks flag_gems/triton: run `make test` (it installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TEST_STACK


def _verify(tmp_path, demo_model, *, plugin: bool, mode: str | None, stack: Path | None, run_b="auto") -> dict:
    paths = ([str(FAKE_PLUGIN_SITE)] if plugin else []) + ([str(stack / "flaggems")] if stack else [])
    env = dict(CPU_ENV, PYTHONPATH=os.pathsep.join(paths)) if paths else dict(CPU_ENV)
    run_b_env = dict(RUN_B_ENV)
    if mode:
        run_b_env["FAKE_FL_MODE"] = mode
    if stack:
        run_b_env["FAKE_FL_TRITON_SITE"] = str(stack / "triton")
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    pm.execute_notebook(str(NOTEBOOK), str(out_dir / "verify.ipynb"), cwd=str(REPO), kernel_name="python3",
                        progress_bar=False, parameters=dict(
                            model_path=str(demo_model), output_dir=str(out_dir), env=env, run_b_env=run_b_env,
                            extra_vllm_args=DEMO_ENGINE_ARGS, max_model_len=512, run_b=run_b))
    data = json.loads((out_dir / "report.json").read_text())
    html = (out_dir / "report.html").read_text()
    assert data["diff_analysis"]["conclusion"] in html
    return data


def test_no_plugin_is_stack_inactive(tmp_path, demo_model):
    data = _verify(tmp_path, demo_model, plugin=False, mode=None, stack=None, run_b="always")
    assert (data["diff_analysis"]["conclusion"], data["status"]) == ("STACK_INACTIVE", "PARTIAL")
    assert data["diff_analysis"]["recommended_stack"] == "base"
    plugin = data["stack_activity"]["run_b"]["plugin"]
    assert plugin["status"] == "inactive" and "no plugin named 'fl'" in plugin["evidence"][0]
    flagcx = data["stack_activity"]["run_b"]["FlagCX"]
    assert flagcx["status"] == "not_exercised" and "TP=1" in flagcx["evidence"][0]
    # same prompts, same engine, no stack: the outputs agree exactly
    assert all(p["exact_match"] for c in data["output_comparison"] for p in c["prompts"])


def test_perturbing_plugin_is_output_mismatch(tmp_path, demo_model, test_stack):
    data = _verify(tmp_path, demo_model, plugin=True, mode="perturb", stack=test_stack)
    d = data["diff_analysis"]
    assert (d["conclusion"], data["status"], d["component"]) == ("OUTPUT_MISMATCH", "PARTIAL", "numerical")
    first = next(p for c in data["output_comparison"] for p in c["prompts"]
                 if p["judgement"] in ("changed_distribution", "logprob_drift"))
    assert f"prompt {first['index']}" in d["detail"] and f"position {first['first_divergence']}" in d["detail"]
    assert data["stack_activity"]["run_b"]["plugin"]["status"] == "active"


def test_flaggems_mode_is_multichip_error_flaggems(tmp_path, demo_model, test_stack):
    data = _verify(tmp_path, demo_model, plugin=True, mode="flaggems", stack=test_stack)
    d = data["diff_analysis"]
    assert (d["conclusion"], d["multichip_component"], data["status"]) == ("MULTICHIP_ERROR", "FlagGems", "PARTIAL")
    err = data["run_b_with_multichip"]["errors"][0]
    assert err["component"] == "FlagGems" and "No device were detected" in err["error"]
    assert data["run_a_without_multichip"]["phase_a_offline"] == "PASS"  # USE_FLAGGEMS=0: plugin idle


def test_neutral_active_plugin_is_both_pass(tmp_path, demo_model, test_stack):
    data = _verify(tmp_path, demo_model, plugin=True, mode="neutral", stack=test_stack)
    assert (data["diff_analysis"]["conclusion"], data["status"]) == ("BOTH_PASS", "PASS")
    assert data["diff_analysis"]["recommended_stack"] == "full"
    plugin = data["stack_activity"]["run_b"]["plugin"]
    assert plugin["status"] == "active" and "EngineCore" in " ".join(plugin["evidence"])
    assert data["stack_activity"]["run_b"]["FlagGems"]["status"] == "inactive"
