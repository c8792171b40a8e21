"""How a log line is written: vLLM's and collectors' prefixes, hard wraps, and the shapes of
traceback, frame, diagnostic and native-failure lines: patterns, and what one line or match says
(its form, its file, its type). The reading, line after line, is logread.py."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# A colour code whose ESC a paste dropped: vLLM colours its process tags
# ("\x1b[1;36m(Worker_TP0 pid=7)\x1b[0;0m "), and issue threads show "[1;36m(Worker_TP0 pid=7)[0;0m ".
BARE_SGR = re.compile(r"(?<!\x1b)\[\d{1,3}(?:;\d{1,3})*m")


def strip_ansi(text: str) -> str:
    """A log line without terminal colour and cursor codes (vLLM colours its prefixes)."""
    return ANSI.sub("", text) if "\x1b" in text else text


# Possessive quantifiers (`++`, `*+`) where backtracking can never help (the character class
# excludes what follows): the same matches, fewer steps on each of a big log's lines.
PREFIX = re.compile(
    r"(?:[\w.]++-\d++\s++\|\s)?"  # docker compose "vllm-1  | "
    r"(?:\((?P<proc>[A-Za-z_][\w.-]*+)(?: (?:rank|tp|dp)=\d++)*+(?: pid=(?P<pid>\d++))?(?:, ip=[\w.:-]++)?\)(?:\s++(?=(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s|[IWEF]\d{4}\s|\[)|\s?))?"  # (Worker_TP1 pid=123), Ray's (RayWorkerWrapper pid=1, ip=10.0.0.1)
    r"(?:(?P<lvl>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s++\d\d-\d\d\s++\d\d:\d\d:\d\d(?:\.\d++)?\s++\[?(?P<src>[^\]\s]*+)\]\s?"
    r"|\[?(?P<glog>[IWEF])\d{4}\s++\d\d:\d\d:\d\d\.\d++\s++(?:\d++\s++)?(?P<gsrc>[^\]\s]++)\]\s?"
    r"|\[(?P<blvl>DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\s)?"
)
# A prefix starts with "(" (process tag), "[" or a level letter, or is docker compose's
# "name-1  | ": a line that starts otherwise and has no "|" has none (the regex is skipped).
PREFIX_FIRST = frozenset("([DIWECF")
NO_PREFIX = PREFIX.match("")
# The same as PREFIX with an INFO/DEBUG level, and nothing else: when it matches, PREFIX would
# call the line quiet too (a fast path for the bulk of a big log, never a different answer).
QUIET_FAST = re.compile(
    r"(?:[\w.]++-\d++\s++\|\s)?"
    r"(?:\([A-Za-z_][\w.-]*+(?: (?:rank|tp|dp)=\d++)*+(?: pid=\d++)?(?:, ip=[\w.:-]++)?\)(?:\s++(?=INFO|DEBUG)|\s?))?"
    r"(?:INFO|DEBUG)\s++\d\d-\d\d\s++\d\d:\d\d:\d\d(?:\.\d++)?\s++\[?[^\]\s]*+\]"
)
# What a log collector or a paste puts in front of every line, before the program's own
# prefix: `docker logs -t` / `kubectl logs --timestamps` times, journald's "Nov 30 10:00:00 host
# unit[pid]: ", kubectl's "[pod/name/container] " and a Markdown quote ("> "). Looked for in the
# first lines of a log (outer_prefix): when most carry one, it is taken off every line that has
# it. (A launcher's rank tag, torchrun's "[rank0]:", is a process tag, LAUNCHER_TAG: it marks
# some lines, not the log.)
_OUTER = re.compile(
    r"(?:[ \t]*(?:\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s"
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.@/-]+(?:\[\d+\])?: "
    r"|\[pod/[^\]\s]+\] "
    r"|>(?: |$)))*"  # an indented paste: the indentation goes with the prefix
)
_OUTER_HEAD = 64  # lines looked at


def outer_prefix(lines: Iterator[str]) -> tuple[Iterator[str], re.Pattern[str] | None, str]:
    """The log's lines (none consumed; structured records, colour codes that lost their ESC, a
    rendered page's no-break spaces and hard wraps undone), the outer prefix most of its first
    lines carry (or None), and the indentation all of them share (a pasted excerpt indented as
    a whole)."""
    head = list(itertools.islice(lines, _OUTER_HEAD))
    out: Iterator[str] = itertools.chain(head, lines)
    if (
        sum(1 for ln in head if _is_record(_unouter(ln))) * 2
        >= sum(1 for ln in head if ln.strip())
        > 0
    ):
        out, head = _relook(x for ln in out for x in record_lines(ln))
    if sum(1 for ln in head if BARE_SGR.search(ln)) >= 2:  # colours pasted without their ESC
        out, head = _relook(BARE_SGR.sub("", ln) for ln in out)
    if any("\xa0" in ln for ln in head):  # copied from a rendered page: no-break spaces
        out, head = _relook(ln.replace("\xa0", " ") for ln in out)
    width = _wrap_width([ANSI.sub("", ln).rstrip("\r\n") for ln in head])
    if width:  # the prefix is looked for on whole lines: a wrap's second part has none
        out, head = _relook(_unwrap(out, width))
    body = [ANSI.sub("", ln).rstrip("\r\n") for ln in head]
    body = [ln[LAUNCHER_TAG.match(ln).end() :] for ln in body]
    body = [ln for ln in body if ln.strip()]
    outer = None
    if body and sum(1 for ln in body if _OUTER.match(ln).end()) * 2 >= len(body):
        outer = _OUTER
        body = [ln[_OUTER.match(ln).end() :] for ln in body]
        body = [ln for ln in body if ln.strip()]
    indent = os.path.commonprefix([ln[: len(ln) - len(ln.lstrip())] for ln in body]) if body else ""
    return out, outer, indent


def _relook(lines: Iterator[str]) -> tuple[Iterator[str], list[str]]:
    """The lines again (none consumed) and their first ones, after a change to every line."""
    head = list(itertools.islice(lines, _OUTER_HEAD))
    return itertools.chain(head, lines), head


# Structured logs: one JSON object a record (python-json-logger through vLLM's
# VLLM_LOGGING_CONFIG_PATH, Docker's json-file driver's {"log": …, "stream": …}, ECS, klog). The
# record's text fields are its lines (a traceback is one field with newlines), and so is any
# field whose key names an error ("err", "exc", "stack", "reason"…), or the text fields of an
# object under such a key (ECS's "error": {"message", "stack_trace"}). Its level goes in front of
# each line as "[ERROR] ", a prefix the reader knows (an INFO record's traceback stays quiet).
RECORD_TEXT_KEYS = frozenset({"message", "msg", "log", "event", "text"})
RECORD_ERROR_KEY = re.compile(r"err|exc|stack|trace|reason|detail|cause", re.IGNORECASE)
RECORD_LEVEL_KEYS = frozenset({"levelname", "level", "severity", "loglevel"})
_RECORD_LEVELS = {"WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR"}


def _is_record(line: str) -> bool:
    s = line.strip()
    return s[:2] == '{"' and s[-1:] == "}"


def _record_key(key: str) -> str:
    """A record's key as the tables name it: lower case, its last dotted part ("log.level")."""
    return key.lower().rsplit(".", 1)[-1]


def _record_texts(rec: dict, depth: int = 0) -> Iterator[str]:
    """The text a record (or an error object inside it) holds, in its order."""
    for k, v in rec.items():
        key = _record_key(k)
        error = RECORD_ERROR_KEY.search(key) is not None
        if isinstance(v, str) and (key in RECORD_TEXT_KEYS or error):
            yield v
        elif isinstance(v, dict) and error and depth < 2:
            yield from _record_texts(v, depth + 1)


def _unouter(line: str) -> str:
    return line[_OUTER.match(line).end() :]


def record_lines(line: str) -> list[str]:
    """The lines a structured log record holds, each behind the collector's prefix the record
    had (`kubectl logs --timestamps`); the line itself when it is no record."""
    body = _unouter(line)
    if not _is_record(body):
        return [line]
    try:
        rec = json.loads(body)  # an object: _is_record saw '{"' … '}'
    except ValueError:
        return [line]
    out = [x for text in _record_texts(rec) for x in text.splitlines()]
    if not out:
        return [line]
    level = next(
        (str(v).upper() for k, v in rec.items() if _record_key(k) in RECORD_LEVEL_KEYS), ""
    )
    level = _RECORD_LEVELS.get(level, level)
    if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        out = [f"[{level}] {x}" for x in out]
    prefix = line[: len(line) - len(body)]
    return [prefix + x for x in out] if prefix else out


# The widths terminals, pagers and CI consoles wrap at by default or by habit
TERMINAL_WIDTHS = frozenset({80, 100, 120, 132, 160, 200})


def _wrap_width(head: list[str]) -> int | None:
    """The width a terminal or a pager hard-wrapped the log at: a fifth of the lines (two at
    least) exactly that long, none longer, and most of them going on in a line that is no line
    of its own (no log prefix, no indent, not a record starting as the line did: a wrap cuts
    mid-text). Several workers printing the same longest line are followed by their own prefixed
    lines. Lines a console draws or pads to its width (rich's box borders, its logging handler's
    records ending in spaces) are as wide as a wrap without being one: left out."""
    lines = [ln for ln in head if ln.strip() and not _boxed(ln) and not ln.endswith("  ")]
    lengths = [len(ln) for ln in lines]
    if not lengths:
        return None
    widest = max(lengths)
    # at a terminal's usual width one line going on is enough; at any other, many must be
    least = 1 if widest in TERMINAL_WIDTHS else max(2, len(lengths) // 5)
    if widest < 60 or lengths.count(widest) < least:
        return None
    goes_on = [_goes_on(ln, nxt) for ln, nxt in zip(lines, lines[1:]) if len(ln) == widest]
    # two such lines must both go on; more, two thirds of them (a cut at a space looks indented)
    need = len(goes_on) if len(goes_on) < 3 else (len(goes_on) * 2 + 2) // 3
    return widest if goes_on and sum(goes_on) >= need else None


def _goes_on(line: str, nxt: str) -> bool:
    """Can ``nxt`` be the rest of ``line`` cut by a wrap? Not when it is a line of its own."""
    return (
        (not nxt[:1].isspace() or (nxt[:1] == " " and not nxt[1:2].isspace()))  # cut at a space
        and not PREFIX.match(nxt).end()
        and not LAUNCHER_TAG.match(nxt).end()  # another rank's line
        and not IDLE_HEAD.match(nxt)  # a traceback's header or frame
        and not NEXT_EXC.match(nxt)  # an exception
        and nxt[:4] != line[:4]  # a record of the same form ("[12/07/26 …]")
    )


def _boxed(line: str) -> bool:
    """The line ends in a box-drawing character (a border of rich's box)."""
    end = line.rstrip()[-1:]
    return "\u2500" <= end <= "\u257f" if end else False


def _unwrap(lines: Iterator[str], width: int) -> Iterator[str]:
    """Lines of a hard-wrapped log joined back: a line exactly `width` long goes on in the next
    (a box's border line never: it is as wide as the box), unless the next is a line of its own."""
    part = last = ""
    for line in lines:
        text = line.rstrip("\r\n")
        if part and not _goes_on(last, text):
            yield part
            part = ""
        last = text
        if len(ANSI.sub("", text)) == width and not _boxed(text):
            part += text
            continue
        yield part + line
        part = ""
    if part:
        yield part


# Python's exception-group traceback draws a gutter: "  + Exception Group Traceback …", "  | "
# before each line of the group and of each sub-exception, "+-+---- 1 ----" between them.
GROUP_START = re.compile(r"\s*\+ Exception Group Traceback")
GROUP_GUTTER = re.compile(
    r"\s*(?:\| ?|\+-[-+]*(?: (?:\d+|\.\.\.) -+)?$|\+ (?=Exception Group Traceback))"
)
# rich's traceback (rich.traceback.install(), typer and other CLIs): a box drawn around it,
# "╭─── Traceback (most recent call last) ───╮", each frame "│ /path/file.py:259 in main │",
# its source lines "│   258 │ code │" with "❱" at the line that raised, a locals panel nested
# inside; the exception follows the box. A path too long for the box is folded onto the next line.
RICH_FRAME = re.compile(r"(?P<path>\S+):(?P<ln>\d+) in (?P<fn>\S+)$")
# a source line: its number, then the code after rich's indent guides ("│")
RICH_CODE = re.compile(r"(?P<mark>❱)?\s*\d+ (?P<code>.*)$")
QUIET_LEVELS = frozenset({"INFO", "DEBUG", "I"})
WARN_LEVELS = frozenset({"WARNING", "WARN", "W"})
FRAME = re.compile(r'\s*File "(?P<path>[^"]+)"(?:, line (?P<ln>\d+))?(?:,? in (?P<fn>\S.*))?\s*$')
# A source location on a line of its own ("src/flag_gems/fused/x.py:308:56:", Dynamo's
# "vllm_fl/dispatch/policy.py:") is a frame: compiler diagnostics and pasted stacks print them.
LOCATION = re.compile(r"\s*(?P<path>[^\s:：\"'`]*/[^\s:：\"'`]+\.py)(?:(?::\d+){1,2}:?|:)\s*$")
# A source file a report points at outside a traceback: a call chain written by hand
# ("→ flag_gems/ops/__init__.py:52 …"), a labelled or quoted file ("File: `runtime/…/x.py`",
# "文件：…"). Only these marked forms: a path merely printed on a line (a command, a compile step,
# Dynamo's "function: 'forward' (/…/llama.py:345)", pytest's progress) names no culprit; nor does a
# web address ("github.com/…/x.py").
NAMED_LOCATION = re.compile(
    r"(?:(?:→|->|=>)\s*`?|`|(?:\b[Ff]ile|文件)\s*[:：]\s*`?)"
    r"(?P<path>(?![\w-]+\.(?:com|org|net|io|ai|cn|dev)/)/?(?:[\w.-]+/)+[\w-]+\.(?:py|cc|cpp|cu|c|h|hpp))"
    r"(?::\d+|(?:::[\w.\[\]-]+)+)?(?=$|[\s`'\"),，）])"  # a line, or a function ("x.py::f")
)
NAMED_HINTS = (
    "`",
    "→",
    "->",
    "=>",
    "ile",
    "文件",
)  # a marker's literal: a line without one is skipped
# A line that is an error report of its own: a compiler diagnostic ("file:3:7: error: …", MLIR's
# "error: failed to legalize …") or a tool's "error: …" line.
# MLIR writes its location as loc("file.py":26:0) or loc(callsite("callee.py":3:4 at "caller.py":…)).
DIAG = re.compile(
    r"(?:(?P<loc>[^\s:\"'`]+:\d+:\d+):\s*"
    r"|loc\((?:callsite\()?\"(?P<mloc>[^\"]+)\":\d+:\d+.*?\):\s*)?error: (?P<msg>\S.*)"
)
BLOCK_EXC = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?::(?:\s(?P<msg>.*))?)?$")
BARE_EXC = re.compile(
    r"(?<![\w.])(?P<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Fault))(?::\s+(?P<msg>\S.*)|$)"
    # a module-qualified exception named inside a sentence ("… raises torch.AcceleratorError，…")
    r"|(?<![\w.])(?P<qtype>(?:[a-z_]\w*\.)+[A-Z]\w*(?:Error|Exception))(?![\w.:(])"
)
CONNECTOR = re.compile(
    r"(?:The above exception was the direct cause of the following exception"
    r"|During handling of the above exception, another exception occurred):"
)
# a traceback; a faulthandler dump's thread; a py-spy dump's thread (`py-spy dump --pid N`, what
# vLLM's docs ask for at a hang): the two dumps list the most recent call first
TB_START = re.compile(
    r"Traceback \(most recent call last\):|╭─+ Traceback \(most recent call last\) ─+╮|(?:Current thread|Thread) 0x[0-9a-f]+ .*\(most recent call first\):"
    r'|Thread (?:0x[0-9a-fA-F]+|\d+) \((?:active|idle)[^)]*\)(?:: ".*")?$'
    # pytest: a conftest that failed to import prints its traceback in pytest's short form
    r"|ImportError while (?:loading conftest|importing test module) "
    # IPython / Jupyter: the exception's type, then the header without its colon
    r"|[A-Za-z_][\w.]* *Traceback \(most recent call last\)$"
)
# IPython's (Jupyter's) frames: "File /path/x.py:243, in LLM.__init__(self, model)" (IPython 8),
# "/path/x.py in __init__(self, model)" (IPython 7, Colab), a cell ("Cell In[3], line 1",
# "<ipython-input-3-…> in <module>"); the line that ran is marked "---> 243 code". The header is
# right-aligned: a long type name leaves no space before it. `%xmode Plain` drops the comma.
IPYTHON_FRAME = re.compile(
    r"\s*(?:File (?P<path>[^\s\"]+\.py):(?P<ln>\d+),? in \S"
    r"|(?P<path7>[^\s\"]+\.py) in [\w<>.]+\("
    r"|(?P<cell>Cell In ?\[\d*\], line \d+|<ipython-input-[^>]*>(?= in \S)))"
)
IPYTHON_CODE = re.compile(r"-+> +\d+ ")
# pytest's short and long traceback forms: a frame is "path/to/file.py:26: in <module>" (short)
# or "path/to/file.py:26: " (long: LOCATION); the exception's lines start with "E   "; the long
# form ends a failure with "path/to/file.py:26: AttributeError" (also --tb=line's one line
# "path/file.py:26: AttributeError: message"); "_ _ _ _" separates its frames, ">" marks the
# line that raised.
PYTEST_FRAME = re.compile(r"\s*(?P<path>[^\s:\"'`]+\.py):(?P<ln>\d+): in (?P<fn>\S+)\s*$")
PYTEST_E = re.compile(r"E {2,}(?P<rest>\S.*)$")
PYTEST_LOC_EXC = re.compile(
    r"(?P<path>[^\s:\"'`]+\.py):(?P<ln>\d+): (?P<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*)(?:: (?P<msg>.*))?$"
)
PYTEST_MARK = re.compile(r"(?:_ )+_\s*$|>(?: |$)")
# an exception line of its own: it ends the message before it rather than continuing it
NEXT_EXC = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception): \S")
PYSPY_FRAME = re.compile(r"\s+(?P<fn>[\w<>.]+) \((?P<path>[^()\s]+\.py):(?P<ln>\d+)\)\s*$")
# Native failures have no Python exception line; they get a type of their own so the rules can
# name them: FatalPythonError (faulthandler), FatalSignal (a signal killed the process),
# NativeAssertionError (a C/C++ `Assertion … failed`, LLVM `UNREACHABLE`), CppException
# (`terminate called after throwing an instance of 'T'`), DeviceError (a device runtime's error
# code: its prefixes are a table of references/owners.md), CompilerError (LLVM, MLIR, a backend
# tool), PtxasError (ptxas refused a kernel's PTX).
_NATIVE_FORMS = (
    r"Fatal Python error: (?P<fatal>.+)"
    r"|(?P<assert>.*?\S+:\d+: .*\bAssertion [`'\u2018].*[`'\u2019] failed\.?.*)"
    r"|(?P<unreach>.*\bUNREACHABLE executed at \S+:\d+.*)"
    # Python's faulthandler-like "*** SIGSEGV received by PID …", torchrun's summary of a child
    # killed by a signal ("traceback : Signal 11 (SIGSEGV) received by PID 1234")
    r"|(?:\*\*\* |(?:traceback\s*:\s*)?Signal \d+ \()(?P<sig>SIG[A-Z]+)\)? ?.*received by PID.*"
    r"|(?:.*\s)?(?P<sig2>Segmentation fault|Bus error|Illegal instruction|Aborted|Floating point exception)"
    r"(?: \(core dumped\))?"
    r"|terminate called after throwing an instance of '(?P<cpp>[^']+)'.*"
    r"|!+ (?P<segv>Segfault) encountered !+"
    # gdb's stop at a signal; glibc's heap-corruption and stack-protector aborts
    r"|(?:Thread \d+ \"[^\"]*\" )?(?:\[[^\]]*\] )?received signal (?P<gdb>SIG[A-Z]+).*"
    r"|(?P<heap>(?:double free or corruption|free\(\): |malloc\(\): |realloc\(\): |corrupted size vs\. prev_size"
    r"|munmap_chunk\(\): |\*\*\* stack smashing detected).*)"
    # signal handlers that print a native backtrace after them: OpenMPI's (also NCCL tests'),
    # UCX's "[host:pid:tid] Caught signal 11 (Segmentation fault: …)", absl's
    r"|(?:\[[^\]\s]+\] )?\*\*\* (?P<mpi>Process received signal) \*\*\*"
    r"|\[[^\]\s]+\] Caught signal \d+ \((?P<ucx>[^:)]+)[:)].*"
    r"|\*\*\* (?P<absl>SIG[A-Z]+) received at time=.*"
    # glog's fatal check (the F-level header, with the source file, is the line's prefix), also
    # after a vendor library's tags ("[CNNL] [Error]:[cnnlMatMul] Check failed: …")
    r"|(?P<check>(?=.*?\[(?:Error|ERROR|Fatal|FATAL)\])(?:\[[^\]\s]++\]:?+\s*+)++Check failed: .+"
    r"|Check failed: .+)"
    # a C/C++ assertion whose location was printed (or wrapped) on the lines before it
    r"|(?P<bassert>(?:.*\s)?Assertion [`'\u2018].*[`'\u2019] failed\.?)"
    # compiler output: LLVM's fatal error and crash banner, MLIR's failed pass manager,
    # a compiler tool run as a subprocess that failed (Triton's backends run llc, lld…). ptxas's
    # fatal line is a failure of its own type (PtxasError), not the compiler's: ptxas rejects the
    # PTX a kernel's source asked for as often as the compiler's own output
    r"|(?P<llvm>LLVM ERROR: .+)"
    r"|(?P<llvmcrash>PLEASE submit a bug report to \S*llvm\S*.*)"
    r"|(?P<pm>(?:.*\s)?PassManager::run failed.*)"
    r"|(?P<tool>.*?`?\b(?:llc|ld\.lld|lld|mlir-opt|mlir-translate|triton-opt)`?"
    r" failed with (?:error|exit|return) code.*)"
    r"|(?P<ptxas>ptxas fatal\s*: .+)"
)
_NATIVE_FORM_LITERALS = (
    "fatal python error",
    "assertion",
    "unreachable executed",
    "received by pid",
    "segmentation fault",
    "segfault",
    "bus error",
    "illegal instruction",
    "aborted",
    "floating point exception",
    "terminate called",
    "process received signal",
    "received signal sig",
    "double free",
    "(): ",
    "corrupted size",
    "*** stack smashing",
    "caught signal",
    "received at time",
    "check failed",
    "llvm error",
    "please submit a bug report",
    "passmanager::run failed",
    "failed with ",
    "ptxas fatal",
)  # lower case, one occurs in each native form
_NATIVE_FORM_GATE = (
    r"Fatal Python|ssertion|UNREACHABLE|SIG[A-Z]|Segmentation|Segfault|Bus error"
    r"|Illegal instr|Aborted|Floating point exc|terminate called"
    r"|double free|\(\): |corrupted size|\*\*\* stack smashing"
    r"|Process received signal|Caught signal|Check failed|LLVM ERROR|PLEASE submit|PassManager::run"
    r"|failed with (?:error|exit|return) code|ptxas fatal"
)
# The process tag OpenMPI's handler puts before each of its lines ("[host:1234] "): lines of one
# process are read together, apart from the other ranks'. (UCX tags only its first line.)
RANK_TAG = re.compile(r"\[(?P<tag>[\w.-]+:\d+)\] ")
# A launcher's tag before each line a rank writes: torchrun's "[rank0]: " / "[default3]:", OpenMPI's
# `mpirun --tag-output` "[1,0]<stderr>:", Slurm's `srun --label` "0: ". Often on the workers' lines
# only, between the launcher's untagged ones: each rank's lines are its own process's, whatever
# share of the log carries the tag (the tag names the stream).
LAUNCHER_TAG = re.compile(
    r"(?:(?P<tag>\[(?:rank|default)\d+\]|\[\d+,\d+\]<std(?:out|err)>|\d{1,5}(?=: )):\s?)*"
)
LAUNCHER_TAG_FIRST = frozenset("[0123456789")  # a tagged line starts with one of these
# The lines a signal handler or a compiler crash prints after its first line: the signal, the
# address, the backtrace's header, LLVM's "Stack dump:" and the program's arguments.
NATIVE_CONT = re.compile(
    r"(?:\[[^\]\s]+\] )?(?:Signal(?: code)?:|Failing at address:|Associated errno:"
    r"|\*\*\* End of error message|\*\*\* Check failure stack trace|=+ backtrace|Stack dump:|\d+\.\s+(?:Program arguments:|Running pass)"
    r"|PC: @|@ +0x)"
)
# A frame of a native backtrace: glibc/OpenMPI "[ 3] /lib/libnccl.so.2(+0x12)[0x7f…]", UCX
# " 3  /lib/libnccl.so(+0x12) [0x7f…]", LLVM/gdb "#4 0x7f… fn (/lib/x.so+0x12)", "#6 0x7f… fn
# /src/Dialect.cpp:1317:15", "#3 0x7f… in fn () from /lib/libnccl.so.2". The frame's file is its
# shared library, program or source file (NATIVE_WHERE): owners are decided on that.
NATIVE_FRAME = re.compile(
    r"\s*(?:\[[^\]\s]+\] )?(?:\[\s*\d+\]|#\s*\d+|\d+)\s+(?:0x[0-9a-fA-F]+\s+)?(?:in\s+)?\S"
)
# A frame of absl's / glog's stack trace ("@     0x7f…  1888  /…/libtriton.so", "@ 0x7f… flagcxCommInit"):
# after the address an optional frame size, then where it was (a file) or the function's symbol.
SIGNAL_HANDLER_FRAME = re.compile(
    r"\s*@\s+0x[0-9a-fA-F]+\s+(?:\d+\s+)?(?:\(unknown\)\s+)?(?P<rest>[^\s(].*)$"
)
NATIVE_SYMBOL = re.compile(r"(?P<p>[A-Za-z_][\w:~]*)")
NATIVE_WHERE = (
    re.compile(r"(?P<p>[^\s()]+\.(?:cpp|cc|cxx|c|h|hpp|cu|inc)):\d+"),
    re.compile(r"(?P<p>/?[\w.+/-]*\blib[\w.+-]*\.so(?:\.\d+)*)(?![\w.])"),
    re.compile(r"\((?P<p>[^()\s+]+)\+0x"),
)
# Code every native backtrace passes through on its way to the crash (the C library, the signal
# handler that prints the backtrace, unwinders, C++ throw machinery): never the owner.
NATIVE_RUNTIME = (
    r"(?:^|/)(?:libc|libpthread|libdl|librt|libm|libgcc_s|ld-linux[\w-]*|libucs|libunwind"
    r"|libbacktrace|libSegFault|libstdc\+\+|libc\+\+abi)(?:[.-][^/]*)?$|(?:^|/)Signals\.cpp$"
)


def native_patterns(
    device_prefixes: tuple[str, ...],
) -> tuple[re.Pattern[str], tuple[str, ...], re.Pattern[str]]:
    """(the native failure line, full match; lower-case literals one of which is in each; a
    quick case-sensitive search that every such line passes) for these device code prefixes."""
    codes = "|".join(re.escape(p) for p in device_prefixes)
    native = _NATIVE_FORMS
    gate = _NATIVE_FORM_GATE
    if codes:
        native += rf"|.*?(?<![A-Za-z])(?P<dev>(?:{codes})Error[A-Z]\w*).*"
        gate += "|" + "|".join(re.escape(f"{p}Error") for p in device_prefixes)
    else:
        native += r"|(?P<dev>(?!))"
    literals = _NATIVE_FORM_LITERALS + tuple(f"{p}error".lower() for p in device_prefixes)
    return re.compile(native), literals, re.compile(gate)


DOTTED_EXC = re.compile(r"(?P<type>(?:[a-z_]\w*\.)+[A-Z]\w*): (?P<msg>\S.*)")
# Can this line start anything in a process with nothing open? (a necessary condition, built from
# the very patterns Scanner._boundary and _in_idle use; lines that fail it skip the state
# machine; an exception named anywhere and native failures are checked separately)
IDLE_HEAD = re.compile(
    r"\s*(?:"
    + "|".join(
        re.sub(r"\(\?P<\w+>", "(?:", p.pattern)
        for p in (
            TB_START,
            CONNECTOR,
            FRAME,
            LOCATION,
            DIAG,
            DOTTED_EXC,
            PYSPY_FRAME,
            IPYTHON_FRAME,
        )
    )
    + r"|[^\s:\"'`]+\.py:\d+: "  # pytest's frames and its line form (PYTEST_FRAME, PYTEST_LOC_EXC)
    + r"|from user code:|[\^~]|\.\.\.)"
)
STDLIB = re.compile(r"^<|/lib/python3\.\d+/(?!site-packages|dist-packages)|" + NATIVE_RUNTIME)


@dataclass
class RichBox:
    """Where a process is in rich's traceback box."""

    indent: str = ""  # the box's own indentation (rich's logging handler indents it)
    fold: str = ""  # a path folded at the box's edge, so far
    closed: bool = False  # the box just ended: its exception line follows, indented as the box


def unbox(msg: str, box: RichBox | None) -> tuple[str | None, RichBox | None]:
    """A line of rich's traceback box as Python's traceback prints it: (the line, None when
    the box adds nothing to read; the box's state, None outside one)."""
    s = msg.strip()
    if s.startswith("╭") and TB_START.match(s):  # a box starts (one before it may be cut)
        return msg, RichBox(indent=msg[: len(msg) - len(msg.lstrip())])
    if box is None:
        return msg, None
    if box.closed:  # the exception line under the box
        return msg.removeprefix(box.indent), None
    if s.startswith("╰"):
        box.closed = bool(box.indent)
        return None, (box if box.closed else None)
    if not s.startswith("│"):
        return msg, None  # the box ended without its border (a cut paste)
    inner = s[1:].rstrip().removesuffix("│").strip()
    if not inner or inner[0] in "╭│╰":
        return None, box  # a blank line, a locals panel
    fold = box.fold
    fm = (RICH_FRAME.match(fold + inner) or RICH_FRAME.match(f"{fold} {inner}")) if fold else None
    fm = fm or RICH_FRAME.match(inner)
    if fm:
        box.fold = ""
        return f'  File "{fm["path"]}", line {fm["ln"]}, in {fm["fn"]}', box
    cm = RICH_CODE.match(inner)
    if cm is None and (fold or inner.startswith("/")) and len(fold) < 1000:
        box.fold = fold + inner  # a frame folded at the box's edge (mid-path or at a space)
        return None, box
    box.fold = ""
    if cm and cm["mark"]:  # the line that raised: its frame's code
        return f"    {cm['code'].lstrip(' │').strip()}", box
    return None, box  # the lines around it, a frame rich could not place ("in fn:12")


IDLE_FRAME_FORMS = {PYTEST_FRAME: "pytest traceback", IPYTHON_FRAME: "IPython traceback"}


def frame_path(fm: re.Match[str]) -> str:
    """The file of a frame line matched by one of the frame forms (a notebook cell: its name in
    angle brackets, as Python names code that is in no file: "<Cell In[3], line 1>")."""
    if fm.re is IPYTHON_FRAME:
        cell = fm.group("cell")
        if cell:
            return cell if cell.startswith("<") else f"<{cell}>"
        return fm.group("path") or fm.group("path7")
    return fm.group("path")


def header_form(s: str) -> str:
    if s.startswith("Traceback"):
        return "python traceback"
    if s.endswith("Traceback (most recent call last)"):
        return "IPython traceback"
    if s.startswith("╭"):
        return "rich traceback"
    if s.startswith("ImportError while"):
        return "pytest traceback"
    return "faulthandler dump" if "(most recent call first)" in s else "py-spy dump"


# the reader of each native form (the named groups of logformat.native_patterns)
NATIVE_FORM_NAMES = {
    "fatal": "faulthandler",
    "assert": "C/C++ assertion",
    "unreach": "LLVM unreachable",
    "sig": "signal",
    "sig2": "signal",
    "cpp": "C++ exception",
    "segv": "signal",
    "mpi": "OpenMPI signal handler",
    "ucx": "UCX signal handler",
    "absl": "absl signal handler",
    "gdb": "gdb",
    "heap": "glibc abort",
    "check": "glog check",
    "bassert": "C/C++ assertion",
    "llvm": "LLVM fatal error",
    "llvmcrash": "LLVM crash report",
    "pm": "MLIR pass manager",
    "tool": "compiler tool",
    "ptxas": "ptxas",
    "dev": "device runtime error code",
}


def native_exc(nm: re.Match[str], line: str) -> tuple[str, str]:
    """The type and message a native failure line gets (see logformat.native_patterns)."""
    g = nm.groupdict()
    if g["fatal"]:
        return "FatalPythonError", g["fatal"]
    if g["assert"] or g["unreach"]:
        return "NativeAssertionError", line
    if g["cpp"]:
        return "CppException", g["cpp"]
    if g["check"] or g["bassert"]:
        return "NativeAssertionError", line
    if g["llvm"] or g["llvmcrash"] or g["pm"] or g["tool"]:
        return "CompilerError", line
    if g["mpi"] or g["ucx"] or g["absl"] or g["gdb"]:
        return "FatalSignal", g["ucx"] or g["absl"] or g["gdb"] or g["mpi"]
    if g["heap"]:
        return "FatalSignal", f"SIGABRT ({g['heap']})"
    if g["dev"]:
        return "DeviceError", line
    if g["ptxas"]:
        return "PtxasError", line
    return "FatalSignal", g["sig"] or g["sig2"] or "SIGSEGV"


def unprefix(
    raw: str, outer_match: Callable[[str], re.Match[str]] | None, indent: str
) -> tuple[str, str | None]:
    """A line without what a collector or a paste put in front of it, and the launcher's rank
    tag it carried (before the collector's prefix or after it), if any."""
    raw, tag = _untag(raw, None)
    if outer_match is not None:
        raw = raw[outer_match(raw).end() :]
    if indent and raw.startswith(indent):
        raw = raw[len(indent) :]
    return _untag(raw, tag)


def _untag(raw: str, tag: str | None) -> tuple[str, str | None]:
    """The line without a launcher's rank tag in front, and that tag (else ``tag``)."""
    if raw[:1] in LAUNCHER_TAG_FIRST and (tm := LAUNCHER_TAG.match(raw)).end():
        return raw[tm.end() :], tm.group("tag")
    return raw, tag


def ungutter(msg: str, in_group: bool) -> tuple[str, bool]:
    """An exception group's gutter ("  | ", "+-+---- 1 ----") taken off a message: (the
    message, whether the group goes on)."""
    in_group = in_group or GROUP_START.match(msg) is not None
    gm = GROUP_GUTTER.match(msg) if in_group else None
    return (msg[gm.end() :], True) if gm is not None else (msg, False)
