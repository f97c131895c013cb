"""Models: every fact a causal LM's family decides, and loading any model into one uniform view.

- :mod:`helpers.lm.families`  one row per family: block/norm paths, block layout, half-step module, BOS, context
- :mod:`helpers.lm.registry`  the models that install from PyPI and load offline (GGUF files)
- :mod:`helpers.lm.files`     checks of a model's local files before anything loads (torch-free)
- :mod:`helpers.lm.load`      :class:`~helpers.lm.load.LoadedModel` and ``load_model`` (registry, hub, folder, .gguf)
- :mod:`helpers.lm.twin`      the untrained twin: same architecture and config, the family's seeded initialisation
- :mod:`helpers.lm.quantise`  GGUF quantise-dequantise round trips (what 4-bit rounding does to a statistic)
"""
