"""The full-size configs (the paper's settings) hold what each method of Table I needs, and every config
resolves to the settings frozen in tests/config_digests.json."""

import json
from pathlib import Path

import pytest
import torch

from mmengine.registry import init_default_scope
from mmseg.registry import MODELS, TRANSFORMS

from config_digests import DIGESTS, digests
from contract.registry import METHODS
from training.config import load_config
from training.transforms import key_unsafe_transforms

CONFIGS = sorted((Path(__file__).parents[1] / "training" / "configs").glob("setr_vit-*.py"))
BACKBONES = {"b16": (768, 12, 12), "l16": (1024, 24, 16)}  # embed dims, layers, heads


def describe(path: Path) -> tuple[str, str, str]:
    """(backbone, decoder, method) of setr_vit-<backbone>_<decoder>_8xb1-80k_cityscapes-768x768_<method>.py"""
    backbone, decoder, *_ = path.stem.removeprefix("setr_vit-").split("_")
    return backbone, decoder, path.stem.split("768x768_", 1)[1]


def test_every_backbone_decoder_and_method_has_a_config():
    found = {describe(path) for path in CONFIGS}
    for backbone in BACKBONES:
        for decoder in ("naive", "pup", "mla"):
            for method in ("baseline", "conventional1", "conventional2", "proposed"):
                assert (backbone, decoder, method) in found


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_holds_the_papers_settings_and_its_methods_needs(path):
    backbone, decoder, method = describe(path)
    cfg = load_config(path, "s3://bucket/bundle")
    # One setting names the bundle; cipherseg's loops (which mmseg's tools build too) resolve every path from it.
    assert cfg.bundle == "s3://bucket/bundle"
    assert (cfg.train_cfg.type, cfg.val_cfg.type, cfg.test_cfg.type) == (
        "CipherSegIterBasedTrainLoop", "CipherSegValLoop", "CipherSegTestLoop"
    )
    vit, preprocessor = cfg.model.backbone, cfg.model.data_preprocessor
    assert (vit.embed_dims, vit.num_layers, vit.num_heads) == BACKBONES[backbone]
    assert vit.patch_size == 16 and vit.patch_bias  # the fold needs the patch embedding's bias
    # RGB as stored, and one mean and std for every channel: the fold is then a signed permutation.
    assert not preprocessor.bgr_to_rgb
    assert preprocessor.mean == preprocessor.std == [127.5] * 3
    assert vit.init_cfg.checkpoint == "{bundle}/backbone.safetensors" or method == "conventional2"
    assert cfg.train_dataloader.dataset.bundle == cfg.test_dataloader.dataset.bundle == "{bundle}"
    assert cfg.crop_size == (768, 768) and cfg.train_cfg.max_iters == 80000
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(768, 768), stride=(512, 512))
    assert cfg.optim_wrapper.optimizer.lr == (0.002 if decoder == "mla" else 0.01)
    hook, = (h for h in cfg.custom_hooks if h.type == "CipherSegCheckHook")
    # Conventional 1 is not trained in the cloud: its config trains the baseline, which the owner encrypts.
    paper_method = METHODS[method.removesuffix("_paper-augmentation")]
    trained_as = paper_method if paper_method.trained_in_cloud else METHODS["baseline"]
    assert (hook.data, hook.checkpoint) == (trained_as.data, trained_as.checkpoint)

    init_default_scope("mmseg")
    pipeline = [TRANSFORMS.build(t) for t in cfg.train_dataloader.dataset.pipeline]
    for negative_positive in (False, True):  # both key options train with the shipped configs
        unsafe = key_unsafe_transforms(pipeline, 16, negative_positive)
        if method == "proposed_paper-augmentation":
            assert unsafe and cfg.train_dataloader.dataset.allow_key_unsafe_transforms
        else:
            assert unsafe == []


@pytest.mark.parametrize("backbone", [pytest.param(b, marks=pytest.mark.slow) if b == "l16" else b for b in BACKBONES])  # ViT-L: ~9 s each
@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
def test_the_models_segment_with_a_patch_embedding_the_key_folds_into(backbone, decoder):
    path, = (p for p in CONFIGS if describe(p) == (backbone, decoder, "proposed"))
    init_default_scope("mmseg")
    model = MODELS.build(load_config(path, "bundle").model).eval()
    embedding = model.backbone.patch_embed.projection  # one 16x16 block per token, with the bias the fold needs
    assert (embedding.kernel_size, embedding.stride, embedding.bias is not None) == ((16, 16), (16, 16), True)
    assert len(model.backbone.layers) == BACKBONES[backbone][1]
    # Every head reads the backbone's width: a 64x64 image becomes 19 class scores per pixel.
    with torch.no_grad():
        scores = model.encode_decode(torch.zeros(1, 3, 64, 64), [dict(img_shape=(64, 64))])
    assert scores.shape == (1, 19, 64, 64)


@pytest.mark.slow  # 150 configs resolved by mmengine: ~25 s
def test_every_config_resolves_to_its_frozen_settings():
    """Where a setting is written (which file, inherited or overridden) may change; what a config resolves to
    may not, but deliberately: then `python tests/config_digests.py` freezes the new settings."""
    configs = Path(__file__).parents[1] / "training" / "configs"
    frozen = json.loads(DIGESTS.read_text())
    found = digests(configs)
    assert found.keys() == frozen.keys()
    assert [name for name in frozen if found[name] != frozen[name]] == []


ROOT = Path(__file__).parents[1] / "training" / "configs"


def heads(model) -> list:
    auxiliary = model.get("auxiliary_head") or []
    return [model.decode_head, *(auxiliary if isinstance(auxiliary, list) else [auxiliary])]


@pytest.mark.slow  # 68 configs resolved by mmengine: ~5 s
def test_the_ade20k_configs_are_mmsegs_ade20k_settings_on_the_bundle():
    """Every tiny config has its ADE20K twin of the same name; the full ones are mmseg's ADE20K configs of SETR
    (ViT-L/16) and of each segmentor beyond SETR, four methods each. All predict ADE20K's 150 classes, crop
    as mmseg does (640x640 for BEiT), slide on block-aligned windows, and keep every pipeline key-safe."""
    tiny = {p.name for p in (ROOT / "tiny").glob("*.py") if "paper-augmentation" not in p.name}
    assert {p.name for p in (ROOT / "tiny" / "ade20k").glob("*.py")} == tiny
    full = sorted((ROOT / "ade20k").glob("*.py"))
    models = {p.stem.rsplit("_", 1)[0] for p in full}
    assert models == {f"setr_vit-l16_{d}_8xb2-160k_ade20k-512x512" for d in ("naive", "pup", "mla")} | {
        "segmenter_vit-b16_mask_8xb1-160k_ade20k-512x512", "upernet_vit-b16_mln_8xb2-160k_ade20k-512x512",
        "dpt_vit-b16_project_8xb2-160k_ade20k-512x512", "beit-b16_upernet_8xb2-160k_ade20k-640x640"}  # fmt: skip
    init_default_scope("mmseg")
    for path in [*full, *sorted((ROOT / "tiny" / "ade20k").glob("*.py"))]:
        cfg = load_config(path, "bundle")
        crop = (64, 64) if "tiny" in path.parts else (640, 640) if "640x640" in path.name else (512, 512)
        assert all(head.num_classes == 150 for head in heads(cfg.model)), path.name
        assert cfg.crop_size == crop and cfg.model.data_preprocessor.size == crop, path.name
        test_cfg = cfg.model.test_cfg
        assert test_cfg.mode == "whole" or all(side % 16 == 0 for side in (*test_cfg.crop_size, *test_cfg.stride)), path.name
        if "tiny" not in path.parts:
            assert cfg.model.backbone.img_size == crop and cfg.train_cfg.max_iters == 160000, path.name
            assert cfg.train_dataloader.batch_size == (1 if path.name.startswith("segmenter") else 2), path.name
        method = path.stem.rsplit("_", 1)[1]
        hook, = (h for h in cfg.custom_hooks if h.type == "CipherSegCheckHook")
        trained_as = METHODS[method] if METHODS[method].trained_in_cloud else METHODS["baseline"]
        assert (hook.data, hook.checkpoint) == (trained_as.data, trained_as.checkpoint), path.name
        pipeline = [TRANSFORMS.build(t) for t in cfg.train_dataloader.dataset.pipeline]
        assert key_unsafe_transforms(pipeline, 16, False) == key_unsafe_transforms(pipeline, 16, True) == [], path.name


TINY = sorted(p for p in (ROOT / "tiny").rglob("*.py") if "_base_" not in p.parts)


@pytest.mark.parametrize("path", TINY, ids=lambda path: path.stem)
def test_tiny_windows_overlap_on_whole_blocks(path):
    """Slide inference overlaps its windows (windows that only touch leave seams in the maps at their edges),
    and every window starts on a block boundary (a window cutting blocks would read ciphertext as noise)."""
    cfg = load_config(path, "bundle")
    test_cfg, block = cfg.model.test_cfg, cfg.model.backbone.patch_size
    assert test_cfg.mode == "slide"
    for window, stride in zip(test_cfg.crop_size, test_cfg.stride):
        assert stride < window and stride % block == 0 and window % block == 0
