"""Model registry: a name (or ``pkg.mod:factory``) -> ``factory(input_shape, num_classes, cfg)``.

Models must be plain ``torch.nn.Module``s whose parameters and buffers are the model state;
the worker trains them functionally (``torch.func.functional_call``), so layers with
running statistics (BatchNorm) fall back to sequential training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from flowerbed.clients.text_models import char_lstm
from flowerbed.clients.vision_models import femnist_cnn, lenet5, resnet18_gn
from flowerbed.core.errors import ConfigError
from flowerbed.core.imports import is_import_path, load_object

if TYPE_CHECKING:
    from flowerbed.core.params import Config

ModelFactory = Callable[[tuple[int, ...], int, "Config"], nn.Module]


def logreg(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """Multinomial logistic regression."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))


def hidden_sizes(cfg: Config) -> tuple[int, ...]:
    """``hidden-sizes`` as integers ('' = no hidden layer)."""
    text = str(cfg.hidden_sizes)
    return tuple(int(x) for x in text.split(",")) if text != "" else ()


def mlp(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """ReLU MLP with ``hidden-sizes`` hidden layers."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(np.prod(input_shape))
    for h in hidden_sizes(cfg):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """Two 3x3 conv layers, then a linear classifier; for (C, H, W) images."""
    if len(input_shape) != 3:
        raise ConfigError("model", "cnn", f"needs (C, H, W) images, data has {input_shape}")
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (h // 2) * (w // 2), num_classes),
    )


MODELS: dict[str, ModelFactory] = {
    "logreg": logreg, "mlp": mlp, "cnn": cnn,
    # the field's benchmark models (clients/vision_models.py, clients/text_models.py)
    "femnist-cnn": femnist_cnn, "lenet5": lenet5, "resnet18-gn": resnet18_gn,
    "char-lstm": char_lstm,
}


def check_model_name(name: str) -> None:
    if is_import_path(name):
        load_object(name, "model")
    elif name not in MODELS:
        raise ConfigError("model", name, "must be one of " + ", ".join(MODELS)
                          + " or 'pkg.module:factory'")


def build_model(cfg: Config, input_shape: tuple[int, ...], num_classes: int,
                seed: int | None = None) -> nn.Module:
    """The model of ``cfg``, initialised from ``seed`` (default: the run seed)."""
    factory = load_object(cfg.model, "model") if is_import_path(cfg.model) else MODELS[cfg.model]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        try:
            model = factory(tuple(input_shape), num_classes, cfg)
        except ConfigError:
            raise
        except Exception as err:
            raise ConfigError("model", cfg.model, f"its factory raised {type(err).__name__}: "
                              f"{err}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError("model", cfg.model, "the factory must return a torch.nn.Module")
    return model
