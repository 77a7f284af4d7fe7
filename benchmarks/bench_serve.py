"""The segmentation service under load: the real ``python -m training.serve`` (a process of its own, one
torch thread) driven over HTTP on localhost, with a bounded number of requests (and time).

On the `make run` sample (the owner's command line in a temporary folder) and the tiny SETR-Naive config
trained two iterations, a 256x512 encrypted query (its speed does not depend on the weights):
  * requests/s, p50 and p99 latency at concurrency 1, 4 and 16;
  * the service's overhead at concurrency 1: its p50 latency over the model's own forward pass on the same
    image in this process (one thread too), measured in the same run; target <= 1.15x;
  * dynamic batching: requests/s at concurrency 16 with batches of up to 8 against a service of batches
    of one;
  * overload: requests sent at 4x the measured capacity for 10 s, each in its own connection; every
    answer must be a 200 or a 503, and every 200 the image's map;
  * memory: the service's RSS over 2,000 requests of a 64x128 query at concurrency 16.
Every 200 answer is checked against the map of the image segmented alone: batching changes no pixel.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests

CONFIG = Path(__file__).parents[1] / "training" / "configs" / "tiny" / "setr_tiny_naive_proposed.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ROUNDS = {1: 24, 4: 48, 16: 96}  # requests per concurrency
OVERLOAD, OVERLOAD_SECONDS, MEMORY_REQUESTS = 4, 10, 2000


def run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


@contextmanager
def service(root: Path, checkpoint: Path, max_batch_size: int):
    """The URL and process id of ``python -m training.serve`` on a free port, until the block ends."""
    command = [sys.executable, "-m", "training.serve", str(CONFIG), str(checkpoint), "--bundle", "data/bundle",
               "--signer", "data/owner/signer.json", "--port", "0", "--device", "cpu", "--max-queue", "16",
               "--max-batch-size", str(max_batch_size)]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in process.stderr:
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                break
        else:
            sys.exit("the service did not start")
        threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()  # its access log
        yield found.group(1), process.pid
    finally:
        process.terminate()
        process.wait(60)


def post(session: requests.Session, url: str, body: bytes) -> tuple[int, float, bytes]:
    start = time.perf_counter()
    answer = session.post(f"{url}/v1/segment", data=body, headers={"Content-Type": "image/png"}, timeout=120)
    return answer.status_code, time.perf_counter() - start, answer.content


def drive(url: str, body: bytes, expected: bytes, concurrency: int, count: int) -> dict:
    """``count`` requests, ``concurrency`` at a time (closed loop): requests/s and latencies."""
    local = threading.local()

    def one(_) -> tuple[int, float, bytes]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post(local.session, url, body)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm: connections, the first batches
        start = time.perf_counter()
        answers = list(pool.map(one, range(count)))
        seconds = time.perf_counter() - start
    assert all(status == 200 and content == expected for status, _, content in answers), "a wrong or failed answer"
    latencies = sorted(latency for _, latency, _ in answers)
    return {"rps": count / seconds, "p50": statistics.median(latencies), "p99": latencies[int(0.99 * (count - 1))]}


def overload(url: str, body: bytes, expected: bytes, rate: float, seconds: float) -> Counter:
    """Requests sent at ``rate`` per second for ``seconds`` (open loop), each in a connection of its own."""
    outcomes: Counter = Counter()

    def one() -> None:
        try:
            status, _, content = post(requests.Session(), url, body)
            outcomes["200 (the right map)" if status == 200 and content == expected else str(status)] += 1
        except requests.RequestException as error:
            outcomes[f"failed ({type(error).__name__})"] += 1

    with ThreadPoolExecutor(256) as pool:
        start, sent = time.perf_counter(), 0
        while sent < rate * seconds:
            time.sleep(max(0.0, start + sent / rate - time.perf_counter()))
            pool.submit(one)
            sent += 1
    return outcomes


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> None:
    import torch

    from pipeline import keys
    from pipeline.cipher import BlockCipher
    from contract.datasets import cityscapes
    from pipeline.query import encode_rgb, plain_image, read_bytes
    from training.config import load_config
    from training.inference import LabelMaps, Segmenter

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run([sys.executable, "-m", "pipeline.run", "--stage", "all"], root)  # the sample, a key, the bundle
        options = ["train_cfg.max_iters=2", "val_cfg=None", "val_dataloader=None", "val_evaluator=None"]
        run([sys.executable, "-m", "training.train", str(CONFIG), "--bundle", "data/bundle", "--signer", "data/owner/signer.json",
             "--work-dir", "work", "--cfg-options", *options], root)  # fmt: skip
        checkpoint = root / "work" / "iter_2.pth"
        key = keys.load(root / "data" / "owner" / "key.json")
        first = next((root / "data" / "raw" / "cityscapes" / "leftImg8bit" / "val").glob("*/*.png"))
        plain, _ = plain_image(read_bytes(first), first, 16)
        images = {name: BlockCipher(key).encrypt(np.ascontiguousarray(image)) for name, image in (("large", plain), ("small", plain[:64, :128]))}
        bodies = {name: encode_rgb(image, key.spec()) for name, image in images.items()}

        segmenter = Segmenter(load_config(CONFIG, str(root / "data" / "bundle")), str(checkpoint), "cpu")
        maps = LabelMaps.of(cityscapes())
        expected = {name: maps.png(segmenter.segment([image])[0], "trainIds") for name, image in images.items()}
        forward = []
        for _ in range(ROUNDS[1]):
            start = time.perf_counter()
            segmenter.segment([images["large"]])
            forward.append(time.perf_counter() - start)
        forward_p50 = statistics.median(forward)
        del segmenter

        with service(root, checkpoint, max_batch_size=8) as (url, pid):
            figures = {c: drive(url, bodies["large"], expected["large"], c, n) for c, n in ROUNDS.items()}
            capacity = figures[16]["rps"]
            outcomes = overload(url, bodies["large"], expected["large"], OVERLOAD * capacity, OVERLOAD_SECONDS)
            drive(url, bodies["small"], expected["small"], 16, 200)
            before = rss_mib(pid)
            drive(url, bodies["small"], expected["small"], 16, MEMORY_REQUESTS)
            after = rss_mib(pid)
        with service(root, checkpoint, max_batch_size=1) as (url, _):
            unbatched = drive(url, bodies["large"], expected["large"], 16, ROUNDS[16])

    h, w = images["large"].shape[:2]
    print(f"the service, tiny SETR-Naive on a CPU (one torch thread), {h}x{w} encrypted queries:")
    for c, f in figures.items():
        print(f"  concurrency {c:2d}: {f['rps']:5.2f} requests/s  p50 {1e3 * f['p50']:6.0f} ms  p99 {1e3 * f['p99']:6.0f} ms")
    print(f"  overhead at concurrency 1: p50 {1e3 * figures[1]['p50']:.0f} ms over the model's own forward pass "
          f"{1e3 * forward_p50:.0f} ms = {figures[1]['p50'] / forward_p50:.3f}x (target <= 1.15)")  # fmt: skip
    print(f"  dynamic batching at concurrency 16: {capacity:.2f} requests/s with batches of up to 8, "
          f"{unbatched['rps']:.2f} with batches of 1: {capacity / unbatched['rps']:.2f}x")  # fmt: skip
    print(f"  overload at {OVERLOAD}x capacity ({OVERLOAD * capacity:.1f} requests/s for {OVERLOAD_SECONDS} s): "
          + ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())))  # fmt: skip
    print(f"  memory over {MEMORY_REQUESTS} requests (64x128, concurrency 16): RSS {before:.0f} -> {after:.0f} MiB "
          f"({after - before:+.1f} MiB, {after / before:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
