"""LEAF's Shakespeare next-character model, written for vmap training.

``char-lstm`` (Caldas et al. 2018; TalwalkarLab/leaf ``models/shakespeare/stacked_lstm.py``):
each input character id is embedded in 8 dimensions, two stacked LSTM layers of 256 units
read the 80-character window, and a dense layer maps the last step's output to one logit
per letter of the vocabulary; the loss is cross-entropy against the next character. The
cells are TensorFlow's ``BasicLSTMCell`` as LEAF uses it: one affine map of ``[x, h]`` to
the gates (i, j, f, o), forget-gate bias 1.0 added, ``c = c sigmoid(f + 1) + sigmoid(i)
tanh(j)``, ``h = tanh(c) sigmoid(o)``.

Written out as matrix products instead of ``nn.LSTM`` because the fused RNN kernel has no
vmap batching rule and keeps flattened weight copies; here the weights are plain
parameters, there are no buffers, and a worker's clients train in one vmapped call.
Initialisation is uniform(+-1/sqrt(256)) like ``nn.LSTM`` (TensorFlow's was
Glorot-uniform); LEAF's own training hyperparameters (lr 0.8, batch 10) are the
``shakespeare`` preset's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from flowerbed.core.errors import ConfigError

if TYPE_CHECKING:
    from flowerbed.core.params import Config

EMBEDDING = 8
HIDDEN = 256
LAYERS = 2
FORGET_BIAS = 1.0


class CharLSTM(nn.Module):
    """Embedding, stacked LSTM cells, dense output on the last step."""

    def __init__(self, vocab: int, classes: int, embedding: int = EMBEDDING,
                 hidden: int = HIDDEN, layers: int = LAYERS) -> None:
        super().__init__()
        self.vocab = vocab
        self.hidden = hidden
        self.embed = nn.Embedding(vocab, embedding)
        bound = 1.0 / math.sqrt(hidden)
        sizes = [embedding] + [hidden] * (layers - 1)
        self.kernels = nn.ParameterList(
            nn.Parameter(torch.empty(n_in + hidden, 4 * hidden).uniform_(-bound, bound))
            for n_in in sizes)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(4 * hidden).uniform_(-bound, bound)) for _ in sizes)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long().clamp(0, self.vocab - 1)  # token ids arrive as float32 batches
        seq = self.embed(ids)  # (B, L, E)
        for kernel, bias in zip(self.kernels, self.biases, strict=True):
            n_in = kernel.shape[0] - self.hidden
            # [x_t, h] @ kernel = x_t @ kernel[:n_in] + h @ kernel[n_in:]: the input part
            # for all steps in one product, only the recurrent part step by step
            proj = seq @ kernel[:n_in] + bias  # (B, L, 4H)
            w_h = kernel[n_in:]
            h = proj.new_zeros(proj.shape[0], self.hidden)
            c = proj.new_zeros(proj.shape[0], self.hidden)
            outs = []
            for x_t in proj.unbind(1):
                i, j, f, o = (x_t + h @ w_h).chunk(4, dim=1)
                c = c * torch.sigmoid(f + FORGET_BIAS) + torch.sigmoid(i) * torch.tanh(j)
                h = torch.tanh(c) * torch.sigmoid(o)
                outs.append(h)
            seq = torch.stack(outs, dim=1)
        return self.out(seq[:, -1])


def char_lstm(input_shape: tuple[int, ...], num_classes: int, cfg: Config) -> nn.Module:
    """LEAF's Shakespeare LSTM over (L,) token-id windows; vocabulary = the classes."""
    if len(input_shape) != 1:
        raise ConfigError("model", "char-lstm", "needs sequences of token ids (a text "
                          f"feature column), data has input shape {input_shape}")
    return CharLSTM(num_classes, num_classes)


__all__ = ["CharLSTM", "char_lstm"]
