"""Command line: `model-verify COMMAND ...`, the same as `python -m modelverify_kernel COMMAND ...`.

Exit codes: 0 done; 1 the verdict or the notebook said no (`diff` not PASS, `run` stopped by a
refused parameter or fail_on, `summarize --fail-on`); 2 bad input, one sentence on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError
from .notebook_runner import notebook_help, run_notebook
from .options import OPTION


def diff(path_a: str, path_b: str) -> int:
    """Print the seed's diff_analysis fields for two phase results; exit 0 when the verdict is PASS.

    The same rules as the notebook (pair_verdict, also behind container_scripts/diff_analysis.py).
    """
    from .pair_verdict import print_verdict

    return print_verdict(path_a, path_b)


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
            raise UserError(
                f"Cannot write the JUnit file {junit}: {exc.strerror}; give a writable path."
            ) from None
    return 0


def rebuild(out_dir: str) -> int:
    """report.json and report.html from the phases on disk; unfinished phases are NOT_RUN."""
    from .pipeline import rebuild as judge_again
    from .vocabulary import HTML_NAME, JSON_NAME

    data = judge_again(Path(out_dir))
    verdict = data["diff_analysis"]
    print(
        f"wrote {Path(out_dir) / JSON_NAME}\nwrote {Path(out_dir) / HTML_NAME}\n"
        f"{data['status']} — {verdict['conclusion']}"
    )
    return 0


def _papermill_value(value: str) -> object:
    """papermill's `-p` reading of a value: True/False/None, an int, a float, else the string."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class _Param(argparse.Action):
    """-p/-r/-y in the order given (a later one wins), as papermill reads them."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        import yaml

        found = dict(getattr(namespace, self.dest) or {})
        if option_string in ("-y", "--parameters_yaml"):
            try:
                data = yaml.safe_load(values)
            except yaml.YAMLError as exc:
                parser.error(
                    f"-y {values!r} is not YAML ({' '.join(str(exc).split())}); give e.g. -y 'env: {{A: \"1\"}}'"
                )
            if not isinstance(data, dict):
                parser.error(
                    f"-y {values!r} is not a YAML mapping; give NAME: VALUE, e.g. -y 'extra_vllm_args: [--enforce-eager]'"
                )
            found.update(data)
        else:
            name, value = values
            found[name] = (
                value if option_string in ("-r", "--parameters_raw") else _papermill_value(value)
            )
        setattr(namespace, self.dest, found)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="verify a model: execute the master notebook through papermill (-p/-r/-y as papermill)",
    )
    p.add_argument(
        "-p",
        "--parameters",
        dest="params",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_Param,
        help="a parameter, its value read as papermill does (True/False/None, int, float, str)",
    )
    p.add_argument(
        "-r",
        "--parameters_raw",
        dest="params",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_Param,
        help="a parameter whose value stays a string",
    )
    p.add_argument(
        "-y",
        "--parameters_yaml",
        dest="params",
        metavar="YAML",
        action=_Param,
        help="parameters as YAML, e.g. -y 'env: {VLLM_CPU_KVCACHE_SPACE: \"1\"}'",
    )
    p.add_argument(
        "--output-notebook",
        metavar="PATH",
        help="where the executed notebook goes (default OUTPUT_DIR/verify.ipynb)",
    )
    p.add_argument(
        "--cwd",
        help="working folder of the notebook (relative output_dir is under it; default: here)",
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="write the parameterized notebook without executing it",
    )
    p.add_argument(
        "--help-notebook",
        action="store_true",
        help="list the notebook's parameters (type, default, meaning) and exit",
    )


def _add_reading(sub: argparse._SubParsersAction) -> None:
    """The commands that read what runs left: classify, diff, render, report, summarize."""
    p = sub.add_parser("classify", help="diagnose phase logs: component, layer, evidence")
    p.add_argument("paths", nargs="+", help="log files")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument(
        "--explain",
        action="store_true",
        help="how each file was judged: readers, frames and their owners, rules, suspects",
    )
    p = sub.add_parser("diff", help="compare two phase result files (Run A, Run B): the verdict")
    p.add_argument("run_a", help="Run A's phase result JSON (e.g. results/run_a_offline.json)")
    p.add_argument("run_b", help="Run B's phase result JSON of the same phase")
    p = sub.add_parser(
        "render",
        help="re-render report.html from OUTPUT_DIR/report.json (same bytes); --junit for CI",
    )
    p.add_argument("output_dir", help="the output_dir of a run (holds report.json)")
    p.add_argument(
        "--junit",
        metavar="FILE",
        help="also write JUnit XML: a test case per run × phase, plus the verdict",
    )
    p = sub.add_parser(
        "report", help="rebuild report.json and report.html from what a run left in OUTPUT_DIR"
    )
    p.add_argument("output_dir", help="the output_dir of a run that was interrupted (or not)")
    p = sub.add_parser(
        "summarize",
        help="merge output folders (a batch, CI jobs) into index.html, summary.json, junit.xml",
    )
    p.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help="output_dir of each run (any order; cells come from the reports)",
    )
    p.add_argument(
        "--out",
        default="summary",
        metavar="DIR",
        help="where the summary goes (default: ./summary)",
    )
    p.add_argument(
        "--fail-on",
        choices=OPTION["fail_on"].kind.choices,  # the notebook parameter's words
        default="never",
        help="exit 1 when a cell is FAIL (fail) or FAIL/PARTIAL (partial), or a folder has no report; as fail_on",
    )


def _add_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="verify models x targets from a YAML/JSON matrix: a papermill run per cell, resumable",
    )
    p.add_argument(
        "matrix",
        help="YAML or JSON: models, targets (container + docker_host, or local: true), parameters",
    )
    p.add_argument(
        "--out",
        default="outputs/batch",
        help="folder of the cell folders, batch.json and the summary (default outputs/batch)",
    )
    p.add_argument(
        "--per-host",
        type=int,
        default=1,
        metavar="N",
        help="cells at once per machine (default 1: no two share devices)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the matrix, list the cells and what a run would do, run nothing",
    )


def parser(prog: str) -> argparse.ArgumentParser:
    """Every command and its options."""
    top = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("demo-model", help="build the tiny demo model into a folder")
    p.add_argument("dest", help="folder to write the model to")
    _add_reading(sub)
    _add_batch(sub)
    return top


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run" and args.help_notebook:
        return notebook_help()
    if args.command == "run":
        return run_notebook(args.params or {}, args.output_notebook, args.cwd, args.prepare_only)
    if args.command == "demo-model":
        from .demo import main as demo_main

        return demo_main([args.dest])
    if args.command == "classify":
        from .analysis.cli import cli_classify

        return cli_classify(args.paths, args.json, args.explain)
    if args.command == "diff":
        return diff(args.run_a, args.run_b)
    if args.command == "render":
        return render(args.output_dir, args.junit)
    if args.command == "report":
        return rebuild(args.output_dir)
    if args.command == "summarize":
        from .summary import cli as summarize_cli

        return summarize_cli(args.dirs, args.out, args.fail_on)
    if args.command == "batch":
        from .batch import main as batch_main

        return batch_main(args.matrix, args.out, args.per_host, args.dry_run)
    return 2


def main(argv: list[str] | None = None, prog: str = "python -m modelverify_kernel") -> int:
    """Run one command; a user error is one sentence on stderr and exit 2."""
    args = parser(prog).parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `model-verify` console script: the same commands under the installed name."""
    sys.exit(main(prog="model-verify"))


if __name__ == "__main__":
    sys.exit(main())
