"""Fixtures: a fake upstream, and gateways in front of it over real HTTP and a real SQLite file."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from openai import OpenAI

from gateway.app import create_app
from gateway.config import (
    AuthConfig,
    ModelConfig,
    RolloutConfig,
    ServerConfig,
    Settings,
    StoreConfig,
)
from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.servers import running
from tests.waiting import wait_until


@pytest.fixture
def fake() -> Iterator[tuple[FakeUpstream, str]]:
    """A fresh fake upstream on its own port: (app, base URL ending in /v1)."""
    upstream = FakeUpstream(FakeConfig())
    with running(upstream) as url:
        yield upstream, url + "/v1"


class Gateway:
    """A running gateway: its URL, an OpenAI client, and its SQLite file."""

    def __init__(self, url: str, db_path: Path, transport: str) -> None:
        self.url = url
        self.transport = transport
        self.db_path = db_path
        self.client = OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0, timeout=60)

    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.db_path)

    def wait_for_rows(self, count: int, timeout_s: float = 10.0) -> list[dict]:
        """Requests rows (oldest first) once the background writer has written `count` of them."""
        def rows() -> list[dict]:
            return list(self.db()["requests"].rows_where(order_by="created_at"))

        def written() -> tuple[list[dict]] | None:
            found = rows()
            return (found,) if len(found) >= count else None

        [found] = wait_until(written, lambda: f"{len(rows())} of {count} requests rows written after {timeout_s:g} s",
                             timeout_s)
        return found


TRANSPORTS = ("direct", "litellm")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the upstream call path (`@pytest.mark.each_transport`) run on every transport."""
    if "transport" in metafunc.fixturenames and metafunc.definition.get_closest_marker("each_transport"):
        metafunc.parametrize("transport", TRANSPORTS)


@pytest.fixture
def transport() -> str:
    """The upstream transport a test's gateway uses; the direct one unless the test is marked."""
    return "direct"


@pytest.fixture
def gateway(tmp_path: Path, fake, transport: str):
    """Build and run a gateway in front of the fake upstream: `with gateway(**model_overrides) as gw:`."""
    upstream, upstream_url = fake

    @contextmanager
    def start(reward: dict | None = None, auth: dict | None = None, rollout: dict | None = None,
              store: dict | None = None, server: dict | None = None, **model: Any) -> Iterator[Gateway]:
        config = {"name": "mock", "backend": "litellm", "model": "openai/mock", "api_base": upstream_url,
                  "api_key": "none", "best_of": 4, "max_best_of": 16, "num_retries": 0, "transport": transport, **model}
        settings = Settings(
            models=[ModelConfig(**config)],
            reward=reward or {"kind": "default"},  # validated into its kind's model
            store=StoreConfig(path=tmp_path / "tao.db", **(store or {})),
            server=ServerConfig(**(server or {})),
            auth=AuthConfig(**(auth or {})),
            rollout=RolloutConfig(**(rollout or {})),
        )
        with running(create_app(settings), server_config=settings.server) as url:
            yield Gateway(url, tmp_path / "tao.db", transport)

    return start
