"""The culprit-op search (issue 13): adaptive group testing over the FlagGems kernels that ran."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from modelverify_kernel import bisect, records
from modelverify_kernel.params import validate

OPS = ["embedding", "mean_dim", "rsqrt", "silu", "gems_rms_forward", "mm", "addmm", "softmax"]


def _oracle(culprits: set[str], calls: list[frozenset[str]]):
    """The fault shows when every culprit is on (two culprits: only together)."""

    def fails(on: frozenset[str]) -> bool:
        calls.append(on)
        return culprits <= on

    return fails


@pytest.mark.parametrize("n", [2, 4, 8])
def test_a_single_culprit_is_found_in_about_log2_n_steps(n):
    """With the step that switches every kernel off (search() runs it first): about ceil(log2 n) + 2
    on average over the culprit's position, never more than 2 ceil(log2 n) + 1."""
    ops = OPS[:n]
    steps = []
    for culprit in ops:
        calls: list[frozenset[str]] = []
        assert bisect.narrow(ops, _oracle({culprit}, calls)) == [culprit]
        assert len(set(calls)) == len(calls)  # no subset run twice
        steps.append(len(calls) + 1)
    assert max(steps) <= 2 * math.ceil(math.log2(n)) + 1, steps
    assert sum(steps) / n <= math.ceil(math.log2(n)) + 2, steps


def test_two_kernels_that_fail_only_together_are_both_found():
    """Every pair among 8 kernels, within twice the single-culprit bound (the engine test's budget
    of bisect_max_steps must cover a pair among the 5 kernels the demo model runs)."""
    import itertools

    for pair in map(set, itertools.combinations(OPS, 2)):
        calls: list[frozenset[str]] = []
        assert set(bisect.narrow(OPS, _oracle(pair, calls))) == pair
        assert len(set(calls)) == len(calls)
        assert len(calls) <= 2 * (math.ceil(math.log2(len(OPS))) + 1), (pair, calls)


def test_kernels_known_to_pass_on_alone_cost_no_step():
    """The all-off step ran 8 kernels Run B's crash had hidden and passed: they join the search in
    front (`passing`), and the search over the 20 others takes ceil(log2 20) + 1 steps, no prefix
    of the 8 run again (on the H100, 28 kernels cost a re-run of all-off and 6 more steps)."""
    hidden, seen = [f"h{i}" for i in range(8)], [f"k{i}" for i in range(20)]
    for culprit in seen:
        calls: list[frozenset[str]] = []
        assert bisect.narrow([*hidden, *seen], _oracle({culprit}, calls), 8) == [culprit]
        assert all(not on <= set(hidden) for on in calls), calls
        assert len(calls) <= math.ceil(math.log2(20)) + 1, (culprit, calls)
    # a pair of a hidden kernel and a seen one: both found, the hidden one with no step of its own
    calls = []
    assert set(bisect.narrow(["h0", "k0", "k1"], _oracle({"h0", "k1"}, calls), 1)) == {"h0", "k1"}
    assert frozenset({"h0"}) not in calls


def test_three_culprits_are_all_found_and_none_is_extra():
    culprits = {"mean_dim", "mm", "softmax"}
    calls: list[frozenset[str]] = []
    assert set(bisect.narrow(OPS, _oracle(culprits, calls))) == culprits


def test_a_flaky_oracle_never_yields_an_empty_culprit_set():
    assert bisect.narrow(["a"], lambda on: True) == ["a"]
    assert bisect.narrow(["a", "b"], lambda on: False) == [
        "a",
        "b",
    ]  # neither half alone: both stay


def test_an_interval_whose_every_split_is_inconclusive_tries_each_suspect_alone():
    """Issue 19 point 3: a split ending in another failure proves nothing: another split, then
    each suspect alone; Inconclusive only when nothing else can tell."""
    from modelverify_kernel.analysis.experiments import Inconclusive

    def fails(on):
        return None if on == {"a", "b", "c"} else "c" in on

    assert bisect.narrow(["a", "b", "c", "d"], fails) == ["c"]
    with pytest.raises(Inconclusive):
        bisect.narrow(["a", "b", "c", "d"], lambda on: None)


# What Run B ran on an H100 with FlagGems' `embedding` ×1.05, and the pair that broke there.
H100 = json.loads((Path(__file__).parent / "data" / "h100_culprit_search.json").read_text())


def _breaks_without(kernel: str, partner: str, culprits: set[str], calls: list[frozenset[str]]):
    """`kernel` on with `partner` off is another failure (None); else the fault shows when every
    one of `culprits` is on."""

    def fails(on: frozenset[str]) -> bool | None:
        calls.append(on)
        return None if kernel in on and partner not in on else culprits <= on

    return fails


def test_a_kernel_that_breaks_with_its_partner_off_does_not_stall_the_search():
    """On the H100 every step with FlagGems' copy_ on and its to_copy off ended in an illegal
    memory access: each prefix split from 7 to 22 kernels was another failure, and 9 steps after
    the all-off one still had not found `embedding`. Asked the other way round, the search finds
    it within the issue's bound of ceil(log2 n) + 3 steps, the all-off step included."""
    ran, pair = H100["ran"], (H100["breaks"]["kernel"], H100["breaks"]["partner"])
    calls: list[frozenset[str]] = []
    fails = _breaks_without(*pair, {H100["culprit"]}, calls)
    assert bisect.narrow(ran, fails, 1) == [H100["culprit"]]
    assert len(calls) + 1 <= math.ceil(math.log2(len(ran))) + 3, calls
    # wherever the culprit sits, and with the pair the other way round, it is still found
    for kernel, partner in (pair, pair[::-1]):
        for culprit in ran[1:]:
            if culprit in (kernel, partner):
                continue
            calls = []
            found = bisect.narrow(ran, _breaks_without(kernel, partner, {culprit}, calls), 1)
            assert found == [culprit], (kernel, partner, culprit, calls)
            assert len(calls) <= 2 * (math.ceil(math.log2(len(ran))) + 1), (culprit, calls)


def test_an_answer_asked_the_other_way_round_is_never_an_innocent_kernel():
    """Asking a split the other way round assumes one culprit left; with a pair that only fails
    together that answer can be wrong (k0+k2 with k1 on and k3 off crashing gave k0, k1, and the
    confirming run — those two off — passed). Whatever the pair and the kernel that breaks
    without its partner, the kernels named bring the fault back on their own and each is needed
    (a kernel that crashes without its partner is needed with it), or the search says it is
    inconclusive."""
    from modelverify_kernel.analysis.experiments import Inconclusive

    kernels = [f"k{i}" for i in range(8)]
    named = 0
    for pair in itertools.combinations(kernels, 2):
        for kernel, partner in itertools.permutations(kernels, 2):
            fails = _breaks_without(kernel, partner, set(pair), [])
            try:
                found = set(bisect.narrow(kernels, fails))
            except Inconclusive:
                continue
            named += 1
            assert fails(frozenset(found)) is True, (pair, kernel, partner, found)
            assert all(fails(frozenset(found - {k})) is not True for k in found), found
    assert named >= 0.7 * 28 * 56  # most still get an answer


def test_kernel_names_come_from_the_recorded_evidence():
    pr = records.PhaseResult(
        run="run_b",
        phase="offline",
        result={
            "stack_evidence": [
                {
                    "event": "flaggems_op_ran",
                    "op": "mean.dim",
                    "fn": "flag_gems.ops.mean.mean_dim",
                    "via": "aten",
                },
                {
                    "event": "flaggems_op_ran",
                    "op": "embedding",
                    "fn": "flag_gems.ops.embedding.embedding",
                    "via": "aten",
                },
                {
                    "event": "flaggems_op_ran",
                    "op": "gems_rms_forward",
                    "fn": "x.gems_rms_forward",
                    "via": "direct",
                },
                {"event": "flaggems_enabled", "ops": 4},
            ]
        },
    )
    assert bisect.ops_that_ran(pr) == ["embedding", "gems_rms_forward", "mean_dim"]
    # the plugin's own op ran and called FlagGems: the plugin switches it by vLLM's op name
    plugin = {
        "event": "plugin_op_ran",
        "op": "RMSNorm",
        "vllm_op": "rms_norm",
        "cls": "vllm_fl.ops.RMSNormFL",
    }
    pr = records.PhaseResult(
        run="run_b",
        phase="offline",
        result={"stack_evidence": [*pr.result["stack_evidence"], plugin]},
    )
    assert bisect.ops_that_ran(pr) == ["embedding", "mean_dim", "rms_norm"]


def test_a_found_search_gives_the_blacklist_and_the_sentence():
    b = records.Bisection(
        status="found",
        reason="r",
        phase="offline",
        switch=bisect.PLUGIN_SWITCH,
        ops=("embedding", "silu"),
        culprit_ops=("embedding",),
    )
    assert b.blacklist == "VLLM_FL_FLAGOS_BLACKLIST=embedding"
    assert b.advice.startswith("Ship on the full stack with VLLM_FL_FLAGOS_BLACKLIST=embedding")
    assert (
        records.Bisection(status="unconfirmed", reason="r", culprit_ops=("embedding",)).blacklist
        is None
    )


def test_budget_parameters_are_validated():
    p = validate({"model_path": "/m"})
    assert (p.bisect, p.bisect_max_steps, p.bisect_timeout) == (True, 24, 3600)
    with pytest.raises(Exception, match="bisect_max_steps"):
        validate({"model_path": "/m", "bisect_max_steps": 0})


# --------------------------------------------------------------------------- the real engine


@pytest.mark.engine
def test_two_kernels_that_fail_only_together_are_found_confirmed_and_reported(tmp_path, demo_model):
    """Stand-ins on the real vLLM CPU engine (tests/fake_stack): the `fl` plugin in its 2026 `real`
    mode enables the flag_gems stand-in in the worker with enable(unused=VLLM_FL_FLAGOS_BLACKLIST),
    and FAKE_GEMS_FAULT breaks two kernels only when both are on; everything else — vLLM, the
    evidence recorded inside the engine, papermill, the comparison, the report — is real."""
    import json
    import os

    import papermill as pm
    from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO

    fake = REPO / "tests" / "fake_stack"
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    env = dict(
        CPU_ENV, PYTHONPATH=os.pathsep.join([str(fake / "site"), str(fake / "flaggems_standin")])
    )
    pm.execute_notebook(
        str(REPO / "notebooks" / "verify.ipynb"),
        str(out_dir / "verify.ipynb"),
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
        parameters=dict(
            model_path=str(demo_model),
            output_dir=str(out_dir),
            env=env,
            run_b="always",
            run_b_env={"FAKE_FL_MODE": "real", "FAKE_GEMS_FAULT": "embedding+silu=raise"},
            extra_vllm_args=DEMO_ENGINE_ARGS,
            max_model_len=512,
        ),
    )
    data = json.loads((out_dir / "report.json").read_text())
    b = data["bisection"]
    assert b["status"] == "found", b["reason"]
    assert sorted(b["culprit_ops"]) == [
        "embedding",
        "silu",
    ]  # both: neither alone brings the fault back
    assert data["diff_analysis"]["culprit_ops"] == b["culprit_ops"]
    # the recorder's switch always; the plugin's blacklist only where its dispatch was recorded
    assert b["switches"][0] == bisect.RECORDER_SWITCH
    assert data["diff_analysis"]["blacklist"] == f"{b['switch']}=" + ",".join(b["culprit_ops"])
    assert data["diff_analysis"]["multichip_component"] == "FlagGems"
    assert (
        data["diff_analysis"]["recommended_stack"] == "base"
    )  # the seed's field keeps its meaning
    # all off: the fault is gone; silu runs (and joins the search, in front) only once embedding
    # is off — that step ran it on alone and passed, so no step runs it alone or all off again
    assert b["steps"][0]["disabled"] == ["embedding"] and b["steps"][0]["outcome"] == "pass"
    assert "silu" in b["ops"][: b["ops"].index("embedding")]
    assert not any(set(s["disabled"]) >= set(b["ops"]) for s in b["steps"]), b["steps"]
    for step in b["steps"]:
        on = set(b["ops"]) - set(step["disabled"])
        assert step["outcome"] == ("fail" if {"embedding", "silu"} <= on else "pass"), step
        assert (out_dir / step["log"]).is_file()  # every step keeps its own log
    assert [(s["phase"], s["outcome"]) for s in b["confirm"]] == [
        ("offline", "pass"),
        ("serve", "pass"),
    ]
    html = (out_dir / "report.html").read_text()
    assert 'id="bisection-result"' in html and b["advice"] in html
    nb = json.loads((out_dir / "verify.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert (
        "step 1: Run B offline with" in printed and "found:" in printed
    )  # the steps shown as they ran


# --------------------------------------------------------------------------- budget and interruption


def _failing_verification(tmp_path, ran=None, **params):
    """A verification whose Run B offline phase failed with FlagGems active (records only): judged
    MULTICHIP_ERROR from its evidence (`ran`: Run B's events, default four kernels seen running)."""
    from modelverify_kernel.pipeline import Verification

    v = Verification(
        params=validate({"model_path": "/m", "output_dir": str(tmp_path), **params}), target=None
    )
    if ran is None:
        ran = [
            {"event": "flaggems_op_ran", "via": "aten", "fn": f"flag_gems.ops.{op}.{op}", "op": op}
            for op in ("embedding", "mean_dim", "rsqrt", "silu")
        ]
    for run in ("run_a", "run_b"):
        for phase in ("offline", "serve"):
            failed = run == "run_b" and phase == "offline"
            v.add_attempt(
                records.PhaseResult(
                    run=run,
                    phase=phase,
                    status="FAIL" if failed else "PASS",
                    error="RuntimeError: boom" if failed else None,
                    result={"stack_evidence": ran if run == "run_b" else []},
                )
            )
    assert v.verdict.conclusion == "MULTICHIP_ERROR"
    assert v.judgement.activity["run_b"]["FlagGems"].status == "active"
    return v


def _stand_in_steps(v, fails, ran=None):
    """The search's phase runs simulated (the engine tests run them for real): each step's kernels
    switched off are read back from the switch it was handed; `fails(off)` says how it ends —
    True: Run B's own failure again, False: passes like Run A, a string: another failure;
    `ran(off)`: the kernels the step's own evidence records running (default: those left on)."""
    import dataclasses

    seen, envs = [], []
    run_b = v.evidence.runs["run_b"]
    run_a = v.evidence.runs["run_a"]

    def run_step(run, phase, *, env, unset, folder):
        off = tuple(sorted(o for o in env[bisect.RECORDER_SWITCH].split(",") if o))
        seen.append(off)
        envs.append((dict(env), folder))
        names = ran(set(off)) if ran else [o for o in v.searched_ops if o not in off]
        events = [
            {
                "event": "flaggems_op_ran",
                "via": "oplog",
                "op": o,
                "fn": f"flag_gems.ops.{o}.{o}",
                "pid": 7,
            }
            for o in names
        ]
        outcome = fails(set(off)) if phase == "offline" else False
        base = run_b[phase] if outcome is True else run_a[phase]
        pr = dataclasses.replace(base, duration_s=1.0, result={"stack_evidence": events})
        if isinstance(outcome, str):
            pr = dataclasses.replace(
                pr, status="FAIL", error=outcome, error_type="RuntimeError", diagnosis=None
            )
        return pr

    v.run_step = run_step
    v.stand_in_envs = envs
    v.searched_ops = ("embedding", "mean_dim", "rsqrt", "silu")
    return seen


def test_the_budget_stops_the_search_and_the_record_says_where(tmp_path):
    """The search stops at bisect_max_steps, keeps every finished step in bisect/bisection.json,
    and says how far it got."""
    v = _failing_verification(tmp_path, bisect_max_steps=2)
    ran = _stand_in_steps(v, lambda off: "silu" not in off)
    result = v.bisect()
    assert result.status == "stopped" and "bisect_max_steps=2" in result.reason
    assert len(result.steps) == len(ran) == 2
    on_disk = records.read(records.Bisection, tmp_path / "bisect" / "bisection.json")
    assert (
        on_disk == result and on_disk.culprit_ops and on_disk.blacklist is None
    )  # narrowed, not confirmed
    # what `report OUTPUT_DIR` rebuilds from after a kill: the search as far as it got
    v.save_state()
    from modelverify_kernel.pipeline import Verification

    assert Verification.resume(tmp_path).bisection == result


def test_a_second_culprit_is_searched_when_the_first_one_off_is_not_enough(tmp_path):
    """Two kernels that each break the phase alone: the confirming run with the first one off still
    fails, so the search goes on among the rest and reports both."""
    v = _failing_verification(tmp_path)
    _stand_in_steps(v, lambda off: not {"mean_dim", "silu"} <= off)
    result = v.bisect()
    assert (result.status, sorted(result.culprit_ops)) == ("found", ["mean_dim", "silu"])
    assert [s.outcome for s in result.confirm] == ["pass", "pass"]
    assert len({s.disabled for s in result.steps}) == len(
        result.steps
    )  # no set of kernels run twice


# --------------------------------------------------------------------------- a step's three outcomes


def _phase(status: str, outputs=None, signature: str | None = None) -> records.PhaseResult:
    return records.PhaseResult(
        run="run_b",
        phase="offline",
        status=status,
        error=None if status == "PASS" else f"RuntimeError: {signature}",
        error_type=None if status == "PASS" else "RuntimeError",
        diagnosis=None if status == "PASS" else {"signature": signature, "component": "FlagGems"},
        result={"outputs": outputs or []},
    )


def _outputs(shift: float = 0.0) -> list[dict]:
    """Five prompts whose chosen tokens keep their place and whose logprobs move by `shift`."""
    return [
        {
            "prompt": f"p{i}",
            "text": "a b c",
            "token_ids": [1, 2, 3],
            "logprobs": [
                {"token_id": t, "logprob": -0.1 * t - shift, "top": [[t, -0.1 * t - shift]]}
                for t in (1, 2, 3)
            ],
        }
        for i in range(5)
    ]


def test_a_step_is_the_same_fault_gone_or_another_failure():
    """Issue 19 point 4: a step failing with another signature is inconclusive (OTHER), never
    'the fault stays'; drift where a crash was searched is OTHER too."""
    from modelverify_kernel.analysis.compare import Tolerances
    from modelverify_kernel.analysis.experiments import GONE, OTHER, SAME, Fault, judge_step

    run_a, tol = _phase("PASS", _outputs()), Tolerances()
    crash = Fault("offline", "fail", "RuntimeError: injected fault in embedding")
    assert judge_step(_phase("FAIL", signature=crash.signature), run_a, tol, crash)[0] == SAME
    other, why = judge_step(
        _phase("FAIL", signature="RuntimeError: illegal memory access"), run_a, tol, crash
    )
    # the step's own failure first: a progress line cut short still says what the step did
    assert other == OTHER and why.startswith("another failure: RuntimeError")
    assert "illegal memory access" in why.split("not the one searched")[0]
    assert judge_step(_phase("PASS", _outputs()), run_a, tol, crash)[0] == GONE
    drift = Fault("offline", "diverge", None, "systematic drift")
    assert judge_step(_phase("PASS", _outputs(0.3)), run_a, tol, drift)[0] == SAME
    assert judge_step(_phase("PASS", _outputs(0.3)), run_a, tol, crash)[0] == OTHER
    assert judge_step(_phase("FAIL", signature="x"), run_a, tol, drift)[0] == OTHER
    # any failure is the fault only when no fault is named (the verification's own judgement)
    assert judge_step(_phase("FAIL", signature="x"), run_a, tol)[0] == SAME


# --------------------------------------------------------------------------- issue 19: proven switches


PLUGIN_LOADED = {
    "event": "plugins_loaded",
    "group": "vllm.general_plugins",
    "names": ["fl"],
    "pid": 3,
}


def test_a_plugin_merely_loaded_does_not_choose_its_blacklist(tmp_path):
    """Issue 19 point 1 (the H100 failure): a plugin `fl` that loaded proves nothing — every step
    switches through the recorder's own switch, with FlagGems' op log on; the plugin's blacklist
    only where Run B shows the plugin's own dispatch."""
    ran = [
        PLUGIN_LOADED,
        {"event": "flaggems_op_ran", "via": "aten", "fn": "flag_gems.ops.silu.silu", "op": "silu"},
        {"event": "flaggems_op_ran", "via": "aten", "fn": "flag_gems.ops.mm.mm", "op": "mm"},
    ]
    v = _failing_verification(tmp_path, ran=ran)
    assert v.judgement.activity["run_b"]["plugin"].loaded
    _stand_in_steps(v, lambda off: "silu" not in off)
    v.searched_ops = ("mm", "silu")
    result = v.bisect()
    assert (result.status, result.culprit_ops) == ("found", ("silu",)), result.reason
    assert result.switch == bisect.RECORDER_SWITCH and result.switches == (bisect.RECORDER_SWITCH,)
    for env, _ in v.stand_in_envs:
        assert env["MODELVERIFY_FLAGGEMS_OPLOG"] == "1" and bisect.PLUGIN_SWITCH not in env
    assert result.blacklist == "MODELVERIFY_FLAGGEMS_UNUSED=silu"


def test_the_plugin_blacklist_joins_where_the_plugin_dispatch_was_recorded(tmp_path):
    dispatch = {"event": "plugin_op_ran", "op": "RMSNorm", "vllm_op": "rms_norm", "pid": 3}
    direct = {
        "event": "flaggems_op_ran",
        "via": "direct",
        "op": "gems_rms_forward",
        "fn": "flag_gems.modules.normalization.gems_rms_forward",
        "caller": "vllm_fl.ops.layernorm",
    }
    ran = [PLUGIN_LOADED, dispatch, direct]
    v = _failing_verification(tmp_path, ran=ran)
    _stand_in_steps(v, lambda off: "rms_norm" not in off, ran=lambda off: [])
    result = v.bisect()
    assert result.switches == (bisect.RECORDER_SWITCH, bisect.PLUGIN_SWITCH)
    assert result.switch == bisect.PLUGIN_SWITCH and result.culprit_ops == ("rms_norm",)
    assert all(
        env[bisect.PLUGIN_SWITCH] == env[bisect.RECORDER_SWITCH] for env, _ in v.stand_in_envs
    )


def test_a_switch_that_is_not_honoured_stops_the_search_with_no_effect(tmp_path):
    """Issue 19 point 1: the step's own evidence shows the kernels it switched off running (a
    FlagGems whose enable ignores `unused`): 'the switch had no effect', with what ran where —
    never not_found, never 'outside FlagGems'."""
    v = _failing_verification(tmp_path)
    _stand_in_steps(v, lambda off: True, ran=lambda off: ["embedding", "mean_dim", "rsqrt", "silu"])
    result = v.bisect()
    assert result.status == "no_effect", result.reason
    assert "switch had no effect" in result.reason and "pid 7" in result.reason
    assert "outside" not in result.reason and not result.culprit_ops
    assert len(result.steps) == 1
    assert result.steps[0].ran_switched_off == {"pid 7": ("embedding", "mean_dim", "rsqrt", "silu")}


def test_a_step_failing_differently_is_inconclusive_and_another_split_is_tried(tmp_path):
    """Issue 19 point 3: a step failing with another error proves nothing: it is recorded as
    `other`, the search splits differently and still finds the culprit, and the record says which
    steps were inconclusive."""
    v = _failing_verification(tmp_path)

    def fails(off):
        if off == {"rsqrt", "silu"}:  # the first split: another error
            return "RuntimeError: CUDA error: an illegal memory access was encountered"
        return "silu" not in off

    _stand_in_steps(v, fails)
    result = v.bisect()
    assert (result.status, result.culprit_ops) == ("found", ("silu",)), result.reason
    other = [s for s in result.steps if s.outcome == "other"]
    assert len(other) == 1 and "another failure" in other[0].why
    assert result.inconclusive_steps == (other[0].number,)


def test_every_kernel_off_failing_differently_is_inconclusive_not_the_fault_staying(tmp_path):
    v = _failing_verification(tmp_path)
    _stand_in_steps(v, lambda off: "RuntimeError: illegal memory access")
    result = v.bisect()
    assert result.status == "inconclusive", result.reason
    assert "outside" not in result.reason and result.steps[0].outcome == "other"


def test_registered_ops_feed_the_search_when_none_was_seen_running(tmp_path):
    """Issue 19 point 4: only `enable()`'s registrations (433 ops, none seen running): the
    search runs over them, the record says so, and one culprit takes ⌈log2 n⌉ + 2 steps plus
    the two confirming runs."""
    ops = [f"op{i:03d}" for i in range(432)] + ["embedding"]
    ran = [{"event": "flaggems_enabled", "call": "enable", "ops": 433, "registered": ops}]
    v = _failing_verification(tmp_path, ran=ran)
    _stand_in_steps(v, lambda off: "embedding" not in off, ran=lambda off: [])
    result = v.bisect()
    assert (result.status, result.culprit_ops) == ("found", ("embedding",)), result.reason
    assert result.channel == "registered" and len(result.ops) == 433
    assert len(result.steps) <= math.ceil(math.log2(433)) + 2, len(result.steps)


def test_the_channel_is_the_strongest_there_is():
    from modelverify_kernel.analysis.experiments import searchable_ops

    def pr(*events):
        return records.PhaseResult(run="run_b", phase="offline", result={"stack_evidence": events})

    aten = {"event": "flaggems_op_ran", "via": "aten", "fn": "flag_gems.ops.mm.mm", "op": "mm"}
    oplog = {"event": "flaggems_op_ran", "via": "oplog", "fn": "hopper.ops.mm.mm", "op": "mm"}
    reg = {"event": "flaggems_enabled", "registered": ["mm", "embedding"]}
    assert searchable_ops(pr(aten, reg)) == (["mm"], "ran")
    assert searchable_ops(pr(oplog, reg)) == (["mm"], "oplog")
    assert searchable_ops(pr(reg)) == (["embedding", "mm"], "registered")
    assert searchable_ops(pr()) == ([], None)
    # FlagGems 5.0.2 on an H100: op keys through torch.library, function names from
    # all_registered_ops(); the search uses the names `enable(unused=…)` matches
    both = {**reg, "registered": ["mm.default", "embedding"], "registered_ops": ["mm", "embedding"]}
    assert searchable_ops(pr(both)) == (["embedding", "mm"], "registered")


# --------------------------------------------------------------------------- issue 19: own attempts


@pytest.mark.process
def test_a_step_that_dies_before_its_result_never_reads_run_b_result_or_evidence(tmp_path):
    """Issue 19 point 2: a step's script that dies before writing its result gets no result —
    not Run B's (left in the target's work folder), even when asked for Run B's very name."""
    from modelverify_kernel.records import RunSpec
    from modelverify_kernel.runs import run_phase
    from modelverify_kernel.target import SCRIPTS_DIR, LocalTarget

    params = validate({"model_path": "/m", "output_dir": str(tmp_path / "out")})
    target = LocalTarget()
    try:
        scripts = target.install_scripts(SCRIPTS_DIR)
        (Path(scripts) / "run_offline_inference.py").write_text("import sys\nsys.exit(3)\n")
        Path(target.work_path("run_b_offline.json")).write_text('{"status": "PASS"}')
        evidence = Path(target.work_path("run_b_offline.evidence"))
        evidence.mkdir()
        (evidence / "evidence-1.jsonl").write_text('{"event": "flaggems_op_ran"}\n')
        spec = RunSpec("run_b", "Run B", {}, ())
        folder = tmp_path / "out" / "bisect" / "01"
        for stem in ("bisect-01-run_b_offline", "run_b_offline"):
            pr = run_phase(
                params, target, scripts, spec, "offline", "/m", 1, folder, remote_stem=stem
            )
            assert pr.result == {} and pr.result_file is None, pr
            assert "wrote no result file" in pr.exit.result_error
            output = pr.command[pr.command.index("--output") + 1]
            assert output != target.work_path("run_b_offline.json")
            assert Path(pr.log).parent == folder / "logs"
    finally:
        target.cleanup()


def test_run_step_clears_its_folder_and_names_its_own_target_files(tmp_path, monkeypatch):
    """Each step is its own attempt: bisect/NN emptied first, its target files named after it."""
    from modelverify_kernel import pipeline

    v = _failing_verification(tmp_path)
    folder = tmp_path / "bisect" / "03"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "run_b_offline.json").write_text("{}")  # an earlier search's step 3
    asked = {}

    def run_phase(*args, remote_stem=None, **kwargs):
        asked["stem"], asked["left"] = remote_stem, list(folder.rglob("*.json"))
        return records.PhaseResult(run="run_b", phase="offline", status="FAIL", error="x")

    monkeypatch.setattr(pipeline.runs, "run_phase", run_phase)
    monkeypatch.setattr(v, "_open", lambda: (None, "scripts"), raising=False)
    monkeypatch.setattr(v, "_model_path", lambda: "/m", raising=False)
    v.run_step("run_b", "offline", env={}, unset=(), folder=folder)
    assert asked == {"stem": "bisect-03-run_b_offline", "left": []}


# --------------------------------------------------------------------------- issue 19: on the engine


def test_a_plugin_op_switched_off_that_still_calls_flaggems_is_seen():
    """The 2025-12 plugin's RMSNorm dispatches to FlagGems whatever its blacklist says: with
    `rms_norm` off, FlagGems' function called from the plugin's op module is that op running."""
    from modelverify_kernel.analysis.experiments import switched_off_that_ran

    events = [
        {
            "event": "plugin_op_ran",
            "vllm_op": "rms_norm",
            "cls": "vllm_fl.ops.layernorm.RMSNormFL",
            "pid": 5,
        },
        {
            "event": "flaggems_op_ran",
            "via": "direct",
            "op": "gems_rms_forward",
            "fn": "flag_gems.modules.normalization.gems_rms_forward",
            "caller": "vllm_fl.ops.layernorm",
            "pid": 5,
        },
    ]
    pr = records.PhaseResult(run="run_b", phase="offline", result={"stack_evidence": events})
    assert switched_off_that_ran(pr, ["rms_norm"]) == {"pid 5": ["rms_norm"]}
    assert switched_off_that_ran(pr, ["silu"]) == {}


def test_a_switch_a_step_proves_joins_the_next_steps(tmp_path):
    """Run B failed at its first kernel, before the plugin's own ops ran, so only the recorder's
    switch was proven; a step with that kernel off shows the plugin's RMSNorm calling FlagGems —
    from then on the plugin's list switches it too (on the CPU stand-in the search otherwise
    stopped with 'no effect' although the plugin honours its list)."""
    import dataclasses

    ran = [{"event": "flaggems_op_ran", "via": "aten", "fn": "flag_gems.ops.embedding.embedding"}]
    v = _failing_verification(tmp_path, ran=ran)
    run_a, run_b = v.evidence.runs["run_a"], v.evidence.runs["run_b"]
    envs = []

    def run_step(run, phase, *, env, unset, folder):
        envs.append(dict(env))
        off = set(env[bisect.RECORDER_SWITCH].split(","))
        plugin_off = set(env.get(bisect.PLUGIN_SWITCH, "").split(","))
        events = [
            {"event": "plugin_op_ran", "vllm_op": "rms_norm", "cls": "fake_fl.ops.RMSNorm"},
        ]
        if "rms_norm" not in plugin_off:  # the plugin's RMSNorm calls FlagGems directly
            events.append(
                {
                    "event": "flaggems_op_ran",
                    "via": "direct",
                    "op": "gems_rms_forward",
                    "fn": "flag_gems.modules.normalization.gems_rms_forward",
                    "caller": "fake_fl.ops",
                    "pid": 7,
                }
            )
        base = run_b[phase] if phase == "offline" and "embedding" not in off else run_a[phase]
        return dataclasses.replace(base, duration_s=1.0, result={"stack_evidence": events})

    v.run_step = run_step
    result = v.bisect()
    assert bisect.PLUGIN_SWITCH not in envs[0]  # Run B's evidence proved only the recorder's
    # step 2 (embedding alone on, the plugin's rms_norm off) sets the plugin's list too
    assert envs[1][bisect.PLUGIN_SWITCH].split(",") == ["rms_norm"]
    assert (result.status, result.culprit_ops) == ("found", ("embedding",)), result.reason
    assert bisect.PLUGIN_SWITCH in result.switches
