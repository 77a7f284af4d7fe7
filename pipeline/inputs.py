"""Planning the encrypt stage: a Cityscapes tree -> the samples of each split, checked from a listing
and the PNG headers alone (the shard writer decodes the images).

    <raw>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   8-bit RGB
    <raw>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     8-bit grey (not for test)

Every sample carries a stamp of its files (size and modification time, like rsync's check), so a
changed or repaired input redoes exactly the shard that holds it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fsspec.core import url_to_fs

from contract.formats import LABELLED, SPLITS, Skip
from contract.query import PNG_GREY, PNG_HEADER_BYTES, image_problem, png_header
from pipeline.errors import OnError, PipelineError


@dataclass(frozen=True)
class Sample:
    """One image of the plan: its name, its files relative to the raw root, their stamp, any problem."""

    name: str
    image: str
    label: str | None
    stamp: str
    problem: Skip | None = None  # planned to be skipped


@dataclass(frozen=True)
class SplitPlan:
    name: str
    height: int
    width: int
    samples: tuple[Sample, ...]

    @property
    def labelled(self) -> bool:
        return LABELLED[self.name]


def plan_dataset(raw: str, block_size: int | None, policy: OnError, storage_options: dict[str, Any]) -> list[SplitPlan]:
    """The splits to write, from a listing and the PNG headers only.

    A problem raises PipelineError naming the file (``OnError.FAIL``), or marks the sample to be
    skipped (``OnError.SKIP``). A split without a usable sample is always an error.
    """
    fs, root = url_to_fs(raw, **storage_options)
    if not fs.isdir(f"{root}/leftImg8bit"):
        raise PipelineError(f"{raw}: no leftImg8bit/ folder here; expected a Cityscapes root")
    entries = _list(fs, root, "leftImg8bit") | _list(fs, root, "gtFine")
    images = sorted(p for p in entries if p.endswith("_leftImg8bit.png") and p.count("/") == 3 and p.split("/")[1] in SPLITS)
    if not images:
        raise PipelineError(f"{raw}: no leftImg8bit/<split>/<city>/*_leftImg8bit.png images for splits {SPLITS}")

    labels = {p: label_path(p) for p in images if LABELLED[p.split("/")[1]]}
    files = [p for p in (*images, *labels.values()) if p in entries and entries[p] is not None]
    starts = fs.cat_ranges([f"{root}/{p}" for p in files], 0, PNG_HEADER_BYTES, on_error="return")
    headers = {path: png_header(start) for path, start in zip(files, starts)}
    return [
        _plan_split(raw, split, [p for p in images if p.split("/")[1] == split], labels, entries, headers, block_size, policy)
        for split in SPLITS
        if any(p.split("/")[1] == split for p in images)
    ]


def fingerprint(samples: Sequence[Sample]) -> str:
    """The digest of a shard's inputs: their names, files and stamps."""
    text = "".join(f"{s.name}\0{s.image}\0{s.label}\0{s.stamp}\n" for s in samples)
    return hashlib.sha256(text.encode()).hexdigest()


def label_path(image: str) -> str:
    """leftImg8bit/<split>/<city>/<name>_leftImg8bit.png -> gtFine/.../<name>_gtFine_labelIds.png"""
    _, split, city, file = image.split("/")
    return f"gtFine/{split}/{city}/{file.removesuffix('_leftImg8bit.png')}_gtFine_labelIds.png"


def _plan_split(raw, split, paths, labels, entries, headers, block_size, policy: OnError) -> SplitPlan:
    """The split's image size is its most common usable one; every other image is a problem."""
    usable = Counter(headers[p][:2] for p in paths if p in headers and image_problem(headers[p], block_size) is None)
    shape = usable.most_common(1)[0][0] if usable else None
    samples = []
    for path in paths:
        name = path.rsplit("/", 1)[1].removesuffix("_leftImg8bit.png")
        label = labels.get(path)
        problem = _problem(path, label, entries, headers, shape, block_size)
        skip = policy.handle(Skip(split=split, name=name, file=problem[0], reason=problem[1]), raw) if problem else None
        stamp = " ".join(str(entries.get(p)) for p in (path, label) if p)
        samples.append(Sample(name, path, label, stamp, skip))
    if shape is None or all(sample.problem for sample in samples):
        first = samples[0].problem
        raise PipelineError(f"{raw}: no usable image in split {split!r} (the first: {raw.rstrip('/')}/{first.file}: {first.reason})")
    return SplitPlan(split, *shape, tuple(samples))


def _problem(image, label, entries, headers, shape, block_size) -> tuple[str, str] | None:
    """(file relative to the raw root, reason) if this sample cannot be used."""
    if entries[image] is None:
        return image, "a directory, not an image file"
    reason = image_problem(headers.get(image), block_size, shape)
    if reason:
        return image, reason
    if label is None:
        return None
    if label not in entries:
        return image, f"no label file (expected {label})"
    if entries[label] is None:
        return label, "a directory, not a label file"
    reason = _label_problem(headers.get(label), shape)
    return (label, reason) if reason else None


def _label_problem(header, shape) -> str | None:
    if header is None:
        return "not a PNG file"
    height, width, depth, colour = header
    if (depth, colour) != (8, PNG_GREY):
        return f"not an 8-bit greyscale label PNG (bit depth {depth}, colour type {colour})"
    if (height, width) != shape:
        return f"label size {height}x{width} differs from its image's ({shape[0]}x{shape[1]})"
    return None


def _list(fs, root: str, folder: str) -> dict[str, str | None]:
    """{path relative to root: stamp} of every entry under root/folder; the stamp of a directory is None."""
    if not fs.isdir(f"{root}/{folder}"):
        return {}
    found = fs.find(f"{root}/{folder}", detail=True, withdirs=True)
    return {path[len(root) + 1 :]: _stamp(info) for path, info in found.items()}


def _stamp(info: dict[str, Any]) -> str | None:
    """A file's size and modification time (or the object store's equivalent), None for a directory."""
    if info.get("type") == "directory":
        return None
    changed = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created") or ""
    return f"{info['size']}@{changed}"
