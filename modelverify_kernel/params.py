"""Step 1 of the data flow: the notebook's parameters as one validated, frozen object.

Every parameter is checked here, before anything starts, and a bad one is refused with a
sentence that names it and shows a correct example.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ParameterError
from .redact import is_secret_name
from .vocabulary import PARALLEL_RUNS

EXAMPLE = (
    "papermill notebooks/verify.ipynb out.ipynb -p model_path /data/models/Qwen3-0.6B "
    "-p container my-vllm-container"
)
# A hub model ID: "org/name" (ModelScope and Hugging Face share the form).
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Each run's default flags live in vocabulary (RUN_A_ENV …); the run_*_env parameters add to them.


@dataclass(frozen=True)
class Params:
    """What one verification run was asked to do (recorded whole in the report)."""

    model_path: str
    container: str | None = None
    tp_size: int | None = None
    extra_vllm_args: tuple[str, ...] = ()
    trust_remote_code: bool = False
    output_dir: str = "outputs/run"
    max_model_len: int | None = None
    max_tokens: int = 16
    prompts_file: str | None = None
    model_source: str = "modelscope"
    models_dir: str = "/data/models"
    download_timeout: int = 600
    offline_timeout: int = 300
    serve_timeout: int = 360
    health_timeout: int = 300
    request_timeout: int = 120
    timeout_cap: int = 1800
    port: int = 0
    run_b: str = "auto"
    tie_tolerance: float = 0.02
    logprob_tolerance: float = 0.05
    systematic_shift: float | None = None  # None: shift_p90 of references/output-comparison.md
    repeat_fraction: float = 0.8
    env: Mapping[str, str] = field(default_factory=dict)
    run_a_env: Mapping[str, str] = field(default_factory=dict)  # added to RUN_A_ENV
    run_a_unset: tuple[str, ...] = ()  # added to RUN_A_UNSET, removed from RUN_A_ENV
    run_b_env: Mapping[str, str] = field(default_factory=dict)  # added to RUN_B_ENV
    run_b_unset: tuple[str, ...] = ()  # added to RUN_B_UNSET, removed from RUN_B_ENV
    target_python: str | None = None
    docker_host: str | None = None
    target_label: str | None = (
        None  # the target's name in fleet summaries; None: derived (report.target_label)
    )
    keep_files: bool = False
    fail_on: str = "never"  # never | fail | partial: make papermill fail on the verdict
    parallel_runs: str = (
        "auto"  # auto: Run A and Run B side by side when the target has 2 × TP devices; off
    )
    # The culprit-op search (bisect.py): on by default when Run B fails or diverges with FlagGems active.
    bisect: bool = True
    bisect_max_steps: int = (
        24  # search steps (phase runs) before it stops; the 2 confirming runs come on top
    )
    bisect_timeout: int = 3600  # seconds the search may spend before it stops
    # The notebook's "Debugging a failing run" cells: re-run one phase once more, changed.
    debug_rerun: str | None = (
        None  # RUN:PHASE, e.g. run_b:serve; None: the debugging cells do nothing
    )
    debug_env: Mapping[str, str] = field(default_factory=dict)  # set for that attempt only
    debug_unset: tuple[str, ...] = ()  # removed for that attempt only
    debug_extra_vllm_args: tuple[str, ...] | None = (
        None  # that attempt's extra_vllm_args; None: unchanged
    )

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir).resolve()

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


PARAMETER_NAMES = tuple(f.name for f in fields(Params))


def _fail(name: str, problem: str, example: str) -> ParameterError:
    return ParameterError(f"Parameter {name} {problem}; for example: -p {name} {example}")


def _opt_int(name: str, value: Any, example: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    return _int(name, value, example, minimum)


def _int(name: str, value: Any, example: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        else:
            raise _fail(name, f"must be an integer, got {value!r}", example)
    if value < minimum:
        raise _fail(name, f"must be at least {minimum}, got {value}", example)
    return value


def _fraction(name: str, value: Any, example: str, upper: float) -> float:
    """A non-negative number up to `upper` (nats for tolerances, a share for fractions)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(name, f"must be a number, got {value!r}", example)
    try:
        number = float(value)
    except ValueError:
        raise _fail(name, f"must be a number, got {value!r}", example) from None
    if not 0 <= number <= upper:
        raise _fail(name, f"must be between 0 and {upper}, got {number}", example)
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _fail(name, f"must be True or False, got {value!r}", "True")


def _str_list(name: str, value: Any, example: str) -> tuple[str, ...]:
    """A JSON list, a shell-like string (split with shlex, never executed) or a list."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _fail(name, f"is not a valid JSON list ({exc.msg})", example) from None
        else:
            try:
                value = shlex.split(text)
            except ValueError as exc:
                raise _fail(name, f"cannot be split into arguments ({exc})", example) from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _fail(name, f"must be a list of strings, got {value!r}", example)
    return tuple(value)


def _port(value: Any) -> int:
    port = _int("port", value, "8000 (or 0 for a free port)", minimum=0)
    if port > 65535:
        raise _fail("port", f"must be at most 65535, got {port}", "8000 (or 0 for a free port)")
    return port


def _env(name: str, value: Any) -> Mapping[str, str]:
    example = '\'{"VLLM_CPU_KVCACHE_SPACE": "1"}\' (with -y or -p)'
    if value is None:
        return MappingProxyType({})
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _fail(name, "is not a JSON object of variables", example) from None
    if not isinstance(value, Mapping):
        raise _fail(name, f"must be a mapping of variable names to values, got {value!r}", example)
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise _fail(name, f"has an invalid variable name {key!r}", example)
        if not isinstance(val, (str, int, float)) or isinstance(val, bool):
            raise _fail(name, f"has a non-string value for {key}", example)
        if is_secret_name(key):
            raise ParameterError(
                f"Parameter {name} holds the secret {key}: papermill writes parameters into the "
                f"executed notebook, so set {key} in the environment of the target (or of the "
                f"notebook for the local target) instead."
            )
        out[key] = str(val)
    return MappingProxyType(out)


def _names(name: str, value: Any) -> tuple[str, ...]:
    names = _str_list(name, value, "'[\"FLAGCX_PATH\"]'")
    for n in names:
        if not ENV_NAME.match(n):
            raise _fail(name, f"has an invalid variable name {n!r}", "'[\"FLAGCX_PATH\"]'")
    return names


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(name, f"must be one of {', '.join(choices)}, got {value!r}", choices[0])
    return value


def _opt_str(name: str, value: Any, example: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(name, f"must be a string, got {value!r}", example)
    if "\n" in value or "\x00" in value:
        raise _fail(name, "must be a single line", example)
    return value


def _docker_host(value: Any) -> str | None:
    """A daemon address the docker SDK understands: unix://, tcp:// or ssh://."""
    example = "unix:///var/run/docker.sock"
    host = _opt_str("docker_host", value, example)
    if host is not None and not re.match(r"^(unix|tcp|ssh|http|https)://\S+$", host):
        raise _fail(
            "docker_host", f"must be a unix://, tcp:// or ssh:// address, got {host!r}", example
        )
    return host


def validate(values: Mapping[str, Any]) -> Params:
    """Check every parameter and build the frozen `Params`."""
    model_path = values.get("model_path")
    if model_path is None or (isinstance(model_path, str) and not model_path.strip()):
        raise ParameterError(
            f"Parameter model_path is required: give the model folder inside the target or a "
            f"hub ID, for example: {EXAMPLE}"
        )
    model_path = _opt_str("model_path", model_path, "/data/models/Qwen3-0.6B")
    container = _opt_str("container", values.get("container"), "my-vllm-container")
    if container is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", container):
        raise _fail(
            "container", f"is not a container name or id: {container!r}", "my-vllm-container"
        )
    d = Params(model_path=model_path)  # defaults
    get = lambda name: values.get(name, getattr(d, name))  # noqa: E731
    return Params(
        model_path=model_path,
        container=container,
        tp_size=_opt_int("tp_size", get("tp_size"), "8"),
        extra_vllm_args=_str_list(
            "extra_vllm_args", get("extra_vllm_args"), "'--enforce-eager --max-num-seqs 8'"
        ),
        trust_remote_code=_bool("trust_remote_code", get("trust_remote_code")),
        output_dir=_opt_str("output_dir", get("output_dir"), "outputs/my-model") or d.output_dir,
        max_model_len=_opt_int("max_model_len", get("max_model_len"), "4096"),
        max_tokens=_int("max_tokens", get("max_tokens"), "16"),
        prompts_file=_opt_str("prompts_file", get("prompts_file"), "prompts.json"),
        model_source=_choice("model_source", get("model_source"), ("modelscope", "huggingface")),
        models_dir=_opt_str("models_dir", get("models_dir"), "/data/models") or d.models_dir,
        download_timeout=_int("download_timeout", get("download_timeout"), "600"),
        offline_timeout=_int("offline_timeout", get("offline_timeout"), "300"),
        serve_timeout=_int("serve_timeout", get("serve_timeout"), "360"),
        health_timeout=_int("health_timeout", get("health_timeout"), "300"),
        request_timeout=_int("request_timeout", get("request_timeout"), "120"),
        timeout_cap=_int("timeout_cap", get("timeout_cap"), "1800"),
        port=_port(get("port")),
        run_b=_choice("run_b", get("run_b"), ("auto", "always", "never")),
        tie_tolerance=_fraction("tie_tolerance", get("tie_tolerance"), "0.02", upper=10.0),
        logprob_tolerance=_fraction(
            "logprob_tolerance", get("logprob_tolerance"), "0.05", upper=10.0
        ),
        systematic_shift=None
        if get("systematic_shift") is None
        else _fraction("systematic_shift", get("systematic_shift"), "0.006", upper=10.0),
        repeat_fraction=_fraction("repeat_fraction", get("repeat_fraction"), "0.8", upper=1.0),
        env=_env("env", get("env")),
        run_a_env=_env("run_a_env", get("run_a_env")),
        run_a_unset=_names("run_a_unset", get("run_a_unset")),
        run_b_env=_env("run_b_env", get("run_b_env")),
        run_b_unset=_names("run_b_unset", get("run_b_unset")),
        target_python=_opt_str("target_python", get("target_python"), "python3"),
        docker_host=_docker_host(get("docker_host")),
        target_label=_opt_str("target_label", get("target_label"), "h100-node-3"),
        keep_files=_bool("keep_files", get("keep_files")),
        fail_on=_choice("fail_on", get("fail_on"), ("never", "fail", "partial")),
        parallel_runs=_choice("parallel_runs", get("parallel_runs"), PARALLEL_RUNS),
        bisect=_bool("bisect", get("bisect")),
        bisect_max_steps=_int("bisect_max_steps", get("bisect_max_steps"), "24"),
        bisect_timeout=_int("bisect_timeout", get("bisect_timeout"), "3600"),
        debug_rerun=None
        if get("debug_rerun") is None
        else _choice("debug_rerun", get("debug_rerun"), DEBUG_RERUNS),
        debug_env=_env("debug_env", get("debug_env")),
        debug_unset=_names("debug_unset", get("debug_unset")),
        debug_extra_vllm_args=None
        if get("debug_extra_vllm_args") is None
        else _str_list("debug_extra_vllm_args", get("debug_extra_vllm_args"), "'--enforce-eager'"),
    )


DEBUG_RERUNS = ("run_a:offline", "run_a:serve", "run_b:offline", "run_b:serve")

# Names IPython itself puts in a notebook's namespace.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_PARAMETER_TYPES = (str, int, float, bool, list, dict, type(None))


PAPERMILL_CELL_HEADER = "# Parameters"  # the first line of the cell papermill injects


def _parameter_cell_names(history: list[Any]) -> set[str] | None:
    """Names assigned in the last parameters cell the kernel ran: papermill's injected cell, or the
    notebook's own tagged one when it ran alone; None when the kernel ran neither."""
    for source in reversed(history):
        if not isinstance(source, str):
            continue
        first = source.lstrip().split("\n", 1)[0].strip()
        if first != PAPERMILL_CELL_HEADER and not first.startswith(PAPERMILL_CELL_HEADER + ":"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        names = set()
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        return names
    return None


def unknown_parameters(namespace: Mapping[str, Any]) -> list[str]:
    """Names given as parameters that are no parameter: a mistyped `-p name value`.

    In a kernel the parameters are what the last parameters cell assigned (IPython keeps every
    cell it ran in `In`), so the notebook's own variables — `v`, `comparisons`, … — never count,
    and the notebook re-executes in the same kernel. Without that history (a plain namespace),
    every data name that is not private counts.
    """
    history = namespace.get("In")
    given = _parameter_cell_names(history) if isinstance(history, list) else None
    if given is not None:
        return sorted(k for k in given if k not in PARAMETER_NAMES)
    return sorted(
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in PARAMETER_NAMES
        and k not in _KERNEL_NAMES
        and isinstance(v, _PARAMETER_TYPES)
    )


def from_namespace(namespace: Mapping[str, Any]) -> Params:
    """Build `Params` from the notebook's globals; a name that is no parameter is refused."""
    unknown = unknown_parameters(namespace)
    if unknown:
        close = difflib.get_close_matches(unknown[0], PARAMETER_NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ParameterError(
            f"Unknown parameter {unknown[0]}{hint}: it would be ignored; "
            f"`model-verify run --help-notebook` (or `papermill --help-notebook notebooks/verify.ipynb`) lists the parameters."
        )
    return validate({name: namespace[name] for name in PARAMETER_NAMES if name in namespace})
