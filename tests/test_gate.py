"""The gate of DESIGN.md: BOTH_PASS only on recorded, differential evidence; Run A proven base;
each run's flags built from the defaults plus the user's; Run A's way chosen from the probe.

The events are the recorder's own format (container_scripts/stack_evidence.py); the engine
tests in test_stack_modes.py produce them for real.
"""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from modelverify_kernel.analysis import gate as mv_gate
from modelverify_kernel.analysis.compare import compare_phase
from modelverify_kernel.analysis.verdict import decide
from modelverify_kernel.params import validate
from modelverify_kernel.runs import PhaseResult, run_a_base, run_specs

START = {
    "event": "process_started",
    "pid": 1,
    "process": "EngineCore",
    "env": {"USE_FLAGGEMS": "1", "FLAGCX_PATH": "/tmp/FlagCX", "VLLM_PLUGINS": "fl"},
}
FL_LOADED = {
    "event": "plugins_loaded",
    "pid": 1,
    "process": "EngineCore",
    "group": "vllm.general_plugins",
    "names": ["fl"],
    "vllm_plugins": "fl",
    "modules": {"fl": "vllm_fl"},
}
RAN = [
    {
        "event": "flaggems_op_ran",
        "pid": 2,
        "process": "VllmWorker-0",
        "op": "embedding",
        "fn": "flag_gems.ops.embedding.embedding",
        "via": "aten",
        "calls": c,
    }
    for c in (1, 10, 100)
]
ENABLED = {
    "event": "flaggems_enabled",
    "pid": 2,
    "process": "VllmWorker-0",
    "call": "enable",
    "ops": 433,
    "registered": ["embedding"],
}


def activity(events, claims=(), tp=1):
    return mv_gate.assess(events, list(claims), tp, "/tmp/FlagCX")


def both_pass_runs():
    def run(name):
        return {ph: PhaseResult(run=name, phase=ph, status="PASS") for ph in ("offline", "serve")}

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
    return run("run_a"), run("run_b"), [compare_phase("offline", out, out)]


def test_a_loaded_plugin_that_does_nothing_is_not_activity_even_when_the_log_claims_it():
    b = activity(
        [START, FL_LOADED],
        [
            "INFO [__init__.py:282] Platform plugin fl is activated",
            "[fake] FlagGems enabled: 433 ops",
        ],
    )
    assert (
        b["plugin"].status == "inactive"
        and "loading alone is not activity" in b["plugin"].evidence[0]
    )
    assert b["FlagGems"].status == "inactive"
    assert any("a printed line is not evidence" in e for e in b["FlagGems"].evidence)
    a_runs = both_pass_runs()
    v = decide(a_runs[0], a_runs[1], comparisons=a_runs[2], gate=mv_gate.gate(activity([START]), b))
    assert (v.conclusion, v.recommended_stack) == ("STACK_INACTIVE", "base")


def test_a_printed_platform_line_never_overrides_the_recorded_events():
    no_plugin = {
        "event": "plugins_loaded",
        "pid": 1,
        "process": "EngineCore",
        "group": "vllm.platform_plugins",
        "names": [],
        "vllm_plugins": "fl",
        "modules": {},
    }
    b = activity([START, no_plugin], ["INFO Platform plugin fl is activated"])
    assert b["plugin"].status == "inactive"
    assert (
        "no plugin named 'fl'" in b["plugin"].evidence[0]
        and "not evidence" in b["plugin"].evidence[-1]
    )


def test_kernels_that_ran_are_strong_ops_taken_over_alone_weak():
    strong = activity([START, ENABLED, *RAN])["FlagGems"]
    assert (strong.status, strong.strength) == ("active", "strong")
    assert "embedding (≥100 calls)" in strong.evidence[0] and "ran:embedding" in strong.work
    weak = activity([START, ENABLED])["FlagGems"]
    assert (weak.status, weak.strength) == (
        "active",
        "weak",
    ) and "weaker evidence" in weak.evidence[0]
    g = mv_gate.gate(activity([START]), activity([START, ENABLED]))
    assert g.passed and g.strength == "weak"


def test_both_pass_names_the_ops_that_ran():
    a, b, comps = both_pass_runs()
    v = decide(
        a,
        b,
        comparisons=comps,
        gate=mv_gate.gate(activity([START]), activity([START, ENABLED, *RAN])),
    )
    assert (v.conclusion, v.recommended_stack, v.status) == ("BOTH_PASS", "full", "PASS")
    assert "embedding (≥100 calls)" in v.detail and "weaker" not in v.detail


def test_the_plugins_own_dispatch_counts_only_for_its_own_modules():
    direct = {
        "event": "flaggems_op_ran",
        "pid": 2,
        "process": "VllmWorker-0",
        "op": "gems_rms_forward",
        "fn": "flag_gems.modules.normalization.gems_rms_forward",
        "via": "direct",
        "caller": "vllm_fl.ops.layernorm",
        "calls": 1,
    }
    oot = {
        "event": "plugin_op_ran",
        "pid": 2,
        "process": "VllmWorker-0",
        "op": "RMSNorm",
        "cls": "vllm_fl.ops.layernorm.RMSNormFL",
        "method": "forward_oot",
        "calls": 10,
    }
    other = dict(oot, cls="vllm_ascend.ops.RMSNormAscend")
    b = activity([START, FL_LOADED, direct, oot])["plugin"]
    assert (b.status, b.strength) == ("active", "strong") and {
        "op:RMSNorm",
        "dispatch:gems_rms_forward",
    } <= set(b.work)
    assert activity([START, FL_LOADED, other])["plugin"].status == "inactive"


def test_the_gate_is_differential_work_done_in_both_runs_does_not_count():
    oot = {
        "event": "plugin_op_ran",
        "pid": 2,
        "process": "VllmWorker-0",
        "op": "RMSNorm",
        "cls": "vllm_fl.ops.layernorm.RMSNormFL",
        "method": "forward_oot",
        "calls": 10,
    }
    same = activity([START, FL_LOADED, oot])
    assert not mv_gate.gate(same, same).passed
    assert mv_gate.gate(activity([START, FL_LOADED]), same).passed


def test_run_a_with_flaggems_active_is_invalid_whatever_the_runs_did():
    a, b, comps = both_pass_runs()
    act_a = activity([START, FL_LOADED, ENABLED, *RAN])
    v = decide(
        a,
        b,
        comparisons=comps,
        gate=mv_gate.gate(act_a, act_a),
        base_mode={"mode": "exclude_plugin"},
    )
    assert (v.conclusion, v.status, v.recommended_stack) == ("RUN_A_NOT_BASE", "FAIL", "none")
    assert "embedding" in v.detail and "VLLM_PLUGINS" in v.detail
    failed_a = {
        ph: PhaseResult(
            run="run_a",
            phase=ph,
            status="FAIL",
            error="boom",
            diagnosis={"component": "plugin", "signature": "s"},
        )
        for ph in ("offline", "serve")
    }
    v = decide(failed_a, b, gate=mv_gate.gate(act_a, act_a), base_mode={"mode": "native"})
    assert (v.conclusion, v.recommended_stack) == (
        "RUN_A_NOT_BASE",
        "none",
    ) and "only platform" in v.detail


def test_flagcx_never_active_at_tp1_and_inactive_without_its_library():
    init = {
        "event": "dist_init",
        "pid": 2,
        "process": "VllmWorker-0",
        "backend": "flagcx",
        "world_size": 2,
    }
    coll = {
        "event": "collective",
        "pid": 2,
        "process": "VllmWorker-0",
        "op": "all_reduce",
        "backend": "flagcx",
        "world_size": 2,
    }
    assert activity([START, init, coll], tp=1)["FlagCX"].status == "not_exercised"
    lib = "/tmp/FlagCX/build/lib/libflagcx.so"
    assert (
        mv_gate.assess([START, init, coll], [], 2, "/tmp/FlagCX", None)["FlagCX"].status
        == "inactive"
    )
    on = mv_gate.assess([START, init, coll], [], 2, "/tmp/FlagCX", lib)["FlagCX"]
    assert (on.status, on.strength) == ("active", "strong")
    assert mv_gate.assess([START, init], [], 2, "/tmp/FlagCX", lib)["FlagCX"].strength == "weak"


def test_flagtree_is_reported_but_never_counts_for_the_gate():
    tri = {
        "event": "triton_imported",
        "pid": 2,
        "process": "VllmWorker-0",
        "version": "3.5.0",
        "flagtree": "0.3.0",
    }
    b = activity([START, tri])
    assert b["FlagTree"].status == "active" and b["FlagTree"].counts_for_gate is False
    assert not mv_gate.gate(activity([START]), b).passed


def test_same_error_names_only_what_the_probe_found_in_both_runs():
    def failed(name):
        return {
            ph: PhaseResult(
                run=name,
                phase=ph,
                status="FAIL",
                error="boom",
                diagnosis={"component": "vllm", "signature": "s"},
            )
            for ph in ("offline", "serve")
        }

    assert "FlagTree" not in decide(failed("run_a"), failed("run_b")).detail
    v = decide(failed("run_a"), failed("run_b"), in_both=["FlagTree"])
    assert "FlagTree is in both runs" in v.detail


def test_engine_environment_tells_unset_from_empty():
    env = mv_gate.engine_environment(
        [{"event": "process_started", "env": {"VLLM_PLUGINS": "", "FLAGCX_PATH": None}}]
    )
    assert env == {"VLLM_PLUGINS": "", "FLAGCX_PATH": None}
    assert (mv_gate.env_text(env["VLLM_PLUGINS"]), mv_gate.env_text(env["FLAGCX_PATH"])) == (
        '""',
        "unset",
    )
    empty = {
        "event": "plugins_loaded",
        "pid": 1,
        "process": "EngineCore",
        "group": "vllm.general_plugins",
        "names": [],
        "vllm_plugins": "",
        "modules": {},
    }
    assert 'VLLM_PLUGINS=""' in activity([START, empty])["plugin"].evidence[0]


def test_user_flags_add_to_the_defaults_and_removal_goes_through_unset():
    a, b = run_specs(validate({"model_path": "/m", "run_b_env": {"PYTHONPATH": "/x"}}))
    assert dict(b.env_set) == {
        "USE_FLAGGEMS": "1",
        "FLAGCX_PATH": "/tmp/FlagCX",
        "VLLM_PLUGINS": "fl",
        "PYTHONPATH": "/x",
    }
    assert dict(a.env_set) == {"USE_FLAGGEMS": "0"} and a.env_unset == ("FLAGCX_PATH",)
    a, b = run_specs(
        validate(
            {"model_path": "/m", "run_b_unset": ["FLAGCX_PATH"], "run_a_env": {"FLAGCX_PATH": "/y"}}
        )
    )
    assert "FLAGCX_PATH" not in b.env_set and b.env_unset == ("FLAGCX_PATH",)
    assert a.env_set["FLAGCX_PATH"] == "/y" and a.env_unset == ()


def probe(kind="cpu", tool=None, platform=(), general=()):
    eps = {
        "vllm.platform_plugins": [{"name": n, "value": f"{n}:register"} for n in platform],
        "vllm.general_plugins": [{"name": n, "value": f"{n}:register"} for n in general],
    }
    return {"devices": {"kind": kind, "tool": tool, "count": 1}, "entry_points": eps}


def test_run_a_excludes_fl_where_vllm_or_another_vendor_serves_the_devices():
    base = run_a_base(probe("gpu", "nvidia-smi", platform=["fl"], general=["fl", "lora_extra"]))
    assert (
        base["mode"] == "exclude_plugin"
        and base["env"] == {"VLLM_PLUGINS": "lora_extra"}
        and "CUDA" in base["reason"]
    )
    assert run_a_base(probe(platform=["fl"]))["env"] == {"VLLM_PLUGINS": ""}
    vendor = run_a_base(probe("accelerator", "npu-smi", platform=["fl", "ascend"]))
    assert vendor["mode"] == "exclude_plugin" and vendor["env"] == {"VLLM_PLUGINS": "ascend"}
    native = run_a_base(probe("accelerator", "mx-smi", platform=["fl"]))
    assert native["mode"] == "native" and native["env"] == {}
    assert run_a_base(probe())["mode"] == "no_plugin"
    a, _ = run_specs(validate({"model_path": "/m"}), probe(platform=["fl"]))
    assert a.env_set["VLLM_PLUGINS"] == "" and a.base_mode["mode"] == "exclude_plugin"
    a, _ = run_specs(
        validate({"model_path": "/m", "run_a_unset": ["VLLM_PLUGINS"]}), probe(platform=["fl"])
    )
    assert "VLLM_PLUGINS" not in a.env_set and a.base_mode["mode"] == "user"


@pytest.mark.process
def test_the_recorder_sees_flaggems_registrations_and_kernel_calls_in_a_real_process(tmp_path):
    """A real Python with real torch: a package named flag_gems registers an ATen override the
    way FlagGems does, and exposes a kernel called directly; the recorder writes both."""
    pkg = tmp_path / "site" / "flag_gems"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        import torch
        from .ops.neg import neg
        _lib = torch.library.Library("aten", "IMPL")
        def enable(unused=None, record=False):
            _lib.impl("neg", neg, "CPU")
        def all_registered_ops():
            return ["neg"]
    """)
    )
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "neg.py").write_text("def neg(x):\n    return x.mul(-1)\n")
    (tmp_path / "site" / "caller_pkg.py").write_text(
        "import flag_gems.ops.neg as k\ndef call(x):\n    return k.neg(x)\n"
    )
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO / "container_scripts")!r}, {str(tmp_path / "site")!r}]
        import stack_evidence
        stack_evidence.activate({str(tmp_path / "ev")!r})
        import torch, flag_gems, caller_pkg
        flag_gems.enable()
        for _ in range(12):
            torch.neg(torch.ones(2))
        caller_pkg.call(torch.ones(2))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    sys.path.insert(0, str(REPO / "container_scripts"))
    import stack_evidence

    events = stack_evidence.collect(tmp_path / "ev")
    ran = [e for e in events if e["event"] == "flaggems_op_ran"]
    assert {(e["via"], e["calls"]) for e in ran if e["op"] == "neg"} >= {
        ("aten", 1),
        ("aten", 10),
        ("direct", 1),
    }
    assert any(e.get("caller") == "caller_pkg" for e in ran)
    enabled = [e for e in events if e["event"] == "flaggems_enabled"]
    assert enabled and enabled[0]["registered"] == ["neg"] and enabled[0]["ops"] == 1
    fg = mv_gate.assess(events, [], 1, None)["FlagGems"]
    assert (fg.status, fg.strength) == ("active", "strong")


@pytest.mark.process
def test_the_recorder_sees_backends_collectives_and_a_flagcx_library_in_a_real_process(tmp_path):
    """Real torch.distributed (gloo, one process on 127.0.0.1) and a real ctypes load that fails."""
    (tmp_path / "FlagCX" / "build" / "lib").mkdir(parents=True)
    lib = tmp_path / "FlagCX" / "build" / "lib" / "libflagcx.so"
    lib.write_bytes(b"not a library")
    script = textwrap.dedent(f"""
        import ctypes, socket, sys
        sys.path.insert(0, {str(REPO / "container_scripts")!r})
        import stack_evidence
        stack_evidence.activate({str(tmp_path / "ev")!r})
        import torch, torch.distributed as dist
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{{port}}", rank=0, world_size=1)
        dist.all_reduce(torch.ones(2))
        dist.destroy_process_group()
        try:
            ctypes.CDLL({str(lib)!r})
        except OSError:
            pass
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    sys.path.insert(0, str(REPO / "container_scripts"))
    import stack_evidence

    events = {e["event"]: e for e in stack_evidence.collect(tmp_path / "ev")}
    assert (events["dist_init"]["backend"], events["dist_init"]["world_size"]) == ("gloo", 1)
    assert (events["collective"]["op"], events["collective"]["backend"]) == ("all_reduce", "gloo")
    assert events["flagcx_library"]["loaded"] is False and events["flagcx_library"]["path"] == str(
        lib
    )
    flagcx = mv_gate.assess(list(events.values()), [], 2, str(tmp_path / "FlagCX"), str(lib))[
        "FlagCX"
    ]
    assert flagcx.status == "inactive" and "gloo" in flagcx.evidence[0]  # not FlagCX's backend


def test_run_a_that_recorded_nothing_cannot_back_a_both_pass():
    a, b, comps = both_pass_runs()
    v = decide(
        a,
        b,
        comparisons=comps,
        gate=mv_gate.gate(mv_gate.assess([], [], 1, None), activity([START, ENABLED, *RAN])),
    )
    assert (v.conclusion, v.status, v.recommended_stack) == ("RUN_A_NOT_BASE", "FAIL", "none")
    assert "recorded no evidence" in v.detail


def test_a_flagcx_backend_or_library_without_collectives_is_not_flagcx_work():
    init = {
        "event": "dist_init",
        "pid": 2,
        "process": "VllmWorker-0",
        "backend": "flagcx",
        "world_size": 2,
    }
    lib = {
        "event": "flagcx_library",
        "pid": 2,
        "process": "VllmWorker-0",
        "path": "/x/libflagcx.so",
        "loaded": True,
    }
    b = mv_gate.assess(
        [START, init, lib], [], 2, "/tmp/FlagCX", "/tmp/FlagCX/build/lib/libflagcx.so"
    )
    assert b["FlagCX"].work == [] and not mv_gate.gate(activity([START], tp=2), b).passed
    assert any("supporting only" in e for e in b["FlagCX"].evidence)
    # in Run A the same backend is FlagCX in use: not base
    assert mv_gate.gate(b, b).run_a_not_base


def _run_with_recorder(tmp_path, site_files: dict, body: str) -> list[dict]:
    site = tmp_path / "site"
    for rel, text in site_files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(text))
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO / "container_scripts")!r}, {str(site)!r}]
        import stack_evidence
        stack_evidence.activate({str(tmp_path / "ev")!r})
    """) + textwrap.dedent(body)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=180)
    sys.path.insert(0, str(REPO / "container_scripts"))
    import stack_evidence

    return stack_evidence.collect(tmp_path / "ev")


@pytest.mark.process
def test_flagcx_communicator_collectives_are_recorded_only_when_it_is_on(tmp_path):
    """The FL plugin talks to libflagcx through its own communicator class, not torch.distributed."""
    comm = """
        class PyFlagcxCommunicator:
            def __init__(self, disabled):
                self.disabled, self.world_size = disabled, 2
            def all_reduce(self, x):
                return x
    """
    events = _run_with_recorder(
        tmp_path,
        {"vllm_fl/__init__.py": "", "vllm_fl/flagcx.py": comm},
        """
        from vllm_fl.flagcx import PyFlagcxCommunicator
        PyFlagcxCommunicator(disabled=True).all_reduce(1)
        PyFlagcxCommunicator(disabled=False).all_reduce(1)
    """,
    )
    coll = [e for e in events if e["event"] == "collective"]
    assert len(coll) == 1 and (coll[0]["op"], coll[0]["backend"], coll[0]["world_size"]) == (
        "all_reduce",
        "flagcx",
        2,
    )
    flagcx = mv_gate.assess(events, [], 2, "/tmp/FlagCX", "/tmp/FlagCX/build/lib/libflagcx.so")[
        "FlagCX"
    ]
    assert (flagcx.status, flagcx.strength, flagcx.work) == (
        "active",
        "strong",
        ["collective:all_reduce"],
    )


@pytest.mark.process
def test_wrapped_kernels_trace_under_torch_compile_and_packages_keep_their_resources(tmp_path):
    """vLLM compiles with fullgraph=True: a wrapper must not break tracing; and a watched package's
    loader still answers importlib.resources (vendor backends read their files that way)."""
    kernels = {
        "flag_gems/__init__.py": "from .ops.neg import neg\n",
        "flag_gems/ops/__init__.py": "",
        "flag_gems/ops/neg.py": "def neg(x):\n    return x.mul(-1)\n",
        "flag_gems/ops/table.yaml": "ok: 1\n",
        "caller_pkg.py": "import flag_gems\ndef f(x):\n    return flag_gems.neg(x) + 1\n",
    }
    events = _run_with_recorder(
        tmp_path,
        kernels,
        """
        import importlib.resources, torch, caller_pkg
        assert importlib.resources.files("flag_gems.ops").joinpath("table.yaml").read_text() == "ok: 1\\n"
        compiled = torch.compile(caller_pkg.f, backend="eager", fullgraph=True)
        assert compiled(torch.ones(2)).tolist() == [0.0, 0.0]
        caller_pkg.f(torch.ones(2))  # eager: recorded
    """,
    )
    ran = [e for e in events if e["event"] == "flaggems_op_ran"]
    assert [(e["op"], e["via"], e["caller"]) for e in ran] == [("neg", "direct", "caller_pkg")]


@pytest.mark.process
def test_a_forked_process_records_itself(tmp_path):
    events = _run_with_recorder(
        tmp_path,
        {},
        """
        import os
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    """,
    )
    started = [e for e in events if e["event"] == "process_started"]
    assert len({e["pid"] for e in started}) == 2 and any(e.get("forked") for e in started)


def test_flags_table_shows_asked_and_seen_values_unset_empty_and_skipped_apart():
    from modelverify_kernel.report import flags_table

    rep = {
        "run_a_without_multichip": {
            "status": "PASS",
            "env": {"set": {"VLLM_PLUGINS": ""}, "unset": ["FLAGCX_PATH"]},
            "engine_env": {"VLLM_PLUGINS": "", "FLAGCX_PATH": None, "VLLM_FL_PREFER": "flagos"},
        },
        "run_b_with_multichip": {
            "status": "SKIPPED",
            "env": {"set": {"USE_FLAGGEMS": "1"}, "unset": []},
            "engine_env": {},
        },
    }
    rows = {
        (r["run"][:5], r["variable"]): (r["asked"], r["engine saw"])
        for r in flags_table(rep).to_dict("records")
    }
    assert rows[("Run A", "VLLM_PLUGINS")] == ('""', '""')
    assert rows[("Run A", "FLAGCX_PATH")] == ("unset", "unset")
    assert rows[("Run A", "VLLM_FL_PREFER")] == ("(inherited)", "flagos")  # seen, never set by us
    assert rows[("Run B", "USE_FLAGGEMS")] == ("1", "(run not started)")
