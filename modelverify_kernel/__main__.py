"""Command line: `python -m modelverify_kernel COMMAND ...` (see --help)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError


def diff(path_a: str, path_b: str) -> int:
    """Print the seed's diff_analysis fields for two phase results; exit 0 when the verdict is PASS.

    The same rules as the notebook: outputs compared, each run's recorded stack evidence assessed
    and put through the gate.
    """
    from . import compare, stack
    from .runs import from_result_file
    from .verdict import decide

    phases = {}
    for run, path in (("run_a", Path(path_a)), ("run_b", Path(path_b))):
        try:
            phases[run] = from_result_file(run, path)
        except OSError as exc:
            raise UserError(f"Cannot read {path}: {exc.strerror}; give a phase result JSON.") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not JSON ({exc.msg}); give a phase result JSON.") from None
    activity = {}
    for run, pr in phases.items():
        events = pr.result.get("stack_evidence") or []
        activity[run] = stack.assess(events, stack.claims_in_log(pr.log), pr.result.get("tp"),
                                     stack.engine_environment(events).get("FLAGCX_PATH"))
    a, b = phases["run_a"], phases["run_b"]
    comparisons = [compare.compare_phase(a.phase, a.result.get("outputs") or [], b.result.get("outputs") or [])] \
        if a.status == b.status == "PASS" else []
    v = decide({"phase": a}, {"phase": b}, comparisons=comparisons,
               gate=stack.gate(activity["run_a"], activity["run_b"]))
    out = v.to_dict()
    out["errors"] = {run: pr.diagnosis for run, pr in phases.items() if pr.diagnosis}
    print(json.dumps(out, indent=2))
    return 0 if v.status == "PASS" else 1


def render(out_dir: str, junit: str | None) -> int:
    """report.html again from OUTPUT_DIR/report.json alone; with --junit, the JUnit XML too."""
    from .junit import write_junit
    from .report import load_report, rerender

    folder = Path(out_dir)
    data = load_report(folder)
    print(f"wrote {rerender(folder)}")
    if junit:
        try:
            print(f"wrote {write_junit(data, Path(junit))}")
        except OSError as exc:
            raise UserError(f"Cannot write the JUnit file {junit}: {exc.strerror}; give a writable path.") from None
    return 0


def rebuild(out_dir: str) -> int:
    """report.json and report.html from the phases on disk; unfinished phases are NOT_RUN."""
    from .pipeline import Verification

    v = Verification.resume(Path(out_dir))
    v.decide()
    json_path, html_path = v.write_report()
    print(f"wrote {json_path}\nwrote {html_path}\n{v.verdict.status} — {v.verdict.conclusion}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelverify_kernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo-model", help="build the tiny demo model into a folder")
    p.add_argument("dest", help="folder to write the model to")
    p = sub.add_parser("classify", help="diagnose phase logs: component, layer, evidence")
    p.add_argument("paths", nargs="+", help="log files")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p = sub.add_parser("diff", help="compare two phase result files (Run A, Run B): the verdict")
    p.add_argument("run_a", help="Run A's phase result JSON (e.g. results/run_a_offline.json)")
    p.add_argument("run_b", help="Run B's phase result JSON of the same phase")
    p = sub.add_parser("render", help="re-render report.html from OUTPUT_DIR/report.json (same bytes); --junit for CI")
    p.add_argument("output_dir", help="the output_dir of a run (holds report.json)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML: a test case per run × phase, plus the verdict")
    p = sub.add_parser("report", help="rebuild report.json and report.html from what a run left in OUTPUT_DIR")
    p.add_argument("output_dir", help="the output_dir of a run that was interrupted (or not)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo-model":
            from .demo import main as demo_main

            return demo_main([args.dest])
        if args.command == "classify":
            from .classify import cli_classify

            return cli_classify(args.paths, args.json)
        if args.command == "diff":
            return diff(args.run_a, args.run_b)
        if args.command == "render":
            return render(args.output_dir, args.junit)
        if args.command == "report":
            return rebuild(args.output_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
