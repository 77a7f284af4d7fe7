"""The whole cipherseg flow as one Airflow DAG: the data owner encrypts and publishes a bundle, the cloud
verifies it, fine-tunes on it and tests.

Airflow only orchestrates: every task runs the project's command line with the project's own Python
(parameter ``python``), so Airflow needs none of the project's packages and never imports torch. The
owner group hands the cloud group two locations: the bundle, and the owner's public signer file, with
which every cloud task refuses a bundle the owner did not sign. The key stays a file on the owner's
side, at the path the Airflow Variable ``cipherseg_key_file`` names; the owner's commands read it, Airflow
never does, so it cannot reach an XCom or a log. The signer file (public) is written beside it, or where
the Variable ``cipherseg_signer_file`` says.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from pathlib import Path

from airflow.sdk import Param, Variable, dag, get_current_context, task, task_group

# This file sits in dags/ of a checkout (or links there): the default project the commands run in.
CHECKOUT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


@dag(
    schedule=None,
    # Runs share the key file and, unless their parameters say otherwise, the owner's store and the bundle:
    # one run at a time, so that two never write one store or bundle at once.
    max_active_runs=1,
    # Every stage resumes (encrypt: per-shard records; train: its last checkpoint) or rewrites its own
    # output, so a retry redoes only what is unfinished. The delay is [core] default_task_retry_delay.
    default_args={"retries": 2},
    # The defaults run on the sample that `make run` writes (hence the tiny training config).
    params={
        "raw": Param("data/raw/cityscapes", type="string", description="the Cityscapes tree (path or URL)"),
        "bundle": Param("data/bundle", type="string", description="where the bundle is published (path or URL)"),
        "owner_config": Param(None, type=["null", "string"], description="pipeline.run --config TOML file"),
        "scheduler": Param(None, type=["null", "string"], description="Dask scheduler tcp://host:port; none: local"),
        "train_config": Param(
            "training/configs/tiny/setr_tiny_naive_proposed.py", type="string", description="the cloud's mmseg config"
        ),
        "cfg_options": Param([], type="array", description="training config overrides, key=value"),
        "cloud_dir": Param("data/cloud", type="string", description="the cloud's working directory"),
        "project": Param(str(CHECKOUT), type="string", description="the checkout; relative paths start here"),
        "python": Param(".venv/bin/python", type="string", description="the project's Python"),
    },
)
def cipherseg():
    @task_group
    def owner():
        @task
        def keygen() -> None:
            key = _key_file()
            if Path(key).exists():
                log.info("using the existing key file %s", key)
            else:
                _owner("keygen")

        @task
        def encrypt() -> None:
            _owner("encrypt")

        @task
        def encrypt_weights() -> None:
            _owner("encrypt-weights")

        @task
        def publish() -> dict[str, str]:
            _owner("publish")
            return {"bundle": _path(_params()["bundle"]), "signer": _signer_file()}

        published = publish()
        keygen() >> [encrypt(), encrypt_weights()] >> published
        return published

    @task_group
    def cloud(published: dict[str, str]):
        @task
        def verify(published: dict[str, str]) -> None:
            _cloud("pipeline.run", "--stage", "verify", "--bundle", published["bundle"], "--signer", published["signer"])

        @task
        def train(published: dict[str, str]) -> str:
            _training("training.train", published, "--resume")
            return (Path(_work_dir()) / "last_checkpoint").read_text().strip()

        @task
        def test(published: dict[str, str], checkpoint: str) -> str:
            metrics = str(Path(_work_dir()) / "metrics.json")
            _training("training.test", published, checkpoint, "--out", metrics)
            return metrics

        checkpoint = train(published)
        verify(published) >> checkpoint  # the cloud trains on a bundle it has checked
        test(published, checkpoint)

    cloud(owner())


def _params() -> dict:
    return get_current_context()["params"]


def _path(location: str) -> str:
    """Relative paths start in the project checkout; URLs stay as they are."""
    return location if "://" in location else str(Path(_params()["project"], location))


def _key_file() -> str:
    # A Variable, not a run parameter: whoever triggers a run chooses the data, not where the key lives.
    return _path(Variable.get("cipherseg_key_file", default="data/owner/key.json"))


def _signer_file() -> str:
    default = str(Path(_key_file()).parent / "signer.json")  # where the owner's keygen writes it
    return _path(Variable.get("cipherseg_signer_file", default=default))


def _owner(stage: str) -> None:
    p = _params()
    args = ["--stage", stage, "--key", _key_file(), "--signer", _signer_file(), "--raw", p["raw"], "--bundle", p["bundle"]]
    args += ["--config", p["owner_config"]] if p["owner_config"] else []
    args += ["--scheduler", p["scheduler"]] if p["scheduler"] else []
    _run(p["project"], "pipeline.run", *args)


def _cloud(module: str, *args: str) -> None:
    # In its own directory: the cloud shares nothing with the owner's checkout but the bundle.
    _run(_path(_params()["cloud_dir"]), module, *args)


def _training(module: str, published: dict[str, str], *args: str) -> None:
    p = _params()
    options = ["--cfg-options", *p["cfg_options"]] if p["cfg_options"] else []
    location = ["--bundle", published["bundle"], "--signer", published["signer"]]
    _cloud(module, _path(p["train_config"]), *args, *location, "--work-dir", _work_dir(), *options)


def _work_dir() -> str:
    # One per DAG run: a retry resumes this run's training, a new run starts afresh.
    return str(Path(_path(_params()["cloud_dir"]), get_current_context()["run_id"]))


def _run(cwd: str, module: str, *args: str) -> None:
    """``python -m module args`` in the project's environment; its output goes to the task log."""
    command = [_path(_params()["python"]), "-m", module, *args]
    log.info("running %s", shlex.join(command))
    Path(cwd).mkdir(parents=True, exist_ok=True)
    # One stream: the commands log to stderr, which Airflow would file as errors.
    subprocess.run(command, cwd=cwd, stderr=subprocess.STDOUT, check=True)


cipherseg()
