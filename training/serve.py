"""The cloud's segmentation service: ``python -m training.serve CONFIG CHECKPOINT --bundle LOCATION --signer FILE``.

It checks what ``training.predict`` checks, once, at start (the bundle, and that the checkpoint's model
reads its data), loads the model once, and answers over HTTP; it never holds or asks for a key.

    POST /v1/segment        one query PNG as the body (Content-Type: image/png) -> its label map as PNG
    POST /v1/segment/batch  several, as multipart/form-data files -> {"maps": [{"name", "png" (base64)}]}
                            both take ?format=trainIds (the default) | labelIds | color
    GET  /v1/model          what the model reads and the service takes (contract.query.ServiceInfo)
    GET  /v1/legend         the classes' colours and names, as PNG
    GET  /healthz, /readyz  alive; ready (200 once the model is loaded and its batcher runs)
    GET  /metrics           Prometheus: requests, latency, batch sizes, refusals by reason, queue
    GET  /openapi.json      the OpenAPI description (and /docs)

Queries of all requests are gathered into batches (up to ``max_batch_size`` images, waiting at most
``max_wait_ms`` for more) and segmented on one model thread, one forward pass per image size; each map
is exactly the one the image gets alone (training.inference). A refusal is a 4xx with a one-line JSON
body ``{"error": ..., "reason": ...}``, decided before any tensor is built: 415 for a body that is no
PNG, 413 for a body over ``max_body_bytes``, 422 for everything contract.query refuses (not 8-bit RGB,
a size of no whole blocks or too large, a query of another key, a plain image, a query tagged twice)
and for an image that does not decode. A query of another key is 422, not 409: nothing about the
service's state would make it acceptable later. A full queue is 503 with Retry-After. A client that
leaves before its forward pass costs nothing further: its images are dropped from the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from contract.errors import run_reporting
from contract.formats import CipherSpec, DatasetDescription, describe_cipher
from contract.query import QueryRefused, ServiceInfo
from training.config import add_common_arguments
from training.inference import LabelMaps, Segmenter, decode_query

log = logging.getLogger("training.serve")
Format = Literal["trainIds", "labelIds", "color"]


@dataclass(frozen=True)
class Limits:
    """The service's settings: batches of at most ``max_batch_size`` images, gathered for at most
    ``max_wait_ms``; at most ``max_queue`` images waiting (more: 503); request bodies of at most
    ``max_body_bytes`` (more: 413)."""

    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_body_bytes: int = 32 << 20  # an encrypted 1024x2048 query is about 6 MiB


class Refusal(Exception):
    """A request the service does not answer with a map: its status, a reason (for the metrics) and one line."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers

    @classmethod
    def of(cls, error: QueryRefused, where: str = "") -> Refusal:
        status = 415 if error.reason == QueryRefused.NOT_PNG else 422
        return cls(status, error.reason, f"{where}{error}")

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self), "reason": self.reason}, self.status, headers=self.headers)


class ClientLeft(Exception):
    """The client disconnected before its answer was ready."""


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per service, also in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cipherseg_requests", "Segmentation requests by endpoint and status code", ["endpoint", "code"], registry=r)
        self.latency = Histogram("cipherseg_request_seconds", "Segmentation request latency", ["endpoint"], registry=r)
        self.refusals = Counter("cipherseg_refusals", "Requests refused, by reason", ["reason"], registry=r)
        self.batch_images = Histogram(
            "cipherseg_batch_images", "Images per forward pass", registry=r, buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
        )
        self.forward = Histogram("cipherseg_forward_seconds", "Forward pass time", registry=r)
        self.queued = Gauge("cipherseg_queued_images", "Images waiting for a forward pass", registry=r)
        self.abandoned = Counter(
            "cipherseg_abandoned_images", "Images whose client left before their forward pass (never segmented)", registry=r
        )


class Batcher:
    """Gathers queued images into batches and segments them on one model thread (see the module docstring)."""

    def __init__(self, segment: Callable[[Sequence[np.ndarray]], list[np.ndarray]], limits: Limits, metrics: Metrics) -> None:
        self._segment, self._limits, self._metrics = segment, limits, metrics
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue(limits.max_queue)
        self._model = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._seconds_per_image = 1.0  # until measured: what Retry-After says

    @property
    def free(self) -> int:
        return self._queue.maxsize - self._queue.qsize()

    def submit(self, images: Sequence[np.ndarray]) -> list[asyncio.Future]:
        """Queue all ``images`` or none (503); a future of each one's map."""
        if len(images) > self.free:
            raise self.busy()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for pair in zip(images, futures):
            self._queue.put_nowait(pair)
        self._metrics.queued.set(self._queue.qsize())
        return futures

    def busy(self) -> Refusal:
        wait = max(1, math.ceil(self._queue.qsize() * self._seconds_per_image))
        message = f"busy: {self._queue.qsize()} images are waiting; retry in {wait} s"
        return Refusal(503, "queue-full", message, headers={"Retry-After": str(wait)})

    async def run(self) -> None:
        """Segment what is queued, batch after batch, until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                by_shape = defaultdict(list)
                for image, future in await self._gather(loop):
                    if future.done():  # its client left: nothing is computed for it
                        self._metrics.abandoned.inc()
                    else:
                        by_shape[image.shape].append((image, future))
                for batch in by_shape.values():
                    await self._run(loop, batch)
        finally:
            self._model.shutdown(wait=False, cancel_futures=True)

    async def _gather(self, loop) -> list[tuple[np.ndarray, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = loop.time() + self._limits.max_wait_ms / 1000
        while len(batch) < self._limits.max_batch_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        self._metrics.queued.set(self._queue.qsize())
        return batch

    async def _run(self, loop, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        start = time.perf_counter()
        try:
            maps = await loop.run_in_executor(self._model, self._segment, [image for image, _ in batch])
        except Exception as error:  # the requests answer 500; the service goes on
            log.exception("segmenting a batch of %d images failed", len(batch))
            maps = [error] * len(batch)
        seconds = time.perf_counter() - start
        self._seconds_per_image = seconds / len(batch)
        self._metrics.forward.observe(seconds)
        self._metrics.batch_images.observe(len(batch))
        for (_, future), result in zip(batch, maps):
            if not future.done():
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def build_app(segmenter: Segmenter, reads: CipherSpec | None, dataset: DatasetDescription, limits: Limits = Limits()) -> FastAPI:
    """The service of ``segmenter``, whose model reads images of ``reads`` (None: plain images) and predicts
    the classes of ``dataset``."""
    if limits.max_batch_size > 1 and not segmenter.batches_exactly(limits.max_batch_size):
        log.warning(
            "on %s a batch of images is not segmented exactly as each image alone: batches of one image only",
            segmenter.device,
        )
        limits = replace(limits, max_batch_size=1)
    metrics = Metrics()
    maps = LabelMaps.of(dataset)
    info = ServiceInfo(
        cipher=reads,
        block_size=segmenter.block_size,
        max_body_bytes=limits.max_body_bytes,
        classes=dataset.classes,
        palette=dataset.palette,
        label_ids=dataset.raw_values(),
        unlabelled=dataset.unlabelled_value(),
    )
    legend = maps.legend()
    state = {}  # the batcher and its task, while the app runs

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(segmenter.segment, limits, metrics)
        state["batcher"], state["task"] = batcher, asyncio.create_task(batcher.run())
        log.info("serving a model that reads images of %s; %s", describe_cipher(reads), limits)
        yield
        state["task"].cancel()

    app = FastAPI(
        title="cipherseg segmentation",
        description="Segments queries encrypted by the key-holder's client; never holds a key.",
        version="1",
        lifespan=lifespan,
    )

    async def answer(endpoint: str, request: Request, work: Callable[[], Awaitable[Response]]) -> Response:
        """``work``'s response, or the refusal's; counted, timed, and never a traceback to the client."""
        start = time.perf_counter()
        try:
            if state["batcher"].free == 0:  # before reading the body: a refusal under load costs nothing
                raise state["batcher"].busy()
            response = await work()
        except Refusal as refusal:
            metrics.refusals.labels(refusal.reason).inc()
            response = refusal.response()
        except (ClientDisconnect, ClientLeft):
            response = Response(status_code=499)  # nginx's "client closed request": it is sent to no one
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            response = JSONResponse({"error": "internal error (logged by the service)", "reason": "internal"}, 500)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    async def segmented(request: Request, queries: list[tuple[np.ndarray, tuple[int, int]]]) -> list[np.ndarray]:
        """The maps of decoded ``queries``, once their batches ran, cropped to each one's size before padding;
        ClientLeft if the client disconnects first (then the images not yet in a forward pass are dropped)."""
        futures = state["batcher"].submit([image for image, _ in queries])
        results = asyncio.gather(*futures)
        left = asyncio.ensure_future(_disconnected(request))
        done, _ = await asyncio.wait({results, left}, return_when=asyncio.FIRST_COMPLETED)
        if results in done:
            left.cancel()
            return [train_ids[:height, :width] for train_ids, (_, (height, width)) in zip(results.result(), queries)]
        results.cancel()  # cancels each image's future: the batcher skips them
        raise ClientLeft

    def decode(data: bytes, where: str = "") -> Awaitable[tuple[np.ndarray, tuple[int, int]]]:
        async def run() -> tuple[np.ndarray, tuple[int, int]]:
            try:
                return await run_in_threadpool(decode_query, data, reads, segmenter.block_size)
            except QueryRefused as error:
                raise Refusal.of(error, where) from None

        return run()

    png_body = {"required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    refusals = {
        413: {"description": "the body is larger than the service takes"},
        415: {"description": "not a PNG"},
        422: {"description": "not a query this model reads (one-line JSON reason)"},
        503: {"description": "the queue is full: retry after Retry-After seconds"},
    }

    @app.post(
        "/v1/segment",
        summary="Segment one encrypted query",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the label map"}, **refusals},
        openapi_extra={"requestBody": png_body},
    )
    async def segment(request: Request, fmt: Format = Query("trainIds", alias="format")) -> Response:
        async def work() -> Response:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "image/png":
                raise Refusal(415, "content-type", f"the body must be a PNG (Content-Type: image/png), not {media or 'untyped'}")
            query = await decode(await _body(request, limits.max_body_bytes))
            (train_ids,) = await segmented(request, [query])
            return Response(await run_in_threadpool(maps.png, train_ids, fmt), media_type="image/png")

        return await answer("segment", request, work)

    @app.post(
        "/v1/segment/batch",
        summary="Segment several encrypted queries",
        responses=refusals,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}},
            }
        },  # fmt: skip
    )
    async def segment_batch(request: Request, fmt: Format = Query("trainIds", alias="format")) -> Response:
        async def work() -> Response:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "multipart/form-data":
                raise Refusal(415, "content-type", f"the body must be multipart/form-data of PNG files, not {media or 'untyped'}")
            body = await _body(request, limits.max_body_bytes)
            parts = await _files(request, body, limits.max_queue)
            queries = [await decode(data, f"{name}: ") for name, data in parts]
            encoded = [await run_in_threadpool(maps.png, m, fmt) for m in await segmented(request, queries)]
            return JSONResponse({"maps": [{"name": name, "png": base64.b64encode(png).decode()} for (name, _), png in zip(parts, encoded)]})

        return await answer("batch", request, work)

    @app.get("/v1/model", summary="What the model reads and the service takes")
    async def model() -> ServiceInfo:
        return info

    @app.get("/v1/legend", summary="The classes' colours and names", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    async def legend_png() -> Response:
        return Response(legend, media_type="image/png")

    @app.get("/healthz", summary="The process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and its batcher runs")
    async def readyz() -> JSONResponse:
        ready = "task" in state and not state["task"].done()
        return JSONResponse({"status": "ready" if ready else "not ready"}, 200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail), "reason": "http"}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": problems, "reason": "invalid-request"}, 422)

    return app


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refusal(413, "too-large", f"a body of {declared} bytes; this service takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, "too-large", f"a body of more than {limit} bytes; this service takes at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _files(request: Request, body: bytes, most: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file part of a multipart body already read; 422 for anything else."""

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=most, max_fields=most)
    except HTTPException as error:  # python-multipart's refusal: a malformed body, too many parts
        raise Refusal(error.status_code, "multipart", error.detail) from None
    parts = []
    for name, value in form.multi_items():
        if not isinstance(value, UploadFile):
            raise Refusal(422, "not-a-file", f"part {name!r} is not a file")
        parts.append((value.filename or name, await value.read()))
    if not parts:
        raise Refusal(422, "no-images", "no image files in the request")
    return parts


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: what the server receives next is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.serve", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the config the model was trained with")
    parser.add_argument("checkpoint", help="the fine-tuned model (.pth from training, or a .safetensors export)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface, as in a container)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one; the log names it)")
    defaults = Limits()
    parser.add_argument("--max-batch-size", type=_positive(int), default=defaults.max_batch_size, help="images per forward pass")
    parser.add_argument("--max-wait-ms", type=_positive(float), default=defaults.max_wait_ms, help="how long a batch waits for more images")
    parser.add_argument("--max-queue", type=_positive(int), default=defaults.max_queue, help="images waiting, beyond which requests get 503")
    parser.add_argument("--max-body-bytes", type=_positive(int), default=defaults.max_body_bytes, help="largest request body (413 beyond)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return run_reporting(lambda: serve(args))


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from training.config import config_from_arguments, select_device
    from training.inference import check_model
    from training.provenance import model_reads

    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a corrupt query is our one-line refusal, not OpenCV's warning too
    cfg = config_from_arguments(args)
    reads = model_reads(args.checkpoint).cipher
    dataset = check_model(cfg, args.checkpoint, reads)
    segmenter = Segmenter(cfg, args.checkpoint, select_device(args.device))
    limits = Limits(args.max_batch_size, args.max_wait_ms, args.max_queue, args.max_body_bytes)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(build_app(segmenter, reads, dataset, limits), host=args.host, port=args.port, timeout_graceful_shutdown=30)


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


if __name__ == "__main__":
    sys.exit(main())
