"""The report's tables and timeline, drawn from the report dict (or, while the notebook runs,
from the phase records): what the notebook displays and the page renders.

Nothing here judges; every figure comes from the report.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from .analysis import gate
from .records import PhaseResult, headline
from .vocabulary import PHASE_TIMEOUT_PARAM

RUN_TITLES = {
    "run_a_without_multichip": "Run A (base)",
    "run_b_with_multichip": "Run B (multi-chip)",
}


def _phases(report: Mapping[str, Any]) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    """(run title, phase, phase dict) in the order the phases ran."""
    for key, title in RUN_TITLES.items():
        for phase, p in report[key]["phases"].items():
            yield title, phase, p


def _row(run: str, phase: str, p: Mapping[str, Any]) -> dict[str, Any]:
    diag = p.get("diagnosis") or {}
    return {
        "run": run,
        "phase": phase,
        "status": p["status"],
        "duration_s": p["duration_s"],
        "component": diag.get("component"),
        "error": headline(p["error"]) or p.get("reason") or p.get("timeout_note"),
    }


def phase_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """The A-vs-B table: one row per run × phase."""
    return pd.DataFrame([_row(title, phase, p) for title, phase, p in _phases(report)])


def run_table(phases: Mapping[str, PhaseResult]) -> pd.DataFrame:
    """One run's phases while the notebook is still running."""
    return pd.DataFrame([_row(p.run, phase, p.to_dict()) for phase, p in phases.items()])


def attempts_table(attempts: Iterable[Mapping[str, Any] | PhaseResult]) -> pd.DataFrame:
    """Every attempt of every phase, re-runs made while debugging included (the latest is judged)."""
    rows = []
    for a in attempts:
        a = (
            a
            if isinstance(a, Mapping)
            else {**a.to_dict(), "component": (a.diagnosis or {}).get("component")}
        )
        changed = "; ".join(f"{k}={json.dumps(v)}" for k, v in (a.get("overrides") or {}).items())
        rows.append(
            {
                "run": a["run"],
                "phase": a["phase"],
                "attempt": a["attempt"],
                "status": a["status"],
                "duration_s": a.get("duration_s"),
                "changed": changed or "(as the run)",
                "component": a.get("component") or "",
                "log": a.get("log") or "",
            }
        )
    return pd.DataFrame(
        rows,
        columns=["run", "phase", "attempt", "status", "duration_s", "changed", "component", "log"],
    )


def _assignment(name: str, value: str, shown: int = 6) -> str:
    """NAME=value, a long kernel list cut to its count (the run's record keeps it whole)."""
    items = value.split(",")
    return f"{name}={value}" if len(items) <= shown else f"{name}=<{len(items)} kernels>"


def ablation_table(ablation: Mapping[str, Any]) -> pd.DataFrame:
    """Every run of the component ablation: what was off, how it ended, how long it took."""
    rows = [
        {
            "run": r["number"],
            "switched off": r["component"],
            "how": ", ".join(
                [
                    *(_assignment(k, v) for k, v in (r.get("env") or {}).items()),
                    *(f"unset {k}" for k in r.get("unset") or []),
                ]
            ),
            "phase": r["phase"],
            "outcome": r["outcome"],
            "duration_s": r.get("duration_s"),
            "why": r.get("why") or "",
            "log": r.get("log") or "",
        }
        for r in ablation.get("runs") or []
    ]
    columns = ["run", "switched off", "how", "phase", "outcome", "duration_s", "why", "log"]
    return pd.DataFrame(rows, columns=columns)


def bisection_table(bisection: Mapping[str, Any]) -> pd.DataFrame:
    """Every step of the culprit-op search, then the confirming runs."""
    rows = [
        {
            "step": s["number"],
            "kind": kind,
            "phase": s["phase"],
            "switched off": ", ".join(s["disabled"]) or "(none)",
            "outcome": s["outcome"],
            "duration_s": s.get("duration_s"),
            "why": s.get("why") or "",
            "log": s.get("log") or "",
        }
        for kind, key in (("search", "steps"), ("confirm", "confirm"))
        for s in bisection.get(key) or []
    ]
    return pd.DataFrame(
        rows,
        columns=["step", "kind", "phase", "switched off", "outcome", "duration_s", "why", "log"],
    )


COMPARISON_COLUMNS = [
    "phase",
    "index",
    "prompt",
    "exact_match",
    "first_divergence",
    "max_logprob_diff_prefix",
    "judgement",
    "detail",
]


def comparison_table(comparisons: list[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per compared prompt, then each run's garbage findings and notes.

    Run B garbage that Run A shows too is marked "(also in Run A)": only the rest counts
    against the stack.
    """
    cols = COMPARISON_COLUMNS
    rows: list[dict[str, Any]] = []
    for c in comparisons:
        rows += [{"phase": c["phase"], **{k: p.get(k) for k in cols[1:]}} for p in c["prompts"]]
        new = {(g["check"], g["index"]) for g in c["new_garbage"]}
        for run in ("a", "b"):
            for g in c.get(f"garbage_{run}", []):
                shared = run == "b" and (g["check"], g["index"]) not in new
                rows.append(
                    {
                        "phase": c["phase"],
                        "index": g["index"],
                        "detail": g["detail"],
                        "judgement": f"garbage in Run {run.upper()}: {g['check']}"
                        + (" (also in Run A)" if shared else ""),
                    }
                )
        if c.get("note"):
            rows.append({"phase": c["phase"], "judgement": "note", "detail": c["note"]})
    return pd.DataFrame(rows, columns=cols)


def activity_table(activity: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """Per run × component: active / inactive / unknown / not_exercised, how strong, the evidence."""
    return pd.DataFrame(
        [
            {
                "run": run,
                "component": name,
                "status": a["status"],
                "strength": a.get("strength", "none")
                + ("" if a.get("counts_for_gate", True) else " (never counts)"),
                "evidence": "; ".join(a["evidence"]),
            }
            for run, comps in activity.items()
            for name, a in comps.items()
        ],
        columns=["run", "component", "status", "strength", "evidence"],
    )


def flags_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """Each run's stack variables: what we set or removed, and what its engine processes saw."""
    rows = []
    for key, title in RUN_TITLES.items():
        run = report[key]
        env = run.get("env") or {"set": {}, "unset": []}
        seen = run.get("engine_env") or {}
        names = [*env["set"], *env["unset"]] + [
            n for n in seen if n not in env["set"] and n not in env["unset"]
        ]
        for name in dict.fromkeys(names):
            asked = (
                "unset"
                if name in env["unset"]
                else gate.env_text(env["set"][name])
                if name in env["set"]
                else "(inherited)"
            )
            ran = run.get("status") not in ("SKIPPED", "NOT_RUN")
            rows.append(
                {
                    "run": title,
                    "variable": name,
                    "asked": asked,
                    "engine saw": gate.env_text(seen[name])
                    if name in seen
                    else "(not recorded)"
                    if ran
                    else "(run not started)",
                }
            )
    return pd.DataFrame(rows, columns=["run", "variable", "asked", "engine saw"])


_SEGMENTS = {  # timings keys drawn inside a phase's bar, in the order they happen
    "import_s": ("import", "#8c959f"),
    "load_s": ("load / start-up", "#54aeff"),
    "startup_s": ("load / start-up", "#54aeff"),
    "generate_s": ("generate / requests", "#4ac26b"),
    "requests_s": ("generate / requests", "#4ac26b"),
}
_OTHER, _TIMED_OUT = ("other (teardown, waits)", "#d0d7de"), ("until the timeout", "#ffebe9")


def _phase_bar(ax: Any, y: int, clock: float, p: Mapping[str, Any], used: set) -> None:
    """One phase's bar from `clock`: its timings, then the rest (hatched red when it timed out)."""
    dur = p["duration_s"]
    x = clock
    for key, (label, color) in _SEGMENTS.items():
        seg = min(float(p.get("timings", {}).get(key) or 0), clock + dur - x)
        if seg > 0:
            ax.barh(y, seg, left=x, height=0.6, color=color, edgecolor="white", linewidth=0.5)
            used.add((label, color))
            x += seg
    if clock + dur - x > 0:
        rest = _TIMED_OUT if p.get("timed_out") else _OTHER
        ax.barh(
            y,
            clock + dur - x,
            left=x,
            height=0.6,
            color=rest[1],
            hatch="//" if p.get("timed_out") else None,
            edgecolor="#cf222e" if p.get("timed_out") else "white",
            linewidth=0.5,
        )
        used.add(rest)
    if p["status"] == "FAIL":
        ax.barh(y, dur, left=clock, height=0.6, fill=False, edgecolor="#cf222e", linewidth=1.5)


def _phase_note(p: Mapping[str, Any], limit: float | None) -> str:
    """The words beside a phase's bar: how long, how it ended, how close to its timeout."""
    dur = p["duration_s"]
    note = f"  {dur:.1f} s {p['status']}"
    if p.get("timed_out"):
        note += " (timed out)"
    elif limit and dur > 0.8 * limit:
        note += f" ({dur / limit:.0%} of its {limit} s timeout)"
    if p.get("timeout_note"):
        note += ", ran on past it: still making progress"
    return note


def _axes_and_legend(ax: Any, rows: list, clock: float, used: set) -> None:
    from matplotlib.patches import Patch

    ax.set_yticks(range(len(rows)), [f"{title} · {phase}" for title, phase, _ in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(clock, 1.0) * 1.22)
    ax.set_xlabel(
        "seconds since the first phase started (phases run one after another)", fontsize=9
    )
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color="#eaeef2", linewidth=0.6)
    ax.set_axisbelow(True)
    order = list(dict.fromkeys(label for label, _ in _SEGMENTS.values())) + [
        _OTHER[0],
        _TIMED_OUT[0],
    ]
    handles = [
        Patch(color=c, label=label) for label, c in sorted(used, key=lambda u: order.index(u[0]))
    ]
    if handles:
        ax.legend(
            handles=handles,
            loc="lower right",
            fontsize=8,
            frameon=False,
            ncol=len(handles),
            bbox_to_anchor=(1.0, 1.0),
        )


def timeline_svg(report: Mapping[str, Any], *, inline: bool = True) -> str:
    """The phases on one time axis (they run one after the other), split by their timings.

    A slow load or a hang shows as a long bar; a timed-out phase is hatched red. The SVG is
    deterministic (fixed hash salt, no date) so `render` reproduces the page byte for byte.
    """
    import matplotlib
    from matplotlib.figure import Figure

    rows = list(_phases(report))
    params = report.get("parameters", {})
    fig = Figure(figsize=(9.5, 0.55 * len(rows) + 1.1))
    ax = fig.add_subplot()
    clock, used = 0.0, set()
    for y, (_title, phase, p) in enumerate(rows):
        dur = p.get("duration_s")
        if dur is None:  # x in axes coordinates: clear of the axis whatever the scale
            ax.text(
                0.01,
                y,
                p["status"].lower().replace("_", " "),
                va="center",
                fontsize=9,
                color="#57606a",
                transform=ax.get_yaxis_transform(),
            )
            continue
        _phase_bar(ax, y, clock, p, used)
        note = _phase_note(p, params.get(PHASE_TIMEOUT_PARAM[phase]))
        color = "#cf222e" if p["status"] == "FAIL" else "#1d2329"
        ax.text(clock + dur, y, note, va="center", fontsize=9, color=color)
        clock += dur
    _axes_and_legend(ax, rows, clock, used)
    fig.tight_layout()
    buf = io.StringIO()
    with matplotlib.rc_context(
        {"svg.hashsalt": "modelverify", "svg.fonttype": "none", "font.family": "sans-serif"}
    ):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    if not inline:  # a standalone SVG document (the notebook displays this one)
        return svg
    # Inside HTML the SVG needs no namespaces and no RDF metadata: the page names no URL.
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg[svg.index("<svg") :], count=1, flags=re.S)
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg, count=2)
