"""Command line interface: ``molgan <group> <command>``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from molgan.sampling import MoleculeSampler
    from molgan.sampling_settings import SamplingSettings

app = typer.Typer(no_args_is_help=True, help="MolGAN-style molecular graph generator.")


def _exit_on_sigterm() -> None:
    """SIGTERM ends the command as Ctrl-C does, through its clean-up (worker processes ended,
    files closed), rather than at once, which would orphan the featurizing workers. Training
    installs a handler of its own for its loop; the server leaves signals to uvicorn."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


# --------------------------------------------------------------------------- data

data_app = typer.Typer(no_args_is_help=True, help="Datasets: build the QM9 file, featurize files.")
app.add_typer(data_app, name="data")


@data_app.command("qm9")
def data_qm9(
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (default: the bundled molgan/assets/qm9.smi.gz)."),
    ] = None,
) -> None:
    """Rebuild the QM9 SMILES file from the optional qm9pack package."""
    from molgan.data import build_qm9_file, qm9_path

    target = out if out is not None else qm9_path()
    try:
        report = build_qm9_file(target)
    except ModuleNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"wrote {target}: {report.summary()}")


@data_app.command("prepare")
def data_prepare(
    path: Annotated[
        str | None,
        typer.Argument(help="SMILES/CSV/SDF file (optionally .gz), or 'qm9' (the default) or "
                       "'moses' (the MOSES training split of the molsets wheel)."),
    ] = None,
    max_atoms: Annotated[
        int | None,
        typer.Option(min=1, max=255, help="Max heavy atoms (N); default 27 for moses, else 9."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first LIMIT records of the file.")
    ] = None,
    smiles_column: Annotated[
        str | None, typer.Option(help="CSV column holding SMILES (default: 'smiles').")
    ] = None,
    aromatic: Annotated[
        bool, typer.Option("--aromatic", help="Keep aromatic bonds as a bond type of their own "
                           "instead of kekulizing them.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c",
                     help="Featurize the data section of this training config instead (the "
                     "cache 'molgan train' reads); no PATH or data options with it."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="With --config: override a config key, e.g. --set "
                     "data.aromatic=true (repeatable)."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Cache directory (default: $MOLGAN_CACHE_DIR or ~/.cache/molgan)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = False,
) -> None:
    """Featurize a molecule file into cached graph tensors; print the summary and vocab."""
    from molgan.config import ConfigError, load_config
    from molgan.data import MOSES_MAX_ATOMS, MissingColumn, load_dataset, vocab_for

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _exit_on_sigterm()
    vocab = None
    if config is not None:
        given = [name for name, value in (("PATH", path), ("--max-atoms", max_atoms),
                                          ("--limit", limit), ("--smiles-column", smiles_column),
                                          ("--aromatic", aromatic or None))
                 if value is not None]
        if given:
            raise _fail(f"--config takes the data settings from the config; drop {', '.join(given)}")
        try:
            data = load_config(config, overrides or []).data
            vocab = vocab_for(data)
        except (ConfigError, ValueError) as exc:
            raise _fail(f"--config {exc}") from None
        path, max_atoms, limit, smiles_column = data.path, data.max_atoms, data.limit, data.smiles_column
        aromatic = data.aromatic
    elif overrides:
        raise _fail("--set needs --config")
    elif max_atoms is None:
        max_atoms = MOSES_MAX_ATOMS if path == "moses" else 9
    try:
        ds = load_dataset(path, max_atoms=max_atoms, vocab=vocab, cache_dir=cache_dir,
                          smiles_column=smiles_column, progress=progress, limit=limit,
                          aromatic=aromatic)
    except MissingColumn as exc:
        where = "data.smiles_column in the config" if config is not None else "--smiles-column"
        raise _fail(str(exc.with_hint(f"choose one with {where}"))) from None
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{ds.source}: {ds.report.summary()}" + (" (cached)" if ds.cache_hit else ""))
    typer.echo(f"vocab: atoms={list(ds.vocab.atoms)} max_atoms={ds.vocab.max_atoms} "
               f"bonds={list(ds.vocab.bonds)}")


# --------------------------------------------------------------------------- end data

# --------------------------------------------------------------------------- train


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set train.lam=0.3 (repeatable)."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<config name>-<time>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint.")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="Stop (and save) after this many minutes.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="auto, cpu, cuda, cuda:K or mps (sets train.device; auto: CUDA when present)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a generator; writes config, metrics, checkpoints and plots into the run directory.

    Under torchrun (torchrun --nproc_per_node=K -m molgan train ...) K processes share each
    batch; rank 0 writes the run directory.
    """
    from molgan.errors import UsageError
    from molgan.training.launch import train as launch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _exit_on_sigterm()
    try:
        summary = launch(config, overrides or [], run_dir=run_dir, resume=resume,
                         max_minutes=max_minutes, device=device, progress=progress)
    except UsageError as exc:
        raise _fail(str(exc)) from None
    if summary is not None:
        typer.echo(summary)


# --------------------------------------------------------------------------- sample / evaluate

CheckpointArg = Annotated[
    str | None,
    typer.Argument(help="Checkpoint file, or a bundled model's name (default: the bundled QM9 model)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="A bundled model by name (molgan.bundled_models()), instead of a file."),
]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed; the same seed gives the same molecules.")]
# The sampling options are checked by SamplingSettings, not by typer's min/max, so that every bad
# value gets the same one-line error as the HTTP API's and the config's rules.
TemperatureOpt = Annotated[
    float | None,
    typer.Option(help="Gumbel-Max sampling temperature, finite and > 0 (implies --mode gumbel)."),
]
MinPOpt = Annotated[
    float | None,
    typer.Option(
        "--min-p",
        help="In [0, 1): Gumbel-Max skips classes below min-p times a choice's most likely one "
        "(implies --mode gumbel).",
    ),
]
ModeOpt = Annotated[
    str | None, typer.Option(help="argmax or gumbel (default: the checkpoint's own setting).")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="Where the generator runs: cpu, auto (CUDA when present), cuda, cuda:K or mps. A seed "
        "gives the same molecules on every CPU; other devices draw other random numbers.",
    ),
]


def _load_sampler(checkpoint: str | None, model: str | None, device: str = "cpu") -> MoleculeSampler:
    """The checkpoint (a file or a bundled model's name), or the bundled model named by
    ``--model`` (not both)."""
    from molgan.checkpoint import CheckpointError
    from molgan.device import DeviceError
    from molgan.sampling import MoleculeSampler

    if model is not None and checkpoint is not None:
        raise _fail(f"give a checkpoint or --model, not both (got {checkpoint} and --model {model})")
    try:
        return MoleculeSampler.load(checkpoint if model is None else model, device=device)
    except DeviceError as exc:
        raise _fail(f"--device {exc}") from None
    except CheckpointError as exc:
        raise _fail(f"--model: {exc}" if model is not None else str(exc)) from None


TargetOpt = Annotated[
    list[str] | None,
    typer.Option("--target", metavar="PROPERTY=VALUE",
                 help="A conditional model: ask for this value of a property it was trained on, "
                 "e.g. --target logp=1.5 (repeatable; the others are left to the model)."),
]


def _targets(sampler: MoleculeSampler, given: list[str] | None) -> dict[str, float]:
    """``--target`` options as a checked mapping; a bad one is a usage error naming it."""
    from molgan.conditions import TargetError

    targets: dict[str, str] = {}
    for item in given or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise _fail(f"--target expects PROPERTY=VALUE, got {item!r}")
        targets[name.strip()] = value.strip()
    try:
        return sampler.check_targets(targets)
    except TargetError as exc:
        raise _fail(f"--target {exc}") from None


def _sampling_settings(
    sampler: MoleculeSampler, mode: str | None, temperature: float | None, min_p: float | None
) -> SamplingSettings:
    """The options over the checkpoint's defaults; a bad one is a usage error naming it."""
    from molgan.sampling_settings import SamplingError

    try:
        return sampler.settings(mode, temperature, min_p)
    except SamplingError as exc:
        raise _fail(exc.option) from None


@app.command()
def sample(
    checkpoint: CheckpointArg = None,
    model: ModelOpt = None,
    n: Annotated[int, typer.Option("-n", min=1, help="Number of molecules.")] = 100,
    seed: SeedOpt = None,
    temperature: TemperatureOpt = None,
    min_p: MinPOpt = None,
    mode: ModeOpt = None,
    valid_only: Annotated[bool, typer.Option(help="Keep sampling until n valid molecules.")] = False,
    unique: Annotated[bool, typer.Option(help="Drop repeated molecules (keeps sampling).")] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Output file (default: stdout).")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="smi, csv, sdf or jsonl (default: from -o, else smi).")
    ] = None,
    device: DeviceOpt = "cpu",
    target: TargetOpt = None,
) -> None:
    """Generate molecules from a checkpoint (for a conditional model, at --target values)."""
    import sys

    from molgan.export import FORMATS, format_from_path, write_samples
    from molgan.sampling import sample_filtered

    if fmt is not None and fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        out_format = fmt or (format_from_path(output) if output else "smi")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if out_format == "jsonl" and (valid_only or unique):
        raise _fail("jsonl writes every raw sample in order: drop --valid-only/--unique")
    sampler = _load_sampler(checkpoint, model, device)
    settings = _sampling_settings(sampler, mode, temperature, min_p)
    targets = _targets(sampler, target)
    result = sample_filtered(
        sampler, n, seed=seed, settings=settings, valid_only=valid_only, unique=unique, targets=targets
    )
    if output is None:
        write_samples(result.samples, sys.stdout, out_format)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", newline="") as fh:
            written = write_samples(result.samples, fh, out_format)
        typer.echo(f"wrote {written} records to {output}", err=True)
    if result.fell_short:
        typer.echo(
            f"warning: found {len(result.samples)} of {n} molecules in {result.sampled} samples", err=True
        )


@app.command()
def evaluate(
    checkpoint: CheckpointArg = None,
    model: ModelOpt = None,
    n: Annotated[
        int | None,
        typer.Option("-n", min=10, help="Number of raw samples to score (default 10,000; "
                     "30,000 with --benchmark moses)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    temperature: TemperatureOpt = None,
    min_p: MinPOpt = None,
    mode: ModeOpt = None,
    fcd: Annotated[bool, typer.Option(help="Also compute FCD (needs the 'fcd' extra).")] = False,
    objectives: Annotated[
        bool,
        typer.Option(help="Also report the MolGAN paper's normalized QED, logP and SA scores "
                     "(invalid = 0), the mean property of the valid samples and the distinct "
                     "hits per 10,000 samples."),
    ] = False,
    hit: Annotated[
        list[str] | None,
        typer.Option(metavar="OBJECTIVE=VALUE",
                     help="With --objectives: a hit threshold (default qed=0.6, logp=2.7, "
                     "sa=2.5; QED and logP at or above it, SA at or below). Repeatable."),
    ] = None,
    benchmark: Annotated[
        str | None,
        typer.Option(help="'moses': the MOSES benchmark's metrics instead (needs molsets and the "
                     "'fcd' extra; see docs/design.md)."),
    ] = None,
    reference_limit: Annotated[
        int | None,
        typer.Option(min=1, help="With --benchmark moses: use only the first K molecules of each "
                     "test set for SNN, Frag and Scaf (quick checks; not MOSES's figures)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = "cpu",
    targets: Annotated[
        bool,
        typer.Option("--targets", help="A conditional model: sample at a grid of targets (the "
                     "training data's percentiles) and report how close the molecules come, beside "
                     "--baseline (default 2,000 samples per target)."),
    ] = False,
    baseline: Annotated[
        str, typer.Option(help="With --targets: the unconditional model to compare with ('none': no "
                          "baseline).")
    ] = "qm9",
) -> None:
    """Score raw samples: validity, uniqueness, novelty, V.U.N., properties, diversity, FCD;
    with --targets, how well a conditional model hits asked-for property values; or, with
    --benchmark moses, the MOSES metrics."""
    import json

    from molgan.evaluation import DatasetUnavailable, evaluate_sampler
    from molgan.objectives import parse_hit_rule

    if benchmark not in (None, "moses"):
        raise _fail(f"--benchmark must be 'moses', got {benchmark!r}")
    if reference_limit is not None and benchmark is None:
        raise _fail("--reference-limit needs --benchmark moses")
    if (objectives or hit) and benchmark is not None:
        raise _fail("--objectives and --hit go without --benchmark")
    if hit and not objectives:
        raise _fail("--hit needs --objectives")
    if targets and (benchmark is not None or objectives or fcd):
        raise _fail("--targets goes without --benchmark, --objectives and --fcd")
    try:
        hits = {rule.objective: rule for rule in map(parse_hit_rule, hit or [])}
    except ValueError as exc:
        raise _fail(f"--hit: {exc}") from None
    sampler = _load_sampler(checkpoint, model, device)
    settings = _sampling_settings(sampler, mode, temperature, min_p)
    if targets:
        _evaluate_targets(sampler, baseline, n or 2000, seed, settings, as_json, device)
        return
    try:
        if benchmark == "moses":
            from molgan.moses_metrics import DEFAULT_SAMPLES, evaluate_sampler_on_moses

            metrics = evaluate_sampler_on_moses(
                sampler, n or DEFAULT_SAMPLES, seed=seed, settings=settings,
                reference_limit=reference_limit)
        else:
            metrics = evaluate_sampler(sampler, n or 10_000, seed=seed, settings=settings, fcd=fcd,
                                       objectives=objectives, hits=hits)
    except (ImportError, DatasetUnavailable) as exc:
        raise _fail(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:
        if benchmark == "moses":  # the MOSES files are missing: the message says how to install
            raise _fail(str(exc)) from None
        raise
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:<{width}}  {shown}")


def _evaluate_targets(sampler: MoleculeSampler, baseline: str, n: int, seed: int,
                      settings: SamplingSettings, as_json: bool, device: str) -> None:
    import json

    from molgan.evaluation import DatasetUnavailable, dataset_references
    from molgan.target_evaluation import evaluate_targets, format_report

    if sampler.conditions is None:
        raise _fail("--targets needs a conditional model (this one has no model.conditions)")
    base = None if baseline == "none" else _load_sampler(None, baseline, device)
    if base is not None and base.conditions is not None:
        raise _fail(f"--baseline must be an unconditional model, {baseline!r} is conditional")
    try:
        train_smiles, _ = dataset_references(sampler.config.data)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(DatasetUnavailable(f"cannot load the checkpoint's dataset: {exc}"))) from None
    report = evaluate_targets(sampler, base, n, seed=seed, settings=settings, train_smiles=train_smiles)
    report |= {"baseline": None if base is None else baseline, "mode": settings.mode,
               "temperature": settings.temperature, "min_p": settings.min_p}
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


# --------------------------------------------------------------------------- serve


@app.command()
def serve(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint to serve (default: $MOLGAN_CHECKPOINT, else the checkpoints of "
                     "$MOLGAN_MODELS, else every bundled model)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes; each loads the models and samples.")
    ] = 1,
    temperature: TemperatureOpt = None,
    min_p: MinPOpt = None,
    mode: ModeOpt = None,
    device: Annotated[
        str | None,
        typer.Option(help="Where the generator runs: cpu, auto, cuda, cuda:K or mps (default: "
                     "$MOLGAN_DEVICE, else cpu)."),
    ] = None,
) -> None:
    """Serve the HTTP API with uvicorn: /v1/generate, /v1/depict, /v1/models, /docs and a page at /.

    Several models: MOLGAN_MODELS is a folder of checkpoints or a comma-separated list of files,
    each served under its file's stem; MOLGAN_DEFAULT_MODEL answers requests that name none.

    --mode, --temperature and --min-p set the server's default sampling (requests may still say
    otherwise); without them, MOLGAN_MODE / MOLGAN_TEMPERATURE / MOLGAN_MIN_P, else the
    checkpoint's own. Other settings come from MOLGAN_* environment variables (see
    api/settings.py), e.g. MOLGAN_MAX_MOLECULES, MOLGAN_WORKER_THREADS, MOLGAN_MAX_QUEUE.
    """
    from molgan.api.server import serve as launch
    from molgan.errors import UsageError

    try:
        launch(checkpoint, host=host, port=port, workers=workers, mode=mode, temperature=temperature,
               min_p=min_p, device=device)
    except UsageError as exc:
        raise _fail(str(exc)) from None
