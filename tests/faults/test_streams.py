"""Streams: separate deadlines for the first token, the gaps between chunks and the whole stream;
a best-of-N request whose client leaves stops its upstream work and is logged as 499."""

import json
import socket
from urllib.parse import urlparse

import httpx
import pytest

WORDS = " ".join(f"word{i}" for i in range(15))


def stream(gw, **body) -> tuple[int, list[dict]]:
    events = []
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=60, json={
            "model": "mock", "stream": True, "messages": [{"role": "user", "content": "hi"}], **body}) as reply:
        if reply.status_code != 200:
            reply.read()
            return reply.status_code, [reply.json()]
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return reply.status_code, events


def test_a_stream_still_producing_is_not_cut_by_the_call_timeout(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = [WORDS]
    upstream.config.token_gap_s = 0.1
    # timeout_s (0.5 s) is for unstreamed calls; this stream takes ~1.4 s with 0.1 s gaps.
    with gateway(timeout_s=0.5, stream_idle_timeout_s=1.0, best_of=1) as gw:
        status, events = stream(gw)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert status == 200 and text == WORDS


def test_a_stream_that_goes_quiet_is_cut_with_an_error_event_and_logged(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = [WORDS]
    upstream.config.token_gap_s = 1.0
    with gateway(stream_idle_timeout_s=0.2, best_of=1) as gw:
        status, events = stream(gw)
        [row] = gw.wait_for_rows(1)
    assert status == 200 and "between chunks" in events[-1]["error"]["message"]
    assert row["http_status"] == 504 and "between chunks" in row["error"]


def test_no_first_token_in_time_is_a_504_before_the_stream_starts(gateway, fake):
    upstream, _ = fake
    upstream.config.hang_s = 5
    with gateway(first_token_timeout_s=0.3, best_of=1) as gw:
        status, [body] = stream(gw)
    assert status == 504 and "first token" in body["error"]["message"]


@pytest.mark.parametrize("streamed", [True, False])
def test_a_best_of_n_client_that_leaves_cancels_the_work_and_is_logged_499(gateway, fake, streamed):
    upstream, _ = fake
    upstream.config.hang_s = 30  # without cancellation the request would be logged only after 30 s
    with gateway(best_of=4, timeout_s=60) as gw:
        parsed = urlparse(gw.url)
        body = json.dumps({"model": "mock", "stream": streamed, "messages": [{"role": "user", "content": "hi"}]})
        sock = socket.create_connection((parsed.hostname, parsed.port))
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        deadline_calls = 100
        while upstream.calls == 0 and deadline_calls:  # until the upstream has the request
            deadline_calls -= 1
            sock.settimeout(0.05)
            try:
                sock.recv(1)
            except TimeoutError:
                pass
        assert upstream.calls >= 1
        sock.close()
        [row] = gw.wait_for_rows(1, timeout_s=10)
    assert row["http_status"] == 499 and row["status"] == "error"
    assert upstream.disconnects == upstream.calls  # every upstream call was dropped, none ran to the end
