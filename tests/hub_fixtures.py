"""Offline stand-ins for three Hub datasets, in their Hub schemas and file layouts.

Each folder is what ``dataset = "hf:<folder>"`` loads through Flower Datasets'
``FederatedDataset`` (``datasets.load_dataset`` on a local folder), the path a user takes
with the real dataset, so the tests exercise the schema handling, not a shortcut:

- ``femnist/`` like ``flwrlabs/femnist``: parquet ``data/train-*``, columns "image"
  (``Image``, grey 28x28 PNG), "writer_id" (string, e.g. ``f0000_14``), "hsf_id"
  (int64, 0..7), "character" (``ClassLabel``, 62 names 0-9, A-Z, a-z); train split only.
- ``cifar10/`` like ``uoft-cs/cifar10``: parquet ``data/train-*`` and ``data/test-*``,
  "img" (``Image``, RGB 32x32), "label" (``ClassLabel``, the ten CIFAR-10 names).
- ``shakespeare/`` like ``flwrlabs/shakespeare`` (LEAF's next-character task): one
  ``shakespeare.csv`` with "character_id" (play + character), "x" (80 characters),
  "y" (the next character); train split only.

The pixels are class-dependent patterns plus noise (learnable, but nothing like the real
images); the text windows slide over a few public-domain lines. Run
``python -m tests.hub_fixtures OUT`` to write all three under OUT.
"""

from __future__ import annotations

import argparse
import csv
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FEMNIST_NAMES = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
TEXT = (
    "Our revels now are ended. These our actors, as I foretold you, were all spirits and "
    "are melted into air, into thin air: and, like the baseless fabric of this vision, "
    "the cloud-capp'd towers, the gorgeous palaces, the solemn temples, the great globe "
    "itself, yea, all which it inherit, shall dissolve and, like this insubstantial "
    "pageant faded, leave not a rack behind. We are such stuff as dreams are made on, and "
    "our little life is rounded with a sleep.\nNow is the winter of our discontent made "
    "glorious summer by this sun of York; and all the clouds that lour'd upon our house "
    "in the deep bosom of the ocean buried.\nIf music be the food of love, play on; give "
    "me excess of it, that, surfeiting, the appetite may sicken, and so die.\n"
)
SEQ_LEN = 80


def _patterns(rng: np.random.Generator, classes: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0, 255, size=(classes, *shape))


def _images(rng: np.random.Generator, protos: np.ndarray, labels: np.ndarray) -> np.ndarray:
    noisy = protos[labels] * 0.6 + rng.uniform(0, 255, size=protos[labels].shape) * 0.4
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_femnist(folder: Path, rows: int = 360, writers: int = 12, seed: int = 0,
                  sizes: Sequence[int] | None = None) -> Path:
    """``flwrlabs/femnist``'s schema; writers own unequal shares of the rows (Dirichlet),
    or exactly ``sizes[w]`` rows each (then ``rows`` and ``writers`` follow from it)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    if sizes is None:
        share = rng.dirichlet(np.full(writers, 2.0))
        writer = np.sort(rng.choice(writers, size=rows, p=share))
    else:
        writer = np.repeat(np.arange(len(sizes)), sizes)
        rows, writers = len(writer), len(sizes)
    labels = rng.integers(0, len(FEMNIST_NAMES), size=rows)
    pixels = _images(rng, _patterns(rng, len(FEMNIST_NAMES), (28, 28)), labels)
    features = datasets.Features({
        "image": datasets.Image(), "writer_id": datasets.Value("string"),
        "hsf_id": datasets.Value("int64"),
        "character": datasets.ClassLabel(names=FEMNIST_NAMES)})
    ds = datasets.Dataset.from_dict({
        "image": [Image.fromarray(p, mode="L") for p in pixels],
        "writer_id": [f"f{w:04d}_{w % 100:02d}" for w in writer],
        "hsf_id": (writer % 8).astype(np.int64).tolist(),
        "character": labels.tolist()}, features=features)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def write_cifar10(folder: Path, train_rows: int = 400, test_rows: int = 100,
                  seed: int = 0) -> Path:
    """``uoft-cs/cifar10``'s schema: a train and a test split."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    protos = _patterns(rng, 10, (32, 32, 3))
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=CIFAR10_NAMES)})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_rows), ("test", test_rows)):
        labels = rng.integers(0, 10, size=n)
        pixels = _images(rng, protos, labels)
        ds = datasets.Dataset.from_dict({
            "img": [Image.fromarray(p, mode="RGB") for p in pixels],
            "label": labels.tolist()}, features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def write_shakespeare(folder: Path, speakers: int = 6, rows_each: int = 60,
                      seed: int = 0) -> Path:
    """``flwrlabs/shakespeare``'s schema: one CSV, every row an 80-character window and
    the character after it, grouped by speaker."""
    rng = np.random.default_rng(seed)
    plays = ["THE_TEMPEST", "RICHARD_III", "TWELFTH_NIGHT"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shakespeare.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["character_id", "x", "y"])
        for s in range(speakers):
            who = f"{plays[s % len(plays)]}_SPEAKER{s}"
            start = int(rng.integers(0, len(TEXT) - SEQ_LEN - rows_each - 1))
            for i in range(start, start + rows_each - s * 5):  # unequal sizes
                out.writerow([who, TEXT[i:i + SEQ_LEN], TEXT[i + SEQ_LEN]])
    return folder


def write_all(root: Path) -> dict[str, Path]:
    """All three fixtures under ``root``: name -> folder."""
    return {"femnist": write_femnist(root / "femnist"),
            "cifar10": write_cifar10(root / "cifar10"),
            "shakespeare": write_shakespeare(root / "shakespeare")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the three fixtures into")
    for name, path in write_all(parser.parse_args().out).items():
        print(f"{name}: {path}")  # a script: its output is the point
