"""The owner's security audit of a key and cipher setting on a sample of the owner's images.

It measures what the block cipher leaves to an honest-but-curious cloud that holds encrypted
images: how much an encrypted image still resembles its plain one, the 1/P thumbnail that block
means reveal, and two attacks on the key's permutation, one with known plain/encrypted pairs and
one with encrypted images alone. The report shows plain images and reconstructions: it is the
owner's, and is never written into a bundle.

Attacks work on canonical block vectors (see pipeline/keys.py) and return a :class:`KeyEstimate`
in the key's own convention, so that they can be scored against the key position by position.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import fsspec
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.cipher import BlockCipher, from_blocks, to_blocks
from pipeline.errors import PipelineError
from contract.bundle import MANIFEST
from pipeline.keys import Key
from contract.outputs import OutputKind
from pipeline.atomic import write_private

SETTINGS = {False: "shuffle", True: "shuffle + negative-positive"}
KNOWN_PAIRS = (1, 2)
# Shrinkage of the correlation matrix towards the identity before inverting it: an attacker with
# fewer blocks than block positions has a singular matrix; 0.1 keeps the partial correlations
# sharp from one 256x512 image to many.
SHRINKAGE = 0.1


@dataclass(frozen=True)
class KeyEstimate:
    """An attacker's estimate of a key's transform, in the convention of :class:`pipeline.keys.Key`."""

    block_size: int
    permutation: np.ndarray  # v'[k] = v[permutation[k]]
    flip: np.ndarray | None  # v'[k] = 255 - v'[k] where set


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window, sigma 1.5, range 255; scikit-image) over images and channels.

    Takes two HxWxC images or NxHxWxC batches of values in [0, 255]; images under 11 pixels a side
    (thumbnails) are compared with a uniform window that fits.
    """
    a, b = (np.asarray(x).reshape(-1, *np.shape(x)[-3:]) for x in (a, b))
    side = min(a.shape[1:3])
    if side >= 11:  # the Gaussian window spans 11 pixels
        window = dict(gaussian_weights=True, sigma=1.5)
    else:  # a thumbnail of a small image: the largest odd uniform window that fits
        window = dict(win_size=side if side % 2 else side - 1)
    settings = dict(window, use_sample_covariance=False, data_range=255, channel_axis=-1)
    return float(np.mean([structural_similarity(x, y, **settings) for x, y in zip(a, b)]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (or batches)."""
    return float(peak_signal_noise_ratio(np.asarray(a), np.asarray(b), data_range=255))


def visual_protection(images: np.ndarray, key: Key) -> dict[str, float]:
    """SSIM and PSNR between plain ``images`` and their encryption with ``key`` (low is good)."""
    encrypted = BlockCipher(key).encrypt(images)
    return {"ssim": ssim(images, encrypted), "psnr": psnr(images, encrypted)}


def block_means(images: np.ndarray, block_size: int, flip: np.ndarray | None = None) -> np.ndarray:
    """The 1/P thumbnail: the mean of each block's 3P² values, NxH/PxW/P.

    Shuffling within a block keeps its mean, so encrypted images give the plain (grey) thumbnail.
    ``flip`` first inverts those positions of every block vector, as the attacker does with its
    estimate of the negative-positive positions (:func:`estimate_flips`).
    """
    n, h, w, _ = images.shape
    vectors = to_blocks(images, block_size)
    if flip is not None:
        vectors = np.where(flip, 255 - vectors, vectors)
    return vectors.mean(axis=1).reshape(n, h // block_size, w // block_size)


def estimate_flips(encrypted: np.ndarray, block_size: int) -> np.ndarray:
    """The negative-positive positions, read off encrypted images up to one global inversion.

    In natural images every two positions of a block correlate positively, so the top eigenvector
    of their correlation matrix has one sign; inverting a position flips its sign there.
    """
    _, eigenvectors = np.linalg.eigh(_correlation(*_moments(to_blocks(encrypted, block_size))))
    return eigenvectors[:, -1] < 0


def known_plaintext_attack(
    plain: np.ndarray, encrypted: np.ndarray, block_size: int, negative_positive: bool
) -> tuple[KeyEstimate, np.ndarray]:
    """The permutation (and inversions) from plain/encrypted pairs; also the positions it is sure of.

    Encrypted position k can come from plain position j (inverted or not) only if their values
    agree in every block of every pair, that is if their columns over all blocks are equal. A
    position is recovered when exactly one (j, inverted) candidate remains; the others get a
    consistent guess among their candidates. The cipher settings are public (the bundle's spec).
    """
    x = to_blocks(plain, block_size).T
    y = to_blocks(encrypted, block_size).T
    candidates: dict[bytes, list[tuple[int, bool]]] = {}
    for j, column in enumerate(x):
        candidates.setdefault(column.tobytes(), []).append((j, False))
        if negative_positive:
            candidates.setdefault((255 - column).tobytes(), []).append((j, True))
    n = len(y)
    permutation, flip = np.empty(n, np.int64), np.zeros(n, bool)
    recovered, used = np.zeros(n, bool), np.zeros(n, bool)
    for k, column in enumerate(y):
        found = candidates.get(column.tobytes(), [])
        # Columns equal up to inversion form classes with as many plain as encrypted positions,
        # so a consistent pair always has an unused candidate left.
        free = [(j, inverted) for j, inverted in found if not used[j]]
        if not free:
            raise ValueError("the pairs are not encryptions under one block permutation")
        recovered[k] = len(found) == 1
        permutation[k], flip[k] = free[0]
        used[permutation[k]] = True
    return KeyEstimate(block_size, permutation, flip if negative_positive else None), recovered


def ciphertext_only_attack(encrypted: np.ndarray, block_size: int, negative_positive: bool) -> KeyEstimate:
    """Estimate the permutation from encrypted images alone, from the statistics of natural images.

    Every block is shuffled by the same permutation, so each block is one sample of the joint
    distribution of the 3P² encrypted positions. After undoing the inversions (:func:`estimate_flips`):

    1. channels: a position's nearest positions by RMS difference are its neighbours in its own
       channel (the channels of one pixel differ by the pixel's colour), so the nearest-neighbour
       graph falls apart into the three channels;
    2. pixels: partial correlations (the inverse correlation matrix) are large only between direct
       neighbours, that is the three channels of a pixel and a pixel's four neighbours in one
       channel; each position is matched to its strongest partner in the other channels;
    3. layout: the pixels' four strongest partners, kept when mutual and in no triangle (a grid has
       none), form the PxP grid graph; its Laplacian eigenmap places pixels in 2D, they are sorted
       onto the grid and refined by pixel swaps that raise the partial correlation of grid neighbours;
    4. orientation: of the grid's 8 symmetries, the one whose decrypted images are smoothest
       across block boundaries.

    What stays ambiguous is which group is red, green and blue, and with negative-positive one
    global inversion: 6 (12) candidate images that a person tells apart at a glance.
    """
    p = block_size
    vectors = to_blocks(encrypted, p)
    flip = estimate_flips(encrypted, p) if negative_positive else np.zeros(vectors.shape[1], bool)
    vectors = np.where(flip, 255 - vectors, vectors)
    mean, second_moment = _moments(vectors)
    correlation = _correlation(mean, second_moment)
    inverse = np.linalg.inv((1 - SHRINKAGE) * correlation + SHRINKAGE * np.eye(len(correlation)))
    scale = np.sqrt(np.diag(inverse))
    partial = -inverse / np.outer(scale, scale)
    np.fill_diagonal(partial, 0)

    one, two, three = _channel_groups(_rms_difference(second_moment))  # in no particular channel order
    two = two[_greedy_matching(partial[np.ix_(one, two)])]
    three = three[_greedy_matching(partial[np.ix_(one, three)] + partial[np.ix_(two, three)])]
    pixels = np.stack([one, two, three], axis=1)  # the encrypted positions of one pixel per row
    affinity = sum(partial[np.ix_(pixels[:, a], pixels[:, b])] for a in range(3) for b in range(3))
    np.fill_diagonal(affinity, 0)
    layout = _layout(affinity, p).reshape(p, p)

    def estimate(grid: np.ndarray) -> KeyEstimate:
        slot = np.argsort(grid.ravel())  # slot[pixel]: its place on the grid
        permutation = np.empty(3 * p * p, np.int64)
        for channel in range(3):
            permutation[pixels[:, channel]] = 3 * slot + channel
        return KeyEstimate(p, permutation, flip if negative_positive else None)

    symmetries = [g.T if t else g for g in (np.rot90(layout, r) for r in range(4)) for t in (False, True)]
    return min(map(estimate, symmetries), key=lambda e: _roughness(decrypt_estimate(encrypted, e), p))


def known_model_attack(plain_weight: np.ndarray, encrypted_weight: np.ndarray) -> KeyEstimate:
    """The key's transform from the published encrypted patch embedding and the plain one it was folded from.

    Both are conv weights (D, 3, P, P). The fold scales column j of the plain embedding by a positive
    factor, negates it where inverted and moves it to position inv[j] (pipeline/weights.py), so every
    encrypted column points along exactly one plain column: matching directions recovers the key
    without a single image, whenever the pretrained weights are public (as timm's are).
    """
    def columns(weight: np.ndarray) -> np.ndarray:  # (3P², D) unit rows, canonical block-vector order
        p = weight.shape[-1]
        vectors = to_blocks(weight.transpose(0, 2, 3, 1).astype(np.float64), p).T  # each filter a PxP RGB block
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    cosine = columns(encrypted_weight) @ columns(plain_weight).T  # [k, j]
    permutation = np.abs(cosine).argmax(axis=1)
    flip = cosine[np.arange(len(permutation)), permutation] < 0
    return KeyEstimate(plain_weight.shape[-1], permutation, flip if flip.any() else None)


def decrypt_estimate(encrypted: np.ndarray, estimate: KeyEstimate) -> np.ndarray:
    """Decrypt an NxHxWx3 batch with an estimated key transform."""
    vectors = to_blocks(encrypted, estimate.block_size)
    if estimate.flip is not None:
        vectors = np.where(estimate.flip, 255 - vectors, vectors)
    plain = np.empty_like(vectors)
    plain[:, estimate.permutation] = vectors
    return from_blocks(plain, encrypted.shape, estimate.block_size)


def fraction_correct(estimate: KeyEstimate, key: Key) -> float:
    """The fraction of block positions whose source (and inversion) the estimate gets right."""
    right = estimate.permutation == key.permutation
    if key.flip is not None:
        right &= estimate.flip == key.flip
    return float(right.mean())


def best_variant(estimate: KeyEstimate, key: Key) -> KeyEstimate:
    """Of the estimates equal up to channel order and global inversion, the one closest to ``key``.

    The ciphertext-only attack cannot tell these apart; scoring the best is scoring the attacker
    who looks at the few candidate images and picks the natural one.
    """
    pixel, channel = np.divmod(estimate.permutation, 3)
    variants = [
        KeyEstimate(estimate.block_size, 3 * pixel + np.array(order)[channel],
                    None if estimate.flip is None else estimate.flip ^ inverted)
        for order in itertools.permutations(range(3))
        for inverted in ((False, True) if estimate.flip is not None else (False,))
    ]
    return max(variants, key=lambda v: fraction_correct(v, key))


def audit(images: np.ndarray, key: Key) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Every measurement of the report for ``key``'s permutation, without and with negative-positive.

    Returns the JSON-ready results and, per setting, a figure row for the last image: plain,
    encrypted, plain and attacker's thumbnails, known-plaintext and ciphertext-only decryptions.
    """
    if len(images) < 2:
        raise PipelineError("the audit needs at least 2 images (known pairs and an unseen one)")
    BlockCipher(key).check_shape(images.shape)
    results: dict[str, object] = {
        "key": key.spec().to_json(),
        "images": len(images),
        "image_size": list(images.shape[1:3]),
        "chance": 1 / key.vector_length,  # of a position being right by luck
    }
    rows = {}
    for negative_positive, name in SETTINGS.items():
        setting = Key(key.secret, key.block_size, negative_positive)  # same permutation, with or without inversions
        results[name], rows[name] = _audit_setting(images, setting)
        results[name]["key_setting"] = negative_positive == key.negative_positive
    return results, rows


def read_images(raw: str, count: int, split: str = "val", storage_options: dict | None = None) -> np.ndarray:
    """The first ``count`` images (by name) of a split of the Cityscapes tree at ``raw``, NxHxWx3 RGB.

    ``raw`` is a path or an fsspec URL, as for the encrypt stage.
    """
    fs, root = fsspec.core.url_to_fs(raw, **(storage_options or {}))
    paths = sorted(fs.glob(f"{root}/leftImg8bit/{split}/*/*_leftImg8bit.png"))[:count]
    images = []
    for path in paths:
        image = cv2.imdecode(np.frombuffer(fs.cat_file(path), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise PipelineError(f"{path}: not a readable image")
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if len({image.shape for image in images}) > 1:
        raise PipelineError(f"{raw}: the audit images of {split} differ in size")
    if not images:
        raise PipelineError(f"{raw}: no leftImg8bit/{split}/<city>/*_leftImg8bit.png images to audit")
    return np.stack(images)


def write_report(
    images: np.ndarray,
    key: Key,
    out: str | Path,
    patch_embeddings: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Audit ``key`` on ``images`` (NxHxWx3 RGB) and write report.md, audit.json and figure.png under ``out``.

    ``patch_embeddings``: the plain pretrained and the published encrypted patch embedding, to
    measure :func:`known_model_attack` too. Refuses to write inside a published bundle: the report
    holds plain images. Returns report.md.
    """
    out = Path(out)
    for folder in (out.resolve(), *out.resolve().parents):
        if (folder / MANIFEST).exists():
            raise PipelineError(f"{out}: refusing to write the audit inside the bundle at {folder}")
    results, rows = audit(images, key)
    if patch_embeddings is not None:
        results["known_model"] = {"positions_correct": fraction_correct(known_model_attack(*patch_embeddings), key)}
    # Owner-private: the figure shows plain images (files 0600, folders 0700).
    write_private(str(out / "audit.json"), (json.dumps(results, indent=2) + "\n").encode(), OutputKind.JSON)
    figure = np.concatenate(list(rows.values()), axis=0)
    write_private(str(out / "figure.png"), cv2.imencode(".png", cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))[1].tobytes(), OutputKind.PNG)
    report = out / "report.md"
    write_private(str(report), _markdown(results).encode(), OutputKind.TEXT)
    return report


def _audit_setting(images: np.ndarray, key: Key) -> tuple[dict[str, object], np.ndarray]:
    p, n = key.block_size, len(images)
    encrypted = BlockCipher(key).encrypt(images)
    result: dict[str, object] = {"visual": visual_protection(images, key)}

    # Thumbnails as NxH/PxW/Px1 grey images.
    plain_thumbnail = block_means(images, p)[..., None]
    as_read = block_means(encrypted, p)[..., None]
    thumbnail = as_read
    if key.negative_positive:
        # The estimate is right up to one global inversion; the attacker keeps the natural one.
        normalised = block_means(encrypted, p, estimate_flips(encrypted, p))[..., None]
        thumbnail = max(normalised, 255 - normalised, key=lambda t: ssim(plain_thumbnail, t))
    result["thumbnail"] = {"ssim": ssim(plain_thumbnail, thumbnail), "ssim_as_read": ssim(plain_thumbnail, as_read)}

    known, decryptions = [], []
    for pairs in (k for k in KNOWN_PAIRS if k < n):
        estimate, recovered = known_plaintext_attack(images[:pairs], encrypted[:pairs], p, key.negative_positive)
        decrypted = decrypt_estimate(encrypted[pairs:], estimate)
        known.append({
            "pairs": pairs,
            "recovered": float(recovered.mean()),
            "correct": fraction_correct(estimate, key),
            "ssim_unseen": ssim(images[pairs:], decrypted),
        })
        decryptions.append(decrypted[-1])
    result["known_plaintext"] = known

    blind = []
    for count in sorted({*(2**i for i in range(n.bit_length())), n}):
        start = time.perf_counter()
        estimate = ciphertext_only_attack(encrypted[:count], p, key.negative_positive)
        seconds = time.perf_counter() - start
        best = best_variant(estimate, key)
        reconstructed = decrypt_estimate(encrypted, best)
        blind.append({
            "images": count,
            "blocks": count * images.shape[1] * images.shape[2] // p**2,
            "positions_correct": fraction_correct(best, key),
            "ssim": ssim(images, reconstructed),
            "seconds": round(seconds, 2),
        })
    result["ciphertext_only"] = blind

    def grey(thumb: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.repeat(np.rint(thumb).astype(np.uint8), p, 0), p, 1), 3, 2)

    name = SETTINGS[key.negative_positive]
    panels = [
        (images[-1], "plain"),
        (encrypted[-1], f"encrypted ({name})"),
        (grey(plain_thumbnail[-1]), "plain 1/P thumbnail"),
        (grey(thumbnail[-1]), "attacker's thumbnail"),
        (decryptions[0], f"known plaintext, {KNOWN_PAIRS[0]} pair"),
        (reconstructed[-1], f"ciphertext only, {n} images"),
    ]
    return result, np.concatenate([_titled(image, title) for image, title in panels], axis=1)


def _moments(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and second moment E[v vᵀ] of the rows of ``vectors``, in float64 a chunk at a time."""
    second = np.zeros((vectors.shape[1],) * 2)
    for start in range(0, len(vectors), 4096):
        chunk = vectors[start : start + 4096].astype(np.float64)
        second += chunk.T @ chunk
    return vectors.mean(axis=0), second / len(vectors)


def _correlation(mean: np.ndarray, second_moment: np.ndarray) -> np.ndarray:
    """Correlation between block positions; a constant position correlates only with itself."""
    covariance = second_moment - np.outer(mean, mean)
    scale = np.sqrt(np.maximum(np.diag(covariance), 0))
    scale[scale < 1e-9] = np.inf
    correlation = covariance / np.outer(scale, scale)
    np.fill_diagonal(correlation, 1)
    return correlation


def _rms_difference(second_moment: np.ndarray) -> np.ndarray:
    """Root mean square difference between block positions: sqrt(E[(v_a - v_b)²])."""
    square = np.diag(second_moment)
    return np.sqrt(np.maximum(square[:, None] + square[None, :] - 2 * second_moment, 0))


def _channel_groups(distance: np.ndarray) -> list[np.ndarray]:
    """Three equal groups of positions, each connected by chains of near-equal neighbours.

    A position's four nearest positions by RMS difference are its neighbours in its own channel
    (the channels of one pixel differ by the pixel's colour), so the nearest-neighbour graph falls
    into the three channels: its three smoothest Laplacian eigenvectors are their indicators, then
    k-means, then a balanced assignment.
    """
    n, size = len(distance), len(distance) // 3
    nearest = np.argsort(distance + np.diag(np.full(n, np.inf)), axis=1)[:, :4]
    graph = np.zeros((n, n), bool)
    np.put_along_axis(graph, nearest, True, axis=1)
    graph = (graph | graph.T).astype(np.float64)
    points = np.linalg.eigh(np.diag(graph.sum(axis=1)) - graph)[1][:, :3]
    centres = points[[0]]
    while len(centres) < 3:  # farthest-point initialisation: deterministic and spread out
        centres = np.vstack([centres, points[np.argmax(_sq_distance(points, centres).min(axis=1))]])
    for _ in range(20):
        label = _sq_distance(points, centres).argmin(axis=1)
        centres = np.stack([points[label == c].mean(axis=0) if (label == c).any() else centres[c] for c in range(3)])
    # Balanced assignment: the positions most clearly in one group choose first.
    cost = _sq_distance(points, centres)
    ranked = np.sort(cost, axis=1)
    groups: list[list[int]] = [[], [], []]
    for i in np.argsort(ranked[:, 0] - ranked[:, 1]):
        choice = next(c for c in np.argsort(cost[i]) if len(groups[c]) < size)
        groups[choice].append(int(i))
    return [np.array(g) for g in groups]


def _sq_distance(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((points[:, None] - centres[None]) ** 2).sum(axis=-1)


def _greedy_matching(score: np.ndarray) -> np.ndarray:
    """match[i] = the column paired with row i, taking the highest remaining score first."""
    match = np.full(len(score), -1)
    taken = np.zeros(score.shape[1], bool)
    for flat in np.argsort(-score, axis=None).tolist():
        i, j = divmod(flat, score.shape[1])
        if match[i] < 0 and not taken[j]:
            match[i], taken[j] = j, True
    return match


def _layout(affinity: np.ndarray, p: int) -> np.ndarray:
    """grid[slot] = pixel: the PxP arrangement of pixels that puts strong affinities on grid edges."""
    if p == 1:
        return np.zeros(1, np.int64)
    graph = _neighbour_graph(affinity)
    _, vectors = np.linalg.eigh(np.diag(graph.sum(axis=1)) - graph)
    embedding = vectors[:, 1:3]
    # The grid's two lowest Laplacian modes are degenerate, so the embedding is rotated at random.
    rotations = [embedding @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
                 for t in np.linspace(0, np.pi / 2, 90, endpoint=False)]
    adjacency = _grid_adjacency(p)
    grid = max((_sort_onto_grid(r, p) for r in rotations), key=lambda g: _grid_score(g, affinity, adjacency))
    return _swap_refine(grid, affinity, adjacency)


def _neighbour_graph(affinity: np.ndarray) -> np.ndarray:
    """Mutual four-strongest-partner graph with triangles broken at their weakest edge."""
    strongest = np.argsort(-affinity, axis=1)[:, :4]
    graph = np.zeros(affinity.shape, bool)
    np.put_along_axis(graph, strongest, True, axis=1)
    graph &= graph.T
    while True:
        g = graph.astype(np.float64)
        in_triangle = graph & (g @ g > 0)
        if not in_triangle.any():
            return g
        a, b = np.unravel_index(np.argmin(np.where(in_triangle, affinity, np.inf)), graph.shape)
        graph[a, b] = graph[b, a] = False


def _grid_adjacency(p: int) -> np.ndarray:
    row, col = np.divmod(np.arange(p * p), p)
    return (np.abs(row[:, None] - row) + np.abs(col[:, None] - col) == 1).astype(np.float64)


def _sort_onto_grid(embedding: np.ndarray, p: int) -> np.ndarray:
    rows = np.argsort(embedding[:, 0], kind="stable").reshape(p, p)
    return np.take_along_axis(rows, np.argsort(embedding[rows, 1], axis=1, kind="stable"), axis=1).ravel()


def _grid_score(grid: np.ndarray, affinity: np.ndarray, adjacency: np.ndarray) -> float:
    return float((adjacency * affinity[np.ix_(grid, grid)]).sum())


def _swap_refine(grid: np.ndarray, affinity: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """Swap the two pixels whose exchange raises the grid score most, while any does."""
    grid = grid.copy()
    while True:
        m = affinity[np.ix_(grid, grid)]
        b = adjacency @ m
        d = np.diag(b)
        # Score change of exchanging the pixels at slots s and t (the diagonal of m is zero).
        gain = b + b.T - d[:, None] - d[None, :] + 2 * adjacency * m
        s, t = np.unravel_index(np.argmax(gain), gain.shape)
        if gain[s, t] <= 1e-9:
            return grid
        grid[[s, t]] = grid[[t, s]]


def _roughness(images: np.ndarray, p: int) -> float:
    """Mean absolute step across block boundaries: small when blocks are the right way round."""
    x = images.astype(np.float64)
    across_columns = np.abs(x[:, :, p - 1 : -1 : p] - x[:, :, p::p]).mean() if x.shape[2] > p else 0.0
    across_rows = np.abs(x[:, p - 1 : -1 : p] - x[:, p::p]).mean() if x.shape[1] > p else 0.0
    return float(across_columns + across_rows)


def _titled(image: np.ndarray, title: str) -> np.ndarray:
    """A figure panel at most 512 pixels wide under a title."""
    scale = min(1.0, 512 / image.shape[1])
    # Nearest neighbour: averaging would smooth the ciphertext into the thumbnail it is not.
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    header = np.full((28, image.shape[1], 3), 255, np.uint8)
    cv2.putText(header, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, image], axis=0)


def _markdown(results: dict) -> str:
    key = results["key"]
    p, h, w = key["block_size"], *results["image_size"]
    own = results[SETTINGS[key["negative_positive"]]]
    fewest, most = own["ciphertext_only"][0], own["ciphertext_only"][-1]
    lines = [
        "# Security audit",
        "",
        f"Key id `{key['key_id']}`, block size {p}, this key uses: "
        f"**{SETTINGS[key['negative_positive']]}**. Measured on {results['images']} images of {h}x{w}; "
        "both settings use the key's permutation. Owner's eyes only: this report shows plain images.",
        "",
        "For this key's setting:",
        "",
        f"- an encrypted image resembles its plain one with SSIM {own['visual']['ssim']:.3f};",
        f"- its 1/{p} thumbnail is readable off the ciphertext with SSIM {own['thumbnail']['ssim']:.3f};",
        f"- one known plain/encrypted pair recovers {own['known_plaintext'][0]['recovered']:.1%} "
        "of the block positions;",
        f"- encrypted images alone, up to channel order: {fewest['images']} place "
        f"{fewest['positions_correct']:.1%} of the positions right (decrypted SSIM {fewest['ssim']:.3f}), "
        f"{most['images']} place {most['positions_correct']:.1%} (SSIM {most['ssim']:.3f}).",
        "",
        "![plain, encrypted and the attacks' reconstructions](figure.png)",
        "",
        "## Visual protection and block-mean leakage",
        "",
        "SSIM 1 is identical, 0 unrelated. The thumbnail is each block's mean value, readable off the "
        "ciphertext; with negative-positive the attacker first undoes the inversions estimated from "
        "the ciphertext (up to one global inversion, resolved in its favour).",
        "",
        "| setting | SSIM plain/encrypted | PSNR (dB) | thumbnail SSIM | thumbnail SSIM as read |",
        "|---|---|---|---|---|",
    ]
    for name in SETTINGS.values():
        r = results[name]
        lines.append(f"| {name} | {r['visual']['ssim']:.3f} | {r['visual']['psnr']:.1f} | "
                     f"{r['thumbnail']['ssim']:.3f} | {r['thumbnail']['ssim_as_read']:.3f} |")
    lines += [
        "",
        "## Known-plaintext attack",
        "",
        "Positions whose column of values over all blocks of the known pairs is unique (up to "
        "inversion) are recovered for certain; the rest get a consistent guess. SSIM is of the "
        "decrypted images that were not among the pairs.",
        "",
        "| setting | pairs | positions recovered | positions correct | SSIM unseen |",
        "|---|---|---|---|---|",
    ]
    for name in SETTINGS.values():
        for r in results[name]["known_plaintext"]:
            lines.append(f"| {name} | {r['pairs']} | {r['recovered']:.1%} | {r['correct']:.1%} | "
                         f"{r['ssim_unseen']:.3f} |")
    lines += [
        "",
        "## Ciphertext-only attack",
        "",
        f"From encrypted images alone (see `ciphertext_only_attack`). The attacker fixes the block "
        f"orientation itself; channel order and the global inversion it cannot tell apart are "
        f"scored at their best (6 or 12 candidate images). Chance is {results['chance']:.2%} of positions. "
        "SSIM is of all audit images decrypted with the estimate.",
        "",
        "| setting | images | blocks | positions correct | SSIM | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name in SETTINGS.values():
        for r in results[name]["ciphertext_only"]:
            lines.append(f"| {name} | {r['images']} | {r['blocks']} | {r['positions_correct']:.1%} | "
                         f"{r['ssim']:.3f} | {r['seconds']:.1f} |")
    if "known_model" in results:
        lines += [
            "",
            "## Known-model attack",
            "",
            "From the published encrypted checkpoint and the public pretrained one it was made from, "
            "without any image (see `known_model_attack`): "
            f"{results['known_model']['positions_correct']:.1%} of the key's positions and inversions recovered.",
        ]
    return "\n".join(lines) + "\n"
