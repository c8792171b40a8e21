"""Command line: `python -m modelverify_kernel COMMAND ...` (see --help)."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelverify_kernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo-model", help="build the tiny demo model into a folder")
    p.add_argument("dest", help="folder to write the model to")
    p = sub.add_parser("classify", help="diagnose phase logs: component, layer, evidence")
    p.add_argument("paths", nargs="+", help="log files")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo-model":
            from .demo import main as demo_main

            return demo_main([args.dest])
        if args.command == "classify":
            from .classify import cli_classify

            return cli_classify(args.paths, args.json)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
