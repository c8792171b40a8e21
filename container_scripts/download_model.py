#!/usr/bin/env python3
"""Download a model by ID inside the target (ModelScope by default, Hugging Face on request).

Skipped when the destination already holds a `config.json`. Tokens are read by the hub
libraries from their usual environment variables and never printed. Writes a result JSON to
--output. Exit code 0 means the model is ready, 1 it is not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common


def download(model_id: str, source: str, dest: Path) -> None:
    if source == "huggingface":
        from huggingface_hub import snapshot_download
    else:
        from modelscope import snapshot_download
    snapshot_download(model_id, local_dir=str(dest))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-id", required=True, help="e.g. Qwen/Qwen3-0.6B")
    p.add_argument("--source", choices=["modelscope", "huggingface"], default="modelscope")
    p.add_argument("--dest", required=True, help="folder to download into")
    p.add_argument("--output", required=True, help="result JSON")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    result = {
        "phase": "download",
        "model_id": args.model_id,
        "source": args.source,
        "path": str(dest),
        "status": "FAIL",
        "skipped": False,
        "error": None,
        "error_type": None,
        "traceback": None,
        "timings": {},
    }
    t0 = time.monotonic()
    try:
        if (dest / "config.json").is_file():
            result["skipped"] = True
            _common.say(f"{dest}/config.json already present: download skipped")
        else:
            _common.say(f"downloading {args.model_id} from {args.source} to {dest}")
            download(args.model_id, args.source, dest)
            if not (dest / "config.json").is_file():
                raise FileNotFoundError(f"download finished but {dest}/config.json is missing")
        result["status"] = "PASS"
    except Exception as exc:  # reported in the result file
        result.update(_common.failure_fields(exc))
        _common.say(f"download FAIL: {result['error']}")
    result["timings"]["download_s"] = round(time.monotonic() - t0, 3)
    _common.write_result(args.output, result)
    return _common.exit_code(result["status"])


if __name__ == "__main__":
    sys.exit(main())
