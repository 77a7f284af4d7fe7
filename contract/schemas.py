"""JSON Schemas of every stored format, generated from the contract's models.

``python -m contract.schemas`` writes them to docs/schemas/ (``--check`` only says which are out of date).
A test keeps the committed ones current: a change of a model shows as a change of its schema in review.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from contract.formats import (
    AcceptedBundles,
    ArrayMetadata,
    CheckpointMetadata,
    KeyFile,
    Manifest,
    ModelProvenance,
    PendingRecord,
    ShardRecord,
    SplitGroup,
    StoreGroup,
)
from contract.signing import Signature, Signer

FOLDER = Path(__file__).resolve().parents[1] / "docs" / "schemas"
# file stem -> the model of what is stored, and where
MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "manifest": (Manifest, "<bundle>/manifest.json"),
    "signature": (Signature, "<bundle>/manifest.sig"),
    "signer": (Signer, "the owner's signer file (signer.json)"),
    "store-group": (StoreGroup, "<store>/zarr.json: the dataset store's root group and its attributes"),
    "split-group": (SplitGroup, "<store>/<split>/zarr.json"),
    "array": (ArrayMetadata, "<store>/<split>/{images,labels}/zarr.json"),
    "shard-record": (ShardRecord, "<store>/<split>/shards/<i>.json"),
    "checkpoint-metadata": (CheckpointMetadata, "the __metadata__ map of a cipherseg safetensors checkpoint"),
    "model-provenance": (ModelProvenance, "meta['cipherseg'] of a checkpoint training writes"),
    "key-file": (KeyFile, "the owner's key file (key.json, never published)"),
    "pending-record": (PendingRecord, "<bundle>/publish.pending.json while a publish runs"),
    "accepted-bundles": (AcceptedBundles, "<work dir>/accepted-bundles.json: the cloud's freshness state"),
}


def schemas() -> dict[str, bytes]:
    """File name -> the JSON Schema of its model, as committed."""
    found = {}
    for stem, (model, where) in MODELS.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$comment": where, **model.model_json_schema()}
        found[f"{stem}.schema.json"] = (json.dumps(schema, indent=1, sort_keys=True) + "\n").encode()
    return found


def stale(folder: Path = FOLDER) -> list[str]:
    """The schema files of ``folder`` that are missing, out of date, or of no model."""
    expected = schemas()
    present = {path.name for path in folder.glob("*.schema.json")} if folder.is_dir() else set()
    wrong = [name for name, data in expected.items() if not (folder / name).is_file() or (folder / name).read_bytes() != data]
    return sorted(wrong + list(present - expected.keys()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contract.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(FOLDER), help="where the schemas go (default docs/schemas)")
    parser.add_argument("--check", action="store_true", help="only list the schema files that are out of date")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if args.check:
        out_of_date = stale(folder)
        for name in out_of_date:
            print(f"out of date: {folder / name}")
        return 1 if out_of_date else 0
    folder.mkdir(parents=True, exist_ok=True)
    for name in stale(folder):
        (folder / name).unlink(missing_ok=True)
    for name, data in schemas().items():
        (folder / name).write_bytes(data)
    print(f"wrote {len(MODELS)} schemas to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
