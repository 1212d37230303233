"""API keys: with any configured, every `/v1/*` route needs `Authorization: Bearer KEY`.

Keys come from the app config (`api_keys`, from `switchyard serve --api-key`) and from the environment
variable `SWITCHYARD_API_KEY` (several comma-separated; the Helm chart sets it from a Kubernetes Secret, so a
key is never a plain value in the RayService). `/health`, `/metrics` and the OpenAPI docs stay open, for probes
and scrapers. Keys are compared in constant time (`hmac.compare_digest`) and never logged: the config holds
them as `SecretStr`, which prints as `**********`.

A pure ASGI middleware rather than a FastAPI dependency: it covers the routes the router deployment adds to
the app (`/v1/switchyard/stats`), and unlike `BaseHTTPMiddleware` it leaves streaming responses untouched.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Iterable

from switchyard.cluster.api.requests import ApiError

ENV = "SWITCHYARD_API_KEY"


def keys_from_env(environ=os.environ) -> list[str]:
    return [k.strip() for k in environ.get(ENV, "").split(",") if k.strip()]


def resolve_api_keys(configured: Iterable, environ=os.environ) -> tuple[str, ...]:
    """The keys this server accepts: the config's (str or pydantic SecretStr) and the environment's (empty: no
    key needed)."""
    plain = [key.get_secret_value() if hasattr(key, "get_secret_value") else key for key in configured]
    return tuple(dict.fromkeys([*plain, *keys_from_env(environ)]))


def key_accepted(header: str | None, keys: tuple[str, ...]) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer "):].strip().encode()
    # every key compared (no early exit), each in constant time: the answer's timing tells nothing
    return sum(hmac.compare_digest(given, key.encode()) for key in keys) > 0


def _unauthorized(message: str) -> bytes:
    return json.dumps(ApiError(401, message, code="invalid_api_key").body()).encode()


class ApiKeyAuth:
    """Checks the key of every `/v1/` request against `app.state.api_keys` (a tuple; empty = open)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        keys = getattr(scope["app"].state, "api_keys", ()) if "app" in scope else ()
        if not keys:
            return await self.app(scope, receive, send)
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        if key_accepted(header, keys):
            return await self.app(scope, receive, send)
        message = ("You didn't provide an API key: send `Authorization: Bearer KEY`" if header is None else
                   "Incorrect API key provided")
        body = _unauthorized(message)
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
