"""Run the server: uvicorn for the main app plus optional extra listeners sharing its model pool.

Some clients hard-code a port (the streaming-STT protocol uses 8765, Vosk 2700, the captions page
35123).  Each such protocol module exposes ``standalone_app(main_app)`` returning an ASGI app that
shares ``main_app.state``; every listener runs in one event loop so there is one pool and one set of
worker threads.  The main server owns signals and lifecycle; extra listeners stop when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import uvicorn

from hearline.config import Settings
from hearline.models.heap import limit_arenas
from hearline.server.app import create_app
from hearline.server.connections import protocol_class
from hearline.server.drain import DrainingServer
from hearline.server.origin_guard import is_loopback_name

logger = logging.getLogger(__name__)

#: settings field -> protocol module providing ``standalone_app(main_app)``
EXTRA_LISTENERS: dict[str, str] = {
    "stt_port": "hearline.server.stt_ws",
    "vosk_port": "hearline.server.vosk_ws",
    "captions_port": "hearline.server.captions",
}


class ListenerUnavailable(RuntimeError):
    """A ``--*-port`` flag names a protocol whose module cannot serve on its own port."""


class _ExtraServer(uvicorn.Server):
    """An extra listener: the main server handles signals and tells this one when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` common to every listener (TLS, logging)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "log_level": settings.log_level.lower(),
        "log_config": None,  # the CLI configured logging already; keep one format
        # Open SSE subscribers (/events) would otherwise hold Ctrl-C / SIGTERM until they disconnect.
        "timeout_graceful_shutdown": 5,
        "http": protocol_class(settings.header_timeout_s, settings.max_connections),
    }
    if settings.ssl_certfile:
        options["ssl_certfile"] = str(settings.ssl_certfile)
    if settings.ssl_keyfile:
        options["ssl_keyfile"] = str(settings.ssl_keyfile)
    return options


def extra_apps(settings: Settings, main_app: Any) -> list[tuple[int, str, Any]]:
    """``(port, module, app)`` for every extra listener the settings ask for."""
    apps: list[tuple[int, str, Any]] = []
    for field_name, module_name in EXTRA_LISTENERS.items():
        port = getattr(settings, field_name)
        if not port:
            continue
        module = importlib.import_module(module_name)
        factory = getattr(module, "standalone_app", None)
        if factory is None:
            flag = "--" + field_name.replace("_", "-")
            raise ListenerUnavailable(f"{flag} is not supported: {module_name} has no standalone_app()")
        apps.append((port, module_name, factory(main_app)))
    return apps


def serve(settings: Settings) -> None:
    """Block serving until interrupted (Ctrl-C / SIGTERM). Owns the process: caps its malloc arenas first."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        limit_arenas(settings.malloc_arenas)
    asyncio.run(run_servers(build_servers(settings)))


def build_servers(settings: Settings) -> list[uvicorn.Server]:
    """The main server first, then one per extra listener, all sharing one app state (one pool)."""
    main_app = create_app(settings)
    extras = extra_apps(settings, main_app)
    options = uvicorn_options(settings)
    scheme = "https" if settings.ssl_certfile else "http"
    servers: list[uvicorn.Server] = [
        DrainingServer(uvicorn.Config(main_app, port=settings.port, **options), settings.drain_timeout)
    ]
    logger.info("Hearline listening on %s://%s:%d", scheme, settings.host, settings.port)
    if not settings.api_key and not is_loopback_name(settings.host):
        logger.warning(
            "listening on %s without --api-key: anyone who can reach this address can transcribe, download and "
            "delete models and start captions of this machine's microphone; set --api-key (HEARLINE_API_KEY)",
            settings.host,
        )
    for port, module_name, app in extras:
        servers.append(_ExtraServer(uvicorn.Config(app, port=port, lifespan="auto", **options)))
        logger.info("%s also listening on %s://%s:%d", module_name, scheme, settings.host, port)
    return servers


async def run_servers(servers: list[uvicorn.Server]) -> None:
    """Serve until the main server stops, then stop the extra listeners."""
    main, extras = servers[0], servers[1:]
    wyoming = await start_wyoming(main.config.app)
    tasks = [asyncio.create_task(server.serve()) for server in extras]
    try:
        await main.serve()
    finally:
        for server in extras:
            server.should_exit = True
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if wyoming is not None:
            await wyoming.stop()


async def start_wyoming(main_app: Any) -> Any:
    """The Wyoming TCP listener (``--wyoming-port``) in this event loop, sharing main_app's pool; None if off."""
    settings = getattr(getattr(main_app, "state", None), "settings", None)
    if settings is None or not getattr(settings, "wyoming_port", 0):
        return None
    from hearline.server.wyoming import WyomingServer

    server = WyomingServer(main_app, settings.host, settings.wyoming_port, zeroconf=settings.wyoming_zeroconf)
    await server.start()
    return server
