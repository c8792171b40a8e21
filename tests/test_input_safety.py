"""Issue 6: hostile and mistaken input runs nothing, secrets stay out of every file, remote
code runs only when asked — on the real engine, through the real pipeline and papermill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import papermill as pm
import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO

from modelverify_kernel.errors import ParameterError
from modelverify_kernel.params import from_namespace, validate
from modelverify_kernel.pipeline import Verification

pytestmark = pytest.mark.usefixtures(
    "no_leftovers"
)  # conftest: no process, temp folder or port left
NOTEBOOK = REPO / "notebooks" / "verify.ipynb"
FAKE_PLUGIN_SITE = REPO / "tests" / "fake_stack" / "site"
SECRETS = {
    "HF_TOKEN": "hf_PLANTED_secret_value_123",
    "MODELSCOPE_API_TOKEN": "ms-PLANTED-456",
    "MY_SERVICE_PASSWORD": "pw-PLANTED-789",
    "VLLM_FL_ACCESS_KEY": "key-PLANTED-000",  # the probe records VLLM_FL_* variables
}


def hostile(marker: Path) -> list[str]:
    """Shell syntax that would create `marker` if anything ever ran it through a shell."""
    m = str(marker)
    return [f"; touch {m}", f"$(touch {m})", f"`touch {m}`", f"x && touch {m}", f"| touch {m}"]


def _verify(params):
    v = Verification.run_all(params)
    return v, json.loads((v.out_dir / "report.json").read_text())


@pytest.mark.parametrize("field", ["model_path", "container", "extra_vllm_args", "prompts_file"])
def test_newlines_and_shell_syntax_in_parameters(tmp_path, field):
    marker = tmp_path / "pwned"
    for value in hostile(marker) + [f"/models/x\ntouch {marker}"]:
        values = {"model_path": "/models/m", "output_dir": str(tmp_path / "out"), field: value}
        try:
            p = validate(values)
        except ParameterError as exc:
            assert field in str(exc)
            continue
        if field == "extra_vllm_args":  # split like a shell would, never run by one
            assert "".join(p.extra_vllm_args) == "".join(value.split())
    assert not marker.exists()


@pytest.mark.process
def test_hostile_model_paths_and_ids_end_in_a_fail_report_and_run_nothing(
    tmp_path, demo_model, monkeypatch
):
    """Every value goes through the whole run (run_all); the probe, which never sees model_path,
    runs for real once and its finding is reused for the other values (it proves `import vllm`
    in a child: 5-9 s each)."""
    from modelverify_kernel import pipeline

    probed: list = []

    def probe_once(*args, **kwargs):
        if not probed:
            probed.append(real_probe(*args, **kwargs))
        return probed[0]

    real_probe = pipeline.run_probe
    monkeypatch.setattr(pipeline, "run_probe", probe_once)
    marker = tmp_path / "pwned"
    values = (
        hostile(marker)
        + [f"/tmp/{v}" for v in hostile(marker)]
        + [f"Qwen/Qwen3{v}" for v in hostile(marker)]
    )
    for i, model_path in enumerate(values):
        params = validate({"model_path": model_path, "output_dir": str(tmp_path / f"out{i}")})
        v, data = _verify(params)
        assert data["status"] == "FAIL" and data["diff_analysis"]["conclusion"] == "PRECHECK_FAILED"
        assert data["precheck"]["error"]
        assert not (v.out_dir / "logs" / "run_a_offline.log").exists()  # no engine started
    assert not marker.exists()


def test_unknown_papermill_parameter_is_reported(tmp_path):
    with pytest.raises(ParameterError, match="Unknown parameter tp_sise .did you mean tp_size"):
        from_namespace({"model_path": "/m", "tp_sise": 2})


@pytest.mark.process
def test_unknown_parameter_through_papermill(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as exc:
        pm.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "nb.ipynb"),
            cwd=str(REPO),
            kernel_name="python3",
            progress_bar=False,
            parameters={"model_path": "/m", "max_token": 8, "output_dir": str(tmp_path / "out")},
        )
    assert exc.value.ename == "ParameterError" and "max_token" in exc.value.evalue
    assert not (tmp_path / "out").exists()


def test_secret_as_a_parameter_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="HF_TOKEN"):
        validate({"model_path": "/m", "run_b_env": {"HF_TOKEN": "hf_abc"}})


@pytest.mark.engine
def test_planted_secrets_appear_in_no_file_and_hostile_engine_arguments_run_nothing(
    tmp_path, demo_model, monkeypatch
):
    """One notebook run for two promises. The stand-in plugin (mode `leak`) prints HF_TOKEN into
    Run B's engine log, as a careless plugin would; the probe records VLLM_FL_* variables. Nothing
    may carry the values. And shell syntax in extra_vllm_args reaches vLLM as plain strings."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    marker = tmp_path / "pwned"
    names = " ".join(f"'{v}'" for v in hostile(marker))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    notebook = out_dir / "verify.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(notebook),
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
        parameters=dict(
            model_path=str(demo_model),
            output_dir=str(out_dir),
            max_model_len=512,
            env=dict(CPU_ENV, PYTHONPATH=str(FAKE_PLUGIN_SITE)),
            run_b="always",
            run_b_env={"USE_FLAGGEMS": "1", "VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "leak"},
            extra_vllm_args=" ".join(DEMO_ENGINE_ARGS) + f" --served-model-name {names}",
        ),
    )
    serve = json.loads((out_dir / "report.json").read_text())["run_a_without_multichip"]["phases"][
        "serve"
    ]
    assert serve["status"] == "PASS", serve["error"]
    served = json.loads((out_dir / "results" / "run_a_serve.json").read_text())["served_models"]
    assert served == hostile(marker)  # every served name verbatim, none run
    assert not marker.exists()
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert {"report.json", "report.html", "verify.ipynb", "run_b_offline.log", "probe.json"} <= {
        p.name for p in files
    }
    for path in files:
        text = path.read_text(errors="replace")
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {path}"
    # the leak was real and got masked, not avoided
    assert "HF_TOKEN=***" in (out_dir / "logs" / "run_b_offline.log").read_text()
    probe_env = json.loads((out_dir / "report.json").read_text())["environment"]["probe"]["env"]
    assert probe_env["VLLM_FL_ACCESS_KEY"] == "***"


@pytest.mark.engine
def test_remote_code_runs_only_when_asked_and_the_diagnosis_says_so(tmp_path, demo_model):
    model = tmp_path / "needs-remote-code"
    shutil.copytree(demo_model, model)
    config = json.loads((model / "config.json").read_text())
    config.update(
        model_type="tinyremote",
        architectures=["TinyRemoteForCausalLM"],
        auto_map={"AutoConfig": "configuration_tinyremote.TinyRemoteConfig"},
    )
    (model / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "remote-code-ran"
    (model / "configuration_tinyremote.py").write_text(
        f"open({str(ran)!r}, 'w').close()\n"
        "from transformers import LlamaConfig\n\n"
        "class TinyRemoteConfig(LlamaConfig):\n    model_type = 'tinyremote'\n"
    )
    params = validate(
        {
            "model_path": str(model),
            "output_dir": str(tmp_path / "out"),
            "env": CPU_ENV,
            "extra_vllm_args": DEMO_ENGINE_ARGS,
            "offline_timeout": 120,
            "serve_timeout": 120,
        }
    )
    v, data = _verify(params)
    assert not ran.exists(), "the model's own code ran without trust_remote_code"
    offline = data["run_a_without_multichip"]["phases"]["offline"]
    assert offline["status"] == "FAIL"
    assert "--trust-remote-code" not in offline["command"]
    d = offline["diagnosis"]
    assert (d["component"], d["layer"]) == ("model", 2)
    assert "trust_remote_code" in d["hint"]


@pytest.mark.engine
def test_both_runs_failing_report_both_errors(tmp_path, demo_model):
    """Seed: "Run A and Run B both fail → report both errors separately"; Run B runs anyway.
    The demo model has 512 positions: vLLM refuses max_model_len=4096 while starting, and the
    serve phase ends on the server's own cause, never waiting out health_timeout (300 s)."""
    params = validate(
        {
            "model_path": str(demo_model),
            "output_dir": str(tmp_path / "out"),
            "env": CPU_ENV,
            "extra_vllm_args": DEMO_ENGINE_ARGS,
            "max_model_len": 4096,
            "run_b": "always",
        }
    )
    v, data = _verify(params)
    for key in ("run_a_without_multichip", "run_b_with_multichip"):
        run = data[key]
        assert (run["phase_a_offline"], run["phase_b_serve"]) == ("FAIL", "FAIL")
        assert len(run["errors"]) == 2 and all("4096" in e["error"] for e in run["errors"])
        serve = run["phases"]["serve"]
        assert not serve["timed_out"] and "512" in serve["error"], serve["error"]
        assert "server exited" not in serve["error"]  # the server's own cause, not our wait loop
        assert serve["diagnosis"]["component"] == "resources" and serve["diagnosis"]["evidence"]
    assert data["diff_analysis"]["conclusion"] == "SAME_ERROR"
    assert data["diff_analysis"]["component"] == "resources"
