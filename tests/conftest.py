"""Shared fixtures: the demo model (built once per session) and process-leftover checks; the
test kinds (markers) and the guard that keeps `unit` tests pure."""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from modelverify_kernel.demo import build_demo_model

REPO = Path(__file__).resolve().parents[1]
# vLLM for CPU on this kind of machine needs a small KV cache request (FACTS.md); the demo's
# engine arguments are the README's.
KV_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
ENGINE_ARGS = ["--enforce-eager", "--dtype", "float32"]
# Most engine tests run vLLM in one process for an offline phase (two for serve: the API server
# and the engine) instead of three, each importing vLLM: 20 s a phase here instead of 32, same
# tokens. The demo run (conftest) keeps vLLM's default shape, as do the fault tests that wait
# for its engine-core process; the process-tree tests use serve, which keeps a tree.
CPU_ENV = {**KV_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
DEMO_ENGINE_ARGS = [*ENGINE_ARGS, "--distributed-executor-backend", "uni"]


# What a test needs to run; pyproject.toml registers them. A test without any is `unit`; one that
# uses the private Docker daemon's fixture is `docker`.
KINDS = ("unit", "process", "engine", "docker", "browser")
SLOW_KINDS = {"engine", "docker", "browser"}  # `slow` is their alias: -m 'not slow' still works
# `make test` runs two pytest-xdist workers (--dist loadgroup). Tests that share a fixture too
# costly to build twice run on one worker: the demo run, the private Docker daemon, and a
# module's own module-scoped run (tests/test_stack_modes.py).
SHARED_SESSION_FIXTURES = {"dockerd": "docker", "demo_run": "demo_run"}


def _worker_group(item) -> str | None:
    for name, group in SHARED_SESSION_FIXTURES.items():
        if name in getattr(item, "fixturenames", ()):
            return group
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        if defs and defs[-1].scope == "module":
            return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "dockerd" in getattr(
            item, "fixturenames", ()
        ):  # tests/test_docker.py: the private daemon
            item.add_marker(pytest.mark.docker)
        kinds = {m.name for m in item.iter_markers() if m.name in KINDS}
        if not kinds:
            item.add_marker(pytest.mark.unit)
        elif "unit" in kinds and len(kinds) > 1:
            raise pytest.UsageError(
                f"{item.nodeid} is marked unit and {sorted(kinds - {'unit'})}: pick one"
            )
        if kinds & SLOW_KINDS:
            item.add_marker(pytest.mark.slow)
        group = _worker_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    if getattr(config.option, "dist", "no") != "no":
        items[:] = _longest_first(items)


def _longest_first(items: list) -> list:
    """Under xdist, the work that takes longest starts first (make test keeps this order with
    --no-loadscope-reorder): a module's shared run and the tests beside it (several whole
    notebooks in sequence on one worker), then the Docker tests, then the demo run's readers,
    then the other engine tests, then the rest. The order is the same on every worker, as
    xdist requires."""
    rank = {group: i + 1 for i, group in enumerate(SHARED_SESSION_FIXTURES.values())}

    def key(item) -> tuple:
        group = next((m.args[0] for m in item.iter_markers("xdist_group")), None)
        if group:
            return (0, rank.get(group, 0), group)
        return (1, item.get_closest_marker("engine") is None, "")

    return sorted(items, key=key)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (env CI set) nothing may be skipped: a missing dockerd, Chromium or test stack
    is a failure there (the fixtures say so too); this catches any skip they do not."""
    report = (yield).get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = (
            "failed",
            f"skipped under CI, where every test must run: {reason}",
        )


@pytest.fixture(autouse=True)
def _unit_tests_stay_pure(request, monkeypatch):
    """A `unit` test that starts a process or opens a connection fails, naming the marker to use."""
    if request.node.get_closest_marker("unit") is None:
        return
    # matplotlib's first import on a new machine runs fc-list to build its font cache: that is
    # setting up, not the test (the report's chart imports it)
    import matplotlib.font_manager  # noqa: F401

    def refuse(*args, **kwargs):
        raise AssertionError(
            f"{request.node.nodeid} is a unit test (no marker) but starts a process or opens "
            "a connection: mark it process (or engine/docker/browser)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(multiprocessing.util, "spawnv_passfds", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.05):
    """Wait for an event (a file, a process, a line): its value, or fail naming `what` after
    `timeout` s — a guard against hanging forever, not a measurement."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(poll)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "tiny-llama")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_model) -> dict:
    """The real notebook on the demo model, once per session: tests/test_notebook.py,
    test_phases.py and test_report_html.py read it. With fail_on=partial, the demo's verdict (Run
    B skipped, PARTIAL) must fail papermill after every artifact is written. Its processes carry
    `marker`, so a test can tell that none outlived it."""
    import papermill as pm

    base = tmp_path_factory.mktemp("demo_run")
    out_dir, notebook = base / "report", base / "verify.ipynb"
    name, value = "MV_DEMO_RUN_MARKER", uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as mp, pytest.raises(pm.PapermillExecutionError) as exc:
        mp.setenv(name, value)
        pm.execute_notebook(
            str(REPO / "notebooks" / "verify.ipynb"),
            str(notebook),
            cwd=str(REPO),
            kernel_name="python3",
            progress_bar=False,
            parameters={
                "model_path": str(demo_model),
                "output_dir": str(out_dir),
                "env": KV_ENV,
                "extra_vllm_args": ENGINE_ARGS,
                "max_model_len": 512,
                "fail_on": "partial",
            },
        )
    return {
        "out": out_dir,
        "notebook": notebook,
        "error": exc.value,
        "base": base,
        "marker": f"{name}={value}",
    }


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
def no_leftovers(marker, tmp_path, monkeypatch):
    """After the test: no process of the run, no temporary folder of ours outside the output.
    The test's processes get their own TMPDIR, so only what this test made is looked at."""
    # short, under the system's temp folder: vLLM puts its ZeroMQ sockets there, and a socket
    # path over 107 characters (a pytest-xdist worker's tmp_path) is refused
    own_tmp = Path(tempfile.mkdtemp(prefix="mvt-"))
    monkeypatch.setenv("TMPDIR", str(own_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    ports: list[int] = []
    yield ports
    wait_until(
        lambda: processes_with_env(marker) == [],
        10,
        "the exit of every process of the run",
        poll=0.2,
    )
    left = list(own_tmp.glob("modelverify-*"))
    shutil.rmtree(own_tmp, ignore_errors=True)
    assert left == [], "temporary files left behind"
    for work in Path(tmp_path).glob("**/.work"):
        assert not any(work.iterdir()), f"{work} was not cleaned up"
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # raises if anything still holds it
