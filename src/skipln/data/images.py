"""Any image classification data set: a torchvision data set by name, or a folder of images per class.

``dataset: FashionMNIST`` (or ``MNIST``, ``KMNIST``, ``CIFAR10``, ``SVHN``, … — any class of
``torchvision.datasets`` whose constructor takes ``train: bool`` or ``split: "train" | "test"``)
reads that data set from ``data_dir`` the way torchvision lays it out; ``dataset: ImageFolder``
reads ``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*``.

What a model must agree with is read from the data, not written in YAML: the number of
classes (``num_classes``) and of channels (``in_channels``), which the CLI links into the
model, and the per-channel mean and standard deviation used to normalize, unless given.

:mod:`skipln.data.cifar` holds CIFAR-10/100 presets of :class:`ImageDataModule` (He et al.'s recipe).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from skipln.data.image_loaders import ImageLoaders, Transformed, pin_on_gpu
from skipln.errors import ConfigError, DataError
from skipln.validation import is_int

#: The ``dataset`` value that reads a folder of class folders instead of a torchvision data set.
IMAGE_FOLDER = "ImageFolder"
#: The sub-folders of ``data_dir`` that ``ImageFolder`` reads.
FOLDER_SPLITS = ("train", "test")
#: Names the error for an unknown data set offers.
EXAMPLES = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN", "STL10")
#: How to get a data set offline, where torchvision's download is not the only way.
OFFLINE_HINTS = {"FashionMNIST": "or, offline, run `python scripts/get_fashion_mnist.py {data_dir}` (Debian's dataset-fashion-mnist)"}


def split_keyword(dataset_class: type) -> str | None:
    """``"train"`` or ``"split"``: how the class's constructor chooses the training or test split (None: neither)."""
    parameters = inspect.signature(dataset_class).parameters
    return next((name for name in ("train", "split") if name in parameters), None)


def declared_files(dataset_class: type) -> tuple[str, tuple[str, ...]] | None:
    """The folder (inside ``data_dir``) and the files in it that a torchvision class checks before it reads, where it lists them.

    CIFAR-10, CIFAR-100 and STL-10 list them as class attributes (``base_folder``, ``train_list``,
    ``test_list``, and CIFAR's ``meta``): the files whose md5 torchvision checks. Other classes
    keep their layout to themselves: None.
    """
    folder = getattr(dataset_class, "base_folder", None)
    lists = [getattr(dataset_class, name, None) for name in ("train_list", "test_list")]
    if not isinstance(folder, str) or not all(isinstance(entries, list) for entries in lists):
        return None
    files = [entry[0] for entries in lists for entry in entries]  # type: ignore[union-attr]
    meta = getattr(dataset_class, "meta", None)
    if isinstance(meta, dict) and "filename" in meta:
        files.append(meta["filename"])
    return folder, tuple(files)


def torchvision_datasets() -> dict[str, type]:
    """The classes of ``torchvision.datasets`` that this module can read, by name."""
    found = {}
    for name, value in vars(datasets).items():
        if inspect.isclass(value) and issubclass(value, Dataset) and not name.startswith("_"):
            try:
                keyword = split_keyword(value)
            except (TypeError, ValueError):  # a signature inspect cannot read
                continue
            if keyword is not None:
                found[name] = value
    return found


def resolve_dataset(name: str) -> str:
    """The torchvision class name (or ``ImageFolder``) that ``name`` means, matched without regard to case.

    Raises:
        ConfigError: no such data set, with the closest names.
    """
    known = [IMAGE_FOLDER, *sorted(torchvision_datasets())]
    by_lower = {candidate.lower(): candidate for candidate in known}
    if isinstance(name, str) and name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ConfigError(
        f"ImageDataModule: unknown dataset {name!r}{hint}: give the name of a torchvision.datasets class with train "
        f"and test splits (e.g. {', '.join(EXAMPLES)}), or {IMAGE_FOLDER!r} for a folder of class folders"
    )


class ConvertMode:
    """Converts a PIL image to ``mode`` (``"L"`` or ``"RGB"``), so every image of a data set has the same channels."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        if isinstance(image, Image.Image) and image.mode != self.mode:
            return image.convert(self.mode)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def open_image(path: str) -> Image.Image:
    """An image file as PIL reads it, in its own mode (torchvision's default loader would force RGB)."""
    with Image.open(path) as image:
        image.load()
        return image


def channel_statistics(dataset: Dataset, transform: v2.Transform, indices: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the pixels of ``dataset[indices]`` after ``transform`` (in [0, 1]).

    Every pixel counts the same, so images of different sizes weigh by their area. Sums are
    accumulated in float64, so the result does not depend on the order.
    """
    total = square = None
    pixels = 0
    for index in indices:
        image = transform(dataset[index][0]).to(torch.float64)
        flat = image.flatten(1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        square = (flat * flat).sum(1) if square is None else square + (flat * flat).sum(1)
        pixels += flat.shape[1]
    if total is None or square is None or pixels == 0:
        raise DataError("ImageDataModule: no training images to compute the normalization statistics from")
    mean = total / pixels
    std = (square / pixels - mean * mean).clamp_min(0.0).sqrt()
    return mean.tolist(), std.tolist()


class ImageDataModule(ImageLoaders, LightningDataModule):
    """A torchvision classification data set by name, or an image folder, split train/validation/test.

    ``val_size`` training images, chosen by ``seed``, are held out for validation; the data
    set's own test split is the test set. Images are converted to one mode — grey (1 channel)
    when the first training image is grey, else RGB (3 channels; alpha is dropped) — so that
    ``in_channels`` holds for every image. With ``image_size``, every image is resized (its
    shorter side) and centre-cropped to ``image_size × image_size``; without it, the images must
    all have one size. Training images are then, with ``augment``, zero-padded by
    ``crop_padding`` pixels and randomly cropped back to their size, and flipped horizontally
    where ``horizontal_flip``; finally scaled to [0, 1] and normalized with ``mean`` and ``std``,
    which, when not given, are computed on (at most ``stats_images`` of) the training images.

    Properties read from the data (the first access loads the training split, downloading it
    where ``download`` is set): :attr:`num_classes`, :attr:`in_channels`, :attr:`classes`.

    Args:
        dataset: a class name of ``torchvision.datasets`` (``FashionMNIST``, ``MNIST``, ``CIFAR10``,
            ``SVHN``, …; case does not matter) or ``ImageFolder``.
        data_dir: the folder torchvision's class reads (``<data_dir>/FashionMNIST/raw/`` …), or for
            ``ImageFolder`` the folder that holds ``train/`` and ``test/``.
        download: let torchvision fetch the data set into ``data_dir`` if it is missing.
        batch_size: images per batch, per process.
        val_size: training images held out for validation, at least 1 and fewer than the training split.
        seed: seed of the train/validation split (independent of the run's seed).
        num_workers: data-loading worker processes, per process.
        augment: apply the training augmentation (padded random crop, flip); ``false`` for none.
        crop_padding: pixels of zero padding before the random crop; 0 for no crop.
        horizontal_flip: flip training images left-right at random (wrong for digits and text).
        image_size: resize and centre-crop every image to this square size; ``null`` keeps the size.
        mean: per-channel mean of the pixels in [0, 1]; ``null`` computes it (with ``std``).
        std: per-channel standard deviation; given with ``mean`` or not at all.
        stats_images: the most training images the statistics are computed on (a fixed sample by ``seed``).
        dataset_args: further arguments of the torchvision class (e.g. ``{split: balanced}`` for EMNIST).
    """

    def __init__(
        self,
        dataset: str,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        num_workers: int = 2,
        augment: bool = True,
        crop_padding: int = 4,
        horizontal_flip: bool = True,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        stats_images: int = 10_000,
        dataset_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.dataset = resolve_dataset(dataset)
        for arg, value, minimum in (
            ("batch_size", batch_size, 1),
            ("val_size", val_size, 1),
            ("num_workers", num_workers, 0),
            ("crop_padding", crop_padding, 0),
            ("stats_images", stats_images, 1),
            ("image_size", 1 if image_size is None else image_size, 1),
        ):
            if not is_int(value) or value < minimum:
                raise ConfigError(f"{owner}: '{arg}' must be an integer >= {minimum}, got {value!r}")
        if (mean is None) != (std is None):
            raise ConfigError(f"{owner}: give both 'mean' and 'std' (one value per channel), or neither to compute them")
        if std is not None and any(s <= 0 for s in std):
            raise ConfigError(f"{owner}: every 'std' must be > 0, got {std!r}")
        if self.dataset == IMAGE_FOLDER and download:
            raise ConfigError("ImageDataModule: an ImageFolder cannot be downloaded: set download: false and put the images under data_dir")
        if self.dataset == IMAGE_FOLDER and dataset_args:
            raise ConfigError("ImageDataModule: 'dataset_args' is for torchvision's classes; an ImageFolder takes none")
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        self.download = download
        self.batch_size = batch_size
        self.val_size = val_size
        self.seed = seed
        self.num_workers = num_workers
        self.augment = augment
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip
        self.image_size = image_size
        self.mean: list[float] | None = list(mean) if mean is not None else None
        self.std: list[float] | None = list(std) if std is not None else None
        self.stats_images = stats_images
        self.dataset_args = dict(dataset_args or {})
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._splits: dict[str, Dataset] = {}
        self._first: tuple[str, tuple[int, int]] | None = None

    # -- what the data determines --------------------------------------------------------------

    @property
    def name(self) -> str:
        """For run names: ``fashionmnist``, ``cifar10``; an image folder's own folder name."""
        if self.dataset == IMAGE_FOLDER:
            return self.data_dir.absolute().name.lower()
        return self.dataset.lower()

    @property
    def classes(self) -> list[str]:
        """The class names, in label order (for data sets that name them; else ``"0"``, ``"1"``, …)."""
        train = self._split("train")
        names = getattr(train, "classes", None)
        if names:
            return [str(c) for c in names]
        return [str(i) for i in range(_count_labels(train))]

    @property
    def num_classes(self) -> int:
        """The number of classes of the training split."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """1 for grey images, 3 for colour (see :meth:`mode`)."""
        return 1 if self.mode == "L" else 3

    @property
    def mode(self) -> str:
        """``"L"`` when the first training image is grey (with or without alpha), else ``"RGB"``."""
        return self._probe()[0]

    def _probe(self) -> tuple[str, tuple[int, int]]:
        """The mode every image is converted to, and the size (height, width) of the first training image."""
        if self._first is None:
            image = self._split("train")[0][0]
            if isinstance(image, Image.Image):
                bands = [b for b in image.getbands() if b != "A"]
                mode = "L" if len(bands) == 1 else "RGB"
                size = (image.height, image.width)
            else:  # a tensor or array: (C, H, W) as torchvision's v2 reads it
                tensor = v2.ToImage()(image)
                mode = "L" if tensor.shape[0] == 1 else "RGB"
                size = (int(tensor.shape[-2]), int(tensor.shape[-1]))
            self._first = (mode, size)
        return self._first

    # -- loading -------------------------------------------------------------------------------

    def _split(self, split: str) -> Dataset:
        """The raw ``train`` or ``test`` split (PIL images and integer labels), loaded once."""
        if split not in self._splits:
            self._splits[split] = self._load_folder(split) if self.dataset == IMAGE_FOLDER else self._load_torchvision(split)
        return self._splits[split]

    def _load_folder(self, split: str) -> Dataset:
        root = self.data_dir / split
        if not root.is_dir():
            raise DataError(
                f"ImageDataModule: no folder {root.absolute()}/: an ImageFolder data_dir must hold "
                f"{' and '.join(f'{s}/' for s in FOLDER_SPLITS)}, each with one sub-folder of images per class "
                f"(e.g. {self.data_dir}/train/cat/001.png); rename or link a 'val/' folder to 'test/' if that is your test set"
            )
        try:
            folder = datasets.ImageFolder(str(root), loader=open_image)
        except FileNotFoundError as error:  # no class folders, or no image files in them
            raise DataError(f"ImageDataModule: {root.absolute()}/ holds no images in class folders ({error})") from error
        if split != "train" and folder.class_to_idx != self._split("train").class_to_idx:  # type: ignore[attr-defined]
            raise DataError(
                f"ImageDataModule: the class folders of {root.absolute()}/ ({', '.join(folder.classes)}) differ from "
                f"those of train/ ({', '.join(self._split('train').classes)}): both splits need the same classes"  # type: ignore[attr-defined]
            )
        return folder

    def _load_torchvision(self, split: str) -> Dataset:
        declared = declared_files(torchvision_datasets()[self.dataset])
        if declared is not None and not self.download:
            self._check_declared_files(*declared)
        try:
            return self._construct(split, download=False)
        except RuntimeError as error:
            if "download=True" not in str(error):
                raise
            if not self.download and declared is not None:  # every file is there (checked above): one is damaged
                raise DataError(
                    f"{type(self).__name__}: {self.dataset} at {(self.data_dir / declared[0]).absolute()}/ is corrupt or incomplete "
                    f"(torchvision: {error}). Replace the files with a fresh copy, or delete the folder and set "
                    f"`download: true` (data.init_args.download)."
                ) from error
            if not self.download:
                hint = OFFLINE_HINTS.get(self.dataset, "").format(data_dir=self.data_dir)
                raise DataError(
                    f"{type(self).__name__}: {self.dataset} not found (or corrupt) under {self.data_dir.absolute()}/ "
                    f"(torchvision: {error}): set `download: true` (data.init_args.download) to fetch it into data_dir"
                    f"{', ' + hint if hint else ''}, or point data.init_args.data_dir at the folder that holds it"
                ) from error
        return self._download(split)

    def _download(self, split: str) -> Dataset:
        """torchvision's download of ``split``, one process at a time.

        Reached at the first question about the data (the CLI's links), which every process of a
        ``torchrun``/SLURM job asks at once: the lock makes the others wait for the first one's
        download and then find the files, instead of writing the same archive together.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A read-only copy: nothing can be written there, so there is nothing to take turns for (and no lock file).
        writable = os.access(self.data_dir, os.W_OK)
        with FileLock(str(self.data_dir / f".{self.dataset}.download.lock")) if writable else contextlib.nullcontext():
            return self._construct(split, download=True)

    def _check_declared_files(self, folder: str, files: tuple[str, ...]) -> None:
        """Raise DataError naming the folder, its files, the missing ones and where the archive unpacks, if any is missing.

        Checked before torchvision, whose "not found or corrupted" says neither which file nor
        whether one is missing or damaged.
        """
        root = self.data_dir / folder
        missing = [f for f in files if not (root / f).is_file()]
        if not missing:
            return
        found = "the folder does not exist" if not root.is_dir() else f"missing: {', '.join(missing)}"
        url = getattr(torchvision_datasets()[self.dataset], "url", None)
        source = f" (from {url}, unpacked into {self.data_dir.absolute()}/)" if isinstance(url, str) else ""
        raise DataError(
            f"{type(self).__name__}: {self.dataset} not found: expected the folder {root.absolute()}/ with "
            f"{', '.join(files)}{source}; {found}. Put the files there, or set `download: true` "
            f"(data.init_args.download) to fetch them."
        )

    def _construct(self, split: str, download: bool) -> Dataset:
        dataset_class = torchvision_datasets()[self.dataset]
        keyword = split_keyword(dataset_class)
        choice: Any = split == "train" if keyword == "train" else split
        try:
            return dataset_class(str(self.data_dir), **{keyword: choice}, download=download, **self.dataset_args)  # type: ignore[misc]
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"{type(self).__name__}: torchvision.datasets.{self.dataset}({keyword}={choice!r}, "
                f"{', '.join(f'{k}={v!r}' for k, v in self.dataset_args.items()) or 'no dataset_args'}) failed: {error}; "
                f"check data.init_args.dataset_args, or use a data set with train and test splits"
            ) from error

    def prepare_data(self) -> None:
        if self.download and self.dataset != IMAGE_FOLDER:
            for split in FOLDER_SPLITS:
                self._download(split)

    # -- transforms ----------------------------------------------------------------------------

    def _geometry(self) -> list[Any]:
        """To one mode and, with ``image_size``, one square size; then a uint8 tensor image."""
        steps: list[Any] = [ConvertMode(self.mode)]
        if self.image_size is not None:
            steps += [v2.Resize(self.image_size), v2.CenterCrop(self.image_size)]
        return [*steps, v2.ToImage()]

    def _image_size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size) if self.image_size is not None else self._probe()[1]

    def _to_normalized(self) -> list[Any]:
        assert self.mean is not None and self.std is not None
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def train_transform(self) -> v2.Transform:
        steps = self._geometry()
        if self.augment and self.crop_padding > 0:
            # On the uint8 image, before normalizing: the padding is black, the background of
            # MNIST-like images and He et al.'s zero padding for CIFAR.
            steps.append(v2.RandomCrop(self._image_size(), padding=self.crop_padding))
        if self.augment and self.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose([*steps, *self._to_normalized()])

    def eval_transform(self) -> v2.Transform:
        return v2.Compose([*self._geometry(), *self._to_normalized()])

    # -- splits --------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            train = self._split("train")
            if len(train) <= self.val_size:  # type: ignore[arg-type]
                raise ConfigError(
                    f"{type(self).__name__}: val_size={self.val_size} leaves no training images ({self.dataset} at "
                    f"{self.data_dir.absolute()}/ has {len(train)}): lower data.init_args.val_size"  # type: ignore[arg-type]
                )
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()  # type: ignore[arg-type]
            train_indices = order[self.val_size :]
            self._ensure_statistics(train, train_indices)
            self.val_set = Transformed(Subset(train, order[: self.val_size]), self.eval_transform())
            self.train_set = Transformed(Subset(train, train_indices), self.train_transform())
        if stage in (None, "test", "predict") and self.test_set is None:
            if self.mean is None:  # test without fit: the statistics of the same training images
                train = self._split("train")
                order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()  # type: ignore[arg-type]
                self._ensure_statistics(train, order[self.val_size :])
            self.test_set = Transformed(self._split("test"), self.eval_transform())

    def _ensure_statistics(self, train: Dataset, train_indices: list[int]) -> None:
        """Compute ``mean`` and ``std`` on a fixed sample of the training images, or check the given ones."""
        channels = self.in_channels
        if self.mean is None or self.std is None:
            sample = train_indices
            if len(sample) > self.stats_images:
                pick = torch.randperm(len(sample), generator=torch.Generator().manual_seed(self.seed + 1))[: self.stats_images]
                sample = [sample[i] for i in sorted(pick.tolist())]
            self.mean, self.std = channel_statistics(train, v2.Compose([*self._geometry(), v2.ToDtype(torch.float32, scale=True)]), sample)
            if any(s <= 0 or not math.isfinite(s) for s in self.std):
                raise DataError(f"{type(self).__name__}: the training images of {self.dataset} are constant in a channel (std {self.std}); give mean and std")
            rank_zero_info(
                f"{type(self).__name__}: {self.dataset} normalized with mean {_rounded(self.mean)} and std {_rounded(self.std)}, "
                f"computed on {len(sample):,} training images (give data.init_args.mean and std to skip this)"
            )
        if len(self.mean) != channels or len(self.std) != channels:
            raise ConfigError(
                f"{type(self).__name__}: {self.dataset} has {channels}-channel images but mean/std give "
                f"{len(self.mean)}/{len(self.std)} values: give one per channel, or neither to compute them"
            )

    def pin_memory(self) -> bool:
        return pin_on_gpu(self.trainer)


def _count_labels(dataset: Dataset) -> int:
    """The number of classes of a data set without class names: its largest label + 1."""
    for attribute in ("targets", "labels", "_labels"):
        labels = getattr(dataset, attribute, None)
        if labels is not None and len(labels) > 0:
            return int(torch.as_tensor(labels).max().item()) + 1
    # Rare: no label attribute, so every example is read once.
    return max(int(dataset[i][1]) for i in range(len(dataset))) + 1  # type: ignore[arg-type]


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 4) for v in values]


__all__ = ["IMAGE_FOLDER", "ImageDataModule", "channel_statistics", "declared_files", "resolve_dataset", "torchvision_datasets"]
