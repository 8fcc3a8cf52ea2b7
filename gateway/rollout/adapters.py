"""Loading a checkpoint's adapter onto its model's backend, and freeing it after a rollback."""

from __future__ import annotations

import asyncio
import logging

from gateway.backends import Backend
from gateway.rollout.routing import adapter_name

log = logging.getLogger(__name__)


class Adapters:
    """The adapters of every model's rollout on its backend. A rollback is decided on a worker thread
    (the policy's checks run off the event loop), so freeing is scheduled back onto the serving loop."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        self.backends = backends
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, bound by `bind`
        self._unloads: set[asyncio.Task] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def load(self, model: str, checkpoint_id: str, path: str) -> None:
        """Make a checkpoint servable on its model's backend; raises what the backend raised."""
        await self.backends[model].load_adapter(adapter_name(checkpoint_id), path)

    def unload_later(self, model: str, checkpoint_id: str) -> None:
        """Free an adapter no longer served (from any thread). A failure only costs the server memory, so
        it is logged, not raised."""
        if self._loop is None:
            return

        async def unload() -> None:
            try:
                await self.backends[model].unload_adapter(adapter_name(checkpoint_id))
            except Exception as exc:  # noqa: BLE001
                log.warning("unloading adapter of %s from %s failed: %s", checkpoint_id, model, exc)

        def schedule() -> None:
            task = self._loop.create_task(unload())
            self._unloads.add(task)
            task.add_done_callback(self._unloads.discard)

        self._loop.call_soon_threadsafe(schedule)
