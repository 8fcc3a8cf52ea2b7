"""Test servers: the gateway's own in-thread uvicorn runner, under the names the tests use."""

from tao.server_thread import free_port, serve_in_thread as running

__all__ = ["free_port", "running"]
