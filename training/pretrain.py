"""Proxy pretraining for the small-scale Table I: a plain timm ViT that has learnt something to lose.

The paper fine-tunes ImageNet-pretrained ViTs; conventional method 2 loses accuracy because the
plain pretrained patch embedding does not fit encrypted images. A random-init backbone has nothing
to lose, so the small scale first pretrains one on other generated scenes than the ones it is
fine-tuned on, with a proxy task: coarse segmentation, every patch token tagged with the classes
that occur in its 16x16 patch (multi-label, so that thin and small objects count as much as the
large ones; a linear head on the last layer, dropped afterwards). The result is a plain timm
checkpoint, public like ImageNet weights: no key is involved.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import timm
import torch
import zarr
from safetensors.torch import save_file

log = logging.getLogger(__name__)

CLASSES = 19  # Cityscapes trainIds; 255 (ignored) is no class


def patch_classes(labels: np.ndarray, patch: int) -> np.ndarray:
    """Which classes occur in each patch of (N, H, W) trainId labels: (N, H/patch, W/patch, CLASSES) of 0 and 1."""
    n, h, w = labels.shape
    found = np.zeros((n, h // patch, w // patch, CLASSES), np.float32)
    for i, image in enumerate(labels):  # one image at a time: the one-hot blocks are 19 bytes a pixel
        blocks = image.reshape(h // patch, patch, w // patch, patch).transpose(0, 2, 1, 3).reshape(h // patch, w // patch, -1)
        found[i] = (blocks[..., None] == np.arange(CLASSES)).any(axis=2)
    return found


def pretrain(
    store: str | Path,
    arch: str,
    out: str | Path,
    *,
    steps: int,
    batch_size: int = 32,
    crop: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> Path:
    """Pretrain a timm ``arch``, from its random initialisation (``seed``), on the train split of a plain dataset
    store; write it to ``out``.

    Random block-aligned ``crop`` x ``crop`` crops and horizontal flips, AdamW with a cosine
    schedule, the model's own pretrained normalization. The checkpoint has timm's names and no
    classifier, with ``pos_embed`` for ``crop`` (mmseg resamples it to the fine-tuning size).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(arch, pretrained=False, img_size=crop, num_classes=0)
    patch = model.patch_embed.patch_size[0]
    split = zarr.open_group(str(store), mode="r")["train"]  # the plain pretraining store: public data
    images, labels = split["images"][:], patch_classes(split["labels"][:], patch)
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1) * 255
    head = torch.nn.Linear(model.num_features, CLASSES)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    grid = crop // patch
    model.train()
    for step in range(steps):
        index = rng.integers(0, len(images), batch_size)
        ys = rng.integers(0, labels.shape[1] - grid + 1, batch_size)
        xs = rng.integers(0, labels.shape[2] - grid + 1, batch_size)
        crops = list(zip(index, ys, xs))
        x = np.stack([images[i, y * patch : (y + grid) * patch, c * patch : (c + grid) * patch] for i, y, c in crops])
        t = np.stack([labels[i, y : y + grid, c : c + grid] for i, y, c in crops])  # (B, g, g, CLASSES)
        flip = rng.random(batch_size) < 0.5
        x[flip], t[flip] = x[flip, :, ::-1], t[flip, :, ::-1]
        inputs = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - mean) / std
        tokens = model.forward_features(inputs)[:, model.num_prefix_tokens :]
        logits = head(tokens).reshape(-1, CLASSES)
        target = torch.from_numpy(np.ascontiguousarray(t)).reshape(-1, CLASSES)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 20 == 0 or step == steps - 1:
            exact = ((logits > 0) == (target > 0)).all(1).float().mean().item()
            log.info("pretrain step %d/%d: loss %.4f, patches all right %.3f", step + 1, steps, loss.item(), exact)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(state, out, metadata={"arch": arch, "source": f"proxy-pretrained on {store}, {steps} steps"})
    return out
