"""Choose a run's generator snapshot and its test-time sampling settings.

    python scripts/select_checkpoint.py runs/qm9 [--samples 10000] [--seed 1] [--min-validity 0.975]
        [--min-uniqueness 0] [--rank-by uniqueness|fcd|qed|logp|sa] [--fcd-samples 2000]
        [--temperatures 0.9,1.0,...] [--min-ps 0,0.02,...] [--from-step S] [--every K]
        [--out scores.jsonl]

Scores every snapshot of ``runs/qm9/snapshots`` (written with ``train.keep_snapshots=true``) under
a grid of Gumbel-Max temperatures and min-p values. Among the settings at or above both floors
(``--min-validity``, ``--min-uniqueness``) it prints, best first:

- ``--rank-by uniqueness`` (the default): the most unique;
- ``--rank-by qed`` (or ``logp``, ``sa``): the best mean property of the valid samples
  (highest; lowest SA score), with the paper's scores and hits (``molgan.objectives``) in the row;
- ``--rank-by fcd``: the lowest FCD of the first ``--fcd-samples`` valid samples against the
  *validation* split of the snapshot's dataset, so that the test split, against which the headline
  FCD is measured, plays no part in the choice. FCD grows as samples shrink, so rows are compared
  at one sample size; a setting with fewer valid samples than that says so in ``fcd_samples``.

Selection uses seed 1 so that the headline evaluation (``scripts/bundle_checkpoint.py``, seed 0)
is made on other samples than the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from molgan.config import DataConfig
from molgan.evaluation import dataset_splits
from molgan.metrics import frechet_chemnet_distance
from molgan.objectives import DEFAULT_HITS, OBJECTIVES, objective_metrics
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings
from molgan.training.run_dir import RunDir

TEMPERATURES = (0.9, 1.0, 1.1, 1.2, 1.3, 1.5)
MIN_PS = (0.0, 0.02, 0.05, 0.1, 0.2)
RANKINGS = ("uniqueness", "fcd", *OBJECTIVES)


def score(
    sampler: MoleculeSampler, n: int, seed: int, temperature: float, min_p: float
) -> tuple[float, float, list[str]]:
    """(validity, uniqueness, the valid SMILES in sampling order) of n raw samples."""
    samples = sampler.sample(n, seed=seed, settings=SamplingSettings("gumbel", temperature, min_p))
    valid = [s.smiles for s in samples if s.valid]
    return len(valid) / n, len(set(valid)) / max(1, len(valid)), valid


def _numbers(parser: argparse.ArgumentParser, option: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        parser.error(f"argument {option}: expected numbers separated by commas, got {text!r}")
    return values


def rank(rows: Sequence[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """The rows that passed the floors, best first: most unique, or lowest FCD."""
    passing = [r for r in rows if r["passed"]]
    if by == "fcd":
        return sorted(passing, key=lambda r: (r["fcd"], -r["uniqueness"]))
    if by in OBJECTIVES:
        sign = 1.0 if DEFAULT_HITS[by].higher_is_better else -1.0
        return sorted(passing, key=lambda r: (sign * r[f"{by}_valid_mean"], r["uniqueness"]), reverse=True)
    return sorted(passing, key=lambda r: r["uniqueness"], reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-validity", type=float, default=0.975)
    parser.add_argument("--min-uniqueness", type=float, default=0.0)
    parser.add_argument("--rank-by", choices=RANKINGS, default="uniqueness")
    parser.add_argument(
        "--fcd-samples", type=int, default=2_000, help="Valid samples per FCD (with --rank-by fcd)."
    )
    parser.add_argument("--temperatures", default=",".join(map(str, TEMPERATURES)))
    parser.add_argument("--min-ps", default=",".join(map(str, MIN_PS)))
    parser.add_argument("--from-step", type=int, default=0, help="Skip earlier snapshots.")
    parser.add_argument("--every", type=int, default=None, metavar="K",
                        help="Only the snapshots whose step is a multiple of K (a coarser grid for "
                        "long runs).")
    parser.add_argument("--out", type=Path, default=None, help="Also write every score as JSON lines.")
    args = parser.parse_args()
    temperatures = _numbers(parser, "--temperatures", args.temperatures)
    min_ps = _numbers(parser, "--min-ps", args.min_ps)
    if args.samples < 1:
        parser.error("argument --samples: must be >= 1")
    if args.fcd_samples < 2:
        parser.error("argument --fcd-samples: must be >= 2 (FCD needs two molecules)")
    if args.rank_by == "fcd":
        try:
            import fcd  # noqa: F401
        except ImportError:
            parser.error("argument --rank-by fcd: needs the 'fcd' extra (pip install 'molgan[fcd]')")

    run = RunDir(args.run_dir)
    if args.every is not None and args.every < 1:
        parser.error(f"--every must be >= 1, got {args.every}")
    snapshots = [path for step, path in run.snapshots(from_step=args.from_step)
                 if args.every is None or step % args.every == 0]
    if not snapshots:
        raise SystemExit(f"no snapshots in {run.snapshot_dir} (train with train.keep_snapshots=true)")
    # Snapshots of one run share their dataset: its validation split is read once.
    validation: dict[str, list[str]] = {}

    def validation_split(data: DataConfig) -> list[str]:
        key = data.model_dump_json()
        if key not in validation:
            validation[key] = dataset_splits(data)[1]
        return validation[key]

    rows = []
    grid = list(itertools.product(temperatures, min_ps))
    with tqdm(total=len(snapshots) * len(grid), unit="setting") as bar:
        for path in snapshots:
            sampler = MoleculeSampler.load(path)
            for temperature, min_p in grid:
                validity, uniqueness, valid = score(sampler, args.samples, args.seed, temperature, min_p)
                row: dict[str, Any] = {
                    "snapshot": str(path),
                    "temperature": temperature,
                    "min_p": min_p,
                    "validity": validity,
                    "uniqueness": uniqueness,
                    "passed": validity >= args.min_validity and uniqueness >= args.min_uniqueness,
                }
                if args.rank_by in OBJECTIVES and row["passed"]:
                    # The valid samples padded with the invalid ones' None: hits are per 10,000 samples.
                    scored = [*valid, *[None] * (args.samples - len(valid))]
                    row |= objective_metrics(scored, (args.rank_by,))
                # FCD costs a ChemNet pass: only for the settings that can be chosen.
                if args.rank_by == "fcd" and row["passed"]:
                    scored = valid[: args.fcd_samples]
                    if len(scored) < 2:
                        row["passed"] = False  # no FCD, so nothing to rank it by
                    else:
                        reference = validation_split(sampler.config.data)
                        row["fcd"] = frechet_chemnet_distance(scored, reference)
                        row["fcd_samples"] = len(scored)
                rows.append(row)
                bar.update(1)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ranked = rank(rows, args.rank_by)
    if not ranked:
        best = max(rows, key=lambda r: (r["validity"], r["uniqueness"]))
        raise SystemExit(
            f"no setting reaches validity {args.min_validity} and uniqueness {args.min_uniqueness};"
            f" the most valid: {json.dumps(best)}"
        )
    for r in ranked[:10]:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
