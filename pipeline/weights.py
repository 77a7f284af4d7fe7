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

The owner side never imports mmseg: weights are renamed to mmseg's VisionTransformer layout here.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.errors import PipelineError
from pipeline.keys import Key
from pipeline.storage import atomic_path


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of RGB images on the 0-255 scale."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def uniform(self) -> Normalization:
        """One mean and one std for all channels: the cloud's normalization (see the module docstring)."""
        return Normalization((float(np.mean(self.mean)),) * 3, (float(np.mean(self.std)),) * 3)


def pretrained_normalization(arch: str) -> Normalization:
    """The normalization ``arch`` was pretrained with, from timm's pretrained config (offline)."""
    config = timm.get_pretrained_cfg(arch)
    return Normalization(tuple(255.0 * m for m in config.mean), tuple(255.0 * s for s in config.std))


FORMAT = "cipherseg-checkpoint"
FORMAT_VERSION = "1"
LAYOUT = "mmseg.VisionTransformer"
PATCH_WEIGHT = "patch_embed.projection.weight"
PATCH_BIAS = "patch_embed.projection.bias"

# timm VisionTransformer name -> mmseg VisionTransformer name (full matches, in order).
_TIMM_TO_MMSEG = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"(cls_token|pos_embed)", r"\1"),
        (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.projection.\1"),
        (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"layers.\1.ln\2.\3"),
        (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"layers.\1.attn.attn.in_proj_\2"),
        (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layers.\1.attn.attn.out_proj.\2"),
        (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"layers.\1.ffn.layers.0.0.\2"),
        (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"layers.\1.ffn.layers.1.\2"),
        (r"norm\.(weight|bias)", r"ln1.\1"),
    )
)
# Classifier weights: a segmentation backbone has no use for them.
_CLASSIFIER = re.compile(r"(head|fc_norm)\..*")


def load_timm_checkpoint(path: str | Path, arch: str) -> dict[str, torch.Tensor]:
    """The state dict of a timm ViT checkpoint (.safetensors, .pth/.bin, JAX .npz), checked against ``arch``.

    Names and shapes must match ``timm.create_model(arch)``, except the classifier head (any number
    of classes) and the shape of ``pos_embed`` (its grid follows the pretraining resolution; mmseg
    resamples it).
    """
    path = Path(path)
    if not timm.is_model(arch):
        raise PipelineError(f"{path}: unknown architecture {arch!r} (not a timm model name)")
    with torch.device("meta"):  # names and shapes only, no memory
        reference = timm.create_model(arch)
    if not isinstance(reference, timm.models.VisionTransformer):
        raise PipelineError(f"{path}: {arch!r} is not a timm VisionTransformer")
    state = _read_npz(path, arch) if path.suffix == ".npz" else _read_weights(path)[0]

    expected = {name: t.shape for name, t in reference.state_dict().items() if not name.startswith("head.")}
    found = {name: t.shape for name, t in state.items() if not name.startswith("head.")}
    problems = [f"missing {name}" for name in expected if name not in found]
    problems += [f"unexpected {name}" for name in found if name not in expected]
    problems += [
        f"{name} has shape {tuple(found[name])}, {arch} has {tuple(shape)}"
        for name, shape in expected.items()
        if name in found and name != "pos_embed" and found[name] != shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PipelineError(f"{path}: not a {arch} checkpoint: {shown}")
    return state


def timm_to_mmseg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ViT state dict to mmseg's VisionTransformer names; the classifier is dropped.

    Raises ValueError for weights mmseg's VisionTransformer has no place for (layer scale,
    register tokens, a pre-norm, ...).
    """
    converted, unsupported = {}, []
    for name, tensor in state.items():
        if _CLASSIFIER.fullmatch(name):
            continue
        for pattern, replacement in _TIMM_TO_MMSEG:
            if match := pattern.fullmatch(name):
                converted[match.expand(replacement)] = tensor
                break
        else:
            unsupported.append(name)
    if unsupported:
        raise ValueError(f"mmseg's VisionTransformer has no place for {', '.join(unsupported[:5])}")
    return converted


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
    """Encrypt a timm ViT checkpoint for ``key`` into an mmseg-layout safetensors file at ``out``.

    ``key=None`` writes the plain model the same way (the baselines need it). The metadata records
    the normalization the cloud must use and the one the source was pretrained with.
    """
    source, out = Path(source), Path(out)
    state = load_timm_checkpoint(source, arch)
    pretrained = pretrained_normalization(arch)
    cloud = pretrained.uniform()
    try:
        state = timm_to_mmseg(state)
        weight, bias = encrypt_patch_embedding(state[PATCH_WEIGHT], state[PATCH_BIAS], key, pretrained, cloud)
    except ValueError as error:
        raise PipelineError(f"{source}: {error}") from None
    state[PATCH_WEIGHT], state[PATCH_BIAS] = weight, bias
    metadata = {
        **_metadata(key, cloud, pretrained),
        "layout": LAYOUT,
        "source_arch": arch,
        "source_sha256": _sha256(source),
    }
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
    if not metadata and reference is not None:
        metadata = _read_weights(Path(reference))[1]
    if metadata.get("key_id", key.key_id) != key.key_id:
        raise PipelineError(
            f"{source}: encrypted with key {metadata['key_id']}, not with this key ({key.key_id})"
        )
    if metadata.get("encrypted") == "false":
        raise PipelineError(f"{source}: this checkpoint is not encrypted")
    names = _patch_embedding(state, source)
    # The fold must be undone with the normalizations it was made for.
    cloud, pretrained = _normalization(metadata, "norm", source), _normalization(metadata, "source_norm", source)
    _refold(state, names, source, lambda w, b: decrypt_patch_embedding(w, b, key, pretrained, cloud))
    _write_atomically(state, {**_provenance(metadata, source), **_metadata(None, pretrained, pretrained)}, out)
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
    if metadata.get("encrypted") == "true":
        raise PipelineError(f"{source}: this checkpoint is encrypted already")
    if not metadata and reference is not None:
        metadata = _read_weights(Path(reference))[1]
    names = _patch_embedding(state, source)
    plain = _normalization(metadata, "norm", source)
    cloud = plain.uniform()
    _refold(state, names, source, lambda w, b: encrypt_patch_embedding(w, b, key, plain, cloud))
    _write_atomically(state, {**_provenance(metadata, source), **_metadata(key, cloud, plain)}, out)
    return out


def _normalization(metadata: dict[str, str], prefix: str, source: Path) -> Normalization:
    """The normalization recorded as ``<prefix>_mean`` and ``<prefix>_std`` in checkpoint metadata."""
    try:
        return Normalization(*(tuple(json.loads(metadata[f"{prefix}_{stat}"])) for stat in ("mean", "std")))
    except KeyError as error:
        raise PipelineError(f"{source}: the metadata lacks {error}, needed to fold or unfold the key") from None
    except ValueError as error:  # json.JSONDecodeError is one
        raise PipelineError(f"{source}: {error}") from None


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


def _provenance(metadata: dict[str, str], source: Path) -> dict[str, str]:
    """What a refolded checkpoint keeps of its source's metadata, and the source's hash."""
    return {
        **{name: metadata[name] for name in ("layout", "source_arch") if name in metadata},
        "source_sha256": _sha256(source),
    }


def _block_vectors(weight: torch.Tensor, key: Key | None) -> torch.Tensor:
    """Conv weight (D, 3, P, P) as (D, 3P²) float64, columns in canonical block-vector order."""
    p = key.block_size if key else weight.shape[-1]
    if weight.shape[1:] != (3, p, p):
        raise ValueError(
            f"patch embedding of shape {tuple(weight.shape)} does not fit the key's {p}x{p} RGB blocks "
            "(the patch size must equal the block size)"
        )
    return weight.double().permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _conv_weight(vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_block_vectors`, in the dtype of ``like``."""
    d, _, p, _ = like.shape
    return vectors.reshape(d, p, p, 3).permute(0, 3, 1, 2).to(like.dtype).contiguous()


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


def _metadata(key: Key | None, cloud: Normalization, pretrained: Normalization) -> dict[str, str]:
    """Safetensors metadata (strings only): the cipher, and the normalizations of the cloud and the source."""
    cipher = {"key_id": key.key_id, "block_size": str(key.block_size), "negative_positive": json.dumps(key.negative_positive)} if key else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encrypted": json.dumps(key is not None),
        **cipher,
        "norm_mean": json.dumps(list(cloud.mean)),
        "norm_std": json.dumps(list(cloud.std)),
        "source_norm_mean": json.dumps(list(pretrained.mean)),
        "source_norm_std": json.dumps(list(pretrained.std)),
        "channel_order": "RGB",
    }


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and safetensors metadata of a .safetensors or weights-only torch file."""
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as f:
                return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}
        # weights_only: never run code from a checkpoint file (a fine-tuned one comes from the cloud).
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever a parser raises on a damaged or foreign file
        objects = _pickled_objects(path)
        if objects:
            raise PipelineError(
                f"{path}: holds Python objects besides weights ({', '.join(objects[:3])}); refusing to "
                "unpickle it: give the model's weights alone, as .safetensors or a plain state dict"
            ) from None
        # torch's message for a damaged file suggests weights_only=False: not advice to pass on.
        damaged = isinstance(error, (pickle.UnpicklingError, EOFError))
        reason = "damaged, or not a torch file" if damaged else error
        raise PipelineError(f"{path}: not a readable checkpoint ({reason})") from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]  # mmengine and timm training checkpoints
    if not isinstance(checkpoint, dict) or not all(isinstance(t, torch.Tensor) for t in checkpoint.values()):
        raise PipelineError(f"{path}: not a state dict of tensors")
    return checkpoint, {}


def _pickled_objects(path: Path) -> list[str]:
    """Globals a torch file needs beyond what ``weights_only`` allows ([] if it cannot tell)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch zip file at all
        return []


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


def _write_atomically(state: dict[str, torch.Tensor], metadata: dict[str, str], out: Path) -> None:
    """Write a safetensors file that either appears complete at ``out`` or not at all."""
    try:
        with atomic_path(out) as temporary:
            save_file({name: t.contiguous() for name, t in state.items()}, temporary, metadata=metadata)
    except OSError as error:
        raise PipelineError(f"{out}: cannot write ({error})") from None
