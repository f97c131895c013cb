"""Experiments, the top layer under the notebooks: one module per notebook, each with ``run(...)`` (or the
notebook's named steps), ``report_*`` functions returning ``(figure, table)`` and a ``reading`` rendered from the
numbers. :mod:`helpers.experiments.zoo` turns model specs into loaded models (or a printed skip) with their
controls; :mod:`helpers.experiments.paper` holds the paper's published numbers, once.

- ``eq1`` (00), ``inner_loss`` (02), ``table1`` (03), ``pca`` (04), ``dynamics`` (06), ``descent`` and
  ``descent_tables`` (07), ``crossmodel`` (08); notebook 05 runs :mod:`helpers.surrogates`.
"""
