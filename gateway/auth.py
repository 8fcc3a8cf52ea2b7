"""Who may call what.

Closed by default once keys exist: with `auth.api_keys` set, every path needs an API key (or the
admin key) except `auth.public_paths` (default: `/healthz` only), so /metrics, /docs and
/openapi.json are closed too; /admin routes and `X-TAO-Arm` need the admin key, and with no
admin key configured nobody can use them. With no keys at all the gateway is open, which
`check_exposure` allows only on a loopback address unless the operator says
`auth.allow_unauthenticated`.

The key check is one pure-ASGI middleware (it sees every route, FastAPI's docs included); the
admin check is a FastAPI dependency on the /admin routes. Keys are compared in constant time and
never logged: the log records a salted hash of the caller's key (`Auth.caller`), which is how
feedback is tied to the key that made the request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets

import orjson
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import AuthConfig
from gateway.errors import APIError

ANONYMOUS = "anonymous"


def bearer(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header, else ''."""
    return _bearer(request.headers.get("authorization", ""))


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token if scheme.lower() == "bearer" else ""


class Auth:
    def __init__(self, config: AuthConfig, salt: str) -> None:
        self.config = config
        self.salt = salt

    def caller(self, request: Request) -> str:
        """A salted hash of the caller's key ("anonymous" without one): stable per key and database,
        useless for recovering the key."""
        token = bearer(request)
        if not token:
            return ANONYMOUS
        return "key:" + hashlib.sha256(f"{self.salt}:{token}".encode()).hexdigest()[:24]

    def is_admin(self, request: Request) -> bool:
        """The admin key, when one is configured; anyone, only while the whole gateway is open."""
        if self.config.admin_key:
            return secrets.compare_digest(bearer(request), self.config.admin_key)
        return not self.config.api_keys

    def valid_key(self, token: str) -> bool:
        keys = [*self.config.api_keys, *([self.config.admin_key] if self.config.admin_key else [])]
        # Every key is compared, so the time taken does not say which one nearly matched.
        return any([secrets.compare_digest(token, key) for key in keys])

    def check_admin(self, request: Request) -> None:
        if self.is_admin(request):
            return
        if not self.config.admin_key:
            raise APIError(403, "admin routes are closed: API keys are configured and auth.admin_key is not",
                           type="permission_error", code="admin_disabled")
        raise APIError(401, "admin routes need the admin key (Authorization: Bearer <admin key>)",
                       type="authentication_error", code="invalid_admin_key")


class KeyCheckMiddleware:
    """With API keys configured, answer 401 to any path outside `public_paths` without a valid key."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth
        self.public = frozenset(auth.config.public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.auth.config.api_keys or scope["path"] in self.public:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        if self.auth.valid_key(_bearer(header)):
            return await self.app(scope, receive, send)
        error = APIError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                         type="authentication_error", code="invalid_api_key")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": orjson.dumps(error.body())})


async def require_admin(request: Request) -> None:
    """FastAPI dependency of the /admin routes (the app keeps its `Auth` in `app.state.auth`)."""
    auth: Auth = request.app.state.auth
    auth.check_admin(request)


class ExposedWithoutKeys(RuntimeError):
    """`tao serve` was asked to listen beyond loopback with no API keys and no explicit consent."""


def check_exposure(host: str, config: AuthConfig) -> None:
    """Refuse an open gateway on a non-loopback address unless `allow_unauthenticated` says so, as
    LiteLLM's proxy refuses to boot without a master key."""
    if config.api_keys or config.allow_unauthenticated or _loopback(host):
        return
    raise ExposedWithoutKeys(
        f"refusing to listen on {host} with no API keys: anyone who can reach it could use the upstream "
        "models and the admin routes. Set auth.api_keys (TAO_AUTH__API_KEYS='[\"key\"]') and auth.admin_key, "
        "or pass --allow-unauthenticated (auth.allow_unauthenticated: true) if the network is trusted.")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything
