"""Batched data augmentation for CIFAR-style images: random crop after padding, and flip.

The standard CIFAR-10 recipe (He et al. 2016, Sec. 4.2; used by the FL papers that train
ResNets on CIFAR-10, e.g. Hsieh et al. 2020, Reddi et al. 2021): pad every image by 4
pixels with zeros, take a random 32x32 crop, flip it horizontally with probability 1/2.

Written for the batched trainer: the random draws are separate from the pixel work.
:func:`draw` takes a client's own ``numpy.random.Generator`` (the one that shuffles its
mini-batches, :func:`flowerbed.clients.training.client_rng`), so a client's crops are the
same on every execution path and do not depend on which other clients share its worker;
:func:`crop_flip` is pure tensor indexing (one pad, one gather, no Python loop over
examples) and works on a batch ``(B, C, H, W)``, on a stack of clients' batches
``(clients, B, C, H, W)``, and inside ``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

PADDING = 4


@dataclass(frozen=True)
class Draws:
    """Per example: crop offsets into the padded image and whether to flip."""

    dy: torch.Tensor  # int64 (..., B), 0..2 * padding
    dx: torch.Tensor
    flip: torch.Tensor  # bool (..., B)


def draw(rng: np.random.Generator, batch: int, padding: int = PADDING) -> Draws:
    """One client's draws for one batch of ``batch`` examples, from its own generator."""
    dy = rng.integers(0, 2 * padding + 1, size=batch)
    dx = rng.integers(0, 2 * padding + 1, size=batch)
    flip = rng.random(batch) < 0.5
    return Draws(torch.from_numpy(dy), torch.from_numpy(dx), torch.from_numpy(flip))


def stack(draws: list[Draws], batch: int | None = None) -> Draws:
    """Several clients' draws for one step, for a ``(clients, B, ...)`` batch; with
    ``batch``, a client's shorter draws are padded (no crop, no flip) to that length, for
    the padded examples of a short last batch."""
    def padded(t: torch.Tensor) -> torch.Tensor:
        return t if batch is None else torch.cat([t, t.new_zeros(batch - len(t))])
    return Draws(torch.stack([padded(d.dy) for d in draws]),
                 torch.stack([padded(d.dx) for d in draws]),
                 torch.stack([padded(d.flip) for d in draws]))


def crop_flip(xb: torch.Tensor, d: Draws, padding: int = PADDING) -> torch.Tensor:
    """``xb`` (..., B, C, H, W) cropped at ``d``'s offsets from its zero-padded copy and
    flipped where ``d.flip``; same shape as ``xb``."""
    lead = xb.shape[:-3]
    c, h, w = xb.shape[-3:]
    flat = xb.reshape(-1, c, h, w)
    dy, dx, flip = d.dy.reshape(-1), d.dx.reshape(-1), d.flip.reshape(-1)
    padded = F.pad(flat, (padding, padding, padding, padding))
    dy, dx, flip = dy.to(xb.device), dx.to(xb.device), flip.to(xb.device)
    rows = dy[:, None] + torch.arange(h, device=xb.device)  # (N, H) crop rows, padded image
    cols = torch.arange(w, device=xb.device)
    cols = torch.where(flip[:, None], dx[:, None] + (w - 1 - cols), dx[:, None] + cols)
    n = torch.arange(flat.shape[0], device=xb.device)
    out = padded[n[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)


AUGMENTATIONS = ("none", "crop-flip")


def augmented(xb: torch.Tensor, how: str, draws: Draws) -> torch.Tensor:
    """``xb`` augmented as the ``augment`` key says (images only)."""
    if xb.dim() < 4:
        raise ValueError(f"augment = {how!r} needs image inputs (C, H, W); this model's "
                         f"batches have shape {tuple(xb.shape)}")
    return crop_flip(xb, draws)


__all__ = ["AUGMENTATIONS", "PADDING", "Draws", "augmented", "crop_flip", "draw", "stack"]
