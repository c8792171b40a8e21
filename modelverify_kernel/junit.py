"""The verdict as JUnit XML, the format CI systems show natively.

One test suite per run, one test case per phase: a failed phase is a failure whose message is
its diagnosis (component, layer, error) and whose text holds the evidence, hint and log tail;
a skipped or not-run phase is skipped with its reason. A last suite holds the verdict itself,
failed unless the status is PASS, because a run can fail with every phase passing
(OUTPUT_MISMATCH, STACK_INACTIVE, RUN_B_SKIPPED). A fleet summary has one suite per cell
holding the same cases, and errors for folders without a report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .report import RUN_TITLES, diagnosis_message, verdict_reason, visible


def _failure_text(p: Mapping[str, Any]) -> str:
    d = p.get("diagnosis") or {}
    parts = []
    if d.get("evidence"):
        parts.append("evidence:\n" + "\n".join(d["evidence"]))
    if d.get("hint"):
        parts.append(f"hint: {d['hint']}")
    if d.get("rule"):
        parts.append(f"rule: {d['rule']}")
    if p.get("log_tail"):
        parts.append(f"log tail ({p.get('log')}):\n" + "\n".join(p["log_tail"]))
    return "\n\n".join(parts)


def _suite(name: str) -> ET.Element:
    return ET.Element("testsuite", name=name, errors="0")


def _case(suite: ET.Element, classname: str, name: str, seconds: float | None) -> ET.Element:
    return ET.SubElement(
        suite, "testcase", classname=classname, name=name, time=f"{seconds or 0:.3f}"
    )


def _count(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))


def report_suites(report: Mapping[str, Any], name: str | None = None) -> list[ET.Element]:
    """One report's suites: a suite per run (a case per phase), then the verdict's.

    `name` goes into every case name (default: the model): a fleet file names the cell there,
    so no two cells share a test name.
    """
    name = name or report["model"]
    suites = []
    for key, title in RUN_TITLES.items():
        suite = _suite(title)
        run = key.split("_with")[0]
        for phase, p in report[key]["phases"].items():
            case = _case(suite, f"model-verify.{run}", f"{phase} [{name}]", p.get("duration_s"))
            if p["status"] == "FAIL":
                kind = (p.get("diagnosis") or {}).get("component") or "unknown"
                ET.SubElement(
                    case, "failure", message=diagnosis_message(p), type=kind
                ).text = _failure_text(p)
            elif p["status"] in ("SKIPPED", "NOT_RUN"):
                ET.SubElement(
                    case, "skipped", message=f"{p['status']}: {p.get('reason') or 'not run'}"
                )
        suites.append(suite)
    suite = _suite("verdict")
    da = report["diff_analysis"]
    case = _case(suite, "model-verify.verdict", f"verdict [{name}]", None)
    if report["status"] != "PASS":
        ET.SubElement(
            case,
            "failure",
            message=f"{report['status']} {da['conclusion']}: {verdict_reason(report)}",
            type=da["conclusion"],
        ).text = f"recommended_stack={da['recommended_stack']}\n{da['detail']}"
    ET.SubElement(case, "system-out").text = (
        f"status={report['status']} conclusion={da['conclusion']} "
        f"recommended_stack={da['recommended_stack']}"
    )
    suites.append(suite)
    return suites


def cell_suite(report: Mapping[str, Any], name: str) -> ET.Element:
    """One fleet cell as one suite named `name`: its phases' cases, then its verdict's."""
    suite = _suite(name)
    for part in report_suites(report, name):
        suite.extend(part.findall("testcase"))
    return suite


def error_suite(name: str, errors: Iterable[tuple[str, str]]) -> ET.Element:
    """A suite of cases that could not be judged at all (name, one sentence why): JUnit errors."""
    suite = _suite(name)
    for case_name, message in errors:
        ET.SubElement(
            _case(suite, "model-verify.summary", case_name, None),
            "error",
            message=message,
            type="no_report",
        )
    return suite


def document(name: str, suites: Iterable[ET.Element]) -> str:
    """The JUnit XML text of `suites` (counts set, control characters made visible)."""
    root = ET.Element("testsuites", name=name)
    for suite in suites:
        _count(suite)
        root.append(suite)
    for el in root.iter():  # XML 1.0 allows no control characters; model output and logs have some
        el.text = visible(el.text) if el.text else el.text
        for k, v in el.attrib.items():
            el.set(k, visible(v))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def junit_xml(report: Mapping[str, Any]) -> str:
    """The JUnit document for one report (from report.json alone)."""
    return document(f"model-verify {report['model']}", report_suites(report))


def write_junit(report: Mapping[str, Any], path: Path) -> Path:
    """Write the JUnit file (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(report), encoding="utf-8")
    return path
