"""Synthetic stand-ins for downloads that cannot happen offline: a Cityscapes tree and a ViT checkpoint.

The dataset follows the Cityscapes layout and label conventions exactly, so that every consumer
(cityscapesscripts, mmsegmentation, the encryption pipeline) runs on it unchanged:

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_{labelIds,color,instanceIds}.png

Images are street scenes drawn from the official label table: each class has a characteristic
colour, texture and position, so a segmentation model can learn them, and the images are smooth
like photographs (neighbouring pixels correlate), which the security audits rely on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels, name2label

from pipeline.errors import PipelineError
from contract.outputs import OutputKind, guarded_path, write_file

__all__ = ["DEFAULT_COUNTS", "DEFAULT_SIZE", "CITIES", "write_sample", "write_random_vit"]

DEFAULT_COUNTS: Mapping[str, int] = MappingProxyType({"train": 8, "val": 4, "test": 2})
DEFAULT_SIZE = (256, 512)  # (height, width); Cityscapes itself is 1024x2048
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau"), "test": ("berlin", "bielefeld")}
SPLITS = tuple(CITIES)
FRAME = 19  # the annotated frame of each Cityscapes snippet

# name: (RGB colour, fine, medium and coarse texture amplitude). Colours are what a camera would
# see (grey asphalt, green trees), not the label colours.
APPEARANCE = {
    "unlabeled": ((95, 85, 75), 0.10, 0.20, 0.10),
    "ego vehicle": ((40, 42, 50), 0.02, 0.04, 0.10),
    "static": ((125, 105, 80), 0.08, 0.12, 0.05),
    "dynamic": ((150, 125, 60), 0.06, 0.10, 0.05),
    "road": ((100, 98, 105), 0.10, 0.06, 0.08),
    "sidewalk": ((170, 160, 150), 0.06, 0.05, 0.06),
    "building": ((150, 120, 100), 0.04, 0.08, 0.10),
    "wall": ((180, 172, 155), 0.05, 0.08, 0.06),
    "pole": ((115, 115, 120), 0.02, 0.03, 0.02),
    "traffic light": ((45, 45, 35), 0.02, 0.03, 0.02),
    "traffic sign": ((230, 200, 40), 0.02, 0.03, 0.02),
    "vegetation": ((70, 110, 40), 0.30, 0.25, 0.10),
    "terrain": ((125, 150, 75), 0.18, 0.10, 0.06),
    "sky": ((150, 185, 225), 0.00, 0.02, 0.08),
    "person": ((150, 60, 75), 0.04, 0.06, 0.02),
    "rider": ((205, 45, 35), 0.04, 0.06, 0.02),
    "car": ((45, 65, 135), 0.02, 0.04, 0.04),
    "truck": ((215, 215, 220), 0.02, 0.05, 0.04),
    "bicycle": ((30, 30, 35), 0.02, 0.03, 0.02),
}
ID = {name: name2label[name].id for name in APPEARANCE}
ROAD_M = 9.0  # road width in metres, which sets the pixels per metre at each depth
# Objects per image: [low, high) of each kind.
OBJECTS = {
    "car": (1, 6), "truck": (0, 2), "cyclist": (0, 3), "person": (0, 6),
    "pole": (2, 6), "static": (0, 3), "dynamic": (0, 2),
}


def write_sample(
    root: str | Path,
    *,
    counts: Mapping[str, int] = DEFAULT_COUNTS,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> list[Path]:
    """Write a synthetic Cityscapes tree under root; return the written leftImg8bit paths.

    counts maps split names to numbers of images; size is (height, width). Image i of a split
    depends only on (seed, split, i), so changing counts leaves the other images unchanged.
    Test labels are all 0 ('unlabeled'), like the dummies Cityscapes ships.
    """
    if set(counts) - set(SPLITS):
        raise PipelineError(f"unknown splits {sorted(set(counts) - set(SPLITS))}; known: {SPLITS}")
    if any(n < 0 for n in counts.values()):
        raise PipelineError(f"image counts must be >= 0, got {dict(counts)}")
    h, w = size
    if h <= 0 or w <= 0:
        raise PipelineError(f"size must be positive (height, width), got {size}")

    root = Path(root)
    written = []
    for s, split in enumerate(SPLITS):
        cities = CITIES[split]
        for i in range(counts.get(split, 0)):
            rng = np.random.default_rng(np.random.SeedSequence([seed, s, i]))
            label, instance, shade = _scene(rng, h, w)
            image = _render(rng, label, shade)
            if split == "test":  # Cityscapes ships dummy test labels: everything 'unlabeled'
                label[:], instance[:] = 0, 0
            city = cities[i % len(cities)]
            stem = f"{city}/{city}_{i // len(cities):06d}_{FRAME:06d}"
            image_path = root / "leftImg8bit" / split / f"{stem}_leftImg8bit.png"
            gt = root / "gtFine" / split
            _write_png(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # cv2 encodes BGR
            _write_png(gt / f"{stem}_gtFine_labelIds.png", label)
            _write_png(gt / f"{stem}_gtFine_color.png", cv2.cvtColor(_color(label), cv2.COLOR_RGBA2BGRA))
            _write_png(gt / f"{stem}_gtFine_instanceIds.png", np.where(instance > 0, instance, label))
            written.append(image_path)
    return written


def write_random_vit(path: str | Path, arch: str, *, seed: int = 0, img_size: int | None = None) -> Path:
    """Write a random-init timm ViT or BEiT checkpoint (safetensors, timm key names) in place of a downloaded pretrained one.

    ``img_size`` stands in for a model pretrained at that resolution instead of the arch's own: the
    grids of its position embedding or, for a BEiT, relative position bias tables follow it. The
    tensors depend only on (arch, seed, img_size); the caller's torch RNG is left untouched. Needs no network.
    """
    import timm
    import torch
    from safetensors.torch import save_file

    if not timm.is_model(arch):
        raise PipelineError(f"timm does not know the architecture {arch!r}")
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, **({} if img_size is None else {"img_size": img_size}))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with guarded_path(path, OutputKind.CHECKPOINT) as tmp:
        save_file(tensors, tmp, metadata={"arch": arch, "source": "random-init"})
    return path


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay out a street scene: labelIds, instance ids (0 where none) and shading (windows, markings, paint)."""
    y = np.arange(h, dtype=np.float32)[:, None] + 0.5
    x = np.arange(w, dtype=np.float32)[None, :] + 0.5

    # A street seen along its length: everything converges to a vanishing point on the horizon.
    horizon = h * rng.uniform(0.38, 0.5)
    vp = w * rng.uniform(0.4, 0.6)
    road_l, road_r = w * rng.uniform(0.45, 0.8, size=2)  # half widths at the bottom row
    walk_l, walk_r = w * rng.uniform(0.15, 0.35, size=2)
    depth = np.clip((y - horizon) / (h - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom row

    # Facades: buildings, trees on grass and walls, with rooflines converging to the vanishing point.
    segments = []
    while sum(s[0] for s in segments) < w:
        name = rng.choice(["building", "vegetation", "wall"], p=[0.6, 0.3, 0.1])
        low, slope = (0.02, 0.1) if name == "wall" else (0.03, 0.3)
        segments.append((
            max(1, round(w * rng.uniform(0.05, 0.25))),
            ID[name],
            rng.uniform(low, 4 * low),
            rng.uniform(slope, 4 * slope),
            rng.uniform(-0.25, 0.25),  # tint: no two buildings look alike
            h * rng.uniform(0.02, 0.05),  # window spacing
        ))
    widths, *columns = zip(*segments)
    facade_id, low, slope, tint, period = (np.repeat(c, widths)[:w].astype(np.float32) for c in columns)
    top = horizon - h * (low + slope * np.abs(x[0] - vp) / w)
    top += np.where(facade_id == ID["vegetation"], h * 0.04 * _smooth_noise(rng, 1, w, w / 30)[0], 0)  # tree crowns
    top = np.minimum(top, horizon)
    facade = y >= top
    label = np.where(facade, facade_id, ID["sky"]).astype(np.uint8)
    label[facade & (facade_id == ID["vegetation"]) & (y >= horizon)] = ID["terrain"]
    shade = np.where(facade, tint, 0.3 * y / horizon - 0.2)  # the sky brightens towards the horizon
    windows = (x % period < 0.55 * period) & ((y - top) % period > 0.35 * period) & (y < horizon)
    shade[facade & windows & (facade_id == ID["building"])] -= 0.35

    # Ground: the road between the kerbs, sidewalks outside them.
    kerb_l, kerb_r = vp - depth * road_l, vp + depth * road_r
    road = (y > horizon) & (x > kerb_l) & (x < kerb_r)
    walk = (y > horizon) & (x > kerb_l - depth * walk_l) & (x < kerb_r + depth * walk_r) & ~road
    label[road], label[walk], shade[road | walk] = ID["road"], ID["sidewalk"], 0
    # A dashed centre line and paving seams, spaced by 1 / depth so that they recede like real ones.
    far = 1 / np.maximum(depth, 1e-3)
    centre = vp + depth * (road_r - road_l) / 2
    dashes = (np.abs(x - centre) < np.maximum(0.6, depth * w * 0.006)) & (3 * far % 1 < 0.5)
    shade[road & dashes] = 0.9
    shade[walk & (6 * far % 1 < 0.06)] = -0.2
    instance = np.zeros((h, w), np.uint16)

    # Objects standing on the ground; lateral position u is in pixels from the vanishing point at depth 1.
    objects = []
    for kind, (low, high) in OBJECTS.items():
        for _ in range(rng.integers(low, high)):
            left, f = rng.random() < 0.5, rng.uniform(0.2, 0.8)
            if kind in ("car", "truck"):
                u = rng.uniform(-0.8 * road_l, 0.8 * road_r)
            elif kind == "cyclist":
                u = -0.85 * road_l if left else 0.85 * road_r
            else:  # on a sidewalk
                u = -road_l - f * walk_l if left else road_r + f * walk_r
            objects.append((rng.uniform(0.1, 1), u, kind))
    ppm = (road_l + road_r) / ROAD_M  # pixels per metre at depth 1
    seen = dict.fromkeys(APPEARANCE, 0)  # instances per class so far
    for d, u, kind in sorted(objects, key=lambda o: o[0]):  # far to near, so that near ones occlude
        ground, cx, scale = horizon + d * (h - horizon), vp + d * u, d * ppm
        numbers = {}
        for name, form, x0, y0, x1, y1, tone in _parts(kind, rng):
            shape = _shape(h, w, form, cx + x0 * scale, ground - y1 * scale, cx + x1 * scale, ground - y0 * scale)
            if shape is None:
                continue
            s, mask = shape
            label[s][mask], shade[s][mask] = ID[name], tone
            # The Cityscapes convention: labelId * 1000 + instance number, for classes with instances.
            has_instances = name2label[name].hasInstances
            instance[s][mask] = ID[name] * 1000 + numbers.setdefault(name, seen[name]) if has_instances else 0
        for name in numbers:
            seen[name] += 1

    # Void: the ego vehicle's bonnet and a few unlabelled smudges.
    bonnet = (y > h * (1 - rng.uniform(0.05, 0.1)) + h * 0.06 * ((x - w / 2) / (w / 2)) ** 2)
    label[bonnet], instance[bonnet], shade[bonnet] = ID["ego vehicle"], 0, 0
    for _ in range(rng.integers(0, 3)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), h * rng.uniform(0.01, 0.04)
        shape = _shape(h, w, "ellipse", cx - 2 * r, cy - r, cx + 2 * r, cy + r)
        if shape is not None:
            s, mask = shape
            label[s][mask], instance[s][mask], shade[s][mask] = ID["unlabeled"], 0, 0
    return label, instance, shade


def _parts(kind: str, rng: np.random.Generator) -> list[tuple[str, str, float, float, float, float, float]]:
    """Parts of one object as (label, form, x0, y0, x1, y1, tone) in metres: x from its centre, y up from the ground."""
    if kind == "car":  # from behind
        wd, paint = rng.uniform(1.6, 2.0) / 2, rng.uniform(-0.5, 0.6)
        return [
            ("car", "rect", -wd, 0.25, wd, 0.9, paint),
            ("car", "rect", -0.8 * wd, 0.9, 0.8 * wd, 1.45, paint),
            ("car", "rect", -0.65 * wd, 0.95, 0.65 * wd, 1.38, -0.6),  # rear window
            ("car", "rect", -0.85 * wd, 0.55, -0.6 * wd, 0.7, 1.5),  # lights
            ("car", "rect", 0.6 * wd, 0.55, 0.85 * wd, 0.7, 1.5),
            ("car", "rect", -wd + 0.05, 0, -wd + 0.35, 0.3, -0.8),  # tyres
            ("car", "rect", wd - 0.35, 0, wd - 0.05, 0.3, -0.8),
        ]
    if kind == "truck":
        height, paint = rng.uniform(3, 3.8), rng.uniform(-0.15, 0.1)
        return [
            ("truck", "rect", -1.25, 0.4, 1.25, height, paint),
            ("truck", "rect", -1.25, 0.4, 1.25, 0.7, -0.7),  # bumper
            ("truck", "rect", -1.1, 0, -0.6, 0.5, -0.85),  # tyres
            ("truck", "rect", 0.6, 0, 1.1, 0.5, -0.85),
        ]
    if kind == "person":
        clothes = rng.uniform(-0.4, 0.5)
        return [
            ("person", "rect", -0.15, 0, 0.15, 0.85, -0.5),  # legs
            ("person", "rect", -0.25, 0.85, 0.25, 1.5, clothes),
            ("person", "ellipse", -0.12, 1.48, 0.12, 1.78, 0.4),  # head
        ]
    if kind == "cyclist":  # side on
        clothes = rng.uniform(-0.3, 0.3)
        return [
            ("bicycle", "ring", -0.9, 0, -0.2, 0.7, 0),  # wheels
            ("bicycle", "ring", 0.2, 0, 0.9, 0.7, 0),
            ("bicycle", "rect", -0.55, 0.35, 0.55, 0.45, 0.3),  # frame
            ("bicycle", "rect", 0.45, 0.35, 0.55, 1.05, 0.3),  # fork and handlebar
            ("rider", "rect", -0.3, 0.45, -0.05, 0.95, -0.5),  # leg
            ("rider", "rect", -0.3, 0.95, 0.1, 1.55, clothes),
            ("rider", "ellipse", -0.2, 1.5, 0.05, 1.8, 0.3),  # head
        ]
    if kind == "pole":
        height = rng.uniform(3.5, 7)
        parts = [("pole", "rect", -0.07, 0, 0.07, height, rng.uniform(-0.2, 0.2))]
        top = rng.random()
        if top < 0.6:
            form = rng.choice(["rect", "ellipse"])
            parts.append(("traffic sign", form, -0.35, height - 0.3, 0.35, height + 0.4, rng.uniform(-0.3, 0.2)))
        elif top < 0.9:
            parts.append(("traffic light", "rect", -0.18, height - 0.4, 0.18, height + 0.5, 0))
            parts.append(("traffic light", "ellipse", -0.11, height + 0.22, 0.11, height + 0.44, 2.5))  # lamp
        return parts
    if kind == "static":  # boxes, bollards, advertising columns
        wd, height = rng.uniform(0.2, 0.6), rng.uniform(0.4, 1.2)
        return [("static", "rect", -wd, 0, wd, height, rng.uniform(-0.3, 0.3))]
    # dynamic: bins, prams and other movable things
    return [("dynamic", "ellipse", -0.35, 0, 0.35, 1.0, rng.uniform(-0.3, 0.3))]


def _shape(h: int, w: int, form: str, x0: float, y0: float, x1: float, y1: float):
    """The pixels of a rect, ellipse or ring filling the box (x0, y0)-(x1, y1): (slices, mask), or None if off-image."""
    c0, c1 = max(math.floor(x0), 0), min(math.ceil(x1), w)  # floor/ceil: thin far poles keep one pixel
    r0, r1 = max(math.floor(y0), 0), min(math.ceil(y1), h)
    if c0 >= c1 or r0 >= r1:
        return None
    if form == "rect":
        return np.s_[r0:r1, c0:c1], np.ones((r1 - r0, c1 - c0), bool)
    ry = (np.arange(r0, r1) + 0.5 - (y0 + y1) / 2) / max((y1 - y0) / 2, 0.5)
    rx = (np.arange(c0, c1) + 0.5 - (x0 + x1) / 2) / max((x1 - x0) / 2, 0.5)
    r2 = ry[:, None] ** 2 + rx[None, :] ** 2
    return np.s_[r0:r1, c0:c1], (r2 <= 1) & ((r2 >= 0.6) if form == "ring" else True)


def _render(rng: np.random.Generator, label: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Photograph the scene: class colours and textures, shading, lighting, lens blur and sensor noise; RGB uint8."""
    h, w = label.shape
    colour, amplitude = np.zeros((256, 3), np.float32), np.zeros((3, 256), np.float32)
    for name, (rgb, *amp) in APPEARANCE.items():
        colour[ID[name]], amplitude[:, ID[name]] = rgb, amp
    colour *= rng.uniform(0.92, 1.08, size=colour.shape).astype(np.float32)  # this image's variety of each class
    # Textures at three scales relative to the image, so that content looks alike at any resolution.
    texture = sum(a[label] * _smooth_noise(rng, h, w, h * s) for a, s in zip(amplitude, (1 / 300, 1 / 40, 1 / 6)))
    gradient = rng.uniform(-0.3, 0.3) * (np.arange(w, dtype=np.float32) / w - 0.5)  # sun from one side
    light = rng.uniform(0.7, 1.2) * (1 + 0.12 * _smooth_noise(rng, h, w, h / 3) + gradient)
    balance = rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    image = colour[label] * ((1 + texture + shade) * light)[..., None] * balance
    image = cv2.GaussianBlur(image, (0, 0), max(0.6, h / 1500))  # optics: no edge is perfectly sharp
    image += 1.5 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor noise
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Gaussian noise correlated over about `scale` pixels; cheap at any size since it is upsampled."""
    scale = max(scale, 2.0)  # finer than 2 px would be white noise, unlike any photograph
    coarse = rng.standard_normal((int(h / scale) + 2, int(w / scale) + 2), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _color(label: np.ndarray) -> np.ndarray:
    """The gtFine_color image of labelIds: RGBA in the label table's colours, as cityscapesscripts writes it."""
    lut = np.zeros((256, 4), np.uint8)
    for lab in labels:
        if lab.id >= 0:  # 'license plate' has id -1 and never appears in labelIds
            lut[lab.id] = (*lab.color, 255)
    return lut[label]


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError(f"cv2 could not encode {path.name}")
    write_file(path, png.tobytes(), OutputKind.PNG)
