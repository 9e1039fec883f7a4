"""Optional API key, accepted the ways real clients can send it.

HTTP clients send ``Authorization: Bearer`` (the OpenAI SDK), ``Authorization: Token`` (Deepgram's SDKs)
or ``X-API-Key``; browsers' WebSockets cannot set headers, so a ``token`` query parameter
(WhisperLiveKit), an ``openai-insecure-api-key.<key>`` subprotocol (OpenAI Realtime in browsers) or the
subprotocol pair ``token, <key>`` (Deepgram in browsers) also work.
"""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


def presented_key(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and credential.strip():  # Token: Deepgram's SDKs
        return credential.strip()
    if conn.headers.get("x-api-key"):
        return conn.headers["x-api-key"].strip()
    if conn.query_params.get("token"):
        return conn.query_params["token"]
    protocols = [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",")]
    for proto in protocols:
        if proto.startswith(SUBPROTOCOL_PREFIX):
            return proto[len(SUBPROTOCOL_PREFIX) :]
    if len(protocols) == 2 and protocols[0] == "token":  # Deepgram in browsers: new WebSocket(url, ["token", key])
        return protocols[1]
    return None


def is_authorized(conn: HTTPConnection, api_key: str | None) -> bool:
    """True when no key is configured or the connection presents the right one."""
    if not api_key:
        return True
    key = presented_key(conn)
    return key is not None and hmac.compare_digest(key.encode(), api_key.encode())
