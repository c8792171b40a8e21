"""The component ablation (issue 19 point 6): Run B's faulty phase again with one FlagOS component
off at a time; the one whose removal alone makes the fault go is confirmed by experiment.

The runs here are stood in by a fake `run_phase` and hand-made evidence (the engine test in
tests/test_stack_modes.py runs the FlagGems case for real). The CPU engine here cannot run TP=2
(FACTS.md: its NUMA binding), and the plugin stand-in has no mode that breaks a vLLM internal:
those cases are stood in here.
"""

from __future__ import annotations

import pytest

from modelverify_kernel import records
from modelverify_kernel.analysis import ablation as plan_of
from modelverify_kernel.params import validate
from modelverify_kernel.vocabulary import RECORDER_SWITCH

KERNELS = ("embedding", "mean_dim", "rsqrt", "silu")
SIGNATURE = "RuntimeError: the fault searched"
PROBE = {  # a CPU machine with the FL plugin installed: vLLM's own CPU platform serves it
    "entry_points": {
        "vllm.platform_plugins": [],
        "vllm.general_plugins": [{"name": "fl", "value": "vllm_fl:register", "dist": "vllm-fl"}],
    },
    "devices": {"kind": "cpu", "count": 1, "names": ["cpu"], "cores": [0, 1]},
    "multichip_present": {"FlagGems": True, "plugin": True, "FlagCX": True},
    "packages": {"vllm": "0.26.0"},
    "modules": {},
}


def _ran(kernels=KERNELS) -> list[dict]:
    return [
        {"event": "flaggems_op_ran", "via": "aten", "fn": f"flag_gems.ops.{op}.{op}", "op": op}
        for op in kernels
    ]


def _verification(tmp_path, *, diagnosed="FlagGems", plugin=False, tp=1, **params):
    """Run A passed, Run B's offline phase failed (diagnosed as `diagnosed`) with FlagGems active
    and, with `plugin`, the FL plugin loaded: MULTICHIP_ERROR, judged from the records alone."""
    from modelverify_kernel.pipeline import Verification

    v = Verification(
        params=validate({"model_path": "/m", "output_dir": str(tmp_path), **params}), target=None
    )
    v._update(probe=PROBE, tp=tp)
    loaded = [{"event": "plugins_loaded", "group": "vllm.general_plugins", "names": ["fl"]}]
    events_b = _ran() + (loaded if plugin else [])
    for run in ("run_a", "run_b"):
        for phase in ("offline", "serve"):
            failed = run == "run_b" and phase == "offline"
            v.add_attempt(
                records.PhaseResult(
                    run=run,
                    phase=phase,
                    status="FAIL" if failed else "PASS",
                    error=SIGNATURE if failed else None,
                    error_type="RuntimeError" if failed else None,
                    diagnosis={"component": diagnosed, "signature": SIGNATURE} if failed else None,
                    result={"stack_evidence": events_b if run == "run_b" else []},
                )
            )
    assert v.verdict.conclusion == "MULTICHIP_ERROR"
    return v


def _stand_in(v, culprit: str, other: str | None = None, still_ran=()):
    """The ablation's phase runs simulated: the fault goes only when `culprit` is off; `other`
    (a component) fails differently when off; `still_ran` kernels run whatever the switch."""
    seen: list[tuple[dict, tuple]] = []

    def off(env, unset) -> set[str]:
        gone = set()
        if env.get(RECORDER_SWITCH):
            gone.add("FlagGems")
        if "FLAGCX_PATH" in unset:
            gone.add("FlagCX")
        if env.get("VLLM_PLUGINS") == "":
            gone.add("plugin")
        return gone

    def run_step(run, phase, *, env, unset, folder):
        seen.append((dict(env), tuple(unset)))
        components = off(env, unset)
        # FlagGems' kernels keep running unless FlagGems (or the plugin that enables it) is off
        events = (
            []
            if "plugin" in components
            else _ran(still_ran)
            if "FlagGems" in components
            else _ran()
        )
        if culprit in components:
            return records.PhaseResult(
                run=run,
                phase=phase,
                status="PASS",
                duration_s=2.0,
                result={"stack_evidence": events},
            )
        signature = "RuntimeError: illegal memory access" if other in components else SIGNATURE
        return records.PhaseResult(
            run=run,
            phase=phase,
            status="FAIL",
            error=signature,
            error_type="RuntimeError",
            diagnosis={"component": "vllm", "signature": signature},
            duration_s=2.0,
            result={"stack_evidence": events},
        )

    v.run_step = run_step
    return seen


@pytest.mark.unit
def test_a_flaggems_fault_is_confirmed_by_switching_flaggems_off(tmp_path):
    v = _verification(tmp_path)
    seen = _stand_in(v, "FlagGems")
    a = v.ablate()
    assert (a.status, a.component, a.hypothesis, a.disagrees) == (
        "confirmed",
        "FlagGems",
        "FlagGems",
        None,
    )
    assert len(a.runs) == 1 and a.runs[0].outcome == plan_of.GONE  # tried first: the log's choice
    assert seen[0][0][RECORDER_SWITCH] == ",".join(KERNELS)  # every kernel Run B ran, off
    assert v.verdict.multichip_component == "FlagGems"
    assert v.verdict.component_source == "experiment"
    assert "run_b_env" in a.reproduce and RECORDER_SWITCH in a.reproduce
    assert v.op_search_next()  # FlagGems is the one: the op search comes next
    assert (tmp_path / "experiments" / "ablation" / "ablation.json").is_file()


@pytest.mark.unit
def test_a_plugin_fault_seen_in_vllms_frames_is_the_plugin_and_the_log_disagrees(tmp_path):
    """The plugin broke a vLLM internal earlier: the log says vllm; removing FlagGems keeps the
    fault, removing the plugin (vLLM's own CPU platform serves) makes it go."""
    v = _verification(tmp_path, diagnosed="vllm", plugin=True)
    seen = _stand_in(v, "plugin")
    a = v.ablate()
    assert a.status == "confirmed" and a.component == "plugin"
    assert [r.component for r in a.runs] == ["FlagGems", "plugin"] and a.suspects == ("FlagGems",)
    # the plugin took FlagGems along (no FlagGems code ran); FlagGems off alone kept the fault
    assert [r.outcome for r in a.runs] == [plan_of.SAME, plan_of.NOT_ALONE]
    assert a.runs[1].took_along == ("FlagGems",)
    assert seen[1][0] == {"VLLM_PLUGINS": ""}  # Run A's own way of keeping the plugin out
    assert seen[0][0]["VLLM_FL_FLAGOS_BLACKLIST"] == seen[0][0][RECORDER_SWITCH]  # its lists too
    assert a.hypothesis == "vllm" and "disagree" in a.disagrees and "vllm" in a.disagrees
    assert (v.verdict.multichip_component, v.verdict.component_source) == ("plugin", "experiment")
    assert "disagree" in v.verdict.detail
    assert not v.op_search_next()  # not FlagGems: no op search inside it


@pytest.mark.unit
def test_the_plugin_is_not_confirmed_when_flaggems_left_with_it_unproven(tmp_path):
    """Switching the plugin off takes FlagGems with it. When FlagGems off alone proved nothing
    (its switch had no effect), a passing plugin-off run cannot tell the two apart: inconclusive,
    and the op search inside FlagGems still runs (seen on the CPU stand-in: a FlagGems kernel
    fault was 'confirmed' as the plugin)."""
    v = _verification(tmp_path, diagnosed="FlagGems", plugin=True)
    _stand_in(v, "plugin", still_ran=("gems_rms_forward",))  # FlagGems off never takes
    a = v.ablate()
    assert [r.outcome for r in a.runs][-1] == plan_of.NOT_ALONE
    assert plan_of.NO_EFFECT in [r.outcome for r in a.runs]
    assert a.status == "inconclusive" and a.component is None, a.reason
    assert v.verdict.component_source != "experiment" and v.op_search_next()


@pytest.mark.unit
def test_flagcx_at_tp2_is_confirmed_by_unsetting_flagcx_path(tmp_path):
    v = _verification(tmp_path, diagnosed="FlagCX", tp=2)
    seen = _stand_in(v, "FlagCX")
    a = v.ablate()
    assert (a.status, a.component, [r.component for r in a.runs]) == (
        "confirmed",
        "FlagCX",
        ["FlagCX"],
    )
    assert seen[0] == ({}, ("FLAGCX_PATH",))
    assert "run_b_unset" in a.reproduce and "FLAGCX_PATH" in a.reproduce


@pytest.mark.unit
def test_a_flaggems_kernel_that_breaks_vllms_next_op_is_flaggems(tmp_path):
    """A wrong FlagGems output makes vLLM's next op fail: the log blames vllm, the experiment
    FlagGems — and then the op search runs."""
    v = _verification(tmp_path, diagnosed="vllm")
    _stand_in(v, "FlagGems")
    a = v.ablate()
    assert (a.status, a.component) == ("confirmed", "FlagGems") and a.disagrees
    assert v.verdict.multichip_component == "FlagGems" and v.op_search_next()


@pytest.mark.unit
def test_another_failure_is_inconclusive_and_the_log_stays_the_hypothesis(tmp_path):
    v = _verification(tmp_path)
    _stand_in(v, "nothing", other="FlagGems")
    a = v.ablate()
    assert a.status == "inconclusive" and a.runs[0].outcome == plan_of.OTHER
    assert "illegal memory access" in a.reason
    assert (v.verdict.multichip_component, v.verdict.component_source) == ("FlagGems", "log")


@pytest.mark.unit
def test_a_switch_whose_kernels_still_ran_had_no_effect(tmp_path):
    v = _verification(tmp_path)
    _stand_in(v, "FlagGems", still_ran=("embedding",))
    a = v.ablate()
    assert a.runs[0].outcome == plan_of.NO_EFFECT and "no effect" in a.runs[0].why
    assert a.status == "inconclusive" and a.component is None


@pytest.mark.unit
def test_at_tp1_flagcx_is_not_tried_and_the_record_says_why(tmp_path):
    v = _verification(tmp_path)
    _stand_in(v, "nothing")
    a = v.ablate()
    assert "FlagCX" not in a.order and "TP=1" in a.not_tried["FlagCX"]
    assert "plugin" in a.not_tried  # it did not load in Run B
    assert a.status == "not_confirmed" and v.verdict.component_source == "log"


@pytest.mark.unit
def test_the_ablation_is_saved_and_read_back_after_a_kill(tmp_path):
    from modelverify_kernel.pipeline import Verification

    v = _verification(tmp_path, diagnosed="vllm", plugin=True)
    _stand_in(v, "plugin")
    a = v.ablate()
    v.save_state()
    back = Verification.resume(tmp_path)
    assert back.ablation == a and back.verdict.multichip_component == "plugin"


@pytest.mark.unit
def test_no_ablation_when_not_asked_or_when_run_b_passed(tmp_path):
    v = _verification(tmp_path, ablate=False)
    assert v.ablate().status == "off"
    from modelverify_kernel.analysis.verdict import verdict

    assert "BOTH_PASS" in plan_of.why_not(True, verdict("BOTH_PASS", "ok"), {})


@pytest.mark.unit
def test_the_order_follows_the_log_then_the_active_components():
    from modelverify_kernel.analysis.gate import ComponentActivity

    active = {"plugin": ComponentActivity("plugin", "active")}
    assert plan_of.order("FlagCX", active, ["FlagGems", "FlagCX", "plugin"]) == [
        "FlagCX",
        "plugin",
        "FlagGems",
    ]
    assert plan_of.order(None, {}, ["plugin", "FlagGems"]) == ["FlagGems", "plugin"]


@pytest.mark.unit
def test_the_report_card_reads_top_down_with_the_flags_to_reproduce(tmp_path, monkeypatch):
    """report.json keeps the ablation (schema-valid) and report.html's card goes hypothesis →
    experiments → confirmed component → op search → the -y flags of the good configuration."""
    from modelverify_kernel import report

    monkeypatch.setattr(report, "tool_info", lambda: {"name": "model-verify", "version": "t"})
    v = _verification(tmp_path, diagnosed="vllm", plugin=True)
    _stand_in(v, "plugin")
    v.ablate()
    data = v.report()  # validated against the schema on the way out
    assert data["ablation"]["component"] == "plugin"
    assert data["diff_analysis"]["component_source"] == "experiment"
    assert data["diff_analysis"]["hypothesis"] == "vllm"
    assert data["reproduce"]["good_configuration"] == '-y \'run_b_env: {"VLLM_PLUGINS": ""}\''
    html = report.render_html(data)
    card = html[html.index('id="experiments-card"') :]
    marks = [
        "Hypothesis from the log",
        "Experiments run",
        "Confirmed component and ops",
        "confirming runs",
        "Reproduce the good configuration",
    ]
    assert [card.index(m) for m in marks] == sorted(card.index(m) for m in marks)
    assert "confirmed by experiment" in card and "The log and the experiment disagree" in card
    assert "MODELVERIFY_FLAGGEMS_UNUSED=&lt;4 kernels&gt;" not in card  # 4 kernels: shown whole
    assert "run_b_env: {&#34;VLLM_PLUGINS&#34;: &#34;&#34;}" in card or "VLLM_PLUGINS" in card
    assert "TP=1" in card  # FlagCX not tried, and why


@pytest.mark.unit
def test_kernels_that_run_only_once_the_others_are_off_join_the_switch(tmp_path):
    """Run B never ran `addmm` (the plugin's RMSNorm replaced it); with FlagGems' other
    kernels off it runs: the run had no effect, and the next one names it too and proves FlagGems."""
    v = _verification(tmp_path)
    seen = []

    def run_step(run, phase, *, env, unset, folder):
        off = env.get(RECORDER_SWITCH, "").split(",")
        seen.append(off)
        ran = [] if "addmm" in off else _ran(["addmm"])
        status = "PASS" if "addmm" in off else "FAIL"
        return records.PhaseResult(
            run=run,
            phase=phase,
            status=status,
            error=None if status == "PASS" else SIGNATURE,
            diagnosis=None if status == "PASS" else {"signature": SIGNATURE},
            result={"stack_evidence": ran},
        )

    v.run_step = run_step
    a = v.ablate()
    assert [r.outcome for r in a.runs] == [plan_of.NO_EFFECT, plan_of.GONE], a.runs
    assert "addmm" in seen[1] and a.component == "FlagGems" and a.status == "confirmed"


@pytest.mark.unit
def test_flaggems_off_names_the_functions_enable_skips_not_the_op_keys():
    """`enable(unused=…)` matches function names (`index`), `all_registered_ops()` gives them; the
    op keys torch.library saw (`index.Tensor`) switch nothing. On the H100 a FlagGems-off run named
    the keys of the 433 ops Run B's crash had not reached, `index` ran: one run wasted."""
    enabled = {
        "event": "flaggems_enabled",
        "registered": ["embedding", "index.Tensor", "mean.dim"],
        "registered_ops": ["embedding", "index", "mean_dim"],
    }
    run_b = {
        "offline": records.PhaseResult(
            run="run_b", phase="offline", result={"stack_evidence": [enabled, *_ran(["embedding"])]}
        )
    }
    assert plan_of.flaggems_kernels(run_b) == ["embedding", "index", "mean_dim"]


@pytest.mark.unit
def test_evidence_written_before_the_run_started_is_not_the_runs():
    """A run handed Run B's evidence folder: Run B's kernels (stamped before it) did not run in it."""
    import datetime

    start = datetime.datetime(2026, 12, 7, 15, 0, tzinfo=datetime.UTC)
    old = {**_ran(["embedding"])[0], "time": start.timestamp() - 60}
    new = {**_ran(["silu"])[0], "time": start.timestamp() + 5}
    pr = records.PhaseResult(
        run="run_b",
        phase="offline",
        started_at=start.isoformat(timespec="seconds"),
        result={"stack_evidence": [old, new]},
    )
    gems = plan_of.Switch("FlagGems", {RECORDER_SWITCH: "embedding,silu"})
    assert plan_of.still_ran(gems, pr) == ["silu"]


@pytest.mark.unit
def test_a_plugin_op_that_ran_without_flaggems_is_not_flaggems_running():
    plugin_op = {"event": "plugin_op_ran", "op": "RMSNorm", "vllm_op": "rms_norm", "cls": "x"}
    pr = records.PhaseResult(run="run_b", phase="offline", result={"stack_evidence": [plugin_op]})
    assert plan_of.still_ran(plan_of.Switch("FlagGems", {RECORDER_SWITCH: "silu"}), pr) == []


@pytest.mark.unit
def test_the_notebook_cells_print_the_runs_and_skip_the_op_search_for_another_component(
    tmp_path, capsys
):
    """The notebook's ablation cell and the culprit-op search cell after it, run on a hand-made
    verification (the engine tests run them for real)."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "verify.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    ablation_cell = next(i for i, c in enumerate(code) if "v.ablate()" in c)
    assert "v.bisect()" in code[ablation_cell + 1]  # the ablation comes first
    v = _verification(tmp_path, diagnosed="vllm", plugin=True)
    _stand_in(v, "plugin")
    scope = {"v": v}
    exec(code[ablation_cell], scope)
    exec(code[ablation_cell + 1], scope)
    out = capsys.readouterr().out
    assert "run 2: Run B offline with plugin off -> not_alone" in out and "disagree" in out
    assert "No culprit-op search: the ablation proved plugin" in out and v.bisection is None


@pytest.mark.unit
def test_flaggems_still_called_by_the_plugins_op_widens_the_plugins_list_by_its_name():
    """The plugin switches its own ops by vLLM's name (rms_norm), not FlagGems' function name:
    FlagGems code a plugin op called must widen the switch by that name too."""
    switch = plan_of.Switch("FlagGems", {RECORDER_SWITCH: "embedding"}, (), "how")
    pr = records.PhaseResult(
        run="run_b",
        phase="offline",
        result={
            "stack_evidence": [
                {"event": "plugin_op_ran", "vllm_op": "rms_norm", "cls": "fake_fl.ops.RMSNorm"},
                {
                    "event": "flaggems_op_ran",
                    "via": "direct",
                    "op": "gems_rms_forward",
                    "caller": "fake_fl.ops",
                },
            ]
        },
    )
    assert plan_of.still_ran(switch, pr) == ["gems_rms_forward", "rms_norm"]
