"""Calibrate the output comparison's aggregate rule against correct-but-different kernels.

Runs the real offline phase (vLLM for CPU, demo model, the fixed prompt set: 5 prompts × 16
tokens, greedy, top-5 logprobs) once as the reference (float32, no stack) and then once per
variant, each compared with the reference exactly as Run A vs Run B are:

- noise a correct stack makes — the same stack again (bit-exact repeat), bfloat16 vs float32,
  and the test flag_gems stand-in (tests/fake_stack) computing `rms_norm` in another summation
  order or precision and `embedding` in another precision (FAKE_GEMS_VARIANT);
- faults — the stand-in's `rms_norm` / `embedding` kernels scaling their output by 1.05 or 1.02
  on every token (FAKE_GEMS_FAULT).

Per variant it prints the per-prompt judgements and the aggregate figures (prompts flipped;
median, p90 and max of the shifts), whether the phase is judged systematic, and which bound on
`shift_p90` (references/output-comparison.md) the variant supports: a correct kernel's p90 is
a lower bound for the limit, a fault's p90 an upper bound for catching it. The serve phase gives
the same tokens as offline on this machine, so one phase is measured.

    .venv/bin/python benchmarks/compare_calibration.py [--model DIR] [--only NAME,...]
        [--save-fixture tests/data/compare_calibration.json] [--json FIGURES.json]
    .venv/bin/python benchmarks/compare_calibration.py --from-fixture tests/data/compare_calibration.json

About 35-55 s per engine run on 2 CPU cores; 11 runs by default. `--from-fixture` judges saved
outputs again without an engine (after a change of the rule or its constants). On a GPU machine
with a real model, `--model DIR --dtype bfloat16` measures the noise of the precision change there
(the stand-in variants need the CPU test stack): the constants were set on the tiny demo model,
whose logits are small, and a larger model's logits — and its kernel noise in nats — may be larger.

Measured here (2026-11-30, 2 cores, vLLM for CPU 0.32, demo model; shifts = |Δ logprob| of the
top-5 tokens both runs list, at positions with the same context; nats):

| variant | kind | prompts flipped | median | p90 | max | per-prompt diverged | systematic |
|---|---|---|---|---|---|---|---|
| same stack again | noise | 0/5 | 0 | 0 | 0 | 0 | no |
| bfloat16 vs float32 | noise | 0/5 | 0.0007 | 0.0016 | 0.0032 | 0 | no |
| stand-in, no change | noise | 0/5 | 0 | 0 | 0 | 0 | no |
| rms_norm reorder | noise | 0/5 | 0 | < 1e-6 | 1e-6 | 0 | no |
| rms_norm bf16 | noise | 0/5 | 0.0008 | 0.0018 | 0.0030 | 0 | no |
| embedding bf16 | noise | 0/5 | 0.0002 | 0.0004 | 0.0009 | 0 | no |
| rms_norm x1.02 | fault | 3/5 | 0.0076 | 0.0105 | 0.0143 | 0 | yes (shift) |
| embedding x1.02 | fault | 1/5 | 0.0012 | 0.0032 | 0.0055 | 0 | no (within correct-kernel noise) |
| rms_norm x1.05 | fault | 5/5 | 0.0175 | 0.0248 | 0.0339 | 0 | yes (shift) |
| embedding x1.05 | fault | 2/5 | 0.0030 | 0.0079 | 0.0133 | 0 | yes (shift) |

So `shift_p90` must lie in (0.0018, 0.0079) to pass every correct kernel and catch every ×1.05
here, and above 0.0059 (the largest shift of the correct FlagGems kernel on an H200): 0.006.
Every fault row was a false pass for the per-prompt rule alone (0 diverged). The serve phase
gives the same tokens here, so its judgement is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelverify_kernel.analysis.compare import Tolerances, compare_phase  # noqa: E402
from modelverify_kernel.demo import build_demo_model  # noqa: E402

SCRIPT = REPO / "container_scripts" / "run_offline_inference.py"
STACK_ENV = {  # Run B through the test stand-ins, inside the real engine (tests/fake_stack)
    "PYTHONPATH": os.pathsep.join(
        [
            str(REPO / "tests" / "fake_stack" / "site"),
            str(REPO / "tests" / "fake_stack" / "flaggems_standin"),
        ]
    ),
    "VLLM_PLUGINS": "fl",
    "USE_FLAGGEMS": "1",
    "FAKE_FL_MODE": "real",
}


@dataclass
class Variant:
    name: str
    kind: str  # noise | fault
    dtype: str = "float32"
    env: dict[str, str] = field(default_factory=dict)
    fixture: bool = False  # saved to the test fixture


VARIANTS = [
    Variant("same stack again", "noise", fixture=True),
    Variant("bfloat16 vs float32", "noise", "bfloat16", fixture=True),
    Variant("stand-in, no change", "noise", env={**STACK_ENV}),
    Variant(
        "rms_norm reorder",
        "noise",
        env={**STACK_ENV, "FAKE_GEMS_VARIANT": "rms_norm=reorder"},
        fixture=True,
    ),
    Variant(
        "rms_norm bf16",
        "noise",
        env={**STACK_ENV, "FAKE_GEMS_VARIANT": "rms_norm=bf16"},
        fixture=True,
    ),
    Variant(
        "embedding bf16",
        "noise",
        env={**STACK_ENV, "FAKE_GEMS_VARIANT": "embedding=bf16"},
        fixture=True,
    ),
    Variant("rms_norm x1.02", "fault", env={**STACK_ENV, "FAKE_GEMS_FAULT": "rms_norm=scale:1.02"}),
    Variant(
        "embedding x1.02", "fault", env={**STACK_ENV, "FAKE_GEMS_FAULT": "embedding=scale:1.02"}
    ),
    Variant(
        "rms_norm x1.05",
        "fault",
        env={**STACK_ENV, "FAKE_GEMS_FAULT": "rms_norm=scale:1.05"},
        fixture=True,
    ),
    Variant(
        "embedding x1.05",
        "fault",
        env={**STACK_ENV, "FAKE_GEMS_FAULT": "embedding=scale:1.05"},
        fixture=True,
    ),
]


def offline(model: Path, out: Path, v: Variant) -> list[dict]:
    args = ["--enforce-eager", "--dtype", v.dtype]
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(model),
            "--output",
            str(out),
            "--max-model-len",
            "512",
            "--extra-args",
            json.dumps(args),
        ],
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **v.env},
        capture_output=True,
        text=True,
    )
    result = json.loads(out.read_text())
    if result["status"] != "PASS":
        sys.exit(f"offline run failed ({v.name}): {result['error']}\n{proc.stdout[-2000:]}")
    print(f"[{v.name}: engine run {time.monotonic() - t0:.0f} s]", file=sys.stderr, flush=True)
    return result["outputs"]


def _f(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1e}" if 0 < x < 1e-4 else f"{x:.4f}"


def report(
    base: list[dict], variants: list[tuple[Variant, list[dict]]], tol: Tolerances
) -> list[dict]:
    """Judge each variant against the reference as Run B against Run A; print and return the figures."""
    gaps = sorted(pos["top"][0][1] - pos["top"][1][1] for o in base for pos in o["logprobs"])
    print(
        f"flatness of the model: top-1/top-2 gap median {gaps[len(gaps) // 2]:.4f}, min {gaps[0]:.4f} "
        f"nats over {len(gaps)} positions; {sum(g < tol.tie for g in gaps)} positions within the tie "
        f"tolerance {tol.tie}"
    )
    print(
        f"rule (references/output-comparison.md): shift p90 > {tol.systematic_shift} nats with >= "
        f"{tol.min_shifts} values, or >= {tol.flip_fraction:.0%} of >= {tol.min_prompts_for_flips} prompts "
        f"flipped with median shift > {tol.flip_median}"
    )
    rows = []
    for v, outs in variants:
        pc = compare_phase("offline", base, outs, tol)
        ag = pc.aggregate
        print(
            f"\n{v.name} ({v.kind}): {ag.prompts_flipped}/{ag.prompts_compared} prompts flipped; shared "
            f"top-k shifts median {_f(ag.shared_median)}, p90 {_f(ag.shared_p90)}, max {_f(ag.shared_max)} "
            f"({ag.shifts_compared} values, {ag.positions_compared} positions); chosen token median "
            f"{_f(ag.chosen_median)}, p90 {_f(ag.chosen_p90)}, max {_f(ag.chosen_max)}"
        )
        for c in pc.prompts:
            print(
                f"  prompt {c.index}: first divergence {c.first_divergence}, {c.judgement}"
                + (f" — {c.detail}" if c.detail else "")
            )
        print(
            f"  aggregate: {'SYSTEMATIC' if ag.systematic else 'not systematic'} "
            f"({ag.reason or 'no test fired'}); per-prompt diverged: {len(pc.diverged)}; "
            f"mismatch: {pc.mismatch}"
        )
        p90 = ag.shared_p90 or 0.0
        if v.kind == "noise":
            support = f"shift_p90 must stay above {_f(p90)} (and flip_median above {_f(ag.shared_median)})"
        else:
            support = (
                f"caught if shift_p90 < {_f(p90)}"
                if ag.shifts_compared >= tol.min_shifts
                else "too few shifts: only the flip test can catch it"
            )
        if v.kind == "fault" and not ag.shared_max and ag.prompts_flipped == 0:
            support = "nothing changed at all: was the stand-in active in that run? (not evidence either way)"
        print(f"  supports: {support}")
        rows.append(
            {
                "variant": v.name,
                "kind": v.kind,
                "prompts_flipped": ag.prompts_flipped,
                "prompts_compared": ag.prompts_compared,
                "shifts": ag.shifts_compared,
                "median": ag.shared_median,
                "p90": ag.shared_p90,
                "max": ag.shared_max,
                "chosen_max": ag.chosen_max,
                "systematic": ag.systematic,
                "reason": ag.reason,
                "per_prompt_diverged": len(pc.diverged),
            }
        )
    print(
        "\n| variant | kind | prompts flipped | shift median | p90 | max | per-prompt diverged | systematic |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['kind']} | {r['prompts_flipped']}/{r['prompts_compared']} | {_f(r['median'])} "
            f"| {_f(r['p90'])} | {_f(r['max'])} | {r['per_prompt_diverged']} | {'yes' if r['systematic'] else 'no'} |"
        )
    noise = [r["p90"] or 0.0 for r in rows if r["kind"] == "noise"]
    faults = [r["p90"] or 0.0 for r in rows if r["kind"] == "fault" and "1.05" in r["variant"]]
    if noise and faults:
        print(
            f"\nshift_p90 must lie in ({_f(max(noise))}, {_f(min(faults))}) to pass every correct kernel and "
            f"catch every x1.05 fault here; it is {tol.systematic_shift} (also above the H200's correct-kernel "
            f"max 0.0059)"
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", type=Path, default=None, help="model folder (default: build the demo model)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="the reference's (and the stand-in variants') dtype; the precision variant uses "
        "bfloat16, or float32 when this is not float32",
    )
    p.add_argument("--only", default=None, help="comma list of variant names to run (default: all)")
    p.add_argument(
        "--save-fixture",
        type=Path,
        default=None,
        help="write the reference and the fixture variants' outputs here (tests/data/…)",
    )
    p.add_argument(
        "--from-fixture",
        type=Path,
        default=None,
        help="judge the outputs saved in this fixture again, without running an engine",
    )
    p.add_argument("--json", type=Path, default=None, help="write the figures table here")
    args = p.parse_args()
    tol = Tolerances()
    if args.from_fixture:
        data = json.loads(args.from_fixture.read_text())
        rows = report(
            data["reference"],
            [
                (Variant(name, v["kind"], v["dtype"], v["env"]), v["outputs"])
                for name, v in data["variants"].items()
            ],
            tol,
        )
    else:
        chosen = [v for v in VARIANTS if not args.only or v.name in args.only.split(",")]
        for v in chosen:
            if v.name == "bfloat16 vs float32" and args.dtype != "float32":
                v.name, v.dtype = f"float32 vs {args.dtype}", "float32"
            elif v.dtype == "float32":
                v.dtype = args.dtype
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            model = args.model or build_demo_model(tmp_path / "demo-model")
            base = offline(model, tmp_path / "base.json", Variant("reference", "noise", args.dtype))
            runs = [(v, offline(model, tmp_path / f"v{i}.json", v)) for i, v in enumerate(chosen)]
        rows = report(base, runs, tol)
        if args.save_fixture:
            keep = ("prompt", "kind", "text", "token_ids", "logprobs")
            slim = lambda outs: [{k: o[k] for k in keep if k in o} for o in outs]  # noqa: E731
            args.save_fixture.write_text(
                json.dumps(
                    {
                        "_about": "Real offline outputs of the demo model (vLLM for CPU 0.32, 2 cores) written by "
                        "benchmarks/compare_calibration.py: the float32 reference and variants through the "
                        "test flag_gems stand-in. tests/test_compare.py judges them.",
                        "reference": slim(base),
                        "variants": {
                            v.name: {
                                "kind": v.kind,
                                "dtype": v.dtype,
                                "env": {
                                    k: val for k, val in v.env.items() if k.startswith("FAKE_GEMS")
                                },
                                "outputs": slim(outs),
                            }
                            for v, outs in runs
                            if v.fixture
                        },
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
            print(f"fixture written: {args.save_fixture}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
