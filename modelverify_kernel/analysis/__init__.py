"""Judgement from evidence: pure functions over recorded logs, results and the rule tables."""
