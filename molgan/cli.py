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
    from molgan.data import MOSES_MAX_ATOMS, load_dataset, vocab_for
    from molgan.moses_files import MosesNotInstalled

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
    except MosesNotInstalled as exc:
        raise _fail(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"{ds.source}: {ds.report.summary()}" + (" (cached)" if ds.cache_hit else ""))
    typer.echo(f"vocab: atoms={list(ds.vocab.atoms)} max_atoms={ds.vocab.max_atoms} "
               f"bonds={list(ds.vocab.bonds)}")


# --------------------------------------------------------------------------- end data

# --------------------------------------------------------------------------- train


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _exec_torchrun(processes: int, args: list[str]) -> None:
    """Replace this process with ``torchrun --standalone`` running ``molgan ARGS`` ``processes`` times."""
    import os
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "molgan", *args]
    logging.getLogger("molgan").info("starting %d training processes: %s", processes, " ".join(command[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


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
    import os
    import time
    from contextlib import ExitStack

    from molgan.checkpoint import CheckpointError
    from molgan.config import ConfigError, load_config
    from molgan.data import dataset_file
    from molgan.device import DeviceError, check_device_name
    from molgan.training.distributed import start
    from molgan.training.report import write_report
    from molgan.training.tensorboard import TensorBoardLog, require_tensorboard
    from molgan.training.trainer import Trainer, load_resume

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = list(overrides or [])
    if max_minutes is not None:
        extra.append(f"train.max_minutes={max_minutes}")
    if device is not None:
        try:
            extra.append(f"train.device={check_device_name(device)}")
        except DeviceError as exc:
            raise _fail(f"--device {exc}") from None
    device_source = "--device" if device is not None else "train.device"
    try:
        if resume is not None:
            if config is not None:
                raise _fail("--resume uses the config saved in the run; do not pass --config")
            cfg, checkpoint = load_resume(resume, extra)
            target = resume
        else:
            cfg, checkpoint = load_config(config, extra), None
            target = run_dir or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dataset_file(cfg.data.path)  # e.g. MOSES not installed: one line, before any process starts
        if cfg.train.tensorboard:
            require_tensorboard()  # before any process starts, not after the first step
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if cfg.train.processes > 1 and "WORLD_SIZE" not in os.environ:
        # The same command, run by torchrun's processes in place of this one: torchrun then
        # receives Ctrl-C and SIGTERM and hands them on. Every process gets the run directory
        # chosen here, not a time stamp of its own.
        where = ["--resume", str(resume)] if resume is not None else ["--run-dir", str(target)]
        _exec_torchrun(cfg.train.processes, [
            "train", *(["--config", str(config)] if config is not None else []), *where,
            *(arg for override in extra for arg in ("--set", override)),
            "--progress" if progress else "--no-progress",
        ])
    with ExitStack() as stack:
        try:
            processes = stack.enter_context(start(cfg.train.device))
            if not processes.is_main:
                logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
            trainer = Trainer(cfg, target, progress=progress, processes=processes)
            if checkpoint is not None:
                trainer.restore(checkpoint)
        except DeviceError as exc:
            raise _fail(f"{device_source} {exc}") from None
        except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from None
        result = trainer.train()
        if processes.is_main:
            write_report(trainer.run_dir)
            with TensorBoardLog(trainer.run_dir, enabled=trainer.config.train.tensorboard) as board:
                board.picture("molecules", result["step"], trainer.run.molecules)
            typer.echo(f"run: {trainer.run_dir} step {result['step']}" + (
                f" (stopped by {result['stopped_by']})" if result["stopped_by"] else ""))


# --------------------------------------------------------------------------- sample / evaluate

CheckpointArg = Annotated[
    Path | None, typer.Argument(help="Checkpoint file (default: the bundled QM9 checkpoint).")
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


def _load_sampler(checkpoint: Path | None, model: str | None, device: str = "cpu") -> MoleculeSampler:
    """The checkpoint file, or the bundled model named by ``--model`` (not both)."""
    from molgan.checkpoint import CheckpointError, bundled_checkpoint_path
    from molgan.device import DeviceError
    from molgan.sampling import MoleculeSampler

    if model is not None:
        if checkpoint is not None:
            raise _fail(f"give a checkpoint file or --model, not both (got {checkpoint} and --model {model})")
        try:
            checkpoint = bundled_checkpoint_path(model)
        except CheckpointError as exc:
            raise _fail(f"--model: {exc}") from None
    try:
        return MoleculeSampler.load(checkpoint, device=device)
    except DeviceError as exc:
        raise _fail(f"--device {exc}") from None
    except CheckpointError as exc:
        raise _fail(str(exc)) from None


def _sampling_settings(
    sampler: MoleculeSampler, mode: str | None, temperature: float | None, min_p: float | None
) -> SamplingSettings:
    """The options over the checkpoint's defaults; a bad one is a usage error naming it."""
    from molgan.sampling_settings import SamplingError

    try:
        return sampler.settings(mode, temperature, min_p)
    except SamplingError as exc:
        raise _fail(f"--{exc.field.replace('_', '-')} {exc.problem}") from None


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
) -> None:
    """Generate molecules from a checkpoint."""
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
    result = sample_filtered(
        sampler, n, seed=seed, settings=settings, valid_only=valid_only, unique=unique
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
    benchmark: Annotated[
        str | None,
        typer.Option(help="'moses': the MOSES benchmark's metrics instead (needs molsets and the "
                     "'fcd' extra; see README)."),
    ] = None,
    reference_limit: Annotated[
        int | None,
        typer.Option(min=1, help="With --benchmark moses: use only the first K molecules of each "
                     "test set for SNN, Frag and Scaf (quick checks; not MOSES's figures)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Score raw samples: validity, uniqueness, novelty, V.U.N., properties, diversity, FCD;
    or, with --benchmark moses, the MOSES metrics."""
    import json

    from molgan.evaluation import evaluate_sampler

    if benchmark not in (None, "moses"):
        raise _fail(f"--benchmark must be 'moses', got {benchmark!r}")
    if reference_limit is not None and benchmark is None:
        raise _fail("--reference-limit needs --benchmark moses")
    sampler = _load_sampler(checkpoint, model, device)
    settings = _sampling_settings(sampler, mode, temperature, min_p)
    try:
        if benchmark == "moses":
            from molgan.moses_metrics import DEFAULT_SAMPLES, evaluate_sampler_on_moses

            metrics = evaluate_sampler_on_moses(
                sampler, n or DEFAULT_SAMPLES, seed=seed, settings=settings,
                reference_limit=reference_limit)
        else:
            metrics = evaluate_sampler(sampler, n or 10_000, seed=seed, settings=settings, fcd=fcd)
    except ImportError as exc:
        raise _fail(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:
        if benchmark == "moses":  # the MOSES files are missing: the message says how to install
            raise _fail(str(exc)) from None
        # Novelty and FCD are measured against the dataset named in the checkpoint's config.
        raise _fail(f"cannot load the checkpoint's dataset: {exc}") from None
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:<{width}}  {shown}")


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
    import copy
    import os

    import uvicorn
    from pydantic import ValidationError

    from molgan.api.catalog import CatalogError
    from molgan.api.service import load_checkpoints
    from molgan.api.settings import available_cpus, get_settings
    from molgan.checkpoint import CheckpointError
    from molgan.device import DeviceError, resolve_device
    from molgan.sampling_settings import SamplingError

    if checkpoint is not None:
        # Through the environment, so that every worker process reads the same settings.
        os.environ["MOLGAN_CHECKPOINT"] = str(checkpoint.resolve())
    if device is not None:
        try:
            resolve_device(device)
        except DeviceError as exc:
            raise _fail(f"--device {exc}") from None
        os.environ["MOLGAN_DEVICE"] = device
    if workers > 1:
        # Processes share the CPUs: unless told otherwise, each gets its share of sampling threads
        # and torch runs single-threaded in them.
        share = max(1, min(4, available_cpus() // workers))
        os.environ.setdefault("MOLGAN_WORKER_THREADS", str(share))
        os.environ.setdefault("MOLGAN_TORCH_THREADS", "1")
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MOLGAN_{str(error['loc'][0]).upper()}: {error['msg']}" for error in exc.errors()
        )
        raise _fail(f"invalid setting {problems}") from None
    # A checkpoint that cannot be loaded, or default sampling that does not resolve over it, is
    # one message and a non-zero exit here, rather than each worker process failing (and being
    # restarted) at start-up.
    try:
        samplers = load_checkpoints(settings).samplers.values()
    except DeviceError as exc:
        raise _fail(f"MOLGAN_DEVICE {exc}") from None
    except (CatalogError, CheckpointError) as exc:
        raise _fail(str(exc)) from None
    options = {"mode": mode, "temperature": temperature, "min_p": min_p}
    if any(value is not None for value in options.values()):
        for sampler in samplers:
            _sampling_settings(sampler, mode, temperature, min_p)
        # The options replace the environment's sampling defaults as a whole, and reach every
        # worker process through it.
        for name, value in options.items():
            os.environ.pop(f"MOLGAN_{name.upper()}", None)
            if value is not None:
                os.environ[f"MOLGAN_{name.upper()}"] = str(value)
        get_settings.cache_clear()
    else:
        try:
            for sampler in samplers:
                sampler.with_defaults(settings.mode, settings.temperature, settings.min_p)
        except SamplingError as exc:
            raise _fail(f"MOLGAN_{exc.field.upper()} {exc.problem}") from None
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["molgan"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        "molgan.api.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_config=log_config, timeout_graceful_shutdown=3,
    )


# --------------------------------------------------------------------------- end serve
