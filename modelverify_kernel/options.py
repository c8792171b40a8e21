"""The notebook's parameters, each declared once: name, kind (type and check), default, group, help.

Everything else derives from `OPTIONS`: `params.Params` and its validation, the notebook's
parameters cell (papermill's `--help-notebook` reads its comments), the batch matrix's accepted
keys and docs/parameters.md. A kind is a small class that checks a value and says how the
notebook types it; a refused value is one sentence naming the parameter with an example.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import ParameterError
from .redact import is_secret_name
from .vocabulary import PARALLEL_RUNS

EXAMPLE = (
    "papermill notebooks/verify.ipynb out.ipynb -p model_path /data/models/Qwen3-0.6B "
    "-p container my-vllm-container"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_EXAMPLE = '\'{"VLLM_CPU_KVCACHE_SPACE": "1"}\' (with -y or -p)'
NAMES_EXAMPLE = "'[\"FLAGCX_PATH\"]'"


def refusal(name: str, problem: str, example: str) -> ParameterError:
    """The one sentence every refused parameter gets: what is wrong and a `-p` that works."""
    return ParameterError(f"Parameter {name} {problem}; for example: -p {name} {example}")


class Kind:
    """How a parameter's value is typed in the notebook and checked before anything runs."""

    notebook_type = "str"

    def check(self, name: str, value: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Kind):
    """An integer (a digit string counts) from `minimum` up to `maximum`."""

    example: str
    minimum: int = 1
    maximum: int | None = None
    notebook_type = "int"

    def check(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            else:
                raise refusal(name, f"must be an integer, got {value!r}", self.example)
        if value < self.minimum:
            raise refusal(name, f"must be at least {self.minimum}, got {value}", self.example)
        if self.maximum is not None and value > self.maximum:
            raise refusal(name, f"must be at most {self.maximum}, got {value}", self.example)
        return value


@dataclass(frozen=True)
class Fraction(Kind):
    """A non-negative number up to `upper` (nats for tolerances, a share for fractions)."""

    example: str
    upper: float
    notebook_type = "float"

    def check(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise refusal(name, f"must be a number, got {value!r}", self.example)
        try:
            number = float(value)
        except ValueError:
            raise refusal(name, f"must be a number, got {value!r}", self.example) from None
        if not 0 <= number <= self.upper:
            raise refusal(name, f"must be between 0 and {self.upper}, got {number}", self.example)
        return number


@dataclass(frozen=True)
class Maybe(Kind):
    """None, or what the inner kind accepts."""

    inner: Kind

    @property
    def notebook_type(self) -> str:  # type: ignore[override]
        return f"Optional[{self.inner.notebook_type}]"

    def check(self, name: str, value: Any) -> Any:
        return None if value is None else self.inner.check(name, value)


@dataclass(frozen=True)
class Bool(Kind):
    """True or False (the strings too, as `-r` passes them)."""

    notebook_type = "bool"

    def check(self, name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise refusal(name, f"must be True or False, got {value!r}", "True")


@dataclass(frozen=True)
class Choice(Kind):
    """One of a few words; the first is the example."""

    choices: tuple[str, ...]
    notebook_type = "str"

    def check(self, name: str, value: Any) -> str:
        if value not in self.choices:
            raise refusal(
                name, f"must be one of {', '.join(self.choices)}, got {value!r}", self.choices[0]
            )
        return value


@dataclass(frozen=True)
class Text(Kind):
    """A single-line string; None or "" is None. `pattern` refuses other forms with `problem`."""

    example: str
    pattern: str | None = None
    problem: str = ""
    notebook_type = "Optional[str]"

    def check(self, name: str, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise refusal(name, f"must be a string, got {value!r}", self.example)
        if "\n" in value or "\x00" in value:
            raise refusal(name, "must be a single line", self.example)
        if self.pattern is not None and not re.match(self.pattern, value):
            raise refusal(name, self.problem.format(value=value), self.example)
        return value


@dataclass(frozen=True)
class Required(Text):
    """A single-line string that must be given (the model)."""

    notebook_type = "str"

    def check(self, name: str, value: Any) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ParameterError(
                f"Parameter {name} is required: give the model folder inside the target or a "
                f"hub ID, for example: {EXAMPLE}"
            )
        return super().check(name, value)


@dataclass(frozen=True)
class Args(Kind):
    """A JSON list, a shell-like string (split with shlex, never executed) or a list of strings."""

    example: str
    notebook_type = "Union[list[str], str]"

    def check(self, name: str, value: Any) -> tuple[str, ...]:
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            value = self._split(name, value.strip())
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise refusal(name, f"must be a list of strings, got {value!r}", self.example)
        return tuple(value)

    def _split(self, name: str, text: str) -> Any:
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise refusal(name, f"is not a valid JSON list ({exc.msg})", self.example) from None
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise refusal(name, f"cannot be split into arguments ({exc})", self.example) from None


@dataclass(frozen=True)
class Names(Kind):
    """Environment variable names (to remove), as Args takes them."""

    notebook_type = "list[str]"

    def check(self, name: str, value: Any) -> tuple[str, ...]:
        names = Args(NAMES_EXAMPLE).check(name, value)
        for n in names:
            if not ENV_NAME.match(n):
                raise refusal(name, f"has an invalid variable name {n!r}", NAMES_EXAMPLE)
        return names


@dataclass(frozen=True)
class Env(Kind):
    """Environment variables to set: a mapping (or its JSON); never a secret (papermill keeps it)."""

    notebook_type = "dict[str, str]"

    def check(self, name: str, value: Any) -> Mapping[str, str]:
        if value is None:
            return MappingProxyType({})
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise refusal(name, "is not a JSON object of variables", ENV_EXAMPLE) from None
        if not isinstance(value, Mapping):
            raise refusal(
                name, f"must be a mapping of variable names to values, got {value!r}", ENV_EXAMPLE
            )
        return MappingProxyType({key: self._value(name, key, val) for key, val in value.items()})

    @staticmethod
    def _value(name: str, key: Any, val: Any) -> str:
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise refusal(name, f"has an invalid variable name {key!r}", ENV_EXAMPLE)
        if not isinstance(val, (str, int, float)) or isinstance(val, bool):
            raise refusal(name, f"has a non-string value for {key}", ENV_EXAMPLE)
        if is_secret_name(key):
            raise ParameterError(
                f"Parameter {name} holds the secret {key}: papermill writes parameters into the "
                f"executed notebook, so set {key} in the environment of the target (or of the "
                f"notebook for the local target) instead."
            )
        return str(val)


@dataclass(frozen=True)
class Option:
    """One notebook parameter. `help` is the notebook's one-line comment (and `--help-notebook`);
    `more` adds what only the reference page says."""

    name: str
    kind: Kind
    default: Any
    group: str
    help: str
    more: str = ""

    @property
    def notebook_type(self) -> str:
        """The notebook's annotation; a parameter whose default is not None is never Optional."""
        typed = self.kind.notebook_type
        if self.default is not None and typed.startswith("Optional["):
            return typed[len("Optional[") : -1]
        return typed

    def check(self, value: Any) -> Any:
        """The validated value; a Text left empty falls back to a non-None default."""
        checked = self.kind.check(self.name, value)
        return self.default if checked is None else checked


# The groups, in the order the reference page shows them, with what applies to all of a group.
GROUPS = {
    "model": "What to verify.",
    "target": "Where it runs.",
    "engine": "How vLLM is started and asked.",
    "timeouts": (
        "The seed's timeouts, in seconds. At its timeout a phase (and the serve phase's wait for "
        "`/health`) is judged: output in the last 30–60 s (a tenth of the timeout, at least 30 s) "
        "means it is still working — it runs on while output keeps coming, up to `timeout_cap`; "
        "silence means it hung: every process prints the stack of each thread into the log, then "
        "the whole process session is killed."
    ),
    "runs": (
        "The two runs' environments. Each run's defaults live in `vocabulary` (`RUN_A_ENV` …); "
        "these parameters add to them."
    ),
    "comparison": "How Run B's outputs are compared with Run A's (see docs/comparison.md).",
    "search": "The culprit-op search (docs/diagnosis.md).",
    "outcome": "What the verdict does to the notebook's exit.",
}

OPTIONS: tuple[Option, ...] = (
    Option(
        "model_path",
        Required("/data/models/Qwen3-0.6B"),
        None,
        "model",
        "required: the model folder inside the target (holds config.json), or a hub ID org/name",
        "A hub ID is downloaded inside the target under `models_dir`.",
    ),
    Option(
        "container",
        Text(
            "my-vllm-container",
            r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
            "is not a container name or id: {value!r}",
        ),
        None,
        "target",
        "name or id of a running container to verify in; None means the local target (this "
        "machine)",
        "The Docker target works through the docker SDK; the local target is the machine or "
        "container the notebook runs in.",
    ),
    Option(
        "tp_size",
        Maybe(Int("8")),
        None,
        "engine",
        "tensor parallel size; None means the number of devices the probe finds",
        'Larger than that is refused ("requested TP=X but only Y available").',
    ),
    Option(
        "extra_vllm_args",
        Args("'--enforce-eager --max-num-seqs 8'"),
        (),
        "engine",
        "vLLM engine arguments for both phases, a JSON list or a shell-like string (never "
        "executed)",
        "A string is split with `shlex`.",
    ),
    Option(
        "trust_remote_code",
        Bool(),
        False,
        "model",
        "let the model run its own code (only when you trust it)",
    ),
    Option(
        "output_dir",
        Text("outputs/my-model"),
        "outputs/run",
        "outcome",
        "where logs, results, report.json and report.html go",
    ),
    Option(
        "max_model_len",
        Maybe(Int("4096")),
        None,
        "engine",
        "passed to vLLM as --max-model-len",
    ),
    Option(
        "max_tokens",
        Int("16"),
        16,
        "engine",
        "tokens generated per prompt (greedy, top-5 logprobs)",
    ),
    Option(
        "prompts_file",
        Text("prompts.json"),
        None,
        "engine",
        "prompt set JSON inside the target; None means container_scripts/default_prompts.json",
        'Its form: `{"prompts": [...], "chat": [messages]}`.',
    ),
    Option(
        "model_source",
        Choice(("modelscope", "huggingface")),
        "modelscope",
        "model",
        "where hub IDs come from: modelscope or huggingface",
    ),
    Option(
        "models_dir",
        Text("/data/models"),
        "/data/models",
        "model",
        "where hub IDs are downloaded inside the target",
    ),
    Option("download_timeout", Int("600"), 600, "timeouts", "seconds for the model download"),
    Option(
        "offline_timeout",
        Int("300"),
        300,
        "timeouts",
        "seconds for the offline phase; past it the phase is killed with its processes",
    ),
    Option(
        "serve_timeout",
        Int("360"),
        360,
        "timeouts",
        "seconds for the serve phase (start, requests, stop)",
    ),
    Option(
        "health_timeout",
        Int("300"),
        300,
        "timeouts",
        "seconds to wait for /health inside the serve phase",
    ),
    Option(
        "request_timeout",
        Int("120"),
        120,
        "timeouts",
        "seconds per request in the serve phase",
        "The client timeout of each request.",
    ),
    Option(
        "timeout_cap",
        Int("1800"),
        1800,
        "timeouts",
        "hard cap (s) for a phase or /health wait still making progress past its timeout",
        'Stopped there it is reported as "still making progress", never blamed on a component '
        "(docs/diagnosis.md says how 1800 was chosen).",
    ),
    Option(
        "port",
        Int("8000 (or 0 for a free port)", minimum=0, maximum=65535),
        0,
        "engine",
        "port of vllm serve inside the target; 0 picks a free one",
        "vllm serve listens on 127.0.0.1.",
    ),
    Option(
        "run_b",
        Choice(("auto", "always", "never")),
        "auto",
        "runs",
        "auto (skip when no multi-chip package is found), always or never",
        "`auto` skips Run B when the probe finds none of FlagGems, FlagTree, FlagCX.",
    ),
    Option(
        "tie_tolerance",
        Fraction("0.02", upper=10.0),
        0.02,
        "comparison",
        "nats: two candidate tokens this close are a tie, a flip there is kernel noise",
    ),
    Option(
        "logprob_tolerance",
        Fraction("0.05", upper=10.0),
        0.05,
        "comparison",
        "nats: how far the same token's logprob may move between Run A and Run B",
    ),
    Option(
        "systematic_shift",
        Maybe(Fraction("0.006", upper=10.0)),
        None,
        "comparison",
        "nats: across all prompts and positions of a phase, a 90th-percentile logprob shift above this is a "
        "systematic drift; None means shift_p90 in references/output-comparison.md (0.006)",
        "Such a drift is OUTPUT_MISMATCH.",
    ),
    Option(
        "repeat_fraction",
        Fraction("0.8", upper=1.0),
        0.8,
        "comparison",
        "one token above this share of an output is garbage",
        "Only outputs of 8 tokens or more are judged.",
    ),
    Option(
        "env",
        Env(),
        {},
        "runs",
        'variables set in both runs, e.g. {"VLLM_CPU_KVCACHE_SPACE": "1"} (pass with -y)',
        'For example `-y \'env: {"VLLM_CPU_KVCACHE_SPACE": "1"}\'`.',
    ),
    Option(
        "run_a_env",
        Env(),
        {},
        "runs",
        "variables Run A sets, added to its defaults (USE_FLAGGEMS 0, VLLM_PLUGINS chosen from "
        "the probe)",
        "A value given here wins over a default (docs/gate.md: Run A is proven base).",
    ),
    Option(
        "run_a_unset",
        Names(),
        (),
        "runs",
        "variables Run A removes, added to its default (FLAGCX_PATH); also drops a default it "
        "names",
    ),
    Option(
        "run_b_env",
        Env(),
        {},
        "runs",
        "variables Run B sets, added to its defaults (USE_FLAGGEMS 1, FLAGCX_PATH /tmp/FlagCX, "
        "VLLM_PLUGINS fl)",
        "Passing only `PYTHONPATH` keeps all three defaults.",
    ),
    Option(
        "run_b_unset",
        Names(),
        (),
        "runs",
        "variables Run B removes; also drops a default it names",
    ),
    Option(
        "target_python",
        Text("python3"),
        None,
        "target",
        "Python inside the target; None means this kernel's Python (local) or python3 (container)",
        "The pre-check proves it can `import vllm` (in a child of the probe, 4–9 s here; a "
        "timed-out import is recorded, not refused): a Python without vLLM, or one that does not "
        "exist, is PRECHECK_FAILED with one sentence naming `target_python`.",
    ),
    Option(
        "docker_host",
        Text(
            "unix:///var/run/docker.sock",
            r"^(unix|tcp|ssh|http|https)://\S+$",
            "must be a unix://, tcp:// or ssh:// address, got {value!r}",
        ),
        None,
        "target",
        "Docker daemon for container (unix:// tcp:// ssh://); None means DOCKER_HOST or the "
        "default socket",
    ),
    Option(
        "target_label",
        Text("h100-node-3"),
        None,
        "target",
        "the target's name in fleet summaries (model-verify summarize); None means the container "
        "name (@docker_host when given) or local:HOSTNAME",
        "Recorded as `environment.target.label`.",
    ),
    Option(
        "keep_files",
        Bool(),
        False,
        "target",
        "keep the scripts and results copied into the target (removed at the end by default)",
    ),
    Option(
        "fail_on",
        Choice(("never", "fail", "partial")),
        "never",
        "outcome",
        "never, fail or partial: after writing every artifact, raise (papermill exits 1) on a "
        "FAIL (or also PARTIAL) verdict",
    ),
    Option(
        "parallel_runs",
        Choice(PARALLEL_RUNS),
        "auto",
        "runs",
        "auto: Run A and Run B side by side on disjoint devices (cores on CPU) when the target "
        "has 2 x TP of them; off: one after the other",
        "See docs/report.md: Runs side by side.",
    ),
    Option(
        "ablate",
        Bool(),
        True,
        "search",
        "when Run B fails or diverges, run its faulty phase again with one FlagOS component "
        "(FlagGems, FlagCX, the FL plugin) off at a time to prove which one breaks it (False: off)",
        "It runs only when Run A passed; at most one run per component.",
    ),
    Option(
        "ablate_timeout",
        Int("1800"),
        1800,
        "search",
        "seconds the component ablation may spend before it stops",
    ),
    Option(
        "bisect",
        Bool(),
        True,
        "search",
        "when Run B fails or diverges with FlagGems active, search the FlagGems kernel(s) at "
        "fault (False: off)",
        "It runs only when Run A passed.",
    ),
    Option(
        "bisect_max_steps",
        Int("24"),
        24,
        "search",
        "search steps (phase runs) before the search stops; the 2 confirming runs come on top",
        "Stopped there, the search reports how far it got.",
    ),
    Option(
        "bisect_timeout",
        Int("3600"),
        3600,
        "search",
        "seconds the search may spend before it stops",
    ),
)

OPTION = {o.name: o for o in OPTIONS}
PARAMETER_NAMES = tuple(OPTION)
