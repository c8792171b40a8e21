"""Owners from what is installed (owners.py), "unknown" with suspects, and --explain."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelverify_kernel.analysis.cli import cli_classify, explanation
from modelverify_kernel.analysis.diagnose import Trace, classify_log
from modelverify_kernel.analysis.knowledge import load_tables
from modelverify_kernel.analysis.logread import Frame
from modelverify_kernel.analysis.owners import Installed, Owners, local_map
from modelverify_kernel.probe import Probe

SP = "/usr/local/lib/python3.11/site-packages"

# a platform plugin whose module has a name no table knows, installed by its own distribution
ACME = {
    "modules": {"acme_accel": ["acme-accel"], "vllm": ["vllm"], "torch": ["torch"]},
    "versions": {"acme-accel": "0.3.1", "vllm": "0.11.0"},
    "plugins": [
        {
            "group": "vllm.platform_plugins",
            "name": "acme",
            "value": "acme_accel:register",
            "dist": "acme-accel",
        }
    ],
}


def _owners(installed: dict | None = None, listed: tuple[str, ...] = ()) -> Owners:
    return Owners(load_tables(), Installed.from_map(installed), listed)


def _frame(path: str, fn: str = "f") -> Frame:
    return Frame(path, f'File "{path}", line 1, in {fn}')


def test_installed_map_owns_a_package_no_table_names() -> None:
    owners = _owners(ACME)
    assert owners.frame(_frame(f"{SP}/acme_accel/worker.py")) == ("plugin", "installed map")
    assert _owners().frame(_frame(f"{SP}/acme_accel/worker.py"))[0] is None  # names only
    # the name tables keep deciding what they name (vLLM exposes entry points of its own)
    assert owners.frame(_frame(f"{SP}/vllm/worker.py")) == ("vllm", "name table")
    assert owners.frame(_frame(f"{SP}/torch/nn/module.py"))[0] is None  # a library, skipped


def test_distributions_decide_by_their_table() -> None:
    installed = {"modules": {"flag_gems_mthreads": ["flag-gems-mthreads"], "numpy": ["numpy"]}}
    owners = _owners(installed)
    assert owners.frame(_frame(f"{SP}/flag_gems_mthreads/ops/mm.py"))[0] == "FlagGems"
    assert owners.frame(_frame(f"{SP}/numpy/core/x.py"))[0] is None


@pytest.mark.parametrize(
    ("package", "component"),
    [
        ("vllm_kunlun", "plugin"),
        ("vllm_metax", "plugin"),
        ("flaggems_vllm", "FlagGems"),
        ("torch_npu", None),
    ],
)
def test_a_package_is_known_by_its_name_without_an_installed_map(
    package: str, component: str | None
) -> None:
    """`model-verify classify` on a log from elsewhere has no map of what was installed there:
    vLLM's platform plugins and FlagGems-vllm's ops are still known by their names."""
    comp, how = _owners().frame(_frame(f"{SP}/{package}/ops/x.py"))
    assert comp == component, (comp, how)


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/root/vllm_ci/vllm/vllm/v1/engine/core.py", "vllm"),
        ("/workspace/vllm-ascend/vllm_ascend/worker/model_runner_v1.py", "plugin"),
        ("/home/u/FlagGems-vllm/src/flaggems_vllm/ops/swiglu.py", "FlagGems"),
        ("/workspace/flaggems_bench/run_offline.py", None),
    ],
)
def test_a_checkouts_folders_are_read_exact_names_first(path: str, component: str | None) -> None:
    """Outside site-packages the path's folders name the package: exact names before the shape
    of a name, so a user's `vllm_ci` folder above vLLM's checkout does not make it a plugin."""
    assert _owners().frame(_frame(path))[0] == component


def test_native_frames_are_owned_by_their_library() -> None:
    owners = _owners()
    assert owners.frame(_frame("/opt/flagcx/build/lib/libflagcx.so(+0x1a2b)")) == (
        "FlagCX",
        "native library",
    )
    assert owners.frame(_frame(f"{SP}/triton/_C/libtriton.so"))[0] == "FlagTree"
    assert owners.frame(_frame("/usr/lib/x86_64-linux-gnu/libcuda.so.1"))[0] == "environment"
    assert owners.frame(_frame("/usr/lib/libnccl.so.2(+0x51)"))[0] is None  # the next frame out
    assert owners.frame(_frame("/lib/x86_64-linux-gnu/libc.so.6"))[0] is None


def test_plugins_listed_in_the_log_are_plugins() -> None:
    owners = _owners(listed=("acme_accel",))
    assert owners.frame(_frame("/opt/src/acme_accel/platform.py")) == ("plugin", "installed map")


def _register_hang(plugin_dir: str) -> list[str]:
    return [
        "[model-verify] stacks of every thread of pid 7 (vllm serve), before the kill:",
        "Current thread 0x00007f0000000002 (most recent call first):",
        f'  File "{plugin_dir}/_boot.py", line 12 in _wait_for_device',
        f'  File "{plugin_dir}/__init__.py", line 5 in register',
        f'  File "{SP}/vllm/plugins/__init__.py", line 61 in load_plugins_by_group',
        f'  File "{SP}/vllm/platforms/__init__.py", line 200 in resolve_current_platform_cls_qualname',
        f'  File "{SP}/vllm/engine/arg_utils.py", line 900 in create_engine_config',
    ]


@pytest.mark.parametrize("plugin_dir", [f"{SP}/acme_accel", "/workspace/acme/src/acme_accel"])
def test_a_hang_in_a_plugins_register_is_the_plugins(plugin_dir: str) -> None:
    """Whatever the plugin's module is called: by the installed map, and by vLLM's loader alone."""
    log = _register_hang(plugin_dir)
    assert classify_log(log, installed=ACME).component == "plugin"
    assert classify_log(log).component == "plugin"  # the loader called into it


def test_the_loader_calling_vllms_own_code_blames_no_plugin() -> None:
    log = [
        "Current thread 0x00007f0000000002 (most recent call first):",
        f'  File "{SP}/vllm/plugins/lora_resolvers/filesystem_resolver.py", line 9 in register',
        f'  File "{SP}/vllm/plugins/__init__.py", line 61 in load_plugins_by_group',
    ]
    assert classify_log(log).component == "vllm"


def test_a_deeper_multichip_frame_still_wins_over_the_plugin() -> None:
    log = _register_hang(f"{SP}/acme_accel")
    log.insert(2, f'  File "{SP}/flag_gems/ops/mm.py", line 80 in mm')
    assert classify_log(log).component == "FlagGems"


def test_unknown_names_ranked_suspects_with_evidence() -> None:
    log = [
        "Traceback (most recent call last):",
        '  File "/home/u/run.py", line 3, in <module>',
        "    main()",
        "RuntimeError: backend refused the graph",
        "  the vllm-plugin-FL dispatcher was active",
    ]
    diag = classify_log(log)
    assert diag.component == "unknown", diag
    assert diag.suspects and diag.suspects[0]["component"] == "plugin"
    assert {"component", "evidence", "why"} <= set(diag.suspects[0])
    assert "vllm-plugin-FL" in diag.suspects[0]["evidence"]
    assert len(diag.suspects) <= 3


@pytest.mark.parametrize(
    ("line", "suspects"),
    [
        (
            "RuntimeError: Worker failed with error 'CUDA error: an illegal memory access was encountered'",
            ["FlagGems", "plugin", "environment"],
        ),
        (
            "torch.AcceleratorError: HIP error: operation not permitted when stream is capturing",
            ["FlagGems", "plugin", "vllm"],
        ),
        ("RuntimeError: Triton Error [ZE]: 2013265944", ["FlagGems", "FlagTree", "vllm"]),
        # an aten op with no kernel for the vendor device's dispatch key
        (
            "NotImplementedError: Could not run 'aten::mse_loss_backward.default' with arguments "
            "from the 'PrivateUse1' backend.",
            ["FlagGems", "environment"],
        ),
        # torch's report of NCCL getting an error back from the device runtime: the library's
        # bug on this hardware or the node's driver (not another kernel's fault it passes on)
        (
            "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/"
            "ProcessGroupNCCL.cpp:1970, unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
            ["FlagCX", "environment"],
        ),
        # ... but a device fault NCCL passes on (another kernel's) is the fault's
        (
            "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:3356, "
            "unhandled cuda error (run with NCCL_DEBUG=INFO for details)\n"
            "ncclUnhandledCudaError: Call to CUDA function failed.\nLast error:\n"
            "Cuda failure 'an illegal memory access was encountered'",
            ["FlagGems", "plugin", "environment"],
        ),
    ],
)
def test_a_device_fault_without_an_owner_names_the_kernels_layers_as_suspects(
    line: str, suspects: list[str]
) -> None:
    """A device fault with no frame is unknown, but not without leads: whose kernels run on the
    device in a FlagOS stack (references/owners.md, symptoms). It used to list none."""
    diag = classify_log(line.splitlines())
    assert diag.component == "unknown", diag
    # ranked first; the exception type's own suspect may follow (weakest)
    assert [s["component"] for s in diag.suspects][: len(suspects)] == suspects
    assert all(s["evidence"] and s["evidence"] in line for s in diag.suspects)


def test_a_decided_diagnosis_has_no_suspects() -> None:
    log = [
        "Traceback (most recent call last):",
        f'  File "{SP}/flag_gems/ops/mm.py", line 80, in mm',
        "RuntimeError: boom",
    ]
    diag = classify_log(log)
    assert diag.component == "FlagGems" and diag.suspects == []


def test_explain_lists_readers_frames_owners_rules_and_suspects() -> None:
    trace = Trace()
    diag = classify_log(_register_hang("/workspace/acme/src/acme_accel"), trace=trace)
    ex = explanation(trace, diag)
    (failure,) = [f for f in ex["failures"] if f["chosen"]]
    assert failure["reader"].startswith("stack dump")
    owners = {row["owner"]: row["decided by"] for row in failure["frames"]}
    assert owners["plugin"] == "loader" and owners["vllm"] == "name table"
    assert failure["rule"] == diag.rule and ex["diagnosis"]["component"] == "plugin"
    assert "suspects" in ex


def test_cli_explain_prints_owners(tmp_path, capsys) -> None:
    log = tmp_path / "hang.log"
    log.write_text("\n".join(_register_hang(f"{SP}/acme_accel")) + "\n", encoding="utf-8")
    assert cli_classify([str(log)], as_json=False, explain=True) == 0
    out = capsys.readouterr().out
    assert ": plugin (" in out and "read as stack dump" in out and "→ plugin (loader)" in out
    assert cli_classify([str(log)], as_json=True, explain=True) == 0
    data = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert data["component"] == "plugin" and data["explain"]["failures"]


def test_local_map_is_the_probes_function() -> None:
    data = local_map()
    assert set(data) == {"modules", "versions", "plugins"}
    assert "json" not in data["modules"]  # the standard library installs no distribution
    assert all(isinstance(v, list) for v in data["modules"].values())
    assert Probe({"owners": data}).owners == data and Probe({}).owners == {}


@pytest.mark.process
def test_model_verify_classify_explain_process(tmp_path) -> None:
    log = tmp_path / "hang.log"
    log.write_text("\n".join(_register_hang("/opt/x/acme_accel")) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "modelverify_kernel.analysis.cli", "--explain", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plugin (loader)" in proc.stdout and "installed map:" in proc.stdout


def test_a_runs_judgement_uses_the_map_its_probe_recorded(tmp_path) -> None:
    """The probe records what is installed in the target; judging (and re-judging) that run's
    logs uses it: a frame in a package only the map knows is owned by its distribution."""
    from modelverify_kernel.analysis.judge import judge_attempt, rejudge
    from modelverify_kernel.records import Evidence, PhaseExit, PhaseResult

    log = tmp_path / "run_b_offline.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        f'  File "{SP}/vllm/worker/worker.py", line 10, in load_model\n'
        f'  File "{SP}/acme_accel/ops/attention.py", line 44, in forward\n'
        "RuntimeError: descriptor table overflow\n"
    )
    raw = PhaseResult(
        run="run_b",
        phase="offline",
        status="FAIL",
        log=str(log),
        exit_code=1,
        result={"status": "FAIL", "error": "RuntimeError: descriptor table overflow"},
        exit=PhaseExit(ended_by="exit", timeout=300, timeout_param="offline_timeout", cap=1800),
    )
    assert judge_attempt(raw).diagnosis["component"] != "plugin"  # no map: the names only
    assert judge_attempt(raw, ACME).diagnosis["component"] == "plugin"
    evidence = Evidence(
        parameters={}, started_at="t", target={}, probe={"owners": ACME}, attempts=(raw,)
    )
    assert rejudge(evidence).attempts[0].diagnosis["component"] == "plugin"


def test_an_unproven_component_stays_empty_and_the_verdict_lists_the_suspects() -> None:
    from modelverify_kernel.analysis.verdict import decide
    from modelverify_kernel.records import PhaseResult

    ok = {p: PhaseResult(run="run_a", phase=p, status="PASS") for p in ("offline", "serve")}
    diag = {
        "component": "unknown",
        "suspects": [
            {"component": "vllm", "why": "owner of the deepest frame", "evidence": "x.py"},
            {"component": "FlagGems", "why": "named in the failure's text", "evidence": "y"},
        ],
    }
    bad = {
        p: PhaseResult(run="run_b", phase=p, status="FAIL", error="KeyError: 'k'", diagnosis=diag)
        for p in ("offline", "serve")
    }
    v = decide(ok, bad)
    assert v.conclusion == "MULTICHIP_ERROR" and v.multichip_component is None
    assert "suspects, most likely first: vllm (owner of the deepest frame)" in v.detail


def test_explain_says_how_an_owner_row_found_its_owner() -> None:
    """A reviewer reads why: a plugin's subclass named by the exception outranks vLLM's frame."""
    from modelverify_kernel.analysis.cli import format_explanation

    lines = [
        "Traceback (most recent call last):",
        f'  File "{SP}/vllm/v1/worker/gpu_model_runner.py", line 4434, in profile_run',
        "AttributeError: 'NPUModelRunner' object has no attribute 'mm_budget'",
    ]
    trace = Trace()
    diag = classify_log(lines, trace=trace)
    text = format_explanation(explanation(trace, diag))
    assert diag.component == "plugin" and "→ plugin (owner by class)" in text, text
