"""Helpers for exercising the HTTP service: a checkpoint that needs no training, a real server.

``write_template_checkpoint`` builds a generator with a config's real architecture and the QM9
vocabulary and writes it with ``CheckpointWriter``, like training does. Its output layers are set
by hand instead of trained: their biases favour a chain of carbon atoms (absent atoms towards the
end, N and O now and then, single bonds along the chain, no bond elsewhere) and their random
weights make every noise vector bend that template differently. The result loads and samples
like any checkpoint and gives a realistic mix of valid, fragmented, invalid and repeated
molecules (with ``configs/debug.yaml``, argmax: about 40% valid, 49 distinct valid in 1000).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch

from molgan.checkpoint import CheckpointWriter
from molgan.chem import Vocab
from molgan.config import Config
from molgan.data import vocab_for
from molgan.models import Generator, build_generator

QM9_ATOMS = ("*", "C", "N", "O", "F", "N+", "O-", "C-", "N-")


def _template_biases(vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom logits (N, A) and upper-triangle bond logits (P, E) of the template."""
    n = vocab.max_atoms
    index = {label: k for k, label in enumerate(vocab.atoms)}
    atoms = torch.full((n, vocab.num_atom_types), -4.0)
    for i in range(n):
        atoms[i, index["C"]] = 2.0
        atoms[i, index["N"]] = atoms[i, index["O"]] = 0.6
        atoms[i, index["F"]] = -1.0
        atoms[i, index["*"]] = -2.0 if i < 4 else 1.0 + 0.6 * (i - 4)
    iu = torch.triu_indices(n, n, offset=1)
    pairs = torch.full((iu.shape[1], vocab.num_bond_types), -4.0)
    for k, (i, j) in enumerate(iu.t().tolist()):
        if j == i + 1:  # along the chain: mostly single, sometimes double
            pairs[k, :4] = torch.tensor([-0.5, 2.5, 0.3, -1.0])
        elif j - i == 2 or (i == 0 and j in (4, 5)):  # where small rings would close
            pairs[k, :2] = torch.tensor([2.0, 0.3])
        else:
            pairs[k, :2] = torch.tensor([3.0, -2.0])
    return atoms, pairs


def template_generator(config: Config, vocab: Vocab, *, spread: float = 2.5, seed: int = 0) -> Generator:
    """A generator of ``config.model``'s architecture with the template output layers."""
    torch.manual_seed(seed)  # the hidden layers keep PyTorch's default initialisation
    generator = build_generator(config.model, vocab.max_atoms, vocab.num_atom_types, vocab.num_bond_types)
    rng = torch.Generator().manual_seed(seed)
    atom_bias, pair_bias = _template_biases(vocab)
    with torch.no_grad():
        for head, bias in ((generator.atom_head, atom_bias), (generator.pair_head, pair_bias)):
            fan_in = head.weight.shape[1]
            head.weight.copy_(torch.randn(head.weight.shape, generator=rng) * spread / fan_in**0.5)
            head.bias.copy_(bias.flatten())
    return generator.eval()


def write_template_checkpoint(
    config: Config, path: str | Path, *, spread: float = 2.5, seed: int = 0,
    metrics: dict[str, Any] | None = None, conditions: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """``conditions``: for a conditional ``config``, the statistics of its conditions
    (``ConditionSet.to_list()``, e.g. a trained conditional checkpoint's); the template's trunk
    reads the targets, so they change the molecules (though not towards their values)."""
    # The config's own atom types if it fixes them, else those the QM9 data gives.
    vocab = vocab_for(config.data) or Vocab(atoms=QM9_ATOMS, max_atoms=config.data.max_atoms)
    generator = template_generator(config, vocab, spread=spread, seed=seed)
    meta: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "vocab": vocab.to_dict(),
        "step": 0,
        "metrics": metrics or {},
    }
    if conditions:
        meta["conditions"] = [dict(c) for c in conditions]
    writer = CheckpointWriter(meta)
    writer.add_module("generator", generator)
    return writer.write(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServerProcess:
    """``molgan serve`` in a child process on a free loopback port; stopped with SIGTERM.

    ``checkpoint`` is passed as ``--checkpoint`` (``None``: not passed, so the environment, e.g.
    MOLGAN_MODELS, says what to serve). ``env`` adds MOLGAN_* settings and ``options``
    command-line options. Use as a context manager; ``url`` is the base URL.
    """

    def __init__(self, checkpoint: str | Path | None, *, env: dict[str, str] | None = None,
                 options: Sequence[str] = (), workers: int = 1, start_timeout_s: float = 60.0) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.options = list(options)
        self.env = {**os.environ, **(env or {})}
        self.workers = workers
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: a pipe nobody reads fills up with access-log lines and blocks the server.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)

    @property
    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> ServerProcess:
        served = ["--checkpoint", str(self.checkpoint)] if self.checkpoint is not None else []
        command = [sys.executable, "-c", "from molgan.cli import app; app()", "serve", *served,
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
                   *self.options]
        self.process = subprocess.Popen(command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready within {self.start_timeout_s} s: {self.log}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after ``timeout_s``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
