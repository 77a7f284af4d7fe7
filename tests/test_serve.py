"""The segmentation service and the key-holder's client, over real HTTP on localhost: plain image -> client ->
service -> plain map, equal to training.predict with each key option; batches; every refusal; a full queue;
a client that leaves. One service per model, in a thread of the test process (uvicorn on port 0)."""

import base64
import http.client
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import requests
import torch
import uvicorn
from mmengine.logging import MMLogger
from mmseg.apis import init_model
from safetensors.torch import save_file

from contract.formats import CheckpointMetadata
from contract.query import ServiceInfo
from pipeline import run as owner_cli
from pipeline.cipher import BlockCipher
from pipeline.client import segment_queries
from pipeline.errors import PipelineError
from pipeline.keys import generate, save
from pipeline.query import encode_rgb, encrypt_queries, write_rgb
from pipeline.weights import encrypt_finetuned_checkpoint
from training import predict, serve, train
from training.config import load_config
from training.inference import Segmenter, check_model
from training.provenance import model_reads
from training.serve import Limits, build_app

pytest_plugins = ["training_fixtures"]

PROPOSED = str(Path(__file__).parents[1] / "training" / "configs" / "tiny" / "setr_tiny_naive_proposed.py")
LIMITS = Limits(max_batch_size=4, max_wait_ms=5, max_queue=8, max_body_bytes=256 << 10)


@contextmanager
def running(app):
    """The URL of ``app`` served by uvicorn on a free port of 127.0.0.1, in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the service did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture(scope="module")
def models(owner, keyed_bundle, tmp_path_factory) -> dict[str, SimpleNamespace]:
    """A model of each key option, with its bundle, signer and key file: a plain SETR-Naive model, saved as
    training.export saves one, into which the owner folds each key (conventional 1's route)."""
    root = tmp_path_factory.mktemp("serve")
    plain = root / "plain.safetensors"
    torch.manual_seed(0)  # a model whose maps hold several classes
    model = init_model(load_config(PROPOSED, str(owner.bundles["plain"])), device="cpu")
    metadata = CheckpointMetadata.of(None, owner.cloud, owner.cloud, layout=CheckpointMetadata.SEGMENTOR_LAYOUT)
    save_file(model.state_dict(), plain, metadata=metadata.to_metadata())
    shuffle = SimpleNamespace(key=owner.key, bundle=owner.bundles["encrypted"], signer=owner.signer)
    inverting = keyed_bundle(root / "np", generate(negative_positive=True))
    found = {"shuffle": shuffle, "negative-positive": inverting}
    for name, model in found.items():
        model.checkpoint = encrypt_finetuned_checkpoint(plain, model.key, root / f"{name}.safetensors")
        model.key_file = save(model.key, root / name / "key.json")
        cfg = load_config(PROPOSED, str(model.bundle), signer=str(model.signer), work_dir=root / name / "work")
        model.reads = model_reads(str(model.checkpoint)).cipher
        model.dataset = check_model(cfg, str(model.checkpoint), model.reads)
        model.segmenter = Segmenter(cfg, str(model.checkpoint), "cpu")
    return found


@pytest.fixture(scope="module")
def services(models):
    """The URL of a service of each model."""
    with running(build_app(models["shuffle"].segmenter, models["shuffle"].reads, models["shuffle"].dataset, LIMITS)) as shuffle:
        with running(build_app(models["negative-positive"].segmenter, models["negative-positive"].reads, models["negative-positive"].dataset, LIMITS)) as inverting:
            yield {"shuffle": shuffle, "negative-positive": inverting}


@pytest.fixture(scope="module")
def url(services) -> str:
    return services["shuffle"]


def queries(owner, folder: Path) -> list[Path]:
    """The owner's val images (96x128), a random image of another size, and a JPEG of sides no multiple of
    the block size (padded by the key-holder, its map cropped back by the cloud)."""
    plains = sorted((owner.raw / "leftImg8bit" / "val").glob("*/*.png"))
    other = np.random.default_rng(1).integers(0, 256, (64, 160, 3), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "odd.jpg"), cv2.resize(cv2.imread(str(plains[0])), (70, 50)))
    return plains + [write_rgb(folder / "random_leftImg8bit.png", other), folder / "odd.jpg"]


def metric(url: str, name: str, **labels) -> float:
    """A sample of the service's Prometheus metrics (0 if it has none yet)."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{selector}}}" if labels else name) + r" (\S+)"
    found = re.search(f"^{pattern}$", requests.get(f"{url}/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def read_map(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# --- the journey ------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["shuffle", "negative-positive"])
def test_plain_image_to_plain_map_through_client_and_service_equals_predict(owner, models, services, option, tmp_path):
    """The key-holder's command line encrypts in memory, the service segments, the maps written are those
    training.predict writes for the same queries encrypted by encrypt-query: not one pixel differs."""
    model, plains = models[option], queries(owner, tmp_path)
    argv = ["--stage", "query", "--key", model.key_file, "--server", services[option], "--query", *plains, "--out", tmp_path / "client", "--legend"]
    assert owner_cli.main([str(a) for a in argv]) == 0
    encrypt_queries(plains, model.key, tmp_path / "sent")
    MMLogger.get_instance(uuid.uuid4().hex)  # mmengine logs to its latest logger: one on today's streams, as in a new process
    argv = [PROPOSED, model.checkpoint, "--bundle", model.bundle, "--signer", model.signer, "--inputs", tmp_path / "sent", "--out", tmp_path / "predict", "--legend"]
    assert predict.main([str(a) for a in argv]) == 0
    maps = sorted(str(p.relative_to(tmp_path / "predict")) for p in (tmp_path / "predict").rglob("*.png"))
    assert maps == sorted(str(p.relative_to(tmp_path / "client")) for p in (tmp_path / "client").rglob("*.png"))
    assert len(maps) == 3 * len(plains) + 1
    for name in maps:
        assert np.array_equal(read_map(tmp_path / "client" / name), read_map(tmp_path / "predict" / name)), name
    classes = np.unique(read_map(tmp_path / "client" / "trainIds" / f"{plains[0].stem}_trainIds.png"))
    assert len(classes) > 1  # a map worth comparing
    assert read_map(tmp_path / "client" / "color" / "odd_color.png").shape == (50, 70, 3)  # the padding cropped off


def test_a_batch_is_segmented_exactly_as_each_image_alone(owner, models, url):
    """Four images in one request go through the model in one forward pass; each map equals the model's on
    that image alone."""
    model = models["shuffle"]
    images = [np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8) for i in range(4)]
    encrypted = [BlockCipher(model.key).encrypt(image) for image in images]
    files = [("images", (f"q{i}.png", encode_rgb(image, model.key.spec()), "image/png")) for i, image in enumerate(encrypted)]
    batches = metric(url, "cipherseg_batch_images_bucket", le="3.0")
    answer = requests.post(f"{url}/v1/segment/batch", files=files)
    assert answer.status_code == 200
    got = answer.json()["maps"]
    assert [m["name"] for m in got] == ["q0.png", "q1.png", "q2.png", "q3.png"]
    for image, m in zip(encrypted, got):
        alone = model.segmenter.segment([image])[0]
        assert np.array_equal(cv2.imdecode(np.frombuffer(base64.b64decode(m["png"]), np.uint8), cv2.IMREAD_UNCHANGED), alone)
    assert metric(url, "cipherseg_batch_images_bucket", le="3.0") == batches  # one pass of four, none smaller
    assert model.segmenter.batches_exactly(LIMITS.max_batch_size)


def test_the_service_describes_itself(models, url, tmp_path):
    assert requests.get(f"{url}/healthz").status_code == 200 and requests.get(f"{url}/readyz").json() == {"status": "ready"}
    info = ServiceInfo.parse(requests.get(f"{url}/v1/model").content, "model")
    assert info.cipher == models["shuffle"].key.spec() and info.block_size == 16 and len(info.classes) == 19
    from cityscapesscripts.helpers.labels import trainId2label  # the bundle's dataset: the official table's labelIds

    assert info.label_ids == tuple(trainId2label[i].id for i in range(19)) and info.unlabelled == 0  # 'unlabeled'
    api = requests.get(f"{url}/openapi.json").json()
    assert "image/png" in api["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"/v1/segment/batch", "/v1/model", "/healthz", "/readyz", "/metrics"} <= api["paths"].keys()
    text = requests.get(f"{url}/metrics").text
    for name in ("cipherseg_requests_total", "cipherseg_request_seconds", "cipherseg_batch_images", "cipherseg_refusals_total", "cipherseg_queued_images"):
        assert f"# TYPE {name.removesuffix('_total')}" in text


# --- refusals ---------------------------------------------------------------------------------------


def png(image: np.ndarray, cipher=None) -> bytes:
    """``image`` as PNG (by OpenCV: any depth), naming ``cipher`` (by the owner's writer) when given."""
    return encode_rgb(image, cipher) if cipher else cv2.imencode(".png", image)[1].tobytes()


def twice_tagged(data: bytes) -> bytes:
    """The PNG ``data`` with its tEXt chunk twice, as another tool might leave a query encrypted again."""
    start = data.index(b"tEXt") - 4
    end = start + 12 + int.from_bytes(data[start : start + 4], "big")
    return data[:end] + data[start:end] + data[end:]


REFUSALS = ("not-png", "content-type", "16-bit", "odd-size", "huge", "plain", "other-key", "tagged-twice", "size-tag", "corrupt",
            "too-large")


@pytest.fixture(scope="module")
def cases(owner) -> dict[str, tuple]:
    """Each refusal: (body, headers, status, reason, words of its message)."""
    key, other = owner.key.spec(), generate().spec()
    good = png(np.zeros((32, 32, 3), np.uint8), key)
    noise = png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8), key)
    image_png = {"Content-Type": "image/png"}
    found = {
        "not-png": (b"GIF89a" + bytes(64), image_png, 415, "not-png", "not a PNG file"),
        "content-type": (good, {"Content-Type": "image/jpeg"}, 415, "content-type", "Content-Type: image/png"),
        "16-bit": (png(np.zeros((32, 32, 3), np.uint16)), image_png, 422, "not-rgb8", "not an 8-bit RGB PNG"),
        "odd-size": (png(np.zeros((32, 40, 3), np.uint8), key), image_png, 422, "size", "not a multiple of the block size 16"),
        "huge": (good[:16] + (1 << 20).to_bytes(4, "big") * 2 + good[24:], image_png, 422, "size", "larger than cipherseg decodes (16777216 pixels"),
        "plain": (png(np.zeros((32, 32, 3), np.uint8)), image_png, 422, "plain-image", "names no key"),
        "other-key": (png(np.zeros((32, 32, 3), np.uint8), other), image_png, 422, "other-key", f"a query of key id {other.key_id}"),
        "tagged-twice": (twice_tagged(good), image_png, 422, "tagged-twice", "names a cipher 2 times"),
        "size-tag": (encode_rgb(np.zeros((32, 32, 3), np.uint8), key, (40, 32)), image_png, 422, "size-tag", "its cipherseg-size tag is not one size"),
        "corrupt": (noise[: len(noise) // 2], image_png, 422, "corrupt", "not a readable image"),
        "too-large": (good + bytes(300 << 10), image_png, 413, "too-large", "takes at most 262144"),
    }
    assert tuple(found) == REFUSALS
    return found


@pytest.mark.parametrize("case", REFUSALS)
def test_every_refusal_is_a_4xx_with_one_line_of_json_before_any_forward_pass(url, cases, case):
    body, headers, status, reason, words = cases[case]
    passes = metric(url, "cipherseg_batch_images_count")
    refused = metric(url, "cipherseg_refusals_total", reason=reason)
    answer = requests.post(f"{url}/v1/segment", data=body, headers=headers)
    assert answer.status_code == status and "\n" not in answer.text, answer.text
    assert answer.json()["reason"] == reason and words in answer.json()["error"]
    assert metric(url, "cipherseg_refusals_total", reason=reason) == refused + 1
    assert metric(url, "cipherseg_batch_images_count") == passes  # nothing went through the model
    assert requests.get(f"{url}/readyz").status_code == 200


def test_refusals_of_the_request_itself(url, cases):
    """A body over the limit without a declared length, a bad parameter, a batch naming the bad part or
    holding no file, an unknown path: each a 4xx with one line of JSON."""
    body = cases["too-large"][0]
    answer = requests.post(f"{url}/v1/segment", data=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]), headers={"Content-Type": "image/png"})
    assert answer.status_code == 413 and answer.json()["reason"] == "too-large"  # sent chunked: counted as read
    answer = requests.post(f"{url}/v1/segment?format=jpeg", data=cases["plain"][0], headers={"Content-Type": "image/png"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("format: Input should be")
    files = [("images", ("good.png", cases["content-type"][0], "image/png")), ("images", ("theirs.png", cases["other-key"][0], "image/png"))]
    answer = requests.post(f"{url}/v1/segment/batch", files=files)
    assert answer.status_code == 422 and answer.json()["error"].startswith("theirs.png: a query of key id")
    answer = requests.post(f"{url}/v1/segment/batch", files={"note": (None, "hello")})
    assert answer.status_code == 422 and answer.json()["reason"] == "not-a-file"
    answer = requests.post(f"{url}/v1/segment/batch", data=cases["plain"][0], headers={"Content-Type": "image/png"})
    assert answer.status_code == 415
    answer = requests.get(f"{url}/v2/segment")
    assert answer.status_code == 404 and answer.json() == {"error": "Not Found", "reason": "http"}


def test_the_client_refuses_what_the_service_would_before_sending(owner, models, url, cases, tmp_path):
    sent = metric(url, "cipherseg_requests_total", endpoint="segment", code="200")
    good = write_rgb(tmp_path / "good.png", np.zeros((32, 32, 3), np.uint8))
    (query,) = encrypt_queries([write_rgb(tmp_path / "query.png", np.zeros((32, 32, 3), np.uint8))], owner.key, tmp_path / "sent")
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), np.zeros((32, 40, 4), np.uint8))
    other = generate()
    for key, images, words in (
        (other, [good], f"its model reads images of key id {owner.key.key_id}.*this key is key id {other.key_id}"),
        (owner.key, [good, query], f"{query}: already an encrypted query"),
        (owner.key, [good, odd], f"{odd}: a 8-bit RGB with alpha PNG, not an 8-bit grey, RGB, palette PNG"),
        (owner.key, [good, write_rgb(tmp_path / "again" / "good.png", np.ones((32, 32, 3), np.uint8))], "two images named good"),
    ):
        with pytest.raises(PipelineError, match=words):
            segment_queries(url, images, key, tmp_path / "out")
    assert not (tmp_path / "out").exists() and metric(url, "cipherseg_requests_total", endpoint="segment", code="200") == sent


def test_a_model_of_another_bundle_is_refused_at_start(owner, models, capsys):
    """training.serve checks what training.predict checks, before it loads anything: one line, exit 2."""
    inverting = models["negative-positive"]
    argv = [PROPOSED, str(models["shuffle"].checkpoint), "--bundle", str(inverting.bundle), "--signer", str(inverting.signer)]
    MMLogger.get_instance(uuid.uuid4().hex)
    assert serve.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and owner.key.key_id in error and inverting.key.key_id in error


def test_predict_refuses_before_the_models_libraries_load(owner, models, tmp_path):
    """training.predict checks the bundle, the model's provenance and every query first: a query of another
    key is refused in a process that never imported mmseg."""
    model = models["negative-positive"]
    (query,) = encrypt_queries([write_rgb(tmp_path / "q.png", np.zeros((32, 32, 3), np.uint8))], owner.key, tmp_path / "sent")
    argv = [PROPOSED, str(model.checkpoint), "--bundle", str(model.bundle), "--inputs", str(query), "--out", str(tmp_path / "out")]
    code = f"import sys; from training import predict; print(predict.main({argv!r}), 'mmseg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.splitlines()[-1] == "2 False", done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {query}: a query of key id {owner.key.key_id}")


# --- load ------------------------------------------------------------------------------------------


class Gated:
    """A segmenter whose forward passes wait for the test: what is queued, and when, is then the test's to say."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter, self.started, self.gate = segmenter, threading.Semaphore(0), threading.Event()

    def __getattr__(self, name):
        return getattr(self.segmenter, name)

    def segment(self, images):
        self.started.release()
        assert self.gate.wait(30)
        return self.segmenter.segment(images)


@pytest.fixture
def gated(models):
    """A service of one queued image at most, batches of one, whose model waits for the test."""
    segmenter = Gated(models["shuffle"].segmenter)
    with running(build_app(segmenter, models["shuffle"].reads, models["shuffle"].dataset, Limits(max_batch_size=1, max_queue=1))) as url:
        yield SimpleNamespace(url=url, segmenter=segmenter)
        segmenter.gate.set()


def until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def post_in_thread(url: str, body: bytes) -> dict:
    """Start a request; the dict gets its answer."""
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(response=requests.post(f"{url}/v1/segment", data=body, headers={"Content-Type": "image/png"})))
    thread.start()
    answer["thread"] = thread
    return answer


def test_a_full_queue_answers_503_with_retry_after_and_the_client_retries(owner, gated, cases, tmp_path):
    body = cases["content-type"][0]  # a good query
    running_now = post_in_thread(gated.url, body)
    assert gated.segmenter.started.acquire(timeout=10)  # in the forward pass
    queued = post_in_thread(gated.url, body)
    until(lambda: metric(gated.url, "cipherseg_queued_images") == 1)
    answer = requests.post(f"{gated.url}/v1/segment", data=body, headers={"Content-Type": "image/png"})
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1 and answer.json()["reason"] == "queue-full"

    plain = write_rgb(tmp_path / "plain.png", np.zeros((32, 32, 3), np.uint8))
    client = threading.Thread(target=lambda: segment_queries(gated.url, [plain], owner.key, tmp_path / "out"))
    client.start()
    until(lambda: metric(gated.url, "cipherseg_refusals_total", reason="queue-full") == 2)  # the client's first try
    gated.segmenter.gate.set()
    for request in (running_now, queued):
        request["thread"].join()
        assert request["response"].status_code == 200  # every accepted request answered
    client.join()
    assert (tmp_path / "out" / "trainIds" / "plain_trainIds.png").is_file()  # the client's retry was answered


def test_a_client_that_leaves_costs_nothing_further(gated, cases):
    body = cases["content-type"][0]
    running_now = post_in_thread(gated.url, body)
    assert gated.segmenter.started.acquire(timeout=10)
    host, port = gated.url.removeprefix("http://").split(":")
    leaving = http.client.HTTPConnection(host, int(port))
    leaving.request("POST", "/v1/segment", body=body, headers={"Content-Type": "image/png"})
    until(lambda: metric(gated.url, "cipherseg_queued_images") == 1)
    leaving.close()
    until(lambda: metric(gated.url, "cipherseg_requests_total", endpoint="segment", code="499") == 1)
    gated.segmenter.gate.set()
    running_now["thread"].join()
    until(lambda: metric(gated.url, "cipherseg_abandoned_images_total") == 1)
    assert metric(gated.url, "cipherseg_batch_images_count") == 1  # only the first went through the model
    assert requests.get(f"{gated.url}/readyz").status_code == 200


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.slow  # a training and a process of its own: ~25 s
def test_the_command_line_serves_a_trained_model_until_terminated(owner, tmp_path):
    """As a user runs it: the checkpoint training wrote, served by the command line, stopped by SIGTERM."""
    common = ["--bundle", str(owner.bundles["encrypted"]), "--signer", str(owner.signer)]
    options = ["train_cfg.max_iters=2", "val_cfg=None", "val_dataloader=None", "val_evaluator=None"]
    assert train.main([PROPOSED, *common, "--work-dir", str(tmp_path / "work"), "--cfg-options", *options]) == 0
    command = [sys.executable, "-m", "training.serve", PROPOSED, str(tmp_path / "work" / "iter_2.pth"), *common, "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                break
        url = found.group(1)
        assert requests.get(f"{url}/readyz").status_code == 200
        plain = write_rgb(tmp_path / "plain.png", np.zeros((32, 64, 3), np.uint8))
        assert segment_queries(url, [plain], owner.key, tmp_path / "out")[0].is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        remaining = process.communicate(timeout=60)[1]
    # uvicorn shuts down gracefully, then ends the process by the signal it caught, as its default would
    assert "Application shutdown complete" in remaining and "Traceback" not in remaining, remaining
    assert process.returncode == -signal.SIGTERM
