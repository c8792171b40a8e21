"""``model-verify classify PATH... [--json] [--explain]``: the classifier on files, one line (or
JSON) each; ``--explain`` says how each was judged (readers, frames and their owners, rules,
suspects).

Alone, the classifier knows what is installed where it runs (owners.py's ``local_map``, the
probe's own function) besides the name tables of owners.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .diagnose import Diagnosis, Trace, classify_log
from .knowledge import RuleError, load_rules
from .logformat import STDLIB
from .logread import Failure
from .owners import LOADER, Owners, local_map

_NATIVE_TYPES = {"FatalPythonError", "FatalSignal", "NativeAssertionError", "CppException"}


def _load_result(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def _installed() -> dict:
    try:
        return local_map()
    except Exception:  # noqa: BLE001 - broken metadata here: the name tables alone
        return {}


def cli_classify(paths: list[str], as_json: bool, explain: bool = False) -> int:
    """Classify each file: a log, or a phase result JSON (its log taken from a "log" key if any).

    Prints one JSON object per file with --json, otherwise one short line; ``explain`` adds how
    the file was judged. Exit code 0 when every file was read, 2 when a file is missing or the
    rules are malformed.
    """
    try:
        rules = load_rules()
    except RuleError as exc:
        print(f"classify: {exc}", file=sys.stderr)
        return 2
    installed = _installed()
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
        trace = Trace()
        try:
            diag = classify_log(log, result, rules, installed=installed, trace=trace)
        except OSError as exc:
            print(f"classify: cannot read {name}: {exc.strerror}", file=sys.stderr)
            code = 2
            continue
        _print(name, diag, trace if explain else None, as_json)
    return code


def _print(name: str, diag: Diagnosis, trace: Trace | None, as_json: bool) -> None:
    if as_json:
        extra = {"explain": explanation(trace, diag)} if trace is not None else {}
        print(json.dumps({"file": name, **diag.to_dict(), **extra}, ensure_ascii=False))
        return
    layer = "-" if diag.layer is None else diag.layer
    tail = f" — {diag.error}" if diag.error else ""
    print(
        f"{name}: {diag.component} (layer {layer}, rule {diag.rule or '-'}, {diag.confidence}){tail}"
    )
    if trace is not None:
        print(format_explanation(explanation(trace, diag)))


def _reader(f: Failure) -> str:
    """Which reading of the log made this failure candidate."""
    if f.line_rule is not None:
        return f"line rule {f.line_rule.id}"
    if f.dump:
        return f"stack dump ({f.dump} thread)"
    blk = f.blocks[0] if f.blocks else None
    if blk is None:
        return "frames"
    form = "" if blk.form == "python traceback" else blk.form  # the reader that parsed it
    if blk.exc_type in _NATIVE_TYPES or blk.exc_type == "DeviceError":
        return f"{form or 'native failure'} ({blk.exc_type})"
    if blk.reverse or blk.message.startswith("stack dump"):
        return "stack dump (faulthandler" + (", current thread)" if blk.current else ")")
    if form:
        return form
    if blk.header:
        return "Python traceback"
    if blk.frames:
        return "traceback without header"
    return "exception line, frames: files the text names" if f.named else "exception line"


def _frame_rows(frames: list, owners: Owners) -> list[dict]:
    loaded = owners.loaded(frames)
    rows = []
    for fr in frames:
        path = fr.path.replace("\\", "/")
        hit = next((c for folder, c in loaded.items() if path.startswith(folder)), None)
        if STDLIB.search(path):  # "<frozen runpy>", "<string>", a notebook's cell: in no file
            in_no_file = path[:1] == "<" and not path.startswith("<frozen")
            comp, how = None, "code in no file" if in_no_file else "standard library"
        else:
            comp, how = (hit, LOADER) if hit else owners.frame(fr)
        rows.append({"frame": fr.text, "owner": comp or "-", "decided by": how})
    return rows


def explanation(trace: Trace | None, diag: Diagnosis) -> dict:
    """How a log was judged: each failure candidate's reader, frames with their owners (and how
    each owner was decided), the rule that fired, then the diagnosis and its suspects."""
    trace = trace or Trace()
    owners = trace.owners
    verdicts = {id(v.failure): v for v in trace.verdicts}
    failures = []
    for f in trace.failures:
        v = verdicts.get(id(f))
        blk = f.blocks[0] if f.blocks else None
        failures.append(
            {
                "reader": _reader(f),
                "stream": f.stream,
                "line": f.line or (blk.line if blk else ""),
                "frames": _frame_rows(f.chain_frames(), owners) if owners else [],
                "rule": (v.rule.id if v and v.rule else None)
                if v
                else ("harmless" if any(f is h for h in trace.harmless) else "wrapper"),
                "component": v.component if v else None,
                "owned by": v.owned_by if v else "",
                "chosen": v is not None and v is trace.chosen,
            }
        )
    return {
        "installed": {
            "modules": len(owners.installed.modules) if owners else 0,
            "plugin modules": sorted(owners.plugin_modules) if owners else [],
        },
        "failures": failures,
        "diagnosis": {"component": diag.component, "rule": diag.rule},
        "suspects": diag.suspects,
    }


def format_explanation(ex: dict) -> str:
    inst = ex["installed"]
    out = [
        f"  installed map: {inst['modules']} modules; plugin modules: "
        f"{', '.join(inst['plugin modules']) or '-'}"
    ]
    for n, f in enumerate(ex["failures"], 1):
        mark = " (chosen)" if f["chosen"] else ""
        out.append(f"  failure {n}{mark}: read as {f['reader']} [{f['stream']}]: {f['line'][:160]}")
        for row in f["frames"]:
            out.append(f"    {row['frame'][:140]}  → {row['owner']} ({row['decided by']})")
        how = f" (owner by {f['owned by']})" if f.get("owned by") else ""
        out.append(f"    rule: {f['rule'] or 'none fired'} → {f['component'] or '-'}{how}")
    if not ex["failures"]:
        out.append("  no failure candidate in the log")
    for s in ex["suspects"]:
        out.append(f"  suspect: {s['component']} — {s['why']}: {s['evidence'][:160]}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m modelverify_kernel.analysis.cli`` (``model-verify classify``'s arguments)."""
    p = argparse.ArgumentParser(prog="model-verify classify", description=__doc__)
    p.add_argument("paths", nargs="+", help="log files")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--explain", action="store_true", help="how each file was judged")
    args = p.parse_args(argv)
    return cli_classify(args.paths, args.json, args.explain)


if __name__ == "__main__":
    sys.exit(main())
