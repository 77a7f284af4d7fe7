"""Publishing a bundle: bytes read per byte published, and time against a plain copy of the same files.

Publish copies every object once, hashing it and scanning it for the key in the same pass, and takes
the shards' digests from their completion records instead of reading them back. Baseline, in the same
run: the bytes the bundle holds (what any publish must read once), and the time of ``shutil.copytree``
of the store and the checkpoint (a copy that checks nothing). Target: at most 1.10 bytes read per byte
published, for a first publish and for a republish of an unchanged store (which checks, but does not
copy again, the objects already in the bundle).
"""

import shutil
import tempfile
import time
from pathlib import Path

from pipeline import keys
from pipeline.bundle import publish
from pipeline.encrypt import encrypt_dataset
from pipeline.sample import write_random_vit, write_sample
from pipeline.weights import encrypt_checkpoint

COUNTS = {"train": 16, "val": 8}
SIZE = (1024, 2048)
ARCH = "vit_base_patch16_384"  # the paper's ViT-B/16: a 330 MB checkpoint


def bytes_read() -> int:
    """Bytes this process has read through read(2) and friends so far (/proc/self/io rchar)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def measured(fn) -> tuple[float, int]:
    """Wall seconds and bytes read of ``fn()``."""
    start, before = time.perf_counter(), bytes_read()
    fn()
    return time.perf_counter() - start, bytes_read() - before


def main() -> None:
    key = keys.generate()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sample(tmp / "raw", counts=COUNTS, size=SIZE, seed=0)
        encrypt_dataset(str(tmp / "raw"), str(tmp / "store.zarr"), key, workers=2)
        weights = write_random_vit(tmp / "vit.safetensors", ARCH)
        checkpoint = encrypt_checkpoint(weights, ARCH, key, tmp / "backbone.safetensors")

        def copy() -> None:
            shutil.copytree(tmp / "store.zarr", tmp / "copy" / "dataset.zarr")
            shutil.copy(checkpoint, tmp / "copy")

        copy_s, _ = measured(copy)
        summary = None

        def first() -> None:
            nonlocal summary
            summary = publish(str(tmp / "store.zarr"), str(checkpoint), str(tmp / "bundle"), key)

        first_s, first_read = measured(first)
        again = None

        def republish() -> None:
            nonlocal again
            again = publish(str(tmp / "store.zarr"), str(checkpoint), str(tmp / "bundle"), key)

        again_s, again_read = measured(republish)
        published = summary.bytes
        print(f"{len(summary.manifest.objects)} objects, {published / 2**20:.0f} MiB ({sum(COUNTS.values())} images of "
              f"{SIZE[0]}x{SIZE[1]} and a {ARCH} checkpoint)")
        print(f"  first publish  {first_read / published:.3f} bytes read per byte published (target <= 1.10); "
              f"{first_s:.1f} s = {first_s / copy_s:.2f}x shutil.copytree ({copy_s:.1f} s)")
        print(f"  republish      {again_read / published:.3f} bytes read per byte published (target <= 1.10); "
              f"{again_s:.1f} s, {again.copied} of {len(again.manifest.objects)} objects written again (the checkpoint)")


if __name__ == "__main__":
    main()
