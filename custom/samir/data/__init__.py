"""Data sets of SAMIR: ACDC and Learn2Reg AbdomenCTCT readers, generic pair datalists, validation,
MONAI transform chains and synthetic stand-ins in the official layouts.

Readers return MONAI-style lists of dicts {fixed, moving, fixed_label?, moving_label?, pair_id, ...}
with paths; :mod:`samir.data.transforms` turns them into (1, H, W, D) MetaTensors.
Heavy submodules (transforms, synthetic) are imported on use: ``from samir.data.acdc import acdc_pairs``.
"""

from samir.data.abdomen import ABDOMEN_LABELS, abdomen_pairs
from samir.data.acdc import ACDC_LABELS, ACDC_VAL_IDS, acdc_pairs, read_info_cfg
from samir.data.pairs import datalist_pairs

__all__ = ["ACDC_LABELS", "ACDC_VAL_IDS", "read_info_cfg", "acdc_pairs", "ABDOMEN_LABELS", "abdomen_pairs",
           "datalist_pairs"]
