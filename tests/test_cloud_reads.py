"""The cloud trains on exactly what it verified: whatever the config or --cfg-options say, a run reads the
verified bundle alone (its manifest pinned, every object checked again when first read), a signer in the
config counts, and an older publication than one accepted before is refused (freshness)."""

import hashlib
import json
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from contract.bundle import CHECKPOINT, DATASET, MANIFEST, verify_bundle
from contract.errors import UserError
from contract.formats import ModelProvenance
from contract.freshness import STATE_FILE, accept
from contract.signing import save_signer
from pipeline.bundle import publish
from pipeline.keys import generate
from training import test as test_cli
from training import train as train_cli
from training.loaders import load_from_safetensors, with_digest

pytest_plugins = ["training_fixtures"]

CONFIG = str(Path(__file__).parents[1] / "training" / "configs" / "tiny" / "setr_tiny_naive_proposed.py")
SHARD = "train/images/c/0/0/0/0"


def run(main, argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    return code, lines[-1] if lines else ""


def digest(bundle: Path) -> str:
    return hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()


def dataset(bundle: Path, manifest_sha256: str):
    init_default_scope("mmseg")
    pipeline = [dict(type="LoadZarrImage"), dict(type="LoadZarrAnnotations")]
    return DATASETS.build(
        dict(type="ZarrSegDataset", bundle=str(bundle), manifest_sha256=manifest_sha256, split="train", pipeline=pipeline)
    )


@pytest.fixture
def bundle(owner, tmp_path):
    """A copy of the owner's encrypted bundle, for this test to change."""
    return Path(shutil.copytree(owner.bundles["encrypted"], tmp_path / "bundle"))


# --- the run reads the verified bundle alone -------------------------------------------------------


@pytest.mark.parametrize(
    "options, says",
    [
        (["train_dataloader.dataset.bundle={other}"], "train dataset reads {other}, not the verified bundle"),
        (["val_dataloader.dataset.bundle={other}"], "val dataset reads {other}, not the verified bundle"),
        (["model.backbone.init_cfg.checkpoint={encrypted}/backbone.safetensors"], "not the verified bundle's checkpoint"),
        (["load_from={other}/backbone.safetensors"], "load_from .*: outside the verified bundle and the work directory"),
        (["train_dataloader.dataset.store={other}/dataset.zarr"], "'store' is no setting of ZarrSegDataset"),
        (["train_cfg.type=IterBasedTrainLoop"], "not of a verified bundle: cipherseg's loops"),
    ],
    ids=["train-data", "val-data", "pretrained-checkpoint", "load-from", "old-store-setting", "another-loop"],
)
@pytest.mark.slow  # a training run's set-up each: ~5 s
def test_overrides_cannot_make_a_run_read_another_bundle(owner, bundle, tmp_path, capsys, options, says):
    """Verify A, read B: every way a config or --cfg-options could point a run elsewhere is one line, exit 2."""
    other = owner.bundles["plain"]  # a valid bundle of the same owner, of other data
    encrypted = owner.encrypted  # the owner's encrypted checkpoint, as it is before publishing
    argv = [CONFIG, "--bundle", bundle, "--signer", owner.signer, "--work-dir", tmp_path / "w",
            "--cfg-options", f"experiment_name={uuid.uuid4().hex}", *(o.format(other=other, encrypted=encrypted) for o in options)]  # fmt: skip
    code, err = run(train_cli.main, argv, capsys)
    assert code == 2 and re.search(says.format(other=re.escape(str(other))), err), err
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").rglob("*.pth"))


def test_a_signer_in_the_config_counts_like_the_option(owner, bundle, tmp_path, capsys):
    """--cfg-options signer=FILE of another owner refuses the bundle; a different --signer and config signer clash."""
    other = save_signer(generate().signer(), tmp_path / "other-signer.json")
    options = ["--cfg-options", f"signer={other}", f"experiment_name={uuid.uuid4().hex}"]
    code, err = run(train_cli.main, [CONFIG, "--bundle", bundle, "--work-dir", tmp_path / "w", *options], capsys)
    assert code == 2 and "not signed by owner" in err
    argv = [CONFIG, "--bundle", bundle, "--signer", owner.signer, "--cfg-options", f"signer={other}"]
    code, err = run(train_cli.main, argv, capsys)
    assert code == 2 and "--signer" in err and "differ" in err


def test_a_shard_swapped_after_verification_stops_the_loader(owner, bundle):
    """Verified, then a shard changed in place (the same size): the first read of it in another process
    hashes it against the pinned manifest and refuses."""
    pinned = verify_bundle(str(bundle), signer=owner.key.signer()).manifest_sha256
    data = dataset(bundle, pinned)
    first = data[0]["img"]
    fresh = dataset(bundle, pinned)  # another process' view: nothing checked yet
    shard = bundle / DATASET / SHARD
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{SHARD}: changed since the bundle was verified"):
        fresh[0]
    assert first.shape == (*owner.size, 3)


def test_a_manifest_changed_after_verification_stops_the_dataset(owner, bundle):
    pinned = verify_bundle(str(bundle), signer=owner.key.signer()).manifest_sha256
    (bundle / MANIFEST).write_bytes((bundle / MANIFEST).read_bytes() + b" ")
    with pytest.raises(UserError, match="manifest.json: changed since the bundle was verified"):
        dataset(bundle, pinned)


def test_a_checkpoint_changed_after_verification_is_refused_by_the_loader(owner, bundle):
    entry = verify_bundle(str(bundle), signer=owner.key.signer()).manifest.objects[CHECKPOINT]
    pinned = with_digest(str(bundle / CHECKPOINT), entry.sha256)
    assert set(load_from_safetensors(pinned)["state_dict"])
    data = bytearray((bundle / CHECKPOINT).read_bytes())
    data[-1] ^= 1
    (bundle / CHECKPOINT).write_bytes(bytes(data))
    with pytest.raises(UserError, match="changed since the bundle was verified"):
        load_from_safetensors(pinned)


def test_a_store_read_from_memory_equals_the_store(owner, bundle):
    """The verifying store serves what zarr asks for (whole objects, byte ranges of shards) exactly."""
    import zarr

    data = dataset(bundle, digest(bundle))
    plain = zarr.open_group(str(bundle / DATASET), mode="r")["train"]
    for i in range(len(data)):
        sample = data[i]
        assert np.array_equal(sample["img"], plain["images"][i])
        assert np.array_equal(sample["gt_seg_map"], plain["labels"][i])


# --- freshness -------------------------------------------------------------------------------------


def republished(owner, bundle: Path) -> None:
    """The owner publishes the same data again into ``bundle``: one publication later."""
    publish(str(owner.encrypted / "dataset.zarr"), str(owner.encrypted / "backbone.safetensors"), str(bundle), owner.key)


def test_accept_refuses_a_rollback_and_records_the_newest(owner, bundle, tmp_path):
    state = tmp_path / "work" / STATE_FILE
    old = verify_bundle(str(bundle), signer=owner.key.signer())
    saved = tmp_path / "publication-1"
    shutil.copytree(bundle, saved)
    republished(owner, bundle)
    new = verify_bundle(str(bundle), signer=owner.key.signer())
    assert (old.manifest.sequence, new.manifest.sequence) == (1, 2)
    assert accept(new, state) == 1
    assert json.loads(state.read_bytes())["accepted"] == {f"{new.signer} {bundle.resolve()}": 2}
    shutil.rmtree(bundle)
    shutil.copytree(saved, bundle)  # an attacker serves the older, validly signed publication
    rolled_back = verify_bundle(str(bundle), signer=owner.key.signer())
    with pytest.raises(UserError, match="publication 1 of this bundle, older than publication 2 accepted before .*--min-sequence 1"):
        accept(rolled_back, state)
    assert accept(rolled_back, state, min_sequence=1) == 1  # the operator's explicit choice
    assert json.loads(state.read_bytes())["accepted"][f"{new.signer} {bundle.resolve()}"] == 2  # never lowered
    assert accept(verify_bundle(str(bundle)), state) is None  # integrity only: no sequence worth keeping


@pytest.mark.slow  # three evaluations: ~19 s (accept() itself is tested above)
def test_the_cloud_refuses_a_rollback_and_min_sequence_overrides(owner, bundle, tmp_path, capsys):
    """training.test on publication 2 records it; publication 1 served again at the same place is refused,
    unless --min-sequence 1 says it is wanted."""
    work = tmp_path / "work"
    saved = Path(shutil.copytree(bundle, tmp_path / "publication-1"))
    republished(owner, bundle)
    model = tmp_path / "model.pth"  # a model (untrained) that reads the bundle's data: its provenance says so
    provenance = ModelProvenance(cipher=owner.key.spec(), normalization=owner.cloud, method="proposed")
    torch.save({"state_dict": {}, "meta": {ModelProvenance.META_KEY: provenance.to_json()}}, model)

    def test(*options) -> tuple[int, str]:
        argv = [CONFIG, model, "--bundle", bundle, "--signer", owner.signer, "--work-dir", work, "--out", tmp_path / "m.json",
                *options, "--cfg-options", f"experiment_name={uuid.uuid4().hex}"]  # fmt: skip
        return run(test_cli.main, argv, capsys)

    assert test()[0] == 0 and json.loads((work / STATE_FILE).read_bytes())["accepted"]
    shutil.rmtree(bundle)
    shutil.copytree(saved, bundle)  # publication 1, validly signed, where publication 2 was
    code, err = test()
    assert code == 2 and "publication 1 of this bundle, older than publication 2 accepted before" in err
    assert test("--min-sequence", "1")[0] == 0

