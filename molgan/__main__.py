"""``python -m molgan`` is the ``molgan`` command."""

from molgan.cli import app

app(prog_name="molgan")
