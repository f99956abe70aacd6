"""Choose a run's generator snapshot and its test-time sampling settings.

    python scripts/select_checkpoint.py runs/qm9 [--samples 10000] [--seed 1] [--min-validity 0.975]

Scores every snapshot of ``runs/qm9/snapshots`` (written with ``train.keep_snapshots=true``) under
a grid of Gumbel-Max temperatures and min-p values, and prints the setting with the highest
uniqueness among those at or above ``--min-validity``. Selection uses seed 1 so that the headline
evaluation (``scripts/bundle_checkpoint.py``, seed 0) is made on other samples than the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from tqdm import tqdm

from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingSettings
from molgan.training.run_dir import RunDir

TEMPERATURES = (0.9, 1.0, 1.1, 1.2, 1.3, 1.5)
MIN_PS = (0.0, 0.02, 0.05, 0.1, 0.2)


def score(
    sampler: MoleculeSampler, n: int, seed: int, temperature: float, min_p: float
) -> tuple[float, float]:
    """(validity, uniqueness) of n raw samples."""
    samples = sampler.sample(n, seed=seed, settings=SamplingSettings("gumbel", temperature, min_p))
    valid = [s.smiles for s in samples if s.valid]
    return len(valid) / n, len(set(valid)) / max(1, len(valid))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-validity", type=float, default=0.975)
    parser.add_argument("--from-step", type=int, default=0, help="Skip earlier snapshots.")
    parser.add_argument("--out", type=Path, default=None, help="Also write every score as JSON lines.")
    args = parser.parse_args()

    run = RunDir(args.run_dir)
    snapshots = [path for _, path in run.snapshots(from_step=args.from_step)]
    if not snapshots:
        raise SystemExit(f"no snapshots in {run.snapshot_dir} (train with train.keep_snapshots=true)")
    rows = []
    grid = list(itertools.product(TEMPERATURES, MIN_PS))
    with tqdm(total=len(snapshots) * len(grid), unit="setting") as bar:
        for path in snapshots:
            sampler = MoleculeSampler.load(path)
            for temperature, min_p in grid:
                validity, uniqueness = score(sampler, args.samples, args.seed, temperature, min_p)
                rows.append(
                    {
                        "snapshot": str(path),
                        "temperature": temperature,
                        "min_p": min_p,
                        "validity": validity,
                        "uniqueness": uniqueness,
                    }
                )
                bar.update(1)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    passing = [r for r in rows if r["validity"] >= args.min_validity]
    if not passing:
        best = max(rows, key=lambda r: r["validity"])
        raise SystemExit(
            f"no setting reaches validity {args.min_validity}; the most valid: {json.dumps(best)}"
        )
    for r in sorted(passing, key=lambda r: r["uniqueness"], reverse=True)[:10]:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
