"""The report people read: the real page in a real browser, `render`, JUnit, --help-notebook, fail_on.

The browser is Debian's Chromium driven by Playwright; under CI (env CI set) a missing
Chromium or Playwright fails the test instead of skipping it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO
from junitparser import Failure, JUnitXml, Skipped

from modelverify_kernel import report
from modelverify_kernel.analysis.judge import Judgement
from modelverify_kernel.analysis.verdict import decide
from modelverify_kernel.errors import ParameterError
from modelverify_kernel.params import PARAMETER_NAMES, Params, validate
from modelverify_kernel.records import Evidence, PhaseResult
from modelverify_kernel.runs import run_specs

NOTEBOOK = REPO / "notebooks" / "verify.ipynb"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelverify_kernel", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


# --------------------------------------------------------------------------- a failing report, built in-process

FLAGGEMS_LOG = """\
INFO 05-20 04:39:20 [core.py:80] Initializing a V1 LLM engine
(EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700] Traceback (most recent call last):
(EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700]   File "/usr/lib/python3/site-packages/flag_gems/ops/addmm.py", line 88, in addmm
(EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700] RuntimeError: \x1b[31mkernel <addmm> failed\x1b[0m \x15
"""


def failing_report(tmp_path: Path) -> dict:
    """Run A passes, Run B's serve phase fails in FlagGems (diagnosis attached as the pipeline does)."""
    params = validate(
        {
            "model_path": "/models/m",
            "output_dir": str(tmp_path),
            "max_model_len": 512,
            "container": "8",
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
        }
    )
    runs: dict = {}
    for name in ("run_a", "run_b"):
        runs[name] = {}
        for phase in ("offline", "serve"):
            log = tmp_path / "logs" / f"{name}_{phase}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            p = PhaseResult(
                run=name,
                phase=phase,
                status="PASS",
                duration_s=20.0 + len(runs[name]),
                log=str(log),
                command=["python3", f"/tmp/x/{phase}.py", "--tp", "1"],
                result={
                    "timings": {"import_s": 5.0, "load_s": 9.0, "generate_s": 2.0},
                    "outputs": [],
                },
            )
            log.write_text("INFO ready\n" * 100)
            if name == "run_b" and phase == "serve":
                log.write_text(FLAGGEMS_LOG)
                error = "RuntimeError: kernel <addmm> failed \x15"
                p = replace(
                    p,
                    status="FAIL",
                    error=error,
                    diagnosis={
                        "component": "FlagGems",
                        "layer": 5,
                        "rule": "MC-GEMS-1",
                        "culprit_op": "addmm",
                        "evidence": [FLAGGEMS_LOG.splitlines()[2]],
                        "hint": "disable addmm in FlagGems",
                        "confidence": "high",
                        "signature": "s",
                        "error": error,
                    },
                )
            runs[name][phase] = p
    v = decide(runs["run_a"], runs["run_b"])
    evidence = Evidence(
        parameters=params.to_dict(),
        started_at="2026-01-01T00:00:00+00:00",
        target={
            "kind": "docker",
            "container_name": "8",
            "container_id": "abc",
            "image": "vllm:fl",
            "image_id": "sha256:1",
            "image_digests": ["vllm@sha256:2"],
        },
        tp=1,
        runs=runs,
        specs=run_specs(params),
    )
    return report.build(evidence, Judgement(verdict=v))


@pytest.mark.process
def test_failing_report_shows_every_section(tmp_path):
    data = failing_report(tmp_path)
    _, html_path = report.write_report(data, tmp_path)
    html = html_path.read_text()
    assert data["status"] == "PARTIAL" and data["diff_analysis"]["conclusion"] == "MULTICHIP_ERROR"
    banner = html[html.index('id="verdict"') : html.index("<nav>")]
    assert "PARTIAL — MULTICHIP_ERROR" in banner and "FlagGems" in banner and "op addmm" in banner
    card = html[html.index('id="diag-run_b-serve"') :]
    assert (
        "culprit op" in card
        and "disable addmm in FlagGems" in card
        and "flag_gems/ops/addmm.py" in card
    )
    assert "<svg" in html and "timed out" not in html
    assert "vllm@sha256:2" in html and "abc" in html  # fingerprint: container id, image digest
    # the log tail is in report.json (colour codes removed), and collapsed in the page
    tail = data["run_b_with_multichip"]["phases"]["serve"]["log_tail"]
    assert tail[-1].endswith("failed \x15") and "\x1b" not in "".join(tail)
    assert (
        len(data["run_a_without_multichip"]["phases"]["offline"]["log_tail"])
        == report.LOG_TAIL_LINES
    )
    assert '<details class="failed">' in html and "<details open" not in html
    # reproduce: raw strings stay strings ("8" is a container name, not the number 8)
    cmd = data["reproduce"]["papermill"]
    assert "-r container 8" in cmd and "-p max_model_len 512" in cmd and "-y 'env: {" in cmd
    assert "-r model_path /models/m" in cmd and "tie_tolerance" not in cmd
    copy, run_b_serve = data["reproduce"]["phases"]["run_b_serve"].split(" && ")
    assert copy.startswith("docker cp ") and copy.endswith(
        "/container_scripts/. 8:/tmp/model-verify-scripts"
    )
    assert run_b_serve.startswith("docker exec 8 env VLLM_CPU_KVCACHE_SPACE=1 USE_FLAGGEMS=1")
    assert run_b_serve.endswith("-- python3 /tmp/model-verify-scripts/serve.py --tp 1")
    assert (
        data["reproduce"]["run"].startswith("model-verify run ")
        and "-r container 8" in data["reproduce"]["run"]
    )
    assert not re.search(r"https?://", html)  # standalone: the page names no URL


@pytest.mark.process
def test_render_reproduces_the_html_byte_for_byte_in_another_process(tmp_path):
    _, html_path = report.write_report(failing_report(tmp_path), tmp_path)
    written = html_path.read_bytes()
    html_path.unlink()
    done = _cli("render", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert html_path.read_bytes() == written


@pytest.mark.process
def test_junit_file_parses_with_a_junit_reader(tmp_path):
    report.write_report(failing_report(tmp_path), tmp_path)
    junit = tmp_path / "ci" / "junit.xml"
    done = _cli("render", str(tmp_path), "--junit", str(junit))
    assert done.returncode == 0, done.stderr
    xml = JUnitXml.fromfile(str(junit))
    suites = {s.name: s for s in xml}
    assert set(suites) == {"Run A (base)", "Run B (multi-chip)", "verdict"}
    cases = {(s.name, c.name.split(" ")[0]): c for s in xml for c in s}
    assert len(cases) == 5
    assert all(c.is_passed for (s, _), c in cases.items() if s == "Run A (base)")
    failure = cases[("Run B (multi-chip)", "serve")].result[0]
    assert isinstance(failure, Failure) and failure.type == "FlagGems"
    assert failure.message.startswith(
        "FlagGems (layer 5), op addmm: RuntimeError: kernel <addmm> failed \\x15"
    )
    assert "flag_gems/ops/addmm.py" in failure.text and "hint: disable addmm" in failure.text
    assert cases[("Run B (multi-chip)", "offline")].is_passed
    verdict = cases[("verdict", "verdict")].result[0]
    assert isinstance(verdict, Failure) and verdict.type == "MULTICHIP_ERROR"
    assert suites["Run B (multi-chip)"].failures == 1 and suites["Run B (multi-chip)"].tests == 2


@pytest.mark.process
def test_junit_marks_skipped_and_not_run_phases_skipped(tmp_path):
    data = failing_report(tmp_path)
    for phase in data["run_b_with_multichip"]["phases"].values():
        phase.update(
            status="SKIPPED",
            reason="Run B skipped: no multi-chip packages installed.",
            diagnosis=None,
        )
    path = tmp_path / "j.xml"
    from modelverify_kernel.junit import write_junit

    write_junit(data, path)
    suite = [s for s in JUnitXml.fromfile(str(path)) if s.name == "Run B (multi-chip)"][0]
    results = [c.result[0] for c in suite]
    assert all(isinstance(r, Skipped) and "no multi-chip" in r.message for r in results)
    assert suite.skipped == 2 and suite.failures == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "is not a folder"),
        (lambda d: d.mkdir(), "report.json does not exist"),
        (lambda d: (d.mkdir(), (d / "report.json").write_text("{oops")), "is not valid JSON"),
        (
            lambda d: (d.mkdir(), (d / "report.json").write_text('{"status": "PASS"}')),
            "is not a model-verify report",
        ),
    ],
)
@pytest.mark.process
def test_render_refuses_bad_input_with_one_sentence(tmp_path, setup, message):
    folder = tmp_path / "out"
    setup(folder)
    done = _cli("render", str(folder))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.process
def test_help_notebook_lists_every_parameter_with_type_default_and_help():
    done = subprocess.run(
        [str(Path(sys.executable).parent / "papermill"), "--help-notebook", str(NOTEBOOK)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Unable to parse" not in done.stderr
    listed, name = {}, None
    for line in done.stdout.splitlines():
        m = re.match(r"^  (\w+): (.+?) \(default (.*?)\)(.*)$", line)
        if m:  # "  name: type (default value)  help", the help on the next line when long
            name = m.group(1)
            listed[name] = [m.group(2), m.group(3), m.group(4).strip()]
        elif name and line.startswith(" " * 30) and not listed[name][2]:
            listed[name][2] = line.strip()
    assert set(listed) == set(PARAMETER_NAMES)
    defaults = Params(model_path="x").to_dict() | {"model_path": None}
    for name, (type_name, default, help_text) in listed.items():
        assert type_name != "Unknown type", name
        assert ast.literal_eval(default) == defaults[name], name
        assert len(help_text) > 15, name
    assert listed["model_path"][2].startswith("required")


def test_fail_on_is_validated_and_decides_on_the_status():
    with pytest.raises(ParameterError, match="fail_on must be one of never, fail, partial"):
        validate({"model_path": "/m", "fail_on": "always"})
    outcomes = {}
    for fail_on in ("never", "fail", "partial"):
        for status in ("PASS", "PARTIAL", "FAIL"):
            r = {
                "status": status,
                "parameters": {"output_dir": "out"},
                "diff_analysis": {"conclusion": "X", "detail": "why.", "recommended_stack": "base"},
            }
            try:
                report.check_fail_on(r, fail_on)
                outcomes[fail_on, status] = "ok"
            except report.VerdictFailed as exc:
                assert str(exc).count(".") <= 2 and "fail_on=" + fail_on in str(exc)
                outcomes[fail_on, status] = "raise"
    assert [k for k, v in outcomes.items() if v == "raise"] == [
        ("fail", "FAIL"),
        ("partial", "PARTIAL"),
        ("partial", "FAIL"),
    ]


# --------------------------------------------------------------------------- the real notebook (conftest's demo_run)


@pytest.mark.engine
def test_fail_on_fails_papermill_after_every_artifact(demo_run):
    err, out = demo_run["error"], demo_run["out"]
    assert err.ename == "VerdictFailed"
    assert "PARTIAL (RUN_B_SKIPPED)" in err.evalue and "fail_on=partial" in err.evalue
    data = json.loads((out / "report.json").read_text())
    assert data["status"] == "PARTIAL"
    assert report.embedded_json((out / "report.html").read_text()) == data
    for rel in list(data["artifacts"]["logs"].values()) + list(
        data["artifacts"]["results"].values()
    ):
        assert (out / rel).is_file()
    nb = json.loads(demo_run["notebook"].read_text())
    errors = [
        o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert len(errors) == 1 and errors[0]["traceback"] == [f"VerdictFailed: {err.evalue}"]
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]  # the error is the last cell's
    assert (
        "check_fail_on" in "".join(last["source"]) and last["outputs"][-1]["output_type"] == "error"
    )


@pytest.mark.engine
def test_executed_notebook_reads_well(demo_run):
    """Each step's cell shows a line or a small table, never a wall of logs."""
    nb = json.loads(demo_run["notebook"].read_text())
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            assert text.count("\n") <= 20, cell["source"]
            assert "INFO" not in text and "Traceback" not in text


@pytest.mark.engine
def test_render_of_the_demo_is_byte_for_byte(demo_run, tmp_path):
    out = demo_run["out"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    done = _cli("render", str(copy), "--junit", str(tmp_path / "junit.xml"))
    assert done.returncode == 0, done.stderr
    assert (copy / "report.html").read_bytes() == (out / "report.html").read_bytes()
    xml = JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    assert sum(s.tests for s in xml) == 5 and sum(s.skipped for s in xml) == 2


def _chromium():
    """Playwright and Debian's Chromium; skipped when missing, except under CI."""
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = (
        "playwright is not installed"
        if sync_playwright is None
        else (
            None
            if Path(exe).is_file()
            else f"Chromium is missing at {exe} (apt-get install chromium)"
        )
    )
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run under CI: {missing}")
        pytest.skip(missing)
    return sync_playwright, exe


@pytest.mark.engine
@pytest.mark.browser
def test_report_in_a_real_browser(demo_run, tmp_path):
    sync_playwright, exe = _chromium()
    html_path = demo_run["out"] / "report.html"
    data = json.loads((demo_run["out"] / "report.json").read_text())
    profile = tmp_path / "profile"
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda req: requests.append(req.url))
            page.goto(html_path.as_uri())
            banner = page.inner_text("#verdict")
            assert "PARTIAL — RUN_B_SKIPPED" in banner
            assert "recommended_stack: base" in banner and "no multi-chip packages" in banner
            rows = page.eval_on_selector_all(
                "table.phases tbody tr",
                "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
            )
            assert [r[:3] for r in rows] == [
                ["Run A (base)", "offline", "PASS"],
                ["Run A (base)", "serve", "PASS"],
                ["Run B (multi-chip)", "offline", "SKIPPED"],
                ["Run B (multi-chip)", "serve", "SKIPPED"],
            ]
            assert float(rows[0][3]) > 0
            # the timeline is drawn: an inline SVG with a bar per phase that ran
            box = page.locator(".timeline svg").bounding_box()
            assert box and box["width"] > 400 and box["height"] > 100
            assert "Run A (base) · offline" in page.inner_text(".timeline")
            assert page.locator("table.activity tbody tr").count() >= 4
            env = page.inner_text("#environment ~ table.kv")
            assert "vllm-cpu==" in env and data["tool"]["git_revision"] in env
            assert " && papermill notebooks/verify.ipynb " in page.inner_text("#papermill-command")
            assert page.inner_text("#run-command") == data["reproduce"]["run"]
            # log tails are collapsed, and open for print
            details = page.locator("details.failed, details:has(> pre)")
            assert details.count() == 2 and not details.first.evaluate("d => d.open")
            assert not page.locator("details pre").first.is_visible()
            page.emulate_media(media="print")
            assert page.locator("details pre").first.is_visible()
            page.emulate_media(media="screen")
            # the embedded JSON parses in the page and is report.json
            embedded = page.evaluate(
                "JSON.parse(document.getElementById('modelverify-report').textContent)"
            )
            assert embedded == data
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            assert all(u.startswith("file://") for u in requests), (
                requests
            )  # standalone: no network
        finally:
            browser.close()


@pytest.mark.process
def test_tables_escape_markup_from_logs_and_outputs(tmp_path):
    html = report.render_html(failing_report(tmp_path))
    rows = html[html.index('<table id="T_phases"') :]
    assert "kernel &lt;addmm&gt; failed \\x15" in rows[: rows.index("</table>")]
    assert "<addmm>" not in html and "\x15" not in html.split('id="modelverify-report"')[0]


@pytest.mark.process
def test_timeline_marks_a_timeout_and_a_phase_near_its_timeout(tmp_path):
    data = failing_report(tmp_path)
    offline = data["run_b_with_multichip"]["phases"]["offline"]
    offline.update(status="FAIL", timed_out=True, duration_s=300.0, timings={})
    data["run_a_without_multichip"]["phases"]["serve"]["duration_s"] = 350.0  # serve_timeout is 360
    svg = report.timeline_svg(data)
    assert "300.0 s FAIL (timed out)" in svg and "until the timeout" in svg
    assert "350.0 s PASS (97% of its 360 s timeout)" in svg
    assert svg == report.timeline_svg(json.loads(json.dumps(data)))  # deterministic
