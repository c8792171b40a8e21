"""`model-verify summarize`: many output folders → one index.html, summary.json and junit.xml.

The engine tests start from the real notebook's demo run (tests/conftest.py `demo_run`), copy its
folder and rewrite the copies' report.json (model, target label, verdict) into a 2 × 2 matrix
with one pair not run, plus a broken folder: the copies are data, the summary is the code under
test. The unit tests build report dicts by hand with only the fields the summary reads.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import jsonschema
import pytest
from conftest import REPO
from junitparser import Error, Failure, JUnitXml, Skipped

from modelverify_kernel import report, summary
from modelverify_kernel.errors import ParameterError
from modelverify_kernel.params import validate

# --------------------------------------------------------------------------- unit: report dicts


def _phase(status: str, **extra) -> dict:
    return {"status": status, "duration_s": 2.0, "error": None, **extra}


def minimal_report(
    model: str, label: str | None, status: str = "PASS", conclusion: str = "BOTH_PASS", **parameters
) -> dict:
    """The fields the summary reads from a report.json (report.json has many more)."""
    stack = {"PASS": "full", "PARTIAL": "base", "FAIL": "none"}[status]
    target = {"kind": "docker" if parameters.get("container") else "local"}
    if label:
        target["label"] = label
    return {
        "schema_version": report.SCHEMA_VERSION if label else "1.2",
        "status": status,
        "model": model,
        "run_a_without_multichip": {"phases": {"offline": _phase("PASS"), "serve": _phase("PASS")}},
        "run_b_with_multichip": {"phases": {"offline": _phase("PASS"), "serve": _phase("PASS")}},
        "diff_analysis": {
            "conclusion": conclusion,
            "detail": f"{conclusion} detail.",
            "multichip_component": None,
            "recommended_stack": stack,
            "culprit_ops": [],
        },
        "parameters": {"model_path": model, **parameters},
        "environment": {"target": target},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:01:30+00:00",
    }


def _fails_in_flaggems(r: dict) -> dict:
    r["status"] = "PARTIAL"
    r["diff_analysis"].update(
        conclusion="MULTICHIP_ERROR",
        multichip_component="FlagGems",
        recommended_stack="base",
        culprit_ops=["addmm"],
    )
    r["run_b_with_multichip"]["phases"]["serve"] = _phase(
        "FAIL",
        error="RuntimeError: kernel <addmm> failed",
        diagnosis={
            "component": "FlagGems",
            "layer": 5,
            "culprit_op": "addmm",
            "evidence": ["E addmm"],
            "hint": "h",
        },
    )
    return r


def _write(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_target_label_is_the_parameter_else_the_container_else_the_local_host():
    assert report.target_label({"target_label": "h100-a", "container": "c"}, {}) == "h100-a"
    assert (
        report.target_label({"container": "vllm", "docker_host": "ssh://me@gpu1"}, {})
        == "vllm@ssh://me@gpu1"
    )
    assert (
        report.target_label({"container": None}, {"kind": "docker", "container_name": "vllm"})
        == "vllm"
    )
    assert report.target_label({}, {"kind": "local"}, "node7") == "local:node7"
    assert (
        report.target_label({}, {"kind": "local"}) == "local"
    )  # a report that never recorded its host


def test_target_label_is_a_validated_parameter():
    assert validate({"model_path": "m", "target_label": "gpu-box"}).target_label == "gpu-box"
    assert validate({"model_path": "m"}).target_label is None
    with pytest.raises(ParameterError, match="Parameter target_label must be a single line"):
        validate({"model_path": "m", "target_label": "a\nb"})


def test_cells_come_from_the_reports_sorted_with_duplicates_kept_and_missing_pairs_listed(tmp_path):
    out = tmp_path / "summary"
    reads = [
        (str(tmp_path / "z"), minimal_report("org/b", "gpu")),
        (str(tmp_path / "y"), _fails_in_flaggems(minimal_report("org/a", "gpu"))),
        (
            str(tmp_path / "x"),
            minimal_report(
                "org/a",
                None,
                "FAIL",
                "SAME_ERROR",
                container="vllm",
                docker_host="tcp://10.0.0.2:2375",
            ),
        ),
        (str(tmp_path / "w"), minimal_report("org/b", "gpu", "FAIL", "DIFFERENT_ERRORS")),
    ]
    s = summary.build(reads, [(str(tmp_path / "v"), "v/report.json does not exist.")], out)
    summary.validate(s)
    assert [(c["model"], c["target"], Path(c["folder"]).name) for c in s["cells"]] == [
        ("org/a", "gpu", "y"),
        ("org/a", "vllm@tcp://10.0.0.2:2375", "x"),
        ("org/b", "gpu", "w"),
        ("org/b", "gpu", "z"),
    ]
    assert [c["duplicate"] for c in s["cells"]] == [False, False, True, True]
    assert [c["target_derived"] for c in s["cells"]] == [False, True, False, False]
    assert s["not_run"] == [{"model": "org/b", "target": "vllm@tcp://10.0.0.2:2375"}]
    assert s["totals"] == {
        "cells": 4,
        "PASS": 1,
        "PARTIAL": 1,
        "FAIL": 2,
        "no_report": 1,
        "not_run": 1,
    }
    y = s["cells"][0]
    assert (y["conclusion"], y["multichip_component"], y["culprit_ops"]) == (
        "MULTICHIP_ERROR",
        "FlagGems",
        ["addmm"],
    )
    assert y["reason"].startswith(
        "Run B (multi-chip) serve failed in FlagGems (layer 5), op addmm: RuntimeError"
    )
    assert y["link"] == "../y/report.html" and y["duration_s"] == 90.0
    # the pivot: both duplicates in one square, the missing pair empty
    p = summary.pivot(s)
    assert list(p.index) == ["org/a", "org/b"] and list(p.columns) == [
        "gpu",
        "vllm@tcp://10.0.0.2:2375",
    ]
    assert [Path(c["folder"]).name for c in p.at["org/b", "gpu"]] == ["w", "z"]
    assert p.at["org/b", "vllm@tcp://10.0.0.2:2375"] == []
    # any order, the same bytes
    again = summary.build(
        list(reversed(reads)), [(str(tmp_path / "v"), "v/report.json does not exist.")], out
    )
    assert json.dumps(again) == json.dumps(s)


def test_the_schema_refuses_what_the_summary_never_writes(tmp_path):
    s = summary.build([("a", minimal_report("m", "t"))], [], tmp_path)
    summary.validate(s)
    for broken in ({"status": "WEIRD"}, {"link": None}, {"extra": 1}):
        bad = copy.deepcopy(s)
        bad["cells"][0].update(broken)
        with pytest.raises(jsonschema.ValidationError):
            summary.validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        summary.check_report(
            {k: v for k, v in minimal_report("m", "t").items() if k != "diff_analysis"}
        )


def test_fail_on_fails_the_fleet_on_its_verdicts_and_on_folders_without_a_report(tmp_path):
    s = summary.build(
        [
            ("a", minimal_report("m", "t")),
            ("b", minimal_report("n", "t", "PARTIAL", "RUN_B_SKIPPED")),
        ],
        [],
        tmp_path,
    )
    assert summary.failing(s, "never") is None and summary.failing(s, "fail") is None
    assert (
        summary.failing(s, "partial") == "1 cell(s) PARTIAL fail the fleet because fail_on=partial"
    )
    lost = summary.build(
        [("a", minimal_report("m", "t"))], [("c", "c/report.json does not exist.")], tmp_path
    )
    assert summary.failing(lost, "never") is None
    assert (
        summary.failing(lost, "fail")
        == "1 folder(s) without a report fail the fleet because fail_on=fail"
    )


def test_summarize_writes_three_files_and_lists_unreadable_folders_with_why(tmp_path):
    a = _write(tmp_path / "runs" / "a", _fails_in_flaggems(minimal_report("org/a", "gpu")))
    b = _write(
        tmp_path / "runs" / "b", minimal_report("org/a", None)
    )  # written before target_label existed
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "report.json").write_text('{"status": "PA', encoding="utf-8")
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    out = tmp_path / "runs" / "summary"
    s = summary.summarize(
        [a, b, broken, empty, out, a], out
    )  # its own folder and a repeat are read once
    assert [c["target"] for c in s["cells"]] == ["gpu", "local"]
    assert [(Path(n["folder"]).name, n["reason"]) for n in s["no_report"]] == [
        (
            "broken",
            f"{broken}/report.json is not valid JSON (Unterminated string starting at at line 1); rerun the notebook.",
        ),
        (
            "empty",
            f"{empty}/report.json does not exist; give the output_dir of a finished model-verify run.",
        ),
    ]
    assert json.loads((out / "summary.json").read_text()) == s
    html = (out / "index.html").read_text()
    assert (
        report.embedded_json(html.replace('id="modelverify-summary"', 'id="modelverify-report"'))
        == s
    )
    xml = JUnitXml.fromfile(str(out / "junit.xml"))
    assert [suite.name for suite in xml] == ["org/a @ gpu", "org/a @ local", "no report"]
    errors = [r for case in list(xml)[2] for r in case.result if isinstance(r, Error)]
    assert [e.message for e in errors] == [n["reason"] for n in s["no_report"]]


def test_a_summary_of_folders_without_reports_still_says_why(tmp_path):
    (tmp_path / "x").mkdir()
    s = summary.summarize([tmp_path / "x"], tmp_path / "out")
    assert (s["cells"], s["totals"]["no_report"]) == ([], 1)
    assert "No folder held a readable report." in (tmp_path / "out" / "index.html").read_text()
    assert parse_pivot((tmp_path / "out" / "index.html").read_text()).cells == {}
    assert [suite.name for suite in JUnitXml.fromfile(str(tmp_path / "out" / "junit.xml"))] == [
        "no report"
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "index.html",
        "junit.xml",
        "summary.json",
    ]


def test_fleet_junit_names_each_cell_and_fails_what_failed(tmp_path):
    reads = [
        ("x", _fails_in_flaggems(minimal_report("org/a", "gpu"))),
        ("y", minimal_report("org/a", "cpu")),
    ]
    s = summary.build(reads, [], tmp_path)
    path = tmp_path / "junit.xml"
    path.write_text(summary.junit_xml(s, dict(reads)), encoding="utf-8")
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(path))}
    assert sorted(suites) == ["org/a @ cpu", "org/a @ gpu"]
    assert (suites["org/a @ cpu"].tests, suites["org/a @ cpu"].failures) == (5, 0)
    gpu = suites["org/a @ gpu"]
    failures = {case.name: r.message for case in gpu for r in case.result if isinstance(r, Failure)}
    assert failures == {
        "serve [org/a @ gpu]": "FlagGems (layer 5), op addmm: RuntimeError: kernel <addmm> failed",
        "verdict [org/a @ gpu]": "PARTIAL MULTICHIP_ERROR: Run B (multi-chip) serve failed in FlagGems (layer 5), "
        "op addmm: RuntimeError: kernel <addmm> failed",
    }


class _Pivot(HTMLParser):
    """The pivot table as {(model, target): [(text, href), ...]} and the other cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.empty: dict[tuple[str, str], str] = {}
        self._td: tuple[str, str] | None = None
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "cell" in (a.get("class") or "").split():
            self._td = (a["data-model"], a["data-target"])
            self.cells[self._td] = []
            self._text = ""
        elif tag == "a" and self._td and "verdict" in (a.get("class") or ""):
            self._href, self._text = a["href"], ""

    def handle_data(self, data):
        self._text += data

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.cells[self._td].append((self._text.strip(), self._href))
            self._href = None
        elif tag == "td" and self._td:
            if not self.cells[self._td]:
                self.empty[self._td] = self.cells.pop(self._td) or self._text.strip()
            self._td = None


def parse_pivot(html: str) -> _Pivot:
    parser = _Pivot()
    parser.feed(html)
    return parser


def test_index_escapes_what_the_reports_say(tmp_path):
    r = minimal_report('<img src=x onerror="alert(1)">', "t&<b>")
    s = summary.build([(str(tmp_path / "a b#c"), r)], [], tmp_path / "summary")
    html = summary.render_html(s)
    assert "<img" not in html.split('id="modelverify-summary"')[0] and "&lt;img" in html
    pivot = parse_pivot(html)
    ((key, [(text, href)]),) = pivot.cells.items()
    assert key == ('<img src=x onerror="alert(1)">', "t&<b>") and text == "PASS — BOTH_PASS"
    assert href == "../a%20b%23c/report.html" and unquote(href) == "../a b#c/report.html"


# --------------------------------------------------------------------------- engine: the real demo run, copied


def _rewrite(folder: Path, **changes) -> None:
    data = json.loads((folder / "report.json").read_text())
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    (folder / "report.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def matrix(demo_run, tmp_path_factory):
    """Folders of a fleet: models {demo, other} × targets {the demo's own label, gpu-b}, the pair
    (other, gpu-b) not run; a broken folder; and one copy written before target_label existed."""
    base = tmp_path_factory.mktemp("fleet")
    demo = json.loads((demo_run["out"] / "report.json").read_text())
    model, label = demo["model"], demo["environment"]["target"]["label"]
    folders = {name: base / "runs" / name for name in ("demo", "gpu-b", "other", "old", "broken")}
    for _name, folder in folders.items():
        shutil.copytree(demo_run["out"], folder)
    _rewrite(
        folders["gpu-b"],
        environment__target__label="gpu-b",
        status="FAIL",
        diff_analysis__conclusion="SAME_ERROR",
        diff_analysis__recommended_stack="none",
    )
    _rewrite(
        folders["other"],
        model="org/other-model",
        status="PASS",
        diff_analysis__conclusion="BOTH_PASS",
        diff_analysis__recommended_stack="full",
    )
    # before target_label: schema 1.2 and no label; its model differs so it is a cell of its own
    _rewrite(
        folders["old"], model="org/old-model", schema_version="1.2", environment__target__label=None
    )
    (folders["broken"] / "report.json").write_text("{", encoding="utf-8")
    for name in ("gpu-b", "other", "old"):  # their pages say what their report.json says
        data = json.loads((folders[name] / "report.json").read_text())
        (folders[name] / "report.html").write_text(report.render_html(data), encoding="utf-8")
    return {"base": base, "folders": folders, "model": model, "label": label}


def _assert_fleet_junit(out: Path, cells: set, model: str, label: str, folders: dict) -> None:
    """JUnit: a suite per cell, the verdict failed unless PASS; Run B's skipped phases skipped."""
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(out / "junit.xml"))}
    assert set(suites) == {f"{m} @ {t}" for m, t in cells} | {"no report"}
    verdicts = {
        name: [r for case in suite if case.name.startswith("verdict") for r in case.result]
        for name, suite in suites.items()
        if name != "no report"
    }
    assert [r.message for r in verdicts[f"{model} @ gpu-b"]] == [
        "FAIL SAME_ERROR: "
        + json.loads((folders["gpu-b"] / "report.json").read_text())["diff_analysis"]["detail"]
    ]
    assert verdicts[f"org/other-model @ {label}"] == []
    assert (
        sum(isinstance(r, Skipped) for case in suites[f"{model} @ {label}"] for r in case.result)
        == 2
    )
    assert suites["no report"].errors == 1


@pytest.mark.engine
def test_summary_of_real_folders(matrix):
    folders, model, label = matrix["folders"], matrix["model"], matrix["label"]
    out = matrix["base"] / "summary"
    s = summary.summarize(list(folders.values()), out)
    summary.validate(s)
    assert label.startswith("local:")  # the demo ran on this machine without a target_label
    cells = {(c["model"], c["target"]): c for c in s["cells"]}
    assert {k: (c["status"], c["conclusion"]) for k, c in cells.items()} == {
        (model, label): ("PARTIAL", "RUN_B_SKIPPED"),
        (model, "gpu-b"): ("FAIL", "SAME_ERROR"),
        ("org/other-model", label): ("PASS", "BOTH_PASS"),
        ("org/old-model", "local"): ("PARTIAL", "RUN_B_SKIPPED"),
    }
    assert (
        cells["org/old-model", "local"]["target_derived"]
        and cells["org/old-model", "local"]["schema_version"] == "1.2"
    )
    assert {(n["model"], n["target"]) for n in s["not_run"]} == {
        ("org/other-model", "gpu-b"),
        ("org/old-model", label),
        ("org/old-model", "gpu-b"),
        (model, "local"),
        ("org/other-model", "local"),
    }
    assert [(Path(n["folder"]).name, n["reason"].split(" (")[0]) for n in s["no_report"]] == [
        ("broken", f"{folders['broken']}/report.json is not valid JSON")
    ]
    # the page: the pivot's squares and their links, each to the folder's own report
    html = (out / "index.html").read_text()
    pivot = parse_pivot(html)
    assert pivot.cells[model, "gpu-b"] == [("FAIL — SAME_ERROR", "../runs/gpu-b/report.html")]
    assert pivot.cells["org/other-model", label] == [
        ("PASS — BOTH_PASS", "../runs/other/report.html")
    ]
    assert pivot.empty["org/other-model", "gpu-b"] == "not run"
    for (m, _t), entries in pivot.cells.items():
        for _, href in entries:
            page = (out / unquote(href)).resolve()
            assert page.is_file() and report.embedded_json(page.read_text())["model"] == m
    # another order gives the same bytes, in a sibling folder (same relative links)
    again = matrix["base"] / "summary-again"
    summary.summarize(list(reversed(folders.values())), again)
    for name in ("summary.json", "index.html", "junit.xml"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    _assert_fleet_junit(out, set(cells), model, label, folders)


@pytest.mark.engine
def test_summarize_command_lines_files_and_fail_on(matrix, tmp_path):
    folders = [str(f) for f in matrix["folders"].values()]
    cmd = [
        sys.executable,
        "-m",
        "modelverify_kernel",
        "summarize",
        *folders,
        "--out",
        str(tmp_path / "s"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 + 1 + 3 and done.stderr == ""
    assert (
        lines[0].split()[:2] == ["FAIL", "SAME_ERROR"] and f"{matrix['model']} @ gpu-b" in lines[0]
    )
    assert lines[4].startswith("NO REPORT") and "broken" in lines[4]
    assert lines[5:] == [
        f"wrote {tmp_path / 's' / n}" for n in ("index.html", "summary.json", "junit.xml")
    ]
    gate = subprocess.run(
        [*cmd, "--fail-on", "fail"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert gate.returncode == 1 and gate.stdout == done.stdout
    assert gate.stderr == (
        f"error: 1 cell(s) FAIL and 1 folder(s) without a report fail the fleet because "
        f"fail_on=fail; see {tmp_path / 's' / 'index.html'}.\n"
    )


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelverify_kernel", "summarize", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.process
@pytest.mark.parametrize(
    "args, message",
    [
        (
            (),
            "error: No output folder given; give the output_dir of one or more runs, e.g. model-verify summarize outputs/*.\n",
        ),
        (
            ("nowhere",),
            "error: nowhere does not exist; give the output_dir of a model-verify run.\n",
        ),
        (
            ("file.txt",),
            "error: file.txt is not a folder; give the output_dir of a model-verify run.\n",
        ),
    ],
)
def test_summarize_refuses_bad_input_with_one_sentence(tmp_path, args, message):
    (tmp_path / "file.txt").write_text("x")
    done = _cli(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
    assert not (tmp_path / "summary").exists()


@pytest.mark.engine
@pytest.mark.browser
def test_index_in_a_real_browser(matrix, tmp_path):
    from test_report_html import CHROMIUM_ARGS, _chromium

    sync_playwright, exe = _chromium()
    out = matrix["base"] / "summary-browser"
    s = summary.summarize(list(matrix["folders"].values()), out)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda req: requests.append(req.url))
            page.goto((out / "index.html").as_uri())
            header = page.eval_on_selector_all(
                "#pivot thead th", "ths => ths.map(t => t.innerText.trim())"
            )
            assert header == ["model \\ target", *s["targets"]]
            rows = page.eval_on_selector_all(
                "#pivot tbody tr",
                "rows => rows.map(r => [...r.cells].map(c => c.innerText.split('\\n')[0].trim()))",
            )
            assert [r[0] for r in rows] == s["models"]
            model = matrix["model"]
            demo_row = rows[s["models"].index(model)]
            assert demo_row[1:] == [
                (
                    "FAIL — SAME_ERROR"
                    if t == "gpu-b"
                    else "PARTIAL — RUN_B_SKIPPED"
                    if t == matrix["label"]
                    else "not run"
                )
                for t in s["targets"]
            ]
            # the FAIL square is red, the PASS square green (the page's colours, computed)
            bg = page.eval_on_selector(
                f'td.cell[data-target="gpu-b"][data-model="{model}"]',
                "td => getComputedStyle(td).backgroundColor",
            )
            assert bg == "rgb(255, 235, 233)"
            embedded = page.evaluate(
                "JSON.parse(document.getElementById('modelverify-summary').textContent)"
            )
            assert embedded == s
            page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
            standalone = all(u.startswith("file://") for u in requests)  # no network
            assert standalone, requests
            # a square's link opens that folder's report
            page.click(f'td.cell[data-target="gpu-b"][data-model="{model}"] a.verdict')
            page.wait_for_selector("#verdict")
            assert page.url == (matrix["folders"]["gpu-b"] / "report.html").as_uri()
            assert "FAIL — SAME_ERROR" in page.inner_text("#verdict")
        finally:
            browser.close()
