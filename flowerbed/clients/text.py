"""Character-level text features: strings -> token ids, one vocabulary for inputs and labels.

LEAF's Shakespeare task (Caldas et al. 2018, ``models/utils/language_utils.py`` of
TalwalkarLab/leaf) maps each of the 80 characters of an input window, and the next
character that is the label, to its index in one fixed 80-letter alphabet; the model's
output has one class per letter. The same here: the alphabet is LEAF's, and characters a
dataset has beyond it are appended in code-point order (LEAF's ``str.find`` would give
them -1, which its TensorFlow embedding lookup rejects). Encoding is vectorised over
code points, no Python loop per row (the full Shakespeare set has ~4 million rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flowerbed.core.errors import ConfigError

LEAF_LETTERS = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstu"
                "vwxyz}")


def _code_points(strings: np.ndarray) -> np.ndarray:
    """(n, L) uint32 code points of n strings padded to the longest with NUL (0)."""
    fixed = np.asarray(strings, dtype=str)
    width = max(fixed.dtype.itemsize // 4, 1)
    return fixed.astype(f"<U{width}").view(np.uint32).reshape(len(fixed), width)


@dataclass(frozen=True)
class Vocabulary:
    """Characters in index order."""

    letters: str

    @classmethod
    def covering(cls, *columns: Sequence[str]) -> Vocabulary:
        """LEAF's alphabet, then every other character of ``columns`` (code-point order)."""
        seen: set[int] = set()
        for col in columns:
            if len(col):
                seen.update(np.unique(_code_points(np.asarray(col))).tolist())
        seen.discard(0)
        extra = sorted(seen - {ord(c) for c in LEAF_LETTERS})
        return cls(LEAF_LETTERS + "".join(chr(c) for c in extra))

    def __len__(self) -> int:
        return len(self.letters)

    def _lookup(self, points: np.ndarray) -> np.ndarray:
        codes = np.array([ord(c) for c in self.letters], dtype=np.uint32)
        order = np.argsort(codes)
        pos = np.searchsorted(codes[order], points)
        pos = np.clip(pos, 0, len(codes) - 1)
        found = codes[order][pos] == points
        if not found.all():
            missing = sorted({chr(int(c)) for c in points[~found]})
            raise ValueError(f"characters outside the vocabulary: {missing[:10]}")
        ids = order[pos]
        return ids.astype(np.uint8 if len(codes) <= 256 else np.int32)

    def encode_sequences(self, strings: Sequence[str], key: str) -> np.ndarray:
        """(n, L) token ids; every string must have the same length L (LEAF: 80)."""
        arr = np.asarray(strings, dtype=str)
        lengths = np.char.str_len(arr) if len(arr) else np.zeros(0, int)
        if len(arr) and lengths.min() != lengths.max():
            raise ConfigError(key, "", "text features must all have one length (LEAF's "
                              f"Shakespeare windows are 80 characters); this column has "
                              f"{int(lengths.min())}..{int(lengths.max())}")
        if not len(arr):
            return np.zeros((0, 1), np.uint8)
        return self._lookup(_code_points(arr))

    def encode_chars(self, chars: Sequence[str], key: str) -> np.ndarray:
        """One token id per single-character string (the next-character labels)."""
        arr = np.asarray(chars, dtype=str)
        if len(arr) and np.char.str_len(arr).max() != 1:
            raise ConfigError(key, "", "a text task's labels must be single characters "
                              "(the next character)")
        return self._lookup(_code_points(arr)[:, 0]).astype(np.int64)


__all__ = ["LEAF_LETTERS", "Vocabulary"]
