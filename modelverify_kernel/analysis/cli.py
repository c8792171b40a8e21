"""``model-verify classify PATH... [--json]``: the classifier on files, one line (or JSON) each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .diagnose import classify_log
from .knowledge import RuleError, load_rules


def _load_result(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def cli_classify(paths: list[str], as_json: bool) -> int:
    """Classify each file: a log, or a phase result JSON (its log taken from a "log" key if any).

    Prints one JSON object per file with --json, otherwise one short line. Exit code 0 when every
    file was read, 2 when a file is missing or the rules are malformed.
    """
    try:
        rules = load_rules()
    except RuleError as exc:
        print(f"classify: {exc}", file=sys.stderr)
        return 2
    code = 0
    for name in paths:
        path = Path(name)
        if not path.is_file():
            print(f"classify: {name} is not a readable file", file=sys.stderr)
            code = 2
            continue
        result = _load_result(path) if path.suffix == ".json" else None
        log: Path | list[str] = path
        if result is not None:
            log_ref = result.get("log") or result.get("log_file")
            log = Path(log_ref) if isinstance(log_ref, str) and Path(log_ref).is_file() else []
        try:
            diag = classify_log(log, result, rules)
        except OSError as exc:
            print(f"classify: cannot read {name}: {exc.strerror}", file=sys.stderr)
            code = 2
            continue
        if as_json:
            print(json.dumps({"file": name, **diag.to_dict()}, ensure_ascii=False))
        else:
            layer = "-" if diag.layer is None else diag.layer
            tail = f" — {diag.error}" if diag.error else ""
            print(
                f"{name}: {diag.component} (layer {layer}, rule {diag.rule or '-'}, "
                f"{diag.confidence}){tail}"
            )
    return code
