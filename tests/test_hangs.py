"""Issue 11 points 4 and 6: hang forensics and slow-but-healthy phases, with real processes.

The session helper (container_scripts/run_in_session.py) runs real commands here; the hung
"plugin" is a real Python package named `vllm_fl` written into a temporary folder (no real
plugin can run on this machine), whose register() waits forever.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from modelverify_kernel.analysis.diagnose import classify_log
from modelverify_kernel.analysis.judge import judge_attempt
from modelverify_kernel.records import PhaseExit, PhaseResult
from modelverify_kernel.runs import progress_window
from modelverify_kernel.target import SCRIPTS_DIR

HELPER = SCRIPTS_DIR / "run_in_session.py"
HOOK = SCRIPTS_DIR / "evidence_hook"
STATUS = "MODELVERIFY-SESSION "


def _session(tmp_path: Path, code: str, *opts: str, env: dict | None = None) -> tuple[str, dict]:
    script = tmp_path / "cmd.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(HELPER), *opts, "--grace", "2", "--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )
    status: dict = {}
    for line in proc.stderr.splitlines():
        if line.startswith(STATUS):
            status.update(json.loads(line[len(STATUS) :]))
    status["rc"] = proc.returncode
    return proc.stdout, status


PRINTS_FOR = "import time\nfor i in range({n}):\n    print(f'compiling kernel {{i}}', flush=True)\n    time.sleep(0.25)\n"


@pytest.mark.process
def test_progress_past_the_timeout_runs_on_and_finishes(tmp_path: Path) -> None:
    out, st = _session(tmp_path, PRINTS_FOR.format(n=16), "--timeout", "1.5", "--cap", "30")
    assert (st["rc"], st["ended_by"], st["timed_out"]) == (0, "exit", False), st
    assert "compiling kernel 15" in out and st["ran_s"] > 1.5  # on past the timeout, to the end
    # without a cap the old behaviour: killed at the timeout
    out, st = _session(tmp_path, PRINTS_FOR.format(n=16), "--timeout", "1.5")
    assert (st["rc"], st["ended_by"]) == (124, "timeout"), st


@pytest.mark.process
def test_the_cap_stops_a_phase_that_never_stops_progressing(tmp_path: Path) -> None:
    out, st = _session(tmp_path, PRINTS_FOR.format(n=10_000), "--timeout", "1", "--cap", "3")
    assert (st["rc"], st["ended_by"], st["timed_out"]) == (124, "cap", True), st
    assert st["ran_s"] >= 3 and st["idle_s"] < 1  # not before the cap; still printing then


HUNG_PLUGIN = """\
import time


def _wait_for_device():
    time.sleep(1000)


def register():
    print("[vllm_fl] registering", flush=True)
    _wait_for_device()
"""

HANGS_IN_REGISTER = """\
import subprocess, sys, time
print("loading plugins", flush=True)
subprocess.Popen(["sleep", "1000"])  # a non-Python process of the session: no stack handler
import vllm_fl
vllm_fl.register()
"""


@pytest.mark.process
def test_a_hang_leaves_every_threads_stack_and_is_attributed_to_the_frame_it_waited_in(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    (site / "vllm_fl").mkdir(parents=True)
    (site / "vllm_fl" / "__init__.py").write_text(HUNG_PLUGIN, encoding="utf-8")
    env = {"PYTHONPATH": os.pathsep.join([str(HOOK), str(site)])}  # what the phase scripts set
    out, st = _session(
        tmp_path, HANGS_IN_REGISTER, "--timeout", "2", "--cap", "30", "--window", "2", env=env
    )
    assert st["ended_by"] in ("timeout", "silence") and st["timed_out"], st
    assert len(st["dumped"]) == 1 and len(st["leftovers"]) == 2, st  # `sleep` got no dump signal
    assert (
        "Current thread 0x" in out and 'vllm_fl/__init__.py", line 5 in _wait_for_device' in out
    ), out
    diag = classify_log(out.splitlines(), {"status": "FAIL", "error": "timed out after 2 s: hung"})
    assert diag.component == "plugin", diag
    assert any("vllm_fl/__init__.py" in e for e in diag.evidence), diag


def _timed_out(log: Path, cap: float, **facts) -> PhaseResult:
    """A timed-out attempt of run_b offline (offline_timeout=10 s) judged from its raw facts."""
    exit_facts = PhaseExit(
        timeout=10,
        timeout_param="offline_timeout",
        cap=cap,
        last_line="compiling 99",
        progress_window=progress_window(10),
        **facts,
    )
    pr = PhaseResult(
        run="run_b",
        phase="offline",
        log=str(log),
        exit_code=None,
        timed_out=True,
        duration_s=40.0,
        exit=exit_facts,
    )
    return judge_attempt(pr)


def test_hang_diagnosis_on_the_host(tmp_path: Path) -> None:
    """The host's judgement of a timeout: cap → no blame; silence → the stacks decide, else unknown."""
    log = tmp_path / "run_b_offline.log"
    log.write_text("loading\n", encoding="utf-8")
    pr = _timed_out(log, 40, idle_s=0.4, ended_by="cap", ran_s=40.0)
    assert (pr.diagnosis["component"], pr.diagnosis["rule"]) == ("none", "TIMEOUT-CAP")
    assert "timeout_cap=40 s" in pr.error and "still making progress" in pr.error

    pr = _timed_out(log, 40, idle_s=45.0, ended_by="timeout", ran_s=10.0)
    assert (pr.diagnosis["component"], pr.diagnosis["rule"]) == (
        "unknown",
        "TIMEOUT-HANG",
    )  # never vllm by default
    assert "hung" in pr.error

    log.write_text(
        "[model-verify] stacks of every thread of pid 7 (python run_offline_inference.py), before the kill:\n"
        "Thread 0x00007f0000000001 (most recent call first):\n"
        '  File "/usr/lib/python3.12/threading.py", line 355 in wait\n'
        "Current thread 0x00007f0000000002 (most recent call first):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/v1/engine/core_client.py", line 640 in wait_for_engine\n'
        "[model-verify] stacks of every thread of pid 9 (python -c from multiprocessing...), before the kill:\n"
        "Current thread 0x00007f0000000003 (most recent call first):\n"
        '  File "/usr/lib/python3.12/site-packages/triton/compiler/compiler.py", line 300 in compile\n'
        '  File "/usr/lib/python3.12/site-packages/flag_gems/ops/mm.py", line 80 in mm\n'
        '  File "/usr/lib/python3.12/site-packages/vllm/v1/worker/gpu_model_runner.py", line 2300 in _dummy_run\n',
        encoding="utf-8",
    )
    pr = _timed_out(log, 400, idle_s=45.0, ended_by="silence", ran_s=60.0, dumped=2)
    assert pr.diagnosis["component"] == "FlagTree", pr.diagnosis  # it waited in the Triton compiler
    assert pr.diagnosis["culprit_op"] == "mm"
    assert "then hung" in pr.error and "stacks of 2 process(es)" in pr.error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_module():
    sys.path.insert(0, str(SCRIPTS_DIR))
    try:
        import run_serve
    finally:
        sys.path.remove(str(SCRIPTS_DIR))
    return run_serve


@pytest.mark.process
def test_health_timeout_gets_the_same_hang_vs_progress_judgement(
    tmp_path: Path, monkeypatch
) -> None:
    serve = _serve_module()
    port = _free_port()
    monkeypatch.setenv("PYTHONPATH", str(HOOK))  # the server's processes get the stack handler
    busy = serve.Server([sys.executable, "-c", PRINTS_FOR.format(n=10_000)])
    try:
        with pytest.raises(serve.StartupStillProgressing, match="timeout_cap=4 s"):
            serve.wait_healthy(busy, port, timeout=1, cap=4)
    finally:
        busy.stop()
    silent = serve.Server(
        [sys.executable, "-c", "import time\nprint('starting', flush=True)\ntime.sleep(1000)\n"]
    )
    try:
        with pytest.raises(serve.HealthTimeout, match="hung; 1 server process") as info:
            serve.wait_healthy(silent, port, timeout=1, cap=60, window=3)
        assert not isinstance(info.value, serve.StartupStillProgressing)
        wait_until(
            lambda: any("(most recent call first)" in line for line in silent.tail.lines),
            30,
            "the server's stack dump in its output",
        )
    finally:
        silent.stop()


def test_the_report_says_how_long_a_slow_phase_took_and_why() -> None:
    from modelverify_kernel.report_views import _row

    pr = PhaseResult(
        run="run_b",
        phase="offline",
        status="PASS",
        duration_s=268.0,
        timeout_note="took 268 s, past offline_timeout=200 s: output was still coming at the "
        "timeout (loading, compiling kernels), so it ran on",
    )
    row = _row("Run B", "offline", pr.to_dict())
    assert row["status"] == "PASS" and "past offline_timeout=200 s" in row["error"]


def _run_b_phase_with_plugin(
    tmp_path: Path, demo_model, plugin_source: str, phase: str, extra: dict, package="vllm_fl"
):
    """One Run B phase on the real engine with a stand-in general plugin `fl` (its package
    `package`)."""
    from conftest import CPU_ENV, DEMO_ENGINE_ARGS

    from modelverify_kernel.params import validate
    from modelverify_kernel.runs import RunSpec, run_phase
    from modelverify_kernel.target import LocalTarget

    site = tmp_path / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(plugin_source, encoding="utf-8")
    info = site / f"{package}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[vllm.general_plugins]\nfl = {package}:register\n")
    params = validate(
        {
            "model_path": str(demo_model),
            "output_dir": str(tmp_path / "out"),
            "env": {**CPU_ENV, "PYTHONPATH": str(site)},
            "extra_vllm_args": DEMO_ENGINE_ARGS,
            **extra,
        }
    )
    spec = RunSpec("run_b", "Run B", {"USE_FLAGGEMS": "1", "VLLM_PLUGINS": "fl"}, ())
    target = LocalTarget(kill_grace=3.0, work_root=params.output_path / ".work")
    try:
        return judge_attempt(  # the runner records, the analysis judges
            run_phase(
                params,
                target,
                target.install_scripts(SCRIPTS_DIR),
                spec,
                phase,
                str(demo_model),
                1,
                params.output_path,
            )
        )
    finally:
        target.cleanup()


@pytest.mark.engine
def test_plugin_hanging_in_register_inside_the_real_engine_is_blamed_on_the_plugin(
    tmp_path: Path, demo_model
) -> None:
    """Real vLLM (CPU) loads a stand-in general plugin whose register() never returns (no real
    FlagOS plugin runs here), in a package whose name no table knows (issue 20: such a hang was
    blamed on vLLM). The offline phase hangs silently; at the timeout every process prints its
    stacks, and the diagnosis names the plugin's frame it waited in: the plugin is known as one
    from vLLM's own list of the plugins it loads."""
    pr = _run_b_phase_with_plugin(
        tmp_path,
        demo_model,
        HUNG_PLUGIN,
        "offline",
        {"offline_timeout": 20, "timeout_cap": 120},
        package="acme_accel_ext",
    )
    log = Path(pr.log).read_text()
    assert pr.status == "FAIL" and pr.timed_out and "hung" in pr.error, pr.error
    assert "(most recent call first)" in log and "_wait_for_device" in log
    assert pr.diagnosis["component"] == "plugin", pr.diagnosis
    assert any("acme_accel_ext/__init__.py" in e for e in pr.diagnosis["evidence"]), pr.diagnosis


SEGFAULTING_PLUGIN = """\
import ctypes


def _touch_device_memory():
    ctypes.string_at(0)  # a native crash, as a broken vendor kernel library would cause


def register():
    _touch_device_memory()
"""


@pytest.mark.engine
def test_segfault_in_the_api_server_leaves_a_python_stack_and_a_diagnosis(
    tmp_path: Path, demo_model
) -> None:
    """Real `vllm serve` (CPU) loads a stand-in general plugin `vllm_fl` that segfaults in register()
    (no real FlagOS plugin runs here): the API server dies by SIGSEGV; faulthandler, put into every
    process of the phase by the evidence sitecustomize, leaves its Python stack in the log."""
    pr = _run_b_phase_with_plugin(
        tmp_path, demo_model, SEGFAULTING_PLUGIN, "serve", {"health_timeout": 200}
    )
    log = Path(pr.log).read_text()
    assert pr.status == "FAIL" and "SIGSEGV" in pr.error, pr.error
    assert "Fatal Python error: Segmentation fault" in log and "_touch_device_memory" in log
    d = pr.diagnosis
    assert (d["component"], d["rule"]) == ("plugin", "O-native-crash"), d
    assert any("vllm_fl/__init__.py" in e for e in d["evidence"]), d


def test_the_timeout_rules_are_the_table_in_references(tmp_path: Path) -> None:
    """TIMEOUT-CAP / TIMEOUT-PROGRESS / TIMEOUT-HANG are rows of references/timeouts.md; a table
    that lacks one is refused with the file named."""
    from modelverify_kernel.analysis import timeouts

    rules = timeouts.load_rules()
    assert {r.rule for r in rules.values()} == {"TIMEOUT-CAP", "TIMEOUT-PROGRESS", "TIMEOUT-HANG"}
    assert rules["hang"].component == "unknown" and rules["progress"].component == "none"
    broken = tmp_path / "timeouts.md"
    broken.write_text(
        "| case | rule | component | confidence | signature | hint |\n|---|---|---|---|---|---|\n"
        "| cap | TIMEOUT-CAP | none | high | s | h |\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="timeouts.md: the timeout table lacks"):
        timeouts.load_rules(tmp_path)
