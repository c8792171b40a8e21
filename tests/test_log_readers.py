"""The log readers (issue 20): each form a log comes in is read into the same facts — frames,
the exception, native failures — that the judging uses. One test per form, written from the
form (pytest's reports, signal handlers, glog, LLVM/MLIR), not from a corpus case's words."""

from __future__ import annotations

import json

import pytest

from modelverify_kernel.analysis.cli import explanation
from modelverify_kernel.analysis.diagnose import Trace, classify_log
from modelverify_kernel.analysis.knowledge import load_rules, load_tables
from modelverify_kernel.analysis.logformat import STDLIB
from modelverify_kernel.analysis.logread import Failure, Scanner
from modelverify_kernel.analysis.prefilter import build

pytestmark = pytest.mark.unit


def _read(text: str) -> list[Failure]:
    scanner = Scanner(build(tuple(load_rules()), load_tables()))
    scanner.feed_all(text.splitlines())
    return scanner.close()


def _root(text: str):
    failures = [f for f in _read(text) if f.blocks]
    assert failures, "no failure read"
    return failures[0].blocks[0]


def _inner(blk) -> str:
    frames = blk.ordered_frames()
    return next(f.path for f in reversed(frames) if not STDLIB.search(f.path))


# --------------------------------------------------------------------------- pytest


PYTEST_SHORT = """\
ImportError while loading conftest '/src/tests/conftest.py'.
tests/conftest.py:27: in <module>
    import flag_gems
src/flag_gems/__init__.py:25: in <module>
    from flag_gems.ops import *
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^
src/flag_gems/ops/gelu.py:12: in <module>
    @pointwise_dynamic(promotion_methods=[(0, "DEFAULT")])
E   AttributeError: module 'triton.language' has no attribute 'erf2'
"""


def test_pytest_short_traceback_frames_and_e_line() -> None:
    blk = _root(PYTEST_SHORT)
    assert [f.path for f in blk.ordered_frames()] == [
        "tests/conftest.py",
        "src/flag_gems/__init__.py",
        "src/flag_gems/ops/gelu.py",
    ]
    assert blk.exc_type == "AttributeError" and "erf2" in blk.message
    assert classify_log(PYTEST_SHORT.splitlines()).component == "FlagGems"


def test_pytest_short_traceback_cut_before_its_exception_is_attributed_by_its_frames() -> None:
    cut = "\n".join(PYTEST_SHORT.splitlines()[:-1])
    diag = classify_log(cut.splitlines())
    assert (diag.component, diag.rule) == ("FlagGems", "O-cut"), diag


PYTEST_LONG = """\
________________________ test_gelu[dtype0] ________________________

    def test_gelu(dtype):
>       out = flag_gems.gelu(x)

tests/test_gelu.py:10:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _
    def gelu(x):
>       return gelu_kernel(x, approximate=3)
E       ValueError: unknown approximation 3

src/flag_gems/ops/gelu.py:41: ValueError
"""


def test_pytest_long_form_one_failure_with_its_location_innermost() -> None:
    failures = [f for f in _read(PYTEST_LONG) if f.blocks]
    assert len(failures) == 1
    blk = failures[0].blocks[0]
    assert blk.exc_type == "ValueError"
    assert _inner(blk) == "src/flag_gems/ops/gelu.py"


def test_pytest_line_form() -> None:
    blk = _root("/src/flag_gems/ops/gelu.py:41: ValueError: unknown approximation 3\n")
    assert (blk.exc_type, blk.message) == ("ValueError", "unknown approximation 3")
    assert _inner(blk) == "/src/flag_gems/ops/gelu.py"


# --------------------------------------------------------------------------- signal handlers


OPENMPI = """\
[node1:00956] *** Process received signal ***
[node1:00956] Signal: Segmentation fault (11)
[node1:00956] Signal code: Address not mapped (1)
[node1:00956] Failing at address: 0x3bc
[node1:00956] [ 0] /usr/lib/x86_64-linux-gnu/libc.so.6(+0x45330)[0x7d1d0c3eb330]
[node1:00956] [ 1] /usr/lib/x86_64-linux-gnu/libc.so.6(+0x19badc)[0x7d1d0c541adc]
[node1:00956] [ 2] /opt/nccl/lib/libnccl.so.2(+0xbd72c)[0x7d1d0c8f372c]
[node1:00956] [ 3] /opt/nccl/lib/libnccl.so.2(ncclCommInitRank+0x4b)[0x7d1d0c8f474b]
[node1:00956] [ 4] /usr/lib/python3/site-packages/torch/lib/libtorch_cuda.so(+0x1d)[0x7d]
[node1:00956] *** End of error message ***
"""


def test_openmpi_signal_backtrace_keeps_the_library_on_each_native_frame() -> None:
    blk = _root(OPENMPI)
    assert (blk.exc_type, blk.message) == ("FatalSignal", "Segmentation fault (11)")
    paths = [f.path for f in blk.ordered_frames()]
    assert paths[-1].endswith("libc.so.6") and paths[0].endswith("libtorch_cuda.so")
    assert _inner(blk) == "/opt/nccl/lib/libnccl.so.2"  # libc and the handler are skipped
    assert classify_log(OPENMPI.splitlines()).component == "FlagCX"


UCX = """\
[host:288505:0:296459] Caught signal 11 (Segmentation fault: address not mapped to object at address 0x48)
==== backtrace (tid: 296459) ====
 0  /usr/lib/libucs.so.0(ucs_handle_error+0x2d4) [0x7fedc925c274]
 1  /usr/lib/libucs.so.0(+0x2d44c) [0x7fedc925c44c]
 2  /opt/flagcx/build/lib/libflagcx.so(+0x120057) [0x7ff1c18c1057]
 3  /usr/lib/x86_64-linux-gnu/libc.so.6(+0x89144) [0x7ff1c151e144]
=================================
"""


def test_ucx_signal_backtrace() -> None:
    blk = _root(UCX)
    assert (blk.exc_type, blk.message) == ("FatalSignal", "Segmentation fault")
    assert _inner(blk) == "/opt/flagcx/build/lib/libflagcx.so"
    assert classify_log(UCX.splitlines()).component == "FlagCX"


def test_absl_fatal_signal_is_a_native_failure() -> None:
    blk = _root(
        "*** SIGABRT received at time=1701234567 on cpu 3 ***\nPC: @ 0x7f0 (unknown) abort\n"
    )
    assert (blk.exc_type, blk.message) == ("FatalSignal", "SIGABRT")


def test_glog_check_failed_names_its_source_file() -> None:
    blk = _root("F1207 10:11:12.123456  4242 comm_init.cc:88] Check failed: rank < nranks\n")
    assert blk.exc_type == "NativeAssertionError"
    assert blk.message.startswith("comm_init.cc:88: Check failed: rank < nranks")


def test_a_vendor_librarys_check_after_its_tags_is_a_native_failure() -> None:
    """Vendor kernel libraries print the CHECK after their own tags (Cambricon's CNNL): a
    failure (it was read as nothing); "Health Check failed" in prose is none."""
    blk = _root("[CNNL] [Error]:[cnnlMatMul] Check failed: a_desc->dtype == b_desc->dtype.\n")
    assert blk.exc_type == "NativeAssertionError" and "a_desc->dtype" in blk.message
    for healthy in (
        "INFO: Health Check failed: retrying",
        "2026-05-20 04:39:23,123 - probe - WARNING - [healthcheck] Check failed: HTTP 503, retrying",
        "[2026-05-20 04:39:23] [wait_for_server] Check failed: connection refused, retry in 5s",
    ):
        assert classify_log([healthy]).component == "none", healthy


@pytest.mark.parametrize(
    ("log", "component"),
    [
        # absl's handler: each frame's size, then its library
        (
            "*** SIGSEGV received at time=1701234567 on cpu 3 ***\n"
            "PC: @     0x7f3a1c29e9fc  (unknown)  pthread_kill\n"
            "    @     0x7f39d3a4b2c1       1888  /opt/py/site-packages/triton/_C/libtriton.so\n",
            "FlagTree",
        ),
        # glog's Check failure stack trace: symbols only, owned by their API prefix
        (
            "F1207 10:11:12.123456  4242 comm_init.cc:88] Check failed: rank < nranks\n"
            "*** Check failure stack trace: ***\n"
            "    @     0x7f0000001234  flagcxCommInitRank\n"
            "    @     0x7f0000005678  main\n",
            "FlagCX",
        ),
    ],
)
def test_signal_handler_stack_frames_are_owned(log: str, component: str) -> None:
    """absl / glog print `@ 0xADDR [size] where-or-symbol`: frames, owned like any native frame."""
    diag = classify_log(log.splitlines())
    assert diag.component == component, diag


def test_cxx_assertion_with_its_location_on_the_lines_before() -> None:
    log = """\
triton/third_party/vendor/lib/Dialect/TritonGPU/IR/Dialect.cpp:2696
mlir::triton::gpu::SomeEncodingAttr::compose(
    DotOperandEncodingAttr, ArrayRef<long>) const:
Assertion `shape_ok && "shape not supported"' failed.
"""
    blk = _root(log)
    assert blk.exc_type == "NativeAssertionError" and "Dialect.cpp:2696" in blk.message
    assert classify_log(log.splitlines()).component == "FlagTree"


# --------------------------------------------------------------------------- compilers


@pytest.mark.parametrize(
    "line",
    [
        "LLVM ERROR: Failed to translate TritonGPU to LLVM IR.",
        "error: PassManager::run failed",
        "llc SIGSEGV -11: `llc` failed with error code -11",
    ],
)
def test_compiler_output_is_a_compiler_failure(line: str) -> None:
    blk = _root(line + "\n")
    assert blk.exc_type == "CompilerError"
    diag = classify_log([line])
    assert diag.component == "FlagTree" and diag.rule in ("T-lowering", "T-compiler"), diag


def test_ptxas_refusing_a_kernel_is_a_failure_with_the_compiler_and_the_kernel_as_suspects():
    """ptxas's fatal line ends a compile: a failure (it was read as none), but not the compiler's
    by itself — ptxas refuses what a kernel's source asked for (bf16 on an old GPU) as often as
    the compiler's own output, so both are suspects and the experiment decides."""
    log = (
        "ptxas /tmp/k.ptx, line 102; error   : Feature '.bf16' requires .target sm_80 or higher\n"
        "ptxas fatal   : Ptx assembly aborted due to errors\n"
    )
    blk = _root(log)
    assert blk.exc_type == "PtxasError" and blk.form == "ptxas"
    diag = classify_log(log.splitlines())
    assert diag.component == "unknown"
    assert [s["component"] for s in diag.suspects] == ["FlagTree", "FlagGems"]


LLVM_CRASH = """\
PLEASE submit a bug report to https://github.com/llvm/llvm-project/issues/ and include the crash backtrace.
Stack dump:
0.      Program arguments: ./triton-opt k.mlir --convert-triton-gpu-to-llvm
 #0 0x00007f920fe345ca llvm::sys::PrintStackTrace(llvm::raw_ostream&, int) (./triton-opt+0x858e5ca)
 #1 0x00007f920fe354cb SignalHandler(int, siginfo_t*, void*) Signals.cpp:0:0
 #2 0x00007f92072c5330 (/lib/x86_64-linux-gnu/libc.so.6+0x45330)
 #3 0x00007f9207f555ed toLinearLayout /src/triton/lib/Dialect/TritonGPU/IR/LinearLayoutConversions.cpp:1317:15
"""


def test_llvm_crash_report_with_its_stack_dump() -> None:
    blk = _root(LLVM_CRASH)
    assert blk.exc_type == "CompilerError"
    paths = [f.path for f in blk.ordered_frames()]
    assert paths[0].endswith("LinearLayoutConversions.cpp") and paths[-1] == "./triton-opt"
    assert classify_log(LLVM_CRASH.splitlines()).component == "FlagTree"


def test_mlir_pass_pipeline_failure_is_the_compiler() -> None:
    log = (
        "/src/kernels/k.py:19:0: error: Failures have been detected while processing an MLIR pass"
        " pipeline\n"
    )
    assert classify_log(log.splitlines()).component == "FlagTree"


# --------------------------------------------------------------------------- collectors, noise


def test_space_separated_collector_timestamps_come_off() -> None:
    stamped = "\n".join(f"2026-08-31 12:27:50 {ln}" for ln in OPENMPI.splitlines())
    assert classify_log(stamped.splitlines()).component == "FlagCX"


def test_vllm_c_warning_of_a_healthy_non_cuda_start_is_no_failure() -> None:
    warn = (
        "WARNING 11-12 15:27:46 [interface.py:197] Failed to import from vllm._C: "
        "ModuleNotFoundError(\"No module named 'vllm._C'\")"
    )
    assert classify_log([warn, "INFO 11-12 15:28:00 [api_server.py:1] Started"]).component == (
        "none"
    )
    failing = [warn, "RuntimeError: something failed later"]
    assert classify_log(failing).component == "environment"  # it explains a failure


def test_a_numbered_line_outside_a_native_failure_is_not_a_frame() -> None:
    assert classify_log(["3  /usr/lib/libnccl.so.2(+0x12) [0x7f]"]).component == "none"


def test_interleaved_ranks_of_a_signal_backtrace_are_read_apart() -> None:
    a = [ln for ln in OPENMPI.splitlines() if ln.strip()]
    b = [
        ln.replace("node1:00956", "node2:00777").replace("/opt/nccl/lib/libnccl.so.2", "/x/liby.so")
        for ln in a
    ]
    mixed = "\n".join(x for pair in zip(a, b) for x in pair)
    blocks = [f.blocks[0] for f in _read(mixed) if f.blocks]
    assert len(blocks) == 2
    assert sorted(_inner(blk) for blk in blocks) == ["/opt/nccl/lib/libnccl.so.2", "/x/liby.so"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('Thread 1 "python" received signal SIGSEGV, Segmentation fault.', "SIGSEGV"),
        ("double free or corruption (out)", "SIGABRT (double free or corruption (out))"),
        ("free(): corrupted unsorted chunks", "SIGABRT (free(): corrupted unsorted chunks)"),
        (
            "*** stack smashing detected ***: terminated",
            "SIGABRT (*** stack smashing detected ***: terminated)",
        ),
    ],
)
def test_gdb_stop_and_glibc_aborts_are_native_failures(line: str, message: str) -> None:
    blk = _root(line + "\n")
    assert (blk.exc_type, blk.message) == ("FatalSignal", message)
    assert classify_log([line]).component == "unknown"  # failed; no owner in one line


def test_gdb_backtrace_frames_carry_their_library() -> None:
    log = """\
Thread 1 "python" received signal SIGSEGV, Segmentation fault.
#0  0x00007ffff7a1b2c3 in ncclProxyProgress () from /usr/lib/x86_64-linux-gnu/libnccl.so.2
#1  0x00007ffff7a1c000 in start_thread () from /lib/x86_64-linux-gnu/libc.so.6
"""
    assert _inner(_root(log)) == "/usr/lib/x86_64-linux-gnu/libnccl.so.2"
    assert classify_log(log.splitlines()).component == "FlagCX"


def test_mlir_location_diagnostic_is_a_compiler_failure_on_that_kernel() -> None:
    line = 'loc("/site-packages/flag_gems/ops/rms_norm.py":31:0): error: failed to materialize'
    blk = _root(line + "\n")
    assert blk.exc_type == "CompilerError" and blk.frames[0].path.endswith("ops/rms_norm.py")
    diag = classify_log([line])
    assert (diag.component, diag.culprit_op) == ("FlagTree", "rms_norm"), diag


@pytest.mark.parametrize(
    ("log", "form"),
    [
        (PYTEST_SHORT, "pytest traceback"),
        (OPENMPI, "OpenMPI signal handler"),
        (UCX, "UCX signal handler"),
        (LLVM_CRASH, "LLVM crash report"),
        (
            'Traceback (most recent call last):\n  File "/a/b.py", line 1, in f\nValueError: x\n',
            "python traceback",
        ),
    ],
)
def test_each_failure_says_which_reader_parsed_it(log: str, form: str) -> None:
    assert _root(log).form == form


PYTEST_CHAINED = """\
    def f():
>       raise KeyError("a")
E       KeyError: 'a'

src/flag_gems/ops/gelu.py:3: KeyError

The above exception was the direct cause of the following exception:

    def test_x():
>       f()
E       RuntimeError: wrapped

tests/test_x.py:9: RuntimeError
"""


def test_pytest_chained_exceptions_are_one_chain_rooted_at_the_cause() -> None:
    failures = [f for f in _read(PYTEST_CHAINED) if f.blocks]
    assert len(failures) == 1
    blocks = failures[0].blocks
    assert [b.exc_type for b in blocks] == ["KeyError", "RuntimeError"]
    assert _inner(blocks[0]) == "src/flag_gems/ops/gelu.py"
    assert classify_log(PYTEST_CHAINED.splitlines()).component == "FlagGems"


def test_torchrun_summary_of_a_child_killed_by_a_signal_is_a_failure() -> None:
    log = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  exitcode  : -11 (pid: 1234)
  error_file: <N/A>
  traceback : Signal 11 (SIGSEGV) received by PID 1234
"""
    blk = _root(log)
    assert (blk.exc_type, blk.message) == ("FatalSignal", "SIGSEGV")
    assert (
        classify_log(log.splitlines()).component == "unknown"
    )  # failed; the child's log says where


RICH = """\
╭───────────────────── Traceback (most recent call last) ──────────────────────╮
│ /home/u/proj/run.py:12 in <module>                                           │
│                                                                              │
│    11                                                                        │
│ ❱  12 │   main()                                                             │
│                                                                              │
│ /home/u/.local/lib/python3.10/site-packages/flag_gems/ops/some_long_name_her │
│ e.py:308 in forward                                                          │
│                                                                              │
│   307 │   x = 1                                                              │
│ ❱ 308 │   return mm_kernel[grid](a, b)                                       │
│                                                                              │
│ ╭──────── locals ────────╮                                                   │
│ │ a = /tmp/x/y.py        │                                                   │
│ ╰────────────────────────╯                                                   │
╰──────────────────────────────────────────────────────────────────────────────╯
RuntimeError: Triton Error [CUDA]: an illegal memory access was encountered
"""


def test_richs_boxed_traceback_is_read_as_pythons() -> None:
    """rich (typer and other CLIs) draws a box around the traceback: its frames, a path folded
    at the box's edge, the line that raised, a locals panel; the exception follows the box. The
    box's equal-width lines are no hard wrap."""
    blk = _root(RICH)
    assert blk.form == "rich traceback"
    assert [fr.path for fr in blk.frames] == [
        "/home/u/proj/run.py",
        "/home/u/.local/lib/python3.10/site-packages/flag_gems/ops/some_long_name_here.py",
    ]
    assert [fr.code for fr in blk.frames] == ["main()", "return mm_kernel[grid](a, b)"]
    assert (blk.exc_type, blk.message) == (
        "RuntimeError",
        "Triton Error [CUDA]: an illegal memory access was encountered",
    )
    trace = Trace()
    diag = classify_log(RICH.splitlines(), trace=trace)
    assert diag.component == "FlagGems"
    assert explanation(trace, diag)["failures"][0]["reader"] == "rich traceback"  # --explain
    # cut inside the box: the frames so far still decide, and a line after it is read as usual
    cut = "\n".join(RICH.splitlines()[:9]) + "\nValueError: after the box\n"
    assert [fr.path.rsplit("/", 1)[-1] for fr in _root(cut).frames][-1] == "some_long_name_here.py"


_IPYTHON_8 = """\
---------------------------------------------------------------------------
RuntimeError                              Traceback (most recent call last)
Cell In[3], line 1
----> 1 llm = LLM(model="/data/qwen")

File /usr/local/lib/python3.11/site-packages/vllm/entrypoints/llm.py:243, in LLM.__init__(self, model)
    240     kwargs["disable_log_stats"] = True
--> 243 self.llm_engine = LLMEngine.from_engine_args(
    244     engine_args=engine_args, usage_context=UsageContext.LLM_CLASS)

File /usr/local/lib/python3.11/site-packages/flag_gems/runtime/backend/device.py:71, in get_vendor_info(self)
     70 if not found:
---> 71     raise RuntimeError("No device were detected on your machine !")

RuntimeError: No device were detected on your machine !
"""
_IPYTHON_7 = """\
---------------------------------------------------------------------------
RuntimeError                              Traceback (most recent call last)
<ipython-input-3-5b1c9d0e2f1a> in <module>
----> 1 llm = LLM(model="/data/qwen")

/usr/local/lib/python3.10/dist-packages/vllm/entrypoints/llm.py in __init__(self, model, tokenizer)
    242         )
--> 243         self.llm_engine = LLMEngine.from_engine_args(engine_args)

/usr/local/lib/python3.10/dist-packages/flag_gems/runtime/backend/device.py in get_vendor_info(self)
     70         if not found:
---> 71             raise RuntimeError("No device were detected on your machine !")

RuntimeError: No device were detected on your machine !
"""


@pytest.mark.parametrize("log", [_IPYTHON_8, _IPYTHON_7], ids=["IPython 8", "IPython 7 (Colab)"])
def test_a_notebooks_traceback_is_read_frame_by_frame(log: str) -> None:
    """Jupyter and Colab print IPython's traceback: the header without its colon, frames as
    "File /path.py:N, in fn(…)" (8) or "/path.py in fn(…)" (7), the line that ran "---> N code".
    Unread, the FlagGems frame was missed and the failure came out unknown."""
    blk = _root(log)
    assert blk.form == "IPython traceback"
    assert _inner(blk).endswith("flag_gems/runtime/backend/device.py")
    assert len(blk.frames) == 3 and blk.frames[0].path in (
        "<Cell In[3], line 1>",
        "<ipython-input-3-5b1c9d0e2f1a>",
    )
    assert blk.frames[-1].code == 'raise RuntimeError("No device were detected on your machine !")'
    assert (blk.exc_type, blk.message) == (
        "RuntimeError",
        "No device were detected on your machine !",
    )
    trace = Trace()
    diag = classify_log(log.splitlines(), trace=trace)
    assert diag.component == "FlagGems"
    explained = explanation(trace, diag)["failures"][0]  # --explain
    assert explained["reader"] == "IPython traceback"
    assert explained["frames"][0]["decided by"] == "code in no file"  # the cell
    # cut before its header (a paste of the frames only): the frames still decide
    cut = log.split("\n", 4)[4]
    assert classify_log(cut.splitlines()).component == "FlagGems"


def test_a_notebooks_traceback_in_its_other_shapes() -> None:
    """IPython right-aligns its header (a long type name leaves no space before "Traceback"),
    `%xmode Plain` writes frames without the comma, and a cell's name is the frame's file."""
    log = [
        "ExtremelyLongNamedFlagGemsDeviceDetectionErrorTraceback (most recent call last)",
        "<ipython-input-3-5b1c9d0e2f1a> in <module>",
        "----> 1 run()",
        "File /usr/local/lib/python3.10/dist-packages/flag_gems/ops/mm.py:3 in mm(a, b)",
        "----> 3 k()",
        "",
        "RuntimeError: boom",
    ]
    blk = _root("\n".join(log))
    assert blk.form == "IPython traceback" and blk.header and blk.start == 1
    assert [f.path for f in blk.frames] == [
        "<ipython-input-3-5b1c9d0e2f1a>",
        "/usr/local/lib/python3.10/dist-packages/flag_gems/ops/mm.py",
    ]
    assert classify_log(log).component == "FlagGems"


def test_structured_records_are_read_as_the_lines_they_hold() -> None:
    """vLLM's logging configured with a JSON formatter (VLLM_LOGGING_CONFIG_PATH and
    python-json-logger) writes a record a line, the traceback one field with newlines; INFO
    records stay quiet, a record that is not JSON stays as it is."""
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/dist-packages/flag_gems/ops/mm.py", line 3, in mm\n'
        "    k()\n"
        "RuntimeError: boom"
    )
    log = [
        json.dumps({"asctime": "2026-05-20 04:39:23", "levelname": "INFO", "message": "Loading"}),
        '{"broken": ',
        json.dumps({"levelname": "ERROR", "message": "EngineCore failed.", "exc_info": tb}),
    ]
    blk = _root("\n".join(log))
    assert blk.form == "python traceback" and blk.exc_type == "RuntimeError"
    assert _inner(blk).endswith("flag_gems/ops/mm.py")
    assert classify_log(log).component == "FlagGems"
    healthy = [json.dumps({"levelname": "INFO", "message": f"step {i}"}) for i in range(3)]
    assert classify_log(healthy).component == "none"
    # an INFO record's traceback (a handled exception logged with exc_info) stays quiet, as the
    # same lines under vLLM's INFO prefix do
    quiet = json.dumps({"levelname": "INFO", "message": "Fell back:", "exc_info": tb})
    assert classify_log([*healthy, quiet]).component == "none"
    # behind a collector's timestamps (kubectl logs --timestamps) the records read the same
    stamped = ["2026-05-20T04:39:23.123456789Z " + ln for ln in log]
    assert classify_log(stamped).component == "FlagGems"


@pytest.mark.parametrize(
    "record",
    [
        # ECS: the error an object of its own
        {"log.level": "error", "message": "failed", "error": {"type": "X", "stack_trace": "{tb}"}},
        # klog / zap: the error under "err"
        {"level": "error", "msg": "engine failed", "err": "{tb}"},
        {"level": "error", "msg": "engine failed", "reason": "{tb}"},
    ],
    ids=["ecs", "err", "reason"],
)
def test_a_records_error_is_read_under_whatever_key_names_it(record: dict) -> None:
    """Formatters put the error under their own keys: any key that names one (err, exc, stack,
    reason…) is the record's text. Under an unknown key it was dropped and the log read none."""
    tb = "RuntimeError: CUDA error: out of memory"
    line = json.dumps(record).replace('"{tb}"', json.dumps(tb))
    log = [json.dumps({"level": "info", "msg": f"step {i}"}) for i in range(5)] + [line]
    assert classify_log(log).rule == "R-oom"


RICH_PKG_MM = """\
def mm(a, b):
    x = a
    raise RuntimeError("CUDA error: an illegal memory access was encountered")
"""

RICH_CALLER = """\
CONFIG = "/tmp/x/config.py"


def main(path="/tmp/x/config.py"):
    from flag_gems.ops.mm import mm

    mm([1, 2, 3], path)
"""


def _rich_render(tmp_path, width: int, handler: bool, **tb) -> str:
    """A real rich traceback of a FlagGems kernel's failure, printed as rich prints it."""
    import importlib
    import io
    import logging
    import sys

    from rich.console import Console
    from rich.logging import RichHandler
    from rich.traceback import Traceback

    site = tmp_path / "site-packages"
    (site / "flag_gems" / "ops").mkdir(parents=True)
    (site / "flag_gems" / "__init__.py").write_text("")
    (site / "flag_gems" / "ops" / "__init__.py").write_text("")
    (site / "flag_gems" / "ops" / "mm.py").write_text(RICH_PKG_MM)
    (site / "caller_app.py").write_text(RICH_CALLER)
    sys.path.insert(0, str(site))
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    try:
        caller = importlib.import_module("caller_app")
        try:
            caller.main()
        except RuntimeError:
            if handler:
                log = logging.getLogger(f"rich-test-{width}")
                log.propagate = False
                log.setLevel(logging.INFO)
                tick = iter(range(1, 100))  # each record a second later: each prints its time

                def later(record):
                    record.created += next(tick)
                    return True

                log.addFilter(later)
                log.addHandler(RichHandler(console=console, rich_tracebacks=True, **tb))
                log.info("Loading model from /models/x")  # records padded to the console width
                log.exception("Engine failed")
                log.warning("Shutting down")
            else:
                console.print(Traceback(width=width, **tb))
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == "caller_app" or m.startswith("flag_gems")]:
            del sys.modules[name]
    return out.getvalue()


@pytest.mark.parametrize(
    ("width", "handler", "tb"),
    [
        (100, False, {}),
        (100, False, {"show_locals": True}),  # locals panels, a path in an unindented line
        (60, False, {}),  # the site-packages paths fold at the box's edge
        (120, True, {}),  # rich's logging handler: the box and the exception indented
        (100, False, {"indent_guides": False}),
    ],
    ids=["plain", "locals", "narrow", "logging-handler", "no-guides"],
)
def test_real_rich_tracebacks_are_read_with_their_frames_and_exception(
    tmp_path, width, handler, tb
) -> None:
    text = _rich_render(tmp_path, width, handler, **tb)
    assert "╭" in text and "mm.py" in text.replace("\n", "")
    blk = _root(text)
    assert blk.form == "rich traceback"
    assert blk.frames[-1].path.endswith("site-packages/flag_gems/ops/mm.py"), blk.frames
    assert blk.frames[-1].code.startswith("raise RuntimeError(")
    assert blk.exc_type == "RuntimeError" and "illegal memory access" in blk.message
    diag = classify_log(text.splitlines())
    assert (diag.component, diag.rule) == ("FlagGems", "O-device-fault"), diag


def test_a_rich_box_cut_without_its_border_gives_way_to_the_next_box(tmp_path) -> None:
    """A paste that cuts one box before its bottom border and then shows the whole box again:
    the second box is read from its own header, not as the first box's lines."""
    lines = _rich_render(tmp_path, 100, False).splitlines()
    text = "\n".join(lines[:-4] + lines)
    failures = [f for f in _read(text) if f.blocks]
    assert [f.blocks[0].form for f in failures] == ["rich traceback", "rich traceback"]
    assert failures[1].blocks[0].frames[-1].path.endswith("flag_gems/ops/mm.py")
    assert classify_log(text.splitlines()).component == "FlagGems"


def test_a_process_tags_own_space_is_all_it_takes_off_a_line() -> None:
    """vLLM writes "(EngineCore_0 pid=3273) " before the line as the process printed it: the
    traceback's own indentation stays, so a cut traceback's frames and code lines read as one."""
    log = (
        '(EngineCore_0 pid=3273)   File "/usr/lib/python3.11/site-packages/torch/fx/graph_module.py", line 393, in __call__\n'
        "(EngineCore_0 pid=3273)     return super(self.cls, obj).__call__(*args, **kwargs)\n"
        "(EngineCore_0 pid=3273)            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '(EngineCore_0 pid=3273)   File "/usr/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1751, in _wrapped_call_impl\n'
        "(EngineCore_0 pid=3273)     return self._call_impl(*args, **kwargs)\n"
    )
    failures = [f for f in _read(log) if f.blocks]
    assert len(failures) == 1 and len(failures[0].blocks[0].frames) == 2
    assert failures[0].blocks[0].frames[0].code.startswith("return super(")


def test_an_exception_cut_away_while_handling_another_leaves_the_one_before() -> None:
    """ "During handling of the above exception" then a traceback cut after its header: what
    propagated is unknown, so the exception before it (with its frames) is the failure."""
    log = (
        "Traceback (most recent call last):\n"
        '  File "/opt/conda/lib/python3.9/site-packages/sentencepiece/__init__.py", line 310, in LoadFromFile\n'
        "    return _sentencepiece.SentencePieceProcessor_LoadFromFile(self, arg)\n"
        "TypeError: not a string\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
    )
    blk = _root(log)
    assert (blk.exc_type, blk.message) == ("TypeError", "not a string")
    assert blk.frames and blk.frames[-1].path.endswith("sentencepiece/__init__.py")
    # sentencepiece failing to load the checkpoint's tokenizer.model: the model's files
    assert classify_log(log.splitlines()).component == "model"
    # what propagated, when it is there, is still the failure
    full = log + "  File \"/srv/app.py\", line 3, in main\nKeyError: 'oops'\n"
    assert _root(full).exc_type == "KeyError"
