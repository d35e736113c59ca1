"""The image models of the field's benchmarks, written for vmap training.

Every model here is parameters only: no buffers (so no BatchNorm running statistics) and
no random layers (no Dropout), so :func:`flowerbed.clients.batched.vmap_supported` holds
and a worker trains all its clients in one vmapped call.

- ``femnist-cnn``: LEAF's FEMNIST CNN (Caldas et al. 2018; TalwalkarLab/leaf
  ``models/femnist/cnn.py``): 5x5 conv 32 ("same" padding), ReLU, 2x2 max-pool, 5x5 conv
  64, ReLU, 2x2 max-pool, dense 2048 + ReLU, dense to the classes (62 on FEMNIST).
  Initialisation is PyTorch's default, not TensorFlow's Glorot-uniform.
- ``lenet5``: the LeNet-5-style CNN of McMahan et al. (2017) as the Flower baseline
  ``niid_bench`` uses it for CIFAR-10 (``baselines/niid_bench/niid_bench/models.py``,
  after Li et al. 2022, "Federated Learning on Non-IID Data Silos"): 5x5 conv 6, ReLU,
  2x2 max-pool, 5x5 conv 16, ReLU, 2x2 max-pool, dense 120, 84, classes. LeCun et al.'s
  original used tanh and trainable subsampling; this is the ReLU/max-pool variant.
- ``resnet18-gn``: ResNet-18 (He et al. 2016, basic blocks [2, 2, 2, 2], widths 64..512)
  with every BatchNorm replaced by GroupNorm, as Hsieh et al. (2020, "The Non-IID Data
  Quagmire") recommend for non-IID federated training and Reddi et al. (2021, "Adaptive
  Federated Optimization") use on CIFAR-10, with two groups per layer. The stem is the
  common CIFAR one (3x3 conv, stride 1, no max-pool); for inputs of 64 pixels or more
  the ImageNet stem (7x7 stride 2 + max-pool) is used. The group count of two follows
  Reddi et al.'s text; their code was not available here to check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from flowerbed.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from flowerbed.core.params import Config


def _image(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError("model", name, f"needs (C, H, W) images, data has {input_shape}")
    c, h, w = input_shape
    return c, h, w


def femnist_cnn(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """LEAF's FEMNIST CNN (module docstring)."""
    c, h, w = _image("femnist-cnn", input_shape)
    return nn.Sequential(
        nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 2048), nn.ReLU(),
        nn.Linear(2048, num_classes),
    )


def lenet5(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """LeNet-5 as in McMahan et al. / Flower's niid_bench (module docstring)."""
    c, h, w = _image("lenet5", input_shape)
    h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if h2 < 1 or w2 < 1:
        raise ConfigError("model", "lenet5", f"images of {h}x{w} are too small (>= 16x16)")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(16 * h2 * w2, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


GROUPS = 2  # GroupNorm groups per layer (Reddi et al. 2021)


class BasicBlock(nn.Module):
    """Two 3x3 convs with GroupNorm and an identity (or 1x1-conv) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(GROUPS, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(GROUPS, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.GroupNorm(GROUPS, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm1(self.conv1(x)).relu()
        out = self.norm2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


def resnet18_gn(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """ResNet-18 with GroupNorm (module docstring)."""
    c, h, w = _image("resnet18-gn", input_shape)
    if min(h, w) >= 64:  # ImageNet-sized inputs
        stem = [nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False), nn.GroupNorm(GROUPS, 64),
                nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]
    else:
        stem = [nn.Conv2d(c, 64, 3, padding=1, bias=False), nn.GroupNorm(GROUPS, 64),
                nn.ReLU()]
    layers: list[nn.Module] = []
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*stem, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, num_classes))


__all__ = ["BasicBlock", "femnist_cnn", "lenet5", "resnet18_gn"]
