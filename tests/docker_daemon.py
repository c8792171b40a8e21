"""A private Docker daemon for the tests, changing nothing on the host (FACTS.md recipe).

`dockerd` keeps its data, exec root, pid file and socket under one temporary folder, with no
iptables rules, no IP forwarding and no bridge. No image can be pulled here, so a minimal
image is imported from a tiny rootfs tarball (usr-merge symlinks, /etc/passwd, /etc/group,
empty folders); containers see the host's `/usr`, the test venv and the interpreter it links
to, read-only at the same paths, so the vLLM installed on the host runs inside them.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

IMAGE = "modelverify-test-base:latest"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


class DaemonUnavailable(Exception):
    """No private daemon can be started here (no dockerd, not root, or it failed to start)."""


def python_mounts() -> list[str]:
    """Host folders a container needs to run this test environment's Python (and vLLM).

    The venv (`sys.prefix`) and the installation its `bin/python` links to (a pyenv build
    here, not under /usr) are mounted at their own paths.
    """
    folders = {Path(sys.prefix)}
    real = Path(os.path.realpath(sys.executable))
    base = Path(sys.base_prefix)
    folders.add(base if real.is_relative_to(base) else real.parent.parent)
    return sorted(str(f) for f in folders if not f.is_relative_to("/usr"))


def rootfs_tarball() -> bytes:
    """A minimal root filesystem: usr-merge links, users, groups and empty folders."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
            tar.addfile(info)

        def add_file(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))

        for d in (
            "usr",
            "etc",
            "dev",
            "proc",
            "sys",
            "run",
            "var",
            "var/tmp",
            "root",
            "home",
            "opt",
        ):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        for link in ("bin", "sbin", "lib", "lib64"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
        add_file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        # Debian's loader cache lists the multiarch library folders of the mounted /usr.
        if Path("/etc/ld.so.cache").is_file():
            add_file("etc/ld.so.cache", Path("/etc/ld.so.cache").read_bytes())
    return buf.getvalue()


@dataclass
class PrivateDockerd:
    """One dockerd under `root`; `start()` returns the DOCKER_HOST, `stop()` removes it all."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mv-dockerd-")))
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def start(self) -> str:
        exe = shutil.which("dockerd")
        if exe is None:
            raise DaemonUnavailable(
                "dockerd is not installed (apt-get install docker.io iptables tini)"
            )
        if os.geteuid() != 0:
            raise DaemonUnavailable("a private dockerd needs root")
        argv = [
            exe,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "dockerd.pid"),
            "-H",
            self.host,
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
        ]
        log = open(self.root / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                docker.DockerClient(base_url=self.host).ping()
                return self.host
            except docker.errors.DockerException:
                time.sleep(0.2)
        tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise DaemonUnavailable(f"dockerd did not come up: {tail}")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host)

    def import_image(self) -> str:
        """Import the minimal image (no registry); returns its tag."""
        repo, tag = IMAGE.split(":")
        self.client().api.import_image_from_data(rootfs_tarball(), repository=repo, tag=tag)
        return IMAGE

    def run_container(self, name: str, mounts: list[str] = (), env: dict[str, str] | None = None):
        """A long-running container that sees the test Python read-only, with no network."""
        volumes = {p: {"bind": p, "mode": "ro"} for p in ["/usr", *python_mounts(), *mounts]}
        init = ["/usr/bin/tini", "--"] if Path("/usr/bin/tini").exists() else []
        return self.client().containers.run(
            IMAGE,
            command=[*init, "sleep", "infinity"],
            name=name,
            detach=True,
            network_mode="none",
            volumes=volumes,
            environment=env or {},
            shm_size="1g",
        )

    def stop(self) -> None:
        """SIGTERM to dockerd (it stops its containers), then remove every file it made."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Mounts dockerd may leave behind (overlay, shm) must go before the files can.
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(self.root) + "/"):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
