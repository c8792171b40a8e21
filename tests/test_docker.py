"""DockerTarget against a real, private Docker daemon and a real container (tests/docker_daemon.py).

The container sees the host's /usr, the test venv and its interpreter read-only at the same
paths, so the real vLLM runs inside it; pytest's temporary folder is mounted read-only too,
so the demo model is at the same path inside. Where no daemon can be started these tests
skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import papermill as pm
import pytest
from conftest import CPU_ENV, DEMO_ENGINE_ARGS, REPO, assert_demo_report_on_this_machine
from docker_daemon import IMAGE, DaemonUnavailable, PrivateDockerd
from test_target import TREE, interrupt_when, start_driver, wait_until

from modelverify_kernel.errors import ParameterError
from modelverify_kernel.model import ModelError, resolve_model
from modelverify_kernel.params import validate
from modelverify_kernel.target import SCRIPTS_DIR, DockerError, DockerTarget

GRACE = 2.0  # TERM → KILL grace inside the container, short to keep the tests quick
CONTAINER_ENV = {"FLAGCX_PATH": "/should/be/gone"}
# Prints the pids of the container's live processes whose environment holds argv[1].
SCAN = (
    "import os, sys\n"
    "needle = sys.argv[1].encode()\n"
    "for p in os.listdir('/proc'):\n"
    "    if not p.isdigit() or int(p) == os.getpid():\n"
    "        continue\n"
    "    try:\n"
    "        env = open(f'/proc/{p}/environ', 'rb').read().split(b'\\0')\n"
    "        state = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]\n"
    "    except OSError:\n"
    "        continue\n"
    "    if needle in env and state != 'Z':\n"
    "        print(p)\n"
)


@pytest.fixture(scope="session")
def dockerd():
    daemon = PrivateDockerd()
    try:
        daemon.start()
    except DaemonUnavailable as exc:
        shutil.rmtree(daemon.root, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(
                f"CI must run the Docker tests, but no private Docker daemon could be started: {exc}"
            )
        pytest.skip(f"no private Docker daemon can be started here: {exc}")
    try:
        daemon.import_image()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def container(dockerd, tmp_path_factory):
    """The user's container stand-in; it must still run, untouched, when the tests end."""
    shared = str(tmp_path_factory.getbasetemp())
    c = dockerd.run_container(f"mv-test-{uuid.uuid4().hex[:8]}", mounts=[shared], env=CONTAINER_ENV)
    yield c
    c.reload()
    assert c.status == "running", "the target container must never be stopped"


@pytest.fixture
def target(dockerd, container):
    t = DockerTarget(
        container.name, docker_host=dockerd.host, python=sys.executable, kill_grace=GRACE
    )
    yield t
    t.cleanup()


def in_container(container, argv: list[str]) -> tuple[int, str]:
    res = container.exec_run(argv)
    return res.exit_code, res.output.decode()


def one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and "Traceback" not in message


def test_docker_parameters_are_validated():
    params = validate(
        {
            "model_path": "/m",
            "container": "c",
            "docker_host": "ssh://me@gpu-host",
            "keep_files": "true",
        }
    )
    assert (params.docker_host, params.keep_files) == ("ssh://me@gpu-host", True)
    assert validate({"model_path": "/m"}).docker_host is None
    with pytest.raises(
        ParameterError, match=r"^Parameter docker_host must be a unix://.*-p docker_host unix://"
    ):
        validate({"model_path": "/m", "docker_host": "/var/run/docker.sock"})
    with pytest.raises(ParameterError, match=r"^Parameter keep_files must be True or False"):
        validate({"model_path": "/m", "keep_files": "yes"})


def test_unreachable_daemon_is_one_sentence():
    with pytest.raises(DockerError) as exc:
        DockerTarget("anything", docker_host="unix:///nonexistent.sock")
    message = str(exc.value)
    one_sentence(message)
    assert "Cannot reach the Docker daemon at unix:///nonexistent.sock" in message
    assert "docker_host" in message


def test_unknown_container_lists_the_running_ones(dockerd, container):
    with pytest.raises(DockerError) as exc:
        DockerTarget("no-such-container", docker_host=dockerd.host)
    message = str(exc.value)
    one_sentence(message)
    assert "'no-such-container' does not exist" in message and container.name in message


def test_stopped_container_is_refused_and_left_alone(dockerd, container):
    stopped = dockerd.run_container(f"mv-stopped-{uuid.uuid4().hex[:8]}")  # ours: we may stop it
    try:
        stopped.stop(timeout=1)
        with pytest.raises(DockerError) as exc:
            DockerTarget(stopped.name, docker_host=dockerd.host)
        message = str(exc.value)
        one_sentence(message)
        assert f"{stopped.name!r} is exited, not running" in message
        assert (
            f"pick a running one: {container.name}" in message and message.count("mv-stopped") == 2
        )
        stopped.reload()
        assert stopped.status == "exited"
    finally:
        stopped.remove(force=True)


def test_env_set_and_unset_reach_the_process(target, container, tmp_path):
    assert in_container(container, ["printenv", "FLAGCX_PATH"]) == (0, "/should/be/gone\n")
    tricky = "a b 'c' \"d\" $HOME; echo injected"
    code = (
        "import os; print('USE', os.environ.get('USE_FLAGGEMS')); print('CX', os.environ.get('FLAGCX_PATH'));"
        " print('TRICKY', os.environ.get('TRICKY'))"
    )
    log = tmp_path / "log.txt"
    res = target.run(
        [sys.executable, "-c", code],
        env_set={"USE_FLAGGEMS": "0", "TRICKY": tricky},
        env_unset=["FLAGCX_PATH"],
        timeout=60,
        log_path=log,
    )
    text = log.read_text()
    assert res.exit_code == 0 and not res.timed_out and res.leftovers == []
    assert "USE 0\n" in text and "CX None\n" in text and f"TRICKY {tricky}\n" in text
    assert "MODELVERIFY-SESSION" not in text  # the helper's status lines stay out of the log
    # the exit code comes through, and a variable both set and unset is set (as locally)
    res = target.run(
        [sys.executable, "-c", "import os, sys; print(os.environ['FLAGCX_PATH']); sys.exit(3)"],
        env_set={"FLAGCX_PATH": "/tmp/FlagCX"},
        env_unset=["FLAGCX_PATH"],
        timeout=60,
        log_path=tmp_path / "log2.txt",
    )
    assert res.exit_code == 3 and "/tmp/FlagCX" in (tmp_path / "log2.txt").read_text()


def test_model_path_is_checked_inside_the_container(target, container, tmp_path):
    scripts = target.install_scripts(SCRIPTS_DIR)
    # on the host only: must not count
    host_model = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="mv-host-model-"))
    try:
        (host_model / "config.json").write_text("{}")
        params = validate({"model_path": str(host_model), "container": container.name})
        with pytest.raises(ModelError) as exc:
            resolve_model(params, target, scripts, tmp_path)
        assert f"{host_model}/config.json does not exist in the target" in str(exc.value)
        one_sentence(str(exc.value))
    finally:
        shutil.rmtree(host_model)
    # inside the container only: found
    inside = target.work_path("model")
    code, _ = in_container(
        container,
        [
            sys.executable,
            "-c",
            "import os, sys; os.makedirs(sys.argv[1]); open(sys.argv[1] + '/config.json', 'w').write('{}')",
            inside,
        ],
    )
    assert code == 0
    step = resolve_model(
        validate({"model_path": inside, "container": container.name}), target, scripts, tmp_path
    )
    assert (step.status, step.path) == ("PASS", inside)


def test_timeout_kills_the_whole_session_inside_the_container(target, container, tmp_path):
    """As in test_target: a child in a process group of its own (like the vLLM server) and a
    child that ignores SIGTERM must die with the phase, inside the container."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    log = tmp_path / "log.txt"
    out: dict = {}
    worker = threading.Thread(
        target=lambda: out.update(
            res=target.run(
                [sys.executable, "-c", TREE],
                env_set={name: value},
                env_unset=[],
                timeout=4,
                log_path=log,
            )
        )
    )
    worker.start()
    # streamed while the phase still runs: the session helper and the three are there
    wait_until(
        lambda: log.exists() and "started" in log.read_text() or not worker.is_alive(),
        "the phase to start",
    )
    assert worker.is_alive() and len(scan(container, marker)) == 4
    worker.join()
    res = out["res"]
    assert res.timed_out and res.exit_code is None and res.ended_by == "timeout"
    assert len(res.leftovers) == 3  # leader, own-group child, SIGTERM-ignoring child
    assert scan(container, marker) == []


def scan(container, marker: str) -> list[str]:
    """Pids of the container's live processes whose environment holds `marker`."""
    code, pids = in_container(container, [sys.executable, "-c", SCAN, marker])
    assert code == 0
    return pids.split()


def test_a_killed_controller_leaves_nothing_in_the_container(dockerd, container, tmp_path):
    """The notebook SIGKILLed mid-phase (no code of it runs): dockerd closes the exec's stdin, the
    helper ends the session and removes the work folder, within a generous deadline."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    driver, work = start_driver(
        "docker", container.name, dockerd.host, tmp_path / "log.txt", marker, grace=GRACE
    )
    assert len(scan(container, marker)) == 4  # the helper and the three of TREE
    assert (
        work.startswith("/tmp/modelverify-")
        and in_container(container, ["test", "-d", work])[0] == 0
    )
    driver.kill()
    driver.wait()
    driver.stdout.close()
    wait_until(
        lambda: (
            not scan(container, marker) and in_container(container, ["test", "-e", work])[0] == 1
        ),
        "no process of the session and no work folder in the container",
    )


def test_a_terminated_controller_ends_its_session_in_the_container_before_it_dies(
    dockerd, container, tmp_path
):
    """SIGTERM (the batch stopping a cell): the container's processes are no child of the
    driver, so nobody else waits for them; the driver itself waits for its session's end."""
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    driver, _ = start_driver(
        "docker", container.name, dockerd.host, tmp_path / "log.txt", marker, grace=GRACE
    )
    assert len(scan(container, marker)) == 4
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(30) == -signal.SIGTERM
    driver.stdout.close()
    assert scan(container, marker) == []


def test_an_interrupted_run_stops_its_session_in_the_container_and_keeps_the_folder(
    target, container, tmp_path
):
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    log = tmp_path / "log.txt"
    watcher, outcome = interrupt_when(log, "started", lambda: not scan(container, marker))
    with pytest.raises(KeyboardInterrupt):
        target.run(
            [sys.executable, "-c", TREE],
            env_set={name: value},
            env_unset=[],
            timeout=600,
            log_path=log,
        )
    watcher.join()
    assert outcome["gone"] is True and scan(container, marker) == []
    assert in_container(container, ["test", "-d", target.workdir])[0] == 0  # kept for the next run
    assert "interrupted: the phase's process session was stopped" in log.read_text()
    res = target.run(
        [sys.executable, "-c", "print('again')"],
        env_set={},
        env_unset=[],
        timeout=30,
        log_path=tmp_path / "again.txt",
    )
    assert res.exit_code == 0 and "again" in (tmp_path / "again.txt").read_text()


def test_describe_names_the_daemon_as_the_docker_cli_takes_it(dockerd, container, monkeypatch):
    """The report's reproduce command is `docker -H URL exec ...`: the URL must reach this daemon."""
    explicit = DockerTarget(container.name, docker_host=dockerd.host).describe()
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    from_env = DockerTarget(container.name).describe()
    assert explicit["docker_host_url"] == from_env["docker_host_url"] == dockerd.host
    assert explicit["docker_tls"] is False
    monkeypatch.delenv("DOCKER_HOST")
    cli = subprocess.run(
        [
            "docker",
            "-H",
            explicit["docker_host_url"],
            "exec",
            container.name,
            "printenv",
            "FLAGCX_PATH",
        ],
        capture_output=True,
        text=True,
    )
    assert (cli.returncode, cli.stdout) == (0, "/should/be/gone\n"), cli.stderr


def test_docker_cli_host_without_a_daemon(monkeypatch):
    """Nothing given: the SDK's default socket, spelled as the CLI takes it; tcp stays tcp."""
    from modelverify_kernel.target import docker_cli_host

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    assert docker_cli_host(None) == ("unix:///var/run/docker.sock", False)
    assert docker_cli_host("tcp://gpu-host:2375") == ("tcp://gpu-host:2375", False)


def test_orphans_of_a_finished_command_are_killed(target, container, tmp_path):
    marker = f"MV_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    res = target.run(
        [sys.executable, "-c", code],
        env_set={name: value},
        env_unset=[],
        timeout=30,
        log_path=tmp_path / "log.txt",
    )
    assert res.exit_code == 0 and len(res.leftovers) == 1
    assert in_container(container, [sys.executable, "-c", SCAN, marker]) == (0, "")


@pytest.mark.parametrize("keep", [False, True])
def test_copied_files_are_removed_unless_kept(dockerd, container, tmp_path, keep):
    t = DockerTarget(
        container.name, docker_host=dockerd.host, python=sys.executable, keep_files=keep
    )
    scripts = t.install_scripts(SCRIPTS_DIR)
    assert scripts.startswith("/tmp/modelverify-") and t.path_exists(
        f"{scripts}/run_offline_inference.py"
    )
    assert t.fetch(f"{scripts}/default_prompts.json", tmp_path / "p.json")
    assert (tmp_path / "p.json").read_bytes() == (SCRIPTS_DIR / "default_prompts.json").read_bytes()
    assert not t.fetch(f"{scripts}/nope.json", tmp_path / "n.json")
    assert not t.fetch(scripts, tmp_path / "dir.json")  # a folder is not a result file
    res = t.run(
        [sys.executable, "-c", "open('out.json', 'w').write('{\"ok\": 1}')"],
        env_set={},
        env_unset=[],
        timeout=30,
        log_path=tmp_path / "log.txt",
    )
    assert res.exit_code == 0 and t.fetch(t.work_path("out.json"), tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == {"ok": 1}
    info = t.describe()
    assert (info["kind"], info["container_id"], info["container_name"], info["image"]) == (
        "docker",
        container.id,
        container.name,
        IMAGE,
    )
    assert info["image_id"].startswith("sha256:")
    t.cleanup()
    assert in_container(container, ["test", "-e", t.workdir])[0] == (0 if keep else 1)
    if keep:
        in_container(container, ["rm", "-rf", t.workdir])


def test_a_tmpfs_tmp_is_passed_over(dockerd):
    """put_archive cannot write into a tmpfs mount: the work folder goes to /var/tmp instead."""
    c = dockerd.client().containers.run(
        IMAGE,
        ["sleep", "infinity"],
        detach=True,
        network_mode="none",
        volumes={p: {"bind": p, "mode": "ro"} for p in ["/usr"]},
        tmpfs={"/tmp": "rw,mode=1777"},
        name=f"mv-tmpfs-{uuid.uuid4().hex[:8]}",
    )
    try:
        t = DockerTarget(c.name, docker_host=dockerd.host, python="/usr/bin/python3")
        scripts = t.install_scripts(SCRIPTS_DIR)
        assert scripts.startswith("/var/tmp/modelverify-") and t.path_exists(scripts)
        t.cleanup()
        assert not t.path_exists(t.workdir)
    finally:
        c.remove(force=True)


@pytest.mark.engine
def test_notebook_in_the_container_reaches_the_local_verdict(
    dockerd, container, demo_model, tmp_path
):
    """The same run as tests/test_notebook.py::test_good_run_on_the_demo_model, in the container."""
    out_dir = tmp_path / "report"
    pm.execute_notebook(
        str(REPO / "notebooks" / "verify.ipynb"),
        str(tmp_path / "verify.ipynb"),
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
        parameters=dict(
            model_path=str(demo_model),
            output_dir=str(out_dir),
            env=CPU_ENV,
            extra_vllm_args=DEMO_ENGINE_ARGS,
            max_model_len=512,
            container=container.name,
            docker_host=dockerd.host,
            target_python=sys.executable,
        ),
    )
    data = json.loads((out_dir / "report.json").read_text())
    assert_demo_report_on_this_machine(data, out_dir)  # the same verdict as the local target
    target = data["environment"]["target"]
    assert (target["kind"], target["container_id"], target["container_name"], target["image"]) == (
        "docker",
        container.id,
        container.name,
        IMAGE,
    )
    # the run's folder in the container is gone, and so is every process it started
    assert in_container(container, ["test", "-e", target["workdir"]])[0] == 1
    code, ps = in_container(
        container,
        [
            sys.executable,
            "-c",
            "import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]))",
        ],
    )
    assert code == 0 and int(ps) <= 3  # init, sleep, this scan
    assert_reproduce_command_reruns_the_phase(container, data, out_dir, dockerd.host)


def assert_reproduce_command_reruns_the_phase(container, data: dict, out_dir, host: str) -> None:
    """The report's command for one phase runs as written with the docker CLI (the daemon named
    with -H): the scripts copied in again, the same tokens as the run."""
    copy, run = data["reproduce"]["phases"]["run_a_offline"].split(" && ")
    assert shlex.split(copy)[:3] == ["docker", "-H", host]
    for command in (copy, run):
        proc = subprocess.run(
            shlex.split(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
    code, redone = in_container(container, ["cat", "/tmp/model-verify-run_a_offline.json"])
    first = json.loads((out_dir / "results" / "run_a_offline.json").read_text())
    assert code == 0 and json.loads(redone)["status"] == "PASS"
    assert [o["token_ids"] for o in json.loads(redone)["outputs"]] == [
        o["token_ids"] for o in first["outputs"]
    ]
    assert (
        in_container(
            container,
            ["rm", "-r", "/tmp/model-verify-scripts", "/tmp/model-verify-run_a_offline.json"],
        )[0]
        == 0
    )


def _hostile(marker: str) -> list[str]:
    return [f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"x && touch {marker}"]


def test_hostile_input_runs_nothing_in_the_container(dockerd, container, tmp_path):
    """Shell syntax in model_path and container reaches Docker as plain argv strings or is refused."""
    marker = f"/tmp/pwned-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ParameterError, match="container"):
        validate({"model_path": "/m", "container": f"c; touch {marker}"})
    for i, model_path in enumerate([f"/tmp/{v}" for v in _hostile(marker)] + _hostile(marker)):
        params = validate(
            {
                "model_path": model_path,
                "container": container.name,
                "docker_host": dockerd.host,
                "target_python": sys.executable,
                "output_dir": str(tmp_path / f"out{i}"),
            }
        )
        from modelverify_kernel.pipeline import Verification

        v = Verification.run_all(params)
        data = json.loads((v.out_dir / "report.json").read_text())
        assert data["diff_analysis"]["conclusion"] == "PRECHECK_FAILED", data["precheck"]
    assert in_container(container, ["test", "-e", marker])[0] == 1
    assert not Path(marker).exists()


@pytest.mark.engine
def test_secrets_of_the_container_appear_in_no_file(dockerd, demo_model, tmp_path):
    """A container whose environment holds tokens; the stand-in FL plugin (mode `leak`, mounted
    read-only) prints HF_TOKEN in Run B's engine log. Hostile engine arguments ride along."""
    secrets = {
        "HF_TOKEN": f"hf_container_{uuid.uuid4().hex}",
        "REGISTRY_PASSWORD": f"pw-{uuid.uuid4().hex}",
    }
    site = REPO / "tests" / "fake_stack" / "site"
    shared = str(demo_model.parent)
    c = dockerd.run_container(
        f"mv-secret-{uuid.uuid4().hex[:8]}", mounts=[shared, str(site)], env=secrets
    )
    marker = f"/tmp/pwned-{uuid.uuid4().hex[:8]}"
    try:
        out_dir = tmp_path / "report"
        out_dir.mkdir()
        notebook = out_dir / "verify.ipynb"
        pm.execute_notebook(
            str(REPO / "notebooks" / "verify.ipynb"),
            str(notebook),
            cwd=str(REPO),
            kernel_name="python3",
            progress_bar=False,
            parameters=dict(
                model_path=str(demo_model),
                output_dir=str(out_dir),
                max_model_len=512,
                env=dict(CPU_ENV, PYTHONPATH=str(site)),
                run_b="always",
                run_b_env={"USE_FLAGGEMS": "1", "VLLM_PLUGINS": "fl", "FAKE_FL_MODE": "leak"},
                extra_vllm_args=DEMO_ENGINE_ARGS + ["--served-model-name", f"$(touch {marker})"],
                container=c.name,
                docker_host=dockerd.host,
                target_python=sys.executable,
            ),
        )
        files = [p for p in out_dir.rglob("*") if p.is_file()]
        assert {"report.json", "report.html", "verify.ipynb", "run_b_offline.log"} <= {
            p.name for p in files
        }
        for path in files:
            text = path.read_text(errors="replace")
            for name, value in secrets.items():
                assert value not in text, f"{name} leaked into {path}"
        assert "HF_TOKEN=***" in (out_dir / "logs" / "run_b_offline.log").read_text()
        data = json.loads((out_dir / "report.json").read_text())
        assert data["run_a_without_multichip"]["phase_b_serve"] == "PASS"
        served = json.loads((out_dir / "results" / "run_a_serve.json").read_text())["served_models"]
        assert served == [f"$(touch {marker})"]
        assert in_container(c, ["test", "-e", marker])[0] == 1
    finally:
        c.remove(force=True)  # our own container, not the user's


def _precheck(container, dockerd, tmp_path, **values) -> tuple[str, Path]:
    from modelverify_kernel.pipeline import Verification

    params = validate(
        {
            "model_path": "/models/m",
            "container": container.name,
            "docker_host": dockerd.host,
            "output_dir": str(tmp_path / "out"),
            **values,
        }
    )
    v = Verification.run_all(params)
    data = json.loads((v.out_dir / "report.json").read_text())
    assert (data["status"], data["diff_analysis"]["conclusion"]) == ("FAIL", "PRECHECK_FAILED")
    assert sorted(p.name for p in (v.out_dir / "logs").iterdir()) == ["probe.log"]  # no phase ran
    assert (
        data["environment"]["target"]["docker_host_url"] == dockerd.host
    )  # for `docker -H URL exec`
    message = data["precheck"]["error"]
    one_sentence(message)
    return message, v.out_dir


def test_a_container_python3_without_vllm_fails_the_pre_check(dockerd, container, tmp_path):
    """The container's `python3` is the system Python of the mounted /usr: it has no vLLM."""
    code, out = in_container(
        container,
        [
            "python3",
            "-c",
            "import sys, importlib.util as u; print(sys.executable, u.find_spec('vllm'))",
        ],
    )
    assert (code, out) == (0, "/usr/bin/python3 None\n")
    message, _ = _precheck(container, dockerd, tmp_path)  # target_python: the default, python3
    assert message.startswith(
        "Parameter target_python: python3 (/usr/bin/python3) in the target cannot import "
        "vLLM (No module named 'vllm'); set target_python"
    )


def test_a_target_python_missing_in_the_container_fails_the_pre_check(dockerd, container, tmp_path):
    message, _ = _precheck(container, dockerd, tmp_path, target_python="/opt/nope/bin/python")
    assert message.startswith(
        "Parameter target_python: the stack probe cannot start /opt/nope/bin/python in the "
        'target (exec: "/opt/nope/bin/python": stat /opt/nope/bin/python: no such file'
    )
