"""Residual stream: named capture of a model's residual stream, the lens (Eq. 14) and per-token records.

- :mod:`helpers.residual.hooks`    the one hook primitive (block inputs = ``resid_pre``, the state after the
  attention half-step = ``resid_mid``, the last block's output = ``resid_post``) and the captures built on it
- :mod:`helpers.residual.lens`     the last-block lens (Eq. 14) in its inference and gradient forms, the logit lens
- :mod:`helpers.residual.records`  per-token records of one batch: norms, own loss, lens on the tokens that need it
"""
