"""Time `classify_log` on big logs and show that its memory does not grow with the log.

Builds 10 MB and 100 MB logs (configurable) from real vLLM start-up lines — the CPU engine's own
start-up log in tests/data/logs plus the healthy-Run-B noise seen on a GPU (aoti_torch duplicate
registrations, Triton JIT warnings, tl.where deprecations) — with varying pids and timestamps,
and a FlagGems op failure in a worker (wrapped by the engine core and the main process) at the
end. Each size is timed without tracing (wall time, and the CPU time of this process: on a
machine shared with other jobs the wall time also counts their load), then measured again under
tracemalloc for peak Python memory. Prints the figures; target: <= 3 s for 100 MB, peak memory
flat.

    python benchmarks/classify_speed.py [--sizes 10 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelverify_kernel.analysis.diagnose import classify_log  # noqa: E402
from modelverify_kernel.analysis.knowledge import load_rules  # noqa: E402

REAL_STARTUP = ROOT / "tests" / "data" / "logs" / "vllm_cpu_startup_ok.log"
GPU_NOISE = [
    "(Worker_TP{tp} pid={pid}) WARNING {ts} [fused_moe.py:1060] Triton kernel JIT compilation during inference: fused_moe_kernel",
    "(Worker_TP{tp} pid={pid}) /usr/local/lib/python3.12/site-packages/flag_gems/ops/where.py:41: UserWarning: tl.where with a non-boolean condition is deprecated and will error out in a future triton release. Got int32",
    "Exception in aoti_torch: Tried to register an operator (_moe_C::topk_softmax(Tensor! topk_weights, Tensor! topk_indices, Tensor! token_expert_indices, Tensor gating_output, bool renormalize) -> ()) with the same name and overload name multiple times. Duplicate registration: registered at /dev/null:241",
    "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x98 (0x7f3a1c2b9f28 in /usr/local/lib/python3.12/site-packages/torch/lib/libc10.so)",
    "(EngineCore_DP0 pid={pid}) INFO {ts} [__init__.py:217] Platform plugin fl is activated",
    "(Worker_TP{tp} pid={pid}) INFO {ts} [custom_all_reduce.py:203] Registering 4352 cuda graph addresses for all_reduce inference",
    "(APIServer pid={pid}) INFO {ts} [loggers.py:123] Engine 000: Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 12.5 tokens/s, Running: 1 reqs",
]
ROOT_CAUSE = """\
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870] WorkerProc hit an exception.
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/local/lib/python3.12/site-packages/vllm/v1/executor/multiproc_executor.py", line 865, in worker_busy_loop
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     output = func(*args, **kwargs)
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/local/lib/python3.12/site-packages/vllm/model_executor/layers/linear.py", line 512, in forward
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     output = torch.addmm(bias, x, weight.t())
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/local/lib/python3.12/site-packages/flag_gems/ops/addmm.py", line 88, in addmm
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     bias = bias.broadcast_to(out_shape).contiguous()
(Worker_TP1 pid=48211) ERROR 05-20 04:39:23 [multiproc_executor.py:870] RuntimeError: HIP error: operation not permitted when stream is capturing
(EngineCore_DP0 pid=48190) ERROR 05-20 04:39:24 [core.py:700] RuntimeError: Worker failed with error 'HIP error: operation not permitted when stream is capturing', please check the stack trace above for the root cause
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}
"""


def build_log(path: Path, megabytes: int, unique: bool = False, seed: int = 7) -> int:
    """Write ~megabytes of start-up noise plus the root cause; return the byte size.

    ``unique`` makes every non-INFO line different (a counter appended), which defeats the
    classifier's cache of repeated harmless lines: the worst case.
    """
    rng = random.Random(seed)
    real = REAL_STARTUP.read_text(encoding="utf-8").splitlines()
    target = megabytes * 1_000_000
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            pid = rng.randint(1000, 99999)
            ts = f"05-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
            chunk = [
                ln.replace("pid=2820", f"pid={pid}").replace("pid=2798", f"pid={pid + 1}")
                for ln in real
            ]
            chunk += [
                rng.choice(GPU_NOISE).format(pid=pid, tp=rng.randint(0, 7), ts=ts)
                for _ in range(40)
            ]
            if unique:
                chunk = [
                    ln if " INFO " in ln[:40] else f"{ln} #{rng.randrange(10**9)}" for ln in chunk
                ]
            text = "\n".join(chunk) + "\n"
            out.write(text)
            written += len(text.encode("utf-8"))
        out.write(ROOT_CAUSE)
        written += len(ROOT_CAUSE)
    return written


def measure(path: Path) -> tuple[float, float, int, str]:
    rules = load_rules()
    t0, c0 = time.perf_counter(), time.process_time()
    diag = classify_log(path, rules=rules)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    tracemalloc.start()
    classify_log(path, rules=rules)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, cpu, peak, f"{diag.component}/{diag.rule}/op={diag.culprit_op}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="log sizes in MB")
    parser.add_argument("--keep", type=Path, help="write the logs here instead of a temp dir")
    parser.add_argument("--no-worst", action="store_true", help="skip the all-unique worst case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(
            f"{'size':>8} {'lines':>10} {'time':>8} {'cpu':>7} {'MB/s':>7} {'peak py mem':>12}  diagnosis"
        )
        runs = [(mb, False) for mb in args.sizes]
        if not args.no_worst:
            runs.append((max(args.sizes), True))
        for mb, unique in runs:
            path = folder / f"vllm_{mb}MB{'_unique' if unique else ''}.log"
            size = build_log(path, mb, unique)
            with path.open("rb") as fh:
                lines = sum(1 for _ in fh)
            elapsed, cpu, peak, diag = measure(path)
            print(
                f"{size / 1e6:7.1f}M {lines:>10,} {elapsed:7.2f}s {cpu:6.2f}s {size / 1e6 / elapsed:7.1f} "
                f"{peak / 1024:10.0f}KiB  {diag}{'  (worst case: no repeated lines)' if unique else ''}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
