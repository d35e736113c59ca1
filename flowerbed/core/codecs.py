"""Update codecs: what a compressed message carries, and exactly how many bytes it is.

A codec turns an update ``delta`` (a dict of float32 arrays, one per model tensor) into a
*payload* (a dict of small arrays that really travel) and back. Every codec works tensor by
tensor (d = the tensor's size); the wire size of a payload is the sum of its arrays' bytes,
so the ledger counts it like any other message, and :meth:`Codec.nbytes` gives the same
number from the shapes alone (a test keeps the two equal). Per tensor of size d:

========  ========================================================  =======================
codec     what travels                                              bytes
========  ========================================================  =======================
none      the float32 tensor (no codec at all)                      4 d
topk      the k = ceil(ratio d) entries of largest |v|: float32     8 k
          values + int32 indices
randk     k = ceil(ratio d) entries drawn uniformly without         8 k
          replacement, unscaled: float32 values + int32 indices
qsgd      ||v||_2 (float32) and, per coordinate, a sign bit and     4 + ceil(d (1 + b) / 8),
          a level l in 0..s (b bits), bit-packed                    b = ceil(log2(s + 1))
sign      ||v||_1 / d (float32) and one sign bit per coordinate     4 + ceil(d / 8)
fp16      IEEE half precision                                       2 d
bf16      bfloat16 (float32's top 16 bits, rounded to nearest)      2 d
========  ========================================================  =======================

- top-k and random-k: Stich, Cordonnier, Jaggi, "Sparsified SGD with Memory", NeurIPS 2018.
  Random-k is *not* rescaled by d/k: like top-k it is a contraction
  (E||C(v) - v||^2 = (1 - k/d)||v||^2), the compressor class that error feedback and
  CHOCO-SGD assume. Its indices travel explicitly; a deployment sharing the seed with the
  server could send the values only (half the bytes) - not modelled here.
- QSGD: Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient Quantization and
  Encoding", NeurIPS 2017: Q_s(v_i) = ||v||_2 sign(v_i) xi_i, xi_i = l/s or (l+1)/s with
  l = floor(s |v_i| / ||v||_2), rounded up with probability s |v_i| / ||v||_2 - l, so
  E Q_s(v) = v (unbiased). The paper's Elias coding of the levels is not used: every level
  gets the same b bits, an upper bound of the paper's encoded size for dense updates.
- sign: scaled sign compression, C(v) = (||v||_1 / d) sign(v) (Karimireddy, Rebjock,
  Stich, Jaggi, "Error Feedback Fixes SignSGD and other Gradient Compression Schemes",
  ICML 2019); sign(0) is sent as +.
- error feedback (Stich et al. 2018; Karimireddy et al. 2019, EF-SGD): the client keeps
  the residual e of what compression dropped and adds it to its next update:
  p = delta + e, send C(p), keep e' = p - C(p). See :meth:`Codec.compress`.
- fp16/bf16: round to nearest; float16 overflows to inf beyond 65504 (such an update is then
  rejected as non-finite, like any other).

Randomness (random-k's indices, QSGD's rounding) comes from the caller's generator, which
the platform seeds per (seed, round, client) (:data:`flowerbed.core.rng.Stream.CODEC`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowerbed.core.errors import ConfigError
from flowerbed.core.params import Key, one_of, unit_interval_open_left

State = dict[str, np.ndarray]
CODECS = ("none", "topk", "randk", "qsgd", "sign", "fp16", "bf16")
# codecs whose error C(v) - v the residual may carry (contractions); QSGD is unbiased but
# its variance grows with d/s^2, and fp16/bf16 lose next to nothing: error feedback is off
FEEDBACK_CODECS = ("topk", "randk", "sign")
# deterministic codecs that encode each row of a clients x entries matrix alike, so that a
# worker encodes a whole batch of replies at once (Codec.encode_rows)
ROW_WISE = ("none", "topk", "fp16", "bf16")
# the prefix of the codec's entries in a client's kept state (flowerbed.simulation.
# client_state), so that they sit beside a client rule's own state
STATE_PREFIX = "codec."


def _max_levels(v: Any) -> str | None:
    return None if 1 <= v <= 2**15 else "must be in 1..32768"


KEYS: tuple[Key, ...] = (
    Key("codec", "none", "what a client sends: none, topk, randk, qsgd, sign, fp16, bf16 "
        "(the update, compressed; the ledger counts the encoded bytes)", one_of(*CODECS)),
    Key("codec-ratio", 0.01, "topk/randk: share k/d of each tensor's entries sent",
        unit_interval_open_left),
    Key("qsgd-levels", 16, "qsgd: quantisation levels s", _max_levels),
    Key("error-feedback", False, "topk/randk/sign: keep the compression error per client "
        "and add it to the next update (EF-SGD)"),
)


def _k(d: int, ratio: float) -> int:
    return min(d, max(1, math.ceil(ratio * d - 1e-9)))


def _bits(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels + 1)))


def _pack(codes: np.ndarray, width: int) -> np.ndarray:
    """Unsigned ``codes`` (d,) of ``width`` bits each, bit-packed into ceil(d w / 8) bytes."""
    bits = (codes.astype(np.uint32)[:, None] >> np.arange(width, dtype=np.uint32)) & 1
    return np.packbits(bits.astype(np.uint8).ravel())


def _unpack(packed: np.ndarray, d: int, width: int) -> np.ndarray:
    bits = np.unpackbits(packed, count=d * width).reshape(d, width).astype(np.uint32)
    return (bits << np.arange(width, dtype=np.uint32)).sum(axis=1)


def _to_bf16(v: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(v, np.float32).view(np.uint32).astype(np.uint64)
    bits += 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).astype(np.uint16)


def _from_bf16(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class Codec:
    """One codec with its settings (the run's ``codec``, ``codec-ratio``, ``qsgd-levels``,
    ``error-feedback``)."""

    name: str = "none"
    ratio: float = 0.01
    levels: int = 16
    error_feedback: bool = False

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ConfigError("codec", self.name, "must be one of " + ", ".join(CODECS))
        if self.error_feedback and self.name not in FEEDBACK_CODECS:
            raise ConfigError("error-feedback", True, "works with codec = "
                              + ", ".join(FEEDBACK_CODECS) + f" only (codec = {self.name!r})")

    @classmethod
    def from_config(cls, cfg: Any) -> Codec:
        return cls(cfg["codec"], float(cfg["codec-ratio"]), int(cfg["qsgd-levels"]),
                   bool(cfg["error-feedback"]))

    @property
    def active(self) -> bool:
        return self.name != "none"

    @property
    def random(self) -> bool:
        """Does encoding draw random numbers (random-k's coordinates, QSGD's rounding)?"""
        return self.name in ("randk", "qsgd")

    # --- sizes
    def tensor_nbytes(self, d: int) -> int:
        """Wire bytes of one tensor of d entries (the table in the module docstring)."""
        if self.name in ("topk", "randk"):
            return 8 * _k(d, self.ratio)
        if self.name == "qsgd":
            return 4 + math.ceil(d * (1 + _bits(self.levels)) / 8)
        if self.name == "sign":
            return 4 + math.ceil(d / 8)
        if self.name in ("fp16", "bf16"):
            return 2 * d
        return 4 * d

    def nbytes(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """Wire bytes of the payload of an update with these tensor shapes."""
        return sum(self.tensor_nbytes(math.prod(s)) for s in shapes.values())

    # --- one tensor
    def encode_tensor(self, v: np.ndarray, rng: np.random.Generator | None) -> State:
        flat = np.ascontiguousarray(v, np.float32).ravel()
        d = flat.size
        if self.name == "topk":
            k = _k(d, self.ratio)
            idx = np.argpartition(np.abs(flat), d - k)[d - k:] if k < d else np.arange(d)
            idx = np.sort(idx).astype(np.int32)
            return {"values": flat[idx], "indices": idx}
        if self.random and rng is None:
            raise ValueError(f"codec {self.name!r} draws random numbers: pass a generator")
        if self.name == "randk":
            assert rng is not None
            idx = np.sort(rng.choice(d, _k(d, self.ratio), replace=False)).astype(np.int32)
            return {"values": flat[idx], "indices": idx}
        if self.name == "qsgd":
            assert rng is not None
            norm = np.float32(np.linalg.norm(flat))
            s = self.levels
            scaled = np.abs(flat) / norm * s if norm > 0 else np.zeros(d, np.float32)
            low = np.floor(scaled)
            level = np.minimum(low + (rng.random(d) < scaled - low), s).astype(np.uint32)
            b = _bits(s)
            codes = level | ((flat < 0).astype(np.uint32) << b)
            return {"norm": np.array([norm], np.float32), "codes": _pack(codes, b + 1)}
        if self.name == "sign":
            scale = np.float32(np.abs(flat).sum() / d) if d else np.float32(0)
            return {"scale": np.array([scale], np.float32), "signs": np.packbits(flat < 0)}
        if self.name == "fp16":
            return {"values": flat.astype(np.float16)}
        if self.name == "bf16":
            return {"values": _to_bf16(flat)}
        return {"values": flat}

    @property
    def row_wise(self) -> bool:
        """Can :meth:`encode_rows` encode many clients' updates at once?"""
        return self.name in ROW_WISE

    def encode_rows(self, rows: np.ndarray) -> tuple[State, np.ndarray]:
        """:meth:`encode_tensor` of every row of ``rows`` (n clients x d entries, float32)
        in one numpy call per part, and the rows' residuals p - C(p): (part -> n x ... array
        whose row i is row i's part, n x d residuals). The same values as row by row
        (tested); only for the deterministic codecs of :data:`ROW_WISE`."""
        n, d = rows.shape
        if self.name == "topk":
            k = _k(d, self.ratio)
            idx = (np.sort(np.argpartition(np.abs(rows), d - k, axis=1)[:, d - k:], axis=1)
                   if k < d else np.broadcast_to(np.arange(d), (n, d))).astype(np.int32)
            residual = rows.copy()
            np.put_along_axis(residual, idx, 0.0, axis=1)
            return {"values": np.take_along_axis(rows, idx, axis=1), "indices": idx}, residual
        if self.name == "fp16":
            values = rows.astype(np.float16)
            return {"values": values}, rows - values.astype(np.float32)
        if self.name == "bf16":
            bits = _to_bf16(rows)
            return {"values": bits}, rows - _from_bf16(bits)
        if self.name == "none":
            return {"values": rows}, np.zeros_like(rows)
        raise ValueError(f"codec {self.name!r} encodes client by client (not row-wise)")

    def decode_tensor(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...]
                      ) -> np.ndarray:
        d = math.prod(shape)
        if self.name in ("topk", "randk"):
            out = np.zeros(d, np.float32)
            out[np.asarray(parts["indices"], np.int64)] = parts["values"]
        elif self.name == "qsgd":
            b = _bits(self.levels)
            codes = _unpack(np.asarray(parts["codes"], np.uint8), d, b + 1)
            level = (codes & ((1 << b) - 1)).astype(np.float32)
            sign = np.where(codes >> b, -1.0, 1.0).astype(np.float32)
            out = np.float32(parts["norm"][0]) * sign * level / np.float32(self.levels)
        elif self.name == "sign":
            neg = np.unpackbits(np.asarray(parts["signs"], np.uint8), count=d).astype(bool)
            out = np.where(neg, -1.0, 1.0).astype(np.float32) * np.float32(parts["scale"][0])
        elif self.name == "bf16":
            out = _from_bf16(np.asarray(parts["values"], np.uint16))
        else:
            out = np.asarray(parts["values"], np.float32)
        return out.astype(np.float32).reshape(shape)

    def decode_rows(self, parts: Mapping[str, np.ndarray], d: int) -> np.ndarray:
        """:meth:`decode_tensor` of n payloads at once: ``parts`` maps each part to the
        n clients' arrays stacked along a leading axis; returns the n x d decoded rows
        (float32), each equal to :meth:`decode_tensor` of its row (tested). Any codec."""
        if self.name in ("topk", "randk"):
            idx = np.asarray(parts["indices"], np.int64)
            values = np.asarray(parts["values"])
            if idx.ndim != 2 or values.shape != idx.shape:
                raise ValueError(f"{self.name}: values {values.shape} and indices "
                                 f"{idx.shape} do not pair up")
            out = np.zeros((len(idx), d), np.float32)
            out[np.arange(len(idx))[:, None], idx] = values
            return out
        if self.name == "qsgd":
            b = _bits(self.levels)
            packed = np.asarray(parts["codes"], np.uint8)
            bits = np.unpackbits(packed, axis=1, count=d * (b + 1)).reshape(
                len(packed), d, b + 1).astype(np.uint32)
            codes = (bits << np.arange(b + 1, dtype=np.uint32)).sum(axis=2)
            level = (codes & ((1 << b) - 1)).astype(np.float32)
            sign = np.where(codes >> b, -1.0, 1.0).astype(np.float32)
            norm = np.asarray(parts["norm"], np.float32)[:, :1]
            return norm * sign * level / np.float32(self.levels)
        if self.name == "sign":
            signs = np.asarray(parts["signs"], np.uint8)
            neg = np.unpackbits(signs, axis=1, count=d).astype(bool)
            scale = np.asarray(parts["scale"], np.float32)[:, :1]
            return np.where(neg, -1.0, 1.0).astype(np.float32) * scale
        values = np.asarray(parts["values"])
        if values.ndim != 2 or values.shape[1] != d:
            raise ValueError(f"{self.name}: rows of {values.shape[1:]} values, not ({d},)")
        if self.name == "bf16":
            return _from_bf16(np.ascontiguousarray(values, np.uint16))
        return values.astype(np.float32)

    # --- a whole update (payload keys are "<tensor>|<part>")
    def encode(self, delta: Mapping[str, np.ndarray], rng: np.random.Generator | None
               ) -> State:
        payload: State = {}
        for name, v in delta.items():
            for part, arr in self.encode_tensor(v, rng).items():
                payload[f"{name}|{part}"] = arr
        return payload

    def decode(self, payload: Mapping[str, np.ndarray],
               shapes: Mapping[str, tuple[int, ...]]) -> State:
        """The update a payload stands for; KeyError/ValueError if it does not fit
        ``shapes`` (the sender's model)."""
        parts: dict[str, dict[str, np.ndarray]] = {}
        for key, arr in payload.items():
            name, _, part = key.rpartition("|")
            if name not in shapes:
                raise ValueError(f"payload entry {key!r} names no tensor of the model")
            parts.setdefault(name, {})[part] = arr
        return {name: self.decode_tensor(parts[name], tuple(shape))
                for name, shape in shapes.items()}

    def compress(self, delta: Mapping[str, np.ndarray], residual: Mapping[str, np.ndarray]
                 | None, rng: np.random.Generator | None) -> tuple[State, State, State]:
        """(payload, decoded update, new residual) for one client's update.

        With error feedback, p = delta + e is compressed and e' = p - C(p) kept (e = 0 the
        first time); without it, the residual returned is empty.
        """
        p = {k: np.asarray(v, np.float32) + (
            np.asarray(residual[k], np.float32) if self.error_feedback and residual
            and k in residual else 0) for k, v in delta.items()}
        payload = self.encode(p, rng)
        decoded = self.decode(payload, {k: v.shape for k, v in p.items()})
        new_residual = ({k: (p[k] - decoded[k]).astype(np.float32) for k in p}
                        if self.error_feedback else {})
        return payload, decoded, new_residual


__all__ = ["CODECS", "FEEDBACK_CODECS", "KEYS", "ROW_WISE", "STATE_PREFIX", "Codec"]
