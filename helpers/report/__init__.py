"""Reporting: writing figures (HTML + PNG) and tables (CSV + Markdown) with captions, drawing every
figure, and the README findings rendered from ``results/``.

- :mod:`helpers.report.output`            figure and table writers, captions
- :mod:`helpers.report.figures`           figures of the corpus analyses (02-04, 07, 08)
- :mod:`helpers.report.figures_training`  figures of notebooks 00, 05 and 06
- :mod:`helpers.report.findings`          README findings, one section per claim, from results/*.csv
"""
