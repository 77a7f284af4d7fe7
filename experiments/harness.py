"""The steps of a run that plays both roles, each through the role's own command line in a subprocess: the
owner's (``python -m pipeline.run``) and the cloud's (``python -m training.train``). What runs here never
holds a key: it passes the key file's path on. The experiments and the checks (``checks/``) share these.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("experiments")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


def run(*command: str | Path) -> float:
    """Run a command, its output shown only if it fails (the end of it, in the error); its wall time in seconds."""
    words = [str(word) for word in command]
    log.info("$ %s", shlex.join(words))
    start = time.perf_counter()
    done = subprocess.run(words, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(words)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-6000:]}")
    return time.perf_counter() - start


def owner(*args: str | Path) -> float:
    """One step of the data owner, through the owner's command line."""
    return run(sys.executable, "-m", "pipeline.run", *args)


def _cipher(key: Path | None) -> list[str | Path]:
    return ["--key", key] if key else ["--plain"]


def encrypt(raw: str | Path, store: Path, key: Path | None) -> None:
    """The owner's store of ``raw``: encrypted with ``key``, or plain (the baseline's) without one."""
    owner("--stage", "encrypt", *_cipher(key), "--raw", raw, "--store", store)


def encrypt_weights(weights: Path, arch: str, out: Path, key: Path | None) -> None:
    """A timm checkpoint converted for mmseg, its patch embedding encrypted with ``key`` (plain without one)."""
    owner("--stage", "encrypt-weights", *_cipher(key), "--weights", weights, "--arch", arch, "--encrypted-weights", out)


def publish(key: Path, store: Path, checkpoint: Path, bundle: Path) -> Path:
    """A store and a checkpoint published as a bundle, signed with the owner's key; returns the bundle."""
    owner("--stage", "publish", "--key", key, "--store", store, "--encrypted-weights", checkpoint, "--bundle", bundle)
    return bundle


def train(
    config: Path, bundle: Path, signer: Path, work_dir: Path, options: Sequence[str] = (), gpus: int = 1
) -> float:
    """``python -m training.train`` on ``bundle`` (under torchrun with ``gpus`` when more than one), with
    ``--cfg-options options``; its wall time in seconds."""
    launch: list[str | Path] = [sys.executable, "-m", "training.train"]
    if gpus > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                  "-m", "training.train", "--launcher", "pytorch"]  # fmt: skip
    command = [*launch, config, "--bundle", bundle, "--signer", signer, "--work-dir", work_dir]
    return run(*command, *(["--cfg-options", *options] if options else []))


def last_checkpoint(work_dir: Path) -> Path:
    """The checkpoint training wrote last in ``work_dir`` (mmengine names it in ``last_checkpoint``)."""
    return Path((work_dir / "last_checkpoint").read_text().strip())
