"""Model encryption (paper section III-C): the block cipher folded into a ViT's patch embedding.

The patch embedding is affine in the normalized block vector, z = E u + b, so it can absorb the
key's transform exactly. Block vectors use the canonical order of pipeline/cipher.py: a PxPx3
block of an HWC RGB image flattened in (row, column, channel) order, index k = (r * P + c) * 3 + ch;
the conv weight (D, 3, P, P) enters that order as (D, P, P, 3) flattened.

The encrypted image is v'[k] = a_k v[perm[k]] + c_k (a = -1, c = 255 where the negative-positive
flip is set, else a = 1, c = 0). The pretrained model expects images normalized with its own
per-channel mean M0 and std S0; the cloud normalizes encrypted images with M and S (M[k], S[k] those
of the channel of position k). With j = perm[k],

    E'[:, k] = E[:, j] * a_k * S[k] / S0[j]
    b'       = b + sum_k E[:, j] * (a_k * (M[k] - c_k) - M0[j]) / S0[j]

gives E' u' + b' = E u + b for every block: the encrypted model on normalized encrypted images
computes exactly what the plain model computes on normalized plain images.

The cloud's normalization is uniform: one mean and one std for all three channels (the pretrained
model's own when it is uniform already, as for timm's augreg ViTs, else the average). Then the fold
is a pure permutation of E's columns (plus a sign per flipped position): an orthogonal
reparametrization, to which SGD and AdamW are equivariant. Training the encrypted model on
encrypted images then follows exactly the trajectory of training the plain model, normalized the
same way, on plain images. Per-channel scales would make it a non-orthogonal one, and the two
trajectories would drift apart from the first update on.

The fold needs a first layer that sees each PxP block alone: a non-overlapping patch embedding. The
timm architectures with one that mmseg has a backbone for are ViTs (mmseg's VisionTransformer) and
BEiTs (mmseg's BEiT, whose relative position bias acts after the patch embedding); any other is
refused, naming its first layer. The owner side never imports mmseg: weights are renamed to mmseg's
layout here, and the checkpoint's metadata names that layout for the cloud's check.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from contract.errors import FormatError, quoted
from contract.formats import CheckpointMetadata, Normalization, describe_cipher
from contract.outputs import OutputKind, guarded_path
from contract.registry import FAMILIES, PATCH_BIAS, PATCH_WEIGHT, BackboneFamily, FirstLayer, family_of_timm, fit_problems, why_no_fold
from pipeline.cipher import from_blocks, to_blocks
from pipeline.errors import PipelineError
from pipeline.keys import Key


def pretrained_normalization(arch: str) -> Normalization:
    """The normalization ``arch`` was pretrained with, from timm's pretrained config (offline)."""
    config = timm.get_pretrained_cfg(arch)
    return Normalization(mean=tuple(255.0 * m for m in config.mean), std=tuple(255.0 * s for s in config.std))


def load_timm_checkpoint(path: str | Path, arch: str) -> dict[str, torch.Tensor]:
    """The state dict of a timm ViT or BEiT checkpoint (.safetensors, .pth/.bin, JAX .npz), checked against ``arch``.

    Names and shapes must match ``timm.create_model(arch)``, except the classifier head (any number
    of classes) and the shapes of the weights whose grid follows the pretraining resolution (mmseg
    resamples them).
    """
    path = Path(path)
    reference, family = _reference_model(path, arch)
    state = _read_npz(path, arch) if path.suffix == ".npz" else _read_weights(path)[0]
    problems = fit_problems(
        {name: tuple(t.shape) for name, t in reference.state_dict().items() if not name.startswith("head.")},
        {name: tuple(t.shape) for name, t in state.items() if not name.startswith("head.")},
        family.resampled,
    )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PipelineError(f"{quoted(path)}: not a {arch} checkpoint: {shown}")
    return state


def _reference_model(path: Path, arch: str) -> tuple[torch.nn.Module, BackboneFamily]:
    """``arch`` on the meta device (names and shapes only, no memory) and its family, if a key can be folded into it."""
    if not timm.is_model(arch):
        raise PipelineError(f"{quoted(path)}: unknown architecture {arch!r} (not a timm model name)")
    with torch.device("meta"):
        reference = timm.create_model(arch)
    family = next((f for cls in type(reference).__mro__ if (f := family_of_timm(cls.__name__))), None)
    if family is None:
        classes = [f.timm_class for f in FAMILIES.values()]
        supported = f"cipherseg converts timm {' and '.join(classes)} models"
        why = why_no_fold(first_layer(reference), supported)
        raise PipelineError(f"{quoted(path)}: {arch!r} is not a timm {' or '.join(classes)}: {why}")
    return reference, family


def first_layer(model: torch.nn.Module) -> FirstLayer | None:
    """The first convolution of ``model``, described for :func:`contract.registry.why_no_fold`."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)), (None, None))
    if conv is None:
        return None
    return FirstLayer(name, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)


def timm_to_mmseg(state: dict[str, torch.Tensor], layout: str = CheckpointMetadata.LAYOUT) -> dict[str, torch.Tensor]:
    """Rename a timm ViT (or BEiT, for the BEiT layout) state dict to mmseg's names; the classifier is dropped.

    Raises ValueError for weights mmseg's backbone has no place for (layer scale, register tokens,
    a pre-norm, ...).
    """
    names = FAMILIES[layout].to_mmseg(list(state))
    return {names[name]: tensor for name, tensor in state.items() if name in names}


def encrypt_patch_embedding(
    weight: torch.Tensor, bias: torch.Tensor, key: Key | None, source: Normalization, target: Normalization
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patch embedding (conv weight (D, 3, P, P), bias (D,)) for images encrypted with ``key``.

    The original reads images normalized with ``source``; the result reads encrypted images
    normalized with ``target``. ``key=None`` only changes the normalization.
    """
    vectors = _block_vectors(weight, key)
    perm, a, c, m0, s0, m, s = _fold_terms(weight.shape[-1], key, source, target)
    columns = vectors[:, perm] / s0[perm]  # column k: E[:, j] / S0[j], j = perm[k]
    folded_bias = bias.double() + columns @ (a * (m - c) - m0[perm])
    return _conv_weight(columns * (a * s), weight), folded_bias.to(bias.dtype)


def decrypt_patch_embedding(
    weight: torch.Tensor, bias: torch.Tensor, key: Key | None, source: Normalization, target: Normalization
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encrypt_patch_embedding`: the patch embedding for plain ``source``-normalized images."""
    vectors = _block_vectors(weight, key)
    perm, a, c, m0, s0, m, s = _fold_terms(weight.shape[-1], key, source, target)
    columns = vectors * a / s  # a = +-1 is its own inverse
    plain = torch.empty_like(columns)
    plain[:, perm] = columns * s0[perm]
    plain_bias = bias.double() - columns @ (a * (m - c) - m0[perm])
    return _conv_weight(plain, weight), plain_bias.to(bias.dtype)


def encrypt_checkpoint(source: str | Path, arch: str, key: Key | None, out: str | Path) -> Path:
    """Encrypt a timm ViT or BEiT checkpoint for ``key`` into an mmseg-layout safetensors file at ``out``.

    ``key=None`` writes the plain model the same way (the baselines need it). The metadata records
    the normalization the cloud must use and the one the source was pretrained with.
    """
    source, out = Path(source), Path(out)
    state = load_timm_checkpoint(source, arch)
    layout = _reference_model(source, arch)[1].layout
    pretrained = pretrained_normalization(arch)
    cloud = pretrained.uniform()
    try:
        state = timm_to_mmseg(state, layout)
        weight, bias = encrypt_patch_embedding(state[PATCH_WEIGHT], state[PATCH_BIAS], key, pretrained, cloud)
    except ValueError as error:
        raise PipelineError(f"{source}: {error}") from None
    state[PATCH_WEIGHT], state[PATCH_BIAS] = weight, bias
    metadata = CheckpointMetadata.of(
        key.spec() if key else None, cloud, pretrained, layout=layout, source_arch=arch, source_sha256=_sha256(source)
    )
    _write_atomically(state, metadata, out)
    return out


def patch_embeddings(source: str | Path, arch: str, encrypted: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The patch-embedding weights of a plain timm checkpoint and of an encrypted checkpoint made from it."""
    plain = load_timm_checkpoint(source, arch)["patch_embed.proj.weight"]
    state, _ = _read_weights(Path(encrypted))
    if PATCH_WEIGHT not in state:
        raise PipelineError(f"{encrypted}: no {PATCH_WEIGHT}: not an encrypted checkpoint")
    return plain.numpy(), state[PATCH_WEIGHT].numpy()


def decrypt_checkpoint(source: str | Path, key: Key, out: str | Path, reference: str | Path | None = None) -> Path:
    """Undo the fold on an encrypted (fine-tuned) mmseg checkpoint: the result reads plain images.

    Accepts our safetensors files and weights-only .pth files, with the weights optionally nested
    under ``state_dict`` and prefixed (``backbone.`` in a whole segmentor); every other weight is
    copied unchanged. A file without our metadata (a .pth) is decrypted with the metadata of
    ``reference``, the encrypted checkpoint it was fine-tuned from.
    """
    source, out = Path(source), Path(out)
    state, metadata = _read_weights(source)
    info = _checkpoint_info(metadata, reference, source)
    if info.cipher is None:
        raise PipelineError(f"{source}: this checkpoint is not encrypted")
    if info.cipher != key.spec():
        raise PipelineError(f"{source}: made for {describe_cipher(info.cipher)}, not for this key ({key.key_id})")
    names = _patch_embedding(state, source)
    # The fold must be undone with the normalizations it was made for.
    cloud, pretrained = info.normalization, info.source_normalization
    _refold(state, names, source, lambda w, b: decrypt_patch_embedding(w, b, key, pretrained, cloud))
    _write_atomically(state, _refolded(info, None, pretrained, pretrained, source), out)
    return out


def encrypt_finetuned_checkpoint(
    source: str | Path, key: Key, out: str | Path, reference: str | Path | None = None
) -> Path:
    """Fold ``key`` into a fine-tuned plain mmseg checkpoint: the result reads encrypted images.

    The mirror of :func:`decrypt_checkpoint`, for conventional method 1 (a model fine-tuned on
    plain images, then encrypted by the owner), with the same inputs. The plain model reads images
    normalized as its metadata says, or as ``reference``'s (a checkpoint of the bundle it was
    fine-tuned on, plain or encrypted: both record the cloud's normalization); the result reads
    encrypted images normalized with one mean and std for all channels.
    """
    source, out = Path(source), Path(out)
    state, metadata = _read_weights(source)
    if metadata and _checkpoint_info(metadata, None, source).is_encrypted:
        raise PipelineError(f"{source}: this checkpoint is encrypted already")
    info = _checkpoint_info(metadata, reference, source)
    names = _patch_embedding(state, source)
    plain = info.normalization
    cloud = plain.uniform()
    _refold(state, names, source, lambda w, b: encrypt_patch_embedding(w, b, key, plain, cloud))
    _write_atomically(state, _refolded(info, key, cloud, plain, source), out)
    return out


def _checkpoint_info(metadata: dict[str, str], reference: str | Path | None, source: Path) -> CheckpointMetadata:
    """The checkpoint's own metadata, or else ``reference``'s (the checkpoint it was fine-tuned from)."""
    if not metadata:
        if reference is None:
            raise PipelineError(
                f"{source}: carries no cipherseg metadata; give the checkpoint it was fine-tuned from (--encrypted-weights)"
            )
        source, metadata = Path(reference), _read_weights(Path(reference))[1]
    try:
        return CheckpointMetadata.parse_metadata(metadata, str(source))
    except FormatError as error:
        raise PipelineError(str(error)) from None


def _refolded(
    info: CheckpointMetadata, key: Key | None, cloud: Normalization, source_normalization: Normalization, source: Path
) -> CheckpointMetadata:
    """The metadata of a checkpoint refolded from ``info``'s: its layout and arch, and the hash of the file it came from."""
    return CheckpointMetadata.of(
        key.spec() if key else None,
        cloud,
        source_normalization,
        layout=info.layout,
        source_arch=info.source_arch,
        source_sha256=_sha256(source),
    )


def _patch_embedding(state: dict[str, torch.Tensor], source: Path) -> tuple[str, str]:
    """The names of the one mmseg patch embedding's weight and bias in ``state`` (any prefix)."""
    names = [name for name in state if name.endswith(PATCH_WEIGHT)]
    if len(names) != 1:
        raise PipelineError(
            f"{source}: expected one mmseg patch embedding ({PATCH_WEIGHT}), found {len(names)}"
        )
    weight_name = names[0]
    bias_name = weight_name.removesuffix(PATCH_WEIGHT) + PATCH_BIAS
    if bias_name not in state:
        raise PipelineError(f"{source}: no {bias_name}: the backbone must be built with patch_bias=True")
    return weight_name, bias_name


def _refold(state: dict[str, torch.Tensor], names: tuple[str, str], source: Path, fold) -> None:
    """Replace the patch embedding (weight, bias) named ``names`` by ``fold(weight, bias)``, in place."""
    try:
        state[names[0]], state[names[1]] = fold(state[names[0]], state[names[1]])
    except ValueError as error:
        raise PipelineError(f"{source}: {error}") from None


def _block_vectors(weight: torch.Tensor, key: Key | None) -> torch.Tensor:
    """Conv weight (D, 3, P, P) as (D, 3P²) float64, columns in canonical block-vector order: each output
    channel's filter is a PxP RGB block, taken apart as pipeline.cipher.to_blocks takes images apart."""
    p = key.block_size if key else weight.shape[-1]
    if weight.shape[1:] != (3, p, p):
        raise ValueError(
            f"patch embedding of shape {tuple(weight.shape)} does not fit the key's {p}x{p} RGB blocks "
            "(the patch size must equal the block size)"
        )
    return torch.from_numpy(to_blocks(weight.double().permute(0, 2, 3, 1).numpy(), p))


def _conv_weight(vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_block_vectors`, in the dtype of ``like``."""
    d, _, p, _ = like.shape
    blocks = from_blocks(vectors.numpy(), (d, p, p, 3), p)
    return torch.from_numpy(blocks).permute(0, 3, 1, 2).to(like.dtype).contiguous()


def _fold_terms(
    p: int, key: Key | None, source: Normalization, target: Normalization
) -> tuple[torch.Tensor, ...]:
    """perm, and a, c, M0, S0, M, S (float64) for every block-vector position (module docstring)."""
    channel = np.arange(3 * p * p) % 3
    perm = key.permutation if key else np.arange(channel.size)
    flip = key.flip if key and key.flip is not None else np.zeros(channel.size, dtype=bool)
    a, c = np.where(flip, -1.0, 1.0), np.where(flip, 255.0, 0.0)
    per_position = [np.asarray(v, dtype=np.float64)[channel] for v in (source.mean, source.std, target.mean, target.std)]
    return tuple(torch.from_numpy(t) for t in (perm, a, c, *per_position))


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata of a .safetensors file, or the tensors of a torch file.

    A torch file is unpickled in torch's weights-only mode and nothing more: a pretrained model's state
    dict (timm's .pth/.bin, optionally under ``state_dict`` or ``model``) reads; a file that names any
    other object, such as an mmengine training checkpoint from the cloud, is refused: the owner never
    unpickles what the cloud wrote, which exports its models as safetensors (``python -m training.export``).
    """
    if not path.is_file():
        raise PipelineError(f"{quoted(path)}: no such file")
    try:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as f:
                return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever a parser raises on a damaged or foreign file
        # torch's messages suggest weights_only=False: not advice to pass on.
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        if named and named.group(1).startswith("mmengine."):
            reason = "an mmengine training checkpoint: the cloud turns it into safetensors with python -m training.export"
        elif named:
            reason = f"it names {named.group(1)}, which is never unpickled"
        elif isinstance(error, (pickle.UnpicklingError, EOFError, RuntimeError)):
            reason = "damaged, or not a torch file"
        else:
            reason = type(error).__name__
        raise PipelineError(f"{quoted(path)}: not a readable checkpoint ({reason})") from None
    for container in ("state_dict", "model"):  # timm and other training checkpoints
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(container), dict):
            checkpoint = checkpoint[container]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(t, torch.Tensor) for t in checkpoint.values()):
        raise PipelineError(f"{quoted(path)}: not a state dict of tensors")
    return dict(checkpoint), {}


def _read_npz(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """A JAX/Flax ViT .npz (Google's original releases), read by timm into a fresh ``arch`` model."""
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    model = timm.create_model(arch)
    try:
        timm.models.vision_transformer._load_weights(model, str(path))
    except Exception as error:  # whatever a parser raises on a damaged or foreign file
        raise PipelineError(
            f"{path}: not a readable {arch} .npz checkpoint ({type(error).__name__}: {error})"
        ) from None
    return model.state_dict()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomically(state: dict[str, torch.Tensor], metadata: CheckpointMetadata, out: Path) -> None:
    """Write a safetensors file that either appears complete at ``out`` or not at all (never over an owner's file)."""
    try:
        with guarded_path(out, OutputKind.CHECKPOINT) as temporary:
            save_file({name: t.contiguous() for name, t in state.items()}, temporary, metadata=metadata.to_metadata())
    except OSError as error:
        raise PipelineError(f"{quoted(out)}: cannot write ({error.strerror or error})") from None
