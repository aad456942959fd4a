"""The bad-callback corpus (tests/corpus/cases, written by tests/corpus/make_corpus.py).

Every case must get its documented 4xx (DESIGN §3: 400, 403, 404, 405, 413), never a 5xx, and
publish nothing; the ingress must stay healthy and still accept the control callback after the
whole corpus. The corpus runs against the app in-process (httpx.ASGITransport) and, marked slow,
against a real ingress process behind uvicorn and httptools.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from devkit.dev import Stack
from devkit.embedded_redis import free_port
from services.ingress.app import create_app
from shared.bus import names
from tests import helpers
from tests.corpus import make_corpus

CORPUS = Path(__file__).parent / "corpus"
DOCUMENTED = {400, 403, 404, 405, 413}
# The corpus is signed with a fixed timestamp; huge bodies are sized for this limit.
ENV = {"INGRESS_MAX_CLOCK_SKEW": "0", "INGRESS_MAX_BODY": str(make_corpus.MAX_BODY)}
EVENTS = names.events()


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    method: str
    url: str
    body: bytes | None
    chunked: bool
    status: int

    def content(self) -> bytes | Iterator[bytes] | None:
        if self.body is None or not self.chunked:
            return self.body
        return iter([self.body[i : i + 65536] for i in range(0, len(self.body), 65536)])

    async def acontent(self) -> bytes | AsyncIterator[bytes] | None:
        if self.body is None or not self.chunked:
            return self.body

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(self.body or b""), 65536):
                yield (self.body or b"")[i : i + 65536]

        return chunks()


def load(manifest: Path) -> Case:
    spec = tomllib.loads(manifest.read_text())
    body = None
    if "body" in spec:
        body = (manifest.parent / spec["body"]).read_bytes() * spec.get("repeat", 1)
    query = spec["query"]
    return Case(
        name=manifest.stem,
        description=spec["description"],
        method=spec["method"],
        url=spec["path"] + (f"?{query}" if query else ""),
        body=body,
        chunked=spec.get("chunked", False),
        status=spec["status"],
    )


CASES = [load(p) for p in sorted((CORPUS / "cases").glob("*.toml"))]
CONTROL = load(CORPUS / "control.toml")
PARAMS = [pytest.param(c, id=c.name) for c in CASES]


@pytest.fixture
async def client(redis_url: str, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(helpers.settings(redis_url, **ENV), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        yield c


async def send(client: httpx.AsyncClient, case: Case) -> httpx.Response:
    return await client.request(case.method, case.url, content=await case.acontent())


def test_the_corpus_is_large_described_and_documented() -> None:
    assert len(CASES) >= 40
    for case in CASES:
        assert case.description.strip() and "\n" not in case.description, case.name
        assert case.status in DOCUMENTED, case.name
    kinds = {c.name.split("_")[0] for c in CASES}
    assert kinds >= {"q", "sig", "body", "enc", "plain", "m", "path", "get"}


def test_the_files_are_what_the_script_writes(tmp_path: Path) -> None:
    make_corpus.write(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    kept = sorted(
        p.relative_to(CORPUS)
        for p in CORPUS.rglob("*")
        if p.is_file() and (p.parent.name == "cases" or p.stem == "control")
    )
    assert written == kept
    for path in written:
        assert (tmp_path / path).read_bytes() == (CORPUS / path).read_bytes(), path


async def test_the_control_callback_is_accepted(client: httpx.AsyncClient, redis: Redis) -> None:
    response = await send(client, CONTROL)
    assert response.status_code == 200
    assert await redis.xlen(EVENTS) == 1


@pytest.mark.parametrize("case", PARAMS)
async def test_each_bad_callback_gets_its_4xx_and_publishes_nothing(
    client: httpx.AsyncClient, redis: Redis, case: Case
) -> None:
    response = await send(client, case)
    assert response.status_code == case.status, case.description
    assert await redis.exists(EVENTS) == 0
    assert (await client.get("/healthz")).status_code == 200


async def test_after_the_whole_corpus_the_ingress_still_works(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    statuses = [(await send(client, c)).status_code for c in CASES]
    assert all(s < 500 for s in statuses)
    assert await redis.exists(EVENTS) == 0
    assert (await send(client, CONTROL)).status_code == 200
    assert await redis.xlen(EVENTS) == 1


@pytest.fixture(scope="module")
def real_ingress(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """An ingress process (uvicorn + httptools) configured for the corpus; its URL and log."""
    log_dir = tmp_path_factory.mktemp("corpus-ingress")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "BUS_"))}
    env.update(
        REDIS_URL=redis_url,
        BUS_PREFIX="corpus",
        WECOM_CORP_ID=helpers.CORP_ID,
        WECOM_AGENT_ID=str(helpers.AGENT_ID),
        WECOM_TOKEN=helpers.TOKEN,
        WECOM_ENCODING_AES_KEY=helpers.AES_KEY,
        LOG_FORMAT="json",
        **ENV,
    )
    stack = Stack(env=env, log_dir=log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        stack.spawn("ingress", "--host", "127.0.0.1", "--port", str(port))
        stack.wait_ready({"ingress": f"{url}/readyz"}, timeout=30)
        yield url, str(log_dir / "ingress.log")
        stack.check_alive()
    finally:
        stack.stop()


@pytest.mark.slow
async def test_the_corpus_against_a_real_ingress_process(
    real_ingress: tuple[str, str], redis: Redis
) -> None:
    url, log = real_ingress
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for case in CASES:
            response = await send(http, case)
            if response.status_code != case.status:
                wrong.append(f"{case.name}: {response.status_code} != {case.status}")
        assert wrong == []
        assert await redis.exists(names.events("corpus")) == 0
        assert (await http.get("/readyz")).status_code == 200
        assert (await send(http, CONTROL)).status_code == 200
    assert await redis.xlen(names.events("corpus")) == 1
    assert "Traceback" not in Path(log).read_text()
