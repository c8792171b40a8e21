"""Output comparison: near-tie flips vs changed distributions, garbage checks.

The judgement cases use the figures seen on a real GPU with FlagGems (FACTS.md): a flip where
the two best tokens were 0.002 apart is a tie; a flip where Run A's top-5 lay within 0.05 nats
but Run B's spread over 0.5 is a changed distribution.
"""

import math

from modelverify_kernel.compare import Tolerances, compare_output, compare_phase, garbage_checks

TOL = Tolerances()


def pos(token, top):
    return {"token_id": token, "logprob": dict(top)[token], "top": [[t, lp] for t, lp in top]}


def out(prompt, ids, positions, text="some text"):
    return {"prompt": prompt, "text": text, "token_ids": ids, "logprobs": positions}


def same_prefix(n=3):
    return [pos(1, [(1, -0.5), (2, -2.0)])] * n


def test_identical_outputs_and_the_prefix_logprob_difference():
    a = out("p", [1, 1, 1], same_prefix())
    b_positions = [pos(1, [(1, -0.503), (2, -2.0)])] * 3
    c = compare_output(0, a, out("p", [1, 1, 1], b_positions), TOL)
    assert c.exact_match and c.judgement == "identical" and c.first_divergence is None
    assert math.isclose(c.max_logprob_diff_prefix, 0.003, abs_tol=1e-9)


def test_near_tie_flip_is_kernel_noise():
    top_a = [(10, -1.000), (11, -1.002), (12, -3.0)]
    top_b = [(11, -1.000), (10, -1.001), (12, -3.0)]
    a = out("p", [1, 1, 10], same_prefix(2) + [pos(10, top_a)])
    b = out("p", [1, 1, 11], same_prefix(2) + [pos(11, top_b)])
    c = compare_output(0, a, b, TOL)
    assert (c.exact_match, c.first_divergence, c.judgement) == (False, 2, "near_tie_flip")


def test_flat_in_run_a_but_spread_in_run_b_is_a_changed_distribution():
    # vLLM's top-k rule alone would call this fine: each token is in the other's top-5.
    top_a = [(10, -1.60), (11, -1.61), (12, -1.62), (13, -1.63), (14, -1.65)]
    top_b = [(11, -1.20), (10, -1.70), (12, -1.40), (13, -1.55), (14, -1.70)]
    a = out("p", [10], [pos(10, top_a)])
    b = out("p", [11], [pos(11, top_b)])
    c = compare_output(0, a, b, TOL)
    assert (c.first_divergence, c.judgement) == (0, "changed_distribution")
    assert "0.5" in c.detail or "0.50" in c.detail


def test_token_outside_the_other_top_k_is_a_changed_distribution():
    a = out("p", [10], [pos(10, [(10, -0.1), (11, -4.0)])])
    b = out("p", [30], [pos(30, [(30, -0.1), (31, -4.0)])])
    assert compare_output(0, a, b, TOL).judgement == "changed_distribution"


def test_same_tokens_with_drifting_logprobs_is_flagged():
    a = out("p", [1, 1], same_prefix(2))
    b = out("p", [1, 1], [pos(1, [(1, -0.9), (2, -2.0)])] * 2)
    c = compare_output(0, a, b, TOL)
    assert c.exact_match and c.judgement == "logprob_drift"


def test_tolerances_are_parameters():
    top_a = [(10, -1.00), (11, -1.03)]
    top_b = [(11, -1.00), (10, -1.03)]
    a, b = out("p", [10], [pos(10, top_a)]), out("p", [11], [pos(11, top_b)])
    assert compare_output(0, a, b, TOL).judgement == "changed_distribution"
    assert compare_output(0, a, b, Tolerances(tie=0.05)).judgement == "near_tie_flip"


def test_garbage_checks():
    outputs = [
        out("a", [5] * 10, [pos(5, [(5, -0.1)])] * 10),
        out("b", [], [], text=""),
        out("c", [1, 2], [{"token_id": 1, "logprob": "nan", "top": [[1, "nan"]]}, pos(2, [(2, -1.0)])]),
        out("d", [7, 8, 9, 10], [pos(t, [(t, -1.0)]) for t in (7, 8, 9, 10)]),
        out("e", [7, 8, 9, 10], [pos(t, [(t, -1.0)]) for t in (7, 8, 9, 10)]),
    ]
    found = {(g.check, g.index) for g in garbage_checks(outputs, TOL)}
    assert found == {("repetition", 0), ("empty", 1), ("nonfinite", 2), ("same_output", 3), ("same_output", 4)}


def test_phase_comparison_only_counts_garbage_new_in_run_b():
    a = [out("a", [5] * 10, [pos(5, [(5, -0.1)])] * 10), out("b", [1, 2], [pos(1, [(1, -1.0)]), pos(2, [(2, -1.0)])])]
    b = [out("a", [5] * 10, [pos(5, [(5, -0.1)])] * 10), out("b", [3] * 9 + [1], [pos(3, [(3, -0.1), (1, -5.0)])] * 10)]
    pc = compare_phase("offline", a, b)
    assert [(g.check, g.index) for g in pc.new_garbage] == [("repetition", 1)]
    assert pc.diverged and pc.diverged[0].index == 1


def test_different_prompt_sets_are_not_compared():
    pc = compare_phase("serve", [out("a", [1], [pos(1, [(1, -1.0)])])], [out("b", [1], [pos(1, [(1, -1.0)])])])
    assert pc.prompts == [] and "different prompts" in pc.note
