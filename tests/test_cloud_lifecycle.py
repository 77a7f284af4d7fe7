"""The cloud's whole journey with a bundle, as a new user follows the README: train, resume, test, export,
predict, and the model back to its owner; with each key option, and what is refused along the way."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import mmseg
import numpy as np
import pytest
import torch
import zarr
from mmengine.logging import MMLogger
from safetensors import safe_open

from contract.formats import BundleReference, ModelProvenance
from pipeline import run as owner_cli
from pipeline.keys import generate, save
from pipeline.query import encrypt_queries, write_rgb
from training import export, predict, test, train
from training.loaders import load_from_pth
from training.inference import Segmenter
from training.transforms import contrast_about_grey

pytest_plugins = ["training_fixtures"]

CONFIGS = Path(__file__).parents[1] / "training" / "configs" / "tiny"
PROPOSED, BASELINE = str(CONFIGS / "setr_tiny_naive_proposed.py"), str(CONFIGS / "setr_tiny_naive_baseline.py")
ITERS = 4


@pytest.fixture(scope="module")
def other(keyed_bundle, tmp_path_factory):
    """The same images published by another owner, with another key."""
    return keyed_bundle(tmp_path_factory.mktemp("other"), generate())


@pytest.fixture(scope="module")
def trained(owner, tmp_path_factory):
    """The proposed method trained in two sessions (the second resumes), through the command line."""
    work_dir = tmp_path_factory.mktemp("cloud") / "work"
    common = ["--bundle", str(owner.bundles["encrypted"]), "--signer", str(owner.signer), "--work-dir", str(work_dir)]
    assert train.main([PROPOSED, *common, "--cfg-options", f"train_cfg.max_iters={ITERS // 2}"]) == 0
    assert train.main([PROPOSED, *common, "--resume", "--cfg-options", f"train_cfg.max_iters={ITERS}",
                       f"param_scheduler.0.end={ITERS}"]) == 0  # fmt: skip
    return work_dir / f"iter_{ITERS}.pth"


def run_cli(command, argv, capsys) -> tuple[int, str]:
    """Exit code and the report line (the last line on stderr: in-process, mmengine's loggers may write
    there too; that the report is the only line is checked in a subprocess below)."""
    code = command.main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    return code, lines[-1] if lines else ""


# --- train, test, export -----------------------------------------------------------------------


def test_every_checkpoint_records_its_provenance(owner, trained):
    """What the model reads, the method, and the very publication of the bundle it was trained on."""
    meta = load_from_pth(str(trained))["meta"]
    provenance = ModelProvenance.parse(meta[ModelProvenance.META_KEY], "meta")
    bundle = owner.bundles["encrypted"]
    manifest = (bundle / "manifest.json").read_bytes()
    assert provenance == ModelProvenance(
        cipher=owner.key.spec(),
        normalization=owner.cloud,
        method="proposed",
        bundle=BundleReference(
            location=str(bundle),
            manifest_sha256=hashlib.sha256(manifest).hexdigest(),
            sequence=json.loads(manifest)["sequence"],
            signer=owner.key.signer().fingerprint,
        ),
    )
    assert ModelProvenance.META_KEY in load_from_pth(str(trained.parent / f"iter_{ITERS // 2}.pth"))["meta"]


def test_test_verifies_and_evaluates(owner, trained, capsys):
    out = trained.parent / "metrics.json"
    code, _ = run_cli(test, [PROPOSED, trained, "--bundle", owner.bundles["encrypted"], "--signer", owner.signer, "--out", out], capsys)
    assert code == 0
    metrics = json.loads(out.read_text())
    assert {"aAcc", "mIoU", "mAcc"} <= metrics.keys() and len(metrics["per_class"]) == 19
    # Which publication the model was trained on and which it was tested on: here the same one.
    digest = hashlib.sha256((owner.bundles["encrypted"] / "manifest.json").read_bytes()).hexdigest()
    assert metrics["trained_on"] == metrics["tested_on"] and metrics["tested_on"]["manifest_sha256"] == digest


def test_test_and_predict_refuse_what_is_not_the_models(owner, other, trained, tmp_path, capsys):
    # A bundle of another key: the model reads other data.
    code, err = run_cli(test, [PROPOSED, trained, "--bundle", other.bundle, "--signer", other.signer], capsys)
    assert code == 2 and owner.key.key_id in err and other.key.key_id in err
    # ... and a bundle not signed by the owner named.
    code, err = run_cli(test, [PROPOSED, trained, "--bundle", other.bundle, "--signer", owner.signer], capsys)
    assert code == 2 and "not signed by owner" in err
    # A checkpoint that records no provenance.
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": load_from_pth(str(trained))["state_dict"]}, bare)
    code, err = run_cli(test, [PROPOSED, bare, "--bundle", owner.bundles["encrypted"]], capsys)
    assert code == 2 and "records no provenance" in err

    image = np.random.default_rng(0).integers(0, 256, (*owner.size, 3), dtype=np.uint8)
    plain = write_rgb(tmp_path / "plain.png", image)
    (theirs,) = encrypt_queries([plain], other.key, tmp_path / "theirs")
    out = tmp_path / "out"
    for query, words in ((theirs, f"a query of key id {other.key.key_id}"), (plain, "names no key")):
        code, err = run_cli(predict, [PROPOSED, trained, "--bundle", owner.bundles["encrypted"], "--inputs", query, "--out", out], capsys)
        assert code == 2 and words in err and owner.key.key_id in err, err
    # A query of the model's key, but a bundle of another: the model does not read that bundle's data.
    (mine,) = encrypt_queries([plain], owner.key, tmp_path / "mine")
    code, err = run_cli(predict, [PROPOSED, trained, "--bundle", other.bundle, "--inputs", mine, "--out", out], capsys)
    assert code == 2 and owner.key.key_id in err and other.key.key_id in err
    assert not out.exists()  # refused before anything was written


def test_a_corrupt_query_is_one_line(owner, trained, tmp_path, capfd):
    image = np.random.default_rng(0).integers(0, 256, (*owner.size, 3), dtype=np.uint8)
    query = write_rgb(tmp_path / "query.png", image, owner.key.spec())
    query.write_bytes(query.read_bytes()[:200])  # the header and the tag survive: found when decoding
    MMLogger.get_instance(uuid.uuid4().hex)  # mmengine logs to its latest logger: one on today's streams, as in a new process
    code = predict.main([str(a) for a in (PROPOSED, trained, "--bundle", owner.bundles["encrypted"], "--inputs", query, "--out", tmp_path / "out")])
    lines = capfd.readouterr().err.strip().splitlines()  # OpenCV writes to the process's stderr, not Python's
    assert code == 2 and lines[-1] == f"error: {query}: not a readable image"
    assert not any("WARN" in line for line in lines), lines


def test_predict_takes_files_folders_and_globs_and_writes_cityscapes_maps(owner, trained, tmp_path, capsys):
    """The user encrypts queries with the key; the cloud, without it, segments them exactly as it segments
    the same images from the bundle, and writes trainIds, labelIds and colours."""
    store = zarr.open_group(owner.bundles["encrypted"] / "dataset.zarr", mode="r")["val"]
    names = store.attrs["names"]
    plains = [next((owner.raw / "leftImg8bit" / "val").glob(f"*/{name}_leftImg8bit.png")) for name in names]
    encrypt_queries(plains[:1], owner.key, tmp_path / "queries")
    encrypt_queries(plains[1:], owner.key, tmp_path / "more")
    out = tmp_path / "out"
    inputs = [tmp_path / "queries", str(tmp_path / "more" / "*.png")]
    code, _ = run_cli(predict, [PROPOSED, trained, "--bundle", owner.bundles["encrypted"], "--inputs", *inputs, "--out", out, "--legend"], capsys)
    assert code == 0
    from cityscapesscripts.helpers.labels import trainId2label

    model = model_of(PROPOSED, owner.bundles["encrypted"], trained)
    for i, plain in enumerate(plains):
        stem = plain.name.removesuffix(".png")
        train_ids = cv2.imread(str(out / "trainIds" / f"{stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(train_ids, segment(model, store["images"][i]))  # as the bundle's own ciphertext
        label_ids = cv2.imread(str(out / "labelIds" / f"{stem}_labelIds.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(label_ids, np.vectorize(lambda t: trainId2label[t].id)(train_ids))
        assert cv2.imread(str(out / "color" / f"{stem}_color.png")).shape == (*owner.size, 3)
    assert cv2.imread(str(out / "legend.png")).shape[0] == 19 * 24


def model_of(config: str, bundle: Path, checkpoint: Path) -> Segmenter:
    from training.config import load_config

    return Segmenter(load_config(config, str(bundle), work_dir=checkpoint.parent / "predict"), str(checkpoint), "cpu")


def segment(model: Segmenter, image: np.ndarray) -> np.ndarray:
    return model.segment([image])[0]


def test_the_model_goes_back_to_its_owner(owner, trained, tmp_path, capsys):
    """decrypt-weights turns the cloud's exported model into a plain one that predicts on plain images exactly
    what the cloud's model predicts on the encrypted ones: not one pixel differs. The training checkpoint
    itself (a pickle the cloud wrote) is refused: the owner never unpickles what the cloud wrote."""
    source = tmp_path / "model.safetensors"
    assert export.main([str(trained), "--out", str(source)]) == 0
    with safe_open(source, framework="pt") as f:
        assert json.loads(f.metadata()["encrypted"]) is True and f.metadata()["key_id"] == owner.key.key_id
    plain_model = tmp_path / "plain.safetensors"
    key = save(owner.key, tmp_path / "owner" / "key.json")
    code, err = run_cli(owner_cli, ["--stage", "decrypt-weights", "--key", key, "--checkpoint", trained, "--out", plain_model], capsys)
    assert code == 2 and "an mmengine training checkpoint: the cloud turns it into safetensors with python -m training.export" in err
    assert not plain_model.exists()
    assert owner_cli.main(["--stage", "decrypt-weights", "--key", str(key), "--checkpoint", str(source), "--out", str(plain_model)]) == 0

    cloud = model_of(PROPOSED, owner.bundles["encrypted"], trained)
    mine = model_of(BASELINE, owner.bundles["plain"], plain_model)
    encrypted = zarr.open_group(owner.bundles["encrypted"] / "dataset.zarr", mode="r")["val/images"]
    plain = zarr.open_group(owner.bundles["plain"] / "dataset.zarr", mode="r")["val/images"]
    for i in range(encrypted.shape[0]):
        assert np.count_nonzero(segment(mine, plain[i]) != segment(cloud, encrypted[i])) == 0


def run_test(argv, capsys) -> dict:
    """training.test's metrics, as its JSON file has them."""
    out = Path(argv[argv.index("--work-dir") + 1]) / "metrics.json"
    code, err = run_cli(test, [*argv, "--out", out], capsys)
    assert code == 0, err
    return json.loads(out.read_text())


@pytest.mark.slow  # predict, cityscapesscripts' own command line, and three evaluations: ~40 s
def test_cityscapes_own_evaluation_reads_predict_as_it_is_and_agrees_with_training_test(owner, trained, tmp_path, capsys):
    """cityscapesscripts' evaluation, run as the benchmark runs it (its command line, the raw ground truth),
    on predict's labelIds folder as it is, gives the mIoU training.test gives, and training.test's
    --metric cityscapes; --format-only writes the submission instead."""
    names = zarr.open_group(owner.bundles["encrypted"] / "dataset.zarr", mode="r")["val"].attrs["names"]
    plains = [next((owner.raw / "leftImg8bit" / "val").glob(f"*/{name}_leftImg8bit.png")) for name in names]
    encrypt_queries(plains, owner.key, tmp_path / "queries")
    common = ["--bundle", owner.bundles["encrypted"], "--signer", owner.signer]
    assert predict.main([str(a) for a in (PROPOSED, trained, *common, "--inputs", tmp_path / "queries", "--out", tmp_path / "out")]) == 0
    ground_truth = Path(shutil.copytree(owner.raw / "gtFine" / "val", tmp_path / "cityscapes" / "gtFine" / "val"))
    environment = {**os.environ, "CITYSCAPES_DATASET": str(ground_truth.parents[1]),
                   "CITYSCAPES_RESULTS": str(tmp_path / "out" / "labelIds"), "CITYSCAPES_EXPORT_DIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"],
                          env=environment, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    official = json.loads((tmp_path / "resultPixelLevelSemanticLabeling.json").read_text())

    iou = run_test([PROPOSED, trained, *common, "--work-dir", tmp_path / "iou"], capsys)
    ours = run_test([PROPOSED, trained, *common, "--work-dir", tmp_path / "cs", "--metric", "cityscapes"], capsys)
    assert iou["mIoU"] == pytest.approx(100 * official["averageScoreClasses"], abs=0.01)
    assert ours["mIoU"] == pytest.approx(100 * official["averageScoreClasses"], abs=1e-9)
    assert ours["category mIoU"] == pytest.approx(100 * official["averageScoreCategories"], abs=1e-9)
    for name, scores in ours["per_class"].items():
        assert scores["IoU"] == pytest.approx(iou["per_class"][name]["IoU"], abs=0.01), name

    run_test([PROPOSED, trained, *common, "--work-dir", tmp_path / "sub", "--format-only", tmp_path / "submission"], capsys)
    submitted = sorted(path.name for path in (tmp_path / "submission").glob("*.png"))
    assert submitted == sorted(f"{name}.png" for name in names)


@pytest.mark.slow  # decrypt, predict and two evaluations: ~25 s
def test_the_owners_plain_model_segments_and_scores_plain_images_without_bundle_or_key(owner, trained, tmp_path, capsys):
    """Back from the cloud and decrypted, the owner's plain model segments plain images with no bundle and no
    key (predict), exactly as the cloud's model segments them encrypted, and scores on the owner's plain
    bundle exactly what the cloud's model scores on the encrypted one."""
    exported, plain_model = tmp_path / "model.safetensors", tmp_path / "plain.safetensors"
    assert export.main([str(trained), "--out", str(exported)]) == 0
    key = save(owner.key, tmp_path / "owner" / "key.json")
    assert owner_cli.main(["--stage", "decrypt-weights", "--key", str(key), "--checkpoint", str(exported), "--out", str(plain_model)]) == 0

    names = zarr.open_group(owner.bundles["encrypted"] / "dataset.zarr", mode="r")["val"].attrs["names"]
    plains = [next((owner.raw / "leftImg8bit" / "val").glob(f"*/{name}_leftImg8bit.png")) for name in names]
    plains.append(write_rgb(tmp_path / "odd.png", cv2.imread(str(plains[0]))[:90, :117, ::-1]))  # padded by each side
    assert predict.main([str(a) for a in (BASELINE, plain_model, "--inputs", *plains, "--out", tmp_path / "mine")]) == 0
    assert f"the maps of {len(plains)} images written to" in capsys.readouterr().out
    encrypt_queries(plains, owner.key, tmp_path / "queries")
    cloud = ["--bundle", owner.bundles["encrypted"], "--signer", owner.signer]
    assert predict.main([str(a) for a in (PROPOSED, trained, *cloud, "--inputs", tmp_path / "queries", "--out", tmp_path / "cloud")]) == 0
    for plain in plains:
        mine = cv2.imread(str(tmp_path / "mine" / "trainIds" / f"{plain.stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
        theirs = cv2.imread(str(tmp_path / "cloud" / "trainIds" / f"{plain.stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
        assert mine.shape == cv2.imread(str(plain)).shape[:2] and np.count_nonzero(mine != theirs) == 0
    code, err = run_cli(predict, [PROPOSED, trained, "--inputs", tmp_path / "queries", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "a run without a bundle is of plain (no key)" in err  # an encrypted model needs its bundle

    scored = run_test([BASELINE, plain_model, "--bundle", owner.bundles["plain"], "--signer", owner.signer, "--work-dir", tmp_path / "p"], capsys)
    cloud_scored = run_test([PROPOSED, trained, *cloud, "--work-dir", tmp_path / "c"], capsys)
    assert scored["mIoU"] == pytest.approx(cloud_scored["mIoU"], abs=1e-6)


# --- every key option trains -------------------------------------------------------------------


def test_contrast_about_grey_commutes_with_inversion():
    values = np.arange(256, dtype=np.uint8)
    for alpha in np.random.default_rng(0).uniform(0.5, 1.5, 200):
        assert np.array_equal(contrast_about_grey(255 - values, alpha), 255 - contrast_about_grey(values, alpha))


@pytest.fixture(scope="module")
def negative_positive(keyed_bundle, tmp_path_factory):
    return keyed_bundle(tmp_path_factory.mktemp("np"), generate(negative_positive=True))


def losses_and_predictions(config: str, bundle: Path, signer: Path, work_dir: Path, **options):
    from mmengine.runner import Runner

    from training.config import load_config

    cfg = load_config(config, str(bundle), signer=str(signer), work_dir=work_dir, cfg_options=options)
    cfg.experiment_name = uuid.uuid4().hex
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.eval()
    with torch.no_grad():
        logits = [s.seg_logits.data.numpy() for data in runner.test_dataloader for s in model.test_step(data)]
    return np.array(runner.message_hub.get_scalar("train/loss").data[0]), np.stack(logits)


@pytest.mark.slow  # three runs of 20 iterations
def test_a_negative_positive_bundle_trains_and_follows_the_baseline(owner, negative_positive, tmp_path, capsys):
    """The shipped proposed config trains on a negative-positive bundle (its photometric step adapts: contrast
    about mid-grey, no brightness); a baseline drawing the same augmentation follows it exactly."""
    iters = {"train_cfg.max_iters": 20, "default_hooks.checkpoint.interval": 20}
    proposed = losses_and_predictions(PROPOSED, negative_positive.bundle, negative_positive.signer, tmp_path / "p", **iters)
    logged = capsys.readouterr()
    assert "negative-positive data: brightness steps aside" in logged.out + logged.err
    forced = {"train_dataloader.dataset.pipeline.3.negative_positive": True}
    baseline = losses_and_predictions(BASELINE, owner.bundles["plain"], owner.signer, tmp_path / "b", **iters, **forced)
    np.testing.assert_allclose(proposed[0], baseline[0], rtol=1e-4)
    scale = np.abs(baseline[1]).max()
    np.testing.assert_allclose(proposed[1], baseline[1], rtol=1e-4, atol=1e-4 * scale)
    assert baseline[0][-1] < 0.8 * baseline[0][0]  # it learns, so agreement means something
    # Without the fold (a plain checkpoint on the same encrypted data) the trajectory departs.
    conventional2 = losses_and_predictions(
        str(CONFIGS / "setr_tiny_naive_conventional2.py"), negative_positive.bundle, negative_positive.signer,
        tmp_path / "c", **iters, **{"model.backbone.init_cfg.checkpoint": str(owner.plain / "backbone.safetensors")},
    )  # fmt: skip
    assert np.max(np.abs(conventional2[0] - baseline[0]) / baseline[0]) > 1e-2


# --- mmseg's own entry point, devices, refusals --------------------------------------------------


MMSEG_TOOLS = Path(mmseg.__file__).parent / ".mim" / "tools"


def mmseg_tool(tool: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Run one of mmseg's own scripts, as the installed package ships them."""
    command = [sys.executable, str(MMSEG_TOOLS / tool), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow  # two processes of mmseg's tools: ~25 s
def test_mmseg_tools_train_and_test_need_one_setting_and_check_the_bundle(owner, tmp_path):
    """mmseg's tools/train.py and tools/test.py, as installed, on a shipped config with --cfg-options bundle
    and signer: they train and test with the project's checks (a tampered bundle is refused by both)."""
    options = ["--cfg-options", f"bundle={owner.bundles['encrypted']}", f"signer={owner.signer}"]
    done = mmseg_tool("train.py", PROPOSED, "--work-dir", tmp_path / "w", *options, "train_cfg.max_iters=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = tmp_path / "w" / "iter_2.pth"
    assert checkpoint.is_file()
    done = mmseg_tool("test.py", PROPOSED, checkpoint, "--work-dir", tmp_path / "t", *options, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified, signed by owner" in done.stdout + done.stderr and "mIoU" in done.stdout + done.stderr

    tampered = Path(shutil.copytree(owner.bundles["encrypted"], tmp_path / "tampered"))
    (tampered / "evil.py").write_text("print('hello')")
    options = ["--cfg-options", f"bundle={tampered}"]
    for tool, args in (("train.py", [PROPOSED]), ("test.py", [PROPOSED, checkpoint])):
        done = mmseg_tool(tool, *args, "--work-dir", tmp_path / "x", *options, cwd=tmp_path)
        assert done.returncode != 0 and "evil.py: not listed in the manifest" in done.stderr, tool


@pytest.mark.slow  # a training process of its own: ~11 s
def test_a_config_that_does_not_fit_the_bundle_is_one_line(owner, tmp_path):
    """The check hook's refusal, through the command line: one line, exit code 2, and none of mmseg's warnings."""
    command = [sys.executable, "-m", "training.train", BASELINE, "--bundle", str(owner.bundles["encrypted"]),
               "--signer", str(owner.signer), "--work-dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[-1]] and "refusing to train: the config expects plain data, the dataset store is encrypted" in errors[0]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA refuses --device cuda")
def test_device_cuda_without_a_gpu_is_refused(owner, tmp_path, capsys):
    code, err = run_cli(train, [PROPOSED, "--bundle", owner.bundles["encrypted"], "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda: no CUDA device" in err
