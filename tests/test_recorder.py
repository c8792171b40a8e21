"""The stack evidence recorder (container_scripts/stack_evidence.py) in real Python processes.

FlagGems code is recognised by where its file lies, not by its module name: FlagGems 5.0.2
imports its Hopper ops (and vendor backends) as top-level modules (`hopper.ops.mm`) from folders
inside its package, and those ops ran unseen on every H100/H200. The flag_gems stand-in
(tests/fake_stack/flaggems_standin) loads an arch module the same way with FAKE_GEMS_ARCH=archx.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

pytestmark = pytest.mark.process
SCRIPTS = REPO / "container_scripts"
STANDIN = REPO / "tests" / "fake_stack" / "flaggems_standin"


def _record(tmp_path, body: str, env: dict[str, str]) -> list[dict]:
    """Run `body` in a fresh Python with the recorder on; the events it wrote."""
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "caller_pkg.py").write_text(
        "import flag_gems\ndef call(x):\n    return flag_gems.rsqrt(x)\n"
    )
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(SCRIPTS)!r}, {str(STANDIN)!r}, {str(tmp_path / "site")!r}]
        import stack_evidence
        stack_evidence.activate({str(tmp_path / "ev")!r})
    """) + textwrap.dedent(body)
    run_env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FAKE_")}
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, env={**run_env, **env})
    sys.path.insert(0, str(SCRIPTS))
    import stack_evidence

    return stack_evidence.collect(tmp_path / "ev")


BODY = """
    import torch, flag_gems, caller_pkg
    flag_gems.enable()
    torch.rsqrt(torch.ones(2))
    caller_pkg.call(torch.ones(2))
"""


def test_an_op_imported_as_a_top_level_module_from_inside_flaggems_is_recorded(tmp_path):
    events = _record(tmp_path, BODY, {"FAKE_GEMS_ARCH": "archx"})
    enabled = [e for e in events if e["event"] == "flaggems_enabled"]
    assert enabled and "rsqrt" in enabled[0]["registered"], enabled
    ran = {(e["op"], e["via"], e["fn"]) for e in events if e["event"] == "flaggems_op_ran"}
    assert ("rsqrt", "aten", "archx.ops.rsqrt.rsqrt") in ran, ran
    # called directly by a package outside FlagGems, through FlagGems' own namespace
    assert ("rsqrt", "direct", "archx.ops.rsqrt.rsqrt") in ran, ran


def test_the_generic_op_is_recorded_the_same_way_without_the_arch(tmp_path):
    events = _record(tmp_path, BODY, {})
    ran = {(e["op"], e["via"], e["fn"]) for e in events if e["event"] == "flaggems_op_ran"}
    assert ("rsqrt", "aten", "flag_gems.ops.rsqrt.rsqrt") in ran, ran


def test_an_op_named_like_flaggems_but_living_elsewhere_is_not_flaggems(tmp_path):
    """Another library registering an ATen override is not FlagGems work, even when its module
    is called flag_gems_extras or it registers next to FlagGems."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "flag_gems_extras.py").write_text(
        "import torch\n_lib = torch.library.Library('aten', 'IMPL')\n"
        "def neg(x):\n    return x.mul(-1)\n"
        "def enable():\n    _lib.impl('neg', neg, 'CPU')\n"
    )
    body = """
        import torch, flag_gems, flag_gems_extras
        flag_gems.enable()
        flag_gems_extras.enable()
        torch.neg(torch.ones(2))
    """
    events = _record(tmp_path, body, {})
    ran = {e["op"] for e in events if e["event"] == "flaggems_op_ran"}
    registered = {op for e in events if e["event"] == "flaggems_registered" for op in e["ops"]}
    assert "neg" not in ran | registered


OPLOG_BODY = """
    import logging, torch, flag_gems, caller_pkg
    flag_gems.enable()
    torch.rsqrt(torch.ones(2))
    torch.rsqrt(torch.ones(2))
    flag_gems.silu(torch.ones(2))  # called directly, outside torch.library
    print("propagate", logging.getLogger("flag_gems").propagate)
"""


def _logged(events: list[dict]) -> set[tuple[str, str]]:
    return {(e["op"], e["fn"]) for e in events if e.get("via") == "oplog"}


def test_flaggems_own_op_log_feeds_the_evidence_when_asked(tmp_path):
    """FlagGems logs `GEMS <OP>` from each op function as it runs (its `record=True` log): with
    MODELVERIFY_FLAGGEMS_OPLOG=1 each function that logged is an op that ran, once, whichever way
    it was reached — the arch module's (top-level `archx`) included."""
    events = _record(
        tmp_path, OPLOG_BODY, {"MODELVERIFY_FLAGGEMS_OPLOG": "1", "FAKE_GEMS_ARCH": "archx"}
    )
    logged = [e for e in events if e.get("via") == "oplog"]
    assert _logged(events) >= {
        ("rsqrt", "archx.ops.rsqrt.rsqrt"),
        ("silu", "flag_gems.ops.silu.silu"),
    }, logged
    assert len(logged) == len(_logged(events))  # once per function
    read = [e for e in events if e["event"] == "flaggems_oplog_read"]
    assert read and set(read[0]["loggers"]) >= {"flag_gems", "archx"}


def test_without_the_switch_the_op_log_is_left_alone(tmp_path):
    events = _record(tmp_path, OPLOG_BODY, {})
    assert not _logged(events)
    assert not [e for e in events if e["event"] == "flaggems_oplog_read"]


TAKEOVER_BODY = """
    import torch, flag_gems
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
    flag_gems.enable()

    class Layer:
        weight = torch.eye(4)

    UnquantizedEmbeddingMethod().embedding(Layer(), torch.tensor([1, 2]))
"""


def test_ops_that_take_over_vllm_layers_are_seen_by_the_op_log_and_their_registrations(tmp_path):
    """Issue 19 point 5: a FlagGems whose `enable()` replaces vLLM layers (no torch.library) leaves
    no `aten`/`direct` trace; `enable()`'s own registrations (`all_registered_ops()`) name what it
    took over, and FlagGems' op log shows the op running."""
    events = _record(
        tmp_path,
        TAKEOVER_BODY,
        {"FAKE_GEMS_TAKEOVER": "1", "MODELVERIFY_FLAGGEMS_OPLOG": "1"},
    )
    enabled = [e for e in events if e["event"] == "flaggems_enabled"]
    assert enabled and enabled[0]["registered"] == ["embedding", "silu"], enabled
    assert enabled[0]["registered_ops"] == ["embedding", "silu"]
    ran = [e for e in events if e["event"] == "flaggems_op_ran"]
    assert {e["via"] for e in ran} == {"oplog"}, ran
    assert ("embedding", "flag_gems.ops.embedding.embedding") in _logged(events)


def test_a_phase_evidence_folder_starts_empty(tmp_path):
    """Issue 19 point 2: what an earlier phase left in the evidence folder is not this phase's."""
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "evidence-1.jsonl").write_text('{"event": "flaggems_op_ran", "op": "x"}\n')
    events = _record(tmp_path, "pass\n", {})
    assert not [e for e in events if e.get("op") == "x"]


STEP_BODY = """
    import torch, flag_gems
    flag_gems.enable()
    torch.rsqrt(torch.ones(2))
"""


def _step(tmp_path, name: str, env: dict[str, str]):
    """One search step's process (ATen dispatch only: a direct call is no switch's to stop): the
    recorder's switch and op log on, its own evidence folder."""
    from modelverify_kernel import records

    folder = tmp_path / name
    folder.mkdir()
    events = _record(folder, STEP_BODY, {"MODELVERIFY_FLAGGEMS_OPLOG": "1", **env})
    return records.PhaseResult(run="run_b", phase="offline", result={"stack_evidence": events})


def test_a_hopper_style_op_is_searchable_and_the_switch_reaches_it(tmp_path):
    """Issue 19 point 5: the arch op imported as top-level `archx.ops` is among the kernels the
    search switches, under the name `enable(unused=…)` matches, and the recorder's switch keeps
    it from running (the step's own evidence shows it)."""
    from modelverify_kernel.analysis.experiments import searchable_ops, switched_off_that_ran

    run_b = _step(tmp_path, "run_b", {"FAKE_GEMS_ARCH": "archx"})
    ops, channel = searchable_ops(run_b)
    assert "rsqrt" in ops and channel == "ran", ops
    step = _step(
        tmp_path, "step", {"FAKE_GEMS_ARCH": "archx", "MODELVERIFY_FLAGGEMS_UNUSED": "rsqrt"}
    )
    assert switched_off_that_ran(step, ["rsqrt"]) == {}
    assert "rsqrt" not in searchable_ops(step)[0]


def test_a_switch_not_honoured_shows_in_the_step_own_evidence(tmp_path):
    """A FlagGems whose enable ignores `unused`: the step's evidence names the kernel switched off
    that ran anyway, and in which process (the search then stops: no_effect)."""
    from modelverify_kernel.analysis.experiments import switched_off_that_ran

    step = _step(
        tmp_path,
        "step",
        {"FAKE_GEMS_IGNORE_UNUSED": "1", "MODELVERIFY_FLAGGEMS_UNUSED": "rsqrt"},
    )
    leaked = switched_off_that_ran(step, ["rsqrt"])
    assert list(leaked.values()) == [["rsqrt"]] and next(iter(leaked)).startswith("pid "), leaked
