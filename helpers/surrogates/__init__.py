"""Linear surrogates of decoder blocks and the eigenvalue condition (Eq. 10-12, Proposition 1, Table 2).

The paper explains the growing norm of the current token's representation with a linear surrogate of
each block, ``W_linear = (I + W_FFN)(I + W_MHSA)``, and Proposition 1 (an eigenvalue condition on
``W^T W`` that implies ``||W x|| >= ||x||``). One module per concept:

- :mod:`helpers.surrogates.algebra`       Proposition 1, the direct check, affine maps (float64)
- :mod:`helpers.surrogates.weights`       block layouts per family; attention / FFN weights, column-vector layout
- :mod:`helpers.surrogates.record`        one real forward pass on one sample: every block call's inputs
- :mod:`helpers.surrogates.jacobian`      the exact local Jacobian of a real block call
- :mod:`helpers.surrogates.constructions` Eq. 10 linear attention, FFN linear / frozen-activation maps, per block
- :mod:`helpers.experiments.zoo`        the models (trained, untrained twin, cached hub) and samples of notebook 05
- :mod:`helpers.surrogates.experiment`    evaluate every construction on every block and sample; the option ablation
- :mod:`helpers.surrogates.report`        Table 2 (analogues only), agreement with the real block, captions
- :mod:`helpers.surrogates.reading`       notebook 05's reading, rendered from the numbers of the run

Public names live in their modules (``from helpers.surrogates.algebra import gram_eigh``); this package
re-exports nothing, so each name has one home.
"""
