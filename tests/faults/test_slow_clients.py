"""Slow clients do not starve the others: 300 connections that never finish their headers, against
a gateway started with an open-file limit of 256 (where 1,100 such connections made every normal
request fail before)."""

import resource
import socket
from pathlib import Path

import httpx

from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.gateway_process import GatewayProcess, mock_config
from tests.servers import running

SLOW_CONNECTIONS = 300


def test_normal_requests_keep_working_while_slow_clients_hold_connections(tmp_path: Path):
    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))

    with running(FakeUpstream(FakeConfig())) as upstream_url:
        config = mock_config(tmp_path / "tao.yaml", upstream_url, tmp_path / "tao.db",
                             extra="server: {header_timeout_s: 3}")
        gw = GatewayProcess(config, preexec=few_files)
        slow = []
        try:
            for _ in range(SLOW_CONNECTIONS):
                sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(sock)
            answered = gw.ask(20, concurrency=4)
            assert len(answered) == 20
            for sock in slow:  # each is closed by the gateway once its headers are overdue
                sock.settimeout(30)
                assert sock.recv(1024) == b""
            assert httpx.get(gw.url + "/healthz").status_code == 200
        finally:
            for sock in slow:
                sock.close()
            gw.terminate()
