"""Debugging a failing run (issue 12): one phase re-run as a numbered attempt, the notebook
re-executed in the same kernel, and the records / truth table said once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO
from nbclient import NotebookClient

from modelverify_kernel import params as mv_params
from modelverify_kernel import records, report
from modelverify_kernel.errors import ParameterError, UserError
from modelverify_kernel.pipeline import Verification
from modelverify_kernel.vocabulary import TRUTH_TABLE, Layout, conclusion

NOTEBOOK = REPO / "notebooks" / "verify.ipynb"


# --------------------------------------------------------------------------- records, vocabulary


def test_every_record_survives_its_json_round_trip():
    pr = records.PhaseResult(
        run="run_b",
        phase="serve",
        status="FAIL",
        duration_s=3.5,
        command=["python3", "x.py"],
        result={"status": "FAIL", "outputs": [{"text": "hi"}]},
        attempt=2,
        overrides={"env": {"A": "1"}},
        env={"set": {"A": "1"}, "unset": ["B"]},
    )
    spec = records.RunSpec(
        "run_a", "Run A", {"USE_FLAGGEMS": "0"}, ("FLAGCX_PATH",), {"mode": "no_plugin"}
    )
    cmp_ = records.PhaseComparison(
        "offline",
        [records.PromptComparison(0, "p", "chat", False, 3, 3, 1)],
        [],
        [records.GarbageFinding("empty", 0, "no text")],
        aggregate=records.AggregateJudgement(prompts_compared=1, systematic=True),
    )
    state = records.State(
        params={"model_path": "/m"}, started_at="t", target={"kind": "local"}, tp=2
    )
    for record in (
        pr,
        spec,
        cmp_,
        state,
        records.Gate(True, "strong", ["x"], []),
        records.Verdict("BOTH_PASS", "d", None, "full", "PASS"),
    ):
        again = records.from_json(type(record), json.loads(json.dumps(records.to_json(record))))
        assert again == record, type(record)
    assert isinstance(records.from_json(records.RunSpec, records.to_json(spec)).env_unset, tuple)


def test_a_phase_record_written_by_an_older_version_still_loads(tmp_path):
    path = tmp_path / "run_a_offline.json"
    path.write_text(
        json.dumps({"run": "run_a", "phase": "offline", "status": "PASS", "gone_field": 1})
    )
    pr = records.read(records.PhaseResult, path)
    assert (pr.status, pr.attempt) == ("PASS", 1)


def test_attempts_get_their_own_files():
    layout = Layout(Path("/o"))
    assert layout.phase_log("run_b_serve", 1) == Path("/o/logs/run_b_serve.log")
    assert layout.phase_log("run_b_serve", 2) == Path("/o/logs/run_b_serve.2.log")
    assert layout.phase_record("run_b_serve", 3) == Path("/o/phases/run_b_serve.3.json")


def _readme_truth_table() -> dict[str, tuple[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index("| conclusion | when | recommended_stack | status |") :]
    rows = {}
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in cells[0].split(" / "):
            rows[name] = (cells[2], cells[3])
    return rows


def test_readme_truth_table_is_the_code_s_truth_table():
    """The table exists once (vocabulary.TRUTH_TABLE); the README's copy must say the same."""
    readme = _readme_truth_table()
    for row in TRUTH_TABLE:
        stack, status = readme[row.name]
        if row.run_a_failed:  # "base (none if Run A failed)"
            assert (
                f"{row.recommended_stack} if Run A failed" in stack
                and f"{row.status} if Run A failed" in status
            )
        else:
            assert stack.split(" (")[0] == row.recommended_stack, row.name
            assert status.split(" (")[0] == row.status, row.name
    assert set(readme) == {row.name for row in TRUTH_TABLE}
    assert conclusion("RUN_B_SKIPPED", run_a_failed=True).status == "FAIL"


def test_notebook_variables_are_not_unknown_parameters_in_a_kernel():
    """IPython keeps every cell it ran in `In`: only the last parameters cell's names are parameters."""
    tagged = (
        "# Parameters: papermill overrides these.\nmodel_path: str = None\nfail_on: str = 'never'\n"
    )
    ns = {
        "In": ["", tagged, "# Parameters\nmodel_path = '/m'\n", "found = 'x'"],
        "model_path": "/m",
        "found": "x",
        "comparisons": [],
        "verdict": None,
    }
    assert mv_params.unknown_parameters(ns) == []
    ns["In"].append("# Parameters\nmodel_path = '/m'\nmax_token = 3\n")
    assert mv_params.unknown_parameters(ns) == ["max_token"]
    with pytest.raises(ParameterError, match="did you mean max_tokens"):
        mv_params.from_namespace({**ns, "max_token": 3})
    # no kernel history (a plain namespace): every public data name counts, as before
    assert mv_params.unknown_parameters({"model_path": "/m", "found": "x"}) == ["found"]


def test_run_phase_refuses_what_it_cannot_change(tmp_path):
    v = Verification(
        params=mv_params.validate({"model_path": "/m", "output_dir": str(tmp_path)}), target=None
    )
    with pytest.raises(ParameterError, match="run is one of run_a, run_b"):
        v.run_phase("run_c", "serve")
    with pytest.raises(ParameterError, match="cannot change model_path"):
        v.run_phase("run_b", "serve", model_path="/other")
    with pytest.raises(UserError, match="v.run_probe"):
        v.run_phase("run_b", "serve", serve_timeout=10)


# --------------------------------------------------------------------------- the notebook


def _parameterized(**parameters) -> nbformat.NotebookNode:
    nb = pm.iorw.load_notebook_node(str(NOTEBOOK))  # adds the tags papermill expects on every cell
    return pm.parameterize.parameterize_notebook(
        nb, parameters, kernel_name="python3", language="python"
    )


@pytest.mark.process
def test_executed_notebook_reexecutes_cell_by_cell_in_the_same_kernel(tmp_path):
    """The notebook's own variables (found, comparisons, verdict, v…) are no unknown parameters
    on the second pass, and the first verification is closed before the second starts."""
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    out_dir = tmp_path / "report"
    nb = _parameterized(model_path=str(empty), output_dir=str(out_dir))
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    with client.setup_kernel():
        for _pass in range(2):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)  # raises CellExecutionError on any error
            first = json.loads((out_dir / "report.json").read_text())
            assert first["diff_analysis"]["conclusion"] == "PRECHECK_FAILED"
    assert not (out_dir / ".work").exists()  # closed at the end of each pass


@pytest.mark.engine
def test_debug_rerun_changes_one_thing_and_the_report_lists_both_attempts(tmp_path, demo_model):
    """Run A fails on an engine argument vLLM rejects; `v.run_phase` re-runs its offline phase
    with good arguments (on the verification the notebook left, resumed from disk): attempt 2
    passes, attempt 1's log is kept, the verdict is judged on the latest attempt, and the report
    (and its rebuild from disk) lists both."""
    out_dir = tmp_path / "report"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "verify.ipynb"),
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
        parameters=dict(
            model_path=str(demo_model),
            output_dir=str(out_dir),
            env=CPU_ENV,
            run_b="never",
            max_model_len=512,
            extra_vllm_args=["--enforce-eager", "--no-such-engine-flag"],
        ),
    )
    seen = []
    v = Verification.resume(out_dir)
    v.on_attempt = seen.append
    attempt = v.run_phase("run_a", "offline", extra_vllm_args=DEMO_ENGINE_ARGS)
    v.report()
    v.close()
    assert seen == [attempt] and attempt.attempt == 2
    data = json.loads((out_dir / "report.json").read_text())
    report.validate(data)
    offline = [a for a in data["attempts"] if (a["run"], a["phase"]) == ("run_a", "offline")]
    assert [(a["attempt"], a["status"]) for a in offline] == [(1, "FAIL"), (2, "PASS")]
    assert offline[1]["overrides"] == {"extra_vllm_args": DEMO_ENGINE_ARGS}
    assert (
        "--no-such-engine-flag" in (out_dir / offline[0]["log"]).read_text()
    )  # attempt 1's log kept
    assert offline[1]["log"] == "logs/run_a_offline.2.log"
    run_a = data["run_a_without_multichip"]
    assert (run_a["phase_a_offline"], run_a["phases"]["offline"]["attempt"]) == ("PASS", 2)
    assert run_a["phase_b_serve"] == "FAIL"  # serve was not re-run: still its first, failed attempt
    assert data["diff_analysis"]["conclusion"] == "RUN_B_SKIPPED" and data["status"] == "FAIL"
    html = (out_dir / "report.html").read_text()
    assert 'id="attempts"' in html and "run_a_offline.2.log" in html
    assert not (out_dir / ".work").exists()
    # the rebuild from disk (what a killed notebook leaves) lists the same attempts
    (out_dir / "report.json").unlink()
    subprocess.run(
        [sys.executable, "-m", "modelverify_kernel", "report", str(out_dir)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    rebuilt = json.loads((out_dir / "report.json").read_text())
    assert [(a["run"], a["phase"], a["attempt"], a["status"]) for a in rebuilt["attempts"]] == [
        (a["run"], a["phase"], a["attempt"], a["status"]) for a in data["attempts"]
    ]
    assert rebuilt["run_a_without_multichip"]["phase_a_offline"] == "PASS"


def test_a_rebuild_judges_the_recorded_facts_again_with_todays_rules(tmp_path):
    """`report DIR` reads the evidence and judges it again: a phase record whose stored judgement
    is stale (an older rule blamed vllm) is judged from its raw exit facts (stopped at timeout_cap
    while still printing: TIMEOUT-CAP, no component blamed)."""
    from modelverify_kernel import runs

    params = mv_params.validate({"model_path": "/m", "output_dir": str(tmp_path)})
    Verification(params=params, target=None).save_state()
    log = tmp_path / "logs" / "run_b_offline.log"
    log.parent.mkdir()
    log.write_text("compiling kernels 99%\n", encoding="utf-8")
    stale = records.PhaseResult(
        run="run_b",
        phase="offline",
        status="FAIL",
        error="old words",
        diagnosis={"component": "vllm", "rule": "OLD-RULE"},
        timed_out=True,
        duration_s=40.0,
        log=str(log),
        exit=records.PhaseExit(
            timeout=10,
            timeout_param="offline_timeout",
            cap=40,
            ended_by="cap",
            idle_s=0.5,
            ran_s=40.0,
            last_line="compiling kernels 99%",
            progress_window=runs.progress_window(10),
        ),
    )
    runs.save_phase(stale, tmp_path)
    judged = Verification.resume(tmp_path).runs["run_b"]["offline"]
    assert (judged.diagnosis["rule"], judged.diagnosis["component"]) == ("TIMEOUT-CAP", "none")
    assert "timeout_cap=40 s" in judged.error and judged.status == "FAIL"
    assert Verification.resume(tmp_path).verdict.conclusion == "INCOMPLETE"  # the rest never ran
