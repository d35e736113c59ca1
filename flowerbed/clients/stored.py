"""Features stored compactly (uint8 pixels, small-integer token ids), float32 when used.

CIFAR-10 as float32 is 4x its uint8 size, in every worker process that holds the
federation (each Ray worker, the ServerApp, the CLI's preflight). So image and text
features keep their stored integers and an affine map to the values the model sees,
``value = raw * scale + shift`` (``scale``, ``shift`` broadcast over one example, e.g.
per channel ``(C, 1, 1)``): pixels in [0, 1] are ``scale = 1/255``; per-channel
standardisation folds the training split's mean and std into the same two arrays.

:class:`QuantizedArray` behaves as the float32 array it stands for wherever NumPy
converts it (``np.asarray(x, np.float32)``, slicing, ``len``), so the sequential
training loop and the evaluation, which convert batch by batch, need no change and
never see raw integers. What must not convert it whole is the batched trainer's flat
tensor: :func:`flat_tensor` keeps the integers in a :class:`QuantizedTensor` whose
gather ``x_flat[rows]`` returns the float batch (:func:`to_float_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(eq=False)
class QuantizedArray:
    """Integers ``raw`` standing for the float32 array ``raw * scale + shift``."""

    raw: np.ndarray
    scale: np.ndarray  # float32, broadcastable to one example (raw.shape[1:])
    shift: np.ndarray

    @classmethod
    def of(cls, raw: np.ndarray, scale: float = 1.0, shift: float = 0.0) -> QuantizedArray:
        """``raw`` with a scalar scale and shift (e.g. pixels: 1/255, 0)."""
        one = (1,) * (raw.ndim - 1)
        return cls(raw, np.full(one, scale, np.float32), np.full(one, shift, np.float32))

    # --- the float32 array it stands for ---------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    @property
    def ndim(self) -> int:
        return self.raw.ndim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def size(self) -> int:
        return self.raw.size

    @property
    def nbytes(self) -> int:
        """Bytes held (the stored integers), not the float32 size."""
        return self.raw.nbytes

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, key: Any) -> Any:
        """Rows (slices, index arrays) stay quantized; anything smaller is converted."""
        raw = self.raw[key]
        if isinstance(raw, np.ndarray) and raw.ndim == self.raw.ndim:
            return QuantizedArray(raw, self.scale, self.shift)
        return np.asarray(dequantize(np.asarray(raw)[None], self.scale, self.shift)[0])

    def reshape(self, *shape: Any) -> QuantizedArray:
        """Only the per-example shape may change; scale and shift must still broadcast."""
        raw = self.raw.reshape(*shape)
        one = (1,) * (raw.ndim - 1)
        return QuantizedArray(raw, self.scale.reshape(one) if self.scale.size == 1 else
                              self.scale, self.shift.reshape(one) if self.shift.size == 1
                              else self.shift)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = dequantize(self.raw, self.scale, self.shift)
        return out if dtype is None else out.astype(dtype, copy=False)

    def affine(self, scale: np.ndarray, shift: np.ndarray) -> QuantizedArray:
        """The same integers standing for ``self * scale + shift``."""
        return QuantizedArray(self.raw, (self.scale * scale).astype(np.float32),
                              (self.shift * scale + shift).astype(np.float32))


def dequantize(raw: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    out = raw.astype(np.float32)
    out *= scale
    out += shift
    return out


class QuantizedTensor:
    """The batched trainer's ``x_flat``: integer storage, a gather returns float32."""

    def __init__(self, q: QuantizedArray) -> None:
        self.raw = torch.from_numpy(np.ascontiguousarray(q.raw))
        self.scale = torch.from_numpy(np.ascontiguousarray(q.scale, np.float32))
        self.shift = torch.from_numpy(np.ascontiguousarray(q.shift, np.float32))

    @property
    def shape(self) -> torch.Size:
        return self.raw.shape

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def to(self, device: torch.device) -> QuantizedTensor:
        """The same storage on ``device`` (the integers move; conversion happens there)."""
        out = QuantizedTensor.__new__(QuantizedTensor)
        out.raw, out.scale, out.shift = (t.to(device) for t in (self.raw, self.scale,
                                                                self.shift))
        return out

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, rows: Any) -> torch.Tensor:
        return self.raw[rows].to(torch.float32) * self.scale + self.shift


def flat_tensor(x: Any) -> torch.Tensor | QuantizedTensor:
    """All clients' features as the batched trainer indexes them: a zero-copy float32
    tensor for float data (the digits default is unchanged), a :class:`QuantizedTensor`
    (integers kept, float32 per gathered batch) for quantized data."""
    if isinstance(x, QuantizedArray):
        return QuantizedTensor(x)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def to_float_batch(xb: Any, data: Any = None) -> torch.Tensor:
    """A batch of features as the float32 tensor the model takes, whatever its storage:
    a gathered :class:`QuantizedTensor` batch or a float tensor passes through, a
    :class:`QuantizedArray` (or an array of stored integers with ``data``'s
    ``x_flat`` affine) is converted. ``data`` is the :class:`FederatedData` the rows come
    from; only needed for raw integer batches."""
    if isinstance(xb, torch.Tensor) and xb.is_floating_point():
        return xb.to(torch.float32)
    if isinstance(xb, QuantizedArray):
        return torch.from_numpy(np.asarray(xb))
    flat = getattr(data, "x_flat", None)
    if isinstance(flat, QuantizedArray):
        t = xb if isinstance(xb, torch.Tensor) else torch.from_numpy(np.asarray(xb))
        return (t.to(torch.float32) * torch.from_numpy(flat.scale)
                + torch.from_numpy(flat.shift))
    return torch.as_tensor(np.asarray(xb, np.float32))


__all__ = ["QuantizedArray", "QuantizedTensor", "dequantize", "flat_tensor", "to_float_batch"]
