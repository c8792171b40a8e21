"""LocalTarget with real subprocesses: env set/unset, streamed log, the whole session killed,
and a controller that dies (SIGKILL) or is interrupted takes its phase with it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, processes_with_env

from modelverify_kernel.target import LocalTarget

pytestmark = pytest.mark.process

# A phase's process tree: a child in a process group of its own (as the serve script starts the
# server) and one that ignores SIGTERM, under a leader that prints "started" and sleeps.
TREE = (
    "import subprocess, sys, time\n"
    "sub = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'\n"
    "subprocess.Popen([sys.executable, '-c', sub], process_group=0)\n"
    "subprocess.Popen([sys.executable, '-c', sub])\n"
    "print('started', flush=True)\n"
    "time.sleep(600)\n"
)
# The notebook's stand-in: a real process that runs TREE through a target, then is killed.
# argv: kind (local|docker), where (work root | container), docker_host, python, log, marker, grace.
DRIVER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from modelverify_kernel.target import DockerTarget, LocalTarget\n"
    "kind, where, host, python, log, marker, grace = sys.argv[1:8]\n"
    "name, value = marker.split('=')\n"
    "t = (DockerTarget(where, docker_host=host, python=python, kill_grace=float(grace)) if kind == 'docker'\n"
    "     else LocalTarget(python=python, kill_grace=float(grace), work_root=Path(where)))\n"
    "print(t.work_folder, flush=True)\n"
    "t.run([python, '-c', sys.argv[8]], env_set={name: value}, env_unset=[], timeout=600, log_path=Path(log))\n"
)


def wait_until(check: Callable[[], object], what: str, deadline_s: float = 60.0) -> None:
    """Poll `check` until it is true; fail naming `what` after a generous deadline."""
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"still waiting after {deadline_s:.0f} s: {what}"
        time.sleep(0.1)


def start_driver(
    kind: str, where: str, host: str, log: Path, marker: str, grace: float
) -> tuple[subprocess.Popen, str]:
    """The driver and its work folder, once TREE runs (its log says "started")."""
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DRIVER,
            kind,
            where,
            host,
            sys.executable,
            str(log),
            marker,
            str(grace),
            TREE,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdout is not None
    work = driver.stdout.readline().strip()
    wait_until(
        lambda: log.exists() and "started" in log.read_text() or driver.poll() is not None,
        "the driver's phase to start",
    )
    assert driver.poll() is None, f"the driver ended with {driver.returncode}"
    return driver, work


def interrupt_when(log: Path, text: str, gone: Callable[[], bool]) -> tuple[threading.Thread, dict]:
    """KeyboardInterrupt in this (main) thread once `log` shows `text`: the notebook's interrupt.

    Then waits (generous deadline) until `gone()`: the session ended because of the interrupt,
    not at its far timeout; the outcome lands in the returned dict under "gone".
    """
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    outcome: dict = {}

    def watch() -> None:
        wait_until(lambda: log.exists() and text in log.read_text(), f"{text!r} in {log}")
        signal.pthread_kill(main, signal.SIGINT)
        try:
            wait_until(gone, "the interrupted session to end")
            outcome["gone"] = True
        except AssertionError as exc:
            outcome["gone"] = str(exc)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, outcome


def test_env_set_and_unset_reach_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAGCX_PATH", "/should/be/gone")
    t = LocalTarget()
    try:
        code = "import os; print('USE', os.environ.get('USE_FLAGGEMS')); print('CX', os.environ.get('FLAGCX_PATH'))"
        res = t.run(
            [sys.executable, "-c", code],
            env_set={"USE_FLAGGEMS": "0"},
            env_unset=["FLAGCX_PATH"],
            timeout=30,
            log_path=tmp_path / "log.txt",
        )
        log = (tmp_path / "log.txt").read_text()
        assert res.exit_code == 0 and not res.timed_out
        assert "USE 0" in log and "CX None" in log
        # a variable both set and unset is set; the phase reads /dev/null, not the helper's pipe
        code = "import os, sys; print('CX', os.environ['FLAGCX_PATH']); print('STDIN', repr(sys.stdin.read()))"
        res = t.run(
            [sys.executable, "-c", code],
            env_set={"FLAGCX_PATH": "/tmp/FlagCX"},
            env_unset=["FLAGCX_PATH"],
            timeout=30,
            log_path=tmp_path / "log2.txt",
        )
        assert (
            res.exit_code == 0
            and "CX /tmp/FlagCX\nSTDIN ''\n" in (tmp_path / "log2.txt").read_text()
        )
        # the helper's stdin watcher ends quietly with it (a buffered read there aborted Python at exit)
        assert "Fatal Python error" not in log + (tmp_path / "log2.txt").read_text()
    finally:
        t.cleanup()
    assert not t.workdir.exists()


def test_timeout_kills_every_process_of_the_session(tmp_path):
    """The phase leader starts a child in a process group of its own (as the serve script
    does with the server) and a grandchild that ignores SIGTERM; all must die."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    t = LocalTarget(kill_grace=2)
    try:
        res = t.run(
            [sys.executable, "-c", TREE],
            env_set={name: value},
            env_unset=[],
            timeout=3,
            log_path=tmp_path / "log.txt",
        )
    finally:
        t.cleanup()
    assert res.timed_out and res.exit_code is None and res.ended_by == "timeout"
    assert len(res.leftovers) == 3  # leader, own-group child, SIGTERM-ignoring child
    assert processes_with_env(marker) == []
    assert "started" in (tmp_path / "log.txt").read_text()


def test_orphans_of_a_finished_command_are_killed(tmp_path):
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    t = LocalTarget()
    try:
        res = t.run(
            [sys.executable, "-c", code],
            env_set={name: value},
            env_unset=[],
            timeout=30,
            log_path=tmp_path / "log.txt",
        )
    finally:
        t.cleanup()
    assert res.exit_code == 0 and len(res.leftovers) == 1
    assert processes_with_env(marker) == []


def test_a_killed_controller_leaves_no_process_and_no_work_folder(tmp_path):
    """SIGKILL: no code of the driver runs. The helper sees its stdin close (and PDEATHSIG)."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    root = tmp_path / "work"
    driver, work = start_driver("local", str(root), "", tmp_path / "log.txt", marker, grace=2)
    assert len(processes_with_env(marker)) == 4  # the helper and the three of TREE
    assert Path(work).is_dir() and Path(work).parent == root
    driver.kill()
    driver.wait()
    driver.stdout.close()
    wait_until(
        lambda: not processes_with_env(marker) and not Path(work).exists(),
        "no process of the session and no work folder",
    )


def test_a_terminated_controller_ends_its_session_before_it_dies(tmp_path):
    """SIGTERM (a batch stopping its cell): the driver stops its session and waits for its end
    (the grace of a SIGTERM-ignoring child included) before it dies of the signal, so whoever
    sent it finds nothing left the moment the driver is gone."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    driver, _ = start_driver("local", str(tmp_path / "work"), "", tmp_path / "log.txt", marker, 2)
    assert len(processes_with_env(marker)) == 4
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(30) == -signal.SIGTERM  # it still dies of the signal, as before
    driver.stdout.close()
    assert processes_with_env(marker) == []


def test_an_interrupted_run_stops_its_session_and_keeps_the_work_folder(tmp_path):
    """The notebook's interrupt button: the phase ends, the target stays usable for a re-run."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    t = LocalTarget(kill_grace=2, work_root=tmp_path / "work")
    log = tmp_path / "log.txt"
    try:
        watcher, outcome = interrupt_when(log, "started", lambda: not processes_with_env(marker))
        with pytest.raises(KeyboardInterrupt):
            t.run(
                [sys.executable, "-c", TREE],
                env_set={name: value},
                env_unset=[],
                timeout=600,
                log_path=log,
            )
        watcher.join()
        assert outcome["gone"] is True and processes_with_env(marker) == []
        assert "interrupted: the phase's process session was stopped" in log.read_text()
        assert t.workdir.is_dir()
        res = t.run(
            [sys.executable, "-c", "print('again')"],
            env_set={},
            env_unset=[],
            timeout=30,
            log_path=tmp_path / "again.txt",
        )
        assert res.exit_code == 0 and "again" in (tmp_path / "again.txt").read_text()
    finally:
        t.cleanup()
    assert not (tmp_path / "work").exists()


def test_a_python_that_does_not_exist_is_a_start_error(tmp_path):
    t = LocalTarget(python=str(tmp_path / "no-such-python"))
    try:
        res = t.run(
            [t.python(), "-c", "1"],
            env_set={},
            env_unset=[],
            timeout=30,
            log_path=tmp_path / "log.txt",
        )
    finally:
        t.cleanup()
    assert res.exit_code == 127 and "no-such-python" in (res.start_error or "")


def test_the_helper_stops_on_request_and_cleans_up_when_its_controller_is_gone(tmp_path):
    """run_in_session.py --watch-stdin on its own: "stop" keeps the folder; end of file removes it."""
    from modelverify_kernel.target import SCRIPTS_DIR

    for message, ended_by in ((b"stop\n", "stopped"), (b"", None)):
        marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
        work = tmp_path / f"modelverify-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        with subprocess.Popen(
            [
                sys.executable,
                "-I",
                str(SCRIPTS_DIR / "run_in_session.py"),
                "--grace",
                "2",
                "--watch-stdin",
                "--workdir",
                str(work),
                "--",
                sys.executable,
                "-c",
                TREE,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, marker.split("=")[0]: marker.split("=")[1]},
        ) as helper:
            assert helper.stdout.readline() == b"started\n"
            if message:
                helper.stdin.write(message)  # and keep stdin open: the controller still listens
                helper.stdin.flush()
            else:
                helper.stdin.close()
            helper.stdout.read()
            err = helper.stderr.read()
        assert processes_with_env(marker) == []
        statuses = [
            json.loads(line.split(" ", 1)[1])
            for line in err.decode().splitlines()
            if line.startswith("MODELVERIFY-SESSION ")
        ]
        if ended_by:
            assert statuses[-1]["ended_by"] == ended_by and len(statuses[-1]["leftovers"]) == 3
            assert work.is_dir()
        else:
            assert (
                len(statuses) == 1 and not work.exists()
            )  # only {"sid": N}: nobody listens any more


def test_fetch_and_install_scripts(tmp_path):
    from modelverify_kernel.target import SCRIPTS_DIR

    t = LocalTarget()
    try:
        where = t.install_scripts(SCRIPTS_DIR)
        assert os.path.isfile(os.path.join(where, "run_offline_inference.py"))
        assert not os.path.exists(os.path.join(where, "diff_analysis.py"))  # runs on the host
        assert t.fetch(os.path.join(where, "default_prompts.json"), tmp_path / "p.json")
        assert not t.fetch(os.path.join(where, "nope.json"), tmp_path / "n.json")
    finally:
        t.cleanup()


def test_a_killed_session_leaves_no_socket_files_of_vllm_behind(tmp_path):
    """vLLM puts its ZeroMQ sockets in VLLM_RPC_BASE_PATH (default: the temp folder) and a killed
    vLLM never removes them: each session gets a folder of its own, gone when the session ends;
    a caller's own VLLM_RPC_BASE_PATH is left as it is."""
    leader = (
        "import os, socket, sys, time\n"
        "base = os.environ['VLLM_RPC_BASE_PATH']\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(os.path.join(base, 'engine.sock'))\n"
        "print('base', base, flush=True)\n"
        "time.sleep(600)\n"
    )
    t = LocalTarget(kill_grace=1)
    try:
        res = t.run(
            [sys.executable, "-c", leader],
            env_set={},
            env_unset=[],
            timeout=3,
            log_path=tmp_path / "log.txt",
        )
        mine = tmp_path / "mine"
        mine.mkdir()
        t.run(
            [sys.executable, "-c", leader],
            env_set={"VLLM_RPC_BASE_PATH": str(mine)},
            env_unset=[],
            timeout=3,
            log_path=tmp_path / "log2.txt",
        )
    finally:
        t.cleanup()
    assert res.timed_out
    base = Path((tmp_path / "log.txt").read_text().split("base ", 1)[1].split()[0])
    assert base.name.startswith("mv-ipc-") and len(str(base)) + 37 < 100  # a socket path fits
    assert not base.exists()
    assert (mine / "engine.sock").exists()


def test_the_batch_kills_whole_trees_with_the_same_code():
    """batch.terminate_trees is run_in_session.kill_trees: every process of the tree ends (the
    child in a group of its own and the one that ignores SIGTERM too), and the tree's root, our
    child, is left for us to reap: the batch sees how its cell really ended."""
    from modelverify_kernel.resources import session_helper

    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    root = subprocess.Popen(
        [sys.executable, "-c", TREE],
        env={**os.environ, name: value},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert root.stdout.readline() == b"started\n"
        # a child just started may still be inside exec, its environment unreadable for a moment
        wait_until(lambda: len(processes_with_env(marker)) == 3, "the tree's three processes")
        assert root.pid in session_helper().child_pids(os.getpid())
        found = session_helper().kill_trees([root.pid], grace=1)
        assert len(found) == 3 and root.pid in found
        assert processes_with_env(marker) == []
        assert root.wait(5) == -signal.SIGTERM
    finally:
        root.kill()
        root.wait()
        root.stdout.close()


def test_every_kill_waits_the_one_grace():
    """One grace between SIGTERM and SIGKILL: the session helper's, which the targets pass on,
    the serve script's server stop and the batch's tree kill (nested, derived from it) all use
    it, and no other code kills processes (it would bring a grace of its own again)."""
    import ast
    import inspect

    from modelverify_kernel import batch, target
    from modelverify_kernel.resources import session_helper

    helper = session_helper()
    grace = helper.KILL_GRACE_S
    assert target.KILL_GRACE_S == grace
    for cls in (target.LocalTarget, target.DockerTarget):
        assert inspect.signature(cls.__init__).parameters["kill_grace"].default == grace
    assert helper.parse_args(["--", "true"]).grace == grace
    for kill in (helper.terminate, helper.kill_session):
        assert inspect.signature(kill).parameters["grace"].default == grace
    assert helper.NESTED_KILL_GRACE_S == 2 * grace
    assert inspect.signature(helper.kill_trees).parameters["grace"].default == 2 * grace
    assert list(inspect.signature(batch.terminate_trees).parameters) == ["pids"]
    sys.path.insert(0, str(target.SCRIPTS_DIR))
    try:
        import run_serve
    finally:
        sys.path.remove(str(target.SCRIPTS_DIR))
    assert inspect.signature(run_serve.Server.stop).parameters["grace"].default == grace
    # Kills anywhere else: only the probe's `import vllm` child, killed at once when it hangs.
    kills = {"SIGKILL", "kill", "killpg", "terminate", "wait_procs"}
    found = set()
    for folder in (REPO / "modelverify_kernel", REPO / "container_scripts"):
        for path in folder.rglob("*.py"):
            if path.name != "run_in_session.py":
                for node in ast.walk(ast.parse(path.read_text())):
                    if isinstance(node, ast.Attribute) and node.attr in kills:
                        found.add((path.name, ast.unparse(node)))
    found -= {("run_serve.py", "run_in_session.terminate")}  # the one implementation, imported
    assert found == {("probe_stack.py", "proc.kill")}, found
