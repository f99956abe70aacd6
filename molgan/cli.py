"""Command line interface: ``molgan <group> <command>``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

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
        Path | None,
        typer.Argument(help="SMILES/CSV/SDF file (optionally .gz); default: bundled QM9."),
    ] = None,
    max_atoms: Annotated[int, typer.Option(min=1, max=255, help="Max heavy atoms (N).")] = 9,
    smiles_column: Annotated[
        str | None, typer.Option(help="CSV column holding SMILES (default: 'smiles').")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Cache directory (default: $MOLGAN_CACHE_DIR or ~/.cache/molgan)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = False,
) -> None:
    """Featurize a molecule file into cached graph tensors; print the summary and vocab."""
    from molgan.data import load_dataset

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        ds = load_dataset(path, max_atoms=max_atoms, cache_dir=cache_dir,
                          smiles_column=smiles_column, progress=progress)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"{ds.source}: {ds.report.summary()}" + (" (cached)" if ds.cache_hit else ""))
    typer.echo(f"vocab: atoms={list(ds.vocab.atoms)} max_atoms={ds.vocab.max_atoms} "
               f"bonds={list(ds.vocab.bonds)}")


# --------------------------------------------------------------------------- end data
