"""Judging: failure candidates in, one Diagnosis out.

Each candidate is unwrapped to its root exception, matched against the rules in order, and
blamed on an owner where the row says so (owners.md says who owns which code); then the phase's
own recorded error anchors the choice, else the lowest layer wins."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..vocabulary import COMPONENT_LAYER
from .kernels import kernel_named
from .knowledge import CONFIDENCE, Rule, Tables, load_rules, load_tables
from .logformat import STDLIB
from .logread import Failure, Frame, Scanner
from .matchers import Matcher
from .owners import Installed, Owners, listed_plugins
from .prefilter import RuleSet, build
from .signature import culprit_op, normalise, signature


@dataclass(frozen=True)
class Diagnosis:
    """What broke, where, and the lines that prove it."""

    component: str
    layer: int | None
    rule: str | None
    evidence: list[str]
    culprit_op: str | None
    hint: str
    confidence: str
    signature: str
    error: str | None
    # when no rule decides (component "unknown"): up to three ranked suspects, each
    # {"component", "evidence", "why"}; never a component by default
    suspects: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Exc:
    """The root exception of a failure, as the rules see it."""

    etype: str
    message: str
    detail: str
    line: str
    frames: list[Frame]  # root block, outermost → innermost
    chain_frames: list[Frame]
    evidence: list[str]


def _atoms_hold(rule: Rule, values) -> tuple[Matcher, ...] | None:
    """The first alternative of the row whose atoms all hold (None: the row does not match)."""
    for alt in rule.alts:
        if all(atom.holds(values(atom.kind)) for atom in alt):
            return alt
    return None


def _inner_path(frames: list[Frame]) -> str | None:
    fr = _inner_frame(frames)
    return fr.path if fr else None


def _inner_frame(frames: list[Frame]) -> Frame | None:
    for fr in reversed(frames):
        if not STDLIB.search(fr.path):
            return fr
    return None


def _exc_values(exc: _Exc, conditions: list[str] = ()):
    """What each match kind looks at in this exception (the matchers only match)."""
    inner_frame = _inner_frame(exc.frames or exc.chain_frames)
    inner = inner_frame.path if inner_frame else None

    def values(kind: str) -> list[str]:
        if kind == "exc":
            return [exc.etype, exc.etype.rsplit(".", 1)[-1]] if exc.etype else []
        if kind in ("msg", "text"):
            return [exc.detail]
        if kind == "frame":
            return [f.path for f in exc.chain_frames]
        if kind == "inner":
            return [inner] if inner else []
        if kind == "code":
            return [inner_frame.code] if inner_frame and inner_frame.code else []
        if kind == "cond":
            return conditions
        return []

    return values


def _owner(
    frames: list[Frame], text: str, line: str, caller: bool, owners: Owners
) -> tuple[str | None, str, Frame | None]:
    """Who owns the code the failure came through: (component, how, frame).

    ``caller``: the failure is the kernel's (its source, its launch, its fault on the device):
    a Triton kernel the failure's text names is blamed on whoever defines it (kernel index) —
    a device fault's stack is often not where the kernel ran; else Triton's own frames are
    skipped so the code that called the kernel is blamed.
    """
    if caller:  # the kernel the failure names is the most direct evidence of whose kernel it was
        named = kernel_named(text)
        if named:
            return named[1], "kernel", None
    comp = owners.module_owner(line)
    if comp:  # the module the exception blames (a circular import): its package's owner
        return comp, "module", None
    comp, _how, fr = owners.owner_of(frames, caller)
    # the class the exception names; the custom op a compiled graph's innermost line calls
    code = frames[-1].code if frames and frames[-1].path.startswith("<") else ""
    named = owners.class_owner(f"{line}\n{code}") if comp in (None, "vllm") else None
    if named:  # a plugin's subclass seen through vLLM's base class frames, or its op
        return named, "class", None
    if comp:
        return comp, "frame", fr
    for pat, comp in owners.tables.owner_paths:
        if pat.search(text):
            return comp, "path", None
    for pat, comp in owners.tables.owner_names:
        if pat.search(line):
            return comp, "name", None
    return None, "fallback", None


def _harmless(f: Failure, rs: RuleSet) -> bool:
    """A traceback healthy runs print too (owners.md, *Harmless exceptions*): no failure."""
    exc, _wrapped = _root_exc(f, rs)
    if exc is None:
        return False
    etype = exc.etype.rsplit(".", 1)[-1]
    frames = exc.chain_frames or exc.frames
    if any(not (STDLIB.search(fr.path) or fr.path.startswith("<")) for fr in frames):
        return False  # code outside the standard library was running: a failure of its own
    where = frames[-1].path if frames else exc.message.strip()
    return any(kind.fullmatch(etype) and place.search(where) for kind, place in rs.tables.harmless)


def _root_exc(f: Failure, rs: RuleSet) -> tuple[_Exc | None, list[str]]:
    """First non-wrapper exception of the chain (wrappers with an inner error unwrapped)."""
    chain_frames = f.chain_frames()
    wrapped: list[str] = []
    for blk in f.blocks:
        frames = (
            blk.ordered_frames() or (f.stand_in_frames() if blk is f.blocks[0] else [])
        ) + f.user_frames
        detail = "\n".join([blk.message, *blk.detail])
        exc = _Exc(
            blk.exc_type or "",
            blk.message,
            detail,
            blk.line,
            frames,
            chain_frames,
            [blk.line, *blk.detail[:2]],
        )
        wrapper = next(
            (w for w in rs.wrappers if _atoms_hold(w, _exc_values(exc)) is not None), None
        )
        if wrapper is None:
            return exc, wrapped
        wrapped.append(blk.line)
        inner = _wrapped_inner(wrapper, detail)
        if inner:
            em = re.match(
                r"(?P<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)):\s*(?P<msg>.*)", inner
            )
            etype, imsg = (em.group("type"), em.group("msg")) if em else ("", inner)
            rest = "\n".join(blk.detail)
            return _Exc(
                etype,
                imsg,
                "\n".join([imsg, rest]).strip(),
                blk.line,
                [],
                [],
                [blk.line, *blk.detail[:2]],
            ), wrapped
    return None, wrapped


def _wrapper_rules(f: Failure, rs: RuleSet) -> list[Rule]:
    """The wrapper rows the failure's exceptions matched."""
    out = []
    for blk in f.blocks:
        exc = _Exc(
            blk.exc_type or "",
            blk.message,
            "\n".join([blk.message, *blk.detail]),
            blk.line,
            blk.ordered_frames(),
            blk.ordered_frames(),
            [blk.line],
        )
        out += [w for w in rs.wrappers if _atoms_hold(w, _exc_values(exc)) is not None][:1]
    return out


def _wrapped_inner(wrapper: Rule, detail: str) -> str | None:
    for atom in wrapper.atoms:
        if atom.kind in ("msg", "text") and not atom.negate and "inner" in atom.pattern.groupindex:
            m = atom.pattern.search(detail)
            if m and m.group("inner"):
                return m.group("inner").strip()
    return None


@dataclass
class _Verdict:
    component: str
    rule: Rule | None
    confidence: str
    failure: Failure
    exc: _Exc | None
    owner_frame: Frame | None
    evidence: list[str]
    owned_by: str = ""  # how an owner row found its owner (frame, class, path, name, kernel…)


def _capped(conf: str, cap: str) -> str:
    return CONFIDENCE[min(CONFIDENCE.index(conf), CONFIDENCE.index(cap))]


def _apply(
    rule: Rule, frames: list[Frame], text: str, line: str, owners: Owners
) -> tuple[str, str, Frame | None, str]:
    """(component, confidence, owning frame, how it was owned) a matched row gives; owner rows
    find the owner, their confidence capped by the kind of evidence of ownership (owners.md)."""
    if rule.component != "owner":
        return rule.component, rule.confidence, None, ""
    comp, how, fr = _owner(frames, text, line, rule.caller, owners)
    conf = _capped(rule.confidence, owners.tables.confidence_caps.get(how, "low"))
    if comp is None:
        return rule.fallback or "unknown", conf, None, how
    return comp, conf, fr, how


_REPORTS_TROUBLE = re.compile(r"\b(?:WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b")


def _judge(f: Failure, rs: RuleSet, conditions: list[str], owners: Owners) -> _Verdict | None:
    """Classify one failure candidate; None when it is only a wrapper."""
    if f.line_rule is not None:
        comp, conf, fr, how = _apply(
            f.line_rule, f.orphan_frames, f"{f.context}\n{f.line}", f.line, owners
        )
        # the line before goes with it when it is the cause being reported (a FlagCX WARN line,
        # then its error-return trace) or the code the failure is in (owner rows)
        with_context = (
            f.context
            and comp != "unknown"
            and (f.line_rule.component == "owner" or _REPORTS_TROUBLE.search(f.context) is not None)
        )
        ev = [f.context, f.line] if with_context else [f.line]
        return _Verdict(comp, f.line_rule, conf, f, None, fr, ev, how)
    exc, wrapped = _root_exc(f, rs)
    if exc is None:
        return None
    values = _exc_values(exc, conditions)
    context = "\n".join([exc.detail, exc.line])
    for rule in rs.ordered:
        held = _atoms_hold(rule, values) if rule.exception_capable else None
        if held is not None:
            comp, conf, fr, how = _apply(
                rule, exc.frames or exc.chain_frames, context, exc.line, owners
            )
            ev = list(exc.evidence)
            for atom in held:
                if atom.kind == "cond":  # the condition that explains the failure
                    ev += [c for c in conditions if atom.pattern.search(c)][:1]
            if fr is not None:
                ev.append(fr.text)
            elif rule.component != "owner" and any(a.kind in ("inner", "frame") for a in held):
                inner = _inner_path(exc.frames or exc.chain_frames)
                ev += [fr2.text for fr2 in exc.chain_frames if fr2.path == inner][:1]
            return _Verdict(comp, rule, conf, f, exc, fr, ev + wrapped[:1], how)
    return _Verdict("unknown", None, "low", f, exc, None, list(exc.evidence) + wrapped[:1])


def _iter_lines(log: Path | str | Iterable[str]) -> Iterator[str]:
    if isinstance(log, (str, Path)):
        with open(log, encoding="utf-8", errors="replace") as fh:
            yield from fh
    else:
        yield from log


def _result_lines(result: dict) -> list[str]:
    lines: list[str] = []
    tb = result.get("traceback")
    if isinstance(tb, str) and tb.strip():
        lines += tb.splitlines()
    err = result.get("error")
    if isinstance(err, str) and err.strip():
        etype = result.get("error_type")
        first = err.strip().splitlines()[0]
        if (
            isinstance(etype, str)
            and etype
            and not first.startswith(etype.rsplit(".", 1)[-1])
            and not first.startswith(etype)
        ):
            err = f"{etype}: {err.strip()}"
        if not any(err.strip().splitlines()[0] in ln for ln in lines):
            lines += ["", *err.strip().splitlines()]
    return lines


RESULT_STREAM = "<result>"


# vLLM lists its plugins while it starts: they are looked for where conditions are
PLUGIN_LIST_LINES = 20_000


def _listing(lines: Iterable[str], found: list[str], tables: Tables) -> Iterator[str]:
    """The log's lines, unchanged; the plugin modules the first lines list go into ``found``."""
    it = iter(lines)
    for _, line in zip(range(PLUGIN_LIST_LINES), it):
        if "->" in line:
            found += [m for m in listed_plugins([line], tables) if m not in found]
        yield line
    yield from it  # the rest of a big log passes straight through


@dataclass
class Trace:
    """How a log was judged (for ``model-verify classify --explain``)."""

    owners: Owners | None = None
    failures: list[Failure] = field(default_factory=list)
    verdicts: list[_Verdict] = field(default_factory=list)
    chosen: _Verdict | None = None
    harmless: list[Failure] = field(default_factory=list)  # owners.md: no failure at all


def classify_log(
    log: Path | Iterable[str],
    result: dict | None = None,
    rules: Iterable[Rule] | None = None,
    tables: Tables | None = None,
    installed: dict | Installed | None = None,
    trace: Trace | None = None,
) -> Diagnosis:
    """Diagnose one phase from its full log (streamed) and, optionally, its result JSON.

    ``rules`` and ``tables`` default to the shipped references (load_rules, load_tables);
    ``installed``: what is installed in the target (the probe's ``owners`` map, see owners.py),
    None for the name tables only. ``trace`` collects how the log was judged."""
    rules = tuple(rules) if rules is not None else tuple(load_rules())
    rs = build(rules, tables if tables is not None else load_tables())
    result = result or {}
    status = str(result.get("status", "")).upper()
    if status == "PASS":
        return Diagnosis("none", None, None, [], None, "The phase passed.", "high", "", None)
    scanner = Scanner(rs)
    listed: list[str] = []
    scanner.feed_all(_listing(_iter_lines(log), listed, rs.tables))
    if result:
        scanner.feed_all(_result_lines(result), stream=RESULT_STREAM)
    if not isinstance(installed, Installed):
        installed = Installed.from_map(installed)
    owners = Owners(rs.tables, installed, listed)
    trace = trace if trace is not None else Trace()
    trace.owners = owners
    wrappers: list[str] = []
    said: list[Rule] = []  # wrapper(X) rows hit: what the wrapper means when nothing else is found
    for f in scanner.close():
        trace.failures.append(f)
        if _harmless(f, rs):
            trace.harmless.append(f)
            continue
        v = _judge(f, rs, scanner.conditions, owners)
        if v is None:
            wrappers += [b.line for b in f.blocks[:1]]
            said += [w for w in _wrapper_rules(f, rs) if w.fallback]
        else:
            trace.verdicts.append(v)
    trace.chosen = _choose(trace.verdicts, result, rs.tables)
    if trace.chosen is None and not (said or wrappers) and status and scanner.handled:
        # the phase failed and nothing else says why: the exception it said it fell back from
        # is the best lead there is
        handled = [v for f in scanner.handled if (v := _judge(f, rs, scanner.conditions, owners))]
        trace.chosen = min(handled, key=lambda v: v.failure.index) if handled else None
    if trace.chosen is not None:
        return _diagnosis(trace.chosen, owners)
    if said or wrappers:
        return _wrapper_diagnosis(said, wrappers, rs.tables)
    return _nothing_found(result, status, owners)


def _nothing_found(result: dict, status: str, owners: Owners) -> Diagnosis:
    """No failure candidate explains the phase: unknown when it failed, else none."""
    if status:
        err = str(result.get("error") or f"phase status {status}")
        hint = "The phase failed but its log shows no recognisable error."
        sig = normalise(err, owners.tables)
        suspects = _suspects(None, owners, err)
        return Diagnosis("unknown", None, None, [err], None, hint, "low", sig, err, suspects)
    return Diagnosis("none", None, None, [], None, "No failure in the log.", "high", "", None)


def _choose(verdicts: list[_Verdict], result: dict, tables: Tables) -> _Verdict | None:
    """The verdict that explains the phase: the recorded error's, else the best classified one
    (named exception before cut traceback, hang ranking, lowest layer, earliest), else the
    first unexplained one."""
    err = result.get("error")
    # a phase's own exception anchors the diagnosis; a root cause the phase guessed from the
    # server's output ("error_from_log") does not: the whole log decides then
    if not result.get("error_from_log"):
        anchor = _anchor(verdicts, err if isinstance(err, str) else "")
        if anchor is not None:
            return anchor
    known = [v for v in verdicts if v.component in COMPONENT_LAYER]
    if known:
        return min(
            known,
            key=lambda v: (
                _is_cut(v),
                _dump_rank(v, tables),
                COMPONENT_LAYER[v.component],
                v.failure.index,
                v.failure.line_rule is not None,
            ),
        )
    if verdicts:
        return min(
            verdicts, key=lambda v: (_is_cut(v), v.failure.line_rule is not None, v.failure.index)
        )
    return None


def _wrapper_diagnosis(said: list[Rule], wrappers: list[str], tables: Tables) -> Diagnosis:
    """Nothing but wrappers: what a wrapper(X) row says it means, else unknown."""
    signature_ = normalise(wrappers[0], tables)
    if said:
        w = said[0]
        comp = w.fallback or "unknown"
        return Diagnosis(
            comp,
            COMPONENT_LAYER.get(comp),
            w.id,
            wrappers[:3],
            None,
            w.hint,
            "low",
            signature_,
            wrappers[0],
        )
    hint = (
        "Only wrapper errors are in the log; the root cause was not captured "
        "(look at the child processes' output, rerun with VLLM_LOGGING_LEVEL=DEBUG)."
    )
    return Diagnosis(
        "unknown", None, None, wrappers[:3], None, hint, "low", signature_, wrappers[0]
    )


def _is_cut(v: _Verdict) -> bool:
    """A traceback without its exception line, or a stack dump: weaker than a named exception."""
    return v.exc is not None and not v.exc.etype


def _dump_rank(v: _Verdict, tables: Tables) -> int:
    """Among stack dumps (a hang), owners.md's hang ranking: the process that waited in a
    multi-chip component's code is the cause, processes waiting in vLLM's usually wait for it."""
    if v.exc is None or not v.exc.message.startswith("stack dump"):
        return 0
    return tables.hang_rank.get(v.component, tables.hang_rank.get("-", 0))


def _anchor(verdicts: list[_Verdict], error: str) -> _Verdict | None:
    """The phase's own recorded exception, when it names the failure (not a wrapper, not a guess).

    It outranks lines in the log that merely look alarming (a plugin printing a "non-fatal" out
    of memory warning before raising ImportError failed with the ImportError). When the log holds
    the same exception with its frames, that copy is used (the frames attribute it).
    """
    recorded = [
        v
        for v in verdicts
        if v.failure.stream == RESULT_STREAM and v.exc is not None and v.exc.etype
    ]
    if not recorded:
        return None
    # the exception the phase named in its `error` field (its traceback may end in our own
    # wrapper, e.g. the serve script's "server exited" while the error names vLLM's refusal)
    first = error.strip().splitlines()[0] if error.strip() else ""
    named = [v for v in recorded if first and v.exc.message and v.exc.message[:80] in first]
    rec = named[-1] if named else recorded[0]
    head = f"{rec.exc.etype.rsplit('.', 1)[-1]}: {rec.exc.message}"[:200]
    same = [
        v
        for v in verdicts
        if v.failure.stream != RESULT_STREAM
        and v.exc is not None
        and v.exc.etype
        and f"{v.exc.etype.rsplit('.', 1)[-1]}: {v.exc.message}"[:200] == head
    ]
    for v in same + [rec]:
        if v.component in COMPONENT_LAYER:
            return v
    return None


def _named_in(text: str, owners: Owners) -> list[tuple[str, str, str]]:
    """Components the failure's text names (a source path, a name, an installed plugin's
    module), nearest the exception's own line first: (component, line, why)."""
    t = owners.tables
    found: list[tuple[int, int, str, str, str]] = []
    lines = text.splitlines()
    for n, line in enumerate(lines):
        for rank, (pat, comp) in enumerate([*t.owner_paths, *t.owner_names]):
            if pat.search(line):
                found.append((n, rank, comp, line, "the failure's text names it"))
        for module, comp in owners.plugin_modules.items():
            if module in line and re.search(rf"\b{re.escape(module)}\b", line):
                why = "the text names a module of an installed plugin"
                found.append((n, 99, comp, line, why))
    return [(comp, line, why) for _, _, comp, line, why in sorted(found)]


def _suspects(v: _Verdict | None, owners: Owners, text: str) -> list[dict]:
    """Up to three ranked suspects of a failure no rule decides: the owner of the deepest frame
    with one, a component the text names, the layer the exception type suggests."""
    out: list[dict] = []

    def add(comp: str | None, evidence: str, why: str) -> None:
        if comp and comp in COMPONENT_LAYER and all(s["component"] != comp for s in out):
            out.append({"component": comp, "evidence": evidence.strip()[:300], "why": why})

    frames = (
        (v.exc.frames or v.exc.chain_frames)
        if v and v.exc
        else (v.failure.orphan_frames if v else [])
    )
    for fr in reversed(frames):
        comp, how = owners.frame(fr)
        if comp:
            add(comp, fr.text, f"owner of the deepest owned frame ({how})")
            break
    for comp, line, why in _named_in(text, owners):
        add(comp, line, why)
    for pattern, components, why in owners.tables.symptoms:
        if (hit := pattern.search(text)) is not None:
            for comp in components:
                add(comp, hit.group(0), why)
            break
    etype = v.exc.etype.rsplit(".", 1)[-1] if v and v.exc and v.exc.etype else ""
    for pat, comp, why in owners.tables.suspect_types if etype else ():
        if pat.fullmatch(etype):
            add(comp, v.exc.line if v and v.exc else etype, f"{etype}: {why}")
            break
    return out[:3]


def _diagnosis(v: _Verdict, owners: Owners) -> Diagnosis:
    tables = owners.tables
    exc = v.exc
    if exc is not None:
        frames = exc.frames or exc.chain_frames
        text = "\n".join([exc.detail, exc.line])
        # the message with up to two continuation lines (pydantic puts the reason below)
        message = (
            " ".join(x.strip() for x in exc.detail.splitlines()[:3] if x.strip()) or exc.message
        )
        error = f"{exc.etype}: {message}" if exc.etype else message
        sig_head = f"{exc.etype.rsplit('.', 1)[-1]}: {exc.message}" if exc.etype else exc.message
    else:
        frames, text = v.failure.orphan_frames, "\n".join(v.evidence)
        error = sig_head = v.failure.line
    op = culprit_op(frames, text, v.component)
    comp = v.component
    if v.rule is None or comp == "unknown":
        hint = v.rule.hint if v.rule else "No rule explains this failure; read the evidence lines."
        hint = hint.replace("{owner}", "an unidentified component")
    else:
        hint = v.rule.hint.replace("{owner}", comp)
    hint = hint.replace("{op}", op or "the failing op")
    evidence: list[str] = []
    for line in v.evidence:
        if line and line not in evidence:
            evidence.append(line)
    return Diagnosis(
        comp,
        COMPONENT_LAYER.get(comp),
        v.rule.id if v.rule else None,
        evidence[:6],
        op,
        hint,
        v.confidence if comp != "unknown" else "low",
        signature(sig_head, frames, tables),
        error,
        _suspects(v, owners, "\n".join([text, *v.evidence])) if comp == "unknown" else [],
    )
