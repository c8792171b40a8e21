"""The one reader of ``references/``: its Markdown tables become rules and lookup tables.

One table grammar for every file: a table is found by its exact header line followed by a
``|---|`` separator; a row is ``| cell | cell |`` with ``\\|`` for a ``|`` inside a cell; a regex
cell is ``/RE/`` (``/RE/i`` case-insensitive, ``\\/`` for a ``/``, compiled with MULTILINE). A
header that drifted from the expected one, a table without rows and a row that would silently
end a table are errors naming file and line: a rule must never vanish unnoticed.

The rule tables live in ``error-classification.md`` and ``multichip-errors.md``; ownership,
device error codes, hang ranking, confidence caps, fallbacks and signature normalisers in
``owners.md``. Standard library only.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..vocabulary import COMPONENT_LAYER
from . import matchers
from .literals import required_literals
from .matchers import Matcher

CONFIDENCE = ("low", "medium", "high")
RULE_HEADER = ("id", "component", "layer", "confidence", "match", "hint")
RULE_FILES = ("error-classification.md", "multichip-errors.md")
OWNERS_FILE = "owners.md"
KERNEL_INDEX_FILE = "triton-kernels.json"  # built by kernel_index.py, read by analysis/kernels.py
TIMEOUTS_FILE = "timeouts.md"  # the TIMEOUT-* rows, read by analysis/timeouts.py
COMPARISON_FILE = "output-comparison.md"  # the aggregate comparison's constants (compare.py)
# what digest() covers: every file in references/ that a judgement reads
KNOWLEDGE_FILES = (*RULE_FILES, OWNERS_FILE, TIMEOUTS_FILE, COMPARISON_FILE, KERNEL_INDEX_FILE)

Atom = Matcher  # one condition of a rule's match cell


class RuleError(ValueError):
    """A table row in references/ is malformed (the message names file and line)."""


@dataclass(frozen=True)
class Rule:
    """One row of a rule table in references/.

    Its match is one or more alternatives joined by ``or`` (one mechanism that shows in several
    forms: a watchdog's timeout line, or a stack dump waiting in the same library); ``atoms`` is
    all of their atoms together."""

    id: str
    component: str  # a component, "owner", "wrapper" or "benign"
    layer: int | None
    confidence: str
    atoms: tuple[Matcher, ...]
    hint: str
    source: str  # "file.md:line"
    fallback: str | None = None  # for owner(...) / caller(...) rows
    caller: bool = False  # caller(...): Triton's own frames are skipped (the kernel's owner)
    alts: tuple[tuple[Matcher, ...], ...] = ()  # the alternatives (one: ``(atoms,)``)

    def __post_init__(self) -> None:
        if not self.alts:
            object.__setattr__(self, "alts", (self.atoms,))

    @property
    def line_alts(self) -> tuple[tuple[Matcher, ...], ...]:
        """The alternatives that can match a bare log line (only line:/text: atoms)."""
        return tuple(alt for alt in self.alts if all(a.on_lines for a in alt))

    @property
    def line_capable(self) -> bool:
        """True when the row can match a bare log line (an alternative of only line:/text: atoms)."""
        return bool(self.line_alts)

    @property
    def exception_capable(self) -> bool:
        return any(not any(a.only_lines for a in alt) for alt in self.alts)


# --------------------------------------------------------------------------- the table grammar

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_SEPARATOR = re.compile(r"\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?")
_REGEX_CELL = re.compile(r"/((?:\\.|[^/\\])*)/(i?)")


def split_cells(line: str) -> list[str]:
    """The cells of a table row, stripped, ``\\|`` unescaped."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(body)]


def _header_like(cells: list[str], header: tuple[str, ...]) -> bool:
    """A table header close enough to ``header`` that it was meant to be one (drifted)."""
    names = [c.lower().strip("` *") for c in cells]
    close = sum(1 for c in names if c and difflib.get_close_matches(c, header, n=1, cutoff=0.6))
    first = (header[0], "rule", "rule id") if header[0] == "id" else (header[0],)
    return close >= min(3, len(header)) or (bool(names) and names[0] in first)


@dataclass
class _TableState:
    """Where the reader of one file is: inside a table of the wanted header or not."""

    in_table: bool = False
    rows: int = 0
    header_at: int = 0


def _outside_line(state: _TableState, stripped: str, where: str, name: str, what: str) -> None:
    """A line that does not start with '|': it ends a table (an error when that drops rows)."""
    if state.in_table and "|" in stripped:
        raise RuleError(
            f"{where}: a {what} row must start with '|'; as written it ends "
            f"the table and the rows after it would be ignored"
        )
    if state.in_table and state.rows == 0:
        raise RuleError(f"{name}:{state.header_at}: {what} without rows")
    state.in_table = False


def _check_stray(
    cells: list[str],
    lines: list[str],
    lineno: int,
    header: tuple[str, ...],
    stray_row: Callable[[list[str]], bool] | None,
    where: str,
    what: str,
) -> None:
    """Outside a table: a drifted header, a headerless table or a row that looks like one of
    the wanted table's rows would all be ignored; refuse them."""
    stripped = lines[lineno - 1].strip()
    nxt = lines[lineno].strip() if lineno < len(lines) else ""
    spec = f"| {' | '.join(header)} |"
    if _SEPARATOR.fullmatch(nxt) and _header_like(cells, header):
        raise RuleError(
            f"{where}: this looks like a {what} header but is not exactly {spec}; "
            f"its rows would be ignored"
        )
    if _SEPARATOR.fullmatch(stripped) and (
        lineno == 1 or not lines[lineno - 2].strip().startswith("|")
    ):
        raise RuleError(
            f"{where}: a table without a header line; a {what} needs {spec} above its separator"
        )
    if stray_row is not None and len(cells) == len(header) and stray_row(cells):
        raise RuleError(
            f"{where}: this looks like a {what.split()[0]} row outside a {what} (no {spec} header "
            f"above it); it would be ignored"
        )


def read_table(
    path: Path,
    header: tuple[str, ...],
    stray_row: Callable[[list[str]], bool] | None = None,
    strict: bool = True,
    what: str = "table",
) -> Iterator[tuple[list[str], str]]:
    """Every row of every table of ``path`` whose header is exactly ``header``, as (cells,
    "file:line"). ``strict``: a drifted header, a headerless table and (``stray_row``) a row
    outside such a table are errors too (for files whose every table of that shape counts)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    state = _TableState()
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        where = f"{path.name}:{lineno}"
        if not stripped.startswith("|"):
            _outside_line(state, stripped, where, path.name, what)
            continue
        cells = split_cells(stripped)
        nxt = lines[lineno].strip() if lineno < len(lines) else ""
        if tuple(c.lower() for c in cells) == header:
            if not _SEPARATOR.fullmatch(nxt):
                raise RuleError(
                    f"{where}: a {what} header must be followed by a |---| separator line"
                )
            state.in_table, state.rows, state.header_at = True, 0, lineno
            continue
        if not state.in_table and strict:
            _check_stray(cells, lines, lineno, header, stray_row, where, what)
        if not state.in_table or _SEPARATOR.fullmatch(stripped):
            continue
        state.rows += 1
        if len(cells) != len(header):
            raise RuleError(
                f"{where}: {what.split()[0]} row has {len(cells)} cells, expected {len(header)} "
                f"({' | '.join(header)}); escape a regex '|' as '\\|'"
            )
        yield cells, where
    if state.in_table and state.rows == 0:
        raise RuleError(f"{path.name}:{state.header_at}: {what} without rows")


def compile_regex(body: str, ignore_case: bool, where: str) -> re.Pattern[str]:
    """A regex of a table cell, compiled the one way all tables share."""
    if re.match(r"\(\?[aiLmsux]+\)", body):
        raise RuleError(
            f"{where}: inline global regex flags are not allowed; append 'i' after the closing '/'"
        )
    try:
        return re.compile(body, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))
    except re.error as exc:
        raise RuleError(f"{where}: bad regex /{body}/: {exc}") from None


def regex_cell(cell: str, where: str) -> re.Pattern[str]:
    """A cell holding one regex, ``/RE/`` or ``/RE/i`` (backticks around it allowed)."""
    m = _REGEX_CELL.fullmatch(cell.strip().strip("`").strip())
    if m is None:
        raise RuleError(f"{where}: expected a regex written /RE/ or /RE/i, got {cell!r}")
    return compile_regex(m.group(1), bool(m.group(2)), where)


def plain_cell(cell: str) -> str:
    """A cell's text without the backticks around it."""
    return cell.strip().strip("`").strip()


def default_references() -> Path:
    """The shipped references/ folder (found by resources.py, the one place that finds it)."""
    from ..resources import references_dir

    return references_dir()


def digest(references_dir: Path | None = None, names: tuple[str, ...] = KNOWLEDGE_FILES) -> str:
    """sha256 over the knowledge files' bytes (name, then content, in order): which rules judged."""
    base = Path(references_dir) if references_dir is not None else default_references()
    h = hashlib.sha256()
    for name in names:
        path = base / name
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"")
        h.update(b"\0")
    return h.hexdigest()


def _file_key(base: Path, names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    files = [base / name for name in names]
    for f in files:
        if not f.is_file():
            raise RuleError(f"rule file {f} is missing: the classifier reads its rules from it")
    return tuple((str(f.resolve()), f.stat().st_mtime_ns) for f in files)


# --------------------------------------------------------------------------- rule tables

_ATOM_RE = re.compile(r"(!?)(\w+):/((?:\\.|[^/\\])*)/(i?)(?=\s|$)")
_ROLE = re.compile(r"(?:owner|caller|wrapper)\(\w+\)|wrapper|benign|" + "|".join(COMPONENT_LAYER))
_OWNER_ROLE = re.compile(r"(owner|caller|wrapper)\((\w+)\)")


def load_rules(references_dir: Path | None = None) -> list[Rule]:
    """Parse the rule tables of both reference documents (cached per path and mtime)."""
    base = Path(references_dir) if references_dir is not None else default_references()
    return list(_load_rules_cached(_file_key(base, RULE_FILES)))


@functools.lru_cache(maxsize=8)
def _load_rules_cached(key: tuple[tuple[str, int], ...]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path_str, _ in key:
        for cells, where in read_table(
            Path(path_str), RULE_HEADER, _looks_like_rule_row, what="rule table"
        ):
            rule = parse_rule(cells, where)
            if rule.id in seen:
                raise RuleError(f"{where}: rule id {rule.id!r} already defined at {seen[rule.id]}")
            seen[rule.id] = where
            rules.append(rule)
    if not rules:
        raise RuleError(f"no rule tables found in {', '.join(p for p, _ in key)}")
    return tuple(rules)


def _looks_like_rule_row(cells: list[str]) -> bool:
    """A row whose component cell is a component or a role: a rule row, wherever it stands."""
    return _ROLE.fullmatch(cells[1]) is not None


def _role(comp: str, where: str) -> tuple[str, str | None, bool]:
    """The component cell as (component or role, fallback, caller)."""
    m = _OWNER_ROLE.fullmatch(comp)
    if m:
        fallback = m.group(2)
        if fallback != "unknown" and fallback not in COMPONENT_LAYER:
            raise RuleError(f"{where}: {m.group(1)} fallback {fallback!r} is not a component")
        role = "wrapper" if m.group(1) == "wrapper" else "owner"
        return role, fallback, m.group(1) == "caller"
    if comp not in COMPONENT_LAYER and comp not in ("wrapper", "benign"):
        raise RuleError(
            f"{where}: unknown component {comp!r}; use one of "
            f"{', '.join(COMPONENT_LAYER)}, owner(X), caller(X), wrapper, benign"
        )
    return comp, None, False


def _layer(comp: str, layer_s: str, where: str) -> int | None:
    if comp in COMPONENT_LAYER:
        if layer_s != str(COMPONENT_LAYER[comp]):
            raise RuleError(
                f"{where}: component {comp} is layer {COMPONENT_LAYER[comp]}, row says {layer_s!r}"
            )
        return COMPONENT_LAYER[comp]
    if layer_s != "-":
        raise RuleError(f"{where}: layer must be '-' for {comp} rows, got {layer_s!r}")
    return None


def parse_rule(cells: list[str], where: str) -> Rule:
    """One rule row (cells in RULE_HEADER order), checked."""
    rid, comp_cell, layer_s, conf, match, hint = cells
    if not re.fullmatch(r"[A-Za-z][\w.-]*", rid):
        raise RuleError(f"{where}: bad rule id {rid!r}")
    comp, fallback, caller = _role(comp_cell, where)
    layer = _layer(comp, layer_s, where)
    if conf not in CONFIDENCE:
        raise RuleError(f"{where}: confidence must be one of {CONFIDENCE}, got {conf!r}")
    if not hint:
        raise RuleError(f"{where}: empty hint")
    alts = parse_match(plain_cell(match), where)
    atoms = tuple(a for alt in alts for a in alt)
    _check_alternatives(comp, alts, where)
    return Rule(rid, comp, layer, conf, atoms, hint, where, fallback, caller, alts)


def _check_alternatives(comp: str, alts: tuple[tuple[Matcher, ...], ...], where: str) -> None:
    """What a row's atoms may be combined with, for its role."""
    for alt in alts:
        kinds = {a.kind for a in alt}
        if "line" in kinds and not kinds <= {"line", "text"}:
            raise RuleError(f"{where}: line: atoms cannot be combined with exception atoms")
        if "cond" in kinds and (kinds & {"line", "text"} or comp not in COMPONENT_LAYER):
            raise RuleError(
                f"{where}: cond: atoms explain failures; they go with a component and exception atoms"
            )
        if all(a.negate for a in alt):
            raise RuleError(
                f"{where}: a match (each alternative of it) needs at least one positive atom"
            )
    if comp in ("benign", "wrapper") and len(alts) > 1:
        raise RuleError(f"{where}: {comp} rows take one alternative (no 'or')")
    atoms = [a for alt in alts for a in alt]
    for atom in atoms:
        if atom.kind == "cond" and (
            atom.negate
            or atom.pattern.flags & re.IGNORECASE
            or not required_literals(atom.pattern.pattern, lower=False)
        ):
            raise RuleError(
                f"{where}: a cond: atom must be positive, case-sensitive and hold a literal of "
                f"3+ characters (it is looked for in every log line)"
            )
    if comp == "benign" and not all(a.on_lines for a in atoms):
        raise RuleError(f"{where}: benign rows may only use line:/text: atoms")


def parse_match(text: str, where: str) -> tuple[tuple[Matcher, ...], ...]:
    """The alternatives of a match cell: atoms separated by spaces, alternatives by ``or``."""
    alts: list[tuple[Matcher, ...]] = []
    atoms: list[Matcher] = []
    pos = 0
    for m in _ATOM_RE.finditer(text):
        between = text[pos : m.start()].strip()
        if between == "or" and atoms:
            alts.append(tuple(atoms))
            atoms = []
        elif between:
            raise RuleError(f"{where}: cannot parse match near {text[pos : m.start()]!r}")
        pos = m.end()
        neg, kind, body, flag = m.groups()
        if kind not in matchers.MATCHERS:
            raise RuleError(
                f"{where}: unknown atom kind {kind!r}; use {', '.join(matchers.MATCHERS)}"
            )
        atoms.append(matchers.make(kind, compile_regex(body, bool(flag), where), bool(neg)))
    if text[pos:].strip() or not atoms:
        raise RuleError(
            f"{where}: cannot parse match {text!r}; expected atoms like exc:/RE/ msg:/RE/ line:/RE/"
            f" (alternatives joined by 'or')"
        )
    return (*alts, tuple(atoms))


# --------------------------------------------------------------------------- owners.md


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: loaded once per file
class Tables:
    """The lookup tables of owners.md (see that file for what each one means)."""

    packages: dict[str, str | None]  # package -> component (None: a library owning nothing)
    signature_packages: tuple[str, ...]  # FlagOS packages named in a signature, in order
    package_patterns: tuple[tuple[re.Pattern[str], str], ...]  # package name shape -> component
    checkout_folders: tuple[tuple[re.Pattern[str], str], ...]  # folder -> package
    owned_code: tuple[tuple[str, re.Pattern[str], str], ...]  # (package, path, component)
    owner_paths: tuple[tuple[re.Pattern[str], str], ...]  # a source path in the text
    owner_names: tuple[tuple[re.Pattern[str], str], ...]  # a component named in the line
    named_classes: tuple[re.Pattern[str], ...]  # a class an exception names (group 1)
    class_words: tuple[tuple[re.Pattern[str], str], ...]  # a word of a class name -> component
    named_modules: tuple[re.Pattern[str], ...]  # a module an exception blames (group 1)
    harmless: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...]  # (type, frame or message)
    confidence_caps: dict[str, str]  # ownership evidence -> confidence at most
    hang_rank: dict[str, int]  # component -> rank ("-": every other)
    device_prefixes: tuple[str, ...]  # cuda, hip, ...: <prefix>Error<Name> is a device error
    falls_back: tuple[re.Pattern[str], ...]
    normalisers: tuple[tuple[re.Pattern[str], str], ...]
    plugin_groups: dict[str, str]  # vLLM entry-point group -> component (plugin)
    distributions: tuple[tuple[re.Pattern[str], str | None], ...]  # distribution -> component
    log_plugins: tuple[re.Pattern[str], ...]  # a plugin listed in the log (group 1: its module)
    loaders: tuple[tuple[re.Pattern[str], str], ...]  # loader frame -> owner of the code it calls
    native_libs: tuple[tuple[re.Pattern[str], str | None], ...]  # shared library -> component
    native_symbols: tuple[tuple[re.Pattern[str], str], ...]  # a native frame's symbol -> component
    suspect_types: tuple[tuple[re.Pattern[str], str, str], ...]  # exception -> (suspect, why)
    symptoms: tuple[tuple[re.Pattern[str], tuple[str, ...], str], ...]  # text -> suspects, why


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _quoted(cell: str, where: str) -> str:
    m = _QUOTED.fullmatch(cell.strip())
    if m is None:
        raise RuleError(f'{where}: expected a text in double quotes ("<n>", ""), got {cell!r}')
    return m.group(1)


def _component(cell: str, where: str, allow_none: bool = False) -> str | None:
    comp = plain_cell(cell)
    if allow_none and comp == "-":
        return None
    if comp not in COMPONENT_LAYER:
        raise RuleError(f"{where}: {comp!r} is not a component ({', '.join(COMPONENT_LAYER)})")
    return comp


def _rows(path: Path, *header: str) -> list[tuple[list[str], str]]:
    rows = list(read_table(path, tuple(header), strict=False))
    if not rows:
        raise RuleError(f"{path.name}: no table | {' | '.join(header)} | (the classifier needs it)")
    return rows


def _regex_table(path: Path, *header: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """A two-column table of (regex, component)."""
    return tuple((regex_cell(c[0], w), _component(c[1], w)) for c, w in _rows(path, *header))


def _packages(path: Path) -> tuple[dict[str, str | None], tuple[str, ...]]:
    packages: dict[str, str | None] = {}
    signature: list[str] = []
    for (pkg, comp, in_sig), where in _rows(path, "package", "component", "in signature"):
        name = plain_cell(pkg)
        packages[name] = _component(comp, where, allow_none=True)
        if in_sig not in ("yes", "no"):
            raise RuleError(f"{where}: 'in signature' is yes or no, got {in_sig!r}")
        if in_sig == "yes":
            signature.append(name)
    return packages, tuple(signature)


def _optional_regex_table(
    path: Path, *header: str
) -> tuple[tuple[re.Pattern[str], str | None], ...]:
    """A two-column table of (regex, component or `-`)."""
    return tuple(
        (regex_cell(c[0], w), _component(c[1], w, allow_none=True)) for c, w in _rows(path, *header)
    )


def _suspect_types(path: Path) -> tuple[tuple[re.Pattern[str], str, str], ...]:
    return tuple(
        (regex_cell(c[0], w), str(_component(c[1], w)), c[2].strip())
        for c, w in _rows(path, "exception", "suspect", "why")
    )


def _caps(path: Path) -> dict[str, str]:
    caps = {}
    for (how, cap), where in _rows(path, "ownership evidence", "confidence at most"):
        if cap not in CONFIDENCE:
            raise RuleError(f"{where}: confidence must be one of {CONFIDENCE}, got {cap!r}")
        caps[plain_cell(how)] = cap
    return caps


def _hang_rank(path: Path) -> dict[str, int]:
    ranks = {}
    for (comp, rank), where in _rows(path, "stack dump waiting in", "rank"):
        if not rank.isdigit():
            raise RuleError(f"{where}: rank must be a number, got {rank!r}")
        ranks[_component(comp, where, allow_none=True) or "-"] = int(rank)
    return ranks


def load_tables(references_dir: Path | None = None) -> Tables:
    """The tables of owners.md (cached per path and mtime)."""
    base = Path(references_dir) if references_dir is not None else default_references()
    return _load_tables_cached(_file_key(base, (OWNERS_FILE,))[0])


@functools.lru_cache(maxsize=8)
def _load_tables_cached(key: tuple[str, int]) -> Tables:
    path = Path(key[0])
    packages, signature = _packages(path)
    rows = _rows
    return Tables(
        packages=packages,
        signature_packages=signature,
        package_patterns=_regex_table(path, "package name", "component"),
        checkout_folders=tuple(
            (regex_cell(c[0], w), plain_cell(c[1]))
            for c, w in rows(path, "checkout folder", "package")
        ),
        owned_code=tuple(
            (plain_cell(c[0]), regex_cell(c[1], w), str(_component(c[2], w)))
            for c, w in rows(path, "package", "path", "component")
        ),
        owner_paths=_regex_table(path, "path in the text", "component"),
        owner_names=_regex_table(path, "name in the line", "component"),
        named_classes=tuple(
            regex_cell(c[0], w) for c, w in rows(path, "class named in the text", "example")
        ),
        class_words=_regex_table(path, "class word", "component"),
        harmless=tuple(
            (regex_cell(c[0], w), regex_cell(c[1], w))
            for c, w in rows(path, "harmless exception", "frame or message", "why")
        ),
        named_modules=tuple(
            regex_cell(c[0], w) for c, w in rows(path, "module named in the text", "example")
        ),
        confidence_caps=_caps(path),
        hang_rank=_hang_rank(path),
        device_prefixes=tuple(plain_cell(c[0]) for c, _ in rows(path, "prefix", "runtime")),
        falls_back=tuple(regex_cell(c[0], w) for c, w in rows(path, "falls back", "example")),
        normalisers=tuple(
            (regex_cell(c[0], w), _quoted(c[1], w)) for c, w in rows(path, "pattern", "placeholder")
        ),
        plugin_groups={
            plain_cell(c[0]): str(_component(c[1], w))
            for c, w in rows(path, "entry-point group", "component")
        },
        distributions=_optional_regex_table(path, "distribution", "component"),
        log_plugins=tuple(
            regex_cell(c[0], w) for c, w in rows(path, "plugin listed in the log", "example")
        ),
        loaders=_regex_table(path, "loader frame", "component of the code it calls"),
        native_libs=_optional_regex_table(path, "library", "component"),
        native_symbols=_regex_table(path, "native symbol", "component"),
        suspect_types=_suspect_types(path),
        symptoms=tuple(
            (
                regex_cell(c[0], w),
                tuple(str(_component(x.strip(), w)) for x in c[1].split(",")),
                c[2],
            )
            for c, w in rows(path, "symptom", "suspects", "why")
        ),
    )
