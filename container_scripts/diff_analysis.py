#!/usr/bin/env python3
"""Seed-compatible front: `diff_analysis.py --run-a A.json --run-b B.json`.

Prints the seed's diff_analysis fields (conclusion, detail, multichip_component,
recommended_stack) for two phase result files; exit 0 when the verdict is PASS, 1 when not,
2 on bad input (one sentence on stderr). It runs on the host, where model-verify keeps the
results (the seed ran it in the container; the targets never get a copy), and only calls the
package's judgement of two result files (`modelverify_kernel.pair_verdict`), the same as
`model-verify diff`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
if (CHECKOUT / "modelverify_kernel").is_dir():  # a checkout; an installed package is importable
    sys.path.insert(0, str(CHECKOUT))

from modelverify_kernel.errors import UserError  # noqa: E402
from modelverify_kernel.pair_verdict import print_verdict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-a", required=True, help="Run A phase result JSON")
    parser.add_argument("--run-b", required=True, help="Run B phase result JSON")
    args = parser.parse_args(argv)
    try:
        return print_verdict(args.run_a, args.run_b)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
