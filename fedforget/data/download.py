"""Fetch image datasets on a machine with internet, in the layout :mod:`fedforget.data` reads.

Usage::

    python -m fedforget.data.download {mnist,fashion-mnist,cifar10} --to DIR

Uses torchvision's downloader (which checks the published md5s) and writes ``DIR/mnist/`` or
``DIR/fashion-mnist/`` (the four gzipped IDX files) or ``DIR/cifar10/cifar-10-batches-py/``
(torchvision's lossless python pickles). Then point ``data-dir`` (or ``FEDFORGET_DATA``) at ``DIR``.
The other datasets are small UCI/scikit-learn files: see ``../shared/datasets/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

DOWNLOADABLE = ("mnist", "fashion-mnist", "cifar10")
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def fetch(name: str, target: Path) -> Path:
    """Download ``name`` into ``target`` (created if needed); return the dataset's folder."""
    import torchvision.datasets as tvd

    target.mkdir(parents=True, exist_ok=True)
    cls = getattr(tvd, _TORCHVISION_CLASS[name])
    if name == "cifar10":
        folder = target / "cifar10"
        cls(root=str(folder), train=True, download=True)
        (folder / "cifar-10-python.tar.gz").unlink(missing_ok=True)
        return folder / "cifar-10-batches-py"
    folder = target / name
    folder.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cls(root=tmp, train=True, download=True)  # fetches train and test files
        raw = Path(tmp) / _TORCHVISION_CLASS[name] / "raw"
        files = sorted(raw.glob("*-ubyte.gz")) or sorted(raw.glob("*-ubyte"))
        if len(files) != 4:
            raise RuntimeError(f"expected 4 IDX files in {raw}, found {[f.name for f in files]}")
        for file in files:
            shutil.copy2(file, folder / file.name)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedforget.data.download",
        description="Download an image dataset (needs internet) into a folder fedforget reads.",
    )
    parser.add_argument("name", choices=DOWNLOADABLE, help="dataset to fetch")
    parser.add_argument("--to", required=True, type=Path, metavar="DIR", help="dataset root to write into")
    args = parser.parse_args(argv)
    target = args.to.expanduser().absolute()
    if target.exists() and not target.is_dir():
        parser.error(f"--to {target} exists and is not a folder")
    try:
        folder = fetch(args.name, target)
        from fedforget.data import load_dataset

        dataset = load_dataset(args.name, target)
    except Exception as exc:  # noqa: BLE001 - report any network / file failure plainly
        print(f"error: could not fetch {args.name} into {target}: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {folder} ({dataset.num_train} train, {len(dataset.y_test)} test samples).")
    print(f"Use it with data-dir='{target}' or FEDFORGET_DATA={target}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
