"""A batch's matrix: models × targets (YAML or JSON) → the cells, every cell's parameters checked.

The whole matrix is checked before anything runs: its shape against a JSON Schema, the names in
each `parameters` section against the notebook's parameters (`options.PARAMETER_NAMES`, less
what the batch sets itself), and every cell's merged parameters by `params.validate`, the
notebook's own check. A bad entry is one sentence naming the entry and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ParameterError, UserError
from .options import PARAMETER_NAMES
from .params import validate

THIS_MACHINE = "local"  # the per-host key of `local: true` targets and of daemons on this machine
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Parameters each cell gets from the matrix's entries, never from a `parameters` section.
SET_BY_BATCH = ("model_path", "container", "docker_host", "output_dir", "target_label")

_PARAMS = {"type": "object"}
_NAME = {"type": "string", "pattern": NAME.pattern}
SCHEMA = {
    "type": "object",
    "required": ["models", "targets"],
    "additionalProperties": False,
    "properties": {
        "parameters": _PARAMS,
        "models": {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "required": ["model_path"],
                        "additionalProperties": False,
                        "properties": {
                            "model_path": {"type": "string", "minLength": 1},
                            "name": _NAME,
                            "parameters": _PARAMS,
                        },
                    },
                ]
            },
        },
        "targets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": _NAME,
                    "container": {"type": "string", "minLength": 1},
                    "docker_host": {"type": ["string", "null"]},
                    "local": {"type": "boolean"},
                    "host": _NAME,
                    "parameters": _PARAMS,
                },
            },
        },
        "cells": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model", "target"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string"},
                    "target": {"type": "string"},
                    "skip": {"type": "boolean"},
                    "parameters": _PARAMS,
                },
            },
        },
    },
}
FIXES = {  # what to write instead, by the schema rule that failed
    "required": "add it",
    "additionalProperties": "the keys are {allowed}",
    "type": "give a {expected}",
    "minItems": "give at least one entry",
    "minLength": "give a non-empty string",
    "pattern": "use letters, digits, '.', '_' or '-' (it names the cell's folder)",
    "anyOf": "give a model_path string or a mapping with model_path (and optional name, parameters)",
}


@dataclass(frozen=True)
class Cell:
    """One verification of the matrix: a model on a target, in OUT/<model>__<target>/."""

    model: str
    target: str
    host: str  # machine whose devices the cell uses: the per-host limit counts cells by it
    parameters: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{self.model}__{self.target}"

    @property
    def label(self) -> str:
        return f"{self.model} × {self.target}"


def model_slug(model_path: str) -> str:
    """The folder name of a model: a hub ID org/name gives org--name, a path its last part."""
    text = model_path.rstrip("/")
    base = (
        text.replace("/", "--")
        if not text.startswith((".", "/")) and text.count("/") == 1
        else text.rsplit("/", 1)[-1]
    )
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"


def host_key(target: Mapping[str, Any]) -> str:
    """The machine a target's cells run on: `host` if given; this machine for `local: true`, the
    default daemon and unix:// sockets; else the daemon's host name (tcp:// and ssh:// to one
    machine are one host)."""
    if target.get("host"):
        return target["host"]
    docker_host = target.get("docker_host")
    if target.get("local") or not docker_host or docker_host.startswith("unix://"):
        return THIS_MACHINE
    return urlparse(docker_host).hostname or docker_host


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; mapping values (env, run_a_env, …) are merged key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                value = {**out[key], **value}
            out[key] = value
    return out


def _entry(path: list, data: Any) -> str:
    """`targets[1] (gpu-a)` for the schema path of an error."""
    words, node = [], data
    for part in path:
        node = node[part] if isinstance(node, (list, dict)) else None
        if isinstance(part, int):
            words[-1] += f"[{part}]"
            if isinstance(node, dict) and isinstance(
                node.get("name") or node.get("model_path"), str
            ):
                words[-1] += f" ({node.get('name') or node.get('model_path')})"
        else:
            words.append(str(part))
    return ".".join(words) or "the top level"


def _schema_error(source: str, data: Any) -> UserError | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(SCHEMA).iter_errors(data))
    if error is None:
        return None
    where = _entry(list(error.absolute_path), data)
    rule = error.validator
    if rule == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))[0]
        close = get_close_matches(extra, allowed, n=1)
        problem = f"has the unknown key {extra!r}" + (
            f" (did you mean {close[0]}?)" if close else ""
        )
        fix = FIXES[rule].format(allowed=", ".join(allowed))
    elif rule == "required":
        missing = [k for k in error.validator_value if k not in error.instance][0]
        problem, fix = f"lacks {missing}", FIXES[rule]
    else:
        problem = f"is {error.instance!r}, which does not fit ({error.message})"
        expected = (
            error.validator_value
            if isinstance(error.validator_value, str)
            else "value of the right type"
        )
        fix = FIXES.get(rule, "see the matrix format in docs/batch.md").format(expected=expected)
    return UserError(f"Matrix {source}: {where} {problem}; {fix}.")


def _check_names(source: str, where: str, section: Mapping[str, Any]) -> None:
    for name in section:
        if name in SET_BY_BATCH:
            raise UserError(
                f"Matrix {source}: {where} sets {name}, which the batch sets from the model and target "
                "entries; give it there (model_path in models, container/docker_host in targets)."
            )
        if name not in PARAMETER_NAMES:
            close = get_close_matches(name, PARAMETER_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(
                f"Matrix {source}: {where} has {name!r}, which is no parameter{hint}; "
                "`model-verify run --help-notebook` lists them."
            )


def read_matrix(path: Path) -> dict[str, Any]:
    """The matrix file as data, its shape checked against SCHEMA; a bad file is a user error."""
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"Cannot read the matrix {source} ({getattr(exc, 'strerror', None) or exc}); "
            "give a YAML or JSON file."
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"Matrix {source} is not JSON ({exc.msg} at line {exc.lineno}); fix the file."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(
            f"Matrix {source} is not YAML ({getattr(exc, 'problem', None) or 'syntax error'}{at}); "
            "fix the file."
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"Matrix {source} is not a mapping; give models: and targets: (see docs/batch.md)."
        )
    error = _schema_error(source, data)
    if error:
        raise error
    return data


def _models(source: str, data: Mapping[str, Any]) -> dict[str, dict]:
    """The models by the name of their cell folders."""
    models: dict[str, dict] = {}
    for i, entry in enumerate(data["models"]):
        entry = {"model_path": entry} if isinstance(entry, str) else entry
        slug = entry.get("name") or model_slug(entry["model_path"])
        if slug in models:
            raise UserError(
                f"Matrix {source}: models[{i}] ({entry['model_path']}) gets the name {slug}, like an "
                "earlier model; give each a distinct name: (it names the cell folders)."
            )
        _check_names(source, f"models[{i}] ({slug}).parameters", entry.get("parameters") or {})
        models[slug] = entry
    return models


def _targets(source: str, data: Mapping[str, Any]) -> dict[str, dict]:
    """The targets by name, each a container (on a daemon) or this machine."""
    targets: dict[str, dict] = {}
    for i, entry in enumerate(data["targets"]):
        name, where = entry["name"], f"targets[{i}] ({entry['name']})"
        if name in targets:
            raise UserError(
                f"Matrix {source}: {where} repeats the name {name}; give each target a distinct name."
            )
        if bool(entry.get("container")) == bool(entry.get("local")):
            raise UserError(
                f"Matrix {source}: {where} needs either container: NAME (and docker_host: unix://, "
                "tcp:// or ssh://) or local: true, not both or neither."
            )
        if entry.get("local") and entry.get("docker_host"):
            raise UserError(
                f"Matrix {source}: {where} is local: true but has a docker_host; remove one."
            )
        _check_names(source, f"{where}.parameters", entry.get("parameters") or {})
        targets[name] = entry
    return targets


def _overrides(
    source: str, data: Mapping[str, Any], models: Mapping, targets: Mapping
) -> dict[tuple[str, str], dict]:
    """The `cells` entries by (model, target)."""
    overrides: dict[tuple[str, str], dict] = {}
    for i, entry in enumerate(data.get("cells") or []):
        for key, known in (("model", models), ("target", targets)):
            if entry[key] not in known:
                raise UserError(
                    f"Matrix {source}: cells[{i}] names the {key} {entry[key]!r}, which is not in "
                    f"{key}s; use one of {', '.join(known)}."
                )
        _check_names(source, f"cells[{i}].parameters", entry.get("parameters") or {})
        overrides[(entry["model"], entry["target"])] = entry
    return overrides


def _cell_parameters(
    where: str, layers: list[Mapping[str, Any]], model: dict, target: dict, cell_dir: Path
) -> dict[str, Any]:
    """A cell's parameters, merged and validated as the notebook validates them."""
    values = _merge(*layers)
    values.update(
        model_path=model["model_path"],
        container=target.get("container"),
        docker_host=target.get("docker_host"),
        output_dir=str(cell_dir),
        target_label=target["name"],
    )
    try:
        validate(values)
    except ParameterError as exc:
        # the notebook's sentence, its `-p NAME VALUE` example spelled as the matrix writes it
        said = re.sub(r"; for example: -p (\w+) (.*)$", r"; for example \1: \2", str(exc)).rstrip(
            "."
        )
        raise UserError(f"{where}: {said}.") from None
    return values


def load_matrix(path: Path, out: Path) -> list[Cell]:
    """The cells of a matrix file, every cell's parameters validated; a bad entry is a user error."""
    source = str(path)
    data = read_matrix(path)
    models, targets = _models(source, data), _targets(source, data)
    overrides = _overrides(source, data, models, targets)
    _check_names(source, "parameters", data.get("parameters") or {})
    cells = []
    for slug, model in models.items():
        for name, target in targets.items():
            override = overrides.get((slug, name), {})
            if override.get("skip"):
                continue
            layers = [data, model, target, override]
            values = _cell_parameters(
                f"Matrix {source}, cell {slug} × {name}",
                [layer.get("parameters") or {} for layer in layers],
                model,
                target,
                Path(out).resolve() / f"{slug}__{name}",
            )
            cells.append(Cell(slug, name, host_key(target), values))
    if not cells:
        raise UserError(f"Matrix {source}: every cell is skipped; remove a skip: true from cells.")
    return cells
