"""The TEST-ONLY stand-ins in tests/fake_stack/ themselves.

What they stand in for (no real part can run here): the real FlagGems needs a GPU (its import
fails without one) and the real vllm-plugin-FL targets GPU vLLM builds. So:
- tests/fake_stack/flaggems_standin/flag_gems: the flag_gems 5.x API on CPU kernels written in
  torch, registered through torch.library exactly as the real one registers its Triton kernels;
- tests/fake_stack/site/fake_vllm_fl: the plugin, as a vLLM platform plugin (CPU platform + own
  worker) and general plugin, with the real plugin's environment semantics;
- tests/fake_stack/liar/sitecustomize.py: log lines of an active stack, with no stack at all.
Everything else here is real: torch's dispatcher, vLLM's plugin loading and platform choice.
The unit tests import the flag_gems stand-in into this process on a private torch.library
Library that is destroyed afterwards; anything that needs vLLM runs in a subprocess (so no
plugin or platform leaks into other tests). Engine runs are marked `slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO

FAKE = REPO / "tests" / "fake_stack"
STANDIN = FAKE / "flaggems_standin"
SITE = FAKE / "site"
LIAR = FAKE / "liar"
KNOBS = ("FAKE_GEMS_FAULT", "FAKE_GEMS_VARIANT")
PLUGIN_ENV = (
    "FAKE_FL_MODE",
    "USE_FLAGGEMS",
    "VLLM_FL_PREFER_ENABLED",
    "VLLM_FL_PREFER",
    "VLLM_FL_FLAGOS_WHITELIST",
    "VLLM_FL_FLAGOS_BLACKLIST",
    "FLAGGEMS_ENABLE_OPLIST_PATH",
)


def _drop_modules(prefix: str) -> dict:
    gone = {k: v for k, v in sys.modules.items() if k == prefix or k.startswith(prefix + ".")}
    for k in gone:
        del sys.modules[k]
    return gone


@pytest.fixture
def fg(monkeypatch):
    """The flag_gems stand-in, freshly imported (any other flag_gems module is put back after)."""
    saved = _drop_modules("flag_gems")
    monkeypatch.syspath_prepend(str(STANDIN))
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    import flag_gems

    assert Path(flag_gems.__file__).is_relative_to(STANDIN)
    yield flag_gems
    flag_gems.teardown_flaggems_logging()
    flag_gems._standin.ACTIVE.clear()
    flag_gems.current_work_registrar = None
    _drop_modules("flag_gems")
    sys.modules.update(saved)


@pytest.fixture
def lib():
    """A private aten IMPL library: whatever the stand-in registers in it is undone afterwards."""
    library = torch.library.Library("aten", "IMPL")
    yield library
    library._destroy()


@pytest.fixture
def plugin_utils(monkeypatch):
    saved = _drop_modules("fake_vllm_fl")
    monkeypatch.syspath_prepend(str(SITE))
    for name in PLUGIN_ENV:
        monkeypatch.delenv(name, raising=False)
    from fake_vllm_fl import utils

    yield utils
    _drop_modules("fake_vllm_fl")
    sys.modules.update(saved)


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 64, generator=g)
    return {
        "x": x,
        "pos": x.abs() + 1e-3,
        "weight": torch.randn(32, 64, generator=g),
        "idx": torch.tensor([[1, 3, 31], [0, 7, 7]]),
        "w": torch.randn(64, generator=g),
        "res": torch.randn(6, 64, generator=g),
    }


def _run_ops(t):
    return {
        "embedding": F.embedding(t["idx"], t["weight"]),
        "silu": F.silu(t["x"]),
        "rsqrt": torch.rsqrt(t["pos"]),
        "mean_dim": t["x"].mean(dim=-1, keepdim=True),
    }


def _vllm_native_rms(x, residual, weight, eps):
    """vLLM 0.32's native RMSNorm (vllm/ir/ops/layernorm.py), copied."""
    orig = x.dtype
    x = x.to(torch.float32)
    if residual is not None:
        x = x + residual.to(torch.float32)
        residual = x.to(orig)
    variance = x.pow(2).mean(dim=-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    x = (x.to(weight.dtype) * weight).to(orig)
    return x if residual is None else (x, residual)


# --- flag_gems stand-in: API, registration, equality with ATen ------------------------------


def test_all_registered_ops_is_undefined_before_enable(fg):
    with pytest.raises(AttributeError):
        fg.all_registered_ops()


def test_enable_registers_the_ops_module_functions_through_torch_library(fg, lib, monkeypatch):
    fg.enable(lib=lib)
    assert fg.all_registered_ops() == ["embedding", "mean_dim", "rsqrt", "silu"]
    assert fg.all_registered_keys() == ["embedding", "mean.dim", "rsqrt", "silu"]
    for _key, fn in fg.current_work_registrar.config:
        assert (
            fn.__module__.startswith("flag_gems.ops.")
            and getattr(sys.modules[fn.__module__], fn.__name__) is fn
        )
    # the dispatcher really routes aten::embedding on CPU to flag_gems/ops/embedding.py
    monkeypatch.setenv("FAKE_GEMS_FAULT", "embedding=raise")
    t = _inputs()
    with pytest.raises(RuntimeError, match="flag_gems embedding kernel failed") as err:
        F.embedding(t["idx"], t["weight"])
    last = traceback.extract_tb(err.value.__traceback__)[-1]
    assert Path(last.filename).as_posix().endswith("flag_gems/ops/embedding.py")


def test_overrides_give_aten_results(fg, lib, tmp_path):
    t = _inputs()
    ref = _run_ops(t)
    fg.enable(lib=lib, record=True, path=tmp_path / "oplist.log")
    got = _run_ops(t)
    for op in ("embedding", "rsqrt", "mean_dim"):
        assert torch.equal(got[op], ref[op]), op
    torch.testing.assert_close(
        got["silu"], ref["silu"], rtol=1e-6, atol=1e-7
    )  # ATen's vectorized exp
    assert len((tmp_path / "oplist.log").read_text().splitlines()) == 4  # they did run


def test_gems_rms_forward_equals_vllm_native_rmsnorm(fg):
    t = _inputs()
    assert torch.equal(
        fg.modules.normalization.gems_rms_forward(t["x"], None, t["w"], 1e-6),
        _vllm_native_rms(t["x"], None, t["w"], 1e-6),
    )
    out, res = fg.modules.normalization.gems_rms_forward(t["x"], t["res"], t["w"], 1e-5)
    ref_out, ref_res = _vllm_native_rms(t["x"], t["res"], t["w"], 1e-5)
    assert torch.equal(out, ref_out) and torch.equal(res, ref_res)


def test_unused_skips_ops(fg, lib, monkeypatch):
    fg.enable(lib=lib, unused=["silu", "embedding"])
    assert fg.all_registered_ops() == ["mean_dim", "rsqrt"]
    monkeypatch.setenv("FAKE_GEMS_FAULT", "silu=raise,embedding=raise,rsqrt=raise")
    t = _inputs()
    F.silu(t["x"]), F.embedding(t["idx"], t["weight"])  # ATen's own: no fault
    with pytest.raises(RuntimeError, match="rsqrt kernel failed"):
        torch.rsqrt(t["pos"])


def test_only_enable_takes_function_names_and_refuses_empty(fg, lib):
    with pytest.warns(UserWarning, match="only_enable failed"):
        fg.only_enable(lib=lib, include=[])
    assert fg.current_work_registrar is None
    fg.only_enable(lib=lib, include=["rsqrt", "mean_dim"])
    assert sorted(fg.all_registered_ops()) == ["mean_dim", "rsqrt"]
    assert fg._standin.ACTIVE == {"mean_dim", "rsqrt"}


def test_use_gems_undoes_its_registration(fg, monkeypatch):
    t = _inputs()
    monkeypatch.setenv("FAKE_GEMS_FAULT", "silu=raise")
    with fg.use_gems(include=["silu"]):
        with pytest.raises(RuntimeError):
            F.silu(t["x"])
    F.silu(t["x"])  # ATen's again


# --- op log --------------------------------------------------------------------------------


def test_op_log_lines_and_once(fg, lib, tmp_path):
    path = tmp_path / "sub" / "oplist.log"
    fg.enable(lib=lib, record=True, once=True, path=path)
    t = _inputs()
    for _ in range(3):
        _run_ops(t)
        fg.gems_rms_forward(t["x"], None, t["w"], 1e-6)
    assert path.read_text().splitlines() == [
        "[DEBUG] flag_gems.ops.embedding.embedding: GEMS EMBEDDING FORWARD",
        "[DEBUG] flag_gems.ops.silu.silu: GEMS SILU FORWARD",
        "[DEBUG] flag_gems.ops.rsqrt.rsqrt: GEMS RSQRT",
        "[DEBUG] flag_gems.ops.mean.mean_dim: GEMS MEAN_DIM (wrapper)",
        "[DEBUG] flag_gems.modules.normalization.gems_rms_forward: GEMS CUSTOM RMS_NORM",
    ]


def test_op_log_every_call_without_once_and_none_without_record(fg, lib, tmp_path):
    t = _inputs()
    fg.enable(lib=lib, record=False, path=tmp_path / "never.log")
    _run_ops(t)
    assert not (tmp_path / "never.log").exists()
    fg.setup_flaggems_logging(path=tmp_path / "all.log", record=True, once=False)
    for _ in range(3):
        F.silu(t["x"])
    assert (tmp_path / "all.log").read_text().count("GEMS SILU FORWARD") == 3


# --- fault and variant knobs --------------------------------------------------------------


def test_scale_fault_multiplies_the_output(fg, lib, monkeypatch):
    t = _inputs()
    ref = _run_ops(t)
    ref_rms = fg.gems_rms_forward(t["x"], None, t["w"], 1e-6)
    fg.enable(lib=lib)
    monkeypatch.setenv("FAKE_GEMS_FAULT", "embedding=scale:1.05, rms_norm=scale:2")
    got = _run_ops(t)
    assert torch.equal(got["embedding"], ref["embedding"] * 1.05)
    assert torch.equal(got["rsqrt"], ref["rsqrt"])
    assert torch.equal(fg.gems_rms_forward(t["x"], None, t["w"], 1e-6), ref_rms * 2)
    out, res = fg.gems_rms_forward(t["x"], t["res"], t["w"], 1e-6)
    assert torch.equal(res, (t["x"] + t["res"]))  # the residual is not scaled


def test_raise_fault_from_each_kernel_file(fg, lib, monkeypatch):
    fg.enable(lib=lib)
    t = _inputs()
    files = {
        "embedding": "flag_gems/ops/embedding.py",
        "silu": "flag_gems/ops/silu.py",
        "rsqrt": "flag_gems/ops/rsqrt.py",
        "mean_dim": "flag_gems/ops/mean.py",
        "rms_norm": "flag_gems/modules/normalization.py",
    }
    for op, file in files.items():
        monkeypatch.setenv("FAKE_GEMS_FAULT", f"{op}=raise")
        with pytest.raises(RuntimeError) as err:
            _run_ops(t) if op != "rms_norm" else fg.gems_rms_forward(t["x"], None, t["w"], 1e-6)
        assert (
            Path(traceback.extract_tb(err.value.__traceback__)[-1].filename)
            .as_posix()
            .endswith(file)
        )
    monkeypatch.setenv("FAKE_GEMS_FAULT", "mean.dim=raise")  # the aten name is accepted too
    with pytest.raises(RuntimeError, match="mean_dim"):
        t["x"].mean(dim=-1)


def test_pair_fault_raises_only_when_both_ops_are_enabled(fg, lib, monkeypatch):
    t = _inputs()
    monkeypatch.setenv("FAKE_GEMS_FAULT", "embedding+silu=raise,rsqrt+rms_norm=raise")
    fg.only_enable(lib=lib, include=["embedding", "rsqrt"])
    F.embedding(t["idx"], t["weight"])  # silu not enabled: fine
    torch.rsqrt(t["pos"])  # rms_norm not dispatched yet: fine
    with pytest.raises(RuntimeError, match=r"rsqrt\+rms_norm=raise \(both enabled\)"):
        fg.gems_rms_forward(t["x"], None, t["w"], 1e-6)  # now both are in use
    with pytest.raises(RuntimeError, match="rsqrt kernel failed"):
        torch.rsqrt(t["pos"])


def test_pair_fault_with_both_enabled(fg, lib, monkeypatch):
    t = _inputs()
    monkeypatch.setenv("FAKE_GEMS_FAULT", "embedding+silu=raise")
    fg.enable(lib=lib)
    with pytest.raises(RuntimeError, match="embedding kernel failed"):
        F.embedding(t["idx"], t["weight"])
    with pytest.raises(RuntimeError, match="silu kernel failed"):
        F.silu(t["x"])


def test_variants_keep_results_correct(fg, lib, monkeypatch):
    t = _inputs()
    big = torch.randn(4, 4099, generator=torch.Generator().manual_seed(1))
    ref = dict(
        _run_ops(t),
        big=big.mean(dim=-1),
        rms=fg.gems_rms_forward(big, None, torch.ones(4099), 1e-6),
    )
    fg.enable(lib=lib)
    for variant, tol in (("reorder", 1e-5), ("float64", 1e-5), ("bf16", 2e-2)):
        monkeypatch.setenv(
            "FAKE_GEMS_VARIANT", ",".join(f"{op}={variant}" for op in fg._standin.OPS)
        )
        got = dict(
            _run_ops(t),
            big=big.mean(dim=-1),
            rms=fg.gems_rms_forward(big, None, torch.ones(4099), 1e-6),
        )
        for name in ref:
            assert got[name].dtype == ref[name].dtype
            torch.testing.assert_close(
                got[name], ref[name], rtol=tol, atol=tol, msg=f"{variant} {name}"
            )
        if variant == "bf16":
            assert not torch.equal(got["rms"], ref["rms"]) and not torch.equal(
                got["embedding"], ref["embedding"]
            )
        if variant == "reorder":  # another summation order: same value, other rounding
            assert not torch.equal(got["big"], ref["big"]) or not torch.equal(
                got["rms"], ref["rms"]
            )
            assert torch.equal(got["embedding"], ref["embedding"])  # nothing to reorder


# --- plugin environment semantics -----------------------------------------------------------


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, True),  # USE_FLAGGEMS defaults to true
        ({"USE_FLAGGEMS": "1"}, True),
        ({"USE_FLAGGEMS": "0"}, False),
        ({"USE_FLAGGEMS": "false"}, False),
        ({"USE_FLAGGEMS": "1", "VLLM_FL_PREFER_ENABLED": "false"}, False),
        ({"USE_FLAGGEMS": "1", "VLLM_FL_PREFER_ENABLED": "0"}, False),
        ({"VLLM_FL_PREFER_ENABLED": "true"}, True),
        ({"USE_FLAGGEMS": "1", "VLLM_FL_PREFER": "vendor"}, False),
        ({"USE_FLAGGEMS": "1", "VLLM_FL_PREFER": "flagos"}, True),
        ({"USE_FLAGGEMS": "0", "VLLM_FL_PREFER": "flagos"}, False),
    ],
)
def test_use_flaggems(plugin_utils, monkeypatch, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert plugin_utils.use_flaggems() is expected


def test_plugin_dispatch_rule(plugin_utils, monkeypatch):
    d = plugin_utils.dispatch_to_flagos
    assert plugin_utils.mode() == "flaggems" and not d("rms_norm")  # legacy default mode
    monkeypatch.setenv("FAKE_FL_MODE", "real")
    assert d("rms_norm")
    monkeypatch.setenv("VLLM_FL_FLAGOS_BLACKLIST", "silu, rms_norm")
    assert plugin_utils.blacklist() == ["silu", "rms_norm"] and not d("rms_norm")
    monkeypatch.setenv("VLLM_FL_FLAGOS_WHITELIST", "rms_norm")  # a whitelist wins
    assert d("rms_norm") and not d("embedding")
    monkeypatch.setenv("USE_FLAGGEMS", "0")
    assert not d("rms_norm")
    monkeypatch.setenv("FAKE_FL_MODE", "default-on")  # 2025-12 plugin: always
    assert d("rms_norm")
    monkeypatch.setenv("FAKE_FL_MODE", "inert")
    assert not d("rms_norm")


# --- vLLM's own plugin loading and platform choice (subprocess: imports vLLM, ~10 s) ---------

_PROBE = textwrap.dedent("""
    import json, os, sys
    from vllm import platforms
    from vllm.platforms.cpu import CpuPlatform
    from vllm.v1.worker.cpu_worker import CPUWorker
    results = {}
    for label, env in json.loads(sys.argv[1]).items():
        for k in ("VLLM_PLUGINS", "FAKE_FL_MODE", "VLLM_TARGET_DEVICE"):
            os.environ.pop(k, None)
        os.environ.update(env)
        results[label] = platforms.resolve_current_platform_cls_qualname()
    from fake_vllm_fl.platform import PlatformFL
    from fake_vllm_fl.worker import WorkerFL
    from fake_vllm_fl.ops.custom_ops import register_oot_ops
    from vllm.model_executor.custom_op import op_registry_oot
    first, again = register_oot_ops(), register_oot_ops()
    results["classes"] = [issubclass(PlatformFL, CpuPlatform), issubclass(WorkerFL, CPUWorker),
                          op_registry_oot["RMSNorm"].__module__, first, again]
    print("RESULT " + json.dumps(results))
""")


@pytest.mark.process
def test_vllm_resolves_the_platform_plugin_as_vllm_does():
    cases = {
        "fl_real": {"VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "real"},
        "unset_real": {"FAKE_FL_MODE": "real"},  # unset: every installed plugin loads
        "none_real": {"VLLM_PLUGINS": "", "FAKE_FL_MODE": "real"},  # "": none loads
        "other_real": {"VLLM_PLUGINS": "other", "FAKE_FL_MODE": "inert"},
        "fl_default_mode": {"VLLM_PLUGINS": "fl"},  # legacy general-plugin modes: no platform
        "fl_neutral": {"VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "neutral"},
        "fl_defaulton": {"VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "default-on"},
        "target_cpu": {"VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "real", "VLLM_TARGET_DEVICE": "cpu"},
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), str(STANDIN)]))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line[len("RESULT ") :])
    fl, cpu = "fake_vllm_fl.platform.PlatformFL", "vllm.platforms.cpu.CpuPlatform"
    assert {k: got[k] for k in cases} == {
        "fl_real": fl,
        "unset_real": fl,
        "none_real": cpu,
        "other_real": cpu,
        "fl_default_mode": cpu,
        "fl_neutral": cpu,
        "fl_defaulton": fl,
        "target_cpu": cpu,  # VLLM_TARGET_DEVICE=cpu skips every platform plugin in vLLM 0.32
    }
    assert got["classes"] == [True, True, "fake_vllm_fl.ops.layernorm", True, False]
    # vLLM itself logs the activation (the stand-in configures vLLM's logging first)
    assert "Platform plugin fl is activated" in proc.stdout + proc.stderr


@pytest.mark.process
def test_liar_prints_an_active_stack_and_is_nothing_else():
    env = dict(os.environ, PYTHONPATH=str(LIAR))
    code = "import importlib.util as u, sys; print('MODS', u.find_spec('flag_gems') is None, 'flag_gems' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("INFO ") and lines[0].endswith("] Platform plugin fl is activated")
    assert lines[1].endswith("] FlagGems enabled: 433 ops")
    assert lines[2] == "MODS True False"


# --- a real engine: the offline phase script on the demo model --------------------------------


def _offline(tmp_path, demo_model, **env_extra) -> tuple[int, dict, str]:
    out = tmp_path / "out.json"
    env = dict(
        os.environ,
        **CPU_ENV,
        PYTHONPATH=os.pathsep.join([str(SITE), str(STANDIN)]),
        VLLM_PLUGINS="fl",
        FLAGGEMS_ENABLE_OPLIST_PATH=str(tmp_path / "oplist.log"),
        **env_extra,
    )
    for name in KNOBS:
        if name not in env_extra:
            env.pop(name, None)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "container_scripts" / "run_offline_inference.py"),
            "--model",
            str(demo_model),
            "--output",
            str(out),
            "--max-model-len",
            "512",
            "--extra-args",
            json.dumps(DEMO_ENGINE_ARGS),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, json.loads(out.read_text()), proc.stdout + proc.stderr


@pytest.mark.engine
def test_engine_embedding_fault_fails_through_the_kernel_file(tmp_path, demo_model):
    rc, result, log = _offline(
        tmp_path,
        demo_model,
        USE_FLAGGEMS="1",
        FAKE_FL_MODE="real",
        FAKE_GEMS_FAULT="embedding=raise",
    )
    assert rc == 1 and result["status"] == "FAIL"
    assert "flag_gems/ops/embedding.py" in log and "flag_gems embedding kernel failed" in log


@pytest.mark.engine
@pytest.mark.parametrize("mode, enabled", [("real", False)])
def test_engine_use_flaggems_0(tmp_path, demo_model, mode, enabled):
    """USE_FLAGGEMS=0: the 2026 plugin enables nothing. (The 2025-12 one enabling anyway, and
    `real` enabling its kernels with USE_FLAGGEMS=1, are shown by tests/test_stack_modes.py.)"""
    rc, result, log = _offline(tmp_path, demo_model, USE_FLAGGEMS="0", FAKE_FL_MODE=mode)
    assert (rc, result["status"]) == (0, "PASS"), log[-3000:]
    assert "Platform plugin fl is activated" in log  # the platform loads either way
    assert ("WorkerFL: FlagGems enabled: 4 ops" in log) is enabled
    assert not (tmp_path / "oplist.log").exists()  # default-on records nothing (record=False)
