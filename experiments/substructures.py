"""Which substructures generated molecules have more or less often than their dataset.

    python experiments/substructures.py [SOURCE ...] [-n 10000] [--seed 0] [--reference test]
        [--config CONFIG] [--mode M] [--temperature T] [--min-p P] [--top 10] [--plot PNG]

Each SOURCE is a bundled model's name (default: ``qm9``), a checkpoint (``.safetensors``: ``n``
raw samples at its own sampling defaults unless ``--mode/--temperature/--min-p`` say otherwise)
or a file of SMILES (``.smi``, ``.csv``, ``.sdf``, as ``molgan sample -o`` writes them). Several
sources are compared side by side (the runs of an ablation, say). The reference is a split
(``train``, ``valid``, ``test``) of the dataset of the first checkpoint among the sources (or of
``--config``), or a SMILES file. Prints markdown tables (see ``molgan/substructures.py`` for what
is counted) and, with ``--plot``, draws them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

# The object API draws straight to files: no pyplot state, no display backend.
from matplotlib.figure import Figure

from molgan.checkpoint import CheckpointError, bundled_models
from molgan.config import DataConfig, load_config
from molgan.data import read_smiles
from molgan.evaluation import dataset_splits
from molgan.sampling import MoleculeSampler
from molgan.sampling_settings import SamplingError
from molgan.substructures import (
    Comparison,
    RingSystemRow,
    SubstructureProfile,
    compare,
    profile,
    ring_system_extremes,
)

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")
CHECKPOINT_SUFFIX = ".safetensors"


def _is_checkpoint(source: str) -> bool:
    return source in bundled_models() or source.endswith(CHECKPOINT_SUFFIX)


def source_smiles(source: str, args: argparse.Namespace) -> tuple[list[str | None], DataConfig | None]:
    """The SMILES of one source (``None`` for a sample that did not decode) and, for a
    checkpoint, the data config it was trained on."""
    if not _is_checkpoint(source):
        return list(read_smiles(source)), None
    sampler = MoleculeSampler.load(source)
    settings = sampler.settings(args.mode, args.temperature, args.min_p)
    samples = sampler.sample(args.n, seed=args.seed, settings=settings)
    return [s.smiles for s in samples], sampler.config.data


def _percent(value: float) -> str:
    # Three significant digits: a rare bond type (0.0023%) must not read as absent (0.00%).
    return f"{100 * value:#.3g}%" if value else "0%"


def _times(ratio: float) -> str:
    return "new" if math.isinf(ratio) else f"x{ratio:.2f}"


def comparison_table(rows: Sequence[Comparison], reference: str, labels: Sequence[str]) -> str:
    """Markdown: one row per feature, its share in the reference and in each sample set with
    the ratio to the reference."""
    header = f"| group | feature | {reference} | " + " | ".join(f"{x} | ratio" for x in labels) + " |"
    lines = [header, "|---|---|" + "---:|" * (1 + 2 * len(labels))]
    for row in rows:
        cells = [_percent(row.reference)]
        for share, ratio in zip(row.samples, row.ratios, strict=True):
            cells += [_percent(share), _times(ratio)]
        lines.append(f"| {row.group} | {row.feature} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ring_system_table(
    rows: Sequence[RingSystemRow], samples: SubstructureProfile, reference: SubstructureProfile
) -> str:
    """Markdown: ring systems with the share of molecules holding them on each side."""
    lines = ["| ring system | samples | reference | ratio |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| `{row.system}` | {_percent(row.sample_count / max(1, samples.molecules))} "
            f"| {_percent(row.reference_count / max(1, reference.molecules))} | x{row.ratio:.2f} |"
        )
    return "\n".join(lines)


def plot(
    rows: Sequence[Comparison],
    extremes: tuple[list[RingSystemRow], list[RingSystemRow]],
    reference: str,
    labels: Sequence[str],
    out: Path,
) -> Path:
    """Ring sizes, heavy-atom counts and bond types side by side for every set, and the ring
    systems of the first sample set that are most over- and under-represented."""
    fig = Figure(figsize=(13, 10), layout="constrained")
    axes = fig.subplots(2, 2)
    names = [reference, *labels]
    panels = [
        (axes[0, 0], "ring size", "share of molecules with a ring of that size", False),
        (axes[1, 0], "heavy atoms", "share of molecules with that many heavy atoms", False),
        (axes[0, 1], "bond type", "share of all bonds (log scale)", True),
    ]
    for ax, group, title, log in panels:
        # Bond types that are rare everywhere would crowd the panel: keep those of >= 0.05%.
        group_rows = [
            r for r in rows if r.group == group and (not log or max(r.reference, *r.samples) >= 5e-4)
        ]
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            values = [r.reference if k == 0 else r.samples[k - 1] for r in group_rows]
            positions = [i + (k - (len(names) - 1) / 2) * width for i in range(len(group_rows))]
            if log:
                ax.barh(positions, values, height=width, label=name)
            else:
                ax.bar(positions, values, width=width, label=name)
        ticks, tick_labels = range(len(group_rows)), [r.feature for r in group_rows]
        if log:
            ax.set_xscale("log")
            ax.set_yticks(ticks, tick_labels)
            ax.invert_yaxis()
        else:
            ax.set_xticks(ticks, tick_labels)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    over, under = extremes
    shown = [*over, *reversed(under)]
    ax = axes[1, 1]
    ax.barh(
        range(len(shown)),
        [math.log2(r.ratio) for r in shown],
        color=["tab:red" if r.ratio > 1 else "tab:blue" for r in shown],
    )
    ax.set_yticks(range(len(shown)), [r.system for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title(f"ring systems of {labels[0]}: log2(share / share in {reference})")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sources", nargs="*", default=["qm9"], metavar="SOURCE")
    parser.add_argument("-n", type=int, default=10_000, help="Raw samples per checkpoint.")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed of the checkpoints.")
    parser.add_argument("--mode", default=None, help="argmax or gumbel (default: each checkpoint's).")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument(
        "--reference", default="test", help="train, valid, test (a split of the dataset) or a SMILES file."
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="Dataset of the splits when no SOURCE is a checkpoint."
    )
    parser.add_argument("--top", type=int, default=10, help="Ring systems listed each way.")
    parser.add_argument("--plot", type=Path, default=None, help="Also draw the comparison (PNG).")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("argument -n: must be >= 1")
    if args.top < 1:
        parser.error("argument --top: must be >= 1")
    for source in args.sources:
        if not _is_checkpoint(source) and not Path(source).is_file():
            parser.error(f"argument SOURCE: {source!r} is neither a bundled model nor a file")
    if args.reference not in SPLITS and not Path(args.reference).is_file():
        parser.error(f"argument --reference: {args.reference!r} is neither {', '.join(SPLITS)} nor a file")

    sets, data = [], None
    for source in args.sources:
        try:
            smiles, source_data = source_smiles(source, args)
        except SamplingError as exc:
            parser.error(f"argument --{exc.field.replace('_', '-')}: {exc.problem}")
        except (CheckpointError, ValueError) as exc:
            parser.error(f"argument SOURCE: {source}: {exc}")
        sets.append(profile(smiles))
        data = data or source_data
    if args.reference in SPLITS:
        data = data or load_config(args.config or ROOT / "configs" / "qm9.yaml").data
        dataset = "QM9" if data.path is None else Path(data.path).name
        reference_name = f"{dataset} {args.reference}"
        reference = profile(dataset_splits(data)[SPLITS.index(args.reference)])
    else:
        reference_name = Path(args.reference).name
        reference = profile(read_smiles(args.reference))

    labels = list(args.sources)
    for label, p in [(reference_name, reference), *zip(labels, sets, strict=True)]:
        print(f"{label}: {p.molecules:,} valid molecules counted, {p.skipped:,} skipped")
    rows = compare(reference, sets)
    print()
    print(comparison_table(rows, reference_name, labels))
    for label, p in zip(labels, sets, strict=True):
        over, under = ring_system_extremes(p, reference, top=args.top)
        print(f"\nRing systems of {label} most over-represented against {reference_name}:\n")
        print(ring_system_table(over, p, reference))
        print("\nMost under-represented:\n")
        print(ring_system_table(under, p, reference))
    if args.plot:
        extremes = ring_system_extremes(sets[0], reference, top=args.top)
        print(f"\nwrote {plot(rows, extremes, reference_name, labels, args.plot)}")


if __name__ == "__main__":
    main()
