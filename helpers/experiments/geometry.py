"""Notebook 09: Conjecture 4.1 read honestly, what is learned and what is geometry.

Every model runs on one WikiText-103 sample beside nulls built from its own numbers: the direction-randomised null
(each step keeps its size, its direction is drawn at random: closed form), the swap nulls (another token's update),
untrained twins at several initialisation scales and one with zero output projections, each beside its own
closed-form prediction; for the perturbed models (SmolLM2) a 4-bit rounding and Gaussian noise of the same size
count how many steps and verdicts a weight perturbation flips. Tables: ``results/09_*``; figures ``figures/09_*``.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from helpers import CompendiumError
from helpers.config import PROFILES, Profile
from helpers.corpus.samples import describe_empty, filtered_samples, sample_texts
from helpers.experiments.zoo import load_or_skip
from helpers.lm.load import LoadedModel
from helpers.lm.quantise import noisy_twin, quantised_twin
from helpers.lm.registry import REGISTRY
from helpers.lm.twin import untrained_twin
from helpers.paths import CACHE_DIR, FILTERED_DIR
from helpers.report.figures_geometry import fig_cos_by_layer, fig_rates_vs_null
from helpers.report.findings_geometry import cov_text, opposition_text
from helpers.report.output import save_figure, save_table
from helpers.runs.geometry import run_geometry
from helpers.stats.geometry import (
    by_layer,
    decrease_sources,
    geometry_rates,
    step_indicators,
    table1_steps,
    verdict,
)
from helpers.stats.intervals import ci_text

DATASET = "wikitext-103"
TRAINED = "trained"
ROUNDING, NOISE = "Q4_K_M round trip", "noise of the Q4_K_M size"


def round_trip_role(spec: str, scheme: str) -> str:
    """The role of ``spec`` after ``scheme``'s round trip, named from the perturbation: a registry model already
    published in ``scheme`` is unchanged by it (a check of the round trip, 0 flips by construction)."""
    own = REGISTRY[spec].scheme if spec in REGISTRY else None
    return f"{scheme} round trip" + (" (its own scheme: unchanged by construction)" if own == scheme else "")


@dataclass
class GeoEntry:
    """One model (or twin, or perturbed copy) on the sample: its step records and what produced them."""

    group: str
    role: str
    label: str
    d: int
    n_layers: int
    params: float
    describe: str
    geo: dict[str, np.ndarray]
    init_std: float | None = None
    reference: str | None = None  # a perturbed copy: the role of the entry it perturbs

    @property
    def kinds(self) -> list[str]:
        """The step kinds recorded (block, and the half-steps where the block has them)."""
        return [k for k in ("block", "attn", "mlp") if f"{k}_z" in self.geo]


@dataclass
class GeometryRun:
    """Every entry of notebook 09 and the sample it ran on."""

    entries: list[GeoEntry]
    profile: str
    n_texts: int
    max_tokens: int
    timings: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_boot: int = 1000  # the profile's resamples for the intervals

    def caption(self, what: str) -> str:
        """Provenance line of a figure or table."""
        n_tok = max((len(e.geo["text_id"]) for e in self.entries), default=0)
        return (f"{what} | {DATASET}: {self.n_texts} texts, <= {self.max_tokens} tokens each, positions >= 5 "
                f"(up to {n_tok:,} tokens per model) | steps of Table 1 (blocks 0..L-2) | profile {self.profile}")


def scales_for(spec: str, profile_scales: tuple[float, ...]) -> list[tuple[float, str]]:
    """The twins' initialisation scales with a note: the profile's, plus the released model's where the registry
    knows it (0.02 is the library default that a GGUF-derived config falls back to)."""
    out = {round(s, 6): f"sigma {s:g}" + (" (library default)" if s == 0.02 else "") for s in profile_scales}
    if spec in REGISTRY:
        released = REGISTRY[spec].init_std
        key = round(released, 6)
        out[key] = (f"sigma {released:.3g} (library default = released config)" if key in out and key == 0.02
                    else out.get(key, f"sigma {released:.3g}") + " (released config)")
    return sorted(out.items())


def _entry(lm: LoadedModel, group: str, role: str, geo: dict, init_std: float | None = None,
           reference: str | None = None) -> GeoEntry:
    return GeoEntry(group=group, role=role, label=lm.label, d=int(lm.model.config.hidden_size if hasattr(
        lm.model.config, "hidden_size") else lm.model.config.n_embd), n_layers=lm.n_layers, params=float(lm.n_params),
        describe=lm.describe(), geo=geo, init_std=init_std, reference=reference)


def _perturbed(lm: LoadedModel, spec: str, texts: list[str], opts: dict) -> list[GeoEntry]:
    """SmolLM2 (or any perturbed model) after a Q4_K_M round trip, after Gaussian noise of that rounding's
    per-tensor size, and after a Q4_1 round trip (SmolLM2's own scheme: a check that gives 0 flips); the
    released-scale twin rounded the same way."""
    rounded = quantised_twin(lm, "Q4_K_M")
    errors = dict(zip(rounded.extra["tensors"].name, rounded.extra["tensors"].rel_error, strict=True))
    out = [_entry(rounded, spec, round_trip_role(spec, "Q4_K_M"), run_geometry(rounded, texts, DATASET, **opts),
                  reference=TRAINED)]
    del rounded
    noisy = noisy_twin(lm, errors, seed=0, name="q4_k_m-size noise")
    out.append(_entry(noisy, spec, NOISE, run_geometry(noisy, texts, DATASET, **opts), reference=TRAINED))
    del noisy
    again = quantised_twin(lm, "Q4_1")
    out.append(_entry(again, spec, round_trip_role(spec, "Q4_1"), run_geometry(again, texts, DATASET, **opts),
                      reference=TRAINED))
    return out


def _model_entries(spec: str, texts: list[str], prof, opts: dict, cache_dir: str, device: str,
                   profile: Profile) -> list[GeoEntry]:
    """The entries of ``spec``: the model, its perturbed copies (``prof.perturbed``), its twins and the rounded
    twin. The model and its twins start as skeletons: weights are loaded (a twin built) only for geometry that is
    not cached, and a twin is built only after the model's weights are freed (one model in memory)."""
    skeleton = load_or_skip(spec, profile, cache_dir, device=device, weights=False)
    if skeleton is None:
        return []
    held = {"lm": skeleton}

    def weights() -> LoadedModel:
        if held["lm"].skeleton:
            held["lm"] = load_or_skip(spec, profile, cache_dir, device=device)
        return held["lm"]

    out = [_entry(skeleton, spec, TRAINED, run_geometry(skeleton, texts, DATASET, load=weights, **opts))]
    if spec in prof.perturbed:
        out += _perturbed(weights(), spec, texts, opts)
    scales = scales_for(spec, prof.twin_scales)
    ref_std = REGISTRY[spec].init_std if spec in REGISTRY else 0.02  # the twin that is rounded like the model
    for std, note in scales + [(None, "zero output projections")] * prof.zero_output:
        kw = {"seed": prof.twin_seed, "init_std": std if std is not None else 0.02, "zero_output": std is None}
        twin = untrained_twin(skeleton, device="meta", **kw)  # a skeleton: the same fingerprint as the real one

        def build(kw=kw) -> LoadedModel:
            base = held["lm"]  # the model's weights, if loaded, are freed first
            return untrained_twin(base, release=not base.skeleton, device=device, **kw)

        role = f"twin, {note}"
        geo = run_geometry(twin, texts, DATASET, load=build, **opts)
        out.append(_entry(twin, spec, role, geo, init_std=std))
        if spec in prof.perturbed and std is not None and abs(std - ref_std) < 1e-6:  # scales are rounded to 1e-6
            rt = quantised_twin(build(), "Q4_K_M")
            out.append(_entry(rt, spec, f"{role}, {ROUNDING}", run_geometry(rt, texts, DATASET, **opts), std,
                              reference=role))
            del rt
        del twin
        gc.collect()
    return out


def run(specs: list[str], profile: Profile = PROFILES["default"], cache_dir: str = CACHE_DIR, device: str = "cpu",
        data_dir: str | None = None, filtered_dir: str = FILTERED_DIR, batch_tokens: int = 2048) -> GeometryRun:
    """Every model of ``specs`` with its twins (and perturbed copies) on the profile's WikiText-103 sample."""
    prof = profile.geometry
    kept, report = filtered_samples(DATASET, filtered_dir, data_dir)
    if not kept:
        raise CompendiumError(describe_empty(report, folder=data_dir))
    texts = sample_texts(kept, prof.n_texts)
    opts = {"max_tokens": prof.max_tokens, "batch_tokens": batch_tokens, "cache_dir": cache_dir}
    entries, timings = [], []
    for spec in specs:
        start = time.time()
        got = _model_entries(spec, texts, prof, opts, cache_dir, device, profile)
        entries += got
        if got:
            timings.append({"model": got[0].label, "entries": len(got), "seconds": round(time.time() - start, 1),
                            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
    if not entries:
        raise CompendiumError(f"none of the models {specs} is available here: install them with `make models`")
    return GeometryRun(entries, profile.name, len(texts), prof.max_tokens, pd.DataFrame(timings), prof.n_boot)


def rates_table(r: GeometryRun, n_boot: int = 1000) -> pd.DataFrame:
    """One row per entry and step kind: observed, direction-null and swap-null rates with intervals, and the
    verdict of observed - direction null."""
    rows = []
    for e in r.entries:
        for kind in e.kinds:
            st = geometry_rates(e.geo, kind, e.d, n_boot=n_boot)
            still = bool((e.geo[f"{kind}_dz"] == 0).all())  # zero output projections: no update, nothing to test
            if still:
                st |= {f"vs_null_{s}_{b}": np.nan for s in ("pair", "sequence") for b in ("lo", "hi")}
            rows.append({"model": e.label, "group": e.group, "role": e.role, "layers": e.n_layers, "d": e.d,
                         "params": e.params, **st,
                         "verdict_pair": "no update (dz = 0)" if still else verdict(st["vs_null_pair_lo"],
                                                                                     st["vs_null_pair_hi"]),
                         "verdict_sequence": "no update (dz = 0)" if still else verdict(st["vs_null_sequence_lo"],
                                                                                         st["vs_null_sequence_hi"]),
                         "verdict_pair_cov": "no update (dz = 0)" if still or "vs_cov_pair_lo" not in st else verdict(
                             st["vs_cov_pair_lo"], st["vs_cov_pair_hi"])})
    return pd.DataFrame(rows)


def flips_table(r: GeometryRun) -> pd.DataFrame:
    """Each perturbed copy against its unperturbed model on the same tokens (Table 1's block steps): flipped steps
    and sequence verdicts, the rates' change, the typical perturbation of a step's relative norm change (median
    |delta' - delta|) and the share of decreasing steps smaller than it (decreases rounding could create)."""
    rows = []
    base = {(e.group, e.role): e for e in r.entries}
    for e in r.entries:
        ref_role = e.reference
        if ref_role is None or (e.group, ref_role) not in base:
            continue
        a, b = base[(e.group, ref_role)].geo, e.geo
        if not np.array_equal(a["text_id"], b["text_id"]) or not np.array_equal(a["position"], b["position"]):
            continue
        ok_a, ok_b = step_indicators(a, "block"), step_indicators(b, "block")
        da, db = _relative_change(a), _relative_change(b)
        pert = float(np.median(np.abs(db - da)))
        dec = ~ok_a
        rows.append({"model": base[(e.group, ref_role)].label, "group": e.group, "compared with": ref_role,
                     "perturbation": e.role,
                     "tokens": int(len(ok_a)), "step flips %": 100 * float(np.mean(ok_a != ok_b)),
                     "sequence flips %": 100 * float(np.mean(ok_a.all(1) != ok_b.all(1))),
                     "pair change (pp)": 100 * float(ok_b.mean() - ok_a.mean()),
                     "sequence change (pp)": 100 * float(ok_b.all(1).mean() - ok_a.all(1).mean()),
                     "decreasing steps %": 100 * float(dec.mean()),
                     "median |step change| from the perturbation": pert,
                     "decreases smaller than that %": 100 * float(np.mean(np.abs(da[dec]) < pert)) if dec.any()
                     else np.nan})
    return pd.DataFrame(rows)


def _relative_change(geo: dict) -> np.ndarray:
    """(|z + dz| - |z|) / |z| of Table 1's block steps."""
    s = table1_steps(geo, "block")
    z, dz, dot = geo["block_z"][:, s], geo["block_dz"][:, s], geo["block_dot"][:, s]
    return np.sqrt(np.maximum(z**2 + 2 * dot + dz**2, 0)) / z - 1


def sources_table(r: GeometryRun) -> pd.DataFrame:
    """Where the decreasing steps of each trained model come from (:func:`decrease_sources`)."""
    parts = [decrease_sources(e.geo).assign(model=e.label) for e in r.entries if e.role == TRAINED]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def layers_table(r: GeometryRun) -> pd.DataFrame:
    """Per layer and step kind, for every entry: rates, nulls and the quartiles of cos, r and -r/2."""
    return pd.concat([by_layer(e.geo, k, e.d).assign(model=e.label, group=e.group, role=e.role) for e in r.entries
                      for k in e.kinds], ignore_index=True)


def report(r: GeometryRun, results_dir: str, figures_dir: str) -> dict[str, pd.DataFrame]:
    """Write every table and figure of notebook 09; return the tables."""
    suffix = "" if r.profile == "default" else f"_{r.profile}"
    tables = {"rates": rates_table(r, r.n_boot), "by_layer": layers_table(r),
              "sources": sources_table(r), "flips": flips_table(r), "timings": r.timings}
    captions = {
        "rates": "Observed non-decrease beside the direction-randomised null (closed form from each step's |z| and "
                 "|dz|) and the swap nulls; observed - null with a paired cluster-bootstrap 95% CI and its verdict",
        "by_layer": "Per layer: observed non-decrease, the nulls, and quartiles of cos(z, dz), r = |dz|/|z| and the "
                    "threshold -r/2 (a step keeps the norm exactly when cos >= -r/2)",
        "sources": "Where the decreasing steps come from: sublayer, third of the depth, position, token frequency",
        "flips": "Weight perturbations against the unperturbed model on the same tokens: flipped steps and "
                 "verdicts, and the share of decreasing steps smaller than the perturbation of a step",
        "timings": "Wall time per model (load, every twin and perturbed copy) and the process's peak RSS after it",
    }
    for name, table in tables.items():
        if not table.empty:
            save_table(table, f"09_geometry_{name}{suffix}", results_dir, caption=r.caption(captions[name]))
    figs = {"09_rates_vs_null": fig_rates_vs_null(tables["rates"], "Conjecture 4.1: observed vs. nulls",
                                                  r.caption("pair level of whole-block steps"))}
    for e in r.entries:
        if e.role == TRAINED:
            layer = tables["by_layer"]
            twins = [x.role for x in r.entries if x.group == e.group and x.role.startswith("twin")
                     and ROUNDING not in x.role and "zero" not in x.role]
            twin = next((t for t in twins if "released" in t), next((t for t in twins if "0.02" in t), None))
            figs[f"09_cos_by_layer_{e.group}"] = fig_cos_by_layer(
                layer[(layer.group == e.group) & layer.role.isin([TRAINED, twin])], e.label,
                r.caption(f"{e.describe}; beside its {twin or 'twin'}"))
    for name, fig in figs.items():
        save_figure(fig, f"{name}{suffix}", figures_dir)
    return tables | {"figures": figs}


def _fmt(row: pd.Series, stat: str) -> str:
    return (f"{row[f'{stat}_pct']:.1f}% {ci_text(row[f'{stat}_lo'], row[f'{stat}_hi'])} vs. null "
            f"{row[f'null_{stat}_pct']:.1f}%: {row[f'vs_null_{stat}_pp']:+.1f} pp "
            f"{ci_text(row[f'vs_null_{stat}_lo'], row[f'vs_null_{stat}_hi'], sign=True)}, {row[f'verdict_{stat}']}")


def _sources_text(sources: pd.DataFrame | None, model: str) -> str:
    if sources is None or sources.empty:
        return ""
    s = sources[sources.model == model]
    sub = s[s.dimension == "sublayer"].set_index("cell")
    mid = s[(s.dimension == "depth third") & (s.cell == "middle")]
    if sub.empty or "mlp" not in sub.index:
        return ""
    mid_txt = ", ".join(f"{r.sublayer} {r.share_of_decreases_pct:.0f}%" for _, r in mid.iterrows())
    return (f" Decreases: {sub.loc['mlp', 'share_of_decreases_pct']:.0f}% at MLP half-steps; share in the middle third "
            f"of the depth: {mid_txt}.")


def reading(tables: dict[str, pd.DataFrame]) -> str:
    """The reading of notebook 09, rendered from its tables, with the rules stated beside the numbers."""
    rates, flips = tables["rates"], tables["flips"]
    block = rates[rates.kind == "block"]
    lines = ["**Rule (learned direction).** A model's update directions carry its non-decrease when its observed "
             "rate is *above* the direction-randomised null (same step sizes, random directions) with the paired 95% "
             "interval of the difference excluding 0; *below* means the directions are learned to shrink the "
             "stream; otherwise the rate is what step size and dimension give. Both outcomes are possible and "
             "reported."]
    for _, t in block[block.role == TRAINED].iterrows():
        halves = rates[(rates.model == t.model) & (rates.role == TRAINED) & rates.kind.isin(["attn", "mlp"])]
        half = "; ".join(f"{h.kind} half-steps pair {h.pair_pct:.1f}% vs. null {h.null_pair_pct:.1f}% "
                         f"({h.verdict_pair})" for _, h in halves.iterrows())
        lines.append(f"- **{t.model}** (d={t.d}, {t.steps} steps, {t.n_tokens:,} tokens): pair "
                     f"{_fmt(t, 'pair')}; sequence {_fmt(t, 'sequence')}; swap nulls pair {t.same_pair_pct:.1f}% "
                     f"(same text) / {t.other_pair_pct:.1f}% (other text)" + cov_text(t) + (f"; {half}" if half else "")
                     + ". " + opposition_text(t) + _sources_text(tables.get("sources"), t.model))
    lines.append("\n**Rule (twins).** A twin's rate is geometry when the closed form predicts it: |observed - "
                 "null| below 2 pp at the pair level. The twins' rates are set by their initialisation scale:")
    for group, g in block[block.role.str.startswith("twin") & ~block.role.str.contains("round")].groupby("group"):
        parts = [f"{x.role.removeprefix('twin, ')}: {x.pair_pct:.1f}% (null {x.null_pair_pct:.1f}%), sequence "
                 f"{x.sequence_pct:.1f}% (null {x.null_sequence_pct:.1f}%)" for _, x in g.iterrows()]
        ok = (g.vs_null_pair_pp.abs() < 2) | g.role.str.contains("zero")
        lines.append(f"- {group}: " + "; ".join(parts) + f" - predicted by the closed form for {int(ok.sum())} of "
                     f"{len(g)}.")
    if not flips.empty:
        lines.append("\n**Rule (quantisation).** Rounding could create the decreases if most decreasing steps are "
                     "smaller than the typical change a 4-bit perturbation makes to a step; otherwise they are not "
                     "rounding artefacts.")
        for _, f in flips.iterrows():
            lines.append(f"- {f.model} ({f['compared with']} -> {f.perturbation}): {f['step flips %']:.2f}% of steps "
                         f"and {f['sequence flips %']:.1f}% of sequence verdicts flip; {f['decreases smaller than that %']:.0f}"
                         f"% of its {f['decreasing steps %']:.1f}% decreasing steps are smaller than the median "
                         f"perturbation {f['median |step change| from the perturbation']:.2e}.")
    return "\n".join(lines)

