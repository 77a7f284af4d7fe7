"""The cloud's check of a bundle: every tampering is refused with the owner's signer, and every
integrity fault without it.

The tampering matrix runs each case twice: with the owner's signer (authenticity and integrity)
and without (integrity only). Cases whose attacker rewrote the manifest consistently are accepted
without the signer, as ``verify_bundle`` documents: only the signature tells who wrote a manifest.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open

import contract.bundle
from contract.bundle import CHECKPOINT, DATASET, MANIFEST, SIGNATURE, verify_bundle
from contract.errors import UserError
from contract.signing import save_signer
from pipeline.job import build_bundle
from pipeline.keys import generate
from pipeline.sample import write_random_vit, write_sample
from pipeline.weights import encrypt_checkpoint

ARCH = "test_vit"  # timm's smallest ViT with 16x16 patches: a 1.2 MB checkpoint keeps per-test copies cheap
SPLITS = {"train": 3, "val": 2, "test": 2}  # val and test then have identical image array metadata
SHARD = f"{DATASET}/train/images/c/0/0/0/0"  # 2 images
SHARD2 = f"{DATASET}/train/images/c/1/0/0/0"  # 1 image
LABEL = f"{DATASET}/train/labels/c/0/0/0"
RECORD = f"{DATASET}/train/shards/0.json"
ROOT = f"{DATASET}/zarr.json"
SPLIT = f"{DATASET}/train/zarr.json"
ARRAY = f"{DATASET}/train/images/zarr.json"
VAL_ARRAY, TEST_ARRAY = f"{DATASET}/val/images/zarr.json", f"{DATASET}/test/images/zarr.json"


@pytest.fixture(scope="module")
def owner(tmp_path_factory, dask_scheduler):
    """The owner's side, once: a key, an encrypted store and checkpoint, the published bundle, and
    another owner's key and checkpoint."""
    root = tmp_path_factory.mktemp("verify-owner")
    key, other_key = generate(), generate()
    write_sample(root / "raw", counts=SPLITS, size=(32, 64))
    vit = write_random_vit(root / "timm.safetensors", ARCH)
    build_bundle(
        root / "raw", vit, ARCH, key, store=root / "dataset.zarr", checkpoint=root / "backbone.safetensors",
        bundle=root / "bundle", workers=1, scheduler=dask_scheduler, shard_size=2,
    )  # fmt: skip
    return SimpleNamespace(
        key=key,
        other_key=other_key,
        signer=key.signer(),
        signer_file=save_signer(key.signer(), root / "signer.json"),
        bundle=root / "bundle",
        other_checkpoint=encrypt_checkpoint(vit, ARCH, other_key, root / "other.safetensors"),
    )


@pytest.fixture
def bundle(owner, scratch):
    """A fresh copy of the published bundle, for this test to change."""
    return Path(shutil.copytree(owner.bundle, scratch / "bundle"))


# --- helpers ------------------------------------------------------------------------------------


def regular_files(root: Path) -> dict[str, bytes]:
    """Every regular file under root (no links followed), by name relative to root."""
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def entry(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def edit_manifest(bundle: Path, edit: Callable[[dict], None]) -> None:
    """Rewrite the manifest as an attacker would: valid JSON, not signed again."""
    document = json.loads((bundle / MANIFEST).read_bytes())
    edit(document)
    (bundle / MANIFEST).write_text(json.dumps(document, indent=1))


def rehash(bundle: Path) -> None:
    """List what the bundle now holds in its manifest, with true sizes and digests (not signed again)."""
    objects = {name: entry(data) for name, data in regular_files(bundle).items() if name not in (MANIFEST, SIGNATURE)}
    edit_manifest(bundle, lambda m: m.update(objects=objects))


def flip(path: Path, offset: int | None = None) -> None:
    """Flip the lowest bit of one byte (by default the middle one)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


def swap(a: Path, b: Path) -> None:
    temporary = a.with_name(a.name + ".swap")
    a.rename(temporary)
    b.rename(a)
    temporary.rename(b)


def copy(bundle: Path, old: str, new: str) -> None:
    (bundle / new).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle / old, bundle / new)


def rename(bundle: Path, old: str, new: str) -> None:
    (bundle / new).parent.mkdir(parents=True, exist_ok=True)
    (bundle / old).rename(bundle / new)


def outside(bundle: Path, name: str) -> Path:
    """A place next to the bundle, outside it."""
    path = bundle.parent / "outside" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def link_out(bundle: Path, name: str) -> None:
    """Replace an object (file or folder) by a symbolic link to an identical copy outside the bundle."""
    target = outside(bundle, name.replace("/", "_"))
    (bundle / name).rename(target)
    (bundle / name).symlink_to(target)


def flip_manifest_digest(bundle: Path, name: str = CHECKPOINT) -> None:
    """Flip one bit of a decimal digit of an object's sha256 in the manifest: still a valid digest."""
    text = (bundle / MANIFEST).read_text()
    digest = json.loads(text)["objects"][name]["sha256"]
    start = text.index(digest)
    offset = next(start + i for i, c in enumerate(digest) if c.isdigit())
    flip(bundle / MANIFEST, offset)


def flip_signature(bundle: Path) -> None:
    """Change the case of one letter of the signature's base64: still 64 bytes, not the owner's."""
    document = json.loads((bundle / SIGNATURE).read_bytes())
    text = document["signature"]
    i = next(i for i, c in enumerate(text) if c.isalpha())
    document["signature"] = text[:i] + text[i].swapcase() + text[i + 1 :]
    (bundle / SIGNATURE).write_text(json.dumps(document))


def sign_as(key, bundle: Path, message: bytes | None = None) -> None:
    """Sign the bundle's manifest (or ``message``) with ``key``: a valid signature, of another owner."""
    (bundle / SIGNATURE).write_bytes(key.sign((bundle / MANIFEST).read_bytes() if message is None else message).to_bytes())


def add_listed(bundle: Path, name: str, source: Path) -> None:
    """List ``name`` in the manifest with the size and digest of ``source``, which exists."""
    edit_manifest(bundle, lambda m: m["objects"].update({name: entry(source.read_bytes())}))


def traversal(name: str) -> Callable:
    """List a name outside the bundle's tree, with the true digest of the file it resolves to."""

    def tamper(owner, bundle: Path) -> None:
        if name == "ABSOLUTE":
            target = outside(bundle, "abs")
            target.write_bytes(b"outside the bundle")
            add_listed(bundle, str(target), target)
        elif name.startswith("../"):
            target = bundle.parent / name.removeprefix("../")
            target.write_bytes(b"outside the bundle")
            add_listed(bundle, name, target)
        else:
            add_listed(bundle, name, (bundle / name).resolve())

    return tamper


def relist(old: str, new: str) -> Callable:
    """Rename an object's manifest entry (the object stays where it is)."""

    def tamper(owner, bundle: Path) -> None:
        edit_manifest(bundle, lambda m: m["objects"].update({new: m["objects"].pop(old)}))

    return tamper


def swap_inside_link(owner, bundle: Path) -> None:
    """Replace the test images' metadata by a link to the val images' metadata, byte-identical."""
    assert (bundle / VAL_ARRAY).read_bytes() == (bundle / TEST_ARRAY).read_bytes()  # only the link differs
    (bundle / TEST_ARRAY).unlink()
    (bundle / TEST_ARRAY).symlink_to("../../val/images/zarr.json")


def directory_with(name: str, content: str | None) -> Callable:
    def tamper(owner, bundle: Path) -> None:
        data = (bundle / name).read_bytes()
        (bundle / name).unlink()
        (bundle / name).mkdir()
        if content:
            (bundle / name / content).write_bytes(data)

    return tamper


def fifo(name: str, replace: bool) -> Callable:
    def tamper(owner, bundle: Path) -> None:
        if replace:
            (bundle / name).unlink()
        os.mkfifo(bundle / name)

    return tamper


def link_hard(bundle: Path, name: str) -> None:
    """Replace an object by a hard link to an identical copy outside the bundle."""
    target = outside(bundle, name.replace("/", "_"))
    (bundle / name).rename(target)
    os.link(target, bundle / name)


def link_hard_inside(bundle: Path) -> None:
    """The test images' metadata as a hard link to the val images' metadata, byte-identical."""
    (bundle / TEST_ARRAY).unlink()
    os.link(bundle / VAL_ARRAY, bundle / TEST_ARRAY)


def add_field(name: str, inside: str | None, field: str) -> Callable:
    """A field the contract does not name, in a metadata object (inside one of its fields)."""

    def tamper(owner, bundle: Path) -> None:
        document = json.loads((bundle / name).read_bytes())
        (document[inside] if inside else document)[field] = "anything"
        (bundle / name).write_text(json.dumps(document))

    return tamper


def reformat(name: str) -> Callable:
    """The same document in another JSON layout (zarr's own, two-space indented)."""
    return lambda owner, bundle: (bundle / name).write_text(json.dumps(json.loads((bundle / name).read_bytes()), indent=2))


def rewrite_checkpoint(bundle: Path, extra_tensors: dict, extra_metadata: dict) -> None:
    from safetensors.torch import load_file, save_file

    with safe_open(bundle / CHECKPOINT, framework="pt") as f:
        metadata = f.metadata()
    save_file({**load_file(bundle / CHECKPOINT), **extra_tensors}, bundle / CHECKPOINT, metadata={**metadata, **extra_metadata})


def extra_tensor(owner, bundle: Path) -> None:
    import torch

    rewrite_checkpoint(bundle, {"note": torch.zeros(4)}, {})


def extra_metadata(owner, bundle: Path) -> None:
    rewrite_checkpoint(bundle, {}, {"note": "anything"})


def CLOSED(name: str, field: str) -> str:  # noqa: N802 (reads as a constant in the table)
    return re.escape(name) + f": '{re.escape(field)}' is no field of this format"


NOT_RELATIVE = "manifest.json: objects\\..*not a relative path"
OTHER_KEY_ID = "0123456789abcdef0123456789abcdef"


def manifest_edit(drop: str | None = None, **fields) -> Callable:
    """Edit fields of the manifest: top-level ones, those of its cipher (key_id, block_size) and
    normalization (std), and those of the first shard's entry (sha256, size); or drop an entry."""

    def edit(document: dict) -> None:
        for name, value in fields.items():
            if name in ("key_id", "block_size"):
                document["cipher"][name] = value
            elif name == "std":
                document["normalization"][name] = value
            elif name in ("sha256", "size"):
                document["objects"][SHARD][name] = value
            else:
                document[name] = value
        if drop:
            del document["objects"][drop]

    return lambda owner, bundle: edit_manifest(bundle, edit)


def then_rehash(tamper: Callable) -> Callable:
    def tampered(owner, bundle: Path) -> None:
        tamper(owner, bundle)
        rehash(bundle)

    return tampered


# --- the tampering matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One way to tamper with a bundle, and what verification says about it."""

    id: str
    tamper: Callable[[SimpleNamespace, Path], None]
    signed: str  # regex the refusal with the owner's signer matches
    unsigned: str | None  # regex the refusal without a signer matches; None: accepted (authenticity only)

    @property
    def integrity(self) -> bool:
        return self.unsigned is not None


NOT_SIGNED = "manifest.json: not signed by owner [0-9a-f]{32}"
NO_SIGNATURE = "not signed \\(no manifest.sig\\)"


def damaged(id: str, name: str, tamper: Callable[[Path], None], says: str) -> Case:
    """An object damaged in place: the same refusal with and without the signer."""
    message = re.escape(name) + says
    return Case(id, lambda owner, bundle: tamper(bundle / name), message, message)


def object_case(id: str, tamper: Callable, says: str) -> Case:
    """Objects changed, the manifest left alone: the same refusal with and without the signer."""
    return Case(id, tamper, says, says)


def manifest_case(id: str, tamper: Callable, unsigned: str | None) -> Case:
    """The manifest (or signature) rewritten: the signature no longer matches."""
    return Case(id, tamper, NOT_SIGNED, unsigned)


def missing(name: str) -> str:
    return re.escape(name) + ": listed in the manifest but missing"


def unlisted(name: str) -> str:
    return re.escape(name) + ": not listed in the manifest"


def foreign(name: str) -> str:
    return re.escape(name) + ": not an object of this bundle's format"


def is_link(name: str) -> str:
    return re.escape(name) + ": a symbolic link"


CHANGED = ": (sha256 [0-9a-f]{16}\\.\\.\\. is not the manifest's|[0-9]+ bytes, the manifest says)"
SWAP_SHARDS = lambda owner, bundle: swap(bundle / SHARD, bundle / SHARD2)  # noqa: E731
SWAP_CHECKPOINT = lambda owner, bundle: shutil.copyfile(owner.other_checkpoint, bundle / CHECKPOINT)  # noqa: E731
RENAMED = f"{DATASET}/train/images/c/5/0/0/0"
EXTRA_SHARD = f"{DATASET}/train/images/c/2/0/0/0"  # past the split's last shard

CASES = [
    # a flipped bit in each kind of object
    *(
        damaged(f"flipped-{kind}", name, flip, CHANGED)
        for kind, name in [
            ("image-shard", SHARD), ("label-shard", LABEL), ("shard-record", RECORD), ("store-zarr-json", ROOT),
            ("split-zarr-json", SPLIT), ("array-zarr-json", ARRAY), ("checkpoint", CHECKPOINT),
        ]
    ),
    manifest_case("flipped-manifest-digest", lambda o, b: flip_manifest_digest(b), re.escape(CHECKPOINT) + CHANGED),
    manifest_case("flipped-manifest-syntax", lambda o, b: flip(b / MANIFEST, -1), "manifest.json: not valid JSON"),
    manifest_case("flipped-signature-letter", lambda o, b: flip_signature(b), None),
    Case("flipped-signature-syntax", lambda o, b: flip(b / SIGNATURE, 0), "manifest.sig: not valid JSON", None),
    # truncation
    damaged("truncated-image-shard", SHARD, truncate, ": [0-9]+ bytes, the manifest says"),
    damaged("truncated-checkpoint", CHECKPOINT, truncate, ": [0-9]+ bytes, the manifest says"),
    damaged("emptied-shard-record", RECORD, lambda p: truncate(p, 0), ": 0 bytes, the manifest says"),
    manifest_case("truncated-manifest", lambda o, b: truncate(b / MANIFEST), "manifest.json: not valid JSON"),
    # extra, missing, renamed, swapped objects; each also with the manifest listing the result
    object_case("extra-at-root", lambda o, b: (b / "evil.py").write_text("import os"), unlisted("evil.py")),
    object_case("extra-in-store", lambda o, b: (b / DATASET / "evil.py").write_text("import os"), unlisted(f"{DATASET}/evil.py")),
    object_case("extra-hidden", lambda o, b: (b / DATASET / "train" / ".evil").write_bytes(b""), unlisted(f"{DATASET}/train/.evil")),
    object_case("extra-shard", lambda o, b: copy(b, SHARD2, EXTRA_SHARD), unlisted(EXTRA_SHARD)),
    object_case("missing-shard", lambda o, b: (b / SHARD).unlink(), missing(SHARD)),
    object_case("missing-checkpoint", lambda o, b: (b / CHECKPOINT).unlink(), missing(CHECKPOINT)),
    object_case("missing-store-zarr-json", lambda o, b: (b / ROOT).unlink(), missing(ROOT)),
    object_case("renamed-shard", lambda o, b: rename(b, SHARD, RENAMED), f"{missing(SHARD)}; {unlisted(RENAMED)}"),
    object_case("swapped-shards", SWAP_SHARDS, re.escape(SHARD) + CHANGED),
    object_case("swapped-checkpoint-of-another-key", SWAP_CHECKPOINT, re.escape(CHECKPOINT) + CHANGED),
    manifest_case("extra-at-root-rehashed", then_rehash(lambda o, b: (b / "evil.py").write_text("import os")), foreign("evil.py")),
    manifest_case(
        "extra-in-store-rehashed", then_rehash(lambda o, b: (b / DATASET / "evil.py").write_text("x")), foreign(f"{DATASET}/evil.py")
    ),
    manifest_case(
        "extra-shard-rehashed",
        then_rehash(lambda o, b: copy(b, SHARD2, EXTRA_SHARD)),
        foreign(EXTRA_SHARD),
    ),
    manifest_case(
        "missing-shard-rehashed",
        then_rehash(lambda o, b: (b / SHARD).unlink()),
        re.escape(SHARD) + ": missing from the manifest \\(the bundle is incomplete\\)",
    ),
    manifest_case(
        "renamed-shard-rehashed",
        then_rehash(lambda o, b: rename(b, SHARD, RENAMED)),
        f"{foreign(RENAMED)}; {re.escape(SHARD)}: missing from the manifest",
    ),
    # Swapped shards, listed consistently: a well-formed bundle, only the signature can tell.
    manifest_case("swapped-shards-rehashed", then_rehash(SWAP_SHARDS), None),
    manifest_case(
        "swapped-checkpoint-of-another-key-rehashed",
        then_rehash(SWAP_CHECKPOINT),
        re.escape(CHECKPOINT) + ": made for key id [0-9a-f]{32} .*, but the dataset store .* holds data of key id",
    ),
    # the manifest's description edited
    manifest_case("edited-cipher-key-id", manifest_edit(key_id=OTHER_KEY_ID), f"manifest.json: cipher is CipherSpec\\(key_id='{OTHER_KEY_ID}'"),
    manifest_case("edited-cipher-plain", manifest_edit(cipher=None), "manifest.json: cipher is None"),
    manifest_case("edited-cipher-block-size", manifest_edit(block_size=8), "manifest.json: cipher is"),
    manifest_case("edited-created", manifest_edit(created="2001-01-01T00:00:00+00:00"), None),
    manifest_case("edited-tool-version", manifest_edit(tool_version="9.9.9"), None),
    manifest_case("edited-signer-name", manifest_edit(signer="0" * 32), None),
    manifest_case("edited-splits", manifest_edit(splits={"train": 30, "val": 2, "test": 2}), "manifest.json: splits is \\{'train': 30"),
    manifest_case("edited-splits-dropped", manifest_edit(splits={"train": 3, "val": 2}), "manifest.json: splits is"),
    manifest_case("edited-normalization", manifest_edit(std=[1, 1, 1]), "manifest.json: normalization is"),
    manifest_case("edited-channel-order", manifest_edit(channel_order="BGR"), "manifest.json: channel_order: Input should be 'RGB'"),
    manifest_case("edited-digest", manifest_edit(sha256="0" * 64), re.escape(SHARD) + ": sha256 .* is not the manifest's 0000"),
    manifest_case("edited-size", manifest_edit(size=1), re.escape(SHARD) + ": [0-9]+ bytes, the manifest says 1"),
    manifest_case("dropped-entry", manifest_edit(drop=SHARD), unlisted(SHARD)),
    # links, folders and special files where objects should be
    object_case("symlink-out-identical-shard", lambda o, b: link_out(b, SHARD), is_link(SHARD)),
    object_case("symlink-out-identical-folder", lambda o, b: link_out(b, f"{DATASET}/test"), is_link(f"{DATASET}/test")),
    object_case("symlink-out-extra", lambda o, b: (b / DATASET / "passwd").symlink_to("/etc/passwd"), is_link(f"{DATASET}/passwd")),
    object_case("symlink-in-identical", swap_inside_link, is_link(TEST_ARRAY)),
    object_case("symlink-in-extra", lambda o, b: (b / "weights").symlink_to(CHECKPOINT), is_link("weights")),
    object_case("directory-for-shard", directory_with(SHARD, None), missing(SHARD)),
    object_case("directory-for-checkpoint", directory_with(CHECKPOINT, "x"), re.escape(CHECKPOINT) + ": a directory where an object"),
    object_case("fifo-for-shard-record", fifo(RECORD, replace=True), re.escape(RECORD) + ": a special file"),
    object_case("fifo-extra", fifo(f"{DATASET}/pipe", replace=False), re.escape(f"{DATASET}/pipe") + ": a special file"),
    object_case("manifest-is-a-directory", directory_with(MANIFEST, MANIFEST), "manifest.json: not a regular file"),
    object_case("manifest-is-a-fifo", fifo(MANIFEST, replace=True), "manifest.json: not a regular file"),
    Case("signature-is-a-fifo", fifo(SIGNATURE, replace=True), NO_SIGNATURE, re.escape(SIGNATURE) + ": a special file"),
    object_case("manifest-is-an-empty-directory", directory_with(MANIFEST, None), "no manifest.json"),
    object_case("manifest-is-a-symlink-to-a-copy", lambda o, b: link_out(b, MANIFEST), "manifest.json: not a regular file"),
    object_case("missing-manifest", lambda o, b: (b / MANIFEST).unlink(), "no manifest.json: not a bundle"),
    Case("signature-is-a-symlink-to-a-copy", lambda o, b: link_out(b, SIGNATURE), NO_SIGNATURE, is_link(SIGNATURE)),
    # names in the manifest that lead out of the bundle, each listed with the true digest of its target
    manifest_case("traversal-parent", traversal("../outside-file"), NOT_RELATIVE),
    manifest_case("traversal-absolute", traversal("ABSOLUTE"), NOT_RELATIVE),
    manifest_case("traversal-inner", traversal(f"{DATASET}/../{CHECKPOINT}"), NOT_RELATIVE),
    manifest_case("traversal-dot", traversal(f"./{CHECKPOINT}"), NOT_RELATIVE),
    manifest_case("traversal-relisted", relist(CHECKPOINT, f"{DATASET}/../{CHECKPOINT}"), NOT_RELATIVE),
    # hard links: bytes that another name, outside the bundle, can change after they were checked
    object_case("hardlink-out-identical-shard", lambda o, b: link_hard(b, SHARD), re.escape(SHARD) + ": a hard link"),
    object_case("hardlink-in-identical", lambda o, b: link_hard_inside(b), re.escape(TEST_ARRAY) + ": a hard link"),
    # metadata outside the contract, listed consistently: the closed form refuses it, signed or not
    manifest_case("extra-store-attribute-rehashed", then_rehash(add_field(ROOT, "attributes", "note")), CLOSED(ROOT, "attributes.note")),
    manifest_case("extra-split-attribute-rehashed", then_rehash(add_field(SPLIT, "attributes", "note")), CLOSED(SPLIT, "attributes.note")),
    manifest_case("extra-array-attribute-rehashed", then_rehash(add_field(ARRAY, "attributes", "note")), CLOSED(ARRAY, "attributes.note")),
    manifest_case("extra-record-field-rehashed", then_rehash(add_field(RECORD, None, "note")), CLOSED(RECORD, "note")),
    manifest_case("reformatted-store-zarr-json-rehashed", then_rehash(reformat(ROOT)), re.escape(ROOT) + ": not in the closed form"),
    manifest_case("extra-checkpoint-tensor-rehashed", then_rehash(extra_tensor), re.escape(CHECKPOINT) + ": not a VisionTransformer backbone: unexpected tensor 'note'"),
    manifest_case("extra-checkpoint-metadata-rehashed", then_rehash(extra_metadata), re.escape(CHECKPOINT) + ": 'note' is no field"),
    manifest_case("unknown-manifest-field", manifest_edit(note="hello"), "manifest.json: 'note' is no field of this format"),
    # signatures
    Case("no-signature", lambda o, b: (b / SIGNATURE).unlink(), NO_SIGNATURE, None),
    Case("signature-of-another-owner", lambda o, b: sign_as(o.other_key, b), NOT_SIGNED + " \\(it names signer [0-9a-f]{32}\\)", None),
    Case("signature-of-another-manifest", lambda o, b: sign_as(o.key, b, b"{}"), NOT_SIGNED, None),
    Case(
        "swapped-shards-rehashed-signed-by-another-owner",
        lambda o, b: (SWAP_SHARDS(o, b), rehash(b), sign_as(o.other_key, b)),
        NOT_SIGNED,
        None,
    ),
]
RESULTS: dict[tuple[str, bool], str | None] = {}  # (case, with signer) -> the refusal, None if accepted


def run_case(owner, case: Case, work: Path, signed: bool) -> str | None:
    """Tamper with a fresh copy of the bundle and verify it: the refusal's message, None if accepted."""
    bundle = Path(shutil.copytree(owner.bundle, work / "bundle"))
    case.tamper(owner, bundle)
    try:
        verified = verify_bundle(str(bundle), signer=owner.signer if signed else None)
    except UserError as error:  # anything else is a crash: the test fails
        message = str(error)
        assert message.startswith(f"{bundle}") and "\n" not in message, message
        RESULTS[case.id, signed] = message
        return message
    assert verified.signer is None and "authenticity NOT checked" in verified.summary()
    RESULTS[case.id, signed] = None
    return None


@pytest.mark.parametrize("signed", [True, False], ids=["with-signer", "without-signer"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_tampering(owner, scratch, case, signed):
    """With the owner's signer every case is refused; without, every integrity case, naming the fault."""
    message = run_case(owner, case, scratch, signed)
    expected = case.signed if signed else case.unsigned
    if expected is None:
        assert message is None, "only the signature can tell this from the owner's bundle"
    else:
        assert message is not None and re.search(expected, message), message


def test_tampering_summary(owner, scratch, capsys):
    """Totals of the matrix: 100% refused with the signer; every integrity case refused without it,
    and the authenticity-only cases (a manifest rewritten consistently) accepted without it."""
    assert len({case.id for case in CASES}) == len(CASES) >= 80
    for case in CASES:
        for signed in (True, False):
            if (case.id, signed) not in RESULTS:  # run alone: run what the matrix did not
                run_case(owner, case, scratch / f"{case.id}-{signed}", signed)
    integrity = [case for case in CASES if case.integrity]
    authenticity = [case for case in CASES if not case.integrity]
    refused_signed = sum(RESULTS[case.id, True] is not None for case in CASES)
    refused_integrity = sum(RESULTS[case.id, False] is not None for case in integrity)
    accepted_authenticity = sum(RESULTS[case.id, False] is None for case in authenticity)
    with capsys.disabled():
        print(
            f"\ntampering matrix: {len(CASES)} cases; with the signer {refused_signed}/{len(CASES)} refused; "
            f"without: {refused_integrity}/{len(integrity)} integrity cases refused, "
            f"{accepted_authenticity}/{len(authenticity)} authenticity-only cases accepted"
        )
    assert refused_signed == len(CASES)
    assert refused_integrity == len(integrity)
    assert accepted_authenticity == len(authenticity)


# --- an honest bundle, and what else verification reports ----------------------------------------


def test_an_honest_bundle_verifies_with_and_without_the_signer(owner, bundle):
    """With the signer: the owner's; without: whole, and the summary says authenticity was not checked."""
    signed = verify_bundle(str(bundle), signer=owner.signer)
    assert signed.signer == owner.signer.fingerprint == signed.manifest.signer
    assert f"signed by owner {owner.signer.fingerprint}" in signed.summary()
    assert signed.manifest.cipher == owner.key.spec()
    assert signed.manifest.splits == SPLITS
    assert set(signed.manifest.objects) == set(regular_files(bundle)) - {MANIFEST, SIGNATURE}
    assert signed.bytes == sum(len(data) for name, data in regular_files(bundle).items() if name not in (MANIFEST, SIGNATURE))
    unsigned = verify_bundle(str(bundle))
    assert unsigned.signer is None and "authenticity NOT checked" in unsigned.summary()


def test_another_owners_signer_refuses_the_bundle(owner, bundle):
    message = f"not signed by owner {owner.other_key.signer().fingerprint} \\(it names signer {owner.signer.fingerprint}\\)"
    with pytest.raises(UserError, match=message):
        verify_bundle(str(bundle), signer=owner.other_key.signer())


def test_verification_reports_every_problem_at_once(bundle):
    flip(bundle / SHARD)
    (bundle / CHECKPOINT).unlink()
    (bundle / "evil.py").write_text("")
    with pytest.raises(UserError, match="verification failed \\(3 problems\\)") as error:
        verify_bundle(str(bundle))
    for name in (SHARD, CHECKPOINT, "evil.py"):
        assert f"{name}: " in str(error.value)


def test_an_empty_folder_is_not_a_bundle(tmp_path):
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path))}: no manifest.json: not a bundle"):
        verify_bundle(str(tmp_path))


def test_a_symlink_to_a_bundle_folder_is_accepted(owner, bundle, tmp_path):
    """The location itself may be a link (as /data often is); links inside a bundle may not."""
    link = tmp_path / "link"
    link.symlink_to(bundle, target_is_directory=True)
    assert verify_bundle(str(link), signer=owner.signer).signer == owner.signer.fingerprint


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda path: path.write_text("not a folder"), "a file, not a directory"),
        (lambda path: path.symlink_to(path.parent / "nowhere"), "a symbolic link to nothing"),
        (lambda path: None, "no such directory"),
    ],
    ids=["a-file", "a-dangling-symlink", "missing"],
)
def test_a_location_that_is_no_folder_is_named(tmp_path, make, says):
    path = tmp_path / "bundle"
    make(path)
    with pytest.raises(UserError) as error:
        verify_bundle(str(path))
    assert str(error.value) == f"{path}: {says}"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.run", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_line_reports_a_refusal_in_one_line(owner, bundle, tmp_path):
    """--stage verify: exit code 2 and one line on stderr naming the object, no traceback; 0 when whole."""
    accepted = run_cli("--stage", "verify", "--bundle", str(bundle), "--signer", str(owner.signer_file), cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert f"signed by owner {owner.signer.fingerprint}" in accepted.stderr

    flip(bundle / SHARD)
    refused = run_cli("--stage", "verify", "--bundle", str(bundle), "--signer", str(owner.signer_file), cwd=tmp_path)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bundle}: verification failed") and SHARD in lines[0]

    missing_signer = run_cli("--stage", "verify", "--bundle", str(bundle), "--signer", str(tmp_path / "none.json"), cwd=tmp_path)
    assert (missing_signer.returncode, missing_signer.stderr.count("\n")) == (2, 1)
    assert f"{tmp_path / 'none.json'}: no signer file here" in missing_signer.stderr


def test_the_owners_command_line_check_finds_the_key(owner, bundle, tmp_path):
    """--stage verify --key: the owner's signer, and a scan for every form of the key."""
    from pipeline.keys import save

    key_file = save(owner.key, tmp_path / "owner" / "key.json")
    ok = run_cli("--stage", "verify", "--bundle", str(bundle), "--key", str(key_file), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    (bundle / DATASET / "train" / "zarr.json").write_text(json.dumps({"note": owner.key.secret.hex()}))
    rehash(bundle)
    sign_as(owner.key, bundle)  # the owner's own signature: only the scan can find it
    leaked = run_cli("--stage", "verify", "--bundle", str(bundle), "--key", str(key_file), cwd=tmp_path)
    assert leaked.returncode == 2 and leaked.stderr.count("\n") == 1
    assert f"{SPLIT}: contains the secret key in hex" in leaked.stderr


# --- the scan for secrets -------------------------------------------------------------------------

MARKER = bytes(range(100, 132))  # 32 bytes, as long as a secret
SMALL_CHUNK = 128


@pytest.mark.parametrize(
    "offset",
    [0, SMALL_CHUNK - 31, SMALL_CHUNK - 16, SMALL_CHUNK - 1, SMALL_CHUNK, 2 * SMALL_CHUNK - 16, -len(MARKER)],
    ids=["start", "one-byte-over", "halfway-over", "one-byte-before", "aligned", "second-boundary", "end"],
)
@pytest.mark.parametrize("name", [SHARD, RECORD, ROOT, CHECKPOINT], ids=["shard", "record", "store-zarr-json", "checkpoint"])
def test_the_scan_finds_a_pattern_anywhere_also_across_chunks(bundle, monkeypatch, name, offset):
    """Objects are read in chunks (4 MiB; here 128 bytes): a pattern straddling two is found too."""
    monkeypatch.setattr(contract.bundle, "CHUNK", SMALL_CHUNK)
    data = bytearray((bundle / name).read_bytes())
    assert len(data) > 2 * SMALL_CHUNK + len(MARKER)
    start = offset % len(data)
    data[start : start + len(MARKER)] = MARKER
    (bundle / name).write_bytes(bytes(data))
    rehash(bundle)
    with pytest.raises(UserError) as error:
        verify_bundle(str(bundle), patterns={"the marker": MARKER, "something else": b"\x00not there\x00"})
    assert str(error.value).endswith(f"(1 problem): {name}: contains the marker")


@pytest.mark.parametrize("name", [MANIFEST, SIGNATURE])
def test_the_manifest_and_the_signature_are_closed(owner, bundle, name):
    """Neither carries a field the contract does not name, even signed by the owner."""
    document = json.loads((bundle / name).read_bytes())
    document["note"] = owner.key.secret.hex().upper()
    (bundle / name).write_text(json.dumps(document))
    if name == MANIFEST:
        sign_as(owner.key, bundle)
    with pytest.raises(UserError, match=f"{name}: 'note' is no field of this format"):
        verify_bundle(str(bundle), signer=owner.signer)


def test_the_scan_covers_the_pending_record(owner, bundle):
    """A pending record (the owner's note of an unfinished publish) is never read by the cloud, but the
    owner's scan covers it like the manifest and the signature."""
    (bundle / "publish.pending.json").write_text(json.dumps({"note": owner.key.secret.hex().upper()}))
    verify_bundle(str(bundle), signer=owner.signer)
    with pytest.raises(UserError, match="publish.pending.json: contains the secret key in upper-case hex"):
        verify_bundle(str(bundle), signer=owner.signer, patterns=owner.key.secret_patterns())


def test_the_scan_finds_a_pattern_across_the_real_chunk_boundary(bundle):
    """The same at the 4 MiB boundary objects are read in, in an object a little larger."""
    data = bytearray(os.urandom(contract.bundle.CHUNK + 4096))
    data[contract.bundle.CHUNK - 16 : contract.bundle.CHUNK + 16] = MARKER
    (bundle / SHARD).write_bytes(bytes(data))
    rehash(bundle)
    with pytest.raises(UserError) as error:
        verify_bundle(str(bundle), patterns={"the marker": MARKER})
    assert str(error.value).endswith(f"(1 problem): {SHARD}: contains the marker")
