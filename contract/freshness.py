"""Freshness: the cloud never goes back to an older publication of a bundle it has accepted (as TUF does).

Every publish of a bundle signs a sequence number one higher than the last. The cloud keeps, in a
small state file of its work directory, the highest sequence it accepted per owner and bundle
location, and refuses a lower one: an attacker who can replace the bundle's files with an older,
validly signed publication of the same owner (a rollback) is caught. Only a signed bundle has a
sequence worth keeping: without the owner's signer, anyone could have written the number.
"""

from __future__ import annotations

import os
from pathlib import Path

from contract.bundle import Verified
from contract.errors import UserError, quoted
from contract.formats import AcceptedBundles
from contract.outputs import OutputKind, write_file
from contract.signing import read_small

STATE_FILE = "accepted-bundles.json"
_MAX_STATE = 4 << 20


def _entry(verified: Verified) -> str:
    location = verified.location if "://" in verified.location else os.path.abspath(verified.location)
    return f"{verified.signer} {location}"


def read_state(path: Path) -> AcceptedBundles:
    if not path.exists():
        return AcceptedBundles()
    return AcceptedBundles.parse(read_small(path, "record of accepted bundles", limit=_MAX_STATE), str(path))


def accept(verified: Verified, state: str | Path, min_sequence: int | None = None) -> int | None:
    """Refuse ``verified`` if it is older than what was accepted before (or than ``min_sequence``, which
    replaces the recorded floor when given), and record it. Returns the floor it was held to (None: a
    bundle checked for integrity only, which has no trustworthy sequence)."""
    if verified.signer is None:
        return None
    path = Path(state)
    record = read_state(path)
    entry = _entry(verified)
    floor = min_sequence if min_sequence is not None else record.accepted.get(entry, 1)
    sequence = verified.manifest.sequence
    if sequence < floor:
        raise UserError(
            f"{quoted(verified.location)}: publication {sequence} of this bundle, older than publication {floor} "
            f"accepted before (recorded in {quoted(path)}): a rollback; give --min-sequence {sequence} to accept it anyway"
        )
    if sequence > record.accepted.get(entry, 0):
        write_file(path, AcceptedBundles(accepted={**record.accepted, entry: sequence}).to_bytes(), OutputKind.JSON)
    return floor
