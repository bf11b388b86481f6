"""Test helpers: tiny CIFAR, STL-10 and image-folder data sets written in the real on-disk
formats, main.py runs."""

import colorsys
import csv
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import mindspore as ms
import numpy as np
import pytest

from src.data.cifar import CIFAR
from src.data.stl10 import IMAGE_BYTES, STL10

STL10_CLASSES = "airplane bird car cat deer dog horse monkey ship truck".split()

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, wherever it lives


class _Python2StylePickler(pickle._Pickler):
    """Writes protocol-2 pickles the way Python 2's cPickle wrote the CIFAR files.

    Python 3 would pickle ``bytes`` through ``_codecs.encode`` and name numpy 2's
    ``numpy._core``; the official files instead use 8-bit ``str`` opcodes and
    ``numpy.core.multiarray._reconstruct``. Mimicking them means the reader is
    tested against the globals and opcodes it meets on real data.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, text: str) -> None:
        raw = text.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(text)

    dispatch[str] = save_py2_str

    def save_global(self, obj: Any, name: Optional[str] = None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            # numpy's Python-2 layout: the buffer travels as a latin1 8-bit string.
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return _RECONSTRUCT, (np.ndarray, (0,), "b"), state
        return NotImplemented


def dump_cifar_pickle(obj: Any, path: Path) -> None:
    """Writes ``obj`` to ``path`` as a Python-2-style protocol-2 pickle."""
    buffer = io.BytesIO()
    _Python2StylePickler(buffer, protocol=2).dump(obj)
    Path(path).write_bytes(buffer.getvalue())


def class_colour(label: int, num_classes: int) -> np.ndarray:
    """A distinct RGB colour in [0, 1] for each class."""
    return np.array(colorsys.hsv_to_rgb(label / num_classes, 0.7, 0.8))


def fake_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 HWC images whose colour and stripe direction depend on the class.

    The stripes survive crops, flips and grayscale, the colour survives crops and
    flips, so a kNN on raw or learnt features beats chance.
    """
    coords = np.arange(32) / 32.0
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        angle = np.pi * label / num_classes
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(2 * np.pi * 3 * (xs * np.cos(angle) + ys * np.sin(angle)) + phase)
        pixels = class_colour(label, num_classes) + 0.2 * stripes[..., None]
        pixels += rng.normal(0.0, 0.05, size=pixels.shape)
        images[index] = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    return images


def stl10_bytes(images: np.ndarray) -> bytes:
    """STL-10 bytes written from the format's description: per image the R, G, B planes, each
    column-major, i.e. pixel (r, c, k) at byte k * 96 * 96 + c * 96 + r."""
    r, c, k = np.indices((96, 96, 3))
    raw = np.empty((len(images), IMAGE_BYTES), np.uint8)
    raw[:, (k * 96 * 96 + c * 96 + r).ravel()] = images.reshape(len(images), -1)
    return raw.tobytes()


def write_stl10(root: Path, images: dict, labels: dict) -> Path:
    """A stl10_binary folder in ``root``: ``images[split]`` (N, 96, 96, 3) uint8 for train, test
    and unlabeled, ``labels[split]`` 1..10 as on disk for train and test; returns ``root``."""
    folder = root / STL10.folder
    folder.mkdir(parents=True)
    for split, array in images.items():
        (folder / f"{split}_X.bin").write_bytes(stl10_bytes(array))
    for split, values in labels.items():
        (folder / f"{split}_y.bin").write_bytes(bytes(list(values)))
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return root


def write_fake_stl10(root: Path, sizes=(("train", 20), ("test", 10), ("unlabeled", 32))) -> Path:
    """Tiny STL-10 of ``fake_images`` (upscaled to 96x96), 10 classes, in the binary format."""
    rng, images, labels = np.random.default_rng(0), {}, {}
    for split, n in sizes:
        classes = np.arange(n) % 10
        images[split] = fake_images(classes, 10, rng).repeat(3, axis=1).repeat(3, axis=2)
        if split != "unlabeled":
            labels[split] = classes + 1
    return write_stl10(root, images, labels)


def write_image_folder(root: Path, counts: dict, classes=3, seed=0) -> Path:
    """An ImageFolder of ``fake_images``: for each ``counts`` sub-folder (e.g. ``train``,
    ``val``; "" for ``root`` itself) that many PNG and JPEG files of mixed sizes, per class
    sub-folder ``class_<c>``, or flat if ``classes`` is 0."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        labels = np.arange(n) % max(classes, 1)
        for i, (label, image) in enumerate(zip(labels, fake_images(labels, max(classes, 1), rng))):
            folder = root / split / (f"class_{label}" if classes else "")
            folder.mkdir(parents=True, exist_ok=True)
            size = (32 + 8 * (i % 3), 40 - 4 * (i % 2))  # not square, not 32x32
            suffix = ".jpg" if i % 4 == 3 else ".png"
            Image.fromarray(image).resize(size).save(folder / f"{i:03d}{suffix}")
    return root


def hwc_to_planar_rows(images: np.ndarray) -> np.ndarray:
    """Inverse of the reader's conversion: (N, 32, 32, 3) to (N, 3072) planar."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32))


def _batch_dict(
    name: str, split: str, rows: np.ndarray, labels: np.ndarray, batch_label: str, first_index: int
) -> dict[str, Any]:
    filenames = [f"fake_{split}_{first_index + i:05d}.png" for i in range(len(labels))]
    if name == "cifar10":
        return {
            "batch_label": batch_label,
            "labels": labels.tolist(),
            "data": rows,
            "filenames": filenames,
        }
    return {
        "filenames": filenames,
        "batch_label": batch_label,
        "fine_labels": labels.tolist(),
        "coarse_labels": (labels // 5).tolist(),
        "data": rows,
    }


def _meta_dict(name: str) -> dict[str, Any]:
    if name == "cifar10":
        names = CIFAR10_CLASSES
        return {"num_cases_per_batch": 10000, "label_names": names, "num_vis": 3072}
    return {
        "fine_label_names": [f"fine_class_{i:02d}" for i in range(CIFAR[name].num_classes)],
        "coarse_label_names": [f"coarse_class_{i:02d}" for i in range(20)],
    }


def write_fake_cifar(
    root,
    name: str = "cifar10",
    n_train: int = 64,
    n_test: int = 32,
    num_classes: Optional[int] = None,
    seed: int = 0,
) -> Path:
    """A tiny CIFAR-10/100 in the official format in ``root`` (returned as a Path): the train
    split in the files of the real one (CIFAR-10: 5 near-equal parts), labels balanced over
    ``range(num_classes)`` (default: all) in shuffled order; the meta file lists every class."""
    spec = CIFAR[name]
    num_classes = spec.num_classes if num_classes is None else num_classes
    rng = np.random.default_rng(seed)
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)

    for split, count, files in (
        ("train", n_train, spec.train_files),
        ("test", n_test, spec.test_files),
    ):
        labels = rng.permutation(np.arange(count) % num_classes)
        rows = hwc_to_planar_rows(fake_images(labels, num_classes, rng))
        start = 0
        for part, (file, part_rows, part_labels) in enumerate(
            zip(
                files,
                np.array_split(rows, len(files)),
                np.array_split(labels, len(files)),
                strict=True,
            )
        ):
            batch_label = (
                f"training batch {part + 1} of {len(files)}"
                if split == "train"
                else "testing batch 1 of 1"
            )
            dump_cifar_pickle(
                _batch_dict(name, split, part_rows, part_labels, batch_label, start), folder / file
            )
            start += len(part_labels)
    dump_cifar_pickle(_meta_dict(name), folder / spec.meta_file)
    return Path(root)


def real_cifar10_root() -> Path:
    """Returns the data root holding the real CIFAR-10 files, or skips the test.

    The repository is cloned next to ``shared/`` (locally and in CI).
    """
    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"real CIFAR-10 not found under {root}")
    return root


# --------------------------------------------------------------------------- main.py runs

TINY = [
    "--batch_size",
    "16",
    "--moco-k",
    "32",
    "--moco-dim",
    "16",
    "--bn-splits",
    "4",
    "--knn-k",
    "5",
    "--schedule",
    "--lr",
    "0.03",
    "--seed",
    "3",
]
"""A tiny but complete recipe: constant lr, so a run can be extended with --epochs."""


# What a checkpoint records of the tiny model below (``MODEL_KEYS``), for direct save/load tests.
TINY_MODEL = dict(
    arch="resnet18",
    moco_dim=16,
    moco_k=32,
    bn_splits=4,
    symmetric=False,
    mlp=False,
    stem="cifar",
    image_size=32,
)
FAULTY_MAIN = "tests/faulty_main.py"  # main.py with the faults of MOCO_FAULT (tests/faults.py)


def run_main(args, timeout=600, env=None, script="main.py"):
    """Runs ``python main.py ARGS`` (or another ``script``) from the repository root."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_msrun(script_args, workers=2, log_dir=None, timeout=600, env=None, port=None):
    """Runs ``msrun`` with ``workers`` local workers on a free port, from the repository root."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    command = [
        os.path.join(os.path.dirname(sys.executable), "msrun"),
        f"--worker_num={workers}",
        f"--local_worker_num={workers}",
        f"--master_port={port or free_port()}",
        "--join=True",
        *([f"--log_dir={log_dir}"] if log_dir else []),
        *script_args,
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def read_log(results):
    with open(os.path.join(results, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def checkpoint_arrays(path):
    """Every entry of a checkpoint as a NumPy array (or the stored string)."""
    return {
        name: p.asnumpy() if hasattr(p, "asnumpy") else p
        for name, p in ms.load_checkpoint(path).items()
    }
