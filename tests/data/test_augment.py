"""Augmentation as batched tensor ops: what each op does to a batch, seeding, and the data each
one refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tradeoff.data.augment import AUGMENTS, create, random_crop, random_flip


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_is_a_per_sample_crop_of_the_padded_image():
    x = torch.rand(6, 3, 7, 9)
    out = random_crop(x, 2, _gen())
    offsets = torch.randint(0, 5, (6, 2), generator=_gen())
    padded = F.pad(x, (2, 2, 2, 2))
    expected = torch.stack(
        [padded[i, :, r : r + 7, c : c + 9] for i, (r, c) in enumerate(offsets.tolist())]
    )
    assert torch.equal(out, expected)


def test_shift_translates_content_by_at_most_max_shift():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 4] = 1.0  # one lit pixel per image
    out = create("shift", max_shift=2)(x, _gen())
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))
    rows, cols = out[:, 0].nonzero()[:, 1:].unbind(1)
    assert rows.sub(3).abs().max() <= 2 and cols.sub(4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # they do move


def test_flips_are_left_right_and_about_half():
    x = torch.rand(400, 3, 4, 5)
    out = random_flip(x, _gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | flipped).all()
    assert 150 < int(flipped.sum()) < 250


def test_crop_flip_is_seeded_by_the_generator():
    x = torch.rand(16, 3, 32, 32)
    augment = create("crop_flip")
    assert torch.equal(augment(x, _gen(1)), augment(x, _gen(1)))
    assert not torch.equal(augment(x, _gen(1)), augment(x, _gen(2)))


def test_none_is_no_augmentation():
    assert create("none") is None


@pytest.mark.parametrize(
    "name,options,shape,message",
    [
        ("crop_flip", {}, (1, 8, 8), "crop_flip is for colour photos (3×H×W"),
        ("crop_flip", {"padding": 9}, (3, 32, 32), "use padding <= 8"),
        ("shift", {"max_shift": 3}, (1, 8, 8), "use max_shift <= 2"),
    ],
)
def test_augments_that_do_not_fit_the_data_are_refused(name, options, shape, message):
    with pytest.raises(ValueError) as info:
        create(name, **options).check(shape)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("mixup", {}, "unknown augment 'mixup'; augments: none, " + ", ".join(AUGMENTS)),
        ("shift", {"max_shift": -1}, "max_shift must be an integer >= 0"),
        ("shift", {"padding": 2}, "unknown option(s) padding for augment 'shift'"),
        ("none", {"max_shift": 2}, "augment none takes no options"),
    ],
)
def test_bad_augments_are_refused_naming_the_key(name, options, message):
    with pytest.raises(ValueError) as info:
        create(name, **options)
    assert message in str(info.value)
