"""Random crop + flip: hand-checked crops, per-client seeding, batched = one by one."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_augmented_training_is_the_same_batched_and_sequential() -> None:
    """augment = 'crop-flip' in training: each client draws from its own generator after its
    batch plan, so vmap over unequal clients (short last batches) equals local_train."""
    from flowerbed.clients.batched import ClientJob, train_batched
    from flowerbed.clients.training import TrainParams, client_rng, local_train
    from flowerbed.core.arrays import module_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    sizes = [7, 3, 5]
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(sum(sizes), 3, 8, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, sum(sizes)))
    off = np.concatenate([[0], np.cumsum(sizes)])
    p = TrainParams(lr=0.1, batch_size=4, local_epochs=2, augment="crop-flip")
    state = module_state(model)
    jobs = [ClientJob(state, np.arange(off[i], off[i + 1]), p, client_rng(3, 1, i))
            for i in range(3)]
    got = train_batched(model, jobs, x, y)
    plain = train_batched(model, [ClientJob(state, j.rows, TrainParams(
        lr=0.1, batch_size=4, local_epochs=2), client_rng(3, 1, i))
        for i, j in enumerate(jobs)], x, y)
    for i, r in enumerate(got):
        want, _ = local_train(model, state, x[jobs[i].rows].numpy(), y[jobs[i].rows].numpy(),
                              p, client_rng(3, 1, i))
        for k in want:
            np.testing.assert_allclose(r.state[k], want[k], atol=1e-5)
    assert not np.allclose(got[0].state["3.weight"], plain[0].state["3.weight"])


def test_augment_needs_images() -> None:
    from flowerbed.clients.augment import augmented, draw

    with pytest.raises(ValueError, match="needs image inputs"):
        augmented(torch.zeros(4, 6), "crop-flip", draw(np.random.default_rng(0), 4))
