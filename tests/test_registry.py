import pytest
from torch import nn

from visionzoo import create_model, get_model_info, list_models
from visionzoo.registry import Family, UnknownModelError, parse_docstring, register_model


def test_list_models_wildcards():
    assert "lenet5" in list_models()
    assert list_models("lenet*") == ["lenet5", "lenet5_paper"]
    assert list_models("nothing-like-this*") == []
    assert set(list_models(["lenet5", "lenet5_p*"])) == {"lenet5", "lenet5_paper"}


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError) as err:
        create_model("lenet")
    assert "lenet5" in str(err.value)


def test_register_twice_is_an_error():
    fam = Family("Test", 2000, "t", "u")
    with pytest.raises(ValueError, match="already registered"):

        @register_model(fam)
        def lenet5(**kwargs):  # noqa: F811 - the point of the test
            return nn.Identity()


def test_unregister_removes_a_runtime_model():
    from visionzoo import is_registered, unregister_model

    fam = Family("Test", 2000, "t", "u")

    @register_model(fam, image_size=8, num_classes=3)
    def tmp_runtime_net(**kwargs):
        return nn.Identity()

    assert is_registered("tmp_runtime_net") and "tmp_runtime_net" in list_models("tmp_*")
    info = unregister_model("tmp_runtime_net")
    assert info.num_classes == 3
    assert not is_registered("tmp_runtime_net") and list_models("tmp_*") == []
    with pytest.raises(UnknownModelError):
        unregister_model("tmp_runtime_net")


def test_model_info_from_docstring():
    info = get_model_info("lenet5_paper")
    assert info.family == "LeNet" and info.year == 1998
    assert "Gradient-Based Learning" in info.paper
    assert info.key_idea.startswith("learn the features from pixels")
    assert any("RBF" in note for note in info.notes)
    assert info.reference_params == 60_000 and info.image_size == 32


def test_parse_docstring_paragraphs():
    key, notes = parse_docstring(
        "Title.\n\nKey idea: one\ntwo.\n\nOther text.\nNOTE: first\ncontinued.\nNOTE: second."
    )
    assert key == "one two."
    assert notes == ("first continued.", "second.")


def test_create_model_records_its_recipe():
    model = create_model("lenet5", num_classes=3)
    assert model.model_name == "lenet5"
    assert model.model_kwargs == {"num_classes": 3, "in_channels": 1, "image_size": 32}
