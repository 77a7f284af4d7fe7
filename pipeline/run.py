"""The owner-side command line: ``python -m pipeline.run --stage NAME [options]``.

Every stage is a thin adapter from :class:`pipeline.config.Options` to one typed public function
of a pipeline module; the DAG and the tests call the same functions or this command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from enum import Enum
from pathlib import Path

from contract.errors import run_reporting
from pipeline.config import OUT_DEFAULTS, Options, resolve
from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the right number: '1 image', '2 images', '3 queries'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def stage_sample(o: Options) -> None:
    """Generate a synthetic sample of the dataset's layout (Cityscapes by default) and a random-init timm checkpoint."""
    from pipeline import sample

    layout = o.layout
    splits = sample.SAMPLE_SPLITS.get(layout, ())
    if not splits:
        raise PipelineError(f"--stage sample writes the built-in layouts only ({', '.join(sample.SAMPLE_SPLITS)}), not {layout}")
    if o.sample_counts is not None and len(o.sample_counts) > len(splits):
        raise PipelineError(f"--sample-counts: the {layout} sample has {len(splits)} splits ({', '.join(splits)})")
    counts = dict(zip(splits, o.sample_counts or (8, 4, 2)))
    paths = sample.write_dataset(layout, o.raw_path, counts=counts, size=o.sample_size, seed=o.seed)
    log.info("wrote %s under %s", count(len(paths), "sample image"), o.raw_path)
    if layout == "custom":
        log.info("its dataset description: %s/dataset.toml (encrypt with --config %s/dataset.toml)", o.raw_path, o.raw_path)
    if o.weights is None and o.raw is not None:  # only under the paths it was given
        log.info("no --weights given: no stand-in checkpoint written")
        return
    sample.write_random_vit(o.weights_path, o.arch, seed=o.seed)
    log.info("wrote a random-init %s checkpoint to %s", o.arch, o.weights_path)


def stage_augment(o: Options) -> None:
    """Owner-side augmentation: --raw to --out with --copies flipped, rescaled copies of each training image."""
    from pipeline import augment

    if not o.out:
        raise PipelineError("--stage augment needs --out (a folder for the augmented Cityscapes tree)")
    _require(o.raw_path, "the Cityscapes tree to augment (--raw)")
    written = augment.augment_tree(o.raw_path, o.out, copies=o.copies, seed=o.seed)
    log.info("wrote %s with %s; encrypt it with --raw %s", o.out, count(len(written), "augmented training image"), o.out)


def stage_keygen(o: Options) -> None:
    """Create a new secret key file (mode 0600); never overwrites one."""
    from contract.signing import save_signer
    from pipeline import keys

    key = keys.generate(o.block_size, o.negative_positive)
    keys.check_key_path(o.key_path, not_inside=(o.store, o.bundle))
    if Path(o.signer_path).exists() or Path(o.signer_path).is_symlink():  # a new key's signer is new: refuse before writing
        raise PipelineError(f"{o.signer_path}: a signer file is already there (another key's); give --signer a new path")
    path = keys.save(key, o.key_path, not_inside=(o.store, o.bundle))
    signer = save_signer(key.signer(), o.signer_path)
    log.info("wrote a new key to %s (key id %s); keep it secret", path, key.key_id)
    log.info("wrote the owner's public signer file to %s: give it to the cloud with every bundle", signer)


def stage_encrypt(o: Options) -> None:
    """Encrypt the dataset's tree (--dataset, Cityscapes by default) into the dataset store (Dask; resumes an interrupted run)."""
    from pipeline import encrypt, keys

    summary = encrypt.encrypt_dataset(
        o.raw_path,
        o.store,
        None if o.plain else keys.load(o.key_path),
        workers=o.workers,
        dataset=o.dataset_spec(),
        resize=o.resize,
        padded_to=o.block_size,
        scheduler=o.scheduler,
        on_error=o.on_error,
        shard_size=o.shard_size,
        storage_options=o.storage_options,
    )
    _log_encrypted(summary)


def _log_encrypted(summary) -> None:
    log.info(
        "%s: %s (%s written, %d already done, %s skipped)",
        summary.store, ", ".join(f"{n} {split}" for split, n in summary.samples.items()),
        count(summary.shards_written, "shard"), summary.shards_reused, count(len(summary.skipped), "image"),
    )
    for skip in summary.skipped:
        log.warning("skipped %s: %s", skip.file, skip.reason)


def stage_decrypt(o: Options) -> None:
    """Decrypt samples of the dataset store back to PNGs under --out (--names: some of them)."""
    from pipeline import decrypt, keys

    if not o.out:
        raise PipelineError("--stage decrypt needs --out (a folder for the decrypted PNGs)")
    paths = decrypt.decrypt_samples(o.store, keys.load(o.key_path), o.out, names=o.names, storage_options=o.storage_options)
    log.info("wrote %s under %s", count(len(paths), "decrypted image"), o.out)


def stage_encrypt_weights(o: Options) -> None:
    """Encrypt the patch embedding of a timm ViT checkpoint into an mmseg safetensors file."""
    from pipeline import keys, weights

    if o.checkpoint:  # conventional 1: a model fine-tuned on plain images, for encrypted ones
        if not o.out:
            raise PipelineError("--stage encrypt-weights --checkpoint (fine-tuned, plain) needs --out (encrypted)")
        _require(o.checkpoint, "the fine-tuned plain checkpoint (--checkpoint)")
        reference = o.encrypted_weights if Path(o.encrypted_weights).exists() else None
        out = weights.encrypt_finetuned_checkpoint(o.checkpoint, keys.load(o.key_path), o.out, reference)
        log.info("wrote the encrypted fine-tuned checkpoint to %s", out)
        return
    _require(o.weights_path, "the source checkpoint (--weights); run --stage sample for a stand-in")
    key = None if o.plain else keys.load(o.key_path)
    out = weights.encrypt_checkpoint(o.weights_path, o.arch, key, o.encrypted_weights)
    log.info("wrote the encrypted checkpoint to %s", out)


def stage_decrypt_weights(o: Options) -> None:
    """Turn a fine-tuned encrypted checkpoint (--checkpoint) back into a plain model (--out)."""
    from pipeline import keys, weights

    if not o.checkpoint or not o.out:
        raise PipelineError("--stage decrypt-weights needs --checkpoint (encrypted) and --out (plain)")
    _require(o.checkpoint, "the encrypted checkpoint (--checkpoint)")
    reference = o.encrypted_weights if Path(o.encrypted_weights).exists() else None
    out = weights.decrypt_checkpoint(o.checkpoint, keys.load(o.key_path), o.out, reference)
    log.info("wrote the decrypted checkpoint to %s", out)


def stage_encrypt_query(o: Options) -> None:
    """User side: encrypt query images (--query) with the key for the cloud (--out)."""
    from pipeline import keys, query

    if not o.query:
        raise PipelineError("--stage encrypt-query needs --query IMAGE [IMAGE ...]")
    out = o.out_path("encrypt-query")
    written = query.encrypt_queries(o.query, keys.load(o.key_path), out)
    log.info("wrote %s to %s", count(len(written), "encrypted query", "encrypted queries"), out)


def stage_query(o: Options) -> None:
    """User side: have the cloud's service (--server) segment query images (--query), encrypted in memory; maps to --out."""
    from pipeline import client, keys

    if not o.query:
        raise PipelineError("--stage query needs --query IMAGE [IMAGE ...]")
    out = o.out_path("query")
    client.segment_queries(o.server, o.query, keys.load(o.key_path), out, concurrency=o.concurrency, legend=o.legend)
    log.info("wrote the maps of %s to %s", count(len(o.query), "query", "queries"), out)


def stage_publish(o: Options) -> None:
    """Publish the store and checkpoint as the cloud's bundle, signed by the owner and free of the key."""
    from contract.signing import save_signer
    from pipeline import bundle, keys

    key = keys.load(o.key_path)
    signer = save_signer(key.signer(), o.signer_path)  # first: what the cloud checks the bundle with
    _log_published(bundle.publish(o.store, o.encrypted_weights, o.bundle, key, storage_options=o.storage_options), o, signer)


def _log_published(summary, o: Options, signer: Path) -> None:
    for name in summary.ignored:
        log.warning("ignored %s/%s: not signed by this owner", o.bundle, name)
    for name in summary.left_out:
        log.warning("left out of the bundle (no part of the dataset store): %s/%s", o.store, name)
    log.info(
        "published %s (%.1f MiB) to %s as publication %d: %d copied, %d unchanged, %d stale removed; signed by owner %s",
        count(len(summary.manifest.objects), "object"), summary.bytes / 2**20, o.bundle, summary.manifest.sequence,
        summary.copied, summary.reused, len(summary.removed), summary.manifest.signer,
    )
    print(
        f"\nGive the cloud these two, and nothing else:\n"
        f"  the bundle       {o.bundle}\n"
        f"  the signer file  {signer}  (public: lets the cloud check the bundle is yours)\n"
        f"The key file {o.key_path} stays with the owner and the users who encrypt queries."
    )


def stage_verify(o: Options) -> None:
    """Check a bundle (the cloud's first step): with --signer, that the owner signed it; always, that it is whole.

    With --key (the owner), the bundle is checked against the key's own signer and scanned for the key."""
    from contract.bundle import verify_bundle
    from contract.signing import load_signer
    from pipeline import bundle, keys

    if o.key:
        verified = bundle.check_published(o.bundle, keys.load(o.key), storage_options=o.storage_options)
        log.info("%s; no object holds any form of the key", verified.summary())
        return
    signer = load_signer(o.signer) if o.signer else None
    log.info("%s", verify_bundle(o.bundle, signer=signer, storage_options=o.storage_options).summary())


def stage_audit(o: Options) -> None:
    """Audit the key on --audit-images images of the val split: a report for the owner only (--out)."""
    from pipeline import audit, keys

    images = audit.read_images(o.raw_path, o.audit_images, storage_options=o.storage_options)
    embeddings = None
    if Path(o.weights_path).exists() and Path(o.encrypted_weights).exists():  # the known-model attack
        from pipeline import weights

        embeddings = weights.patch_embeddings(o.weights_path, o.arch, o.encrypted_weights)
    report = audit.write_report(images, keys.load(o.key_path), o.out_path("audit"), embeddings)
    log.info("wrote the audit of %s to %s (it shows plain images: never publish it)", count(len(images), "image"), report)


def stage_all(o: Options) -> None:
    """The owner's whole job: encrypt, encrypt-weights, publish (the sample and a key first, on the sample's paths)."""
    from contract.signing import save_signer
    from pipeline import job, keys

    demo = o.demo or (o.raw, o.key, o.weights) == (None, None, None)
    if demo:  # the generated sample and a new key, only where the defaults say (or with --demo)
        if not Path(o.raw_path).exists():
            stage_sample(o)
        if not Path(o.key_path).exists():
            stage_keygen(o)
    for path, what in ((o.raw_path, "--raw"), (o.key_path, "--key"), (o.weights_path, "--weights")):
        _require(path, f"{what}; --stage all generates the sample and a key only on the default paths or with --demo")
    key = keys.load(o.key_path)
    signer = save_signer(key.signer(), o.signer_path)
    built = job.build_bundle(
        o.raw_path, o.weights_path, o.arch, key, store=o.store, checkpoint=o.encrypted_weights, bundle=o.bundle,
        plain=o.plain, dataset=o.dataset_spec(), resize=o.resize, padded_to=o.block_size, workers=o.workers,
        scheduler=o.scheduler, on_error=o.on_error, shard_size=o.shard_size, storage_options=o.storage_options,
    )  # fmt: skip
    _log_encrypted(built.encrypted)
    log.info("wrote the encrypted checkpoint to %s", built.checkpoint)
    _log_published(built.published, o, signer)


STAGES: dict[str, Callable[[Options], None]] = {
    "sample": stage_sample,
    "augment": stage_augment,
    "keygen": stage_keygen,
    "encrypt": stage_encrypt,
    "decrypt": stage_decrypt,
    "encrypt-weights": stage_encrypt_weights,
    "decrypt-weights": stage_decrypt_weights,
    "publish": stage_publish,
    "verify": stage_verify,
    "encrypt-query": stage_encrypt_query,
    "query": stage_query,
    "audit": stage_audit,
    "all": stage_all,
}


def _require(path: str, what: str) -> None:
    if "://" not in path and not Path(path).exists():
        raise PipelineError(f"{path}: not found; this is {what}")


def shown_defaults() -> dict[str, str]:
    """Each option's default as ``--help`` shows it, read from :class:`Options`: written as the option takes it,
    for the options that have one (and the paths the stages derive when none is given)."""
    o = Options()
    shown = {}
    for f in fields(Options):
        value = getattr(o, f.name)
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, tuple):
            value = ("x" if f.name == "sample_size" else ",").join(map(str, value))
        if value is not None and value is not False and value != "" and not isinstance(value, dict):
            shown[f.name] = str(value)
    return {**shown, "raw": o.raw_path, "key": o.key_path, "signer": o.signer_path, "weights": o.weights_path}


def parser() -> argparse.ArgumentParser:
    stages = "\n".join(f"  {name:16s} {fn.__doc__.splitlines()[0]}" for name, fn in STAGES.items())
    p = argparse.ArgumentParser(
        prog="python -m pipeline.run",
        description="Data-owner side of cipherseg. Every option defaults to the sample under data/.",
        epilog=f"stages:\n{stages}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=None,
    )
    defaults = shown_defaults()

    def option(flag: str, help: str, **kwargs) -> None:
        name = flag.removeprefix("--").replace("-", "_")
        p.add_argument(flag, help=help + (f" (default: {defaults[name]})" if name in defaults else ""), **kwargs)

    out = ", ".join(f"{stage} to {path}" for stage, path in OUT_DEFAULTS.items())
    p.add_argument("--stage", required=True, metavar="NAME", help="the stage to run (listed below)")
    p.add_argument("--config", metavar="FILE", help="TOML file of options; flags override it")
    option("--raw", "the dataset's root folder (Cityscapes: leftImg8bit/, gtFine/, gtCoarse/); data/raw/<dataset> unless given",
           metavar="PATH|URL")  # fmt: skip
    option("--dataset", "the raw tree's layout: cityscapes, ade20k, voc, or custom (a [dataset] table in --config)", metavar="NAME")
    option("--resize", "encrypt: resize every image first to fit LONG,SHORT (mmseg's Resize scale, keep_ratio)", metavar="LONG,SHORT")
    option("--key", "the owner's secret key file", metavar="PATH")
    option("--signer", "the owner's public signer file, beside --key unless given", metavar="PATH")
    option("--store", "the encrypted dataset store (Zarr)", metavar="PATH|URL")
    option("--weights", "source timm checkpoint (plain, pretrained), named for --arch unless given", metavar="PATH")
    option("--arch", "timm architecture of --weights", metavar="NAME")
    option("--encrypted-weights", "the encrypted checkpoint written for the cloud", metavar="PATH")
    option("--bundle", "the published bundle", metavar="PATH|URL")
    option("--checkpoint", "a fine-tuned checkpoint: encrypted for decrypt-weights, plain for encrypt-weights", metavar="PATH")
    option("--query", "encrypt-query, query: the user's plain images (PNG or JPEG, any size)", nargs="+", metavar="IMAGE")
    option("--server", "query: the cloud's segmentation service (python -m training.serve)", metavar="URL")
    option("--concurrency", "query: requests at once", metavar="N")
    option("--legend", "query: also write legend.png (class colours and names)", action="store_true", default=None)
    option("--out", f"output of augment, decrypt, decrypt-weights, encrypt-weights --checkpoint, encrypt-query, query, audit; "
                    f"without it, {out}", metavar="PATH")  # fmt: skip
    option("--workers", "local worker processes, one per core unless given", metavar="N")
    option("--scheduler", "an existing Dask scheduler, tcp://host:port; without it, a local cluster", metavar="ADDRESS")
    option("--on-error", "bad input files: stop, or skip and record", metavar="fail|skip")
    option("--shard-size", "encrypt: images per Zarr shard (one Dask task each)", metavar="N")
    option("--plain", "encrypt, encrypt-weights, publish: without a key (the baseline)", action="store_true", default=None)
    option("--names", "decrypt: the samples to export; without it, all", metavar="A,B,...")
    option("--audit-images", "audit: how many images of --raw's val split to measure on", metavar="N")
    option("--block-size", "keygen: block size (the ViT patch size); encrypt --plain: the padding's multiple", metavar="P")
    option("--negative-positive", "keygen: also invert key-chosen positions", action="store_true", default=None)
    option("--seed", "sample, augment: random seed", metavar="N")
    option("--copies", "augment: augmented copies of each training image", metavar="N")
    option("--sample-counts", "sample: images per split, in the layout's order (Cityscapes: train, val, test, train_extra); "
                              "default 8,4,2", metavar="N,N,...")  # fmt: skip
    option("--sample-size", "sample: image size", metavar="HxW")
    option("--demo", "all: generate the sample and a key where missing", action="store_true", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # A corrupt PNG is reported in one line of ours: OpenCV, imported later by the stages (and by the
    # local cluster's workers, which inherit this), would print a warning line of its own beside it.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    stage, config = args.pop("stage"), args.pop("config")

    def run() -> None:
        if stage not in STAGES:
            raise PipelineError(f"unknown stage {stage!r}; the stages are: {', '.join(STAGES)}")
        STAGES[stage](resolve(config, args))

    return run_reporting(run)


if __name__ == "__main__":
    sys.exit(main())
