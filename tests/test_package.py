"""model-verify as a package: shipped data, the console script, a wheel in a fresh venv, and
reproduce commands that re-create the verification.

The phase reproduce command is run for real on a real engine in tests/test_notebook.py's good
run (it reuses that run's report instead of starting another notebook).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
from conftest import REPO

from modelverify_kernel import params as mv_params
from modelverify_kernel import report, resources
from modelverify_kernel.__main__ import main

DATA = Path(__file__).parent / "data"
# What a wheel is built from: pyproject.toml maps these into the package.
SOURCES = [
    "pyproject.toml",
    "README.md",
    "modelverify_kernel",
    "container_scripts",
    "references",
    "notebooks",
]


def test_shipped_data_is_found_through_one_lookup():
    assert (resources.scripts_dir() / "run_offline_inference.py").is_file()
    assert (resources.scripts_dir() / "evidence_hook" / "sitecustomize.py").is_file()
    assert (resources.references_dir() / "error-classification.md").is_file()
    assert nbformat.read(resources.notebook_path(), as_version=4).cells


# --------------------------------------------------------------------------- reproduce: the whole verification

TRICKY = {
    "model_path": "/models/my model",
    "container": "8",
    "max_model_len": 512,
    "trust_remote_code": True,
    "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "A": "x y"},
    "extra_vllm_args": ["--dtype", "float32", "--x=a b"],
    "tie_tolerance": 0.03,
    "run_b": "never",
    "port": 8123,
}


def _params_of(notebook: Path) -> dict:
    """The parameters a prepared notebook would run with: its parameters cell, then papermill's."""
    nb = nbformat.read(notebook, as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            exec(cell.source, namespace)  # noqa: S102 - our own notebook's parameter cells
    return mv_params.from_namespace(
        {k: v for k, v in namespace.items() if k != "__builtins__"}
    ).to_dict()


def _reproduce(tmp_path: Path) -> tuple[dict, dict]:
    wanted = mv_params.validate({**TRICKY, "output_dir": str(tmp_path / "out")})
    data = {
        "parameters": wanted.to_dict(),
        "environment": {"target": {"kind": "local"}},
        **{
            run: {"env": {"set": {}, "unset": []}, "phases": {}}
            for run in report.SEED_RUN_KEYS.values()
        },
    }
    return wanted.to_dict(), report.reproduce(data)


@pytest.mark.process
def test_model_verify_run_command_recreates_every_parameter(tmp_path):
    """The report's `model-verify run …` line, through the real console front and papermill."""
    wanted, commands = _reproduce(tmp_path)
    argv = shlex.split(commands["run"])
    assert argv[:2] == ["model-verify", "run"]
    proc = subprocess.run(
        [sys.executable, "-m", "modelverify_kernel", *argv[1:], "--prepare-only"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _params_of(tmp_path / "out" / "verify.ipynb") == wanted


@pytest.mark.process
def test_papermill_command_recreates_every_parameter(tmp_path):
    """The report's papermill line, run by papermill's own CLI from the checkout."""
    wanted, commands = _reproduce(tmp_path)
    mkdir, command = commands["papermill"].split(" && ")
    subprocess.run(shlex.split(mkdir), check=True, cwd=REPO)
    argv = shlex.split(command)
    papermill = Path(sys.executable).with_name("papermill")
    proc = subprocess.run(
        [str(papermill), *argv[1:], "--prepare-only"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _params_of(tmp_path / "out" / "verify.ipynb") == wanted


def test_run_lists_the_notebook_parameters(capsys):
    assert main(["run", "--help-notebook"]) == 0
    listed = [line.split(":")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed) == sorted(mv_params.PARAMETER_NAMES)


@pytest.mark.process
def test_run_refuses_bad_yaml_and_reports_a_refused_parameter(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "-y", "env: [", "--prepare-only"])
    assert exc.value.code == 2 and "is not YAML" in capsys.readouterr().err
    # a refused parameter stops the notebook: exit 1, one sentence naming it (papermill's exit code)
    out = tmp_path / "nb.ipynb"
    code = main(
        [
            "run",
            "-r",
            "output_dir",
            str(tmp_path / "o"),
            "-p",
            "tp_size",
            "4",
            "--output-notebook",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 1 and "ParameterError: Parameter model_path is required" in err and str(out) in err
    )
    assert "Traceback" not in err


def test_local_phase_reproduce_names_the_shipped_script(tmp_path):
    cmd = report._phase_reproduce(
        "run_a_offline",
        [
            "/venv/bin/python",
            "/deleted/work/run_offline_inference.py",
            "--model",
            "/m",
            "--output",
            "/deleted/work/run_a_offline.json",
        ],
        ["env", "-u", "FLAGCX_PATH", "USE_FLAGGEMS=0"],
        {"kind": "local"},
        300,
        1800,
    )
    argv = shlex.split(cmd)
    assert argv[:4] == ["env", "-u", "FLAGCX_PATH", "USE_FLAGGEMS=0"]
    assert (
        argv[4] == "/venv/bin/python"
        and Path(argv[5]) == resources.scripts_dir() / "run_offline_inference.py"
    )
    assert argv[6:] == ["--model", "/m", "--output", "run_a_offline.json"]


def test_docker_phase_reproduce_follows_the_latest_attempt():
    """A debugging re-run changed a flag and the timeout: the command reproduces that attempt."""
    params = mv_params.validate(
        {"model_path": "/m", "container": "c1", "docker_host": "tcp://gpu:2375", "env": {"K": "1"}}
    )
    serve = {
        "command": "python3 /tmp/gone/run_serve.py --model /m --output /tmp/gone/x.json".split(),
        "env": {"set": {"USE_FLAGGEMS": "1", "FLAGGEMS_OPS": "-addmm"}, "unset": ["FLAGCX_PATH"]},
        "overrides": {"serve_timeout": 900},
        "attempt": 2,
    }
    # docker_host_url: the daemon the SDK really used (DockerTarget.describe), as `docker -H` takes it
    data = {
        "parameters": params.to_dict(),
        "environment": {
            "target": {
                "kind": "docker",
                "container_name": "c1",
                "docker_host": "tcp://gpu:2375",
                "docker_host_url": "tcp://gpu:2375",
            }
        },
        "run_a_without_multichip": {"env": {"set": {}, "unset": []}, "phases": {}},
        "run_b_with_multichip": {
            "env": {"set": {"USE_FLAGGEMS": "1"}, "unset": []},
            "phases": {"serve": serve},
        },
    }
    copy, run = report.reproduce(data)["phases"]["run_b_serve"].split(" && ")
    assert shlex.split(copy) == [
        *"docker -H tcp://gpu:2375 cp".split(),
        f"{resources.scripts_dir()}/.",
        "c1:/tmp/model-verify-scripts",
    ]
    scripts = "/tmp/model-verify-scripts"
    assert (
        shlex.split(run)
        == (
            "docker -H tcp://gpu:2375 exec c1 env -u FLAGCX_PATH K=1 USE_FLAGGEMS=1 FLAGGEMS_OPS=-addmm "
            f"python3 {scripts}/run_in_session.py --timeout 900 --cap 1800 -- "
            f"python3 {scripts}/run_serve.py --model /m --output /tmp/model-verify-run_b_serve.json"
        ).split()
    )
    data["environment"]["target"].update(
        docker_host="the default socket",
        docker_host_url="unix:///var/run/docker.sock",
        docker_tls=True,
    )
    copy, _ = report.reproduce(data)["phases"]["run_b_serve"].split(" && ")
    assert shlex.split(copy)[:4] == ["docker", "-H", "unix:///var/run/docker.sock", "--tlsverify"]


# --------------------------------------------------------------------------- a wheel in a fresh venv


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the repo's sources, built offline with this venv's setuptools."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    pip_wheel = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)]
    subprocess.run([sys.executable, "-m", *pip_wheel, str(src)], check=True, timeout=300)
    (wheel,) = wheels.glob("model_verify-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A new venv with the wheel alone in it (no index), and an environment that leaves ours out."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    clean = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    install = ["pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", *install], check=True, env=clean, timeout=300
    )
    return env_dir, clean


@pytest.mark.process
def test_wheel_installs_into_a_fresh_venv_and_classifies(tmp_path):
    """Build the wheel from a copy of the repo's sources, install it into a fresh venv, classify.

    Route: `pip wheel --no-deps --no-build-isolation` with this venv's setuptools (offline, no
    build env download); the fresh venv gets the wheel with `--no-deps` and nothing else,
    because `model-verify classify` needs only the standard library (the console script imports
    each command's modules lazily) — which this also proves. The venv's pip is ensurepip's; no
    index is contacted.
    """
    env_dir, clean = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    bin_dir = env_dir / "bin"

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=120
        )

    labels = json.loads((DATA / "logs" / "labels.json").read_text())
    log = DATA / "logs" / "oom_worker.log"
    proc = run(str(bin_dir / "model-verify"), "classify", str(log), "--json")
    assert proc.returncode == 0, proc.stderr
    diag = json.loads(proc.stdout)
    assert diag["file"] == str(log) and diag["component"] == labels["oom_worker.log"]
    assert diag["evidence"]
    # a missing file: one sentence, exit 2
    proc = run(str(bin_dir / "model-verify"), "classify", str(tmp_path / "nope.log"))
    assert proc.returncode == 2 and "nope.log is not a readable file" in proc.stderr

    # the targets find the scripts inside the installed package, not in a checkout
    probe = (
        "import json; from pathlib import Path\n"
        "from modelverify_kernel import kernel_index, resources\n"
        "from modelverify_kernel.target import SCRIPTS_DIR, LocalTarget\n"
        "t = LocalTarget(work_root=Path('work'))\n"
        "dest = Path(t.install_scripts(SCRIPTS_DIR))\n"
        "print(json.dumps({'scripts': str(resources.scripts_dir()), 'refs': str(resources.references_dir()),"
        " 'nb': str(resources.notebook_path()), 'copied': sorted(p.name for p in dest.iterdir()),"
        " 'kernels': len(kernel_index.load())}))\n"
        "t.cleanup()\n"
    )
    proc = run(str(bin_dir / "python"), "-c", probe)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    site = next((env_dir / "lib").glob("python3*/site-packages/modelverify_kernel"))
    assert Path(found["scripts"]) == site / "container_scripts"
    assert (
        Path(found["refs"]) == site / "references"
        and Path(found["nb"]) == site / "notebooks" / "verify.ipynb"
    )
    assert found["kernels"] > 1000  # the kernel index ships with the rule tables
    assert {
        "run_offline_inference.py",
        "run_serve.py",
        "run_in_session.py",
        "evidence_hook",
    } <= set(found["copied"])
