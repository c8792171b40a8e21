"""Shared fixtures: the demo model (built once per session) and process-leftover checks."""

from __future__ import annotations

import os
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
