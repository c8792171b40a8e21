"""Held-out accuracy of the log classifier on the real-failure corpus (tests/data/corpus).

The rules are written by hand while reading all the corpus cases, so the score on those cases
says little about logs the classifier has never seen. This script estimates the unseen figure the
only honest way a hand-written rule set allows: **a rule that is justified only by the held-out
cases does not exist while they are judged.**

For every fold (by default: leave one source repository out — every case from the same
GitHub repository is held out together; ``--folds 5`` for five folds by case id), the rules that
decide correctly *no* case outside the fold are removed from the rule set (the row would not have
been written without those cases), and the fold's cases are classified with what is left. Rows
that decide nothing in the corpus (written from the design, FACTS.md or vLLM's documentation)
stay, and so do rows that decide one of the project's own log fixtures (tests/data/logs, real
vLLM-for-CPU output and logs written from the design before the corpus; labels in labels.json):
those rows exist without any corpus case. ``--no-fixtures`` drops that allowance. The figures are then summed over the folds:

- exact component (the `numerical` cases describe outputs, not logs, and are left out);
- multi-chip failures attributed to the right component (FlagGems, FlagTree, FlagCX, plugin);
- false multi-chip blame (a non-multi-chip case blamed on one of them);
- `none` cases classified as failures, and failures classified as `none`.

Then the seen figure again with every excerpt as a log collector, a terminal or an issue thread
hands it over (timestamps or pod names before each line, a Markdown quote, hard wraps).

    python benchmarks/classify_heldout.py [--folds repo|5] [--verbose]

Targets (issue 11): >= 90 % exact, >= 95 % of multi-chip failures right, <= 1 false multi-chip
blame, no passing run classified as failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelverify_kernel.analysis.diagnose import classify_log  # noqa: E402
from modelverify_kernel.analysis.knowledge import load_rules  # noqa: E402
from modelverify_kernel.vocabulary import MULTICHIP  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
FIXTURES = ROOT / "tests" / "data" / "logs"
PROBES = ROOT / "tests" / "data" / "probes"
FILES = ("dev_cases.json", "dev_cases_2.json", "dev_cases_3.json")


def load_cases() -> list[dict]:
    cases: list[dict] = []
    for name in FILES:
        cases += [
            c
            for c in json.loads((CORPUS / name).read_text(encoding="utf-8"))
            if c["expected_component"] != "numerical"
        ]
    return cases


def repo_of(case: dict) -> str:
    return case["source"].split("#", 1)[0].strip()


def fold_of(case: dict, folds: str) -> str:
    if folds == "repo":
        return repo_of(case)
    k = int(folds)
    return f"fold {int(hashlib.sha256(case['id'].encode()).hexdigest(), 16) % k + 1}/{k}"


def classify(case: dict, rules) -> str:
    return classify_log(case["excerpt"].splitlines(), rules=rules).component


def fixture_rules(rules) -> set[str]:
    """Rules that decide one of the project's own log fixtures correctly (corpus-independent)."""
    labels = json.loads((FIXTURES / "labels.json").read_text(encoding="utf-8"))
    out = set()
    for name, expected in labels.items():
        diag = classify_log(FIXTURES / name, rules=rules)
        if diag.rule and diag.component == expected:
            out.add(diag.rule)
    return out


def support(cases: list[dict], rules) -> dict[str, set[str]]:
    """Rule id -> ids of the cases it decides correctly with the full rule set."""
    out: dict[str, set[str]] = defaultdict(set)
    for case in cases:
        diag = classify_log(case["excerpt"].splitlines(), rules=rules)
        if diag.rule and diag.component == case["expected_component"]:
            out[diag.rule].add(case["id"])
    return out


_PY_FRAME = re.compile(r'(?P<pre>.*?)File "(?P<path>[^"]+\.py)", line (?P<ln>\d+), in (?P<fn>\S+)$')


def as_ipython(lines: list[str]) -> list[str]:
    """A traceback as IPython / Jupyter prints it: its header names the exception type without a
    colon, each frame is "File /path.py:N, in fn(...)" and the line that ran "---> N code"."""
    out: list[str] = []
    frame = None
    for ln in lines:
        head = ln.find("Traceback (most recent call last):")
        fm = _PY_FRAME.match(ln)
        if head >= 0:
            out.append(ln[:head] + f"{'Exception':<42}Traceback (most recent call last)")
        elif fm:
            frame = fm
            out.append(f"{fm['pre']}File {fm['path']}:{fm['ln']}, in {fm['fn']}(self)")
            continue
        elif frame is not None and ln.startswith(frame["pre"] + " "):
            out.append(f"{frame['pre']}---> {frame['ln']} {ln[len(frame['pre']) :].strip()}")
        else:
            out.append(ln)
        frame = None
    return out


# The same excerpts as a log collector, a terminal or an issue thread hands them over
FORMS = {
    "docker logs -t": lambda lines: ["2026-05-20T04:39:23.123456789Z " + ln for ln in lines],
    "kubectl --prefix": lambda lines: ["[pod/vllm-0/server] " + ln for ln in lines],
    "journald": lambda lines: ["May 20 04:39:23 node7 vllm[42]: " + ln for ln in lines],
    "torchrun [rank0]:": lambda lines: ["[rank0]: " + ln for ln in lines],
    # torchrun with two ranks failing alike: their lines interleave, each tagged with its rank
    "2 ranks interleaved": lambda lines: [f"[rank{r}]: " + ln for ln in lines for r in (0, 1)],
    # the same with OpenMPI's `mpirun --tag-output` and Slurm's `srun --label`
    "mpirun --tag-output": lambda lines: [f"[1,{r}]<stderr>:" + ln for ln in lines for r in (0, 1)],
    "srun --label": lambda lines: [f"{r}: " + ln for ln in lines for r in (0, 1)],
    "Markdown quote": lambda lines: ["> " + ln for ln in lines],
    "indented paste": lambda lines: ["    " + ln for ln in lines],
    "wrapped at 120": lambda lines: [
        ln[i : i + 120] for ln in lines for i in range(0, max(len(ln), 1), 120)
    ],
    "IPython / Jupyter": as_ipython,
    # Docker's json-file driver, read from /var/lib/docker/containers/*/…-json.log
    "docker json-file": lambda lines: [
        json.dumps({"log": ln + "\n", "stream": "stderr", "time": "2026-05-20T04:39:23.1Z"})
        for ln in lines
    ],
    # copied from a rendered page (a chat, a wiki): every space a no-break space
    "no-break spaces": lambda lines: [ln.replace(" ", "\xa0") for ln in lines],
    # vLLM's coloured process tags pasted into an issue: the ESC characters are lost
    "colours without ESC": lambda lines: [
        re.sub(r"^(\([\w.-]+(?: [\w=.,:-]+)*\))", r"[1;36m\1[0;0m", ln) for ln in lines
    ],
    "wrapped at 80": lambda lines: [
        ln[i : i + 80] for ln in lines for i in range(0, max(len(ln), 1), 80)
    ],
}


class Score:
    def __init__(self) -> None:
        self.n = self.exact = self.mc = self.mc_ok = self.false_mc = 0
        self.none_n = self.none_failed = self.failed_as_none = 0
        self.wrong: list[tuple[str, str, str, str]] = []

    def add(self, case: dict, got: str, fold: str) -> None:
        exp = case["expected_component"]
        self.n += 1
        self.exact += got == exp
        if exp in MULTICHIP:
            self.mc += 1
            self.mc_ok += got == exp
        elif got in MULTICHIP:
            self.false_mc += 1
        if exp == "none":
            self.none_n += 1
            self.none_failed += got != "none"
        elif got == "none":
            self.failed_as_none += 1
        if got != exp:
            self.wrong.append((case["id"], exp, got, fold))

    def line(self) -> str:
        return (
            f"exact {self.exact}/{self.n} = {self.exact / self.n:.1%}; multi-chip right "
            f"{self.mc_ok}/{self.mc} = {self.mc_ok / max(self.mc, 1):.1%}; false multi-chip blame "
            f"{self.false_mc}; none cases called failures {self.none_failed}/{self.none_n}; "
            f"failures called none {self.failed_as_none}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folds", default="repo", help="'repo' (leave one source repository out) or a number k"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="list every miss and the rules removed per fold"
    )
    parser.add_argument(
        "--no-fixtures",
        action="store_true",
        help="also remove rules that only the project's own log fixtures justify",
    )
    args = parser.parse_args()
    rules = load_rules()
    cases = load_cases()
    sup = support(cases, rules)
    keep = set() if args.no_fixtures else fixture_rules(rules)

    seen = Score()
    for case in cases:
        seen.add(case, classify(case, rules), "all")

    held = Score()
    by_fold: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        by_fold[fold_of(case, args.folds)].append(case)
    removed_total = 0
    for fold, members in sorted(by_fold.items()):
        ids = {c["id"] for c in members}
        dropped = {rid for rid, who in sup.items() if who and who <= ids and rid not in keep}
        removed_total += len(dropped)
        fold_rules = [r for r in rules if r.id not in dropped]
        for case in members:
            held.add(case, classify(case, fold_rules), fold)
        if args.verbose and dropped:
            print(
                f"  {fold}: rules justified only by its own cases, removed: {', '.join(sorted(dropped))}"
            )

    mode = (
        "leave one source repository out"
        if args.folds == "repo"
        else f"{args.folds}-fold by case id"
    )
    print(
        f"corpus: {len(cases)} failure/none cases from {len({repo_of(c) for c in cases})} repositories "
        f"(numerical cases excluded); {len(rules)} rules"
    )
    print(f"seen (tuned on):   {seen.line()}")
    print(f"held out ({mode}, {len(by_fold)} folds, {removed_total} rule removals): {held.line()}")
    if args.verbose or held.wrong:
        print("held-out misses (id expected -> got, fold):")
        for cid, exp, got, fold in held.wrong:
            print(f"  {cid:5} {exp:>11} -> {got:<11} {fold}")
    print(
        "probe sets (tests/data/probes: written from the components' sources, scored blind once, then "
        "used for fixes):"
    )
    for path in sorted(PROBES.glob("probe_*.json")):
        probe = json.loads(path.read_text(encoding="utf-8"))
        every, clear = Score(), Score()
        for case in probe:
            got = classify_log(case["excerpt"].splitlines(), rules=rules).component
            every.add(case, got, path.stem)
            if not case["ambiguous"]:
                clear.add(case, got, path.stem)
        print(f"  {path.stem}: {every.line()}")
        print(
            f"  {path.stem} without the {every.n - clear.n} ambiguous: exact {clear.exact}/{clear.n} = "
            f"{clear.exact / max(clear.n, 1):.1%}; false multi-chip blame {clear.false_mc}"
        )
    print("seen, as pasted or collected (every line of every excerpt changed the same way):")
    for name, form in FORMS.items():
        score = Score()
        for case in cases:
            score.add(
                case, classify_log(form(case["excerpt"].splitlines()), rules=rules).component, name
            )
        print(f"  {name:<18} {score.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
