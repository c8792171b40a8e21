"""papermill executes the real notebook: a good run, and the bad-input runs of issue 2."""

import json
import shlex
import subprocess

import papermill as pm
import pytest
from conftest import REPO, assert_demo_report_on_this_machine

NOTEBOOK = REPO / "notebooks" / "verify.ipynb"


def _execute(tmp_path, **parameters):
    out = tmp_path / "verify.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters=parameters,
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )
    return out


@pytest.mark.engine
def test_good_run_on_the_demo_model(demo_run, tmp_path):
    """conftest's demo_run: the notebook on the demo model (with fail_on=partial, which only
    decides papermill's exit after everything is written; tests/test_report_html.py checks that)."""
    out_dir = demo_run["out"]
    data = json.loads((out_dir / "report.json").read_text())
    assert_demo_report_on_this_machine(data, out_dir)
    assert data["environment"]["probe"]["devices"]["count"] == 1
    # the report's command for one phase runs as written (the work folder is gone): same tokens
    assert not (out_dir / ".work").exists() or not any((out_dir / ".work").iterdir())
    again = tmp_path / "again"
    again.mkdir()
    proc = subprocess.run(
        shlex.split(data["reproduce"]["phases"]["run_a_offline"]),
        cwd=again,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    redone = json.loads((again / "run_a_offline.json").read_text())
    first = json.loads((out_dir / "results" / "run_a_offline.json").read_text())
    assert redone["status"] == "PASS"
    assert [o["token_ids"] for o in redone["outputs"]] == [o["token_ids"] for o in first["outputs"]]


@pytest.mark.process  # a notebook kernel; the pre-check stops it before any engine
def test_missing_model_path_stops_in_the_first_cells(tmp_path):
    out_dir = tmp_path / "report"
    with pytest.raises(pm.PapermillExecutionError) as exc:
        _execute(tmp_path, output_dir=str(out_dir))
    assert exc.value.ename == "ParameterError"
    assert (
        "model_path" in exc.value.evalue and "papermill notebooks/verify.ipynb" in exc.value.evalue
    )
    # nothing else started: no output folder, no logs
    assert not out_dir.exists()
    nb = json.loads((tmp_path / "verify.ipynb").read_text())
    errors = [
        o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert errors[0]["traceback"] == [f"ParameterError: {exc.value.evalue}"]


@pytest.mark.process
def test_model_path_without_config_json_writes_a_fail_report(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    out_dir = tmp_path / "report"
    _execute(tmp_path, model_path=str(empty), output_dir=str(out_dir))
    data = json.loads((out_dir / "report.json").read_text())
    assert data["status"] == "FAIL" and data["diff_analysis"]["recommended_stack"] == "none"
    assert str(empty / "config.json") in data["precheck"]["error"]
    assert data["run_a_without_multichip"]["phase_a_offline"] == "NOT_RUN"
    assert not any(k.startswith("run_") for k in data["artifacts"]["logs"])  # no engine started


@pytest.mark.process
def test_tp_larger_than_devices_is_refused_before_any_engine(tmp_path, demo_model):
    out_dir = tmp_path / "report"
    _execute(tmp_path, model_path=str(demo_model), output_dir=str(out_dir), tp_size=4)
    data = json.loads((out_dir / "report.json").read_text())
    assert "requested TP=4 but only 1 available" in data["precheck"]["error"]
    assert data["status"] == "FAIL"
    assert not (out_dir / "logs" / "run_a_offline.log").exists()
    assert "requested TP=4 but only 1 available" in (out_dir / "report.html").read_text()
