"""The shape of the code: one-way imports, the ablation's variants as config files, the scripts'
guards, and the rules that live in one place (how a batch splits, which temperature REINFORCE
samples at, what a temperature may be)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import molgan
from molgan.checkpoint import bundled_checkpoint_path, bundled_models, load_checkpoint
from molgan.cli import app
from molgan.config import Config, ConfigError, load_config, read_config_file
from molgan.sampling_settings import SamplingSettings
from molgan.training.rl import reinforce
from molgan.training.trainer import Trainer, load_resume
from tests.conftest import REPO_ROOT

# Repository folder -> the package it installs as.
PACKAGES = {"molgan": "molgan", "api": "molgan.api", "training": "molgan.training"}


def module_imports() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports, at any level of the
    file (type-checking imports included: a circle there is still a circle to read)."""
    modules: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in (REPO_ROOT / folder).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = module_imports()
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt == path[0]:
                circles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:  # each circle once, from its smallest module
                visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])
    assert circles == []


def test_the_core_imports_neither_the_service_nor_the_training_package() -> None:
    graph = module_imports()
    core = {name for name in graph if name.count(".") <= 1 and not name.startswith(("molgan.api",
                                                                                     "molgan.training"))}
    assert "molgan.config" in core and "molgan.cli" in core
    for name in core - {"molgan.cli"}:  # the command line dispatches to both
        outside = {t for t in graph[name] if t.startswith(("molgan.api", "molgan.training"))}
        assert not outside, f"{name} imports {outside}"
    # The service and the trainer do not reach into each other either.
    for name in graph:
        if name.startswith("molgan.api"):
            assert not any(t.startswith("molgan.training") for t in graph[name]), name
        if name.startswith("molgan.training"):
            assert not any(t.startswith("molgan.api") for t in graph[name]), name


# --------------------------------------------------------------------------- ablation variants

ABLATION = REPO_ROOT / "configs" / "ablation"


@pytest.mark.parametrize("variant", sorted(p.name for p in ABLATION.glob("*.yaml")))
def test_each_ablation_variant_is_a_commented_layer_over_the_shipped_config(variant: str) -> None:
    path = ABLATION / variant
    assert path.read_text().startswith("# "), "the first line says what the variant changes"
    base = load_config(REPO_ROOT / "configs" / "qm9.yaml")
    config = load_config(REPO_ROOT / "configs" / "qm9.yaml", overlays=[path])
    layer = read_config_file(path)
    for section, fields in layer.items():
        for key, value in fields.items():
            got = getattr(getattr(config, section), key)
            assert got == (tuple(value) if isinstance(value, list) else value), f"{section}.{key}"
    if variant == "qm9.yaml":
        assert config == base
    else:
        assert config != base


def test_a_layer_replaces_a_mapping_field_and_keeps_the_other_fields(tmp_path: Path) -> None:
    layer = tmp_path / "layer.yaml"
    layer.write_text("reward:\n  weights: {qed: 2.0}\n")
    base = load_config(REPO_ROOT / "configs" / "qm9.yaml")
    config = load_config(REPO_ROOT / "configs" / "qm9.yaml", ["train.steps=7"], overlays=[layer])
    assert config.reward.weights == {"qed": 2.0}  # replaced, not merged into validity + uniqueness
    assert config.reward.memory_size == base.reward.memory_size
    assert config.train.steps == 7
    layer.write_text("reward:\n  wieghts: {qed: 2.0}\n")
    with pytest.raises(ConfigError, match=r"reward\.wieghts"):
        load_config(REPO_ROOT / "configs" / "qm9.yaml", overlays=[layer])


def test_the_ablation_refuses_an_unknown_variant_before_training() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / "ablation.py"), "--variants", "qm9,nope"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "no variant nope in configs/ablation/" in done.stderr


# --------------------------------------------------------------------------- scripts and CLI


def test_time_to_quality_reads_a_runs_evaluations_and_minutes(debug_run: Path) -> None:
    script = str(REPO_ROOT / "experiments" / "time_to_quality.py")
    records = [json.loads(line) for line in (debug_run / "metrics.jsonl").read_text().splitlines()]
    first_eval = next(r for r in records if "eval" in r)
    minutes = [r["elapsed_s"] / 60 for r in records if "elapsed_s" in r and r["step"] <= first_eval["step"]]
    low = subprocess.run([sys.executable, script, str(debug_run), "--validity", "0", "--uniqueness", "0"],
                         capture_output=True, text=True, timeout=120)
    assert low.returncode == 0, low.stderr
    assert f"| run | step {first_eval['step']:,}, {minutes[-1]:.1f} min |" in low.stdout
    high = subprocess.run([sys.executable, script, str(debug_run), "--validity", "1.01"],
                          capture_output=True, text=True, timeout=120)
    assert "| run | not reached | best" in high.stdout
    missing = subprocess.run([sys.executable, script, str(debug_run / "nowhere")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no metrics.jsonl" in missing.stderr


def test_bundling_refuses_to_replace_the_bundled_model_unless_told(toy_checkpoint: Path) -> None:
    bundled = bundled_checkpoint_path("qm9")
    before = hashlib.sha256(bundled.read_bytes()).hexdigest()
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bundle_checkpoint.py"), str(toy_checkpoint)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "give --out PATH, or --force" in done.stderr
    assert hashlib.sha256(bundled.read_bytes()).hexdigest() == before


def test_bundling_keeps_the_generator_and_reports_its_scores(
    debug_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "small.safetensors"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bundle_checkpoint.py"),
         str(debug_run / "last.safetensors"), "--out", str(out), "--samples", "60", "--temperature", "1.2"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.with_suffix(".eval.json").read_text())
    model = molgan.load(out)
    assert model.sampler.config.sampling.temperature == 1.2  # the default it was given
    assert report == model.evaluate(60, seed=0, fcd=True, objectives=True) | {
        "sampling_seconds": report["sampling_seconds"]}
    assert {"validity", "fcd", "qed_normalized", "qed_hits", "sa_hit_rule"} <= set(report)
    assert all(k.startswith("generator.") for k in load_checkpoint(out).tensors)


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_the_checkpoint_argument_takes_a_bundled_models_name() -> None:
    by_name = invoke("sample", "qm9", "-n", "20", "--seed", "3")
    by_option = invoke("sample", "--model", "qm9", "-n", "20", "--seed", "3")
    by_path = invoke("sample", bundled_checkpoint_path("qm9"), "-n", "20", "--seed", "3")
    assert by_name[0] == 0, by_name[2]
    assert by_name[1] == by_option[1] == by_path[1] and by_name[1].count("\n") >= 15
    code, _, err = invoke("evaluate", "qm10", "-n", "10")
    bundled = ", ".join(bundled_models())
    assert code == 2 and err == f"error: no bundled model named 'qm10'; bundled: {bundled}\n"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "0"])
def test_an_annealing_temperature_must_be_finite_and_positive(value: str, tmp_path: Path) -> None:
    for key in ("temperature.tau_start", "temperature.tau_min", "train.rl_temperature"):
        code, _, err = invoke("train", "-c", REPO_ROOT / "configs" / "debug.yaml", "--set",
                              f"{key}={value}", "--run-dir", tmp_path / "never")
        assert code == 2
        assert err.startswith(f"error: invalid config: {key}: ") and "finite number > 0" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------- REINFORCE temperature


def test_reinforce_samples_at_its_own_temperature(
    debug_config: Callable[..., Config], tmp_path: Path
) -> None:
    trainer = Trainer(
        debug_config("train.rl_estimator=reinforce", "train.rl_temperature=0.7",
                     "sampling.mode=gumbel", "sampling.temperature=1.9"),
        tmp_path / "run", progress=False,
    )
    logits = trainer.generator(trainer.generator.noise(12, trainer.rng))
    state = trainer.rng.get_state()
    term = reinforce(trainer.rl_context, logits, logits.relax("st_gumbel", 1.0, trainer.rng), with_loss=False)
    trainer.rng.set_state(state)
    atoms, bonds = logits.sample(SamplingSettings("gumbel", 0.7, 0.0), trainer.rng)
    smiles, _, _ = trainer.score(atoms, bonds)
    assert term.smiles == smiles


def test_a_run_saved_before_rl_temperature_resumes_at_its_sampling_temperature(
    debug_run: Path, tmp_path: Path
) -> None:
    from molgan.checkpoint import CheckpointWriter, load_checkpoint

    old = load_checkpoint(debug_run / "last.safetensors")
    config = old.meta["config"]
    del config["train"]["rl_temperature"]
    config["sampling"] = config["sampling"] | {"mode": "gumbel", "temperature": 1.4}
    run = tmp_path / "old-run"
    run.mkdir()
    writer = CheckpointWriter(old.meta | {"config": config})
    writer.tensors.update(old.tensors)
    writer.write(run / "last.safetensors")
    resumed, _ = load_resume(run)
    assert resumed.train.rl_temperature == 1.4
    # A run that names it keeps its own.
    assert load_resume(debug_run)[0].train.rl_temperature == 1.0


# --------------------------------------------------------------------------- data workers


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_sigterm_during_data_prepare_leaves_no_worker_behind(
    qm9_smiles: list[str], tmp_path: Path
) -> None:
    data = tmp_path / "many.smi"
    data.write_text("\n".join(qm9_smiles[:80_000]) + "\n")
    env = os.environ | {"MOLGAN_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "molgan", "data", "prepare", str(data)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            workers = children_of(process.pid)
        assert len(workers) >= 2, "the featurizing workers never started"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert process.returncode == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
            time.sleep(0.1)
        # A reaped or never-reaped (zombie, parent gone) worker has no live process left.
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
        for pid in children_of(process.pid):
            os.kill(pid, signal.SIGKILL)
    # Interrupted before featurizing ended: no cache file claims to hold the dataset.
    assert not any((tmp_path / "cache").glob("*.safetensors"))


def test_property_sweep_trains_each_weight_and_scores_it(
    toy_checkpoint: Path, small_smiles_path: Path, tmp_path: Path
) -> None:
    from molgan.evaluation import evaluate_sampler
    from molgan.sampling import MoleculeSampler

    script = str(REPO_ROOT / "experiments" / "property_sweep.py")
    out = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, script, "--config", str(REPO_ROOT / "configs" / "debug.yaml"), "--init",
         str(toy_checkpoint), "--set", f"data.path={small_smiles_path}", "--set", "train.steps=2",
         "--weights", "1,4", "--samples", "60", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert [r["weight"] for r in rows] == [1.0, 4.0]
    for row in rows:
        run = out / f"qed-w{row['weight']:g}"
        config = load_config(run / "config.yaml")
        assert config.reward.weights == {"validity": 1.0, "uniqueness": 1.0, "qed": row["weight"]}
        assert config.reward.combine == "product" and config.train.init_generator == str(toy_checkpoint)
        again = evaluate_sampler(MoleculeSampler.load(run / "last.safetensors"), 60, seed=0, objectives=True)
        assert row["validity"] == again["validity"] > 0 and row["qed_hits"] == again["qed_hits"]
    assert (out / "sweep.png").read_bytes().startswith(b"\x89PNG")
    table = (out / "sweep.md").read_text()
    assert subprocess.run([sys.executable, script, "--tabulate", str(out)], capture_output=True,
                          text=True, timeout=120).stdout.strip() == table.strip()
    bad = subprocess.run([sys.executable, script, "--weights", "1,x", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--weights" in bad.stderr
