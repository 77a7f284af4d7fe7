"""The Airflow DAG end to end: `airflow dags test` on SQLite, the tiny sample and the tiny config, two runs.

The first run fails (the owner's checkpoint is not there yet) after encrypting every shard; the second
finds the checkpoint, reuses the shards and runs to the end. Airflow runs from its own environment
(`make airflow`), and the DAG's tasks from this one.
"""

import json
import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import keys
from pipeline.bundle import check_published
from pipeline.sample import write_random_vit, write_sample

ROOT = Path(__file__).parents[1]
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
ARCH = "vit_tiny_patch16_224"  # the tiny configs' backbone
OWNER = ["owner.keygen", "owner.encrypt", "owner.encrypt_weights", "owner.publish"]
CLOUD = ["cloud.verify", "cloud.train", "cloud.test"]

pytestmark = pytest.mark.slow  # Airflow: two runs, about 80 s (and its own environment, which `make test` makes)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    """Both DAG runs: their output and task states, and where everything went."""
    if not AIRFLOW.exists():  # `make test` makes it: its absence is a broken set-up, not a reason to skip
        pytest.fail(f"no Airflow environment at {AIRFLOW.parent.parent}: run `make airflow`")
    tmp = tmp_path_factory.mktemp("dag")
    home, key_file, weights = tmp / "airflow", tmp / "owner" / "key.json", tmp / f"{ARCH}.safetensors"
    write_sample(tmp / "raw", counts={"train": 4, "val": 2}, size=(96, 128))
    owner_config = tmp / "owner.toml"
    owner_config.write_text(
        f'arch = "{ARCH}"\nweights = "{weights}"\nstore = "{tmp}/owner/dataset.zarr"\n'
        f'encrypted-weights = "{tmp}/owner/backbone.safetensors"\nworkers = 1\nshard-size = 2\n'
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "0",  # here a retry fails the same way: no need to wait
        "AIRFLOW_VAR_CIPHERSEG_KEY_FILE": str(key_file),
    }
    conf = json.dumps({
        "raw": str(tmp / "raw"),
        "bundle": str(tmp / "bundle"),
        "owner_config": str(owner_config),
        "train_config": "training/configs/tiny/setr_tiny_naive_proposed.py",
        "cfg_options": ["train_cfg.max_iters=2", "default_hooks.checkpoint.interval=2"],
        "cloud_dir": str(tmp / "cloud"),
    })

    def dag_run() -> tuple[bytes, dict[str, tuple[str, int]]]:
        command = [AIRFLOW, "dags", "test", "cipherseg", "--conf", conf]
        done = subprocess.run(command, env=env, capture_output=True, timeout=600)
        return done.stdout + done.stderr, last_run_tasks(home)

    subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)
    first, first_tasks = dag_run()
    first_key = keys.load(key_file)
    write_random_vit(weights, ARCH)
    second, second_tasks = dag_run()
    return SimpleNamespace(
        first=first, first_tasks=first_tasks, first_key=first_key,
        second=second, second_tasks=second_tasks,
        home=home, key=keys.load(key_file), signer=key_file.parent / "signer.json", bundle=tmp / "bundle",
        cloud=tmp / "cloud",
    )  # fmt: skip


def test_a_failed_task_stops_the_run_after_its_retries(runs):
    assert runs.first_tasks == {
        "owner.keygen": ("success", 1),
        "owner.encrypt": ("success", 1),
        "owner.encrypt_weights": ("failed", 3),
        **dict.fromkeys(["owner.publish", *CLOUD], ("upstream_failed", 0)),
    }
    assert b"4 train, 2 val (3 shards written, 0 already done" in runs.first
    assert b"vit_tiny_patch16_224.safetensors: not found" in runs.first


def test_the_rerun_reuses_the_key_and_the_shards_and_succeeds(runs):
    log = runs.second[-6000:].decode(errors="replace")
    assert runs.second_tasks == dict.fromkeys(OWNER + CLOUD, ("success", 1)), log
    assert runs.key.key_id == runs.first_key.key_id
    assert b"4 train, 2 val (0 shards written, 3 already done" in runs.second


def test_the_cloud_gets_locations_and_a_bundle_that_verifies(runs):
    (work_dir,) = runs.cloud.iterdir()  # one per DAG run that trained
    assert xcoms(runs.home) == {
        "owner.publish": {"bundle": str(runs.bundle), "signer": str(runs.signer)},
        "cloud.train": str(work_dir / "iter_2.pth"),
        "cloud.test": str(work_dir / "metrics.json"),
    }
    assert b"signed by owner " + runs.key.signer().fingerprint.encode() in runs.second  # the cloud checked who published
    assert check_published(str(runs.bundle), runs.key).manifest.cipher == runs.key.spec()  # and it holds no key material
    assert 0 <= json.loads((work_dir / "metrics.json").read_text())["mIoU"] <= 100


def test_the_key_never_reaches_airflow(runs):
    # The task logs (`dags test` writes them to its output), the XComs and all of Airflow's files.
    logs = [runs.first, runs.second, json.dumps(xcoms(runs.home)).encode()]
    logs += [path.read_bytes() for path in runs.home.rglob("*") if path.is_file()]  # its database among them
    for secret in (runs.key.secret, runs.key.secret.hex().encode()):
        assert not any(secret in text for text in logs)


def test_one_run_at_a_time(tmp_path):
    """As Airflow loads the DAG: a second run waits until the first has ended (they share key, store and bundle)."""
    code = (
        "from airflow.models.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        "print(bag.import_errors or bag.dags['cipherseg'].max_active_runs)\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([AIRFLOW.parent / "python", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "1"


def last_run_tasks(home: Path) -> dict[str, tuple[str, int]]:
    """(state, try number) of every task of the newest DAG run."""
    newest = "(SELECT run_id FROM dag_run WHERE id = (SELECT max(id) FROM dag_run))"
    rows = query(home, f"SELECT task_id, state, try_number FROM task_instance WHERE run_id = {newest}")
    return {task: (state, tries) for task, state, tries in rows}


def xcoms(home: Path) -> dict[str, object]:
    """The return values the newest DAG run's tasks handed on."""
    newest = "(SELECT max(id) FROM dag_run)"
    rows = query(home, f"SELECT task_id, value FROM xcom WHERE dag_run_id = {newest} AND key = 'return_value'")
    return {task: json.loads(value) for task, value in rows}


def query(home: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(home / "airflow.db")) as db:
        return db.execute(sql).fetchall()
