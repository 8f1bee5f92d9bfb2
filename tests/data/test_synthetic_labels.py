"""SynthMorph-style label-driven pairs: determinism, labels, deformation, contrasts, writer, mixing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from samir.data.synthetic_labels import (
    SynthMorphDataset,
    random_label_map,
    synth_pair,
    write_synthmorph_pairs,
)

SHAPE = (48, 48, 16)


def _dice_mean(a, b):
    ks = [k for k in np.unique(np.concatenate([np.unique(a), np.unique(b)])) if k != 0]
    return float(np.mean([2 * ((a == k) & (b == k)).sum() / ((a == k).sum() + (b == k).sum()) for k in ks]))


def _label_means(image, label):
    return np.array([image[label == k].mean() for k in np.unique(label)])


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_deterministic_by_seed():
    a, b, c = synth_pair(seed=[3, 1], shape=SHAPE), synth_pair(seed=[3, 1], shape=SHAPE), synth_pair(seed=[3, 2], shape=SHAPE)
    for key in ("fixed", "moving", "fixed_label", "moving_label", "affine"):
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["fixed"], c["fixed"])
    ds = SynthMorphDataset(4, seed=7, shape=SHAPE)
    assert torch.equal(ds[2]["moving"], SynthMorphDataset(4, seed=7, shape=SHAPE)[2]["moving"])


def test_outputs_and_labels_present():
    for seed in range(4):
        p = synth_pair(seed=seed, shape=SHAPE)
        assert p["fixed"].shape == p["moving"].shape == p["fixed_label"].shape == SHAPE
        assert p["fixed"].dtype == np.float32 and p["fixed_label"].dtype == np.uint8
        assert 0.0 <= p["fixed"].min() and p["fixed"].max() <= 1.0
        k = p["info"]["n_labels"]
        assert 8 <= k <= 26
        assert len(np.unique(p["fixed_label"])) >= 0.6 * k  # most labels survive the warps
    lab = random_label_map(0, SHAPE, n_labels=(10, 10))
    assert sorted(np.unique(lab).tolist()) == list(range(10))  # every label present, values 0..K-1


def test_pair_needs_registration():
    dice = [_dice_mean(p["fixed_label"], p["moving_label"]) for p in (synth_pair(seed=s, shape=SHAPE) for s in range(4))]
    assert all(d < 0.9 for d in dice), dice
    assert np.mean(dice) > 0.2, dice  # deformed versions of one map, not unrelated maps


def test_contrast_modes():
    same = synth_pair(seed=5, shape=SHAPE, contrast="same")
    cross = synth_pair(seed=5, shape=SHAPE, contrast="cross")
    inv = synth_pair(seed=5, shape=SHAPE, contrast="inverted")
    order = {}
    for name, p in (("same", same), ("cross", cross), ("inverted", inv)):
        order[name] = _spearman(_label_means(p["fixed"], p["fixed_label"]), _label_means(p["moving"], p["moving_label"]))
    assert order["same"] > 0.8
    assert order["cross"] < 0.7  # another intensity ordering of the labels
    assert order["inverted"] < -0.8
    modes = {synth_pair(seed=s, shape=(32, 32, 8), n_labels=(4, 6), realism=0.0)["info"]["contrast"] for s in range(30)}
    assert modes == {"same", "cross", "inverted"}


def test_anatomy_pasted():
    heart = np.zeros((40, 40, 10), dtype=np.uint8)
    heart[10:30, 10:30, :] = 1
    heart[15:25, 15:25, :] = 2
    p = synth_pair(seed=1, shape=SHAPE, anatomy=[heart], p_anatomy=1.0, n_labels=(8, 8))
    assert p["info"]["n_labels"] <= 8


def test_dataset_items_match_training_chain():
    ds = SynthMorphDataset(3, seed=0, shape=SHAPE)
    item = ds[0]
    assert set(item) >= {"fixed", "moving", "fixed_label", "moving_label", "pair_id"}
    assert tuple(item["fixed"].shape) == (1, *SHAPE) and item["fixed"].dtype == torch.float32
    spacing = torch.linalg.norm(item["fixed"].affine[:3, :3], dim=0)
    assert spacing[2] >= spacing[0]  # slice thickness at least the in-plane size
    fresh = SynthMorphDataset(3, seed=0, shape=SHAPE, fresh=True)
    assert not torch.equal(fresh[1]["fixed"], fresh[1]["fixed"])  # a new pair on each read


def test_writer_readable_by_pairs_dataset(tmp_path):
    from samir.data.registry import dataset_pairs, dataset_transforms, resolve_data_root
    from samir.data.transforms import load_pair

    root = write_synthmorph_pairs(tmp_path / "sm", n=3, n_val=1, seed=2, shape=(32, 32, 8))
    meta = json.loads((root / "pairs.json").read_text())
    assert len(meta["train"]) == 3 and len(meta["val"]) == 1
    pairs = dataset_pairs("pairs", root / "pairs.json", "train")
    assert len(pairs) == 3 and set(pairs[0]) >= {"fixed", "moving", "fixed_label", "moving_label"}
    out = load_pair(dataset_transforms("pairs"), pairs[0])
    assert tuple(out["fixed"].shape) == (1, 32, 32, 8)
    assert dataset_pairs("synthmorph", root, "val")[0]["pair_id"] == "synth0003"
    # registered data set: written on first use
    target = resolve_data_root("synthmorph", None, tmp_path / "auto", n=2, n_val=1, shape=(16, 16, 8))
    assert len(dataset_pairs("synthmorph", target, "train")) == 2


def test_mix_ratio_in_training_datalist():
    from samir.data.mix import mix_pairs, parse_mix, source_counts

    main = [{"fixed": f"f{i}", "moving": f"m{i}"} for i in range(10)]
    assert mix_pairs(main, {}) == main
    for ratio in (0.25, 0.5, 0.75):
        mixed = mix_pairs(main, {"synthmorph": ratio}, dataset="acdc")
        counts = source_counts(mixed)
        assert counts["acdc"] == 10
        assert counts["synthmorph"] / len(mixed) == pytest.approx(ratio, abs=0.05)
    assert source_counts(mix_pairs(main, {"synthmorph": {"n": 7}}))["synthmorph"] == 7
    assert parse_mix("{'synthmorph': 0.5}") == {"synthmorph": {"ratio": 0.5}}
    assert parse_mix("synthmorph:0.2") == {"synthmorph": {"ratio": 0.2}}
    with pytest.raises(ValueError, match="less than 1|ratio < 1"):
        parse_mix({"synthmorph": 1.0})
    with pytest.raises(ValueError, match="unknown source"):
        parse_mix({"nope": 0.5})


def test_mix_transform_makes_pairs_on_main_grid(tmp_path):
    from monai.data import CacheDataset, DataLoader
    from samir.data.mix import mix_pairs, mix_transform
    from samir.data.registry import dataset_pairs, dataset_transforms

    root = write_synthmorph_pairs(tmp_path / "sm", n=2, n_val=0, seed=0, shape=(32, 24, 8))
    main = dataset_pairs("pairs", root / "pairs.json", "train")
    chain = dataset_transforms("pairs")
    mix = {"synthmorph": {"ratio": 0.5, "n_labels": [8, 12]}}
    datalist = mix_pairs(main, mix, seed=0, dataset="pairs")
    ds = CacheDataset(datalist, transform=mix_transform(chain, mix, datalist, seed=0), progress=False)
    items = [ds[i] for i in range(len(ds))]
    assert [it["source"] for it in items] == ["pairs", "pairs", "synthmorph", "synthmorph"]
    for it in items:
        assert tuple(it["fixed"].shape) == (1, 32, 24, 8) and it["fixed_label"].dtype == torch.int32
    batch = next(iter(DataLoader(ds, batch_size=4)))  # main and generated pairs collate together
    assert tuple(batch["moving"].shape) == (4, 1, 32, 24, 8)


def test_mix_pastes_phantom_anatomy(tmp_path):
    from samir.data.mix import SynthPaird
    from samir.io import save_nifti

    heart = np.zeros((40, 40, 10), dtype=np.uint8)
    heart[8:32, 8:32, :] = 2
    heart[14:26, 14:26, :] = 3
    save_nifti(tmp_path / "p_gt.nii.gz", heart, np.eye(4))
    opts = {"synthmorph": {"ratio": 0.5, "fresh": False, "p_anatomy": 1.0, "n_labels": [8, 8],
                           "anatomy_files": str(tmp_path / "*_gt.nii.gz")}}
    t = SynthPaird(opts, shape=(32, 32, 8))
    item = t({"source": "synthmorph", "synth_index": 0, "synth_seed": 0, "pair_id": "s0"})
    assert tuple(item["fixed"].shape) == (1, 32, 32, 8) and int(item["fixed_label"].max()) <= 7
    again = t({"source": "synthmorph", "synth_index": 0, "synth_seed": 0, "pair_id": "s0"})
    assert torch.equal(item["moving"], again["moving"])  # fresh=False: the recipe is the pair
    with pytest.raises(FileNotFoundError, match="matches no file"):
        SynthPaird({"synthmorph": {"ratio": 0.5, "anatomy_files": str(tmp_path / "none*")}})(
            {"source": "synthmorph", "synth_index": 0})
