"""Which synthetic patients/subjects the data tests write (shared by conftest and the tests)."""

ACDC_TRAIN = (1, 2, 3, 18, 19)  # 18, 19 are validation patients
ACDC_TEST = (101, 102)
ABDOMEN_SMALL = (48, 40, 64)
