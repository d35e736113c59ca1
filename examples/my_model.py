"""A user model plugged in by import path: ``model = "examples.my_model:quadratic_logreg"``.

A model factory takes ``(input_shape, num_classes, cfg)`` and returns a ``torch.nn.Module``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class QuadraticFeatures(nn.Module):
    """[x, x^2]: lets a linear classifier draw quadratic boundaries."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return torch.cat([x, x * x], dim=1)


def quadratic_logreg(input_shape: tuple[int, ...], num_classes: int, cfg: Any) -> nn.Module:
    return nn.Sequential(QuadraticFeatures(), nn.Linear(2 * int(np.prod(input_shape)),
                                                        num_classes))
