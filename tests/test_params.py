"""Parameter validation: bad input is refused with one sentence naming the parameter."""

import ast

import pytest

from modelverify_kernel.errors import ParameterError
from modelverify_kernel.params import from_namespace, validate


def test_missing_model_path_names_it_and_shows_a_command():
    with pytest.raises(ParameterError) as exc:
        validate({"model_path": None})
    msg = str(exc.value)
    assert "model_path" in msg and "papermill notebooks/verify.ipynb" in msg
    # IPython shows only the sentence, not our frames.
    assert exc.value._render_traceback_() == [f"ParameterError: {msg}"]


@pytest.mark.parametrize("bad", [0, -1, "abc", 1.5, True])
def test_tp_size_must_be_a_positive_integer(bad):
    with pytest.raises(ParameterError, match="tp_size"):
        validate({"model_path": "/m", "tp_size": bad})


def test_defaults_and_seed_timeouts():
    p = validate({"model_path": "/m"})
    assert (p.download_timeout, p.offline_timeout, p.serve_timeout, p.health_timeout) == (
        600,
        300,
        360,
        300,
    )
    assert p.trust_remote_code is False and p.tp_size is None and p.container is None
    # run_*_env / run_*_unset are additions to each run's default flags (runs.run_specs)
    assert (dict(p.run_a_env), p.run_a_unset, dict(p.run_b_env), p.run_b_unset) == ({}, (), {}, ())


def test_extra_vllm_args_json_or_shell_like_never_executed():
    assert validate(
        {"model_path": "/m", "extra_vllm_args": '["--enforce-eager", "--dtype", "float32"]'}
    ).extra_vllm_args == ("--enforce-eager", "--dtype", "float32")
    assert validate(
        {"model_path": "/m", "extra_vllm_args": "--max-num-seqs 8 --x '$(touch y)'"}
    ).extra_vllm_args == ("--max-num-seqs", "8", "--x", "$(touch y)")
    with pytest.raises(ParameterError, match="extra_vllm_args"):
        validate({"model_path": "/m", "extra_vllm_args": "[not json"})
    with pytest.raises(ParameterError, match="extra_vllm_args"):
        validate({"model_path": "/m", "extra_vllm_args": [1, 2]})


def test_env_parameters_are_checked():
    assert dict(validate({"model_path": "/m", "env": {"A": 1}}).env) == {"A": "1"}
    with pytest.raises(ParameterError, match="env"):
        validate({"model_path": "/m", "env": {"BAD NAME": "x"}})
    with pytest.raises(ParameterError, match="run_a_unset"):
        validate({"model_path": "/m", "run_a_unset": ["$(x)"]})


def test_params_are_frozen_and_read_from_notebook_globals():
    p = from_namespace({"model_path": "/m", "tp_size": 2, "unrelated": object()})
    assert p.tp_size == 2
    with pytest.raises(AttributeError):
        p.tp_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "name,value",
    [
        ("run_b", "sometimes"),
        ("model_source", "s3"),
        ("max_tokens", 0),
        ("health_timeout", -5),
        ("trust_remote_code", "yes"),
    ],
)
def test_other_parameters_refused(name, value):
    with pytest.raises(ParameterError, match=name):
        validate({"model_path": "/m", name: value})


def test_systematic_shift_defaults_to_the_reference_table_and_is_validated():
    from modelverify_kernel.analysis.compare import Tolerances

    assert validate({"model_path": "/m"}).systematic_shift is None  # compare reads references/
    assert Tolerances().systematic_shift == 0.006
    assert validate({"model_path": "/m", "systematic_shift": 0.01}).systematic_shift == 0.01
    with pytest.raises(ParameterError, match="systematic_shift must be a number"):
        validate({"model_path": "/m", "systematic_shift": "wide"})


# -- the one table and what derives from it -----------------------------------------------------


def test_the_notebook_parameters_cell_is_the_table():
    """papermill's --help-notebook reads this cell: names, types, defaults and help come from
    options.OPTIONS (`python -m modelverify_kernel.params --write` rewrites it)."""
    import json

    import papermill

    from modelverify_kernel import options, params, resources

    notebook = resources.notebook_path()
    cell = params.parameters_cell(json.loads(notebook.read_text(encoding="utf-8")))
    assert "".join(cell["source"]) == params.notebook_cell_source(), (
        "the notebook's parameters cell drifted from options.OPTIONS: run "
        "`python -m modelverify_kernel.params --write`"
    )
    listed = papermill.inspect_notebook(str(notebook))
    assert list(listed) == [o.name for _, group in params.grouped_options() for o in group]
    assert set(listed) == set(options.PARAMETER_NAMES) == set(params.PARAMETER_NAMES)
    for name, seen in listed.items():
        option = options.OPTION[name]
        assert seen["inferred_type_name"].strip('"') == option.notebook_type, name
        assert seen["help"] == option.help, name
        assert ast.literal_eval(seen["default"]) == (
            list(option.default) if isinstance(option.default, tuple) else option.default
        ), name
    # every default passes its own check, and Params holds exactly the table, in its order
    defaults = params.validate({"model_path": "/m"}).to_dict()
    assert list(defaults) == list(options.PARAMETER_NAMES)


def test_the_parameters_page_is_the_table():
    from modelverify_kernel import params

    assert params.DOCS_PAGE.read_text(encoding="utf-8") == params.docs_page(), (
        "docs/parameters.md drifted from options.OPTIONS: run "
        "`python -m modelverify_kernel.params --write`"
    )
    for name in params.PARAMETER_NAMES:
        assert f"| `{name}` |" in params.docs_page()


def test_a_drifted_cell_is_rewritten_alone(tmp_path):
    """The generator replaces the parameters cell only; every other byte of the file stays."""
    import json

    from modelverify_kernel import params, resources

    original = resources.notebook_path().read_text(encoding="utf-8")
    copy = tmp_path / "verify.ipynb"
    data = json.loads(original)
    params.parameters_cell(data)["source"] = ["x: int = 1  # drifted\n"]
    copy.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert params.write_notebook_cell(copy) is True
    assert copy.read_text(encoding="utf-8") == original
    assert params.write_notebook_cell(copy) is False


def test_the_debug_parameters_are_gone():
    """Debugging is v.run_phase(...) in the notebook now, not parameters."""
    from modelverify_kernel.params import PARAMETER_NAMES

    assert not [name for name in PARAMETER_NAMES if name.startswith("debug_")]
    with pytest.raises(ParameterError, match="Unknown parameter debug_rerun"):
        from_namespace({"model_path": "/m", "debug_rerun": "run_b:serve"})
