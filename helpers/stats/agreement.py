"""Claim 3's rule: does a linear surrogate of a block (notebook 05) agree with the real block's norm change?

Proposition 1's condition is on the surrogate's Gram matrix, so meeting it says the surrogate grows, not that the
real block does; the verdict is read from the surrogate's agreement with the real block instead, by a rule that
every row can fail.
"""

from __future__ import annotations

MIN_RHO, MAX_LOG_ERROR, MIN_SHRINK_RIGHT, MIN_SHRINKS = 0.5, 0.1, 50.0, 5
AGREEMENT_RULE = (f"the surrogate *agrees* with the real block when the rank correlation of their norm ratios is >= "
                  f"{MIN_RHO:g}, its median |log ratio error| is <= {MAX_LOG_ERROR:g} (it predicts the size of the "
                  f"norm change within about 10%), and, where the real block shrinks the norm on at least "
                  f"{MIN_SHRINKS} steps, it is right on >= {MIN_SHRINK_RIGHT:g}% of them; else *does not agree*. Every "
                  "row can fail the first two")


def agreement_verdict(spearman: float, log_error: float, shrink_right: float, shrinks: int) -> tuple[str, str]:
    """Claim 3's rule for one agreement row (:data:`AGREEMENT_RULE`): 'agrees' or 'does not agree' and why."""
    failed = [why for ok, why in (
        (spearman >= MIN_RHO, f"Spearman below {MIN_RHO:g}"),
        (log_error <= MAX_LOG_ERROR, f"median |log ratio error| above {MAX_LOG_ERROR:g}"),
        (shrinks < MIN_SHRINKS or shrink_right >= MIN_SHRINK_RIGHT,
         f"right on fewer than {MIN_SHRINK_RIGHT:g}% of the shrinking steps")) if not ok]
    return ("agrees", "") if not failed else ("does not agree", "; ".join(failed))
