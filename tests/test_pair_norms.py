"""A 200-class head is as sound as a 10-class one: its rows' pairwise distances are exact even
for nearly equal rows (where torch.cdist's matrix-product form cancels), and PGD inside the
certificates of a model trained on digits with such a head never flips a prediction."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from attacks import pgd_l2
from torch import nn

from tradeoff import zoo
from tradeoff.certificates import Certifier, certify, lipschitz_bound
from tradeoff.loop import fit
from tradeoff.losses import TauCrossEntropy

CLASSES = 200


@pytest.fixture(scope="module")
def wide_head(digits):
    """A seed_mlp trained on digits, in float64, whose head repeats each of the 10 trained rows
    20 times, each copy moved by 3e-8 to 2e-7 in a random direction."""
    torch.manual_seed(0)
    model = zoo.create("seed_mlp", input_shape=digits.input_shape, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xy = (digits.train.x, digits.train.y)
    fit(model, TauCrossEntropy(5.0), opt, xy, None, epochs=4, batch_size=64, progress=False)
    model = copy.deepcopy(model).double().eval()
    rows = model[-1].weight.detach().repeat(CLASSES // 10, 1)
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(rows.shape, generator=gen, dtype=torch.float64)
    gap = 10 ** torch.empty(CLASSES, 1, dtype=torch.float64).uniform_(-7.5, -6.7, generator=gen)
    head = nn.Linear(rows.shape[1], CLASSES, bias=False, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(rows + gap * direction / direction.norm(dim=1, keepdim=True))
    wide = zoo.LipNet(*list(model)[:-1], head, input_shape=digits.input_shape, num_classes=200)
    return wide.eval()


def test_pair_norms_equal_exact_row_distances(wide_head, digits):
    certifier = Certifier.from_model(wide_head)
    body = lipschitz_bound(nn.Sequential(*list(wide_head)[:-1]), digits.input_shape)
    rows = wide_head[-1].weight.detach().tolist()
    worst_low, worst_high, near = math.inf, 0.0, 0
    for k in range(CLASSES):
        for j in range(CLASSES):
            if j == k:
                continue
            exact = math.dist(rows[k], rows[j]) * body  # Python's own, independent of torch
            ratio = float(certifier.pair_norms[k, j]) / exact
            worst_low, worst_high = min(worst_low, ratio), max(worst_high, ratio)
            near += exact < 1e-6
    assert near >= CLASSES * (CLASSES // 10 - 1)  # every copy is near its 19 siblings
    assert worst_low >= 1.0  # never below the true distance: radii are never inflated
    assert worst_high <= 1 + 2e-6  # and above it by the declared slack only


def test_pgd_inside_certificates_of_a_200_class_head_never_flips(wide_head, digits):
    x = digits.test.x[:200].double()
    radii = certify(wide_head, x)
    assert torch.isfinite(radii).all() and float(radii.mean()) > 1e-3
    with torch.no_grad():
        logits = wide_head(x)
    pred = logits.argmax(1)
    runner_up = logits.scatter(1, pred[:, None], -math.inf).argmax(1)
    assert ((pred - runner_up) % 10 == 0).float().mean() > 0.9  # siblings decide the radii
    flipped = pgd_l2(wide_head, x, 0.999 * radii, steps=40, restarts=2)
    assert not flipped.any(), f"{int(flipped.sum())} predictions changed inside a certificate"
    assert pgd_l2(wide_head, x, 1.5 * radii, steps=40, restarts=1).float().mean() > 0.5
