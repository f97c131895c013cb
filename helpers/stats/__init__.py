"""Statistics (no torch): monotonicity of norm trajectories, bootstrap intervals, PCA, label metrics,
and the per-token tables (Table 1 rows, loss curves) built from run records.

- :mod:`helpers.stats.monotone`   sequence / pair level non-decrease, per-step rates
- :mod:`helpers.stats.intervals`  cluster bootstrap (texts as clusters), paired differences
- :mod:`helpers.stats.tokens`     Table 1 rows and inner-loss curves of per-token records
- :mod:`helpers.stats.pca`        PCA of trajectories over layers
- :mod:`helpers.stats.labels`     clustering F1/ARI/NMI, attention same-label shares
- :mod:`helpers.stats.agreement`  Claim 3's rule: a block's linear surrogate against the real block
"""
