"""Datasets beyond Cityscapes' fine train/val: the built-in layouts and an owner's own, images of any size and
JPEG, and the oracle that is not ours: mmseg's own dataset classes and loading transforms on the raw tree
give, sample by sample, exactly what the cloud's pipeline gives on the plain store (after the owner's padding).
"""

import io
import json
import re
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr
from fsspec.implementations.local import LocalFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcv.image.geometric import rescale_size
from mmengine.registry import init_default_scope
from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset
from mmseg.registry import DATASETS
from PIL import Image

from contract.bundle import verify_bundle
from contract.canonical import canonical_store_object
from contract.errors import FormatError, UserError
from contract.formats import DatasetDescription, RaggedLayout, SplitLayout, StoreAttributes, padded_size, ragged_offsets
from pipeline.bundle import publish
from pipeline.datasets import cityscapes, mmseg_palette, resolve_dataset
from pipeline.encrypt import encrypt_dataset
from pipeline.errors import OnError, PipelineError
from pipeline.headers import PNG_SIGNATURE as PNG
from pipeline.headers import header_of, read_headers
from pipeline.inputs import plan_dataset, resized
from pipeline.keys import generate
from pipeline.sample import CUSTOM_TOML, write_dataset, write_random_vit
from pipeline.weights import encrypt_checkpoint

MMSEG = {"cityscapes": CityscapesDataset, "ade20k": ADE20KDataset, "voc": PascalVOCDataset}


# --- headers -------------------------------------------------------------------------------------


def encoded(kind: str, array: np.ndarray, orientation: int = 1) -> bytes:
    """An image file of ``kind`` (PNG or JPEG), with an EXIF orientation unless 1 (Pillow writes EXIF)."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.fromarray(array).save(buffer, kind, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
@pytest.mark.parametrize("colour", ["grey", "RGB"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_header_gives_the_size_opencv_decodes_to(kind, colour, orientation):
    """EXIF orientations 5-8 turn the image: the header's size is the decoded one, as mmseg's loader sees it."""
    array = np.random.default_rng(0).integers(0, 256, (19, 37, 3) if colour == "RGB" else (19, 37), dtype=np.uint8)
    data = encoded(kind, array, orientation)
    header = header_of(data)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert (header.format, header.colour, header.depth) == (kind, colour, 8)
    assert header.size == decoded.shape[:2] == ((37, 19) if orientation in (6, 8) else (19, 37))


def test_headers_are_read_in_few_bytes_and_bad_files_are_named(tmp_path):
    """Most files in their first KiB; a JPEG with a large ICC profile in a second read; junk and truncated
    files as reasons."""
    array = np.zeros((20, 30, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", icc_profile=bytes(70_000))
    files = {
        "big-icc.jpg": buffer.getvalue(),
        "palette.png": cv2.imencode(".png", array)[1].tobytes(),
        "junk.png": b"hello",
        "cut.jpg": cv2.imencode(".jpg", array)[1].tobytes()[:30],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    found = {Path(path).name: header for path, header in read_headers(LocalFileSystem(), [str(tmp_path / n) for n in files]).items()}
    assert found["big-icc.jpg"].size == found["palette.png"].size == (20, 30)
    assert found["junk.png"] == "not a PNG or JPEG file (too short)" and found["cut.jpg"] == "cut short in its header"


# --- descriptions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MMSEG)
def test_the_built_in_descriptions_are_mmsegs(name):
    """Classes and palette as mmseg's dataset classes hold them ('bed ' included); Cityscapes' label map is the
    official table's (cityscapesscripts), ADE20K reduces the zero label."""
    description = resolve_dataset(name).description
    assert description.classes == MMSEG[name].METAINFO["classes"]
    assert [list(colour) for colour in description.palette] == MMSEG[name].METAINFO["palette"]
    assert description.reduce_zero_label is (name == "ade20k")
    if name == "cityscapes":
        from cityscapesscripts.helpers.labels import labels

        assert {raw: value for raw, value in description.label_map} == {
            label.id: label.trainId if label.trainId not in (-1, 255) else 255 for label in labels if label.id >= 0
        }


def test_the_owners_label_mapping_is_mmsegs_load_annotations(tmp_path):
    """reduce_zero_label, then the label map (a value it does not name stays): LoadAnnotations' own order."""
    init_default_scope("mmseg")
    from mmseg.datasets.transforms import LoadAnnotations

    raw = np.random.default_rng(0).integers(0, 256, (8, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "label.png"), raw)
    for reduce_zero_label, label_map in ((True, ((3, 0), (4, 255))), (False, ((0, 255), (7, 1))), (True, ())):
        description = DatasetDescription(name="x", classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)),
                                         reduce_zero_label=reduce_zero_label, label_map=label_map)  # fmt: skip
        results = dict(seg_map_path=str(tmp_path / "label.png"), reduce_zero_label=reduce_zero_label,
                       label_map=dict(label_map) or None, seg_fields=[])  # fmt: skip
        expected = LoadAnnotations()(results)["gt_seg_map"]
        assert np.array_equal(np.array(description.lookup(), np.uint8)[raw], expected)
    cityscapes_ids = cityscapes().description.raw_values()
    assert cityscapes_ids[:3] == (7, 8, 11)  # road, sidewalk, building: the trainIds' labelIds
    # what maps in the dataset's own values write where no class is: Cityscapes' 'unlabeled', ADE20K's 'other', VOC's void
    assert [resolve_dataset(name).description.unlabelled_value() for name in ("cityscapes", "ade20k", "voc")] == [0, 0, 255]
    mapped = DatasetDescription(name="x", classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)), label_map=((9, 255),))
    assert mapped.unlabelled_value() == 9


def test_a_dataset_table_describes_an_owners_dataset_over_a_built_in():
    """The sample's own [dataset] table, a table over ADE20K's layout, and what is refused."""
    custom = resolve_dataset(tomllib.loads(CUSTOM_TOML)["dataset"])
    assert (custom.name, custom.img_suffix, custom.splits) == ("streets", ".png", None)
    assert custom.description.palette == mmseg_palette(5)  # mmseg's for classes without a palette
    small = resolve_dataset({"layout": "ade20k", "name": "ade-small", "label_map": {"255": 0}})
    assert small.description.reduce_zero_label and small.splits["val"].img_dir == "images/validation"
    for table, says in (
        ({"name": "mine"}, "lacks 'classes'"),
        ({"name": "mine", "classes": ["a"], "palette": [[0, 0, 0], [1, 1, 1]]}, "1 classes but 2 palette colours"),
        ({"name": "mine", "classes": ["a"], "label_map": {"3": 9}}, "maps to 9, no class index"),
        ({"name": "mine", "classes": ["a"], "splits": {"train": {"img_dir": "../../etc"}}}, "not a relative path"),
        ({"name": "mine", "classes": ["a"], "splits": {"Train": {"img_dir": "x"}}}, "not a split name"),
        ({"layout": "coco"}, "layout 'coco' is not a built-in dataset"),
    ):
        with pytest.raises(PipelineError, match=says):
            resolve_dataset(table, "owner.toml")


def test_resize_is_mmcvs_rescale_size():
    rng = np.random.default_rng(0)
    for _ in range(200):
        size, scale = tuple(rng.integers(1, 3000, 2)), tuple(int(v) for v in rng.integers(16, 2049, 2))
        assert resized(size, scale) == rescale_size(size[::-1], scale)[::-1]


# --- the ragged layout ---------------------------------------------------------------------------


def test_a_ragged_sample_starts_on_a_chunk_of_its_shard_and_no_two_overlap():
    pixels = [250, 0, 100, 300, 99, 1]
    starts, shard_chunks = ragged_offsets(pixels, shard_size=2, chunk_pixels=100)
    assert shard_chunks == 4 and starts == [0, 300, 400, 500, 800, 900]
    for index, (start, count) in enumerate(zip(starts, pixels)):
        shard = index // 2
        assert start % 100 == 0 and shard * 400 <= start and start + count <= (shard + 1) * 400
    assert padded_size((17, 33), 16) == (32, 48) and padded_size((0, 0), 16) == (0, 0)


def test_the_closed_form_holds_a_ragged_split_to_its_layout():
    """Array metadata and split attributes that do not fit the store's ragged layout are refused."""
    layout = SplitLayout(samples=3, labelled=True, layout=RaggedLayout(chunk_pixels=256, shard_chunks=3))
    attributes = StoreAttributes(cipher=None, dataset=cityscapes().description, padded_to=16, shard_size=2, splits={"train": layout})
    split = {"zarr_format": 3, "node_type": "group", "attributes": {"names": ["a", "b", "c"], "sizes": [[16, 16], [16, 20], [16, 16]]}}
    canonical_store_object("train/zarr.json", json.dumps(split).encode(), attributes, "x")  # 1 + 2 chunks, then 1
    split["attributes"]["sizes"][0] = [33, 16]  # 3 + 2 chunks: more than a shard holds
    with pytest.raises(FormatError, match="its samples fill 5 chunks of a shard, the store's attributes say 3"):
        canonical_store_object("train/zarr.json", json.dumps(split).encode(), attributes, "x")
    array = {
        "zarr_format": 3, "node_type": "array", "shape": [2 * 3 * 768], "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3 * 768]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}}, "fill_value": 0,
        "codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [768], "codecs": [{"name": "bytes"}], "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "index_location": "end"}}],
    }  # fmt: skip
    canonical_store_object("train/images/zarr.json", json.dumps(array).encode(), attributes, "x")
    array["shape"] = [3 * 3 * 768]  # a third shard the split has no samples for
    with pytest.raises(FormatError, match="not the layout of the store's images"):
        canonical_store_object("train/images/zarr.json", json.dumps(array).encode(), attributes, "x")


def tree(tmp_path: Path, files: dict[str, np.ndarray | bytes]) -> Path:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else cv2.imencode(Path(name).suffix, content)[1].tobytes())
    return tmp_path


def plan(raw: Path, table: dict, **options):
    options = {"padded_to": 16, "shard_size": 2, "resize": None, "policy": OnError.FAIL, "storage_options": {}, **options}
    return plan_dataset(str(raw), resolve_dataset({"name": "t", "classes": ["a", "b"], **table}), **options)


def test_planning_pads_and_chooses_the_layout_per_split(tmp_path):
    """One size after padding: the fixed layout; several: ragged, chunks of the median sample."""
    raw = tree(tmp_path, {
        "img_dir/train/a.jpg": np.zeros((30, 40, 3), np.uint8), "ann_dir/train/a.png": np.zeros((30, 40), np.uint8),
        "img_dir/train/b.jpg": np.zeros((20, 33, 3), np.uint8), "ann_dir/train/b.png": np.zeros((20, 33), np.uint8),
        "img_dir/train/c.jpg": np.zeros((64, 16, 3), np.uint8), "ann_dir/train/c.png": np.zeros((64, 16), np.uint8),
        "img_dir/val/a.jpg": np.zeros((30, 40, 3), np.uint8), "img_dir/val/b.jpg": np.zeros((32, 48, 3), np.uint8),
    })  # fmt: skip
    train, val = plan(raw, {})
    assert (train.name, train.labelled, val.name, val.labelled) == ("train", True, "val", False)
    assert [s.size for s in train.samples] == [(30, 40), (20, 33), (64, 16)]
    assert train.layout.layout == RaggedLayout(chunk_pixels=32 * 48, shard_chunks=2)  # (32x48, 32x48), then 64x16
    assert val.layout.layout.kind == "fixed" and (val.layout.layout.height, val.layout.layout.width) == (32, 48)
    resized_train, _ = plan(raw, {}, resize=(20, 10))
    assert [s.size for s in resized_train.samples] == [(10, 13), (10, 17), (20, 5)]  # long edge <= 20, short <= 10


def test_planning_refuses_split_files_that_leave_the_tree_and_names_given_twice(tmp_path):
    raw = tree(tmp_path, {"images/a.jpg": np.zeros((8, 8, 3), np.uint8), "sub/a.jpg": np.zeros((8, 8, 3), np.uint8),
                          "list.txt": b"a\n../../etc/passwd\n"})  # fmt: skip
    with pytest.raises(PipelineError, match="list.txt: line 2 is not an image name inside the tree"):
        plan(raw, {"splits": {"train": {"img_dir": "images", "split_file": "list.txt"}}})
    (raw / "images" / "sub").mkdir()
    (raw / "images" / "sub" / "a.jpg").write_bytes((raw / "images" / "a.jpg").read_bytes())
    with pytest.raises(PipelineError, match="images/sub/a.jpg: a second sample named 'a' in this split"):
        plan(raw, {"splits": {"train": {"img_dir": "images"}}})
    (raw / "list.txt").write_text("a" * 300 + "\n")
    with pytest.raises(PipelineError, match="its name is no sample name"):
        plan(raw, {"splits": {"train": {"img_dir": "images", "split_file": "list.txt"}}})


# --- the oracle: mmseg's own dataset classes on the raw tree -----------------------------------------

SIZE = (96, 128)
COUNTS = {
    "cityscapes": {"train": 3, "val": 2, "test": 1, "train_extra": 2},
    "ade20k": {"train": 5, "val": 2},
    "voc": {"train": 4, "val": 3},
    "custom": {"train": 4, "val": 2},
}


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    weights = write_random_vit(root / "vit.safetensors", "vit_tiny_patch16_224")
    return encrypt_checkpoint(weights, "vit_tiny_patch16_224", None, root / "plain.safetensors")


def raw_tree(layout: str, root: Path) -> tuple[Path, object]:
    """The sample tree of ``layout`` and its dataset; ADE20K's with a photograph turned by its EXIF orientation."""
    raw = root / layout
    write_dataset(layout, raw, counts=COUNTS[layout], size=SIZE, seed=5)
    if layout == "ade20k":  # stored turned a quarter: decoders turn it back, its labels fit the turned-back image
        photo = raw / "images" / "training" / "ADE_train_00000002.jpg"
        upright = cv2.imread(str(photo), cv2.IMREAD_COLOR)[..., ::-1]
        photo.write_bytes(encoded("JPEG", np.ascontiguousarray(np.rot90(upright)), orientation=6))
    if layout == "cityscapes":  # what mmseg reads: trainIds, as its converter writes them from the official table
        table = np.array(cityscapes().description.lookup(), np.uint8)
        for label in raw.glob("gt*/*/*/*_labelIds.png"):
            cv2.imwrite(str(label).replace("_labelIds", "_labelTrainIds"), table[cv2.imread(str(label), cv2.IMREAD_UNCHANGED)])
    table = tomllib.loads(CUSTOM_TOML)["dataset"] if layout == "custom" else layout
    return raw, resolve_dataset(table)


def mmseg_dataset(layout: str, raw: Path, split: str, pipeline: list):
    """mmseg's own dataset class for the split, configured as mmseg's configs configure it."""
    if layout == "cityscapes":
        gt = "gtCoarse" if split == "train_extra" else "gtFine"
        return CityscapesDataset(data_root=str(raw), data_prefix=dict(img_path=f"leftImg8bit/{split}", seg_map_path=f"{gt}/{split}"),
                                 seg_map_suffix=f"_{gt}_labelTrainIds.png", pipeline=pipeline)  # fmt: skip
    if layout == "ade20k":
        folder = {"train": "training", "val": "validation"}[split]
        return ADE20KDataset(data_root=str(raw), data_prefix=dict(img_path=f"images/{folder}", seg_map_path=f"annotations/{folder}"), pipeline=pipeline)
    if layout == "voc":
        return PascalVOCDataset(data_root=str(raw), data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                                ann_file=f"ImageSets/Segmentation/{split}.txt", pipeline=pipeline)  # fmt: skip
    from mmseg.datasets import BaseSegDataset

    return BaseSegDataset(data_root=str(raw), data_prefix=dict(img_path=f"img_dir/{split}", seg_map_path=f"ann_dir/{split}"),
                          img_suffix=".png", seg_map_suffix=".png", metainfo=dict(classes=tomllib.loads(CUSTOM_TOML)["dataset"]["classes"]),
                          pipeline=pipeline)  # fmt: skip


def padded(array: np.ndarray, fill: int) -> np.ndarray:
    """The owner's padding: to multiples of 16 at the bottom and right."""
    height, width = padded_size(array.shape[:2], 16)
    pad = ((0, height - array.shape[0]), (0, width - array.shape[1])) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad, constant_values=fill)


def assert_the_cloud_loads_what_mmseg_loads(layout: str, raw: Path, dataset, root: Path, checkpoint: Path, scheduler: str, resize=None) -> None:
    init_default_scope("mmseg")
    store, bundle = root / "store.zarr", root / "bundle"
    encrypt_dataset(str(raw), str(store), None, workers=1, dataset=dataset, resize=resize, scheduler=scheduler, shard_size=2)
    publish(str(store), str(checkpoint), str(bundle), generate())
    digest = verify_bundle(str(bundle)).manifest_sha256
    loading = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    if resize:
        loading.append(dict(type="Resize", scale=resize, keep_ratio=True))
    for split, count in COUNTS[layout].items():
        if not count or split == "test":  # Cityscapes' test split is stored without labels
            continue
        ours = DATASETS.build(dict(type="ZarrSegDataset", bundle=str(bundle), manifest_sha256=digest, split=split,
                                   pipeline=[dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations")]))  # fmt: skip
        theirs = mmseg_dataset(layout, raw, split, loading)
        assert len(ours) == len(theirs) == count
        assert ours.metainfo["classes"] == tuple(theirs.metainfo["classes"])
        assert ours.metainfo["palette"] == [list(c) for c in theirs.metainfo["palette"]]
        assert ours.metainfo["reduce_zero_label"] == theirs.reduce_zero_label
        expected = {}
        for i in range(len(theirs)):
            sample = theirs[i]
            name = Path(sample["img_path"]).name.removesuffix(theirs.img_suffix)
            expected[name] = (padded(sample["img"][..., ::-1], 0), padded(sample["gt_seg_map"], 255))  # mmseg loads BGR
        for i in range(len(ours)):
            sample = ours[i]
            image, label = expected[sample["img_path"]]
            assert np.array_equal(sample["img"], image), (layout, split, sample["img_path"])
            assert np.array_equal(sample["gt_seg_map"], label), (layout, split, sample["img_path"])


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(COUNTS))
def test_the_plain_store_through_the_clouds_pipeline_is_mmsegs_dataset_on_the_raw_tree(layout, tmp_path, plain_checkpoint, dask_scheduler):
    """0 differing pixels, every sample of every labelled split: images of many sizes and JPEG (ADE20K, VOC),
    PNG of many sizes (the owner's own), palette labels and split files (VOC), reduce_zero_label (ADE20K),
    the label map and gtCoarse's train_extra (Cityscapes), and an EXIF-turned photograph."""
    raw, dataset = raw_tree(layout, tmp_path)
    assert_the_cloud_loads_what_mmseg_loads(layout, raw, dataset, tmp_path, plain_checkpoint, dask_scheduler)
    if layout != "cityscapes":
        store = zarr.open_group(str(tmp_path / "store.zarr"), mode="r")
        assert store["train/images"].ndim == 1  # many sizes: ragged


@pytest.mark.slow
def test_the_owners_resizing_is_mmsegs_resize(tmp_path, plain_checkpoint, dask_scheduler):
    """--resize in mmseg's scale notation: mmseg's Resize(scale, keep_ratio=True) on the raw tree, to the pixel."""
    raw, dataset = raw_tree("ade20k", tmp_path)
    assert_the_cloud_loads_what_mmseg_loads("ade20k", raw, dataset, tmp_path, plain_checkpoint, dask_scheduler, resize=(60, 30))


def test_a_label_value_that_is_no_class_is_named(tmp_path, dask_scheduler):
    """The owner's check mmseg does not make: a stored label is a class index or the ignore index."""
    raw = tree(tmp_path / "raw", {"img_dir/train/a.png": np.zeros((8, 8, 3), np.uint8), "ann_dir/train/a.png": np.full((8, 8), 7, np.uint8)})
    dataset = resolve_dataset({"name": "t", "classes": ["a", "b"], "img_suffix": ".png"})
    with pytest.raises(PipelineError, match=re.escape(f"{raw}/ann_dir/train/a.png: label value 7 is none of the 2 classes'")):
        encrypt_dataset(str(raw), str(tmp_path / "s.zarr"), None, workers=1, dataset=dataset, scheduler=dask_scheduler)


def test_the_cloud_refuses_a_model_of_other_classes_and_windows_that_cut_blocks():
    """What mmseg would find late (a loss or metric failing deep inside) or never (misaligned windows turn
    encrypted blocks into noise): refused before the first step."""
    from types import SimpleNamespace

    from training.hooks import check_classes, inference_problems

    ade20k = resolve_dataset("ade20k").description
    check_classes(SimpleNamespace(num_classes=150), ade20k, "the bundle b")
    with pytest.raises(UserError, match="the model predicts 19 classes, but the bundle b holds ade20k with 150: set num_classes=150"):
        check_classes(SimpleNamespace(num_classes=19), ade20k, "the bundle b")
    cipher = generate().spec()
    slide = dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    assert "cuts the encrypted images' 16x16 blocks" in inference_problems(slide, cipher)[0]
    assert inference_problems(slide, None) == inference_problems(dict(slide, stride=(336, 336)), cipher) == []
    assert inference_problems(dict(mode="whole"), cipher) == []


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400) | st.binary(max_size=300).map(lambda b: b"\xff\xd8" + b) | st.binary(max_size=300).map(lambda b: PNG + b))
def test_a_hostile_header_is_a_reason_never_a_crash(data):
    """Whatever a file holds, its header is read within bounds: a Header or a reason."""
    found = header_of(data)
    assert isinstance(found, str) or found.height * found.width < 1 << 32


@pytest.mark.slow
def test_a_ragged_store_resumes_repairs_and_skips_like_a_fixed_one(tmp_path, dask_scheduler, plain_checkpoint):
    """A damaged shard of a ragged split is written again, alone; a sample skipped while planning takes no
    space and the cloud's dataset leaves it out; a run with another resizing is refused."""
    raw, dataset = raw_tree("ade20k", tmp_path)
    broken = raw / "annotations" / "training" / "ADE_train_00000004.png"
    broken.write_bytes(b"not a png")
    store = tmp_path / "store.zarr"
    run = dict(workers=1, dataset=dataset, scheduler=dask_scheduler, shard_size=2)
    summary = encrypt_dataset(str(raw), str(store), None, on_error=OnError.SKIP, **run)
    assert [skip.name for skip in summary.skipped] == ["ADE_train_00000004"]
    attributes = StoreAttributes.parse(dict(zarr.open_group(str(store), mode="r").attrs), "store")
    sizes = zarr.open_group(str(store), mode="r")["train"].attrs["sizes"]
    assert sizes[3] == [0, 0] and attributes.splits["train"].ragged
    shard = store / attributes.shard_object("train", "images", 1)
    before = shard.read_bytes()
    shard.write_bytes(before[:-5] + b"\0" * 5)  # its index damaged
    again = encrypt_dataset(str(raw), str(store), None, on_error=OnError.SKIP, **run)
    assert (again.shards_written, again.shards_reused) == (1, 3) and shard.read_bytes() == before
    with pytest.raises(PipelineError, match="written with another resize than this run's"):
        encrypt_dataset(str(raw), str(store), None, on_error=OnError.SKIP, resize=(64, 32), **run)
    publish(str(store), str(plain_checkpoint), str(tmp_path / "bundle"), generate())
    init_default_scope("mmseg")
    config = dict(type="ZarrSegDataset", bundle=str(tmp_path / "bundle"), split="train", pipeline=[],
                  manifest_sha256=verify_bundle(str(tmp_path / "bundle")).manifest_sha256)  # fmt: skip
    cloud = DATASETS.build(config)
    assert [cloud.get_data_info(i)["img_path"] for i in range(len(cloud))] == [f"ADE_train_{i:08d}" for i in (1, 2, 3, 5)]
    with pytest.raises(UserError, match="sets reduce_zero_label, but .* says what its labels mean: .*ade20k, 150 classes"):
        DATASETS.build(dict(config, reduce_zero_label=False))  # what the owner stored is what the labels mean
