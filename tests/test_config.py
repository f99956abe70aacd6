"""The typed run configuration: shipped files, unknown keys, types, command-line overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from molgan.config import (
    Config,
    ConfigError,
    Estimator,
    RLEstimator,
    Schedule,
    config_from_dict,
    load_config,
    parse_overrides,
)
from tests.conftest import DEBUG_CONFIG, REPO_ROOT

SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert DEBUG_CONFIG in SHIPPED
    assert REPO_ROOT / "configs" / "paper.yaml" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.name == path.stem
    # What a checkpoint stores (JSON) rebuilds the same config.
    assert config_from_dict(cfg.model_dump(mode="json")) == cfg


def test_debug_config_values() -> None:
    cfg = load_config(DEBUG_CONFIG)
    assert cfg.model.z_dim == 7
    assert cfg.model.generator_dims == (11, 13)
    assert cfg.train.steps == 30
    assert cfg.reward.weights == {"validity": 1.0, "uniqueness": 0.5}


def test_no_file_gives_defaults() -> None:
    assert load_config(None) == Config()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.batchsize=3", "train.batchsize"),
        ("model.gcn_dim=[4]", "model.gcn_dim"),
        ("trian.steps=3", "trian"),
    ],
)
def test_unknown_key_is_an_error_naming_it(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(DEBUG_CONFIG, [override])


def test_unknown_key_in_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  steps: 10\n  n_critics: 3\n")
    with pytest.raises(ConfigError, match=r"train\.n_critics"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.batch_size=many", "train.batch_size"),
        ("train.lr_generator=fast", "train.lr_generator"),
        ("model.gcn_dims=oops", "model.gcn_dims"),
        ("train.rl_estimator=policy", "train.rl_estimator"),
        ("model.estimator=hard", "model.estimator"),
        ("train.lam=1.5", "train.lam"),
        ("train.batch_size=1", "train.batch_size"),
        ("temperature.tau_min=2.0", "tau_start"),
        ("train=5", "train"),
    ],
)
def test_mistyped_or_out_of_range_value_is_an_error(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(DEBUG_CONFIG, [override])


def test_mistyped_value_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  z_dim: seven\n")
    with pytest.raises(ConfigError, match=r"model\.z_dim"):
        load_config(path)


def test_overrides_are_nested_and_yaml_typed() -> None:
    cfg = load_config(
        DEBUG_CONFIG,
        [
            "train.lam=0.3",
            "model.gcn_dims=[32, 16]",
            "train.lr_generator=3e-4",
            "reward.weights={validity: 1, qed: 2.5}",
            "train.max_minutes=0.5",
            "data.path=null",
            "sampling.mode=gumbel",
            "name=tuned",
        ],
    )
    assert cfg.train.lam == 0.3
    assert cfg.model.gcn_dims == (32, 16)
    assert cfg.train.lr_generator == pytest.approx(3e-4)
    # A mapping value replaces the file's mapping (uniqueness is gone), it is not merged into it.
    assert cfg.reward.weights == {"validity": 1.0, "qed": 2.5}
    assert cfg.train.max_minutes == 0.5
    assert cfg.data.path is None
    assert cfg.sampling.mode == "gumbel"
    assert cfg.name == "tuned"
    # Keys not overridden keep the file's values.
    assert cfg.train.n_critic == 2 and cfg.model.z_dim == 7


def test_dotted_override_merges_into_mapping() -> None:
    cfg = load_config(DEBUG_CONFIG, ["reward.weights.qed=2"])
    assert cfg.reward.weights == {"validity": 1.0, "uniqueness": 0.5, "qed": 2.0}


def test_later_override_wins() -> None:
    assert load_config(DEBUG_CONFIG, ["train.steps=5", "train.steps=9"]).train.steps == 9


def test_parse_overrides_nests() -> None:
    nested = parse_overrides(["a.b.c=1", "a.b.d=x", "e=[1, 2]"])
    assert nested == {"a": {"b": {"c": 1, "d": "x"}}, "e": [1, 2]}


@pytest.mark.parametrize("override", ["train.steps", "=3", " =3", "train.steps:3"])
def test_malformed_override_rejected(override: str) -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(DEBUG_CONFIG, [override])


@pytest.mark.parametrize("override", ["model.gcn_dims=[32, 16", "reward.weights={qed: 1", "name=a: b: c"])
def test_override_with_malformed_yaml_value_rejected(override: str) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(DEBUG_CONFIG, [override])


def test_malformed_yaml_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_batch_must_split_into_packs() -> None:
    with pytest.raises(ConfigError, match=r"multiples of .*model\.pack \(5\)"):
        load_config(DEBUG_CONFIG, ["model.pack=5"])
    assert load_config(DEBUG_CONFIG, ["model.pack=3"]).model.pack == 3


@pytest.mark.parametrize("data", [[1, 2], "train", None])
def test_config_from_non_mapping_rejected(data: object) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        config_from_dict(data)  # type: ignore[arg-type]


def test_conflicting_overrides_rejected() -> None:
    with pytest.raises(ConfigError, match="conflicts"):
        parse_overrides(["train.lam=0.3", "train.lam.x=1"])


def test_missing_file_and_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- train\n- model\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path) == Config()


def test_config_is_frozen() -> None:
    cfg = load_config(DEBUG_CONFIG)
    with pytest.raises(ValueError, match="frozen"):
        cfg.train.steps = 3  # type: ignore[misc]


def test_config_is_a_leaf_module() -> None:
    # A fresh interpreter: the test session has long imported the rest of the package. The only
    # molgan modules config may use are the sampling rules and the device names, leaves both.
    code = (
        "import sys, molgan.config\n"
        "print(sorted(m for m in sys.modules if m.startswith('molgan')))\n"
        "print(sorted(m for m in ('torch', 'rdkit', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "['molgan', 'molgan.config', 'molgan.device', 'molgan.sampling_settings']", "[]"
    ]


def test_option_names_agree_with_the_modules_that_implement_them() -> None:
    from molgan.gumbel import ESTIMATORS, SCHEDULES
    from molgan.training.rl import RL_ESTIMATORS

    assert get_args(Estimator) == ESTIMATORS
    assert get_args(Schedule) == SCHEDULES
    assert set(get_args(RLEstimator)) == set(RL_ESTIMATORS)

