"""Write scikit-learn's handwritten digits as PNG files with Caffe list files.

The images are the 1,797 8×8 grey digits of the UCI "Optical Recognition of Handwritten
Digits" test set that scikit-learn ships inside its package (no download). Each becomes
``ROOT/train/NNNN.png`` or ``ROOT/test/NNNN.png`` (16 grey levels stretched to 0–255),
listed as ``train/NNNN.png LABEL`` in ``ROOT/train.txt`` / ``ROOT/test.txt``, the input
``netdef convert-imageset`` (and Caffe's convert_imageset) reads, and the class names in
``ROOT/labels.txt`` for ``netdef classify``. Every sixth image is held
out for testing, so both sets cover every writer and digit evenly and the split never
changes between runs.

Usage: python tools/export_digits.py ROOT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

#: Every HELD_OUT-th image goes to the test set.
HELD_OUT = 6


def export(root: Path) -> tuple[int, int]:
    """Write the images and list files under ``root``; the sizes of the two sets."""
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for index, (image, label) in enumerate(zip(images, digits.target, strict=True)):
        split = "test" if index % HELD_OUT == HELD_OUT - 1 else "train"
        relative = f"{split}/{index:04d}.png"
        (root / split).mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(root / relative), image):
            raise OSError(f"could not write {root / relative}")
        lists[split].append(f"{relative} {label}")
    for split, lines in lists.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    # Class names for classify, one a line in label order, as Caffe's synset_words.txt.
    (root / "labels.txt").write_text("".join(f"digit {name}\n" for name in digits.target_names))
    return len(lists["train"]), len(lists["test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder to write the images and list files into")
    args = parser.parse_args()
    train, test = export(args.root)
    print(f"wrote {train} training and {test} test digits (PNG) under {args.root}: train.txt, test.txt, labels.txt")


if __name__ == "__main__":
    main()
