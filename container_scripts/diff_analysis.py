#!/usr/bin/env python3
"""Seed-compatible front: `diff_analysis.py --run-a A.json --run-b B.json`.

Prints the seed's diff_analysis fields (conclusion, detail, multichip_component,
recommended_stack) for two phase result files. It runs on the host, where model-verify keeps
the results (the seed ran it in the container); the rules are those of
`python -m modelverify_kernel diff`, which this only calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
if (
    CHECKOUT / "modelverify_kernel"
).is_dir():  # a checkout; an installed package is importable as is
    sys.path.insert(0, str(CHECKOUT))

from modelverify_kernel.__main__ import main as kernel_main  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-a", required=True, help="Run A phase result JSON")
    parser.add_argument("--run-b", required=True, help="Run B phase result JSON")
    args = parser.parse_args()
    sys.exit(kernel_main(["diff", args.run_a, args.run_b]))
