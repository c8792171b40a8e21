"""The gate end to end: papermill on the demo model with stand-ins that behave like the real
FlagOS plugin, in the real vLLM CPU engine.

What stands in (test-only, see their docstrings): `tests/fake_stack/site/fake_vllm_fl`, a vLLM
platform plugin *and* general plugin named `fl` that enables FlagGems in the worker under the
real plugin's environment semantics (or not, by mode); `tests/fake_stack/flaggems_standin`, a
`flag_gems` stand-in registering its kernels through `torch.library` like FlagGems 5.x does —
the real library needs a GPU (FACTS.md), so it is used only where its real CPU failure is the
point (`flaggems` mode); `tests/fake_stack/liar`, no plugin at all, only the log lines a working
stack prints. Everything else is real: vLLM, torch, papermill, the evidence recorded inside the
engine processes, the verdict, the report. Scenarios whose Run A is the same (the stand-in
stack installed, the plugin excluded) share one real Run A (`standin_stack_run`); each has its
own probe, Run B and verdict.
"""

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import papermill as pm
import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO

from modelverify_kernel.params import validate
from modelverify_kernel.pipeline import Verification
from modelverify_kernel.runs import PHASES, load_phase
from modelverify_kernel.vocabulary import RECORDER_SWITCH

pytestmark = pytest.mark.engine
NOTEBOOK = REPO / "notebooks" / "verify.ipynb"
FAKE = REPO / "tests" / "fake_stack"
PLUGIN_SITE, GEMS_STANDIN, LIAR = FAKE / "site", FAKE / "flaggems_standin", FAKE / "liar"
TEST_STACK = Path(sys.prefix) / "test-stack"


@pytest.fixture(scope="module")
def test_stack() -> Path:
    if (
        not (TEST_STACK / "flaggems" / "flag_gems").is_dir()
        or not (TEST_STACK / "triton" / "triton").is_dir()
    ):
        message = f"{TEST_STACK} lacks flag_gems/triton: run `make test` (it installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TEST_STACK


def _parameters(out_dir, demo_model, paths, run_b_env=None, **parameters) -> dict:
    """Both runs share `paths` on PYTHONPATH, as an image's installed packages are."""
    env = dict(CPU_ENV, PYTHONPATH=os.pathsep.join(map(str, paths)))
    return dict(
        model_path=str(demo_model),
        output_dir=str(out_dir),
        env=env,
        run_b_env=run_b_env or {},
        extra_vllm_args=DEMO_ENGINE_ARGS,
        max_model_len=512,
        run_b="always",
        **parameters,
    )


def _report(out_dir: Path) -> dict:
    data = json.loads((out_dir / "report.json").read_text())
    html = (out_dir / "report.html").read_text()
    assert data["diff_analysis"]["conclusion"] in html and "How Run A keeps FlagOS out" in html
    return data


def _verify(tmp_path, demo_model, paths, run_b_env=None, **parameters) -> dict:
    """The whole notebook, through papermill."""
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    pm.execute_notebook(
        str(NOTEBOOK),
        str(out_dir / "verify.ipynb"),
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
        parameters=_parameters(out_dir, demo_model, paths, run_b_env, **parameters),
    )
    return _report(out_dir)


@pytest.fixture(scope="module")
def standin_stack_run(tmp_path_factory, demo_model) -> Path:
    """The stand-in plugin and FlagGems installed, the plugin inert in Run B: the whole notebook
    once. Its Run A (the plugin excluded) is the Run A of every scenario on this stack: Run B's
    modes never reach it."""
    base = tmp_path_factory.mktemp("standin_stack")
    _verify(base, demo_model, [PLUGIN_SITE, GEMS_STANDIN], {"FAKE_FL_MODE": "inert"})
    return base / "report"


def _verify_run_b(
    tmp_path,
    demo_model,
    run_a_dir: Path,
    run_b_env: dict,
    paths=(PLUGIN_SITE, GEMS_STANDIN),
    bisect: bool = False,
    ablate: bool = False,
) -> dict:
    """Another Run B, through the notebook's steps (pipeline.Verification): the real probe, model
    step and Run B on `paths`, beside the real Run A of `standin_stack_run` copied in (the same
    Run A flags: the plugin excluded, so no flag_gems is ever imported in it, as its recorded
    evidence shows); the comparison, gate, verdict, component ablation (`ablate`: before the
    search, as the notebook does), culprit-op search (`bisect`) and report are this run's."""
    out_dir = tmp_path / "report"
    v = Verification.start(validate(_parameters(out_dir, demo_model, list(paths), run_b_env)))
    v.run_probe()
    v.resolve_model()
    assert v.precheck_error is None, v.precheck_error
    for phase in PHASES:
        shared = load_phase(run_a_dir / "phases" / f"run_a_{phase}.json")
        copies = {}
        for field, folder in (("log", "logs"), ("result_file", "results")):
            copies[field] = str(out_dir / folder / Path(getattr(shared, field)).name)
            Path(copies[field]).parent.mkdir(exist_ok=True)
            shutil.copy(getattr(shared, field), copies[field])
        v.add_attempt(dataclasses.replace(shared, **copies))
    v.run("run_b")
    if ablate:
        v.ablate()
    if bisect and v.op_search_next():
        v.bisect()
    v.report()
    v.close()
    return _report(out_dir)


def _verdict(data):
    d = data["diff_analysis"]
    return d["conclusion"], data["status"], d["recommended_stack"]


def test_printed_log_lines_without_any_plugin_are_stack_inactive(tmp_path, demo_model):
    data = _verify(tmp_path, demo_model, [LIAR])
    assert _verdict(data) == ("STACK_INACTIVE", "PARTIAL", "base")
    log = (tmp_path / "report" / "logs" / "run_b_offline.log").read_text()
    assert (
        "Platform plugin fl is activated" in log and "FlagGems enabled" in log
    )  # the lie was told
    b = data["stack_activity"]["run_b"]
    assert (
        b["plugin"]["status"] == "inactive" and "no plugin named 'fl'" in b["plugin"]["evidence"][0]
    )
    assert any("not evidence" in e for e in b["plugin"]["evidence"] + b["FlagGems"]["evidence"])
    assert b["FlagCX"]["status"] == "not_exercised" and "TP=1" in b["FlagCX"]["evidence"][0]
    assert data["run_a_without_multichip"]["base_mode"]["mode"] == "no_plugin"
    assert all(p["exact_match"] for c in data["output_comparison"] for p in c["prompts"])


def test_an_inert_plugin_is_stack_inactive(standin_stack_run):
    data = _report(standin_stack_run)
    assert _verdict(data) == ("STACK_INACTIVE", "PARTIAL", "base")
    plugin = data["stack_activity"]["run_b"]["plugin"]
    assert plugin["status"] == "inactive" and "loading alone is not activity" in " ".join(
        plugin["evidence"]
    )
    assert data["stack_gate"]["passed"] is False
    # Run A kept the plugin out: vLLM's CPU platform serves this machine
    run_a = data["run_a_without_multichip"]
    kept = run_a["env"]["set"][
        "VLLM_PLUGINS"
    ]  # every installed plugin but fl (vLLM ships two of its own)
    assert run_a["base_mode"]["mode"] == "exclude_plugin" and "fl" not in kept.split(",")
    assert (
        run_a["engine_env"]["VLLM_PLUGINS"] == kept and run_a["engine_env"]["FLAGCX_PATH"] is None
    )
    assert data["stack_activity"]["run_a"]["plugin"]["loaded"] is False
    assert any("FLAGCX_PATH=/tmp/FlagCX does not hold" in w for w in data["warnings"])
    assert data["run_b_with_multichip"]["engine_env"]["VLLM_PLUGINS"] == "fl"


def test_run_a_and_run_b_ran_side_by_side_each_on_its_own_cores(standin_stack_run):
    """Issue 14: the shared run on this machine (vLLM for CPU, TP=1, at least 2 cores, which
    `make test`'s two workers need anyway): Run B started beside Run A, each bound to its half
    of the cores the probe found, and their phases overlap in time."""
    from datetime import datetime, timedelta

    data = _report(standin_stack_run)
    cores = data["environment"]["probe"]["devices"]["cores"]
    assert len(cores) >= 2, cores
    plan, half = data["parallel_runs"], len(cores) // 2
    assert plan["parallel"] and plan["variable"] == "VLLM_CPU_OMP_THREADS_BIND", plan
    assert (plan["run_a"], plan["run_b"]) == (
        ",".join(map(str, cores[:half])),
        ",".join(map(str, cores[half : 2 * half])),
    )
    for name, key in (("run_a", "run_a_without_multichip"), ("run_b", "run_b_with_multichip")):
        assert data[key]["env"]["set"]["VLLM_CPU_OMP_THREADS_BIND"] == plan[name]
    spans = {}
    for a in data["attempts"]:
        start = datetime.fromisoformat(a["started_at"])
        spans.setdefault(a["run"], []).append((start, start + timedelta(seconds=a["duration_s"])))
    (a_start, a_end), (b_start, b_end) = (
        (min(s for s, _ in spans[r]), max(e for _, e in spans[r])) for r in ("run_a", "run_b")
    )
    assert b_start < a_end and a_start < b_end, spans  # the runs overlapped
    html = (standin_stack_run / "report.html").read_text()
    assert 'id="parallel-runs"' in html and "Runs side by side" in html


def test_a_default_on_plugin_loaded_in_run_a_makes_the_comparison_invalid(tmp_path, demo_model):
    # as the image ships it: the 2025-12 plugin enables FlagGems whenever it is loaded, and Run A
    # is made to leave VLLM_PLUGINS unset (every installed plugin loads), as the seed did
    data = _verify(
        tmp_path,
        demo_model,
        [PLUGIN_SITE, GEMS_STANDIN],
        {"FAKE_FL_MODE": "default-on"},
        run_a_env={"FAKE_FL_MODE": "default-on"},
        run_a_unset=["VLLM_PLUGINS"],
    )
    assert _verdict(data) == ("RUN_A_NOT_BASE", "FAIL", "none")
    assert data["run_a_without_multichip"]["engine_env"]["VLLM_PLUGINS"] is None  # unset, not empty
    assert data["run_a_without_multichip"]["base_mode"]["mode"] == "user"
    assert data["stack_activity"]["run_a"]["FlagGems"]["status"] == "active"
    detail = data["diff_analysis"]["detail"]
    assert (
        "FlagGems active in Run A" in detail and "embedding" in detail and "VLLM_PLUGINS" in detail
    )
    assert data["stack_gate"]["run_a_not_base"]


def test_one_op_off_by_five_percent_is_output_mismatch_and_the_search_names_it(
    tmp_path, demo_model, standin_stack_run
):
    """Issue 13: a kernel that only changes numbers is found through OUTPUT_MISMATCH — the plugin's
    own RMSNorm calls FlagGems' rms_norm directly, switched by the plugin's blacklist per op."""
    data = _verify_run_b(
        tmp_path,
        demo_model,
        standin_stack_run,
        {"FAKE_FL_MODE": "real", "FAKE_GEMS_FAULT": "rms_norm=scale:1.05"},
        bisect=True,
        ablate=True,
    )
    assert _verdict(data) == ("OUTPUT_MISMATCH", "PARTIAL", "base")
    # issue 19: the ablation names FlagGems, confirmed by experiment, before the op search runs —
    # the offline phase with every FlagGems kernel off, in its own folder with its own log: one
    # run, as every registered kernel is named by the function name `enable(unused=…)` matches
    # (`mean_dim`, registered as `mean.dim`, ran only once the plugin's RMSNorm left FlagGems)
    a = data["ablation"]
    assert (a["status"], a["component"], a["phase"]) == ("confirmed", "FlagGems", "offline"), a
    outcomes = [(r["component"], r["outcome"]) for r in a["runs"]]
    assert outcomes == [("FlagGems", "pass")], a
    for r in a["runs"]:
        assert r["log"].startswith(f"experiments/ablation/{r['number']:02d}/")
        assert (tmp_path / "report" / r["log"]).is_file()
    assert "FlagCX" in a["not_tried"] and "TP=1" in a["not_tried"]["FlagCX"]
    d = data["diff_analysis"]
    assert (d["multichip_component"], d["component_source"]) == ("FlagGems", "experiment")
    good = data["reproduce"]["good_configuration"]
    assert "run_b_env" in good and "VLLM_FL_FLAGOS_BLACKLIST" in good and "rms_norm" in good
    aggregates = [c["aggregate"] for c in data["output_comparison"]]
    assert any(a["systematic"] for a in aggregates)
    b = data["bisection"]
    assert (b["status"], b["culprit_ops"], b["switch"]) == (
        "found",
        ["rms_norm"],
        "VLLM_FL_FLAGOS_BLACKLIST",
    ), b
    assert "rms_norm" in b["ops"] and len(b["ops"]) >= 3  # searched among every kernel that ran
    assert all(s["outcome"] == "pass" for s in b["confirm"]) and len(b["confirm"]) == 2
    d = data["diff_analysis"]
    assert (d["culprit_ops"], d["blacklist"]) == (["rms_norm"], "VLLM_FL_FLAGOS_BLACKLIST=rms_norm")
    assert d["component"] == "FlagGems" and b["advice"] in d["detail"]
    assert b["advice"].startswith("Ship on the full stack with VLLM_FL_FLAGOS_BLACKLIST=rms_norm")
    for step in b["steps"]:  # each step judged by the comparison with Run A; its own log kept
        on = set(b["ops"]) - set(step["disabled"])
        assert step["outcome"] == ("fail" if "rms_norm" in on else "pass"), step
        assert (tmp_path / "report" / step["log"]).is_file()


def test_a_fault_outside_flaggems_is_not_blamed_on_a_kernel(
    tmp_path, demo_model, standin_stack_run
):
    """Issue 13: FlagGems active in Run B, and the plugin's worker fails on its own after FlagGems'
    kernels ran (FAKE_FL_WORKER_FAULT): switching every kernel off leaves the fault, so the search
    names none."""
    data = _verify_run_b(
        tmp_path,
        demo_model,
        standin_stack_run,
        {"FAKE_FL_MODE": "real", "FAKE_FL_WORKER_FAULT": "1"},
        bisect=True,
    )
    assert data["diff_analysis"]["conclusion"] == "MULTICHIP_ERROR"
    b = data["bisection"]
    assert (b["status"], b["phase"], b["culprit_ops"]) == ("not_found", "offline", []), b
    assert (
        len(b["steps"]) == 1
        and b["steps"][0]["disabled"] == b["ops"]
        and b["steps"][0]["outcome"] == "fail"
    )
    assert "outside these kernels" in b["reason"] and not b["advice"] and not b["confirm"]
    d = data["diff_analysis"]
    assert (
        d["culprit_ops"] == [] and d["blacklist"] is None and d["multichip_component"] != "FlagGems"
    )


def test_flaggems_active_in_run_b_only_and_correct_is_both_pass_naming_the_ops(
    tmp_path, demo_model, standin_stack_run
):
    # a correct reimplementation at another precision: the noise of a different kernel, not a fault
    data = _verify_run_b(
        tmp_path,
        demo_model,
        standin_stack_run,
        {"FAKE_FL_MODE": "real", "FAKE_GEMS_VARIANT": "rms_norm=bf16"},
    )
    assert _verdict(data) == ("BOTH_PASS", "PASS", "full")
    gems = data["stack_activity"]["run_b"]["FlagGems"]
    assert (gems["status"], gems["strength"]) == ("active", "strong")
    ran = [w.split(":", 1)[1] for w in gems["work"] if w.startswith("ran:")]
    assert "embedding" in ran and all(op in data["diff_analysis"]["detail"] for op in ran[:3])
    assert data["stack_activity"]["run_a"]["FlagGems"]["status"] == "inactive"
    assert data["stack_gate"]["passed"] and data["stack_gate"]["strength"] == "strong"


def test_the_real_flag_gems_failing_in_run_b_is_multichip_error(
    tmp_path, demo_model, test_stack, standin_stack_run
):
    # Run A (plugin excluded) never imports flag_gems: the stand-in stack's Run A is this one's
    data = _verify_run_b(
        tmp_path,
        demo_model,
        standin_stack_run,
        {"FAKE_FL_MODE": "flaggems", "FAKE_FL_TRITON_SITE": str(test_stack / "triton")},
        paths=(PLUGIN_SITE, test_stack / "flaggems"),
    )
    d = data["diff_analysis"]
    assert (d["conclusion"], d["multichip_component"], data["status"]) == (
        "MULTICHIP_ERROR",
        "FlagGems",
        "PARTIAL",
    )
    err = data["run_b_with_multichip"]["errors"][0]
    assert err["component"] == "FlagGems" and "No device were detected" in err["error"]
    assert data["run_a_without_multichip"]["phase_a_offline"] == "PASS"
    assert data["stack_activity"]["run_a"]["FlagGems"]["status"] == "inactive"


def test_ops_that_take_over_vllm_layers_are_found_through_their_registrations_and_op_log(
    tmp_path, demo_model, standin_stack_run
):
    """Issue 19 point 5: a FlagGems whose `enable()` takes vLLM layers over (no torch.library;
    FAKE_GEMS_TAKEOVER=1), one of them ×1.3: nothing is seen running in Run B, so the search runs
    over `enable()`'s registrations through the recorder's own switch (the plugin `fl` only
    loaded), each step's own FlagGems op log proving the kernels switched off did not run."""
    data = _verify_run_b(
        tmp_path,
        demo_model,
        standin_stack_run,
        {
            "FAKE_FL_MODE": "flaggems",
            "FAKE_GEMS_TAKEOVER": "1",
            "FAKE_GEMS_FAULT": "embedding=scale:1.3",
        },
        bisect=True,
    )
    assert _verdict(data)[0] == "OUTPUT_MISMATCH"
    b = data["bisection"]
    assert (b["status"], b["culprit_ops"]) == ("found", ["embedding"]), b
    assert (b["channel"], b["switch"]) == ("registered", RECORDER_SWITCH), b
    assert b["ops"] == ["embedding", "silu"]
    assert all(not s["ran_switched_off"] for s in b["steps"] + b["confirm"])
    out = tmp_path / "report"
    for step in b["steps"]:
        on = set(b["ops"]) - set(step["disabled"])
        assert step["outcome"] == ("fail" if "embedding" in on else "pass"), step
        assert step["log"].startswith(f"bisect/{step['number']:02d}/")  # its own attempt
        result = json.loads((out / step["result_file"]).read_text())
        logged = {e["op"] for e in result["stack_evidence"] if e.get("via") == "oplog"}
        assert logged == on, (step, logged)  # the step's own op log: what it left on, only
    assert data["diff_analysis"]["culprit_ops"] == ["embedding"]
