"""Who may call what, as FastAPI dependencies: an API key for /v1, the admin key for /admin.

With no API keys configured the API is open (the app says so at start); with no admin key, /admin
is as open as the API. The admin key also works wherever an API key does. Keys are compared in
constant time. The app keeps its `Auth` in `app.state.auth`, so the dependencies need no globals.
"""

from __future__ import annotations

import hashlib
import secrets

from fastapi import Request

from gateway.config import AuthConfig
from gateway.errors import APIError


def bearer(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header, else ''."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def caller(request: Request) -> str:
    """A stable name for whoever holds the caller's key, that does not reveal the key."""
    token = bearer(request)
    return f"key:{hashlib.sha256(token.encode()).hexdigest()[:12]}" if token else "anonymous"


class Auth:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config

    def is_admin(self, request: Request) -> bool:
        admin_key = self.config.admin_key
        return admin_key is None or secrets.compare_digest(bearer(request), admin_key)

    def check_api_key(self, request: Request) -> None:
        keys = self.config.api_keys
        if not keys:
            return
        token = bearer(request)
        if not any(secrets.compare_digest(token, k) for k in keys) and not (
                self.config.admin_key and secrets.compare_digest(token, self.config.admin_key)):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                           type="authentication_error", code="invalid_api_key")

    def check_admin(self, request: Request) -> None:
        if not self.is_admin(request):
            raise APIError(401, "admin routes need the admin key (Authorization: Bearer <admin key>)",
                           type="authentication_error", code="invalid_admin_key")


# Async dependencies: a sync one would cost a thread hop per request.
async def require_api_key(request: Request) -> None:
    auth: Auth = request.app.state.auth
    auth.check_api_key(request)


async def require_admin(request: Request) -> None:
    auth: Auth = request.app.state.auth
    auth.check_admin(request)
