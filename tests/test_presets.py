"""Presets: the choice from the fixed image, names checked with the choices listed, CT window from the data module."""

import numpy as np
import pytest
from samir.data.abdomen import ABDOMEN_HU_RANGE
from samir.presets import PRESET_CHOICES, PRESETS, check_preset, choose_preset, preset_weights


@pytest.mark.parametrize(
    "image,zooms,expected",
    [
        (np.full((32, 32, 32), -1000.0), (1, 1, 1), "abdomen"),  # air in HU
        (np.random.default_rng(0).random((160, 160, 10)), (1.5, 1.5, 8.0), "cardiac"),  # thick-slice stack
        (np.random.default_rng(0).random((96, 96, 96)), (1, 1, 1), "generic"),
    ],
)
def test_choose_preset(image, zooms, expected):
    assert choose_preset(image, zooms) == expected


def test_presets_and_choices():
    assert set(PRESETS) == {"cardiac", "abdomen", "generic"}
    assert PRESET_CHOICES == ("auto", "cardiac", "abdomen", "generic")
    assert PRESETS["abdomen"].intensity == ABDOMEN_HU_RANGE  # one CT window, imported
    assert preset_weights("auto") == preset_weights("cardiac")
    assert preset_weights("abdomen").name == "model_abdomen.pt"


def test_check_preset_names_the_option_and_choices():
    assert check_preset("auto") == "auto"
    with pytest.raises(ValueError, match=r"--conf preset: expected one of \['auto', 'cardiac'.*got 'lung'"):
        check_preset("lung", option="--conf preset")
