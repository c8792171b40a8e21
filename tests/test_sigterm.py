"""SIGTERM to a process that runs phases (a batch stopping its cell's kernel): its sessions are
stopped and waited for before it does what it did on SIGTERM before. Fake sessions, real signals."""

from __future__ import annotations

import signal
import threading

import pytest

from modelverify_kernel import target


class _Session:
    """A phase session that ends a moment after it is asked to stop."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.polls = log, 0

    def stop(self) -> None:
        self.log.append("stop")

    def running(self) -> bool:
        if "stop" not in self.log:
            return True
        self.polls += 1
        if self.polls < 3:
            return True
        if "ended" not in self.log:
            self.log.append("ended")
        return False


@pytest.fixture
def sigterm(tmp_path):
    """A target with one live fake session; SIGTERM's handler put back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    t = target.LocalTarget(kill_grace=1, work_root=tmp_path / "work")
    log: list[str] = []
    t._live_sessions().add(_Session(log))
    target._TARGETS.add(t)
    yield t, log
    signal.signal(signal.SIGTERM, before)
    target._TARGETS.discard(t)


def test_the_sessions_end_before_the_previous_handler_runs(sigterm):
    t, log = sigterm
    signal.signal(signal.SIGTERM, lambda *_: log.append("previous handler"))
    target._stop_sessions_on_sigterm()
    assert signal.getsignal(signal.SIGTERM) is target._on_sigterm
    target._stop_sessions_on_sigterm()  # once: a second call installs nothing over it
    assert target._previous_sigterm is not target._on_sigterm
    signal.raise_signal(signal.SIGTERM)
    assert log == ["stop", "ended", "previous handler"]
    assert signal.getsignal(signal.SIGTERM) is not target._on_sigterm  # put back


def test_an_ignored_sigterm_stays_ignored(sigterm):
    _, log = sigterm
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    target._stop_sessions_on_sigterm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    signal.raise_signal(signal.SIGTERM)
    assert log == []


def test_only_the_main_thread_installs_it(sigterm):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    worker = threading.Thread(target=target._stop_sessions_on_sigterm)
    worker.start()
    worker.join()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
