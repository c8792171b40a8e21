"""report.json in the seed's schema, validated; report.html embeds the same JSON."""

import json
import re
from dataclasses import replace

import jsonschema
import pytest

from modelverify_kernel import report
from modelverify_kernel.analysis.judge import Judgement
from modelverify_kernel.analysis.verdict import decide
from modelverify_kernel.params import validate
from modelverify_kernel.records import Evidence, PhaseResult
from modelverify_kernel.runs import run_specs

pytestmark = pytest.mark.process  # report.tool_info runs git

SEED_TOP = {
    "status",
    "stage",
    "model",
    "tensor_parallel_size",
    "run_a_without_multichip",
    "run_b_with_multichip",
    "diff_analysis",
}
SEED_RUN = {"flags", "phase_a_offline", "phase_b_serve", "output_sample", "errors"}
SEED_DIFF = {"conclusion", "detail", "multichip_component", "recommended_stack"}


def _report(tmp_path, b_fails=False):
    params = validate({"model_path": "/models/m", "output_dir": str(tmp_path)})
    runs = {}
    for name in ("run_a", "run_b"):
        runs[name] = {}
        for phase in ("offline", "serve"):
            p = PhaseResult(
                run=name,
                phase=phase,
                status="PASS",
                duration_s=1.0,
                log=str(tmp_path / "logs" / f"{name}_{phase}.log"),
                result={"timings": {"load_s": 1}, "outputs": [{"text": "</script><b>x</b>"}]},
            )
            if b_fails and name == "run_b" and phase == "serve":
                p = replace(
                    p,
                    status="FAIL",
                    error="RuntimeError: kernel <bad>",
                    diagnosis={
                        "component": "FlagGems",
                        "signature": "s",
                        "layer": 5,
                        "evidence": ["flag_gems/ops/addmm.py"],
                        "hint": "disable addmm",
                    },
                )
            runs[name][phase] = p
    v = decide(runs["run_a"], runs["run_b"])
    evidence = Evidence(
        parameters=params.to_dict(),
        started_at=report.now(),
        target={"kind": "local"},
        tp=1,
        runs=runs,
        specs=run_specs(params),
    )
    return report.build(evidence, Judgement(verdict=v))


@pytest.mark.parametrize("b_fails", [False, True])
def test_report_has_every_seed_field_and_validates(tmp_path, b_fails):
    r = _report(tmp_path, b_fails)
    report.validate(r)
    assert SEED_TOP <= r.keys()
    assert SEED_RUN <= r["run_a_without_multichip"].keys()
    assert SEED_RUN | {"skipped"} <= r["run_b_with_multichip"].keys()
    assert SEED_DIFF <= r["diff_analysis"].keys()
    assert r["run_a_without_multichip"]["flags"] == {"FLAGCX_PATH": "unset", "USE_FLAGGEMS": "0"}
    assert r["run_a_without_multichip"]["phases"]["offline"]["log"] == "logs/run_a_offline.log"
    if b_fails:
        assert r["status"] == "PARTIAL" and r["diff_analysis"]["multichip_component"] == "FlagGems"
        assert r["run_b_with_multichip"]["errors"][0]["component"] == "FlagGems"


def test_the_report_names_the_knowledge_that_judged_it(tmp_path):
    """tool.knowledge_digest is the digest of today's references/ (a rebuilt report carries the
    digest of the rules that re-judged it); the HTML shows its head."""
    from modelverify_kernel.analysis.knowledge import digest

    r = _report(tmp_path)
    assert r["tool"]["knowledge_digest"] == digest()
    assert digest()[:16] in report.render_html(r)
    r["tool"]["knowledge_digest"] = "not a digest"
    with pytest.raises(jsonschema.ValidationError):
        report.validate(r)


def test_schema_rejects_a_report_missing_a_seed_field(tmp_path):
    r = _report(tmp_path)
    del r["diff_analysis"]["recommended_stack"]
    with pytest.raises(jsonschema.ValidationError):
        report.validate(r)
    r = _report(tmp_path)
    r["status"] = "OK"
    with pytest.raises(jsonschema.ValidationError):
        report.validate(r)


def test_html_embeds_the_same_json_and_escapes_content(tmp_path):
    r = _report(tmp_path, b_fails=True)
    json_path, html_path = report.write_report(r, tmp_path)
    html = html_path.read_text()
    assert report.embedded_json(html) == json.loads(json_path.read_text())
    assert "<b>x</b>" not in html  # model output is text, never markup
    assert "PARTIAL" in html and "MULTICHIP_ERROR" in html and "FlagGems" in html
    # standalone: nothing is fetched from the network (namespace URIs of inline SVG are fine)
    assert not re.search(
        r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", html
    )
