"""Random crop + flip: hand-checked crops, per-client seeding, batched = one by one."""

from __future__ import annotations

import numpy as np
import torch

from flowerbed.clients.augment import Draws, crop_flip, draw, stack


def image() -> torch.Tensor:
    return torch.arange(1, 10, dtype=torch.float32).reshape(1, 1, 3, 3)  # values 1..9


def one(dy: int, dx: int, flip: bool) -> Draws:
    return Draws(torch.tensor([dy]), torch.tensor([dx]), torch.tensor([flip]))


def test_crops_by_hand() -> None:
    x = image()
    assert torch.equal(crop_flip(x, one(1, 1, False), padding=1), x)  # centred: unchanged
    shifted = crop_flip(x, one(0, 0, False), padding=1)[0, 0]
    assert torch.equal(shifted, torch.tensor([[0.0, 0, 0], [0, 1, 2], [0, 4, 5]]))
    right = crop_flip(x, one(1, 2, False), padding=1)[0, 0]
    assert torch.equal(right, torch.tensor([[2.0, 3, 0], [5, 6, 0], [8, 9, 0]]))
    assert torch.equal(crop_flip(x, one(1, 1, True), padding=1), x.flip(-1))  # mirror


def test_draws_come_from_the_clients_generator() -> None:
    a, b = draw(np.random.default_rng(7), 64), draw(np.random.default_rng(7), 64)
    c = draw(np.random.default_rng(8), 64)
    assert torch.equal(a.dy, b.dy) and torch.equal(a.flip, b.flip)
    assert not torch.equal(a.dx, c.dx)
    assert a.dy.min() >= 0 and a.dy.max() <= 8 and 0.3 < a.flip.float().mean() < 0.7


def test_a_stack_of_clients_equals_each_alone_and_vmap() -> None:
    rng = np.random.default_rng(0)
    xb = torch.from_numpy(rng.normal(size=(3, 5, 3, 8, 8)).astype(np.float32))
    draws = [draw(np.random.default_rng(k), 5, padding=2) for k in range(3)]
    together = crop_flip(xb, stack(draws), padding=2)
    alone = torch.stack([crop_flip(xb[k], draws[k], padding=2) for k in range(3)])
    assert torch.equal(together, alone)
    s = stack(draws)
    vmapped = torch.func.vmap(lambda x, dy, dx, f: crop_flip(x, Draws(dy, dx, f), 2))(
        xb, s.dy, s.dx, s.flip)
    assert torch.equal(vmapped, alone)
