"""Corpora: the paper's test corpora (sources, checksums, the paper's filter, seeded samples), natural-text
training windows, and the synthetic in-context Markov tasks of the v2 training-dynamics experiments.

- :mod:`helpers.corpus.sources`    where a corpus file lives (argument > $METALEARN_DATA > data/ > hub), checksums, reading
- :mod:`helpers.corpus.samples`    the paper's filter (>= 10 words), seeded samples, the keyed filtered-sample cache
- :mod:`helpers.corpus.natural`    natural-text training data: GPT-2 BPE, packed windows
- :mod:`helpers.corpus.synthetic`  Dirichlet-row Markov tasks with their labels, oracle and bigram losses
"""
