"""Every call the upstream sees is counted: calls plus retries, on both transports."""

import httpx
import pytest


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.each_transport
@pytest.mark.parametrize("stream", [False, True])
def test_retries_are_counted_so_calls_plus_retries_is_what_the_upstream_saw(gateway, fake, transport, stream):
    upstream, _ = fake
    upstream.config.fail_every = 3  # every third call fails with a 500
    with gateway(num_retries=2, best_of=1) as gw:
        for i in range(12):
            reply = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
                "model": "mock", "stream": stream, "messages": [{"role": "user", "content": f"q{i}"}]})
            assert reply.status_code == 200, reply.text
        gw.wait_for_rows(12)  # a streamed reply is counted when its record is made, after the stream ends
        metrics = httpx.get(gw.url + "/metrics").text
    retries = metric(metrics, "tao_upstream_retries_total")
    calls = metric(metrics, "tao_upstream_calls_total")
    assert retries >= 4 and calls + retries == upstream.calls
