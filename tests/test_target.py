"""LocalTarget with real subprocesses: env set/unset, streamed log, the whole session killed."""

import os
import sys
import time
import uuid

import pytest
from conftest import processes_with_env

from modelverify_kernel.target import LocalTarget

pytestmark = pytest.mark.process


def test_env_set_and_unset_reach_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAGCX_PATH", "/should/be/gone")
    t = LocalTarget()
    try:
        code = "import os; print('USE', os.environ.get('USE_FLAGGEMS')); print('CX', os.environ.get('FLAGCX_PATH'))"
        res = t.run([sys.executable, "-c", code], env_set={"USE_FLAGGEMS": "0"}, env_unset=["FLAGCX_PATH"],
                    timeout=30, log_path=tmp_path / "log.txt")
        log = (tmp_path / "log.txt").read_text()
        assert res.exit_code == 0 and not res.timed_out
        assert "USE 0" in log and "CX None" in log
    finally:
        t.cleanup()
    assert not t.workdir.exists()


def test_timeout_kills_every_process_of_the_session(tmp_path):
    """The phase leader starts a child in a process group of its own (as the serve script
    does with the server) and a grandchild that ignores SIGTERM; all must die."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    script = tmp_path / "tree.py"
    script.write_text(
        "import os, signal, subprocess, sys, time\n"
        "sub = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'\n"
        "subprocess.Popen([sys.executable, '-c', sub], process_group=0)\n"
        "subprocess.Popen([sys.executable, '-c', sub])\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    t = LocalTarget()
    try:
        start = time.monotonic()
        res = t.run([sys.executable, str(script)], env_set={name: value}, env_unset=[],
                    timeout=3, log_path=tmp_path / "log.txt")
        elapsed = time.monotonic() - start
    finally:
        t.cleanup()
    assert res.timed_out and res.exit_code is None
    assert len(res.leftovers) == 3  # leader, own-group child, SIGTERM-ignoring child
    assert processes_with_env(marker) == []
    assert elapsed < 3 + 10 + 6  # timeout + TERM grace + KILL wait
    assert "started" in (tmp_path / "log.txt").read_text()


def test_orphans_of_a_finished_command_are_killed(tmp_path):
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    t = LocalTarget()
    try:
        res = t.run([sys.executable, "-c", code], env_set={name: value}, env_unset=[], timeout=30,
                    log_path=tmp_path / "log.txt")
    finally:
        t.cleanup()
    assert res.exit_code == 0 and len(res.leftovers) == 1
    assert processes_with_env(marker) == []


def test_fetch_and_install_scripts(tmp_path):
    from modelverify_kernel.target import SCRIPTS_DIR

    t = LocalTarget()
    try:
        where = t.install_scripts(SCRIPTS_DIR)
        assert os.path.isfile(os.path.join(where, "run_offline_inference.py"))
        assert t.fetch(os.path.join(where, "default_prompts.json"), tmp_path / "p.json")
        assert not t.fetch(os.path.join(where, "nope.json"), tmp_path / "n.json")
    finally:
        t.cleanup()
