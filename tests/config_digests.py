"""A digest of every shipped config as mmengine resolves it, to prove that restructuring the config files
(inheritance, where a setting is written) changes no setting.

    python tests/config_digests.py [--rev REV]

writes tests/config_digests.json from the configs of the working tree, or of the git revision REV. A
config's digest is the sha256 of its resolved dict (``Config.fromfile(...).to_dict()``) in a canonical
form: keys sorted, tuples told apart from lists, without the helper variables the config files write
other settings with (:data:`HELPERS`: nothing reads them, mmengine and mmseg included).
tests/test_configs.py compares the working tree with the file; a deliberate change of a setting
regenerates it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = "training/configs"
DIGESTS = Path(__file__).with_name("config_digests.json")
HELPERS = ("head", "norm_cfg")  # a head's settings shared by several heads, and the heads' normalization


def canonical(value):
    """``value`` with every tuple marked as one: JSON would make it a list, and mmseg tells some apart."""
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return {"(tuple)": [canonical(item) for item in value]}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def digest(path: Path) -> str:
    from mmengine.config import Config

    settings = {key: value for key, value in Config.fromfile(str(path)).to_dict().items() if key not in HELPERS}
    resolved = canonical(settings)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()


def digests(configs: Path) -> dict[str, str]:
    """{path under ``configs``: digest} of every config a user runs (the ``_base_`` files are parts of them)."""
    paths = sorted(p for p in configs.rglob("*.py") if "_base_" not in p.parts)
    return {str(p.relative_to(configs)): digest(p) for p in paths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="the configs of this git revision (default: the working tree)")
    args = parser.parse_args(argv)
    if args.rev is None:
        found = digests(ROOT / CONFIGS)
    else:
        archive = subprocess.run(["git", "archive", args.rev, CONFIGS], cwd=ROOT, capture_output=True, check=True)
        with tempfile.TemporaryDirectory() as tmp:
            tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(tmp, filter="data")
            found = digests(Path(tmp) / CONFIGS)
    DIGESTS.write_text(json.dumps(found, indent=0, sort_keys=True) + "\n")
    print(f"{len(found)} configs written to {DIGESTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
