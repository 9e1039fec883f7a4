"""What a server has left running: its event loop's tasks and the threads outside its bounded pools.

A client that vanishes must leave nothing behind; these are what the leak tests count before and after.
"""

from __future__ import annotations

import asyncio
import threading

from tests.helpers.server import ServerThread

POOL_THREADS = ("hearline-infer", "hearline-live")
# The loops' default executors (asyncio.to_thread, getaddrinfo): bounded by the standard library, and named
# alike for every loop in this process (each server fixture runs one), so not counted.
LOOP_THREADS = ("uvloop_", "asyncio_")


def server_tasks(server: ServerThread) -> list[str]:
    """Names of the tasks alive on the server's event loop (asked from inside that loop)."""
    loop = server.server.servers[0].get_loop()

    async def names() -> list[str]:
        return [task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    return asyncio.run_coroutine_threadsafe(names(), loop).result(timeout=30)


def threads_outside_the_pools() -> set[str]:
    return {t.name for t in threading.enumerate() if not t.name.startswith(POOL_THREADS + LOOP_THREADS)}
