"""Which checkpoints the service serves, under which names, and which one answers by default.

    MOLGAN_MODELS=/models                        every *.safetensors in the folder
    MOLGAN_MODELS=/a/qm9.safetensors,/b/zinc.safetensors
    MOLGAN_CHECKPOINT=/a/best.safetensors        one file (the older, single-model setting)
    (neither)                                    every model bundled with the package

A model's name is its file's stem (``zinc.safetensors`` is ``zinc``); requests choose a model by
that name only, never by a path. Pure functions of the settings: nothing is loaded here.
"""

from __future__ import annotations

from pathlib import Path

from molgan.checkpoint import DEFAULT_MODEL, bundled_checkpoints

SUFFIX = ".safetensors"


class CatalogError(ValueError):
    """Settings that do not name a usable set of checkpoints; the message is one line."""


def served_checkpoints(models: str | None, checkpoint: Path | None) -> dict[str, Path]:
    """The checkpoint files to serve, by name, from ``MOLGAN_MODELS`` (``models``) or
    ``MOLGAN_CHECKPOINT`` (``checkpoint``); neither: every bundled model.

    A folder contributes its ``*.safetensors`` files in name order, a list its files in the given
    order. Two files with one stem would make a name ambiguous, so that is an error naming both.
    """
    if models is not None and checkpoint is not None:
        raise CatalogError("set MOLGAN_MODELS or MOLGAN_CHECKPOINT (molgan serve --checkpoint), not both")
    if checkpoint is not None:
        return {checkpoint.stem: checkpoint}
    if models is None:
        bundled = bundled_checkpoints()
        if not bundled:
            raise CatalogError("no bundled model in this installation; set MOLGAN_MODELS")
        return bundled
    return _named(_files(models))


def _files(models: str) -> list[Path]:
    """The files ``MOLGAN_MODELS`` names: a folder's checkpoints or a comma-separated list."""
    spec = models.strip()
    if not spec:
        raise CatalogError("MOLGAN_MODELS is empty; give a folder or a comma-separated list of files")
    folder = Path(spec)
    if "," not in spec and folder.is_dir():
        files = sorted(folder.glob(f"*{SUFFIX}"))
        if not files:
            raise CatalogError(f"MOLGAN_MODELS: no *{SUFFIX} file in the folder {folder}")
        return files
    files = []
    for part in spec.split(","):
        entry = part.strip()
        if not entry:
            raise CatalogError(f"MOLGAN_MODELS has an empty entry: {models!r}")
        path = Path(entry)
        if path.suffix != SUFFIX:
            # A typo'd folder would otherwise read as a list of one oddly named file.
            raise CatalogError(f"MOLGAN_MODELS: {entry} is neither a folder nor a *{SUFFIX} file")
        files.append(path)
    return files


def _named(files: list[Path]) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for path in files:
        if path.stem in named:
            raise CatalogError(
                f"MOLGAN_MODELS: two checkpoints named {path.stem!r}: {named[path.stem]} and {path}"
            )
        named[path.stem] = path
    return named


def default_model(names: list[str], wanted: str | None) -> str:
    """The model of requests that name none: ``wanted`` (``MOLGAN_DEFAULT_MODEL``) if given,
    else the bundled default (``qm9``) if served, else the first."""
    if wanted is not None:
        if wanted not in names:
            raise CatalogError(
                f"MOLGAN_DEFAULT_MODEL {wanted!r} is not served; served: {', '.join(names)}"
            )
        return wanted
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]
