"""What the HTTP service benchmarks share: the checkpoint they serve and the server process."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.api_support runs and watches the server
    sys.path.insert(0, str(REPO))

from molgan.checkpoint import bundled_checkpoint_path  # noqa: E402
from molgan.config import load_config  # noqa: E402
from tests.api_support import ServerProcess, rss_bytes, write_template_checkpoint  # noqa: E402

__all__ = ["ServerProcess", "benchmark_checkpoint", "cpu_seconds", "rss_bytes"]


def cpu_seconds(pid: int) -> float:
    """CPU time of all threads of a process so far, in nanosecond resolution (Linux schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


def benchmark_checkpoint(path: Path | None, workdir: Path, config: Path) -> tuple[Path, str]:
    """The checkpoint to serve and a line describing it.

    ``path`` if given, else the bundled checkpoint if it exists, else one written to ``workdir``
    with the architecture of ``config`` and template output layers (see tests/api_support.py):
    what matters for speed is the model's size and that most samples decode to real molecules.
    """
    if path is not None:
        return path, f"checkpoint {path}"
    bundled = bundled_checkpoint_path()
    if bundled.is_file():
        return bundled, f"bundled checkpoint {bundled.name}"
    cfg = load_config(config)
    written = write_template_checkpoint(cfg, workdir / f"{cfg.name}-template.safetensors")
    return written, f"untrained {config.name} architecture with template output layers"
