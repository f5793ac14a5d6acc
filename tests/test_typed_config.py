"""Defaults live in one typed place: presets are Preset instances of dataclass configs,
and unknown settings are refused instead of silently ignored."""

import dataclasses

import pytest

from s2rcli.errors import S2RError
from s2rcli.models import create_model, get_model_entry, list_models
from s2rcli.models.config import Preset, TrainConfig
from s2rcli.training.config import resolve_config


@pytest.mark.parametrize("name", ["unit", "sis", "fastseg", "deeplabv3", "fcn"])
def test_builtin_presets_are_typed(name):
    entry = get_model_entry(name)
    assert entry.config is not None and dataclasses.is_dataclass(entry.config)
    assert issubclass(entry.train_config, TrainConfig)
    for preset in entry.presets.values():
        assert isinstance(preset, Preset)
        assert isinstance(preset.model, entry.config) and isinstance(preset.train, entry.train_config)


def test_engine_defaults_exist_once():
    cfg = resolve_config("unit", preset="tiny")
    assert cfg["train"]["accumulate"] == TrainConfig.accumulate
    assert cfg["train"]["lr"] == 2e-4 and cfg["data"]["size"] == [64, 128]  # the preset's own values
    assert cfg["train"]["lr_step"] == 100000  # a unit field, from UNITTrain's defaults


def test_unknown_train_key_is_refused_with_a_suggestion():
    with pytest.raises(S2RError) as err:
        resolve_config("unit", preset="tiny", sets=["train.lr_stpe=5"])
    assert "train.lr_stpe is not a setting of unit" in err.value.one_line()
    assert "did you mean train.lr_step" in err.value.one_line()


def test_model_specific_key_of_another_model_is_refused():
    with pytest.raises(S2RError, match="train.align_patches is not a setting of unit"):
        resolve_config("unit", preset="tiny", sets=["train.align_patches=16"])
    assert resolve_config("sis", preset="tiny", sets=["train.align_patches=16"])["train"]["align_patches"] == 16


def test_unknown_model_setting_names_the_valid_ones():
    with pytest.raises(S2RError) as err:
        create_model("unit", preset="tiny", chanels=8)
    assert "has no setting chanels" in err.value.one_line() and "channels" in err.value.one_line()


def test_missing_settings_come_from_the_config_defaults():
    net = create_model("fastseg", num_classes=5)  # no preset: FastSegConfig's defaults (ERFNet)
    assert net.num_classes == 5 and net.head.in_channels == 16


def test_every_trainable_model_resolves_both_presets():
    for name in list_models(trainable=True):
        for preset in get_model_entry(name).presets:
            cfg = resolve_config(name, preset=preset)
            assert cfg["model"] == name and cfg["train"]["steps"] >= 1
