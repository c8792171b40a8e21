"""Issue 11 point 3: the phase's own recorded error anchors the diagnosis and is never overwritten."""

from __future__ import annotations

from pathlib import Path

from modelverify_kernel.analysis.judge import diagnose
from modelverify_kernel.records import PhaseResult
from modelverify_kernel.report import _error_entry, diagnosis_message

NOISY_PLUGIN_LOG = """\
(EngineCore_DP0 pid=5) INFO 11-30 10:00:00 [__init__.py:217] Platform plugin fl is activated
(EngineCore_DP0 pid=5) WARNING 11-30 10:00:01 [fl.py:10] CUDA out of memory (non-fatal, retrying with a smaller workspace)
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] Traceback (most recent call last):
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]   File "/usr/lib/python3/site-packages/vllm_fl/platform.py", line 12, in register
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700]     from vllm_fl.ops import FusedMoE
(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] ImportError: cannot import name 'FusedMoE' from 'vllm_fl.ops'
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}
"""


def test_recorded_error_is_kept_and_anchors_the_diagnosis(tmp_path: Path) -> None:
    log = tmp_path / "run_b_offline.log"
    log.write_text(NOISY_PLUGIN_LOG, encoding="utf-8")
    recorded = "ImportError: cannot import name 'FusedMoE' from 'vllm_fl.ops'"
    pr = PhaseResult(
        run="run_b",
        phase="offline",
        status="FAIL",
        log=str(log),
        error=recorded,
        error_type="ImportError",
        result={"status": "FAIL", "error": recorded, "error_type": "ImportError"},
    )
    pr = diagnose(pr)
    assert pr.error == recorded  # never overwritten
    assert pr.diagnosis["component"] == "plugin", pr.diagnosis  # not "resources" from the noise
    assert any("vllm_fl/platform.py" in e for e in pr.diagnosis["evidence"])


def test_a_wrapper_error_is_kept_and_the_root_cause_sits_beside_it(tmp_path: Path) -> None:
    log = tmp_path / "run_b_offline.log"
    log.write_text(
        NOISY_PLUGIN_LOG.replace(
            "WARNING 11-30 10:00:01 [fl.py:10] CUDA out of memory (non-fatal, retrying with a smaller workspace)",
            "INFO 11-30 10:00:01 [fl.py:10] loading",
        ),
        encoding="utf-8",
    )
    wrapper = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}"
    pr = PhaseResult(
        run="run_b",
        phase="offline",
        status="FAIL",
        log=str(log),
        error=wrapper,
        error_type="RuntimeError",
        result={"status": "FAIL", "error": wrapper},
    )
    pr = diagnose(pr)
    assert pr.error == wrapper
    assert pr.diagnosis["component"] == "plugin"
    entry = _error_entry(pr)
    assert entry["error"] == wrapper and entry["root_cause"].startswith(
        "ImportError: cannot import name"
    )
    msg = diagnosis_message(pr.to_dict())
    assert wrapper in msg and "root cause: ImportError" in msg


def test_an_error_guessed_from_the_server_output_does_not_anchor() -> None:
    """The serve script's guess (the server's last exception line) is not the phase's own exception."""
    from modelverify_kernel.analysis.diagnose import classify_log

    log = [
        "(EngineCore_DP0 pid=5) ERROR 11-30 10:00:02 [core.py:700] ValueError: No available memory for the cache blocks.",
        "(APIServer pid=4) ERROR 11-30 10:00:03 [api.py:9] KeyError: 'engine'",
    ]
    guessed = {
        "status": "FAIL",
        "error": "KeyError: 'engine'",
        "error_type": "KeyError",
        "error_from_log": True,
    }
    assert classify_log(log, guessed).component == "resources"
    # The phase's own exception anchors only what it can say: a KeyError with no owner shown is
    # `unknown` (issue 20: no default component), so the engine's owned root cause before it —
    # the KV cache that did not fit — is the diagnosis either way.
    own = classify_log(log, {**guessed, "error_from_log": False})
    assert own.component == "resources" and "cache blocks" in own.error
