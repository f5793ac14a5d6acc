import pytest
from torch import nn

from s2rcli.errors import S2RError
from s2rcli.models import registry
from s2rcli.models.registry import create_model, get_model_entry, list_models, register_model


@pytest.fixture
def toy_model():
    @register_model("toy-test-net", kind="segmenter", input_kind="image",
                    presets={"tiny": {"model": {"width": 4}}, "paper": {"model": {"width": 64}}})
    def toy(width: int = 8, classes: int = 19) -> nn.Module:
        """A toy segmenter for registry tests."""
        return nn.Conv2d(3, classes, 1) if width < 0 else nn.Sequential(nn.Conv2d(3, width, 1), nn.Conv2d(width, classes, 1))

    yield "toy-test-net"
    registry.unregister_model("toy-test-net")


def test_register_and_create(toy_model):
    assert toy_model in list_models()
    assert toy_model in list_models(kind="segmenter")
    assert toy_model not in list_models(kind="translation")
    net = create_model(toy_model, preset="tiny")
    assert net[0].out_channels == 4
    net = create_model(toy_model, preset="paper", classes=7)
    assert net[0].out_channels == 64 and net[1].out_channels == 7
    entry = get_model_entry(toy_model)
    assert entry.description == "A toy segmenter for registry tests."


def test_duplicate_registration_rejected(toy_model):
    with pytest.raises(ValueError, match="already registered"):
        register_model(toy_model, kind="segmenter", input_kind="image")(lambda: None)


def test_bad_kind_rejected():
    with pytest.raises(ValueError, match="kind must be"):
        register_model("x-bad-kind", kind="detector", input_kind="image")
    with pytest.raises(ValueError, match="unknown sections"):
        register_model("x-bad-preset", kind="segmenter", input_kind="image", presets={"tiny": {"modle": {}}})


def test_unknown_name_lists_valid_ones(toy_model):
    with pytest.raises(S2RError) as err:
        create_model("toy-test-nte")
    text = err.value.one_line()
    assert "unknown model 'toy-test-nte'" in text
    assert "did you mean 'toy-test-net'" in text
    assert toy_model in text.split("valid names:")[1]


def test_unknown_preset(toy_model):
    with pytest.raises(S2RError, match="no preset 'huge'"):
        create_model(toy_model, preset="huge")


# --- the written contract, checked at registration --------------------------------------------


def test_translation_model_without_its_methods_fails_at_registration():
    class HalfTranslator(nn.Module):
        stride = 4

        def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
            pass

    with pytest.raises(TypeError, match=r"model 'x-half'.*HalfTranslator lacks translate"):
        register_model("x-half", kind="translation", input_kind="image")(HalfTranslator)
    assert "x-half" not in list_models()


def test_label_model_needs_generate():
    class NoGenerate(nn.Module):
        def translate(self, x, direction="a2b"):
            return x

        def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
            pass

    with pytest.raises(TypeError, match="lacks generate"):
        register_model("x-nogen", kind="translation", input_kind="label")(NoGenerate)


def test_factory_must_name_its_class():
    with pytest.raises(TypeError, match="annotate the factory's return class"):
        register_model("x-anon", kind="segmenter", input_kind="image")(lambda: nn.Conv2d(3, 3, 1))


def test_every_builtin_model_satisfies_its_contract():
    from s2rcli.models.contract import CONTRACTS, missing_methods

    for name in list_models():
        entry = get_model_entry(name)
        model = create_model(name, preset="tiny" if "tiny" in entry.presets else None)
        assert not missing_methods(type(model), entry.kind, entry.input_kind), name
        assert isinstance(model, CONTRACTS[(entry.kind, entry.input_kind)]), name


def test_trainable_models_are_listed_for_training():
    trainable = list_models(trainable=True)
    for name in ("unit", "sis", "fastseg", "deeplabv3", "fcn"):
        assert name in trainable
