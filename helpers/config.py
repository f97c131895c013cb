"""The one profile registry: every run size of every notebook, the CLI and every experiment.

- ``smoke``: what ``make test`` runs (seconds per notebook).
- ``default``: what ``make reproduce`` runs on a 2-core CPU with the default model.
- ``paper``: the paper's full protocol (every qualifying WikiText-103 test text, 5,000 1BW samples, no
  truncation below the model's context) and larger training runs; for GPU machines or a patient CPU.

A :class:`Profile` bundles one frozen dataclass per experiment (and the ``ModelConfig``, ``TrainConfig``, ...
they take); :func:`get_profile` is the only lookup (one :class:`~helpers.CompendiumError` for an unknown name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from helpers import CompendiumError

DATASETS = ("wikitext-103", "1bw")  # the paper's test corpora (Sec. 5.1)
MAX_FINAL_LOSS = 1.0  # the paper keeps tokens whose final loss is <= 1 for Fig. 2/4


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and seeds of a synthetic data set (every size is a parameter)."""

    n_tasks: int = 4
    vocab_size: int = 12
    alpha: float = 0.25
    seq_len: int = 64
    min_segment: int = 8
    max_segment: int = 24
    n_train: int = 4000
    n_val: int = 512
    task_seed: int = 0
    data_seed: int = 1

    def as_dict(self) -> dict:
        """Plain dict (for hashing and display)."""
        return asdict(self)


@dataclass(frozen=True)
class ModelSample:
    """A further model of notebooks 02-04 (or 07) with its own sample of texts per dataset (None = the profile's)."""

    model: str
    wikitext_texts: int | None = None
    onebw_texts: int | None = None


@dataclass(frozen=True)
class CorpusProfile:
    """Notebooks 02-04 and ``python -m helpers analyse``: texts per dataset (None = every text),
    tokens kept per text (None = the model's context), last-token vectors kept for PCA, PCA samples,
    bootstrap resamples, further models with their own samples (``make reproduce`` runs 02-04 on each), the
    random share of tokens that get the lens besides the paper's filter (the "all tokens" panel), and whether
    the logit lens (not in the paper; as costly as the inner loss's LM head) runs too, and whether Table 1 gets
    the untrained twin's rows (norms only: one more forward pass over the sample); ``filter_share``: the seeded
    share of the tokens passing the paper's filter that get the lens (None: all; the paper profile's ~10^5 give
    a mean curve whose interval a quarter of them keeps far below any difference read, at a quarter of the cost)."""

    wikitext_texts: int | None
    onebw_texts: int | None
    max_tokens: int | None
    n_vectors: int
    pca_samples: int
    n_boot: int
    models: tuple[ModelSample, ...] = ()
    lens_share: float = 0.1
    logit_lens: bool = True
    twin: bool = True
    filter_share: float | None = None

    def n_texts(self, dataset: str, model: str | None = None) -> int | None:
        """Texts sampled from ``dataset`` (None = all) for ``model`` (its own sample if it has one)."""
        if dataset not in DATASETS:
            raise CompendiumError(f"unknown dataset '{dataset}': choose one of {', '.join(DATASETS)}")
        for extra in self.models:
            if extra.model == model:
                n = extra.wikitext_texts if dataset == "wikitext-103" else extra.onebw_texts
                if n is not None:
                    return n
        return self.wikitext_texts if dataset == "wikitext-103" else self.onebw_texts


@dataclass(frozen=True)
class EigenProfile:
    """Notebook 05: texts per dataset (one current token each: the last kept token), tokens kept per
    text, shorter texts skipped, every ``layer_stride``-th block (the last always included), samples
    whose spectra are kept, and the option ablation's sample count and layer stride."""

    n_samples: int
    max_tokens: int
    min_tokens: int
    layer_stride: int
    spectra_samples: int
    ablation_samples: int
    ablation_layer_stride: int


@dataclass(frozen=True)
class ModelShape:
    """GPT-2 architecture depth and width of a project-trained model."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64


@dataclass(frozen=True)
class ModelConfig:
    """GPT-2 architecture sizes (dropout is always 0, so training is deterministic)."""

    vocab_size: int
    n_positions: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: AdamW, linear warmup over ``warmup_frac`` of the steps, cosine decay
    to ``min_lr_frac * lr``, gradient clipping at ``grad_clip``."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_batch_size: int = 128


@dataclass(frozen=True)
class NaturalData:
    """Natural-text training data: BPE vocabulary (None = the full 50,257-token GPT-2 BPE), window length,
    lines read per file (None = all), validation share, window caps and the split seed."""

    vocab_size: int | None
    seq_len: int
    max_lines_per_file: int | None
    val_fraction: float
    max_train_windows: int | None
    max_val_windows: int
    split_seed: int = 0

    def as_dict(self) -> dict:
        """Plain dict (for hashing and the data pipeline)."""
        return asdict(self)


@dataclass(frozen=True)
class TrainingProfile:
    """Data, model shape and optimisation of one project-trained model."""

    data: SyntheticConfig | NaturalData
    model: ModelShape
    train: TrainConfig


@dataclass(frozen=True)
class MeasureConfig:
    """Sample sizes of the per-checkpoint measurements of notebook 06 (all seeded by ``seed``)."""

    n_outer: int = 256
    n_inner: int = 64
    n_norm: int = 256
    n_cluster: int = 1500
    n_attention: int = 256
    top_k: int = 10
    min_position: int = 4
    kmeans_n_init: int = 2
    batch_size: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Eq1Profile:
    """Notebook 00's Eq. (1) example: input and output width, SGD steps, new inputs for the dual form."""

    d_in: int
    d_out: int
    steps: int
    n_new: int


@dataclass(frozen=True)
class DescentProfile:
    """Notebook 07 (descent test): texts per dataset (one current token each), tokens kept per text, random
    directions per update, and models with their own (smaller) samples (a 262k-word LM head is costly; 0 skips)."""

    n_texts: int
    max_tokens: int
    n_random: int
    models: tuple[ModelSample, ...] = ()

    def texts_for(self, dataset: str, model: str | None = None) -> int:
        """Texts sampled from ``dataset`` for ``model`` (its own sample if it has one)."""
        for extra in self.models:
            n = extra.wikitext_texts if dataset == "wikitext-103" else extra.onebw_texts
            if extra.model == model and n is not None:
                return n
        return self.n_texts


@dataclass(frozen=True)
class PoweredSample:
    """One model's sample in notebook 07 part 2: WikiText-103 texts (several tokens each), 1BW sentences (one each),
    texts per corpus giving one token to the subset (a pass of the rest per variant and layer), its layer stride."""

    model: str
    wikitext_texts: int
    onebw_texts: int
    line_texts: int
    line_stride: int = 1  # (and the last layer)

    tokens = property(lambda self: self.wikitext_texts + self.onebw_texts > 0)  # whether the model runs at all


@dataclass(frozen=True)
class PoweredDescentProfile:
    """Notebook 07 part 2: models, texts and current tokens sampled, line search scales, resamples, batch size."""

    specs: tuple[str, ...] = ("smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "natural")
    max_tokens: int = 160
    per_text: int = 6
    min_context: int = 128
    alphas: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    sample: PoweredSample = PoweredSample("*", 40, 160, 30)
    models: tuple[PoweredSample, ...] = ()
    n_boot: int = 1000
    batch_tokens: int = 2048  # Qwen2.5-Coder-1.5B's largest batch: 9.5 GB (11.8 GB at 4096); records do not change

    def sample_for(self, model: str) -> PoweredSample:  # the model's own sample if it has one, else the default
        return next((m for m in self.models if m.model == model), self.sample)


@dataclass(frozen=True)
class CrossModelProfile:
    """Notebook 08: texts per dataset every model sees, one token cap (at most the natural model's context), the
    models ("natural": every checkpoint of the project-trained one), the GGUF schemes checked, twin seed, resamples;
    the lens's share carries the twin's tau (flat within +-0.05 needs a half-width well under 0.05); no logit lens."""

    wikitext_texts: int
    onebw_texts: int
    max_tokens: int = 64
    models: tuple[str, ...] = ("smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "natural")
    schemes: tuple[str, ...] = ("Q4_1", "Q4_K_M")
    twin_seed: int = 0
    n_boot: int = 1000
    lens_share: float = 0.3
    logit_lens: bool = False


@dataclass(frozen=True)
class GeometryProfile:
    """Notebook 09 (what is learned, what is geometry): WikiText-103 texts (one sample for every model, twin and
    perturbed copy), tokens per text, the models, the twins' initialisation scales (plus the released model's own
    where the registry knows it), a twin with zero output projections, the perturbed models, twin seed, resamples."""

    n_texts: int = 40
    max_tokens: int = 64
    models: tuple[str, ...] = ("smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "natural")
    twin_scales: tuple[float, ...] = (0.005, 0.02)
    zero_output: bool = True
    perturbed: tuple[str, ...] = ("smollm2-135m", "natural")
    twin_seed: int = 0
    n_boot: int = 1000


@dataclass(frozen=True)
class Profile:
    """Every run size of one profile."""

    name: str
    corpus: CorpusProfile
    eigen: EigenProfile
    synthetic: TrainingProfile
    natural: TrainingProfile
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    eq1: Eq1Profile = field(default_factory=lambda: Eq1Profile(16, 5, 200, 100))
    descent: DescentProfile = field(default_factory=lambda: DescentProfile(20, 24, 8))
    cross: CrossModelProfile = field(default_factory=lambda: CrossModelProfile(40, 100))
    geometry: GeometryProfile = field(default_factory=GeometryProfile)
    powered: PoweredDescentProfile = field(default_factory=PoweredDescentProfile)

    def model_names(self) -> set[str]:
        """Every model the profile's notebooks run (``make reproduce`` installs the registry ones)."""
        names = ({"smollm2-135m", "gemma-3-270m"} | set(self.cross.models) | set(self.geometry.models)
                 | set(self.powered.specs))
        return names | {m.model for m in self.corpus.models} | {m.model for m in self.descent.models}


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        corpus=CorpusProfile(wikitext_texts=6, onebw_texts=8, max_tokens=24, n_vectors=6, pca_samples=6, n_boot=50),
        eigen=EigenProfile(n_samples=1, max_tokens=12, min_tokens=6, layer_stride=6, spectra_samples=1,
                           ablation_samples=1, ablation_layer_stride=10),
        synthetic=TrainingProfile(
            data=SyntheticConfig(n_tasks=3, vocab_size=8, alpha=0.1, seq_len=32, min_segment=6, max_segment=16,
                                 n_train=256, n_val=64),
            model=ModelShape(n_layer=2, n_head=2, n_embd=32),
            train=TrainConfig(epochs=2, batch_size=32, lr=3e-3),
        ),
        natural=TrainingProfile(
            data=NaturalData(vocab_size=1024, seq_len=32, max_lines_per_file=300, val_fraction=0.1,
                             max_train_windows=256, max_val_windows=32),
            model=ModelShape(n_layer=2, n_head=2, n_embd=32),
            train=TrainConfig(epochs=2, batch_size=32, lr=3e-3),
        ),
        measure=MeasureConfig(n_outer=64, n_inner=16, n_norm=32, n_cluster=300, n_attention=64, kmeans_n_init=1),
        eq1=Eq1Profile(8, 4, 50, 20),
        descent=DescentProfile(n_texts=3, max_tokens=12, n_random=4, models=(ModelSample("gemma-3-270m", 0, 0),)),
        cross=CrossModelProfile(wikitext_texts=3, onebw_texts=4, max_tokens=24, models=("smollm2-135m", "natural"),
                                n_boot=50),
        geometry=GeometryProfile(n_texts=4, max_tokens=24, models=("natural",), twin_scales=(0.02,),
                                 perturbed=("natural",), n_boot=50),
        powered=PoweredDescentProfile(specs=("natural",), max_tokens=40, per_text=3, min_context=16,
                                      sample=PoweredSample("*", 4, 4, 3), n_boot=50),
    ),
    "default": Profile(
        name="default",
        # whole texts: 60 WikiText-103 + 200 1BW (~9k + 6k SmolLM2 tokens; was 240 + 800), the larger models 16 + 60:
        # Claim 2's verdicts lie tens of pp from their thresholds at half-widths 0.3-2 pp; the paper profile has 284k
        corpus=CorpusProfile(wikitext_texts=60, onebw_texts=200, max_tokens=None, n_vectors=150, pca_samples=50,
                             n_boot=1000, models=(ModelSample("gemma-3-270m", wikitext_texts=16, onebw_texts=60),
                                                  ModelSample("qwen2.5-coder-0.5b", wikitext_texts=16, onebw_texts=60),
                                                  ModelSample("qwen2.5-coder-1.5b", wikitext_texts=16, onebw_texts=60))),
        # 25 texts x 4 blocks of the natural model = 100 steps per dataset: Claim 3's rule reads a correlation
        eigen=EigenProfile(n_samples=25, max_tokens=32, min_tokens=8, layer_stride=1, spectra_samples=1,
                           ablation_samples=2, ablation_layer_stride=1),
        synthetic=TrainingProfile(
            data=SyntheticConfig(n_tasks=4, vocab_size=12, alpha=0.1, seq_len=64, min_segment=12, max_segment=32,
                                 n_train=4000, n_val=512),
            model=ModelShape(n_layer=4, n_head=4, n_embd=64),
            train=TrainConfig(epochs=10, batch_size=32, lr=3e-3),
        ),
        natural=TrainingProfile(
            data=NaturalData(vocab_size=8192, seq_len=64, max_lines_per_file=None, val_fraction=0.02,
                             max_train_windows=6000, max_val_windows=256),
            model=ModelShape(n_layer=4, n_head=4, n_embd=128),
            train=TrainConfig(epochs=3, batch_size=16, lr=2e-3),
        ),
        measure=MeasureConfig(),
        eq1=Eq1Profile(16, 5, 200, 100),
        # a gradient per (token, layer) through the last block and LM head: ~30 ms per pair for SmolLM2 on one core
        descent=DescentProfile(n_texts=20, max_tokens=24, n_random=8,
                               models=(ModelSample("gemma-3-270m", 6, 6), ModelSample("natural", 100, 100))),
        # a subset token costs ~11x an ordinary one (benchmarks/descent_subset_cost.py); twins lack reading (b)
        powered=PoweredDescentProfile(per_text=4, sample=PoweredSample("*", 60, 160, 30),
                                      models=(PoweredSample("natural", 60, 160, 60),
                                              PoweredSample("qwen2.5-coder-0.5b", 60, 160, 30, 2),
                                              PoweredSample("qwen2.5-coder-1.5b", 60, 160, 30, 2))),
    ),
    "paper": Profile(
        name="paper",
        # the paper's protocol, and only its work: the lens on the filtered tokens plus a 2% "all tokens" sample, no
        # logit lens (the LM head dominates the run), no twin rows of Table 1 (the default sample and 08 have them)
        corpus=CorpusProfile(wikitext_texts=None, onebw_texts=None, max_tokens=None, n_vectors=150, pca_samples=150,
                             n_boot=1000, lens_share=0.02, logit_lens=False, twin=False, filter_share=0.25),
        eigen=EigenProfile(n_samples=100, max_tokens=64, min_tokens=10, layer_stride=1, spectra_samples=5,
                           ablation_samples=20, ablation_layer_stride=1),
        synthetic=TrainingProfile(
            data=SyntheticConfig(n_tasks=8, vocab_size=16, alpha=0.1, seq_len=128, min_segment=16, max_segment=48,
                                 n_train=20000, n_val=1024),
            model=ModelShape(n_layer=6, n_head=4, n_embd=128),
            train=TrainConfig(epochs=20, batch_size=64, lr=2e-3),
        ),
        natural=TrainingProfile(
            data=NaturalData(vocab_size=None, seq_len=128, max_lines_per_file=None, val_fraction=0.02,
                             max_train_windows=None, max_val_windows=512),
            model=ModelShape(n_layer=6, n_head=8, n_embd=256),
            train=TrainConfig(epochs=3, batch_size=32, lr=1e-3),
        ),
        measure=MeasureConfig(n_outer=1024, n_inner=256, n_norm=1024, n_cluster=5000, n_attention=1024,
                              kmeans_n_init=3),
        eq1=Eq1Profile(64, 10, 2000, 500),
        descent=DescentProfile(n_texts=500, max_tokens=128, n_random=32),
        cross=CrossModelProfile(wikitext_texts=400, onebw_texts=1000, max_tokens=128,
                                models=("smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b",
                                        "natural", "gpt2", "meta-llama/Llama-2-7b-hf")),
        geometry=GeometryProfile(n_texts=400, max_tokens=128),
        powered=PoweredDescentProfile(max_tokens=256, sample=PoweredSample("*", 200, 800, 100)),
    ),
}


PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)


def get_profile(name: str) -> Profile:
    """The profile called ``name``; one-line :class:`CompendiumError` for anything else."""
    if not isinstance(name, str) or name not in PROFILES:
        raise CompendiumError(f"unknown profile {name!r}: choose one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]
