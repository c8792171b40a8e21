"""Issue 11 point 5: errors the user can fix are named at their source (the parameter, the file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS

from modelverify_kernel.analysis.judge import judge_attempt
from modelverify_kernel.params import validate
from modelverify_kernel.pipeline import check_prompts_file
from modelverify_kernel.runs import RunSpec, run_phase
from modelverify_kernel.target import SCRIPTS_DIR, LocalTarget


@pytest.mark.parametrize(
    "content, needle",
    [
        ("prompts:\n  - hello\n", "is not valid JSON (Expecting value at line 1 column 1)"),
        ('["hello"]', "holds a JSON list, not an object"),
        (
            '{"prompts": [], "chat": [{"role": "user", "content": "hi"}]}',
            "'prompts' must be a non-empty list of strings",
        ),
        ('{"prompts": ["hi"], "chat": ["hi"]}', "'chat' must be a non-empty list of messages"),
    ],
)
def test_prompts_file_is_validated_in_the_precheck(
    tmp_path: Path, content: str, needle: str
) -> None:
    bad = tmp_path / "prompts.yaml"
    bad.write_text(content, encoding="utf-8")
    target = LocalTarget(work_root=tmp_path / "work")
    try:
        msg = check_prompts_file(str(bad), target, tmp_path / "out")
    finally:
        target.cleanup()
    assert msg is not None and msg.startswith(f"Parameter prompts_file: {bad}") and needle in msg, (
        msg
    )
    assert "Traceback" not in msg and msg.count("\n") == 0


def test_missing_prompts_file_and_a_good_one(tmp_path: Path) -> None:
    target = LocalTarget(work_root=tmp_path / "work")
    try:
        msg = check_prompts_file(str(tmp_path / "nope.json"), target, tmp_path / "out")
        assert msg and "prompts_file" in msg and "nope.json does not exist in the target" in msg
        good = tmp_path / "p.json"
        good.write_text(json.dumps({"prompts": ["a"], "chat": [{"role": "user", "content": "b"}]}))
        assert check_prompts_file(str(good), target, tmp_path / "out") is None
        assert check_prompts_file(None, target, tmp_path / "out") is None
    finally:
        target.cleanup()


@pytest.mark.process
def test_phase_script_names_the_prompts_file_too(tmp_path: Path) -> None:
    """The container script (real subprocess) fails with the same sentence, not a bare JSONDecodeError."""
    bad = tmp_path / "prompts.txt"
    bad.write_text("not json", encoding="utf-8")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS_DIR / "run_offline_inference.py"),
            "--model",
            "/nonexistent",
            "--prompts",
            str(bad),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert proc.returncode == 1 and result["status"] == "FAIL"
    assert result["error"].startswith(
        f"PromptsFileError: Parameter prompts_file: {bad} is not valid JSON"
    ), result["error"]


def _phase(tmp_path: Path, demo_model: Path, phase: str, extra: list[str]):
    params = validate(
        {
            "model_path": str(demo_model),
            "output_dir": str(tmp_path),
            "env": CPU_ENV,
            "extra_vllm_args": extra,
            "health_timeout": 200,
        }
    )
    spec = RunSpec("run_a", "Run A", {"USE_FLAGGEMS": "0"}, ("FLAGCX_PATH",))
    target = LocalTarget()
    try:
        scripts = target.install_scripts(SCRIPTS_DIR)
        return judge_attempt(  # the runner records, the analysis judges
            run_phase(params, target, scripts, spec, phase, str(demo_model), 1, tmp_path)
        )
    finally:
        target.cleanup()


@pytest.mark.engine
@pytest.mark.parametrize("phase", ["offline", "serve"])
def test_rejected_extra_vllm_args_name_the_parameter_and_vllms_message(tmp_path, demo_model, phase):
    pr = _phase(tmp_path, demo_model, phase, [*DEMO_ENGINE_ARGS, "--no-such-flag"])
    assert pr.status == "FAIL"
    assert "wrote no result file" not in pr.error, pr.error
    assert "extra_vllm_args" in pr.error and "--no-such-flag" in pr.error, pr.error
    assert "unrecognized arguments" in pr.error, pr.error  # vLLM's own message
    assert pr.diagnosis["component"] == "vllm" and pr.diagnosis["rule"] == "V-engine-args", (
        pr.diagnosis
    )
