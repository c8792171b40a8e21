"""Step 4: make sure the model is in the target.

A local path must hold `config.json` inside the target (the error names the exact path it
checked). A hub ID ("org/name") is downloaded inside the target — ModelScope by default,
Hugging Face on request — under `models_dir`, and skipped when already there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import UserError
from .params import MODEL_ID, Params
from .target import LocalTarget, Target
from .vocabulary import Layout


class ModelError(UserError):
    """The model is not where the parameters say, or could not be downloaded."""


@dataclass
class ModelStep:
    """Where the model is inside the target, and how it got there."""

    requested: str
    path: str | None = None
    kind: str = "local"  # local | remote
    status: str = "FAIL"
    error: str | None = None
    download: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def classify_model_path(model_path: str, target: Target) -> str:
    """'local' for a path, 'remote' for a hub ID."""
    if model_path.startswith(("/", "./", "../", "~")):
        return "local"
    if isinstance(target, LocalTarget) and Path(model_path).exists():
        return "local"
    if MODEL_ID.match(model_path):
        return "remote"
    raise ModelError(
        f"model_path {model_path!r} is neither an absolute path inside the target nor a hub ID "
        f"of the form org/name; give e.g. /data/models/Qwen3-0.6B or Qwen/Qwen3-0.6B."
    )


def resolve_model(params: Params, target: Target, scripts: str, out_dir: Path) -> ModelStep:
    step = ModelStep(requested=params.model_path)
    step.kind = classify_model_path(params.model_path, target)
    if step.kind == "local":
        path = params.model_path
        if isinstance(target, LocalTarget):
            path = str(Path(path).expanduser().resolve())
        config = str(PurePosixPath(path) / "config.json")
        if not target.path_exists(config):
            raise ModelError(
                f"Model path not found: {config} does not exist in the target; check model_path "
                f"(a folder inside the target holding config.json)."
            )
        step.path, step.status = path, "PASS"
        return step

    name = params.model_path.split("/")[-1]
    dest = str(PurePosixPath(params.models_dir) / name)
    step.path = dest
    remote_result = target.work_path("download.json")
    argv = [
        target.python(),
        f"{scripts}/download_model.py",
        "--model-id",
        params.model_path,
        "--source",
        params.model_source,
        "--dest",
        dest,
        "--output",
        remote_result,
    ]
    log = Layout(out_dir).step_log("download")
    res = target.run(
        argv, env_set=dict(params.env), env_unset=[], timeout=params.download_timeout, log_path=log
    )
    local = Layout(out_dir).step_result("download")
    if res.timed_out:
        raise ModelError(
            f"Downloading {params.model_path} did not finish in {params.download_timeout} s; "
            f"raise download_timeout or download it into the target yourself (log: {log})."
        )
    if target.fetch(remote_result, local):
        step.download = json.loads(local.read_text(encoding="utf-8"))
    if res.exit_code != 0:
        cause = step.download.get("error") or f"exit code {res.exit_code}"
        raise ModelError(
            f"Downloading {params.model_path} from {params.model_source} failed: {cause} (log: {log})."
        )
    step.status = "PASS"
    return step
