"""One request never stalls the others: body size, body and header deadlines, JSON depth, scoring
off the event loop for large inputs."""

import asyncio
import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx

from gateway.rewards.base import FunctionScorer

LIMITS = {"max_body_mb": 0.5, "body_timeout_s": 1.0, "header_timeout_s": 1.0}


def connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=30)


def wait_closed_by_server(sock: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it stays open)."""
    sock.settimeout(within_s)
    received = b""
    while chunk := sock.recv(65536):  # raises socket.timeout if the server keeps it open
        received += chunk
    return received


def test_a_body_over_the_limit_gets_413_declared_or_chunked(gateway):
    with gateway(server=LIMITS) as gw:
        big = {"model": "mock", "messages": [{"role": "user", "content": "x" * 600_000}]}
        declared = httpx.post(gw.url + "/v1/chat/completions", json=big)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

        def chunks():
            data = json.dumps(big).encode()
            for i in range(0, len(data), 65536):
                yield data[i:i + 65536]

        chunked = httpx.post(gw.url + "/v1/chat/completions", content=chunks(),
                             headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert httpx.post(gw.url + "/v1/chat/completions", json={**big, "messages": [
            {"role": "user", "content": "small"}]}).status_code == 200
        [row] = gw.wait_for_rows(1)  # refused bodies were never parsed, so never logged as requests
        assert row["status"] == "ok"


def test_json_nested_too_deep_gets_400_not_500(gateway):
    with gateway(server=LIMITS) as gw:
        deep = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "metadata": {}}
        node = deep["metadata"]
        for _ in range(500):
            node["a"] = {}
            node = node["a"]
        reply = httpx.post(gw.url + "/v1/chat/completions", json=deep)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "too_deep"
        array = '{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stop": ' + "[" * 500 + "]" * 500 + "}"
        assert httpx.post(gw.url + "/v1/chat/completions", content=array).status_code == 400


def test_a_body_that_trickles_in_gets_408(gateway):
    with gateway(server=LIMITS) as gw:
        sock = connect(gw.url)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")
        answer = wait_closed_by_server(sock, within_s=10)
        assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout_s" in answer


def test_a_connection_that_trickles_its_headers_is_closed(gateway):
    with gateway(server=LIMITS) as gw:
        sock = connect(gw.url)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        sent_more = threading.Event()

        def trickle():  # a byte every 0.2 s: no read timeout would ever fire
            try:
                for _ in range(50):
                    sock.sendall(b"X")
                    sent_more.set()
                    time.sleep(0.2)
            except OSError:
                pass  # the server closed it

        threading.Thread(target=trickle, daemon=True).start()
        assert sent_more.wait(5)
        assert wait_closed_by_server(sock, within_s=10) == b""  # closed without an answer
        assert httpx.get(gw.url + "/healthz").status_code == 200


def test_scoring_never_runs_on_the_event_loop():
    threads = []

    def record_thread(prompt, candidates):
        threads.append(threading.get_ident())
        return [0.0] * len(candidates)

    scorer = FunctionScorer("probe", record_thread, verifiable=lambda prompt: bool(threads.append(threading.get_ident())))

    async def run() -> int:
        await scorer.score("short prompt", ["a", "b"])
        await scorer.score("x" * 1_000_000, ["a", "b"])
        await scorer.states_something_verifiable("short prompt")
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    assert len(threads) == 3 and loop_thread not in threads
