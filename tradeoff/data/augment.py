"""Training-set augmentation as batched tensor ops on the training device (no torchvision).

`create("shift")` and `create("crop_flip")` return an `Augment`: `augment(x, generator)` maps a
batch (N, C, H, W) to a new batch of the same shape. Random draws (one offset pair and one flip
per sample) come from the run's CPU generator, so a seed gives the same augmented batches on any
device. `create("none")` returns None: no draw is made and the seed's recipe is unchanged.

- `shift`: translate each image by up to `max_shift` pixels in each direction, filling with
  zeros: for 28×28 digits and clothes (MNIST-style data), where flips would change the class.
- `crop_flip`: the CIFAR recipe, a random crop of the image zero-padded by `padding` pixels,
  then a horizontal flip with probability 1/2: for colour photos (3 channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTS", "Augment", "CropFlip", "Shift", "create", "random_crop", "random_flip"]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crops of `x` zero-padded by `padding`: each image moves by up to
    `padding` pixels in each direction, keeping its size."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 around a slice put the indexed dims first: (n, h, w, c).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class Augment:
    """A random map of training batches; `check` refuses data it does not fit."""

    name = "augment"

    def check(self, input_shape: Sequence[int]) -> None:
        """Raise ValueError when this augmentation does not suit inputs of (C, H, W)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def _non_negative_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0 (got {value!r})")
    return value


@dataclass(frozen=True)
class Shift(Augment):
    """Random translations by up to `max_shift` pixels, zero fill."""

    max_shift: int = 2
    name = "shift"

    def __post_init__(self) -> None:
        _non_negative_int("max_shift", self.max_shift)

    def check(self, input_shape: Sequence[int]) -> None:
        _, h, w = input_shape
        if 4 * self.max_shift > min(h, w):
            raise ValueError(
                f"shift: max_shift={self.max_shift} moves a {h}×{w} image by more than a "
                f"quarter of its side; use max_shift <= {min(h, w) // 4}"
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop(x, self.max_shift, generator)


@dataclass(frozen=True)
class CropFlip(Augment):
    """Random crop of the image padded by `padding`, then a horizontal flip (if `flip`)."""

    padding: int = 4
    flip: bool = True
    name = "crop_flip"

    def __post_init__(self) -> None:
        _non_negative_int("padding", self.padding)

    def check(self, input_shape: Sequence[int]) -> None:
        c, h, w = input_shape
        if c != 3:
            raise ValueError(
                f"crop_flip is for colour photos (3×H×W, e.g. cifar10), and the data has "
                f"shape {tuple(input_shape)}; flips can change a digit's or a letter's class: "
                "use augment=shift"
            )
        if 4 * self.padding > min(h, w):
            raise ValueError(
                f"crop_flip: padding={self.padding} is more than a quarter of a {h}×{w} image; "
                f"use padding <= {min(h, w) // 4}"
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = random_crop(x, self.padding, generator)
        return random_flip(x, generator) if self.flip else x


AUGMENTS: dict[str, type[Augment]] = {a.name: a for a in (Shift, CropFlip)}


def create(name: str = "none", **options: object) -> Augment | None:
    """The augmentation `name` with its options (config group `augment`); None for `none`."""
    if name == "none":
        if options:
            raise ValueError(f"augment none takes no options (got {', '.join(options)})")
        return None
    if name not in AUGMENTS:
        raise ValueError(f"unknown augment {name!r}; augments: none, {', '.join(AUGMENTS)}")
    valid = list(AUGMENTS[name].__dataclass_fields__)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for augment {name!r}; "
            f"valid options: {', '.join(valid)}"
        )
    return AUGMENTS[name](**options)
