"""Synthetic ACDC appearance realism: geometry and labels unchanged, appearance harder, plain phantoms kept."""

import numpy as np
import pytest
from samir.data.synthetic_acdc import acdc_phantom


def _spread(img, mask):
    return np.percentile(img[mask], 90) / max(np.percentile(img[mask], 10), 1)


def test_realism_changes_appearance_not_labels():
    plain, real = acdc_phantom(4, seed=2, realism=0.0), acdc_phantom(4, seed=2, realism=1.0)
    assert np.array_equal(plain["affine"], real["affine"]) and plain["info"] == real["info"]
    for phase in ("ED", "ES"):
        (img0, lab0, _), (img1, lab1, _) = plain[phase], real[phase]
        assert np.array_equal(lab0, lab1) and img0.shape == img1.shape
        assert not np.array_equal(img0, img1)
        # blood pools are no longer uniform: trabeculae make the cavity's spread larger
        cav = lab1 == 3
        assert _spread(img1, cav) > 1.2 * _spread(img0, cav)
        # still bright blood, darker myocardium
        assert np.median(img1[lab1 == 3]) > 2.0 * np.median(img1[lab1 == 2])
    again = acdc_phantom(4, seed=2, realism=1.0)
    assert np.array_equal(again["ED"][0], real["ED"][0])
    with pytest.raises(ValueError, match="realism"):
        acdc_phantom(4, seed=2, realism=2.0)
