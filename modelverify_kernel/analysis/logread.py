"""Reading a log: lines in, failure candidates out.

A streaming state machine per process (the process tag of each line): traceback blocks, their
chains, stack dumps, native failures, compiler diagnostics, exception lines in prose, and the
lines a line rule matches. Memory stays bounded however long the log (the first and the last
failures are kept)."""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .knowledge import Rule
from .logformat import (
    ANSI,
    BARE_EXC,
    BLOCK_EXC,
    CONNECTOR,
    DIAG,
    DOTTED_EXC,
    FRAME,
    IDLE_FRAME_FORMS,
    IDLE_HEAD,
    IPYTHON_CODE,
    IPYTHON_FRAME,
    LAUNCHER_TAG,
    LAUNCHER_TAG_FIRST,
    LOCATION,
    NAMED_HINTS,
    NAMED_LOCATION,
    NATIVE_CONT,
    NATIVE_FORM_NAMES,
    NATIVE_FRAME,
    NATIVE_SYMBOL,
    NATIVE_WHERE,
    NEXT_EXC,
    NO_PREFIX,
    PREFIX,
    PREFIX_FIRST,
    PYSPY_FRAME,
    PYTEST_E,
    PYTEST_FRAME,
    PYTEST_LOC_EXC,
    PYTEST_MARK,
    QUIET_FAST,
    QUIET_LEVELS,
    RANK_TAG,
    SIGNAL_HANDLER_FRAME,
    STDLIB,
    TB_START,
    WARN_LEVELS,
    RichBox,
    frame_path,
    header_form,
    native_exc,
    outer_prefix,
    unbox,
    ungutter,
    unprefix,
)
from .prefilter import RuleSet

MAX_LINE = 4000
COND_LINES = 20_000  # conditions of the run (cond: atoms) are printed at start-up: looked for there
_MAX_DETAIL = 6
_MAX_FRAMES = 64
_MAX_CHAIN = 6
_MAX_NAMED = 16  # files a process's text names, the latest kept (and at most per failure)
NAMED_NEAR = 50  # lines: a file its process names this close to a frameless failure is its frame
_HEAD, _TAIL = 32, 256


@dataclass
class Frame:
    path: str
    text: str  # the verbatim frame line, stripped
    code: str = ""  # the source line printed under it, stripped


@dataclass
class Block:
    """One exception of a traceback chain (frames outermost → innermost)."""

    start: int
    src: str | None
    header: bool = False
    reverse: bool = False
    current: bool = False  # faulthandler's "Current thread" (the one that crashed)
    frames: deque = field(default_factory=lambda: deque(maxlen=_MAX_FRAMES))
    exc_type: str | None = None
    message: str = ""
    detail: list[str] = field(default_factory=list)
    line: str = ""
    junk: int = 0
    handled: bool = (
        False  # printed right after "…, falling back to …": the handled exception behind it
    )
    native: bool = False  # a native failure: a native backtrace may follow its line
    form: str = ""  # the form it was read from (--explain says which reader parsed it)

    def ordered_frames(self) -> list[Frame]:
        return list(reversed(self.frames)) if self.reverse else list(self.frames)


@dataclass
class Failure:
    """A failure candidate: an exception chain, or one log line matched by a line rule."""

    index: int
    stream: str
    blocks: list[Block] = field(default_factory=list)
    line_rule: Rule | None = None
    line: str = ""
    orphan_frames: list[Frame] = field(default_factory=list)
    context: str = (
        ""  # the line before a line-rule failure (compiler diagnostics name the file there)
    )
    dump: str = ""  # orphan frames came from a stack dump: "current" or "thread"
    user_frames: list[Frame] = field(default_factory=list)  # Dynamo's "from user code:" frames
    named: list[Frame] = field(default_factory=list)  # files its process names near it (frameless)

    def stand_in_frames(self) -> list[Frame]:
        """What stands for frames where the blocks have none: a stack printed after it, else the
        files its process pointed at."""
        return self.orphan_frames or self.named

    def chain_frames(self) -> list[Frame]:
        """The frames the failure came through (outermost first), Dynamo's user code last."""
        own = [fr for b in self.blocks for fr in b.ordered_frames()]
        return (own or self.stand_in_frames()) + self.user_frames

    @property
    def frameless(self) -> bool:
        return (
            bool(self.blocks) and not self.orphan_frames and not any(b.frames for b in self.blocks)
        )


class Phase(enum.IntEnum):
    """Where a process's output is in a traceback."""

    IDLE = 0  # nothing open
    FRAMES = 1  # in a traceback or stack dump, reading frames
    EXC = 2  # after an exception line, reading its continuation lines
    AFTER = 3  # an exception ended; a chain connector may follow
    CONNECTOR = 4  # after "The above exception was the direct cause…"


@dataclass
class Stream:
    key: str
    phase: Phase = Phase.IDLE
    block: Block | None = None
    chain: list[Block] = field(default_factory=list)
    last_failure: Failure | None = None
    handled: bool = False  # the next block was raised while handling the chain so far
    prev: str = ""  # the previous non-INFO message of this process
    prev_at: int = 0  # its line number
    ctx: deque = field(default_factory=lambda: deque(maxlen=4))  # the messages before prev
    user_code: Failure | None = None  # the failure a "from user code:" section belongs to
    named: deque = field(default_factory=lambda: deque(maxlen=_MAX_NAMED))  # (line, file named)
    frameless: deque = field(default_factory=lambda: deque(maxlen=4))  # its latest such failures


class Scanner:
    """Streams a log line by line with bounded memory and collects failure candidates."""

    def __init__(self, rs: RuleSet) -> None:
        self.rs = rs
        self._gate = rs.gate.search if rs.gate is not None else None
        self.streams: dict[str, Stream] = {}
        self.head: list[Failure] = []
        self.tail: deque[Failure] = deque(maxlen=_TAIL)
        self.handled: list[Failure] = []  # tracebacks behind a "falling back" line (not failures)
        self.index = 0
        self.emitted = 0
        self.warning_line = False
        self.gated = True  # the current line holds a literal some line/benign/native rule needs
        self.active: set[str] = set()  # streams inside a traceback
        self.boring: dict[str, None] = {}
        self.conditions: list[str] = []  # lines that matched a cond: atom (a condition of the run)
        self._handlers = {
            Phase.IDLE: self._in_idle,
            Phase.FRAMES: self._in_frames,
            Phase.EXC: self._in_exc,
            Phase.AFTER: self._in_after,
            Phase.CONNECTOR: self._in_connector,
        }

    # -- input
    def feed_all(self, lines: Iterable[str], stream: str | None = None) -> None:
        """Read lines (all of one stream when ``stream`` is given, else each line's process tag
        decides). The loop body runs once per log line of a 100 MB log: names are bound locally,
        and the bulk of such a log, INFO lines outside any traceback, goes no further than the
        quick prefix match."""
        rs, prefix, boring, no_prefix = self.rs, PREFIX.match, self.boring, NO_PREFIX
        quiet_fast, cond_lits = QUIET_FAST.match, rs.cond_lits
        benign_start = rs.benign_start.match if rs.benign_start is not None else _never
        benign_any = rs.benign_any.search if rs.benign_any is not None else _never
        lines, outer, indent = outer_prefix(iter(lines))
        outer_match = outer.match if outer is not None else None
        tag_first, launcher_tag = LAUNCHER_TAG_FIRST, LAUNCHER_TAG.match
        in_group = False
        box: RichBox | None = None  # inside rich's traceback box
        for raw in lines:
            self.index += 1
            raw = raw[:MAX_LINE]
            if "\x1b" in raw:
                raw = ANSI.sub("", raw)
            tag = None
            if outer_match is not None or indent or raw[:1] in tag_first:
                raw, tag = unprefix(raw, outer_match, indent)
            if cond_lits and self.index <= COND_LINES:  # a condition of the run, at any level
                self._note_condition(raw)
            # the substring test only spares the regex on the other lines; the full prefix
            # parse below decides the rest
            if not self.active and ("INFO" in raw or "DEBUG" in raw) and quiet_fast(raw):
                continue
            raw = raw.rstrip("\r\n")
            m = prefix(raw) if raw[:1] in PREFIX_FIRST or "|" in raw else no_prefix
            lvl, glog, blvl = m.group("lvl", "glog", "blvl")
            level = lvl or glog or blvl
            if level in QUIET_LEVELS:  # nothing to do unless it ends a traceback
                if self.active:
                    self._quiet_line(m, stream, tag)
                continue
            msg = raw[m.end() :]
            if msg[:1] == "[" and (tm := launcher_tag(msg)).end():  # c10d's "[rank1]:" after
                msg = msg[tm.end() :]  # vLLM's process tag: that tag names the process
            if in_group or "Exception Group" in msg:  # an exception group's gutter comes off
                msg, in_group = ungutter(msg, in_group)
            if box is not None or "╭" in msg:  # rich's box comes off, its frames read as Python's
                msg, box = unbox(msg, box)
                if msg is None:
                    continue
            if not self.active and msg in boring:  # a repeated harmless line, nothing open
                continue
            if msg and (benign_start(msg) or benign_any(msg)):
                self._remember(msg)
                continue
            self._message(msg, level, m, stream, tag)

    def _note_condition(self, raw: str) -> None:
        """A line of the run's start holding a condition's literal: is it a condition?"""
        for lit in self.rs.cond_lits:
            if lit in raw:
                self._condition(raw)
                return

    def _quiet_line(self, m: re.Match[str], stream: str | None, tag: str | None) -> None:
        """An INFO/DEBUG line inside a traceback ends it."""
        if stream is None:
            proc, pid = m.group("proc", "pid")
            stream = f"{proc} {pid or ''}" if proc else (tag or "")
        st = self.streams.get(stream)
        if st is not None and st.phase is not Phase.IDLE:
            self._flush(st)

    def _message(
        self, msg: str, level: str | None, m: re.Match[str], stream: str | None, tag: str | None
    ) -> None:
        """One non-quiet, non-benign message: the process's state machine, then the line rules.
        The process is ``stream`` when given, else the line's own tag (vLLM's, OpenMPI's), else
        the launcher's rank ``tag`` it came under (torchrun, mpirun, srun)."""
        if msg[:1] == "[" and stream is None:  # OpenMPI's "[host:pid] ": the process
            tm = RANK_TAG.match(msg)
            if tm is not None:
                msg, stream = msg[tm.end() :], tm.group("tag")
        low = msg.lower()
        gated = self._gate is None or self._gate(low) is not None
        # a warning that names an exception in passing ("… errors like `OSError: …`") is
        # advice, not a failure; an exception line of its own still counts
        self.warning_line = level in WARN_LEVELS
        if stream is None:
            proc, pid = m.group("proc", "pid")
            stream = f"{proc} {pid or ''}" if proc else (tag or "")
        st = self.streams.get(stream)
        if st is None:
            st = self._new_stream(stream)
        idle = st.phase is Phase.IDLE
        if idle and msg in self.boring:
            st.prev, st.prev_at = msg, self.index
            return
        events = self.emitted
        self.gated = gated
        if (
            idle
            and not gated
            and "Error" not in msg
            and "Exception" not in msg
            and "Fault" not in msg
            and not IDLE_HEAD.match(msg)
        ):
            consumed = False  # nothing can start here (see IDLE_HEAD)
        else:
            consumed = self._step(st, msg, m.group("src") or m.group("gsrc"), stream)
        if st.phase is not Phase.FRAMES and "/" in msg and any(h in msg for h in NAMED_HINTS):
            self._named_file(st, msg)
        if not consumed:
            if gated:
                self._line_rules(st, msg.strip(), stream, low.strip())
            if idle and st.phase is Phase.IDLE and events == self.emitted:
                boring = self.boring  # _remember, inline: once per log line
                if len(boring) >= 8192:
                    boring.clear()
                boring[msg] = None
        st.ctx.append(st.prev)
        st.prev, st.prev_at = msg, self.index
        if st.phase is Phase.IDLE:  # _track, inline
            self.active.discard(st.key)
        else:
            self.active.add(st.key)

    def _condition(self, raw: str) -> None:
        if len(self.conditions) < 16 and any(p.search(raw) for p in self.rs.conds):
            line = raw.rstrip("\r\n")
            self.conditions.append(line[PREFIX.match(line).end() :].strip())

    def _remember(self, msg: str) -> None:
        """Cache a message that does nothing in an idle stream (logs repeat the same warnings)."""
        if len(self.boring) >= 8192:
            self.boring.clear()
        self.boring[msg] = None

    def _track(self, st: Stream) -> None:
        if st.phase is Phase.IDLE:
            self.active.discard(st.key)
        else:
            self.active.add(st.key)

    def close(self) -> list[Failure]:
        for st in self.streams.values():
            self._flush(st)
        out = self.head + list(self.tail)
        out.sort(key=lambda f: f.index)
        return out

    # -- internals
    def _new_stream(self, key: str) -> Stream:
        if len(self.streams) >= 512:
            old = next(iter(self.streams))
            self._flush(self.streams.pop(old))
        st = self.streams[key] = Stream(key)
        return st

    def _named_file(self, st: Stream, msg: str) -> None:
        """A file this process's text points at (NAMED_LOCATION): kept for its next frameless
        failures, and given to its latest ones that are near."""
        nl = NAMED_LOCATION.search(msg)
        if nl is None:
            return
        fr = Frame(nl.group("path"), msg.strip())
        st.named.append((self.index, fr))
        for f in st.frameless:
            if self.index - f.index <= NAMED_NEAR and len(f.named) < _MAX_NAMED:
                f.named.append(fr)

    def _emit(self, st: Stream, f: Failure) -> None:
        if f.frameless:  # the files its process named just before it, and those it names next
            f.named = [fr for i, fr in st.named if abs(f.index - i) <= NAMED_NEAR]
            st.frameless.append(f)
        (self.head if len(self.head) < _HEAD else self.tail).append(f)
        st.last_failure = f
        self.emitted += 1

    def _line_rules(self, st: Stream, text: str, stream: str, low: str) -> None:
        rs = self.rs
        if not text or not rs.line_rules:
            return
        if rs.gate is not None:
            found: set[str] = set()
            m = rs.gate.search(low)
            while m is not None:
                found.add(m.group())
                m = rs.gate.search(low, m.start() + 1)
            if not found:
                return
            maybe = frozenset().union(*(rs.lit_rules[f] for f in found))
        else:
            maybe = None
        line = (text,)
        for i, (rule, lits, alts) in enumerate(zip(rs.line_rules, rs.line_lits, rs.line_alts)):
            if maybe is not None and i not in maybe:
                continue
            if maybe is None and lits is not None and not lits.search(low):
                continue
            if any(all(atom.holds(line) for atom in alt) for alt in alts):
                self._emit(
                    st,
                    Failure(
                        self.index,
                        stream,
                        line_rule=rule,
                        line=text,
                        context=st.prev.strip()[:1000],
                    ),
                )
                return

    def _finish_chain(self, st: Stream, stream: str) -> None:
        if st.chain and st.chain[0].handled:
            if len(self.handled) < _HEAD:  # only if nothing else explains a failed phase
                self.handled.append(Failure(st.chain[0].start, stream, blocks=st.chain))
        elif st.chain:
            self._emit(st, Failure(st.chain[0].start, stream, blocks=st.chain))
        st.chain = []
        st.block = None
        st.phase = Phase.IDLE

    def _close_block(self, st: Stream) -> None:
        blk = st.block
        st.block = None
        if blk is None:
            return
        if blk.exc_type is None:  # frames with no exception line
            frames = blk.ordered_frames()
            if st.user_code is not None and frames:
                # torch.compile's "from user code:": the code Dynamo was tracing — who owns it
                st.user_code.user_frames = frames
                st.user_code = None
                return
            lf = st.last_failure
            recent = (
                lf is not None
                and self.index - lf.index < 200
                and not any(b.frames for b in lf.blocks)
            )
            if (
                recent
                and frames
                and (not lf.orphan_frames or (blk.current and lf.dump == "thread"))
            ):
                # the stack of a frameless failure (a fatal error's thread dump, pasted frames)
                lf.orphan_frames = frames
                lf.dump = "current" if blk.current else ("thread" if blk.reverse else "")
                return
            if recent and lf.dump and blk.reverse:
                return  # the other threads of the same crash dump
            if not frames and not blk.header:
                return  # indented text, not a traceback
            # a traceback cut before its exception line, or a stack dump: a failure all the same,
            # attributed by its frames
            inner = next(
                (fr.text for fr in reversed(frames) if not STDLIB.search(fr.path)),
                frames[-1].text if frames else "",
            )
            what = "stack dump" if blk.reverse else "traceback cut before its exception line"
            blk.exc_type = ""
            blk.message = f"{what}; innermost frame: {inner}" if inner else what
            blk.line = blk.message[:1000]
        if st.handled and not blk.exc_type and not blk.frames and st.chain:
            st.chain[0].handled = False  # a fallback that failed in turn: no longer just handled
            st.handled = False  # what was raised while handling it is cut away: the one before
            return  # is all there is
        if st.handled:
            # "During handling of the above exception": the earlier one was caught (a fallback
            # that failed, a translated error); the exception that propagated is the root.
            st.chain, st.handled = [], False
        if len(st.chain) < _MAX_CHAIN:
            st.chain.append(blk)

    def _flush(self, st: Stream) -> None:
        self._close_block(st)
        self._finish_chain(st, st.key)
        self._track(st)

    # -- the per-process traceback state machine: one method per phase, each returns True when
    # it consumed the line (False: the line is left to the line rules)
    def _step(self, st: Stream, msg: str, src: str | None, stream: str) -> bool:
        s = msg.strip()
        if self._boundary(st, s, src, stream):
            return True
        return self._handlers[st.phase](st, msg, s, src, stream)

    def _boundary(self, st: Stream, s: str, src: str | None, stream: str) -> bool:
        """Lines that start a block in any phase: a traceback or dump header, Dynamo's
        "from user code:", a chain connector."""
        if TB_START.match(s):
            if st.phase is not Phase.CONNECTOR:
                self._close_block(st)
                self._finish_chain(st, stream)
            st.block = Block(
                self.index,
                src,
                header=True,
                reverse="first" in s or s.startswith("Thread"),
                current=s.startswith("Current thread"),
                handled=st.phase is Phase.IDLE
                and self.index - st.prev_at == 1
                and any(p.search(st.prev) for p in self.rs.falls_back),
                form=header_form(s),
            )
            st.phase = Phase.FRAMES
            return True
        if s == "from user code:" and st.phase is not Phase.FRAMES:
            self._close_block(st)
            self._finish_chain(st, stream)
            lf = st.last_failure
            st.user_code = lf if lf and self.index - lf.index < 200 else None
            return True
        if CONNECTOR.match(s):
            self._close_block(st)
            st.handled = s.startswith("During handling")
            st.phase = Phase.CONNECTOR
            return True
        return False

    def _in_frames(self, st: Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """Inside a traceback: frames, their code lines, then the exception line."""
        blk = st.block
        fm = (
            FRAME.match(msg)
            or LOCATION.match(msg)
            or PYTEST_FRAME.match(msg)
            or (PYSPY_FRAME.match(msg) if blk.reverse else None)
            or IPYTHON_FRAME.match(msg)
        )
        if fm:
            blk.frames.append(Frame(frame_path(fm), s))
            return True
        if blk.frames and s[:1] == "-" and (cm := IPYTHON_CODE.match(s)):
            blk.frames[-1].code = s[cm.end() :].strip()[:500]  # IPython's "---> 12 code"
            return True
        dg = DIAG.match(s)
        if dg:
            self._diagnostic(blk, dg, s, src)
            st.phase = Phase.EXC
            return True
        if not blk.frames and not blk.header and msg[0] in " \t" and blk.junk < 30:
            blk.junk += 1  # after a chain connector, pytest's long form shows the source first
            return True
        if not s or s == "..." or s[0] in "^~" or (msg[0] in " \t" and blk.frames):
            if s and s[0] not in "^~" and s != "..." and not blk.frames[-1].code:
                blk.frames[-1].code = s[:500]  # the frame's source line (rules read it: code:)
            return True  # code lines (only a frame has them), position markers, elisions
        if self._pytest_line(st, msg, s, src):
            return True
        em = BLOCK_EXC.match(msg)
        if em and looks_like_type(em.group("type")):
            self._set_exc(blk, em.group("type"), em.group("msg") or "", s, src)
            st.phase = Phase.EXC
            return True
        blk.junk += 1
        if blk.header and blk.frames and blk.junk <= 30:
            return False  # interleaved output inside a real traceback
        self._close_block(st)
        self._finish_chain(st, stream)
        return self._in_idle(st, msg, s, src, stream)

    def _in_exc(self, st: Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """After an exception line: its continuation lines (same source), up to a few."""
        blk = st.block
        if blk.native and s and self._native_line(blk, s):
            return True
        if msg[:1] == "E" and PYTEST_E.match(msg):  # pytest's exception lines go on
            if len(blk.detail) < _MAX_DETAIL:
                blk.detail.append(PYTEST_E.match(msg).group("rest")[:1000])
            return True
        pl = PYTEST_LOC_EXC.match(s) if ".py:" in s else None
        if pl:  # pytest's long form ends with the raising line's location: the innermost frame
            blk.frames.append(Frame(pl.group("path"), s))
            return True
        if (
            s
            and s != "..."
            and src == blk.src
            and len(blk.detail) < _MAX_DETAIL
            and not FRAME.match(msg)
            and not msg.startswith("--")
            and not NEXT_EXC.match(s)
        ):
            blk.detail.append(s[:1000])
            return True
        self._close_block(st)
        st.phase = Phase.AFTER
        return self._in_after(st, msg, s, src, stream)

    def _in_after(self, st: Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """A chain whose last exception ended: a connector may still follow; anything else ends it."""
        if not s:
            return False
        pl = PYTEST_LOC_EXC.match(s) if st.chain and ".py:" in s else None
        if pl and pl.group("type").rsplit(".", 1)[-1] == st.chain[-1].exc_type.rsplit(".", 1)[-1]:
            st.chain[-1].frames.append(Frame(pl.group("path"), s))  # pytest: where it was raised
            return True
        self._finish_chain(st, stream)
        return self._in_idle(st, msg, s, src, stream)

    def _in_connector(self, st: Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """After "The above exception was the direct cause…": the next block's frames."""
        if not s:
            return True
        if FRAME.match(msg) or msg[:1] in (" ", "\t"):
            st.block = Block(self.index, src)
            st.phase = Phase.FRAMES
            return self._in_frames(st, msg, s, src, stream)
        self._finish_chain(st, stream)
        return self._in_idle(st, msg, s, src, stream)

    def _in_idle(self, st: Stream, msg: str, s: str, src: str | None, stream: str) -> bool:
        """Nothing open: does this line start a failure (a headerless traceback, a native
        failure, a diagnostic, an exception line)?"""
        if not s:
            return False
        fm = (
            FRAME.match(msg)
            or LOCATION.match(msg)
            or PYTEST_FRAME.match(msg)
            or IPYTHON_FRAME.match(msg)
        )
        if fm:  # a traceback without its header (cut log)
            form = IDLE_FRAME_FORMS.get(fm.re, "traceback without header")
            st.block = Block(self.index, src, form=form)
            st.block.frames.append(Frame(frame_path(fm), s))
            st.phase = Phase.FRAMES
            return True
        if msg[0] in " \t" and (s[0] in "^~" or s == "..."):
            return True  # code-position markers of a cut traceback
        if self.gated and self.rs.native_gate.search(s):
            nm = self.rs.native.fullmatch(s)
            if nm:
                return self._open_native(st, nm, s, src)
        pl = PYTEST_LOC_EXC.match(s) if ".py:" in s else None
        if pl and looks_like_type(pl.group("type")):  # pytest --tb=line: location and exception
            self._open(st, pl.group("type"), pl.group("msg") or "", s, src)
            st.block.frames.append(Frame(pl.group("path"), s))
            st.block.form = "pytest line"
            return True
        dg = DIAG.match(s) if "error: " in s else None
        if dg:
            st.block, st.phase = Block(self.index, src), Phase.EXC
            self._diagnostic(st.block, dg, s, src)
            return True
        dm = DOTTED_EXC.match(s) if not self.warning_line else None
        if dm:
            return self._open(st, dm.group("type"), dm.group("msg"), s, src)
        em = BARE_EXC.search(s) if ("Error" in s or "Exception" in s or "Fault" in s) else None
        if em and em.start() > 0 and self.warning_line:
            em = None
        if em:
            text = em.group("msg") or ""
            if em.group("qtype"):  # named inside a sentence: the sentence is its message
                text = s
            elif em.start() > 0 and s[em.start() - 1] in "`'\"":
                text = text.split(s[em.start() - 1], 1)[0]
            return self._open(st, em.group("type") or em.group("qtype"), text, s, src)
        return False

    def _open(self, st: Stream, etype: str, message: str, line: str, src: str | None) -> bool:
        """Start a frameless failure block at this line (its continuation lines may follow)."""
        blk = Block(self.index, src)
        self._set_exc(blk, etype, message, line, src)
        st.block, st.phase = blk, Phase.EXC
        return True

    def _open_native(self, st: Stream, nm: re.Match[str], line: str, src: str | None) -> bool:
        """A native failure's first line; its backtrace and the handler's lines may follow."""
        etype, message = native_exc(nm, line)
        if nm.group("bassert"):  # the assertion's location is on the lines before it
            message = " ".join([*st.ctx, st.prev, line][-5:]).strip()
        elif nm.group("check") and src:  # glog's header names the source file
            message = f"{src}: {message}"
        self._open(st, etype, message, line, src)
        st.block.native = True
        st.block.form = next(NATIVE_FORM_NAMES[k] for k, v in nm.groupdict().items() if v)
        return True

    @staticmethod
    def _native_line(blk: Block, s: str) -> bool:
        """A line of a native failure's report: the handler's lines, a backtrace frame."""
        sm = SIGNAL_HANDLER_FRAME.match(s)
        if sm:  # absl / glog: where it was, else the function's symbol (owners.md, native symbols)
            rest = sm.group("rest")
            wm = next((m for w in NATIVE_WHERE if (m := w.search(rest))), None)
            wm = wm or NATIVE_SYMBOL.match(rest)
            if wm:
                blk.frames.append(Frame(wm.group("p"), s))
                blk.reverse = True
                return True
        if NATIVE_CONT.match(s):
            if s.lstrip("[").find("Signal: ") >= 0 and blk.message == "Process received signal":
                blk.message = s.split("Signal: ", 1)[1]
            if len(blk.detail) < _MAX_DETAIL:
                blk.detail.append(s[:1000])
            return True
        if not NATIVE_FRAME.match(s):
            return False
        for where in NATIVE_WHERE:
            wm = where.search(s)
            if wm:
                blk.frames.append(Frame(wm.group("p"), s))
                blk.reverse = True  # a native backtrace lists the innermost frame first
                return True
        return False

    def _pytest_line(self, st: Stream, msg: str, s: str, src: str | None) -> bool:
        """pytest's forms inside a traceback: "E   Type: msg", "path.py:26: Type", "_ _ _", ">"."""
        blk = st.block
        if PYTEST_MARK.match(s):
            return True
        pe = PYTEST_E.match(msg) if msg[:1] == "E" else None
        if pe:
            blk.form = "pytest traceback"
            em = BLOCK_EXC.match(pe.group("rest"))
            if em and looks_like_type(em.group("type")):
                self._set_exc(blk, em.group("type"), em.group("msg") or "", s, src)
                st.phase = Phase.EXC
            return True
        pl = PYTEST_LOC_EXC.match(s) if ".py:" in s else None
        if pl and looks_like_type(pl.group("type")):
            blk.frames.append(Frame(pl.group("path"), s))
            self._set_exc(blk, pl.group("type"), pl.group("msg") or "", s, src)
            st.phase = Phase.EXC
            return True
        return False

    def _diagnostic(self, blk: Block, dg: re.Match[str], line: str, src: str | None) -> None:
        blk.form = blk.form or "compiler diagnostic"
        if dg.group("mloc"):  # MLIR's own diagnostic: the compiler failed on this kernel line
            blk.frames.append(Frame(dg.group("mloc"), line))
            self._set_exc(blk, "CompilerError", dg.group("msg"), line, src)
            return
        if dg.group("loc"):
            blk.frames.append(Frame(dg.group("loc").split(":", 1)[0], line))
        self._set_exc(blk, "DiagnosticError", dg.group("msg"), line, src)

    @staticmethod
    def _set_exc(blk: Block, etype: str, message: str, line: str, src: str | None) -> None:
        blk.exc_type, blk.message, blk.line, blk.src = etype, message.strip(), line[:1000], src


def _never(_: str) -> None:
    return None


def looks_like_type(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return bool(last) and (last[0].isupper() or last.endswith(("Error", "Exception")))
