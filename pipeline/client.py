"""The key-holder's client of the cloud's segmentation service (``training.serve``): plain images in, plain maps out.

Each image is encrypted in memory (no encrypted file is written), sent to the service, and its map
written as ``training.predict`` writes it: ``trainIds/<name>_trainIds.png``, ``labelIds/<name>_labelIds.png``
and ``color/<name>_color.png`` (the colours and labelIds come from the service's description of its
classes, so nothing of mmseg is needed here), and ``legend.png`` when asked. What the service would refuse is
refused here first, by the same check (:func:`contract.query.check_query`): every image is checked
before any is sent, and the key against what the service's model reads. Requests run with bounded
concurrency; a full service (503) and a lost connection are retried with exponential backoff,
honouring the service's Retry-After (urllib3's ``Retry``). Segmenting is idempotent, so a request
retried after a lost connection costs the service a second forward pass at worst.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from contract.errors import FormatError
from contract.formats import describe_cipher
from contract.outputs import OutputKind, write_file
from contract.query import QueryRefused, ServiceInfo, check_query
from pipeline.cipher import BlockCipher
from pipeline.errors import PipelineError
from pipeline.keys import Key
from pipeline.query import check_plain, encode_rgb, plain_image, read_bytes

# About 30 s of backoff in all (at once, then 0.5 s doubling up to 8 s, or what Retry-After says) before giving up.
RETRIES = Retry(
    total=8,
    backoff_factor=0.25,
    backoff_max=8,
    backoff_jitter=0.1,
    status_forcelist=(503,),
    allowed_methods=None,  # POST too: segmenting is idempotent
    respect_retry_after_header=True,
    raise_on_status=False,  # the last 503 is reported with the service's own reason
)
TIMEOUT = (10, 600)  # seconds to connect, and to wait for a map (a large image on a CPU model is slow)


def segment_queries(
    server: str, images: Sequence[str | Path], key: Key, out: str | Path, *, concurrency: int = 4, legend: bool = False
) -> list[Path]:
    """Have the service at ``server`` segment each plain image (encrypted here with ``key``); write its maps
    to ``out`` and return their paths (and ``legend.png``'s with ``legend``).

    Refuses, before anything is sent: a service whose model reads another key's images, two images of
    one name (their maps would overwrite each other), any image the encrypt stage would not take or that
    is a query already. Maps already written stay when a later image fails.
    """
    server = server.rstrip("/")
    local = threading.local()  # a session and a cipher per worker thread

    def worker() -> tuple[requests.Session, BlockCipher]:
        if not hasattr(local, "session"):
            local.session, local.cipher = _session(), BlockCipher(key)
        return local.session, local.cipher

    info = _service_info(_session(), server)
    if info.cipher != key.spec():
        raise PipelineError(
            f"{server}: its model reads images of {describe_cipher(info.cipher)}, this key is {describe_cipher(key.spec())}"
        )
    paths = [Path(image) for image in images]
    twice = sorted(stem for stem, n in Counter(path.stem for path in paths).items() if n > 1)
    if twice:
        raise PipelineError(f"two images named {twice[0]} among --query: their maps would overwrite each other")
    for path in paths:
        check_plain(read_bytes(path), path)
    colours = np.zeros((256, 3), np.uint8)  # as training.inference.LabelMaps: black and unlabelled for 255 and unknown
    colours[: len(info.palette)] = info.palette
    label_ids = np.full(256, info.unlabelled, np.uint8)
    label_ids[: len(info.label_ids)] = info.label_ids
    out = Path(out)

    def segment(path: Path) -> list[Path]:
        session, cipher = worker()
        image, size = plain_image(read_bytes(path), path, key.block_size)
        query = encode_rgb(cipher.encrypt(image), key.spec(), size)
        try:
            check_query(query, info.cipher, info.block_size)  # what the service checks
        except QueryRefused as error:
            raise PipelineError(f"{path}: {error}") from None
        if len(query) > info.max_body_bytes:
            raise PipelineError(f"{path}: its encrypted query is {len(query)} bytes, {server} takes at most {info.max_body_bytes}")
        answer = _request(session, "post", f"{server}/v1/segment", path, data=query, headers={"Content-Type": "image/png"})
        train_ids = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_UNCHANGED)
        if train_ids is None or train_ids.shape != size or train_ids.dtype != np.uint8:
            raise PipelineError(f"{path}: {server} answered with no {size[0]}x{size[1]} map")
        maps = {
            "trainIds": answer.content,  # as the service encoded it, byte for byte
            "labelIds": cv2.imencode(".png", label_ids[train_ids])[1].tobytes(),
            "color": cv2.imencode(".png", cv2.cvtColor(colours[train_ids], cv2.COLOR_RGB2BGR))[1].tobytes(),
        }
        return [write_file(out / fmt / f"{path.stem}_{fmt}.png", png, OutputKind.PNG) for fmt, png in maps.items()]

    with ThreadPoolExecutor(concurrency, thread_name_prefix="query") as pool:
        written = [target for targets in pool.map(segment, paths) for target in targets]
    if legend:
        written.append(write_file(out / "legend.png", _request(_session(), "get", f"{server}/v1/legend", server).content, OutputKind.PNG))
    return written


def _session() -> requests.Session:
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(max_retries=RETRIES))
    return session


def _service_info(session: requests.Session, server: str) -> ServiceInfo:
    answer = _request(session, "get", f"{server}/v1/model", server)
    try:
        return ServiceInfo.parse(answer.content, f"{server}/v1/model")
    except FormatError as error:
        raise PipelineError(f"{server}/v1/model: not a cipherseg segmentation service ({error})") from None


def _request(session: requests.Session, method: str, url: str, what: str | Path, **options) -> requests.Response:
    """The 200 answer to a request, retried as :data:`RETRIES` says; PipelineError naming ``what`` otherwise."""
    try:
        answer = session.request(method, url, timeout=TIMEOUT, **options)
    except requests.RequestException as error:
        raise PipelineError(f"{what}: {url} not reachable ({_cause(error)})") from None
    if answer.status_code != 200:
        try:
            reason = answer.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = answer.reason
        raise PipelineError(f"{what}: {url} answered {answer.status_code}: {reason}")
    return answer


def _cause(error: BaseException) -> str:
    """The innermost reason of a requests error, in one line (not urllib3's chain of wrappers)."""
    while True:
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else None
        if inner is None:
            return str(error).splitlines()[0] if str(error) else type(error).__name__
        error = inner
