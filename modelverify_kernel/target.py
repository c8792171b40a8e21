"""Step 2: where commands run.

A target copies the container scripts in, runs an argv list with variables set and unset
under a timeout (the whole process session dies at the end, its output streamed to a host log
file), and fetches result files back. `Target` holds all of that once; `LocalTarget` starts
subprocesses on this machine (Jupyter inside the GPU container, the demo), `DockerTarget`
execs in a running container through the docker SDK (the release engineer's usual case).
Either way a controller that dies ends its phase in the target and removes the work folder
(see `run_in_session.py`). No shell strings anywhere.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .errors import UserError
from .phase_output import ExecResult, LogStream
from .redact import Redactor, secret_values
from .resources import SESSION_HELPER, scripts_dir, session_helper

# The scripts copied into every target (standard library + what vLLM brings).
SCRIPTS_DIR = scripts_dir()
# Scripts of that folder that run on the host (they import this package): never copied.
HOST_SCRIPTS = ("diff_analysis.py",)
# The session helper, loaded here too: the local target reaps with the same code, the runner
# judges a timeout with its progress window.
_session = session_helper()
KILL_GRACE_S = _session.KILL_GRACE_S  # between SIGTERM and SIGKILL, the same everywhere
progress_window = _session.progress_window
kill_session = _session.kill_session
WORKDIR_PREFIX = _session.WORKDIR_PREFIX  # the helper removes only a work folder named so
SESSION_STATUS_PREFIX = _session.STATUS_PREFIX  # its status lines on stderr
# The targets of this process and what SIGTERM did before, for `_stop_sessions_on_sigterm`.
_TARGETS: weakref.WeakSet[Target] = weakref.WeakSet()
_previous_sigterm: Any = signal.SIG_DFL


class CannotStart(Exception):
    """The session helper itself could not be started (the target's python is not there); why."""


class Process(Protocol):
    """A started session helper, as each target sees it."""

    def chunks(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        """(stdout, stderr) pieces as they come, until the helper has ended."""

    def stop(self) -> None:
        """Ask the helper to end its session now (our stdin line "stop")."""

    def drain(self) -> None:
        """Read and drop whatever is left until the helper has ended."""

    def exit_code(self) -> int | None: ...
    def running(self) -> bool: ...
    def close(self) -> None:
        """Let go of the helper's stdin: if it still runs, it takes that as "the controller is gone"."""


class Target(ABC):
    """Where commands run: one rule for running a phase, whatever the target.

    `run` wraps every command in `container_scripts/run_in_session.py` (own session, timeout
    on the whole session, variables unset, our stdin held open so that a controller that dies
    takes its phase and work folder with it), streams its output into the host log with
    secrets masked, and checks afterwards that nothing of the session is left. Subclasses say
    only how to start a process, read a file and remove the work folder.
    """

    kind: str
    redactor: Redactor  # every log line and fetched file goes through it
    keep_files: bool
    kill_grace: float

    @abstractmethod
    def describe(self) -> dict: ...
    @abstractmethod
    def python(self) -> str: ...
    @abstractmethod
    def install_scripts(self, src: Path) -> str: ...
    @abstractmethod
    def path_exists(self, path: str) -> bool: ...
    @property
    @abstractmethod
    def work_folder(self) -> str:
        """The per-run folder in the target (named modelverify-*)."""

    @abstractmethod
    def _helper(self) -> str:
        """Where the target can run `run_in_session.py`."""

    @abstractmethod
    def _start(self, argv: list[str], env: dict[str, str]) -> Process:
        """Start argv in the work folder with `env` added to the target's environment, stdin a pipe.

        Raises CannotStart when nothing could start."""

    @abstractmethod
    def _start_failure(self, code: int | None, output: bytes) -> str | None:
        """Why the helper never ran, told from its exit code and first output; None if it did run."""

    @abstractmethod
    def _reap(self, sid: int) -> list[int]:
        """Kill whatever is left of session `sid`; the pids found (none when all went well)."""

    @abstractmethod
    def _read(self, path: str) -> bytes | None:
        """A file's bytes, None when it is not a regular file."""

    @abstractmethod
    def _remove_work_folder(self) -> None: ...

    def work_path(self, name: str) -> str:
        return f"{self.work_folder}/{name}"

    def run(
        self,
        argv: Sequence[str],
        *,
        env_set: Mapping[str, str],
        env_unset: Sequence[str],
        timeout: float,
        log_path: Path,
        cap: float | None = None,
    ) -> ExecResult:
        """Run argv with `env_set` set and `env_unset` removed (set wins), under `timeout` (and `cap`)."""
        unset = [n for n in env_unset if n not in env_set]
        helper = [
            self.python(),
            "-I",
            self._helper(),
            "--timeout",
            str(timeout),
            "--grace",
            str(self.kill_grace),
            *(["--cap", str(cap)] if cap else []),
            "--watch-stdin",
            *([] if self.keep_files else ["--workdir", self.work_folder]),
            *[a for n in unset for a in ("--unset", n)],
            "--",
            *argv,
        ]
        self.redactor.add(secret_values([env_set]))
        _TARGETS.add(self)
        _stop_sessions_on_sigterm()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(log_path, "ab") as log:
            stream = LogStream(log, self.redactor)
            try:
                proc = self._start(helper, {**env_set, "PYTHONUNBUFFERED": "1"})
                self._live_sessions().add(proc)
            except CannotStart as exc:
                stream.note(f"cannot start {helper[0]}: {exc}")
                return stream.result(
                    argv, {"exit_code": 127, "start_error": str(exc)}, 127, start, log_path, []
                )
            try:
                first, stderr = self._stream(proc, stream)
            except BaseException:  # interrupted (Ctrl-C): end the session, keep the folder
                proc.stop()
                proc.drain()
                proc.exit_code()  # reaped: nothing of ours runs on
                stream.note("interrupted: the phase's process session was stopped")
                raise
            finally:
                self._live_sessions().discard(proc)
                proc.close()
            code = proc.exit_code()
            status, leftovers = self._settle(stream, code, first, stderr)
        return stream.result(argv, status, code, start, log_path, leftovers)

    def _live_sessions(self) -> set[Process]:
        """The phase sessions `run` has going now, in any thread (made on first use)."""
        return self.__dict__.setdefault("_sessions", set())  # setdefault: atomic across threads

    def stop_running(self) -> None:
        """Ask every phase session running now, in whichever thread, to end (the helper kills its
        session with the one grace); each `run` then records its phase's end as usual."""
        for proc in list(self._live_sessions()):
            try:
                proc.stop()
            except (OSError, ValueError):
                pass  # it has ended already

    def sessions_running(self) -> bool:
        return any(p.running() for p in list(self._live_sessions()))

    @staticmethod
    def _stream(proc: Process, stream: LogStream) -> tuple[bytes, bytes]:
        """The helper's stdout into the log as it comes; its first output and its whole stderr."""
        first, stderr = bytearray(), bytearray()
        for out, err in proc.chunks():
            if out:
                stream.feed(out)
                if len(first) < 4096:
                    first += out[:4096]
            if err:
                stderr += err
        stream.close()
        return bytes(first), bytes(stderr)

    def _settle(
        self, stream: LogStream, code: int | None, first: bytes, stderr: bytes
    ) -> tuple[dict[str, Any], list[int]]:
        """The helper's status (or why it never ran), and every process that had to be killed."""
        status, other = _session_status(stderr)
        if other:  # the helper's own complaints, if any
            stream.feed(other)
            stream.close()
        if not status:
            failure = self._start_failure(code, first)
            if failure:
                status = {"exit_code": 127, "start_error": failure}
        if status.get("error"):
            stream.note(status["error"])
            status.setdefault("start_error", status["error"])
        leftovers = list(status.get("leftovers") or [])
        if "sid" in status:  # the helper killed its session; make sure, from a second process
            reaped = self._reap(int(status["sid"]))
            if reaped:
                stream.note(f"killed processes left in the target: {reaped}")
                leftovers += [p for p in reaped if p not in leftovers]
        return status, leftovers

    def fetch(self, path: str, dest: Path) -> bool:
        """Copy a (text) result file to the host, secrets masked."""
        data = self._read(path)
        if data is None:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.redactor.text(data.decode("utf-8", errors="replace")).encode("utf-8"))
        return True

    def cleanup(self) -> None:
        """Remove the work folder, unless keep_files."""
        if not self.keep_files:
            self._remove_work_folder()


def _stop_sessions_on_sigterm() -> None:
    """Once, from the main thread: SIGTERM (a batch stopping its cell, a kernel shut down) first
    stops this process's phase sessions and waits for their end, then does what it did before.
    Whoever sent it waits only for processes it sees as its own, not for those in a container."""
    global _previous_sigterm
    previous = signal.getsignal(signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    if main and previous not in (signal.SIG_IGN, None, _on_sigterm):
        _previous_sigterm = previous
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    targets = list(_TARGETS)
    for t in targets:
        t.stop_running()
    # the helper's own kill: its grace, its wait after SIGKILL, then for its output relay
    grace = max([t.kill_grace for t in targets] + [0])
    wait = grace + _session.KILLED_WAIT_S + _session.RELAY_WAIT_S
    deadline = time.monotonic() + wait
    while any(t.sessions_running() for t in targets) and time.monotonic() < deadline:
        time.sleep(0.1)
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        return  # a second SIGTERM during the wait ran this to its end already
    signal.signal(signal.SIGTERM, _previous_sigterm)
    if callable(_previous_sigterm):
        _previous_sigterm(signum, frame)
    else:
        signal.raise_signal(signal.SIGTERM)


class _LocalProcess:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def chunks(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            yield chunk, None
        yield None, self.proc.stderr.read()  # only the helper's status lines: small

    def stop(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it has ended already

    def drain(self) -> None:
        assert self.proc.stdout is not None
        self.proc.stdout.read()

    def exit_code(self) -> int | None:
        return self.proc.wait()

    def running(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass  # stdin: the helper has ended already


class LocalTarget(Target):
    """Runs on this machine, in a temporary work folder removed by `cleanup`."""

    kind = "local"

    def __init__(
        self,
        python: str | None = None,
        keep_files: bool = False,
        kill_grace: float = KILL_GRACE_S,
        work_root: Path | None = None,
    ) -> None:
        """`work_root`: where the work folder goes; inside the output folder, nothing of a
        killed run is left elsewhere."""
        self._python = python or sys.executable
        self.keep_files = keep_files
        self.kill_grace = kill_grace
        if work_root is not None:
            work_root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=work_root))
        self._work_root = work_root
        self.redactor = Redactor(secret_values([os.environ]))

    def describe(self) -> dict:
        return {"kind": self.kind, "python": self._python, "workdir": str(self.workdir)}

    def python(self) -> str:
        return self._python

    @property
    def work_folder(self) -> str:
        return str(self.workdir)

    def install_scripts(self, src: Path) -> str:
        dest = self.workdir / "container_scripts"
        shutil.copytree(
            src,
            dest,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", *HOST_SCRIPTS),
        )
        return str(dest)

    def path_exists(self, path: str) -> bool:
        return Path(path).exists()

    def _helper(self) -> str:
        return str(SCRIPTS_DIR / SESSION_HELPER)

    def _start(self, argv: list[str], env: dict[str, str]) -> Process:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **env},
                cwd=self.workdir,
            )
        except OSError as exc:
            raise CannotStart(str(exc)) from None
        return _LocalProcess(proc)

    def _start_failure(self, code: int | None, output: bytes) -> str | None:
        return None  # a python that cannot start raises in _start

    def _reap(self, sid: int) -> list[int]:
        return kill_session(sid, self.kill_grace)

    def _read(self, path: str) -> bytes | None:
        src = Path(path)
        return src.read_bytes() if src.is_file() else None

    def _remove_work_folder(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        if (
            self._work_root is not None
            and self._work_root.is_dir()
            and not any(self._work_root.iterdir())
        ):
            self._work_root.rmdir()


class DockerError(UserError):
    """The Docker daemon or the container cannot be used as the target."""


# Where the per-run folder goes, first choice first. `put_archive` cannot write into a tmpfs
# mount (the files land hidden under it), so a tmpfs /tmp is passed over.
WORK_BASES = ("/tmp", "/var/tmp")
# How dockerd says an exec never started (exit code 126 or 127, this on its stdout).
OCI_START_FAILED = re.compile(
    r"^OCI runtime exec failed: (?:exec failed: )?(?:unable to start container process: )?(.*?)(?:: unknown)?\s*$"
)


class _DockerProcess:
    """An exec with stdin attached: dockerd closes that stdin when our connection goes, so the
    helper sees end of file when this process dies, however it dies."""

    def __init__(self, api: Any, exec_id: str, sock: Any) -> None:
        self.api, self.exec_id, self.sock = api, exec_id, sock

    def chunks(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        from docker.utils.socket import demux_adaptor, frames_iter

        for stream_id, data in frames_iter(self.sock, tty=False):
            yield demux_adaptor(stream_id, data)

    def stop(self) -> None:
        try:  # the SDK hands out a read-only socket file over the connection (or an ssh channel)
            getattr(self.sock, "_sock", self.sock).sendall(b"stop\n")
        except OSError:
            pass

    def drain(self) -> None:
        from docker.utils.socket import read

        while read(self.sock, 65536):
            pass

    def exit_code(self) -> int | None:
        return self.api.exec_inspect(self.exec_id)["ExitCode"]

    def running(self) -> bool:
        try:
            return bool(self.api.exec_inspect(self.exec_id)["Running"])
        except Exception:  # the daemon is gone: nothing more to wait for
            return False

    def close(self) -> None:
        inner = getattr(self.sock, "_sock", None)  # a socket file over the connection: close both
        self.sock.close()
        if inner is not None:
            inner.close()


class DockerTarget(Target):
    """Runs inside a running container through the docker SDK, never touching its lifecycle.

    The scripts go into a per-run folder with `put_archive`; each command is an exec of an
    argv list with an env dict, wrapped by `run_in_session.py` so the timeout is enforced
    inside the container on the whole session; results come back with `get_archive`. The
    container is never stopped, restarted or removed; `cleanup` removes only our folder.
    """

    kind = "docker"

    def __init__(
        self,
        container: str,
        docker_host: str | None = None,
        python: str | None = None,
        keep_files: bool = False,
        kill_grace: float = KILL_GRACE_S,
    ) -> None:
        import docker  # the local target must not need the SDK

        self._docker = docker
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        self._python = python or "python3"
        self.keep_files = keep_files
        self.kill_grace = kill_grace
        try:
            self.client = (
                docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
            )
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise DockerError(
                f"Cannot reach the Docker daemon at {self.docker_host} ({_short(exc)}); start Docker "
                f"or point docker_host (or DOCKER_HOST) at a daemon that answers."
            ) from None
        self.docker_host_url, self.docker_tls = docker_cli_host(docker_host)
        self.api = self.client.api
        try:
            self.container = self.client.containers.get(container)
        except docker.errors.NotFound:
            raise DockerError(
                f"Container {container!r} does not exist on the Docker daemon at {self.docker_host}; "
                f"running containers: {self._running()}."
            ) from None
        except docker.errors.APIError as exc:
            raise DockerError(
                f"Docker could not look up container {container!r}: {_short(exc)}."
            ) from None
        if self.container.status != "running":
            fix = "docker unpause" if self.container.status == "paused" else "docker start"
            raise DockerError(
                f"Container {container!r} is {self.container.status}, not running; start it "
                f"({fix} {container}) or pick a running one: {self._running()}."
            )
        self.workdir = f"{self._work_base()}/{WORKDIR_PREFIX}{uuid.uuid4().hex[:12]}"
        container_env = dict(
            e.split("=", 1)
            for e in (self.container.attrs.get("Config") or {}).get("Env") or []
            if "=" in e
        )
        self.redactor = Redactor(secret_values([os.environ, container_env]))
        self._scripts: str | None = None
        self._made = False  # whether the per-run folder exists (cleanup has work to do)
        self._owner: tuple[int, int] = (0, 0)

    def _running(self) -> str:
        names = sorted(c.name for c in self.client.containers.list())
        return ", ".join(names) if names else "none"

    def _work_base(self) -> str:
        attrs = self.container.attrs
        tmpfs = set((attrs.get("HostConfig") or {}).get("Tmpfs") or {})
        tmpfs |= {
            m.get("Destination") for m in attrs.get("Mounts") or [] if m.get("Type") == "tmpfs"
        }
        return next((b for b in WORK_BASES if b not in tmpfs), WORK_BASES[-1])

    def describe(self) -> dict:
        """`docker_host_url` is the daemon the SDK talked to, as `docker -H URL` takes it."""
        attrs = self.container.attrs
        image_id = attrs.get("Image")
        digests: list[str] = []
        try:
            digests = list(self.client.images.get(image_id).attrs.get("RepoDigests") or [])
        except self._docker.errors.DockerException:
            pass
        return {
            "kind": self.kind,
            "docker_host": self.docker_host,
            "docker_host_url": self.docker_host_url,
            "docker_tls": self.docker_tls,
            "container_id": self.container.id,
            "container_name": self.container.name,
            "image": (attrs.get("Config") or {}).get("Image"),
            "image_id": image_id,
            "image_digests": digests,
            "python": self._python,
            "workdir": self.workdir,
        }

    def python(self) -> str:
        return self._python

    @property
    def work_folder(self) -> str:
        return self.workdir

    def _exec_output(self, argv: Sequence[str]) -> tuple[int | None, bytes]:
        """A short exec, output gathered: (exit code, stdout + stderr).

        The low-level API, because `exec_run` gives no exit code when streaming (FACTS.md).
        """
        exec_id = self.api.exec_create(self.container.id, list(argv), stdin=False, tty=False)["Id"]
        out = self.api.exec_start(exec_id)
        return self.api.exec_inspect(exec_id)["ExitCode"], out or b""

    def _ensure_workdir(self) -> None:
        if self._made:
            return
        # Made by the container's own user, so the phases can write their results into it.
        code, out = self._exec_output(["mkdir", "-p", "-m", "700", self.workdir])
        if code != 0:
            raise DockerError(
                f"Cannot create the work folder {self.workdir} in container {self.container.name}: "
                f"{' '.join(out.decode(errors='replace').split())}; check that the container's user can write there."
            )
        self._made = True
        code, out = self._exec_output(["stat", "-c", "%u %g", self.workdir])
        ids = out.split()
        if code == 0 and len(ids) == 2 and all(i.isdigit() for i in ids):
            self._owner = (int(ids[0]), int(ids[1]))

    def install_scripts(self, src: Path) -> str:
        self._ensure_workdir()
        buf = io.BytesIO()
        uid, gid = self._owner
        with tarfile.open(fileobj=buf, mode="w") as tar:

            def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
                if "__pycache__" in info.name or Path(info.name).name in HOST_SCRIPTS:
                    return None
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                return info

            tar.add(src, arcname="container_scripts", filter=owned)
            if not (src / SESSION_HELPER).is_file():
                tar.add(
                    SCRIPTS_DIR / SESSION_HELPER,
                    arcname=f"container_scripts/{SESSION_HELPER}",
                    filter=owned,
                )
        try:
            self.container.put_archive(self.workdir, buf.getvalue())
        except self._docker.errors.APIError as exc:
            raise DockerError(
                f"Copying the scripts into {self.workdir} of container {self.container.name} failed "
                f"({_short(exc)}); check that the folder is writable and not on a tmpfs mount."
            ) from None
        dest = f"{self.workdir}/container_scripts"
        if not self.path_exists(f"{dest}/{SESSION_HELPER}"):
            raise DockerError(
                f"The scripts copied to {dest} are not visible inside container {self.container.name} "
                f"(a mount hides them); free {self.workdir.rsplit('/', 1)[0]} of mounts or use another container."
            )
        self._scripts = dest
        return dest

    def path_exists(self, path: str) -> bool:
        code, _ = self._exec_output(["test", "-e", path])
        return code == 0

    def _helper(self) -> str:
        if self._scripts is None:
            self.install_scripts(SCRIPTS_DIR)
        return f"{self._scripts}/{SESSION_HELPER}"

    def _start(self, argv: list[str], env: dict[str, str]) -> Process:
        exec_id = self.api.exec_create(
            self.container.id, argv, environment=env, workdir=self.workdir, stdin=True, tty=False
        )["Id"]
        return _DockerProcess(self.api, exec_id, self.api.exec_start(exec_id, socket=True))

    def _start_failure(self, code: int | None, output: bytes) -> str | None:
        match = (
            OCI_START_FAILED.match(output.decode(errors="replace").strip())
            if code in (126, 127)
            else None
        )
        return match.group(1) if match else None

    def _reap(self, sid: int) -> list[int]:
        _, out = self._exec_output(
            [
                self._python,
                "-I",
                self._helper(),
                "--reap",
                str(sid),
                "--grace",
                str(self.kill_grace),
            ]
        )
        try:
            return [int(p) for p in json.loads(out.decode().strip().splitlines()[-1])]
        except (ValueError, IndexError):
            return []

    def _read(self, path: str) -> bytes | None:
        try:
            stream, stat = self.container.get_archive(path)
        except self._docker.errors.NotFound:
            return None
        if stat.get("mode", 0) & (1 << 31):  # Go's ModeDir: a folder, not a file
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            src = tar.extractfile(member) if member is not None else None
            return src.read() if src is not None else None

    def _remove_work_folder(self) -> None:
        if not self._made:
            return
        try:
            self._exec_output(["rm", "-rf", "--one-file-system", self.workdir])
        except self._docker.errors.DockerException:
            pass  # the container went away: nothing of ours is left to remove


def docker_cli_host(docker_host: str | None) -> tuple[str, bool]:
    """The daemon URL the docker SDK connects to, as the docker CLI's `-H` takes it; and whether TLS.

    The SDK's own parsing (`docker.utils.parse_host`) of what it was given: `docker_host`, else
    DOCKER_HOST (and DOCKER_TLS_VERIFY) from the environment, else the default socket.
    """
    from docker.constants import DEFAULT_UNIX_SOCKET
    from docker.utils import kwargs_from_env, parse_host

    env = {} if docker_host else kwargs_from_env()
    tls = bool(env.get("tls"))
    url = parse_host(docker_host or env.get("base_url") or DEFAULT_UNIX_SOCKET, tls=tls)
    for sdk, cli in (("http+unix://", "unix://"), ("http://", "tcp://"), ("https://", "tcp://")):
        if url.startswith(sdk):
            return cli + url[len(sdk) :], url.startswith("https://")
    return url, tls


def _session_status(stderr: bytes) -> tuple[dict[str, Any], bytes]:
    """Merge the helper's status lines; return them and every other stderr line."""
    status: dict[str, Any] = {}
    other = []
    for line in stderr.decode(errors="replace").splitlines(keepends=True):
        if line.startswith(SESSION_STATUS_PREFIX):
            try:
                status.update(json.loads(line[len(SESSION_STATUS_PREFIX) :]))
                continue
            except json.JSONDecodeError:
                pass
        other.append(line)
    return status, "".join(other).encode()


def _short(exc: Exception) -> str:
    """The gist of a docker SDK error, on one line."""
    text = str(getattr(exc, "explanation", None) or exc)
    text = re.sub(r"\s+", " ", text).strip().rstrip(".")
    return text[:300]
