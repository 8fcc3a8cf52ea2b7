import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import sqlite_utils  # noqa: E402
from openai import OpenAI  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.config import AuthConfig, ModelConfig, RewardConfig, RolloutConfig, Settings, StoreConfig  # noqa: E402
from tao.fake_upstream import FakeConfig, FakeUpstream  # noqa: E402
from tests.servers import running  # noqa: E402


@pytest.fixture
def fake() -> Iterator[tuple[FakeUpstream, str]]:
    """A fresh fake upstream on its own port: (app, base URL ending in /v1)."""
    upstream = FakeUpstream(FakeConfig())
    with running(upstream) as url:
        yield upstream, url + "/v1"


class Gateway:
    """A running gateway: its URL, an OpenAI client, and its SQLite file."""

    def __init__(self, url: str, db_path: Path, app: Any, transport: str) -> None:
        self.url = url
        self.transport = transport
        self.db_path = db_path
        self.app = app
        self.client = OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0, timeout=60)

    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.db_path)

    def wait_for_rows(self, count: int, timeout_s: float = 10.0) -> list[dict]:
        """Requests rows once the background writer has written `count` of them."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            rows = list(self.db()["requests"].rows_where(order_by="created_at"))
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


@pytest.fixture(params=["direct", "litellm"])
def gateway(request, tmp_path: Path, fake):
    """Build and run a gateway in front of the fake upstream: `with gateway(**model_overrides) as gw:`.

    Every test using it runs twice: through the direct OpenAI-compatible transport and through LiteLLM.
    """
    upstream, upstream_url = fake
    transport = request.param

    @contextmanager
    def start(reward: dict | None = None, auth: dict | None = None, rollout: dict | None = None,
              **model: Any) -> Iterator[Gateway]:
        config = {"name": "mock", "backend": "litellm", "model": "openai/mock", "api_base": upstream_url,
                  "api_key": "none", "best_of": 4, "max_best_of": 16, "num_retries": 0, "transport": transport, **model}
        settings = Settings(
            models=[ModelConfig(**config)],
            reward=RewardConfig(**(reward or {"kind": "default"})),
            store=StoreConfig(path=tmp_path / "tao.db"),
            auth=AuthConfig(**(auth or {})),
            rollout=RolloutConfig(**(rollout or {})),
        )
        app = create_app(settings)
        with running(app) as url:
            yield Gateway(url, tmp_path / "tao.db", app, transport)

    return start
