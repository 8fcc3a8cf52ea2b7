"""Access: closed by default once keys exist; admin needs the admin key; feedback belongs to its key."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.auth import ExposedWithoutKeys, check_exposure
from gateway.config import AuthConfig
from gateway.store import Checkpoint, CheckpointStatus, connection, register_checkpoint

KEYS = {"api_keys": ["key-a", "key-b"]}
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "best_of": 2}


def auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def test_admin_routes_are_closed_when_api_keys_are_set_and_no_admin_key(gateway):
    with gateway(auth=KEYS) as gw:
        for path in ("/admin/rollout/mock/start", "/admin/rollout/mock/promote", "/admin/rollout/mock/rollback"):
            no_key = httpx.post(gw.url + path, json={"checkpoint": "x"})
            assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
            api_key = httpx.post(gw.url + path, json={"checkpoint": "x"}, headers=auth("key-a"))
            assert api_key.status_code == 403 and api_key.json()["error"]["code"] == "admin_disabled"
        pinned = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={**auth("key-a"), "X-TAO-Arm": "base"})
        assert pinned.status_code == 403 and pinned.json()["error"]["param"] == "X-TAO-Arm"


def test_with_an_admin_key_only_it_opens_admin(gateway):
    with gateway(auth={**KEYS, "admin_key": "root"}) as gw:
        assert httpx.get(gw.url + "/admin/rollout", headers=auth("key-a")).status_code == 401
        assert httpx.get(gw.url + "/admin/rollout", headers=auth("root")).status_code == 200
        pinned = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={**auth("root"), "X-TAO-Arm": "base"})
        assert pinned.status_code == 200


def test_everything_but_healthz_needs_a_key_by_default_and_public_paths_open_more(gateway):
    with gateway(auth=KEYS) as gw:
        for path in ("/metrics", "/docs", "/openapi.json", "/v1/models", "/admin/rollout", "/nope"):
            assert httpx.get(gw.url + path).status_code == 401, path
        assert httpx.get(gw.url + "/healthz").status_code == 200
        assert httpx.get(gw.url + "/metrics", headers=auth("key-b")).status_code == 200
    with gateway(auth={**KEYS, "public_paths": ["/healthz", "/metrics"]}) as gw:
        assert httpx.get(gw.url + "/metrics").status_code == 200
        assert httpx.get(gw.url + "/docs").status_code == 401


def test_a_rejected_checkpoint_starts_only_when_forced(gateway):
    with gateway(auth={**KEYS, "admin_key": "root"}) as gw:
        with connection(gw.db_path) as db:
            register_checkpoint(db, Checkpoint(
                id="ckpt-rejected", created_at=time.time(), model="mock", base_model="base", method="dpo",
                data_since=0, data_until=time.time(), metrics={}, path="/adapters/ckpt-rejected",
                status=CheckpointStatus.REJECTED))
        url = gw.url + "/admin/rollout/mock/start"
        refused = httpx.post(url, json={"checkpoint": "ckpt-rejected", "canary": 100}, headers=auth("root"))
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "checkpoint_not_candidate"
        forced = httpx.post(url, json={"checkpoint": "ckpt-rejected", "canary": 100, "force": True},
                            headers=auth("root"))
        assert forced.status_code == 200 and forced.json()["state"] == "canary"


def test_feedback_comes_only_from_the_key_that_made_the_request(gateway):
    with gateway(auth={**KEYS, "admin_key": "root"}) as gw:
        reply = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=auth("key-a")).json()
        request_id = reply["tao"]["request_id"]
        verdict = {"request_id": request_id, "preferred": 1}
        mine = httpx.post(gw.url + "/v1/feedback", json=verdict, headers=auth("key-a"))
        assert mine.status_code == 200
        own_user = mine.json()["user"]
        # Another key, even naming the first key's feedback user, can neither add nor overwrite a verdict.
        forged = httpx.post(gw.url + "/v1/feedback", json={**verdict, "preferred": 0, "user": own_user},
                            headers=auth("key-b"))
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "not_your_request"
        assert httpx.post(gw.url + "/v1/feedback", json={**verdict, "user": "reviewer"},
                          headers=auth("root")).status_code == 200
        rows = {r["user"]: r for r in gw.db()["feedback"].rows}
        assert rows[own_user]["candidate_index"] == 1 and set(rows) == {own_user, "reviewer"}
        [logged] = gw.wait_for_rows(1)
        assert logged["caller"] == own_user and "key-a" not in own_user  # a salted hash, not the key


def test_upstream_errors_keep_internal_addresses_out_of_the_reply_and_every_status_is_counted(gateway):
    with gateway(auth=KEYS, api_base="http://127.0.0.1:9/v1") as gw:  # nothing listens on port 9
        failed = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=auth("key-a"))
        assert failed.status_code == 502
        assert "127.0.0.1" not in failed.text and ":9" not in failed.text
        assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT).status_code == 401
        assert httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "model": "x"},
                          headers=auth("key-a")).status_code == 404
        assert httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "temperature": "hot"},
                          headers=auth("key-a")).status_code == 422
        metrics = httpx.get(gw.url + "/metrics", headers=auth("key-a")).text
        for status in ("401", "404", "422", "502"):
            assert f'tao_http_responses_total{{route="/v1/chat/completions",status="{status}"}} 1.0' in metrics
        [logged] = gw.wait_for_rows(1)
        assert "127.0.0.1:9" in logged["error"]  # the operator's log keeps the whole message


def test_serve_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path):
    with pytest.raises(ExposedWithoutKeys, match="allow-unauthenticated"):
        check_exposure("0.0.0.0", AuthConfig())
    check_exposure("127.0.0.1", AuthConfig())
    check_exposure("::1", AuthConfig())
    check_exposure("0.0.0.0", AuthConfig(api_keys=["k"]))
    check_exposure("0.0.0.0", AuthConfig(allow_unauthenticated=True))
    done = subprocess.run([sys.executable, "-m", "tao", "serve", "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0 and "refusing to listen on 0.0.0.0" in done.stderr
