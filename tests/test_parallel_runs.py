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
