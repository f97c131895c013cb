"""Helpers for the meta-learning-perspective compendium (Wu & Varshney).

The notebooks under ``notebooks/`` stay thin and call into these modules:

- :mod:`helpers.models`   load any decoder-only causal LM with a uniform view of its parts
- :mod:`helpers.data`     test corpora, filtering and seeded sampling
- :mod:`helpers.capture`  residual-stream capture with hooks
- :mod:`helpers.lens`     last-block lens (Eq. 14) and logit lens
- :mod:`helpers.norms`    norm statistics (Conjecture 4.1, Table 1)
- :mod:`helpers.pipeline` streamed, cached, resumable analysis over a corpus
- :mod:`helpers.store`    results on disk keyed by a configuration hash
- :mod:`helpers.plots`    plotly figures saved as HTML and PNG
"""

__version__ = "0.1.0"


class CompendiumError(Exception):
    """An error caused by the user's input, reported as one line saying what to do."""
