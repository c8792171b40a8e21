"""Wall time of Run A + Run B one after the other vs side by side (issue 14, point 3).

Runs the real notebook twice on the demo model with the test stand-ins (the `fl` plugin in its
`real` mode enabling the flag_gems stand-in, so Run B runs and passes): `parallel_runs=off`,
then `parallel_runs=auto`, which on vLLM for CPU with 2 × TP cores or more gives each run half
of the cores (VLLM_CPU_OMP_THREADS_BIND). Prints the span of the four phases, the whole
notebook, and the ratio. vLLM keeps its default engine shape here (the product's), not the
tests' one-process engine.

    python benchmarks/parallel_runs.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(model: Path, out: Path, mode: str) -> tuple[float, float, dict]:
    import papermill as pm

    fake = ROOT / "tests" / "fake_stack"
    out.mkdir(parents=True)
    env = {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "PYTHONPATH": os.pathsep.join([str(fake / "site"), str(fake / "flaggems_standin")]),
    }
    start = time.monotonic()
    pm.execute_notebook(
        str(ROOT / "notebooks" / "verify.ipynb"),
        str(out / "verify.ipynb"),
        cwd=str(ROOT),
        kernel_name="python3",
        progress_bar=False,
        parameters=dict(
            model_path=str(model),
            output_dir=str(out),
            env=env,
            run_b="always",
            run_b_env={"FAKE_FL_MODE": "real"},
            parallel_runs=mode,
            bisect=False,
            extra_vllm_args=["--enforce-eager", "--dtype", "float32"],
            max_model_len=512,
        ),
    )
    total = time.monotonic() - start
    data = json.loads((out / "report.json").read_text())
    spans = [(datetime.fromisoformat(a["started_at"]), a["duration_s"]) for a in data["attempts"]]
    first = min(s for s, _ in spans)
    runs_span = max((s + timedelta(seconds=d) - first).total_seconds() for s, d in spans)
    return runs_span, total, data


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=1, help="measure each mode this many times")
    args = ap.parse_args()
    from modelverify_kernel.demo import build_demo_model

    results: dict[str, list[tuple[float, float]]] = {"off": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_demo_model(Path(tmp) / "tiny-llama")
        for i in range(args.repeat):
            for mode in ("off", "auto"):
                span, total, data = one(model, Path(tmp) / f"{mode}-{i}", mode)
                plan = data["parallel_runs"]
                print(
                    f"parallel_runs={mode:<4} runs {span:6.1f} s  notebook {total:6.1f} s  "
                    f"{data['diff_analysis']['conclusion']}  ({plan['reason']})",
                    flush=True,
                )
                results[mode].append((span, total))
    serial = min(s for s, _ in results["off"])
    parallel = min(s for s, _ in results["auto"])
    print(
        f"\nbest of {args.repeat}: Runs A+B one after the other {serial:.1f} s, side by side {parallel:.1f} s: "
        f"ratio {parallel / serial:.2f} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
