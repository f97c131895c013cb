"""Training: small GPT-2-architecture models trained from scratch (the v2 training-dynamics experiments
and the project's own natural-text model), checkpoints, and per-checkpoint measurements.

- :mod:`helpers.train.loop`         the model, schedule and resumable training loop
- :mod:`helpers.train.recipes`      the two recipes: synthetic Markov tasks and natural text
- :mod:`helpers.train.checkpoints`  one checkpoint folder per epoch, written atomically
- :mod:`helpers.train.measures`     what notebook 06 measures at every checkpoint (cached)
"""
