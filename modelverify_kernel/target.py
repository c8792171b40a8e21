"""Step 2: where commands run.

A target copies the container scripts in, runs an argv list with variables set and unset
under a timeout (the whole process session dies at the end, its output streamed to a host log
file), and fetches result files back. `LocalTarget` runs subprocesses on this machine: for
Jupyter inside the GPU container, and for the demo. `DockerTarget` drives a running container
through the docker SDK (the release engineer's usual case). No shell strings anywhere.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from collections import deque
from typing import Any, BinaryIO, Iterator, Mapping, Protocol, Sequence

from .errors import UserError
from .redact import Redactor, secret_values
from .resources import scripts_dir

KILL_GRACE_S = 10.0
# The scripts copied into every target (standard library + what vLLM brings).
SCRIPTS_DIR = scripts_dir()
SESSION_HELPER = "run_in_session.py"


@dataclass
class ExecResult:
    """How a command ended: exit code, whether the timeout fired, what had to be killed."""

    argv: list[str]
    exit_code: int | None
    timed_out: bool
    duration_s: float
    log_path: Path
    leftovers: list[int] = field(default_factory=list)
    idle_s: float | None = None  # on timeout: seconds since the last output line
    last_line: str | None = None  # on timeout: the last line printed before it fired
    ended_by: str | None = None  # exit | timeout | silence (after progress past the timeout) | cap
    ran_s: float | None = None  # how long the command ran before it ended or was stopped
    dumped: list[int] = field(default_factory=list)  # pids that printed their threads' stacks


class LogStream:
    """Writes a phase's output into its host log as it arrives, secrets masked.

    Keeps the last lines with their arrival time, so a timeout can be told apart: output
    still coming (slow start, JIT compiling) or silence (a hang).
    """

    def __init__(self, log: BinaryIO, redactor: Redactor, keep: int = 200) -> None:
        self.log, self.redactor = log, redactor
        self.lines: deque[tuple[float, str]] = deque(maxlen=keep)
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        line = self.redactor.text(raw.decode("utf-8", errors="replace"))
        self.log.write(line.encode("utf-8") + b"\n")
        self.log.flush()
        self.lines.append((time.time(), line))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def note(self, text: str) -> None:
        self._line(f"[model-verify] {text}".encode())

    def before(self, moment: float | None) -> tuple[float | None, str | None]:
        """Seconds of silence before `moment` and the last line printed until then."""
        if moment is None:
            return None, None
        earlier = [(t, line) for t, line in self.lines if t <= moment]
        if not earlier:
            return None, None
        t, line = earlier[-1]
        return round(moment - t, 3), line

    def result(self, argv: Sequence[str], status: Mapping[str, Any], code: int | None, start: float,
               log_path: Path, leftovers: list[int]) -> ExecResult:
        timed_out = bool(status.get("timed_out"))
        idle, last = self.before(status.get("timeout_at")) if timed_out else (None, None)
        if timed_out and isinstance(status.get("idle_s"), (int, float)):
            idle = status["idle_s"]  # the helper saw the output arrive: its clock is exact
        return ExecResult(
            argv=list(argv), exit_code=None if timed_out else status.get("exit_code", code),
            timed_out=timed_out, duration_s=round(time.monotonic() - start, 3), log_path=log_path,
            leftovers=leftovers, idle_s=idle, last_line=last, ended_by=status.get("ended_by"),
            ran_s=status.get("ran_s"), dumped=list(status.get("dumped") or []),
        )


class Target(Protocol):
    kind: str
    redactor: Redactor  # every log line and fetched file goes through it

    def describe(self) -> dict: ...
    def python(self) -> str: ...
    def install_scripts(self, src: Path) -> str: ...
    def path_exists(self, path: str) -> bool: ...
    def work_path(self, name: str) -> str: ...
    def run(
        self,
        argv: Sequence[str],
        *,
        env_set: Mapping[str, str],
        env_unset: Sequence[str],
        timeout: float,
        log_path: Path,
        cap: float | None = None,
    ) -> ExecResult: ...
    def fetch(self, path: str, dest: Path) -> bool:
        """Copy a (text) result file to the host, secrets masked."""
    def cleanup(self) -> None: ...


def _load_session_helper() -> Any:
    """The session kill of `container_scripts/run_in_session.py`, the one implementation.

    The script runs standalone inside containers; the local target loads the same file.
    """
    spec = importlib.util.spec_from_file_location("modelverify_run_in_session", SCRIPTS_DIR / SESSION_HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_session = _load_session_helper()
session_members = _session.session_members
progress_window = _session.progress_window
kill_session = _session.kill_session


class LocalTarget:
    """Runs on this machine, in a temporary work folder removed by `cleanup`."""

    kind = "local"

    def __init__(self, python: str | None = None, keep_files: bool = False,
                 kill_grace: float = KILL_GRACE_S, work_root: Path | None = None) -> None:
        """`work_root`: where the work folder goes; inside the output folder, nothing of a
        killed run is left elsewhere."""
        self._python = python or sys.executable
        self.keep_files = keep_files
        self.kill_grace = kill_grace
        if work_root is not None:
            work_root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="modelverify-", dir=work_root))
        self._work_root = work_root
        self.redactor = Redactor(secret_values([os.environ]))

    def describe(self) -> dict:
        return {"kind": self.kind, "python": self._python, "workdir": str(self.workdir)}

    def python(self) -> str:
        return self._python

    def install_scripts(self, src: Path) -> str:
        dest = self.workdir / "container_scripts"
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        return str(dest)

    def path_exists(self, path: str) -> bool:
        return Path(path).exists()

    def work_path(self, name: str) -> str:
        return str(self.workdir / name)

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
        env = {k: v for k, v in os.environ.items() if k not in env_unset}
        env.update(env_set)
        env["PYTHONUNBUFFERED"] = "1"
        self.redactor.add(secret_values([env_set]))
        helper = [self._python, str(SCRIPTS_DIR / SESSION_HELPER), "--timeout", str(timeout),
                  "--grace", str(self.kill_grace), *(["--cap", str(cap)] if cap else []), "--"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(log_path, "ab") as log:
            stream = LogStream(log, self.redactor)
            try:
                proc = subprocess.Popen([*helper, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=env, cwd=self.workdir)
            except OSError as exc:
                stream.note(f"cannot start {self._python}: {exc}")
                return stream.result(argv, {"exit_code": 127}, 127, start, log_path, [])
            assert proc.stdout is not None and proc.stderr is not None
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                stream.feed(chunk)
            stream.close()
            status, other = _session_status(proc.stderr.read())
            code = proc.wait()
            if other:
                stream.feed(other)
                stream.close()
        leftovers = list(status.get("leftovers") or [])
        if "sid" in status:  # the helper killed its session; make sure, from here too
            leftovers += [p for p in kill_session(int(status["sid"]), self.kill_grace) if p not in leftovers]
        return stream.result(argv, status, code, start, log_path, leftovers)

    def fetch(self, path: str, dest: Path) -> bool:
        src = Path(path)
        if not src.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.redactor.text(src.read_bytes().decode("utf-8", errors="replace")).encode("utf-8"))
        return True

    def cleanup(self) -> None:
        if not self.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._work_root is not None and not any(self._work_root.iterdir()):
                self._work_root.rmdir()


class DockerError(UserError):
    """The Docker daemon or the container cannot be used as the target."""


# The in-container helper that enforces the timeout on the whole session (see its docstring).
SESSION_STATUS_PREFIX = "MODELVERIFY-SESSION "  # same as STATUS_PREFIX in the helper
# Where the per-run folder goes, first choice first. `put_archive` cannot write into a tmpfs
# mount (the files land hidden under it), so a tmpfs /tmp is passed over.
WORK_BASES = ("/tmp", "/var/tmp")


class DockerTarget:
    """Runs inside a running container through the docker SDK, never touching its lifecycle.

    The scripts go into a per-run folder with `put_archive`; each command is an exec of an
    argv list with an env dict, wrapped by `run_in_session.py` so the timeout is enforced
    inside the container on the whole session; results come back with `get_archive`. The
    container is never stopped, restarted or removed; `cleanup` removes only our folder.
    """

    kind = "docker"

    def __init__(self, container: str, docker_host: str | None = None, python: str | None = None,
                 keep_files: bool = False, kill_grace: float = KILL_GRACE_S) -> None:
        import docker  # the local target must not need the SDK

        self._docker = docker
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        self._python = python or "python3"
        self.keep_files = keep_files
        self.kill_grace = kill_grace
        try:
            self.client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise DockerError(
                f"Cannot reach the Docker daemon at {self.docker_host} ({_short(exc)}); start Docker "
                f"or point docker_host (or DOCKER_HOST) at a daemon that answers."
            ) from None
        self.api = self.client.api
        try:
            self.container = self.client.containers.get(container)
        except docker.errors.NotFound:
            raise DockerError(
                f"Container {container!r} does not exist on the Docker daemon at {self.docker_host}; "
                f"running containers: {self._running()}."
            ) from None
        except docker.errors.APIError as exc:
            raise DockerError(f"Docker could not look up container {container!r}: {_short(exc)}.") from None
        if self.container.status != "running":
            fix = "docker unpause" if self.container.status == "paused" else "docker start"
            raise DockerError(
                f"Container {container!r} is {self.container.status}, not running; start it "
                f"({fix} {container}) or pick a running one: {self._running()}."
            )
        self.workdir = f"{self._work_base()}/modelverify-{uuid.uuid4().hex[:12]}"
        container_env = dict(e.split("=", 1) for e in (self.container.attrs.get("Config") or {}).get("Env") or [] if "=" in e)
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
        tmpfs |= {m.get("Destination") for m in attrs.get("Mounts") or [] if m.get("Type") == "tmpfs"}
        return next((b for b in WORK_BASES if b not in tmpfs), WORK_BASES[-1])

    def describe(self) -> dict:
        attrs = self.container.attrs
        image_id = attrs.get("Image")
        digests: list[str] = []
        try:
            digests = list(self.client.images.get(image_id).attrs.get("RepoDigests") or [])
        except self._docker.errors.DockerException:
            pass
        return {
            "kind": self.kind, "docker_host": self.docker_host,
            "container_id": self.container.id, "container_name": self.container.name,
            "image": (attrs.get("Config") or {}).get("Image"), "image_id": image_id,
            "image_digests": digests, "python": self._python, "workdir": self.workdir,
        }

    def python(self) -> str:
        return self._python

    def _exec(self, argv: Sequence[str], environment: Mapping[str, str] | None = None,
              workdir: str | None = None) -> tuple[str, Iterator[tuple[bytes | None, bytes | None]]]:
        """Start an exec: its id and its (stdout, stderr) chunks.

        The low-level API, because `exec_run(stream=True)` gives no exit code (FACTS.md):
        `exec_inspect(id)` has it once the stream has ended.
        """
        exec_id = self.api.exec_create(self.container.id, list(argv), environment=dict(environment or {}),
                                       workdir=workdir, stdin=False, tty=False)["Id"]
        return exec_id, self.api.exec_start(exec_id, stream=True, demux=True)

    def _exec_output(self, argv: Sequence[str]) -> tuple[int | None, bytes]:
        """A short exec, output gathered: (exit code, stdout + stderr)."""
        exec_id, stream = self._exec(argv)
        out = b"".join((o or b"") + (e or b"") for o, e in stream)
        return self.api.exec_inspect(exec_id)["ExitCode"], out

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
                if "__pycache__" in info.name:
                    return None
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                return info
            tar.add(src, arcname="container_scripts", filter=owned)
            if not (src / SESSION_HELPER).is_file():
                tar.add(SCRIPTS_DIR / SESSION_HELPER, arcname=f"container_scripts/{SESSION_HELPER}", filter=owned)
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

    def work_path(self, name: str) -> str:
        return f"{self.workdir}/{name}"

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
        if self._scripts is None:
            self.install_scripts(SCRIPTS_DIR)
        unset = [n for n in env_unset if n not in env_set]  # set wins, as in LocalTarget
        wrapper = ["env", *[a for n in unset for a in ("-u", n)]] if unset else []
        full = [*wrapper, *self._helper(), "--timeout", str(timeout), "--grace", str(self.kill_grace),
                *(["--cap", str(cap)] if cap else []), "--", *argv]
        environment = {**env_set, "PYTHONUNBUFFERED": "1"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        stderr = bytearray()
        self.redactor.add(secret_values([env_set]))
        with open(log_path, "ab") as log:
            stream = LogStream(log, self.redactor)
            exec_id, chunks = self._exec(full, environment, self.workdir)
            for out, err in chunks:
                if out:
                    stream.feed(out)
                if err:
                    stderr += err
            stream.close()
            code = self.api.exec_inspect(exec_id)["ExitCode"]
            status, other = _session_status(bytes(stderr))
            if other:  # the helper's own complaints, if any
                stream.feed(other)
                stream.close()
            if status.get("error"):
                stream.note(status["error"])
            leftovers = list(status.get("leftovers") or [])
            if "sid" in status:
                # Check, from a second exec, that nothing of the session is left.
                reaped = self._reap(int(status["sid"]))
                if reaped:
                    stream.note(f"killed processes left in the container: {reaped}")
                    leftovers += [p for p in reaped if p not in leftovers]
        return stream.result(argv, status, code, start, log_path, leftovers)

    def _helper(self) -> list[str]:
        return [self._python, f"{self._scripts}/{SESSION_HELPER}"]

    def _reap(self, sid: int) -> list[int]:
        """Kill whatever is left of the session; the pids found (none when all went well)."""
        _, out = self._exec_output([*self._helper(), "--reap", str(sid), "--grace", str(self.kill_grace)])
        try:
            return [int(p) for p in json.loads(out.decode().strip().splitlines()[-1])]
        except (ValueError, IndexError):
            return []

    def fetch(self, path: str, dest: Path) -> bool:
        try:
            stream, stat = self.container.get_archive(path)
        except self._docker.errors.NotFound:
            return False
        if stat.get("mode", 0) & (1 << 31):  # Go's ModeDir: a folder, not a file
            return False
        data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            if member is None:
                return False
            src = tar.extractfile(member)
            assert src is not None
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.redactor.text(src.read().decode("utf-8", errors="replace")).encode("utf-8"))
        return True

    def cleanup(self) -> None:
        if self.keep_files or not self._made:
            return
        try:
            self._exec_output(["rm", "-rf", "--one-file-system", self.workdir])
        except self._docker.errors.DockerException:
            pass  # the container went away: nothing of ours is left to remove


def _session_status(stderr: bytes) -> tuple[dict[str, Any], bytes]:
    """Merge the helper's status lines; return them and every other stderr line."""
    status: dict[str, Any] = {}
    other = []
    for line in stderr.decode(errors="replace").splitlines(keepends=True):
        if line.startswith(SESSION_STATUS_PREFIX):
            try:
                status.update(json.loads(line[len(SESSION_STATUS_PREFIX):]))
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
