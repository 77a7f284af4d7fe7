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


def plain_store(raw: str | Path, store: Path) -> None:
    """A plain store of ``raw`` (the owner's tools as a format converter: no key, nothing private)."""
    owner("--stage", "encrypt", "--plain", "--raw", raw, "--store", store)


def build_bundle(
    raw: str | Path, weights: Path, arch: str, key: Path, *, store: Path, checkpoint: Path, bundle: Path, plain: bool
) -> Path:
    """The owner's whole job (``--stage all``: pipeline.job.build_bundle): ``raw`` into ``store`` and the timm
    checkpoint into ``checkpoint``, encrypted with ``key`` unless ``plain``, published as ``bundle`` and signed
    with ``key``; returns the bundle. A store encrypted before is resumed, not written again."""
    cipher = ["--plain"] if plain else []
    owner("--stage", "all", "--key", key, *cipher, "--raw", raw, "--store", store, "--weights", weights, "--arch", arch,
          "--encrypted-weights", checkpoint, "--bundle", bundle)  # fmt: skip
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
