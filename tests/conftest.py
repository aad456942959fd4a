"""Session-wide fixtures: a real Redis server (ours unless REDIS_URL says otherwise), and the
project's fake WeCom in-process (``fake_wecom``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from devkit.embedded_redis import EmbeddedRedis
from tests.inprocess_wecom import InProcessWeCom

# The `redis` fixture empties its database before every test. A server the suite started is
# its own; a server named by REDIS_URL may hold someone's data, so it is flushed only on request.
FLUSH_OPT_IN = "WECOM_BUS_TEST_FLUSH"
REFUSAL = (
    "REDIS_URL names a Redis the tests did not start, and the tests empty (FLUSHDB) its database: "
    f"set {FLUSH_OPT_IN}=1 to allow that, or unset REDIS_URL so the tests start their own"
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis | None]:
    """The embedded server, or None when REDIS_URL points at one the caller runs (and the
    caller agreed to have it flushed)."""
    if os.environ.get("REDIS_URL"):
        if os.environ.get(FLUSH_OPT_IN) != "1":
            pytest.exit(REFUSAL, returncode=pytest.ExitCode.USAGE_ERROR)
        yield None
        return
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis | None) -> str:
    return redis_server.url if redis_server else os.environ["REDIS_URL"]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on a flushed database."""
    client: Redis = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def fake_wecom() -> AsyncIterator[InProcessWeCom]:
    """A fresh fake WeCom in this process: ``.transport`` for a WeComClient (base URL
    ``.base_url``), ``.settings`` for its app, ``.fault(...)`` for the fault API, ``.state``."""
    fake = InProcessWeCom()
    try:
        yield fake
    finally:
        await fake.aclose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full",
        action="store_true",
        default=False,
        help="run tests/test_chaos.py at full size (10,000 callbacks; `make chaos`)",
    )
