"""Pytest fixtures for an S3-compatible object store: a moto server on loopback.

Use them from a test module with ``pytest_plugins = ["s3"]``. The server runs once per test
session on 127.0.0.1 (a free port) and stops at its end; every test gets a fresh bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on loopback; AWS settings point at it for the whole session."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # Fake credentials and the endpoint in the environment too: whatever builds its own client
    # (boto3, s3fs without our options) reaches moto, never a real AWS endpoint.
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            env.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, str]:
    """s3fs storage options for the moto server."""
    return {"endpoint_url": s3_endpoint, "key": "test", "secret": "test"}


@pytest.fixture
def s3_bucket(s3_options: dict[str, str]) -> str:
    """A new, empty bucket: its ``s3://`` URL."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_options).mkdir(name)
    return f"s3://{name}"
