"""How notebook 07 part 2's verdicts depend on the size of its subset: keep a seeded share of the subset's texts,
read the verdicts again, count how many change. The question it answers: could the subset (the start-of-step
slope, its controls, the line search and the ablation: most of a cold run's time) be smaller without moving a
verdict?

Reads the records that notebook 07 cached (default profile); it computes nothing and stops if a record is not
cached. The verdicts read only on all tokens ('inner', 'true_end') must not move: the script checks that too.

    python benchmarks/descent_subset_power.py [--keep 0.5] [--draws 5] [--cache results/cache] [--models M ...]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.config import get_profile  # noqa: E402
from helpers.corpus.samples import load_samples  # noqa: E402
from helpers.experiments import descent_slopes  # noqa: E402
from helpers.experiments.descent_slopes_tables import ablation, powered_by_third  # noqa: E402

KEYS = {"thirds": ["model", "weights", "gradient", "step", "third"],
        "ablation": ["model", "weights", "reading", "gradient", "step", "third"]}


def cached_records(cache: str, models: list[str] | None = None) -> pd.DataFrame:
    """Notebook 07 part 2's records of the default profile, from the cache only."""
    def refuse(*_a, **_k):
        raise SystemExit("a record of notebook 07 part 2 is not cached: run notebook 07 first (make reproduce)")

    read = descent_slopes.batched_records
    descent_slopes.batched_records = lambda root, config, batches, compute, **kw: read(root, config, batches, refuse,
                                                                                     **kw)
    settings = get_profile("default")
    texts = {ds: load_samples(ds, "data/filtered", None) for ds in ("wikitext-103", "1bw")}
    return descent_slopes.run_models(models or list(settings.powered.specs), texts, settings.powered, settings, 0, cache,
                                     "cpu").records


def keep_share(rec: pd.DataFrame, keep: float, seed: int) -> pd.DataFrame:
    """``rec`` with the subset cut to a seeded share ``keep`` of each model's subset texts (the same texts for the
    model and its twin): the dropped texts' subset columns become NaN and their tokens leave the subset."""
    line = rec["line"].astype(bool)
    only_subset = [c for c in rec.columns if rec[c].dtype.kind == "f" and rec.loc[~line, c].isna().all()
                   and rec.loc[line, c].notna().any()]
    out, rng = rec.copy(), random.Random(seed)
    for model, d in rec[line].groupby("model", sort=False):
        clusters = sorted(d["cluster"].unique())
        dropped = set(clusters) - set(rng.sample(clusters, round(keep * len(clusters))))
        gone = (rec["model"] == model) & line & rec["cluster"].isin(dropped)
        out.loc[gone, only_subset] = float("nan")
        out.loc[gone, "line"] = False
    return out


def verdicts(rec: pd.DataFrame, n_boot: int) -> dict[str, pd.Series]:
    """The verdict of every row of the thirds table and of the ablation's gradient rows, by their keys."""
    thirds = powered_by_third(rec, n_boot)
    abl = ablation(rec, n_boot)
    abl = abl[abl["component"] == "gradient"]
    return {"thirds": thirds.set_index(KEYS["thirds"])["verdict"], "ablation": abl.set_index(KEYS["ablation"])["verdict"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=float, default=0.5, help="share of each model's subset texts kept")
    parser.add_argument("--draws", type=int, default=5, help="seeded draws of the kept texts")
    parser.add_argument("--cache", default="results/cache")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--models", nargs="*", help="default: the profile's models of notebook 07 part 2")
    args = parser.parse_args()
    rec = cached_records(args.cache, args.models)
    base = verdicts(rec, args.n_boot)
    trained = {k: v[v.index.get_level_values("weights") == "trained"] for k, v in base.items()}
    print(f"whole subset: {len(trained['thirds'])} trained thirds-table verdicts, {len(trained['ablation'])} ablation "
          f"verdicts; keeping {args.keep:.0%} of each model's subset texts, {args.draws} draws")
    for draw in range(args.draws):
        again = verdicts(keep_share(rec, args.keep, draw), args.n_boot)
        for table, old in trained.items():
            new = again[table].reindex(old.index)
            moved = old[new != old]
            on_all = moved[moved.index.get_level_values("gradient").isin(["inner", "true_end"])] if table == "thirds" \
                else moved.iloc[:0]
            if len(on_all):
                raise SystemExit(f"a verdict read on all tokens moved: {on_all.to_dict()} (the masking is wrong)")
            print(f"draw {draw}, {table}: {len(moved)} of {len(old)} verdicts change")
            for key, before in moved.items():
                print(f"    {' / '.join(map(str, key))}: {before} -> {new[key]}")


if __name__ == "__main__":
    main()
