"""Measure what the output comparison sees on this machine, to check its default tolerances.

Runs the real offline phase on the demo model four ways — float32 twice (run-to-run noise),
bfloat16 (a precision change, the kind of difference another kernel library makes), and float32
with the test stand-in plugin perturbing `aten::embedding` (a wrong kernel) — and prints, for
each against the first float32 run: exact matches, first divergences, the largest logprob
difference on common prefixes, the judgements, and how flat the model's distributions are.

    .venv/bin/python benchmarks/compare_calibration.py [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelverify_kernel.compare import Tolerances, compare_phase  # noqa: E402
from modelverify_kernel.demo import build_demo_model  # noqa: E402

SCRIPT = REPO / "container_scripts" / "run_offline_inference.py"
FAKE_SITE = REPO / "tests" / "fake_stack" / "site"


def offline(model: Path, out: Path, dtype: str, env: dict[str, str]) -> list[dict]:
    args = ["--enforce-eager", "--dtype", dtype]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--output", str(out),
                           "--max-model-len", "512", "--extra-args", json.dumps(args)],
                          env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **env},
                          capture_output=True, text=True)
    result = json.loads(out.read_text())
    if result["status"] != "PASS":
        sys.exit(f"offline run failed ({dtype}, {env}): {result['error']}\n{proc.stdout[-2000:]}")
    return result["outputs"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: build the demo model)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = args.model or build_demo_model(tmp_path / "demo-model")
        base = offline(model, tmp_path / "a.json", "float32", {})
        variants = {
            "float32 again": offline(model, tmp_path / "b.json", "float32", {}),
            "bfloat16": offline(model, tmp_path / "c.json", "bfloat16", {}),
            "perturbed embedding": offline(model, tmp_path / "d.json", "float32", {
                "PYTHONPATH": str(FAKE_SITE), "VLLM_PLUGINS": "fl", "USE_FLAGGEMS": "1",
                "FAKE_FL_MODE": "perturb"}),
        }
    gaps = [pos["top"][0][1] - pos["top"][1][1] for o in base for pos in o["logprobs"]]
    print(f"flatness of the model: top-1/top-2 gap median {statistics.median(gaps):.4f}, "
          f"min {min(gaps):.4f}, max {max(gaps):.4f} nats over {len(gaps)} positions")
    tol = Tolerances()
    print(f"tolerances: tie {tol.tie}, logprob {tol.logprob}")
    for name, outputs in variants.items():
        pc = compare_phase("offline", base, outputs, tol)
        diffs = [c.max_logprob_diff_prefix for c in pc.prompts if c.max_logprob_diff_prefix is not None]
        print(f"\n{name}: {sum(c.exact_match for c in pc.prompts)}/{len(pc.prompts)} exact; "
              f"largest prefix logprob difference {max(diffs, default=0):.5f}")
        for c in pc.prompts:
            print(f"  prompt {c.index}: first divergence {c.first_divergence}, {c.judgement}"
                  + (f" — {c.detail}" if c.detail else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
