"""Claim 3's agreement rule (helpers.stats.agreement): every condition can fail on its own."""

from __future__ import annotations

from helpers.stats.agreement import agreement_verdict


def test_each_condition_can_fail_and_none_is_empty():
    assert agreement_verdict(0.8, 0.05, 70.0, 10) == ("agrees", "")
    assert agreement_verdict(0.3, 0.05, 70.0, 10)[0] == "does not agree"
    assert agreement_verdict(0.8, 0.5, 70.0, 10) == ("does not agree", "median |log ratio error| above 0.1")
    assert agreement_verdict(0.8, 0.05, 20.0, 10)[1] == "right on fewer than 50% of the shrinking steps"
    # a real block that (almost) never shrinks leaves the shrink condition untestable, not met by default: the
    # correlation and the error still decide, so the row can still fail
    assert agreement_verdict(0.8, 0.05, float("nan"), 0) == ("agrees", "")
    assert agreement_verdict(0.8, 0.3, float("nan"), 0)[0] == "does not agree"
