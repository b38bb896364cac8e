"""Config numbers: every float key of [train] and [data] finite, lr and weight decay in range, each a
ConfigError naming the key (exit 2 before any work)."""
from __future__ import annotations

import pytest

import genstudio.train as train_mod
from genstudio.config import ConfigError, DataConfig, TrainConfig, config_from_dict
from tests.helpers import toy_config
from tests.train.runs import write_toml

FLOAT_KEYS = [("train", f.name) for f in TrainConfig.__dataclass_fields__.values() if f.type in ("float", float)]
FLOAT_KEYS += [("data", f.name) for f in DataConfig.__dataclass_fields__.values() if f.type in ("float", float)]


def test_the_float_keys_are_the_ones_expected():
    assert FLOAT_KEYS == [("train", k) for k in ("lr", "weight_decay", "grad_clip", "ema_half_life_kimg",
                                                 "ema_rampup_ratio", "ema_decay", "label_dropout")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("section, key", FLOAT_KEYS, ids=[f"{s}.{k}" for s, k in FLOAT_KEYS])
def test_every_float_key_must_be_finite(section, key, value):
    with pytest.raises(ConfigError, match=f"^{section}\\.{key} must be a finite number, got {value}$"):
        config_from_dict({section: {key: value}})


@pytest.mark.parametrize("train, message", [
    ({"lr": 1e38}, "train.lr must be at most 10, got 1e\\+38"),
    ({"lr": 10.5}, "train.lr must be at most 10, got 10.5"),
    ({"lr": -1e-4}, "train.lr must be >= 0"),
    ({"grad_clip": -1.0}, "train.grad_clip must be >= 0"),
    ({"lr": 0.5, "weight_decay": 2.0}, "train.weight_decay = 2.0 with train.lr = 0.5: their product must be < 1"),
    ({"adam_betas": [float("nan"), 0.999]}, "train.adam_betas must be two numbers in \\[0, 1\\)"),
    ({"adam_betas": [0.9, float("inf")]}, "train.adam_betas must be two numbers in \\[0, 1\\)"),
])
def test_config_numbers_out_of_range_are_refused(train, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"train": train})


@pytest.mark.parametrize("train", [{"lr": 10.0}, {"lr": 0.0}, {"grad_clip": 1e30}, {"lr": 1e-4, "weight_decay": 100.0}])
def test_config_numbers_at_the_edges_are_accepted(train):
    config = config_from_dict({"train": train})
    assert all(getattr(config.train, k) == v for k, v in train.items())


@pytest.mark.parametrize("override, message", [
    (["--train.lr", "1e38"], "train.lr must be at most 10"),
    (["--train.lr", "nan"], "train.lr must be a finite number, got nan"),
    (["--train.grad_clip", "inf"], "train.grad_clip must be a finite number, got inf"),
    (["--train.weight_decay=-inf"], "train.weight_decay must be a finite number, got -inf"),
])
def test_non_finite_or_huge_numbers_on_the_command_line_exit_2_before_any_work(tmp_path, override, message, capsys):
    cfg_path = write_toml(tmp_path / "c.toml", toy_config(tmp_path, tmp_path / "no-such-data"))
    assert train_mod.main(["--config", str(cfg_path), *override]) == 2  # a config error
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
