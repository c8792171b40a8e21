"""Shared fixtures: the demo model (built once per session) and process-leftover checks."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from modelverify_kernel.demo import build_demo_model

REPO = Path(__file__).resolve().parents[1]
# vLLM for CPU on this kind of machine needs a small KV cache request (FACTS.md).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
DEMO_ENGINE_ARGS = ["--enforce-eager", "--dtype", "float32"]


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "tiny-llama")


def assert_demo_report_on_this_machine(data: dict, out_dir: Path) -> None:
    """The demo model here: Run A passes both phases; no FlagOS package, so Run B is skipped."""
    from modelverify_kernel import report

    report.validate(data)
    assert report.embedded_json((out_dir / "report.html").read_text()) == data
    run_a = data["run_a_without_multichip"]
    assert (run_a["phase_a_offline"], run_a["phase_b_serve"]) == ("PASS", "PASS")
    assert run_a["output_sample"]
    assert data["run_b_with_multichip"]["skipped"] is True
    assert data["diff_analysis"]["conclusion"] == "RUN_B_SKIPPED"
    assert (data["status"], data["diff_analysis"]["recommended_stack"]) == ("PARTIAL", "base")
    for rel in data["artifacts"]["logs"].values():
        assert (out_dir / rel).is_file()


def processes_with_env(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (NAME=value): a run's own processes."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def marker(monkeypatch):
    """Every process of the test inherits this variable: the way to find leftovers."""
    name, value = "MV_FAULT_MARKER", uuid.uuid4().hex
    monkeypatch.setenv(name, value)
    return f"{name}={value}"


@pytest.fixture
def no_leftovers(marker, tmp_path):
    """After the test: no process of the run, no temporary folder of ours outside the output."""
    before = set(Path("/tmp").glob("modelverify-*"))
    ports: list[int] = []
    yield ports
    deadline = time.monotonic() + 10
    while processes_with_env(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with_env(marker) == [], "processes of the run are still alive"
    assert set(Path("/tmp").glob("modelverify-*")) - before == set(), "temporary files left behind"
    for work in Path(tmp_path).glob("**/.work"):
        assert not any(work.iterdir()), f"{work} was not cleaned up"
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # raises if anything still holds it
