"""Labelled images from files: an image folder (one subfolder per class), an ``.npz`` of arrays, a folder written
by ``datasets``' ``save_to_disk`` with an image column, or (for ``glora predict``) one image file or a folder of
image files.

Images stay as they are stored until :func:`resize_images` makes them ``(N, 3, side, side)`` uint8 tensors: an
image folder keeps its file paths (every file is decoded once when read, so an unreadable one fails early), an
``.npz`` its array, a saved dataset its rows. Grayscale and RGBA images become RGB.

Problems raise ``glora.errors.DataError`` naming the file, the column or array, or the example.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from glora.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGE_KEYS = ("images", "x")
"""The ``.npz`` arrays tried, in order, when the ``image_column`` one is absent."""
LABEL_KEYS = ("labels", "y")
"""The ``.npz`` arrays tried, in order, when the ``label_column`` one is absent."""
RESIZE_CHUNK = 256


@dataclass
class ImageExamples:
    """The examples of one file. ``source`` says how ``items`` hold the images: ``"files"`` (paths), ``"array"``
    (one ``(N, H, W)`` or ``(N, H, W, C)`` array) or ``"dataset"`` (a ``datasets.Dataset`` and its ``column``).
    ``labels`` are the label values as stored (class folder names, array values), None when unlabelled; ``names``
    say which example each is (its file, or ``path[i]``)."""

    path: str
    role: str
    source: str
    items: Any
    labels: Optional[list[Any]]
    names: list[str]
    column: str = "image"
    ids: Optional[list[int]] = field(default=None)
    """The label ids (set by the task once the classes are known)."""

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index: Sequence[int]) -> ImageExamples:
        index = list(index)
        if self.source == "array":
            items: Any = self.items[np.asarray(index, dtype=np.int64)]
        elif self.source == "dataset":
            items = self.items.select(index)
        else:
            items = [self.items[i] for i in index]
        return ImageExamples(
            self.path,
            self.role,
            self.source,
            items,
            None if self.labels is None else [self.labels[i] for i in index],
            [self.names[i] for i in index],
            self.column,
            None if self.ids is None else [self.ids[i] for i in index],
        )

    def image(self, i: int) -> np.ndarray:
        """Example ``i`` as an ``(H, W, 3)`` uint8 array."""
        if self.source == "array":
            return rgb_array(self.items[i], self.names[i])
        if self.source == "dataset":
            return rgb_array(self.items[i][self.column], self.names[i])
        return read_image_file(self.items[i])


def _error(message: str, path: str, column: Optional[str] = None) -> DataError:
    details: dict[str, Any] = {"path": path}
    if column is not None:
        details["column"] = column
    return DataError(message, kind="data", details=details)


def read_images(path: str, image_column: str, label_column: str, role: str, labelled: bool = True) -> ImageExamples:
    """The examples of ``path`` (``role`` names it in messages)."""
    from glora.data.tables import is_saved_dataset

    where = f"{role} data {path}"
    if not os.path.exists(path):
        raise _error(f"{where} does not exist", path)
    if os.path.isdir(path):
        if is_saved_dataset(path):
            found = _read_saved(path, image_column, label_column, role, labelled)
        else:
            found = _read_folder(path, role, labelled)
    elif path.lower().endswith(".npz"):
        found = _read_npz(path, image_column, label_column, role, labelled)
    elif path.lower().endswith(IMAGE_EXTENSIONS) and not labelled:
        read_image_file(path)
        found = ImageExamples(path, role, "files", [path], None, [path])
    else:
        raise _error(
            f"{where}: expected an image folder (one subfolder per class), an .npz of images and labels, or a "
            "folder written by datasets' save_to_disk",
            path,
        )
    if len(found) == 0:
        raise _error(f"{where} holds no images", path)
    return found


def _read_folder(path: str, role: str, labelled: bool) -> ImageExamples:
    """An image folder: one subfolder per class (its name is the label), or for unlabelled input plain files."""
    entries = sorted(os.listdir(path))
    classes = [e for e in entries if os.path.isdir(os.path.join(path, e)) and not e.startswith(".")]
    files: list[str] = []
    labels: list[Any] = []
    if classes:
        for name in classes:
            for root, dirs, names in os.walk(os.path.join(path, name)):
                dirs.sort()
                for f in sorted(names):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        files.append(os.path.join(root, f))
                        labels.append(name)
    elif not labelled:
        files = [os.path.join(path, f) for f in entries if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        raise _error(
            f"{role} data {path} holds no class subfolders (an image folder has one subfolder of images per class)",
            path,
        )
    for f in files:
        read_image_file(f)  # an unreadable file fails now, before any model is loaded
    return ImageExamples(path, role, "files", files, labels if labelled and classes else None, list(files))


def read_image_file(path: str) -> np.ndarray:
    """One image file as an ``(H, W, 3)`` uint8 array; an unreadable one raises DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return rgb_array(img, path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _error(f"image file {path} cannot be read ({first})", path) from None


def rgb_array(image: Any, name: str) -> np.ndarray:
    """A PIL image or an ``(H, W)``, ``(H, W, 1|3|4)`` array as ``(H, W, 3)`` uint8. Float arrays with values in
    [0, 1] are scaled by 255; other values are rounded and clipped to [0, 255]."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"example {name}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
            raise DataError(f"example {name}: image values of type {a.dtype} are not pixels")
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise DataError(f"example {name}: the image holds NaN or infinite values")
        if np.issubdtype(a.dtype, np.floating) and f.size and f.max() <= 1.0:
            f = f * 255.0
        a = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def _pick_array(data: Any, wanted: str, fallbacks: Sequence[str], path: str, what: str) -> tuple[str, np.ndarray]:
    for key in (wanted, *fallbacks):
        if key in data.files:
            return key, data[key]
    raise _error(
        f"{path} holds no {what} array: looked for {', '.join(dict.fromkeys((wanted, *fallbacks)))}; "
        f"its arrays are {', '.join(data.files) or 'none'}",
        path,
        wanted,
    )


def _read_npz(path: str, image_column: str, label_column: str, role: str, labelled: bool) -> ImageExamples:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        first = str(err).strip() or type(err).__name__
        raise _error(f"{role} data {path} is not a readable .npz ({first})", path) from None
    with data:
        key, images = _pick_array(data, image_column, IMAGE_KEYS, path, "image")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
            raise _error(
                f"{path}: array {key!r} has shape {images.shape}; images are (N, H, W) or (N, H, W, C) with C in "
                "1, 3, 4",
                path,
                key,
            )
        labels: Optional[list[Any]] = None
        if labelled:
            lkey, raw = _pick_array(data, label_column, LABEL_KEYS, path, "label")
            if raw.ndim != 1 or len(raw) != len(images):
                raise _error(
                    f"{path}: array {lkey!r} has shape {raw.shape}; expected one label per image ({len(images)})",
                    path,
                    lkey,
                )
            labels = raw.tolist()
    return ImageExamples(path, role, "array", images, labels, [f"{path}[{i}]" for i in range(len(images))], key)


def _read_saved(path: str, image_column: str, label_column: str, role: str, labelled: bool) -> ImageExamples:
    from glora.data.tables import load_saved_dataset

    dataset = load_saved_dataset(path, role)
    columns = list(dataset.column_names)
    for column in (image_column, *([label_column] if labelled else [])):
        if column not in columns:
            raise _error(f"{role} data {path} has no column {column!r}; its columns are {columns}", path, column)
    labels: Optional[list[Any]] = None
    if labelled:
        labels = list(dataset[label_column])
        feature = dataset.features[label_column]
        names = getattr(feature, "names", None)
        if names:  # a ClassLabel: its names, not its ids
            labels = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in labels]
    return ImageExamples(
        path, role, "dataset", dataset, labels, [f"{path}[{i}]" for i in range(len(dataset))], image_column
    )


def resize_images(examples: ImageExamples, side: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The examples as ``(N, 3, side, side)`` uint8, each resized whole (no crop) with ``interpolation``
    (``bilinear``, ``bicubic`` or ``nearest``; antialiased when shrinking)."""
    mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    out = torch.empty((len(examples), 3, side, side), dtype=torch.uint8)
    if examples.source == "array" and len(examples):
        a = examples.items
        for start in range(0, len(a), RESIZE_CHUNK):
            chunk = np.stack(
                [rgb_array(x, examples.names[start + j]) for j, x in enumerate(a[start : start + RESIZE_CHUNK])]
            )
            out[start : start + len(chunk)] = _resize(torch.from_numpy(chunk), side, mode)
        return out
    for i in range(len(examples)):
        out[i] = _resize(torch.from_numpy(np.array(examples.image(i)))[None], side, mode)[0]
    return out


def _resize(batch_hwc: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    x = batch_hwc.permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) == (side, side):
        return x.contiguous()
    y = x.float()
    kwargs: dict[str, Any] = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    y = F.interpolate(y, size=(side, side), mode=mode, **kwargs)
    return y.round_().clamp_(0, 255).to(torch.uint8)
