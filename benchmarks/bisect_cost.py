"""Cost of the culprit-op search (issue 13) and of the component ablation before it (issue 19):
phase runs and wall time.

Part 1 counts the search's phase runs for a single culprit at every position among n kernels,
and for every pair that fails only together (the search logic itself, no engine). Part 2
(`--engine`) runs the real notebook on the demo model with the test stand-ins (the `fl` plugin in
its `real` mode, the flag_gems stand-in, FAKE_GEMS_FAULT) and prints the steps and the time.

    python benchmarks/bisect_cost.py [--engine] [--fault silu=raise]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelverify_kernel.analysis.experiments import narrow  # noqa: E402


def runs_for(n: int, culprits: set[int]) -> int:
    """Phase runs of the search: the all-off step, then narrowing (2 confirming runs come on top)."""
    calls = []
    found = narrow(list(range(n)), lambda on: calls.append(on) or culprits <= set(on))
    assert set(found) == culprits, (n, culprits, found)
    return 1 + len(calls)


def logic() -> None:
    print(
        "search steps (all-off step + narrowing; + 2 confirming runs), by number of kernels that ran:"
    )
    print(
        f"{'n':>5} {'log2 n + 2':>10} {'single avg':>10} {'single max':>10} {'pair avg':>9} {'pair max':>9}"
    )
    for n in (2, 3, 4, 8, 16, 22, 64, 433):
        single = [runs_for(n, {i}) for i in range(n)]
        pairs = list(itertools.combinations(range(n), 2))
        if len(pairs) > 400:
            pairs = pairs[:: len(pairs) // 400]
        pair = [runs_for(n, set(p)) for p in pairs]
        print(
            f"{n:>5} {math.ceil(math.log2(n)) + 2:>10} {sum(single) / n:>10.1f} {max(single):>10} "
            f"{sum(pair) / len(pair):>9.1f} {max(pair):>9}"
        )


def channels() -> None:
    """Issue 19: where nothing was seen running, the search runs over every op `enable()` took
    over (433 on FlagGems 5.0.2, the n=433 row); a step ending in another failure (inconclusive)
    costs the same split asked the other way round, or another split."""
    n = 433
    single = [runs_for(n, {i}) for i in range(n)]
    print(
        f"\nregistered-ops channel, {n} ops (FlagGems 5.0.2's enable()): single culprit "
        f"avg {sum(single) / n:.1f}, max {max(single)} steps (+ 2 confirming runs); "
        f"bound ceil(log2 n) + 3 = {math.ceil(math.log2(n)) + 3}"
    )
    extra = []
    for culprit in range(0, n, 7):
        calls: list[frozenset] = []

        def fails(on, culprit=culprit, calls=calls):
            calls.append(on)
            return None if len(calls) == 1 else culprit in on  # the first split: another error

        assert narrow(list(range(n)), fails) == [culprit]
        extra.append(1 + len(calls) - runs_for(n, {culprit}))
    print(
        f"one inconclusive step (another failure) among them: +{sum(extra) / len(extra):.1f} "
        f"steps on average, +{max(extra)} at most"
    )


def partner_off() -> None:
    """Issue 19 on an H100: every step with FlagGems' copy_ on and its to_copy off crashed, among
    the 28 kernels Run B ran with `embedding` ×1.05 (tests/data/h100_culprit_search.json). The
    steps for each culprit position."""
    h100 = json.loads((ROOT / "tests" / "data" / "h100_culprit_search.json").read_text())
    ran, kernel, partner = h100["ran"], h100["breaks"]["kernel"], h100["breaks"]["partner"]
    steps = {}
    for culprit in ran[1:]:
        if culprit in (kernel, partner):
            continue
        calls: list[frozenset] = []

        def fails(on, culprit=culprit, calls=calls):
            calls.append(on)
            return None if kernel in on and partner not in on else culprit in on

        assert narrow(ran, fails, 1) == [culprit]
        steps[culprit] = 1 + len(calls)
    bound = math.ceil(math.log2(len(ran))) + 3
    print(
        f"\nH100, {len(ran)} kernels, {kernel} on with {partner} off another failure: "
        f"{sum(steps.values()) / len(steps):.1f} steps on average, {max(steps.values())} at most, "
        f"{h100['culprit']} {steps[h100['culprit']]} (bound ceil(log2 n) + 3 = {bound})"
    )


def ablation_cost() -> None:
    """The ablation adds one phase run per FlagOS component it can switch off, and stops at the
    first one whose removal makes the fault go: at most 3 (FlagGems, FlagCX at TP>1, the plugin)."""
    from modelverify_kernel.analysis.ablation import COMPONENTS

    print("\ncomponent ablation (before the op search), phase runs added:")
    print(f"{'case':<46} {'best':>5} {'worst':>6}")
    cases = (
        ("TP=1, plugin not removable (FlagGems only)", 1),
        ("TP=1, plugin removable (FlagGems, plugin)", 2),
        (f"TP>1, all removable ({', '.join(COMPONENTS)})", len(COMPONENTS)),
    )
    for name, worst in cases:
        print(f"{name:<46} {1:>5} {worst:>6}")
    n = 433
    search = max(runs_for(n, {i}) for i in range(n))
    print(
        f"worst case, one culprit among {n} kernels: {len(COMPONENTS)} ablation runs + {search} "
        f"search steps (all-off step included) + 2 confirming runs = {len(COMPONENTS) + search + 2} "
        "phase runs"
    )


def engine(fault: str) -> None:
    import papermill as pm

    from modelverify_kernel.demo import build_demo_model

    fake = ROOT / "tests" / "fake_stack"
    with tempfile.TemporaryDirectory() as tmp:
        model = build_demo_model(Path(tmp) / "tiny-llama")
        out = Path(tmp) / "report"
        out.mkdir()
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
                run_b_env={"FAKE_FL_MODE": "real", "FAKE_GEMS_FAULT": fault},
                extra_vllm_args=["--enforce-eager", "--dtype", "float32"],
                max_model_len=512,
            ),
        )
        total = time.monotonic() - start
        data = json.loads((out / "report.json").read_text())
        b, a = data["bisection"], data["ablation"]
    print(
        f"\nreal engine, FAKE_GEMS_FAULT={fault}: {b['status']} {b['culprit_ops']} among {len(b['ops'])} kernels "
        f"{b['ops']}"
    )
    print(f"  ablation: {a['status']} {a['component']} in {a['elapsed_s']:.0f} s")
    for r in a["runs"]:
        print(
            f"  ablation run {r['number']} {r['component']:<9} off {r['outcome']:<9} {r['duration_s']:.0f} s"
        )
    for s in b["steps"] + b["confirm"]:
        print(
            f"  step {s['number']:>2} {s['phase']:<7} off={','.join(s['disabled']) or '-':<40} {s['outcome']:<4} "
            f"{s['duration_s']:.0f} s"
        )
    print(
        f"  search {len(b['steps'])} steps + {len(b['confirm'])} confirming runs: {b['elapsed_s']:.0f} s; "
        f"whole notebook {total:.0f} s (load: {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--engine", action="store_true", help="also run the real notebook with the stand-ins"
    )
    ap.add_argument("--fault", default="silu=raise", help="FAKE_GEMS_FAULT for --engine")
    args = ap.parse_args()
    logic()
    channels()
    partner_off()
    ablation_cost()
    if args.engine:
        engine(args.fault)


if __name__ == "__main__":
    main()
