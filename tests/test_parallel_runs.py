"""Runs A and B side by side on disjoint devices (issue 14, point 3): the device plan.

The plan is pure (params, the probe's devices, TP); the real engine running both runs at once
is checked in tests/test_stack_modes.py on the stand-in stack's shared run.
"""

from __future__ import annotations

import pytest

from modelverify_kernel import runs
from modelverify_kernel.params import validate

CPU4 = {"devices": {"kind": "cpu", "count": 1, "cpus": 4, "cores": [0, 1, 2, 3]}}
GPU8 = {"devices": {"kind": "gpu", "tool": "nvidia-smi", "count": 8}}


def _plan(probe, tp, run_b_runs=True, **values):
    return runs.device_plan(validate({"model_path": "/m", **values}), probe, tp, run_b_runs)


def test_cpu_cores_are_split_in_halves_one_core_list_per_tp_rank():
    plan = _plan(CPU4, 1)
    assert (plan["parallel"], plan["variable"], plan["run_a"], plan["run_b"]) == (
        True,
        "VLLM_CPU_OMP_THREADS_BIND",
        "0,1",
        "2,3",
    )
    plan = _plan(CPU4, 2)
    assert (plan["run_a"], plan["run_b"]) == ("0|1", "2|3")
    # a container's cpuset: the cores it may use, not 0..n-1
    plan = _plan({"devices": {"kind": "cpu", "cpus": 8, "cores": [4, 5, 6, 7]}}, 1)
    assert (plan["run_a"], plan["run_b"]) == ("4,5", "6,7")


def test_gpus_first_tp_for_run_a_next_tp_for_run_b_through_the_vendor_variable():
    plan = _plan(GPU8, 2)
    assert (plan["parallel"], plan["variable"], plan["run_a"], plan["run_b"]) == (
        True,
        "CUDA_VISIBLE_DEVICES",
        "0,1",
        "2,3",
    )
    ascend = {"devices": {"kind": "accelerator", "tool": "npu-smi", "count": 4}}
    assert _plan(ascend, 2)["variable"] == "ASCEND_RT_VISIBLE_DEVICES"


def test_a_device_list_given_in_env_is_the_pool_that_is_split():
    plan = _plan(GPU8, 2, env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert (plan["run_a"], plan["run_b"]) == ("4,5", "6,7")
    plan = _plan(CPU4, 1, env={"VLLM_CPU_OMP_THREADS_BIND": "8-11"})
    assert (plan["run_a"], plan["run_b"]) == ("8,9", "10,11")
    assert not _plan(CPU4, 1, env={"VLLM_CPU_OMP_THREADS_BIND": "auto"})["parallel"]


@pytest.mark.parametrize(
    "probe, tp, values, reason",
    [
        (GPU8, 8, {}, "< 2 × TP=8"),
        ({"devices": {"kind": "cpu", "cpus": 1, "cores": [0]}}, 1, {}, "< 2 × TP=1"),
        (GPU8, 1, {"parallel_runs": "off"}, "parallel_runs=off"),
        (GPU8, 1, {"run_b_env": {"CUDA_VISIBLE_DEVICES": "3"}}, "chosen per run (run_b_env)"),
        (
            {"devices": {"kind": "accelerator", "tool": "mx-smi", "count": None}},
            1,
            {},
            "no visible-devices variable",
        ),
        (
            {"devices": {"kind": "accelerator", "tool": "npu-smi", "count": None}},
            1,
            {},
            "could not count",
        ),
        (None, 1, {}, "did not report the devices"),
    ],
)
def test_otherwise_one_after_the_other_and_the_reason_says_why(probe, tp, values, reason):
    plan = _plan(probe, tp, **values)
    assert plan["parallel"] is False and reason in plan["reason"], plan
    assert plan["variable"] is None and plan["run_a"] is None


def test_run_b_not_running_keeps_run_a_alone_on_every_device():
    assert "Run A runs alone" in _plan(GPU8, 1, run_b_runs=False)["reason"]


def test_each_run_carries_its_devices_in_its_flags():
    params = validate({"model_path": "/m"})
    plan = _plan(GPU8, 2)
    run_a, run_b = runs.run_specs(params, {**GPU8, "entry_points": {}}, plan)
    assert (
        run_a.env_set["CUDA_VISIBLE_DEVICES"] == "0,1"
        and run_b.env_set["CUDA_VISIBLE_DEVICES"] == "2,3"
    )
    assert run_b.env_set["USE_FLAGGEMS"] == "1"  # the defaults stay
    serial = runs.run_specs(params, {**GPU8, "entry_points": {}}, _plan(GPU8, 8))
    assert all("CUDA_VISIBLE_DEVICES" not in spec.env_set for spec in serial)


def test_parallel_runs_is_validated():
    with pytest.raises(Exception, match="parallel_runs"):
        validate({"model_path": "/m", "parallel_runs": "yes"})


# --------------------------------------------------------------------------- Ctrl-C while both run

# The driver process of the test below: a real Verification whose phases are stood in by a real
# sleeping Python (no engine can start here in seconds; the point is the processes, which are
# real: each runs in its own session under container_scripts/run_in_session.py).
CTRL_C_DRIVER = r"""
import json, sys
from modelverify_kernel import runs
from modelverify_kernel.params import validate
from modelverify_kernel.pipeline import Verification
from modelverify_kernel.records import Evidence, RunSpec, skipped

SLEEPER = "import os, time; print('phase pid', os.getpid(), flush=True); time.sleep(600)"
runs.phase_argv = lambda params, target, scripts, phase, model, tp, output: [
    sys.executable, "-c", SLEEPER
]
params = validate({"model_path": "/m", "output_dir": sys.argv[1], "run_b": "always"})
evidence = Evidence(
    parameters=params.to_dict(),
    started_at="2026-01-01T00:00:00+00:00",
    target={"kind": "local"},
    probe={"devices": {"kind": "cpu", "count": 1, "cpus": 2, "cores": [0, 1]}, "entry_points": {}},
    model={"requested": "/m", "path": "/m", "status": "PASS"},
    tp=1,
    runs={n: skipped(RunSpec(n, n, {}, ()), "not run yet", "NOT_RUN") for n in ("run_a", "run_b")},
)
v = Verification(params=params, target=None, evidence=evidence)
assert v.device_plan()["parallel"], v.device_plan()
try:
    v.run_both()
    print("FINISHED", flush=True)
except KeyboardInterrupt:
    seen = [[a.run, a.phase, a.status, a.exit.ended_by, a.reason] for a in v.history]
    print("INTERRUPTED " + json.dumps(seen), flush=True)
finally:
    v.close()
"""


@pytest.mark.process
def test_ctrl_c_while_both_runs_run_side_by_side_stops_both_phases(tmp_path):
    """Jupyter's interrupt is SIGINT to the kernel alone: both phases (their own sessions) must
    stop, each recorded as interrupted (NOT_RUN), and no later phase may start."""
    import json
    import os
    import re
    import signal
    import subprocess
    import sys

    from conftest import REPO, wait_until

    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_DRIVER, str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        logs = [out / "logs" / f"{run}_offline.log" for run in ("run_a", "run_b")]

        def pids():
            found = [
                re.search(r"phase pid (\d+)", p.read_text()) if p.exists() else None for p in logs
            ]
            return [int(m.group(1)) for m in found if m]

        phase_pids = wait_until(lambda: len(pids()) == 2 and pids(), 60, "both phases starting")
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "INTERRUPTED" in output, output
    seen = json.loads(output.split("INTERRUPTED ", 1)[1].splitlines()[0])
    assert sorted((run, phase) for run, phase, *_ in seen) == [
        ("run_a", "offline"),
        ("run_b", "offline"),
    ]  # what both gathered is kept; no serve phase started
    assert all(status == "NOT_RUN" and ended == "stopped" for _, _, status, ended, _ in seen), seen

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(lambda: all(gone(p) for p in phase_pids), 10, "both phase processes ending")
