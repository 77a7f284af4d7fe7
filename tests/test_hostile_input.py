"""Hostile input is one line: every file a user or an attacker can hand a command (key, signer, manifest,
signature, zarr metadata, checkpoint headers, torch files, PNG headers, query tags, object names) makes
exit code 2 and exactly one line on stderr, never a traceback."""

import hashlib
import json
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from contract.bundle import CHECKPOINT, DATASET, MANIFEST, SIGNATURE
from contract.query import QUERY_TAG
from pipeline import keys
from pipeline.run import main as owner_main
from pipeline.sample import write_sample
from training import export as export_cli
from training import predict as predict_cli
from training import test as test_cli

pytest_plugins = ["training_fixtures"]

CONFIG = str(Path(__file__).parents[1] / "training" / "configs" / "tiny" / "setr_tiny_naive_proposed.py")
DEEP = "[" * 2000 + "]" * 2000  # nested beyond any format, and small enough for every file's size limit


def one_line(main, argv, capfd) -> str:
    """Run a command line in this process: it must exit 2 with exactly one line on stderr; that line."""
    MMLogger.get_instance(uuid.uuid4().hex)  # mmengine logs to its latest logger: one on today's streams, as in a new process
    code = main([str(a) for a in argv])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def bundle(owner, tmp_path):
    return Path(shutil.copytree(owner.bundles["encrypted"], tmp_path / "bundle"))


def relisted(bundle: Path, name: str) -> None:
    """List ``name`` in the manifest with its present size and digest (an attacker without the key)."""
    manifest = json.loads((bundle / MANIFEST).read_bytes())
    data = (bundle / name).read_bytes()
    manifest["objects"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def png_header_claiming(path: Path, height: int, width: int) -> Path:
    """A PNG whose header claims ``height`` x ``width`` 8-bit RGB, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


# --- the owner's files and the bundle's documents ----------------------------------------------------


@pytest.mark.parametrize(
    "content, says",
    [
        (DEEP, "recursion limit exceeded"),
        ('{"format": "cipherseg-key", "version": 1, "secret": "' + "ab" * 32 + '", "key_id": "' + "0" * 32
         + '", "block_size": Infinity, "negative_positive": false}', "block_size"),
        ('{"format": "cipherseg-key", "version": 1, "secret": "' + "é" * 64 + '"}', "secret"),
    ],
    ids=["deep-json", "infinite-block-size", "non-ascii-secret"],
)  # fmt: skip
def test_a_hostile_key_file(tmp_path, capfd, content, says):
    key = tmp_path / "key.json"
    key.write_text(content)
    line = one_line(owner_main, ["--stage", "encrypt-query", "--key", key, "--query", tmp_path / "q.png", "--out", tmp_path / "o"], capfd)
    assert str(key) in line and says in line


@pytest.mark.parametrize(
    "document, says",
    [
        (DEEP, "recursion limit exceeded"),
        ({"format": "cipherseg-signer", "format_version": 1, "algorithm": "ed25519", "public_key": "ä" * 43 + "=",
          "fingerprint": "0" * 32}, "public_key: not 32 bytes in base64"),
    ],
    ids=["deep-json", "non-ascii-public-key"],
)  # fmt: skip
def test_a_hostile_signer_file(bundle, tmp_path, capfd, document, says):
    signer = tmp_path / "signer.json"
    signer.write_text(document if isinstance(document, str) else json.dumps(document))
    line = one_line(owner_main, ["--stage", "verify", "--bundle", bundle, "--signer", signer], capfd)
    assert str(signer) in line and says in line


@pytest.mark.parametrize(
    "tamper, signed, says",
    [
        (lambda b, o: (b / MANIFEST).write_text(DEEP), False, "manifest.json: not valid JSON (recursion limit exceeded"),
        (lambda b, o: (b / SIGNATURE).write_text(DEEP), True, "manifest.sig: not valid JSON (recursion limit exceeded"),
        (lambda b, o: (b / SIGNATURE).write_text(json.dumps({**json.loads((b / SIGNATURE).read_bytes()), "signature": "ß" * 86 + "=="})),
         True, "signature: not 64 bytes in base64"),
        (lambda b, o: ((b / DATASET / "zarr.json").write_text(DEEP), relisted(b, f"{DATASET}/zarr.json")),
         False, "zarr.json: not valid JSON (recursion limit exceeded"),
        (lambda b, o: (metadata_of_type(b, ["x"]), relisted(b, CHECKPOINT)), False, "not a safetensors header"),
        (lambda b, o: ((b / DATASET / "a\nerror: forged").write_text("x"),), True, "a\\nerror: forged: not listed in the manifest"),
    ],
    ids=["deep-manifest", "deep-signature", "non-ascii-signature", "deep-zarr-json", "metadata-of-another-type", "newline-in-a-name"],
)  # fmt: skip
def test_a_hostile_bundle(owner, bundle, capfd, tamper, signed, says):
    """Each document of a bundle made hostile (listed consistently where that gets it parsed: an attacker
    without the key can only do so for a cloud that checks integrity alone)."""
    tamper(bundle, owner)
    signer = ["--signer", owner.signer] if signed else []
    line = one_line(owner_main, ["--stage", "verify", "--bundle", bundle, *signer], capfd)
    assert says in line, line


def metadata_of_type(bundle: Path, value) -> None:
    """Rewrite the checkpoint's header with ``__metadata__`` set to ``value`` (not a map of strings)."""
    data = (bundle / CHECKPOINT).read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = value
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (bundle / CHECKPOINT).write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


# --- images ----------------------------------------------------------------------------------------


def test_a_png_header_claiming_a_huge_image_is_refused_before_anything_is_allocated(tmp_path, capfd, dask_scheduler):
    raw = tmp_path / "raw"
    write_sample(raw, counts={"train": 2}, size=(32, 64))
    victim = next((raw / "leftImg8bit" / "train").rglob("*.png"))
    png_header_claiming(victim, 1 << 20, 1 << 20)
    argv = ["--stage", "encrypt", "--raw", raw, "--store", tmp_path / "s.zarr", "--plain", "--scheduler", dask_scheduler]
    line = one_line(owner_main, argv, capfd)
    assert str(victim) in line and "larger than cipherseg decodes" in line
    query = png_header_claiming(tmp_path / "query.png", 1 << 20, 1 << 20)
    key = keys.save(keys.generate(), tmp_path / "key.json")
    line = one_line(owner_main, ["--stage", "encrypt-query", "--key", key, "--query", query, "--out", tmp_path / "o"], capfd)
    assert "larger than cipherseg decodes" in line


def tagged(path: Path, tag: str, size: tuple[int, int]) -> Path:
    info = PngInfo()
    info.add_text(QUERY_TAG, tag)
    Image.fromarray(np.zeros((*size, 3), np.uint8), "RGB").save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p, o: tagged(p, "not json {", o.size), f"its {QUERY_TAG} tag"),
        (lambda p, o: tagged(p, DEEP, o.size), "recursion limit exceeded"),
        (lambda p, o: png_header_claiming(p, 1 << 20, 1 << 20), "larger than cipherseg decodes"),
    ],
    ids=["tag-not-json", "tag-deep-json", "huge-header"],
)
def test_a_hostile_query_to_predict(owner, tmp_path, capfd, make, says):
    query = make(tmp_path / "query.png", owner)
    model = tmp_path / "model.safetensors"
    shutil.copyfile(owner.encrypted / "backbone.safetensors", model)  # reads the bundle's key: queries are checked
    argv = [CONFIG, model, "--bundle", owner.bundles["encrypted"], "--inputs", query, "--out", tmp_path / "out"]
    line = one_line(predict_cli.main, argv, capfd)
    assert str(query) in line and says in line, line


# --- torch files -------------------------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["garbage", "pickle-that-calls"])
def test_a_hostile_pth_to_the_cloud_commands(owner, tmp_path, capfd, kind):
    checkpoint = tmp_path / "model.pth"
    if kind == "garbage":
        checkpoint.write_bytes(b"\x80\x04garbage" * 100)
    else:
        torch.save({"state_dict": {}, "meta": {"x": Payload()}}, checkpoint)
    for main, argv in (
        (export_cli.main, [checkpoint, "--out", tmp_path / "out.safetensors"]),
        (test_cli.main, [CONFIG, checkpoint, "--bundle", owner.bundles["encrypted"], "--work-dir", tmp_path / "w"]),
    ):
        line = one_line(main, argv, capfd)
        assert str(checkpoint) in line and ("damaged, or not a torch file" in line or "never unpickled" in line), line
        assert "weights_only" not in line  # torch's advice to unpickle anything is not passed on
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "w").exists()
