"""Step 3: what the target holds — versions, plugins, devices.

Runs `container_scripts/probe_stack.py` inside the target with `target_python`. Its answer
proves that Python can import vLLM (else the pre-check fails, before any engine starts, with one
sentence naming `target_python`), sets the default TP, refuses a TP larger than the devices,
decides whether Run B has anything to test, and is the report's environment fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .target import Target

PROBE_TIMEOUT_S = 180  # the probe's own `import vllm` may take up to 120 s


class ProbeError(UserError):
    """The probe could not run, answered nonsense, or found no usable vLLM (`probe`: what it did find)."""

    def __init__(self, message: str, probe: Probe | None = None) -> None:
        super().__init__(message)
        self.probe = probe


@dataclass(frozen=True)
class Probe:
    data: dict[str, Any]

    @property
    def device_count(self) -> int:
        count = self.data.get("devices", {}).get("count")
        return count if isinstance(count, int) and count > 0 else 1

    @property
    def multichip_present(self) -> dict[str, bool]:
        return dict(self.data.get("multichip_present", {}))

    @property
    def owners(self) -> dict[str, Any]:
        """What is installed in the target (probe_stack.py's ``owners``): the classifier's
        ``installed=`` map for this run's logs ({} from a probe that did not record it)."""
        owners = self.data.get("owners")
        return dict(owners) if isinstance(owners, dict) else {}

    def vllm_problem(self) -> str | None:
        """What stops this Python from importing vLLM, if anything (a slow import is not proof)."""
        check = self.data.get("vllm_import") or {}  # None: the probe was told not to check
        if check.get("ok") is False:
            return str(check.get("error") or "import vllm failed")
        return None

    def any_multichip(self) -> bool:
        """Run B has something to test only if FlagGems, FlagTree or FlagCX is there."""
        present = self.multichip_present
        return any(present.get(k) for k in ("FlagGems", "FlagTree", "FlagCX"))


def run_probe(
    target: Target,
    scripts: str,
    flagcx_path: str | None,
    out_dir: Path,
    env: dict[str, str] | None = None,
) -> Probe:
    """Probe with the variables both runs share (`env`), so it sees what the runs will see."""
    remote = target.work_path("probe.json")
    argv = [target.python(), f"{scripts}/probe_stack.py", "--output", remote]
    if flagcx_path:
        argv += ["--flagcx-path", flagcx_path]
    log = out_dir / "logs" / "probe.log"
    res = target.run(argv, env_set=env or {}, env_unset=[], timeout=PROBE_TIMEOUT_S, log_path=log)
    local = out_dir / "results" / "probe.json"
    python = target.python()
    if res.start_error:
        raise ProbeError(
            f"Parameter target_python: the stack probe cannot start {python} in the target "
            f"({res.start_error.rstrip('.')}); "
            f"set target_python to the Python that has vLLM there, e.g. -p target_python /opt/venv/bin/python."
        )
    if res.timed_out:
        raise ProbeError(f"The stack probe did not finish in {PROBE_TIMEOUT_S} s; see {log}.")
    if res.exit_code != 0 or not target.fetch(remote, local):
        raise ProbeError(
            f"Parameter target_python: the stack probe run with {python} failed with exit code "
            f"{res.exit_code} (is it a Python 3 in the target?); see {log}."
        )
    try:
        probe = Probe(json.loads(local.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ProbeError(f"The stack probe wrote unreadable JSON to {local}: {exc.msg}.") from None
    problem = probe.vllm_problem()
    if problem:
        ran = probe.data.get("executable") or python
        where = python if ran == python else f"{python} ({ran})"
        raise ProbeError(
            f"Parameter target_python: {where} in the target cannot import vLLM ({problem.rstrip('.')}); "
            f"set target_python to the Python where vLLM is installed and imports, "
            f"e.g. -p target_python /opt/venv/bin/python.",
            probe,
        )
    return probe
