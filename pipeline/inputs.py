"""Planning the encrypt stage: a dataset's tree -> the samples of each split and how the store lays them
out, from listings and the image headers alone (the shard writer decodes the images).

A split's files are found as the dataset says (:mod:`pipeline.datasets`, mmseg's way). Images are 8-bit
PNG (grey, RGB or palette) or JPEG (grey or RGB), labels 8-bit grey or palette PNG of their image's size.
Each sample is resized first if the owner asks (``resize``, mmseg's notation), then padded at the bottom
and right to the next multiple of ``padded_to`` (the block size): a split whose samples then share one size
keeps the store's fixed layout, any other is stored ragged (:class:`contract.formats.RaggedLayout`).

Every sample carries a stamp of its files (size and modification time, like rsync's check), so a
changed or repaired input redoes exactly the shard that holds it.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fsspec.core import url_to_fs
from pydantic import TypeAdapter, ValidationError

from contract.formats import (
    MAX_IMAGE_PIXELS,
    FixedLayout,
    RaggedLayout,
    SampleName,
    Skip,
    Split,
    SplitLayout,
    padded_size,
    ragged_offsets,
)
from pipeline.datasets import Dataset, SplitSource
from pipeline.errors import OnError, PipelineError
from pipeline.headers import Header, read_headers

log = logging.getLogger(__name__)

IMAGE_COLOURS = {"PNG": ("grey", "RGB", "palette"), "JPEG": ("grey", "RGB")}
LABEL_COLOURS = ("grey", "palette")
# A ragged split's inner chunk: its samples' median size, at most a Cityscapes frame (6 MiB of image):
# a sample is then one or two chunks, and a read decodes at most one chunk it does not fill.
MAX_CHUNK_PIXELS = 1 << 21


@dataclass(frozen=True)
class Sample:
    """One image of the plan: its name, its files relative to the raw root, their stamp, the size they
    decode to (``source``) and the size stored before padding (``size``: resized), any problem."""

    name: str
    image: str
    label: str | None
    stamp: str
    source: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)  # (0, 0) when planned to be skipped
    problem: Skip | None = None  # planned to be skipped


@dataclass(frozen=True)
class SplitPlan:
    name: str
    labelled: bool
    samples: tuple[Sample, ...]
    layout: SplitLayout
    padded_to: int


def plan_dataset(
    raw: str,
    dataset: Dataset,
    *,
    padded_to: int,
    shard_size: int,
    resize: tuple[int, int] | None,
    policy: OnError,
    storage_options: dict[str, Any],
) -> list[SplitPlan]:
    """The splits to write, from listings and the image headers only.

    A problem raises PipelineError naming the file (``OnError.FAIL``), or marks the sample to be
    skipped (``OnError.SKIP``). A split without a usable sample is always an error.
    """
    fs, root = url_to_fs(raw, **storage_options)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise PipelineError(f"{raw}: no such folder (the {dataset} tree)")
    sources = dataset.splits if dataset.splits is not None else _discovered(fs, root, raw, dataset)
    listings: dict[str, dict[str, str | None]] = {}
    found = {}
    for split, source in sources.items():
        if not fs.isdir(f"{root}/{source.img_dir}"):
            log.debug("%s: no folder %s; no %s split", raw, source.img_dir, split)  # the summary names the splits written
            continue
        found[split] = _list_split(fs, root, raw, dataset, source, listings)
    if not any(found.values()):
        where = ", ".join(f"{source.img_dir}/*{dataset.img_suffix}" for source in sources.values())
        raise PipelineError(f"{raw}: no images of the {dataset} dataset here (looked for {where})")

    entries = {path: stamp for listing in listings.values() for path, stamp in listing.items()}
    files = sorted({p for samples in found.values() for s in samples for p in s[1:] if p and entries.get(p) is not None})
    headers = {path[len(root) + 1 :]: header for path, header in read_headers(fs, [f"{root}/{p}" for p in files]).items()}
    return [
        _plan_split(raw, split, sources[split].ann_dir is not None, samples, entries, headers, padded_to, shard_size, resize, policy)
        for split, samples in found.items()
        if samples
    ]


def fingerprint(samples: Sequence[Sample]) -> str:
    """The digest of a shard's inputs: their names, files, stamps and the sizes they are stored at."""
    text = "".join(f"{s.name}\0{s.image}\0{s.label}\0{s.stamp}\0{s.size}\n" for s in samples)
    return hashlib.sha256(text.encode()).hexdigest()


def resized(size: tuple[int, int], scale: tuple[int, int] | None) -> tuple[int, int]:
    """``size`` (height, width) rescaled to fit ``scale`` keeping its ratio, as mmcv's ``rescale_size``
    (mmseg's ``Resize(scale, keep_ratio=True)``): long edge at most max(scale), short edge at most min(scale)."""
    if scale is None or size == (0, 0):
        return size
    height, width = size
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def image_problem(header: Header | str | None) -> str | None:
    """Why an image with this header cannot be stored (None: it can)."""
    if header is None or isinstance(header, str):
        return header or "not a PNG or JPEG file"
    if header.height * header.width > MAX_IMAGE_PIXELS:
        return f"image size {header.height}x{header.width} is larger than cipherseg decodes ({MAX_IMAGE_PIXELS} pixels at most)"
    if header.depth != 8 or header.colour not in IMAGE_COLOURS[header.format]:
        return f"a {header}, not an 8-bit {', '.join(IMAGE_COLOURS[header.format])} {header.format}"
    if 0 in header.size:
        return f"image size {header.height}x{header.width}"
    return None


def label_problem(header: Header | str | None, size: tuple[int, int]) -> str | None:
    """Why a label file with this header cannot label an image of ``size`` (None: it can)."""
    if header is None or isinstance(header, str):
        return header or "not a PNG file"
    if header.format != "PNG" or header.colour not in LABEL_COLOURS or header.depth > 8 or (header.colour == "grey" and header.depth != 8):
        return f"a {header}, not an 8-bit grey or palette PNG label"
    if header.size != size:
        return f"label size {header.height}x{header.width} differs from its image's ({size[0]}x{size[1]})"
    return None


def _discovered(fs, root: str, raw: str, dataset: Dataset) -> dict[str, SplitSource]:
    """mmseg's generic layout: every folder of img_dir is a split, labelled by ann_dir's folder of its name."""
    if not fs.isdir(f"{root}/{dataset.img_dir}"):
        raise PipelineError(f"{raw}: no {dataset.img_dir}/ folder here; expected {dataset.img_dir}/<split>/*{dataset.img_suffix}")
    sources = {}
    for path in sorted(fs.ls(f"{root}/{dataset.img_dir}", detail=False)):
        name = posixpath.basename(path.rstrip("/"))
        if fs.isdir(path):
            if not _valid(Split, name):
                raise PipelineError(f"{raw}/{dataset.img_dir}/{name}: not a split name (lower-case letters, digits and '_')")
            labels = f"{dataset.ann_dir}/{name}"
            sources[name] = SplitSource(img_dir=f"{dataset.img_dir}/{name}", ann_dir=labels if fs.isdir(f"{root}/{labels}") else None)
    return sources


def _valid(kind: Any, value: str) -> bool:
    """Whether ``value`` is of one of the contract's text types (a split or sample name)."""
    try:
        TypeAdapter(kind, config={"regex_engine": "python-re"}).validate_python(value)
    except ValidationError:
        return False
    return True


def _list_split(fs, root: str, raw: str, dataset: Dataset, source: SplitSource, listings: dict) -> list[tuple[str, str, str | None]]:
    """(name, image, label or None) of every sample of a split, paths relative to the root, in mmseg's order:
    its split file's, or sorted by image path."""
    images = _listing(fs, root, source.img_dir, listings)
    if source.ann_dir is not None:
        _listing(fs, root, source.ann_dir, listings)
    suffix = source.seg_map_suffix or dataset.seg_map_suffix
    if source.split_file is not None:
        stems = _split_file(fs, root, raw, source.split_file)
    else:
        prefix = f"{source.img_dir}/"
        stems = [p[len(prefix) : -len(dataset.img_suffix)] for p in sorted(images) if p.endswith(dataset.img_suffix)]
    samples, seen = [], {}
    for stem in stems:
        name = posixpath.basename(stem)
        image = f"{source.img_dir}/{stem}{dataset.img_suffix}"
        if not _valid(SampleName, name):
            raise PipelineError(f"{raw}/{image}: its name is no sample name (printable, at most 255 characters)")
        if name in seen:
            raise PipelineError(f"{raw}/{image}: a second sample named {name!r} in this split (the first: {raw}/{seen[name]})")
        seen[name] = image
        samples.append((name, image, f"{source.ann_dir}/{stem}{suffix}" if source.ann_dir is not None else None))
    return samples


def _split_file(fs, root: str, raw: str, path: str) -> list[str]:
    """The stems a split file lists, one per line (mmseg's ann_file); each must stay inside the tree."""
    try:
        lines = fs.cat_file(f"{root}/{path}").decode().splitlines()
    except FileNotFoundError:
        raise PipelineError(f"{raw}/{path}: no such split file") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{raw}/{path}: not a text file of image names") from None
    stems = [line.strip() for line in lines if line.strip()]
    for number, stem in enumerate(stems, 1):
        parts = stem.split("/")
        if stem.startswith("/") or "\\" in stem or any(part in ("", ".", "..") for part in parts) or not stem.isprintable():
            raise PipelineError(f"{raw}/{path}: line {number} is not an image name inside the tree")
    return stems


def _plan_split(raw, split, labelled, listed, entries, headers, padded_to, shard_size, resize, policy: OnError) -> SplitPlan:
    samples = []
    for name, image, label in listed:
        stamp = " ".join(str(entries.get(p)) for p in (image, label) if p)
        problem = _problem(image, label, entries, headers)
        if problem:
            skip = policy.handle(Skip(split=split, name=name, file=problem[0], reason=problem[1]), raw)
            samples.append(Sample(name, image, label, stamp, problem=skip))
        else:
            source = headers[image].size
            samples.append(Sample(name, image, label, stamp, source, resized(source, resize)))
    usable = [padded_size(s.size, padded_to) for s in samples if s.problem is None]
    if not usable:
        first = samples[0].problem
        raise PipelineError(f"{raw}: no usable image in split {split!r} (the first: {raw.rstrip('/')}/{first.file}: {first.reason})")
    if len(set(usable)) == 1:
        layout = FixedLayout(height=usable[0][0], width=usable[0][1])
    else:
        chunk = min(int(statistics.median_high([h * w for h, w in usable])), MAX_CHUNK_PIXELS)
        pixels = [h * w for h, w in (padded_size(s.size, padded_to) for s in samples)]
        layout = RaggedLayout(chunk_pixels=chunk, shard_chunks=ragged_offsets(pixels, shard_size, chunk)[1])
    return SplitPlan(split, labelled, tuple(samples), SplitLayout(samples=len(samples), labelled=labelled, layout=layout), padded_to)


def _problem(image, label, entries, headers) -> tuple[str, str] | None:
    """(file relative to the raw root, reason) if this sample cannot be used."""
    if image not in entries:
        return image, "no such image file"
    if entries[image] is None:
        return image, "a directory, not an image file"
    reason = image_problem(headers.get(image))
    if reason:
        return image, reason
    if label is None:
        return None
    if label not in entries:
        return image, f"no label file (expected {label})"
    if entries[label] is None:
        return label, "a directory, not a label file"
    reason = label_problem(headers.get(label), headers[image].size)
    return (label, reason) if reason else None


def _listing(fs, root: str, folder: str, listings: dict) -> dict[str, str | None]:
    """{path relative to root: stamp} of every entry under root/folder (a directory's stamp is None), kept
    in ``listings`` so that splits sharing a folder (VOC's) list it once."""
    if folder not in listings:
        found = fs.find(f"{root}/{folder}", detail=True, withdirs=True) if fs.isdir(f"{root}/{folder}") else {}
        listings[folder] = {path[len(root) + 1 :]: _stamp(info) for path, info in found.items()}
    return listings[folder]


def _stamp(info: dict[str, Any]) -> str | None:
    """A file's size and modification time (or the object store's equivalent), None for a directory."""
    if info.get("type") == "directory":
        return None
    changed = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created") or ""
    return f"{info['size']}@{changed}"
