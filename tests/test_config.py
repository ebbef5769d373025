"""Profiles and YAML round trips."""
from __future__ import annotations

import pytest

from chh_lib.config import (
    PROFILES,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml,
    profile_config,
    save_config,
)
from chh_lib.errors import ConfigError, DataFormatError


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_round_trip_through_yaml(name, tmp_path):
    config = profile_config(name)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_from_dict(config_to_dict(config)) == config


def test_paper_profile_has_the_papers_settings():
    config = profile_config("paper")
    assert config.data.image_size == (640, 800)
    assert config.model.name == "unet_resnet34"
    assert (config.train.lr, config.train.lr_milestones, config.train.lr_gamma) == (1e-3, [4, 6, 8], 0.1)
    assert (config.train.epochs, config.train.batch_size, config.train.warmup_epochs) == (15, 4, 0)
    assert config.eval.sdr_thresholds_mm == [2.0, 2.5, 3.0, 4.0]
    assert config.eval.sdr_inclusive is False


def test_unknown_profile_and_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        profile_config("huge")
    with pytest.raises(ConfigError, match="learning_rate"):
        config_from_dict({"train": {"learning_rate": 1.0}})
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(DataFormatError, match="bad.yaml"):
        load_yaml(tmp_path / "bad.yaml")
