"""The model step: local paths checked in the target, hub IDs downloaded inside it (real
download_model.py in a real subprocess; no hub is reachable here, so a download that is needed
fails, with its cause)."""

import shutil

import pytest

from modelverify_kernel.model import ModelError, resolve_model
from modelverify_kernel.params import validate
from modelverify_kernel.target import SCRIPTS_DIR, LocalTarget

pytestmark = pytest.mark.process


@pytest.fixture
def target(tmp_path):
    t = LocalTarget(work_root=tmp_path / ".work")
    yield t
    t.cleanup()


def test_hub_id_already_downloaded_is_skipped(tmp_path, demo_model, target):
    models = tmp_path / "models"
    shutil.copytree(demo_model, models / "tiny-llama")
    params = validate(
        {"model_path": "someorg/tiny-llama", "models_dir": str(models), "output_dir": str(tmp_path)}
    )
    step = resolve_model(params, target, target.install_scripts(SCRIPTS_DIR), tmp_path)
    assert (step.kind, step.status, step.path) == ("remote", "PASS", str(models / "tiny-llama"))
    assert step.download["skipped"] is True and step.download["source"] == "modelscope"
    assert (tmp_path / "results" / "download.json").is_file() and (
        tmp_path / "logs" / "download.log"
    ).is_file()


@pytest.mark.parametrize("source", ["modelscope", "huggingface"])
def test_hub_download_that_cannot_happen_is_one_clear_error(tmp_path, target, source):
    params = validate(
        {
            "model_path": "someorg/not-here",
            "models_dir": str(tmp_path / "models"),
            "model_source": source,
            "output_dir": str(tmp_path),
            "download_timeout": 120,
        }
    )
    with pytest.raises(ModelError) as exc:
        resolve_model(params, target, target.install_scripts(SCRIPTS_DIR), tmp_path)
    msg = str(exc.value)
    assert msg.startswith(f"Downloading someorg/not-here from {source} failed: ")
    assert "\n" not in msg and "download.log" in msg


def test_local_path_without_config_names_the_exact_path(tmp_path, target):
    (tmp_path / "m").mkdir()
    params = validate({"model_path": str(tmp_path / "m"), "output_dir": str(tmp_path)})
    with pytest.raises(ModelError, match=str(tmp_path / "m" / "config.json")):
        resolve_model(params, target, target.install_scripts(SCRIPTS_DIR), tmp_path)
