"""textual-serve's server with what plantd needs around it: the token login
(:mod:`.auth`), the vendored page (every asset local) and sessions that always end.

One browser tab = one websocket = one ``plant tui`` process (``exec``: no shell in between).
When the websocket closes (tab closed, reload, network gone: the 15 s heartbeat notices) the
process is asked to quit and, if it has not within ``QUIT_GRACE`` seconds, killed; textual-serve
alone would wait for it forever. Stopping ``plant web`` (SIGTERM, Ctrl+C) closes every
websocket first, so it ends every session and exits within that bound too.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web
from textual_serve.app_service import AppService
from textual_serve.server import Server

from plantd.tui.web.auth import WebAuth

__all__ = ["QUIT_GRACE", "ConsoleServer", "ConsoleSession"]

#: seconds a session's console gets to quit before it is killed
QUIT_GRACE = 5.0

log = logging.getLogger("textual-serve")


class ConsoleSession(AppService):
    """One console process whose stop is bounded. A session opened with a token login runs
    for that token's principal: under the proxy's key (which may act for others) with
    ``PLANTD_CLIENT_ACT_AS``, so the broker, the services and the audit see who it really
    is; without a login (no token issued, loopback) it is this host's own client."""

    quit_grace = QUIT_GRACE

    def __init__(
        self, *args: Any, acting_for: str | None = None, identity_dir: Path | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.acting_for = acting_for
        self.identity_dir = identity_dir

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(width=width, height=height)
        if self.acting_for is not None and self.identity_dir is not None:
            from plantd.security.caller import ACT_AS_ENV
            from plantd.security.keys import Keyring

            env["PLANTD_CLIENT_IDENTITY"] = str(Keyring(self.identity_dir).secret_path("proxy"))
            env[ACT_AS_ENV] = self.acting_for
        return env

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def stop(self) -> None:
        stopping = asyncio.ensure_future(super().stop())
        done, _ = await asyncio.wait({stopping}, timeout=self.quit_grace)
        process = self._process
        if not done and process is not None and process.returncode is None:
            log.warning("console %d did not quit in %.1f s: killed", process.pid, self.quit_grace)
            process.kill()
        await stopping  # its output ends with the process
        if process is not None:
            await process.wait()


class ConsoleServer(Server):
    """Serves ``command`` (the console) to browsers behind :class:`WebAuth`."""

    def __init__(
        self, command: Sequence[str], *, host: str, port: int, auth: WebAuth, title: str
    ) -> None:
        templates = Path(str(resources.files(__package__)))
        super().__init__(
            "exec " + shlex.join(command),
            host=host,
            port=port,
            title=title,
            templates_path=templates,
        )
        self.auth = auth
        self._sockets: set[web.WebSocketResponse] = set()

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self.auth.middleware)
        app.add_routes(self.auth.routes())
        return app

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's handler, with a :class:`ConsoleSession` (bounded stop) and the
        session's principal logged."""
        websocket = web.WebSocketResponse(heartbeat=15)
        width = _size(request.query.get("width"), 80)
        height = _size(request.query.get("height"), 24)
        session: ConsoleSession | None = None
        try:
            await websocket.prepare(request)
            self._sockets.add(websocket)
            session = ConsoleSession(
                self.command,
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=_closer(websocket),
                download_manager=self.download_manager,
                debug=self.debug,
                acting_for=request.get("principal"),
                identity_dir=self.auth.identity_dir,
            )
            await session.start(width, height)
            log.info(
                "session %s started (principal %s)",
                session.app_service_id[:8],
                request.get("principal", "anonymous"),
            )
            await self._process_messages(websocket, session)
        except asyncio.CancelledError:
            await websocket.close()
        except Exception as error:  # a broken session must not take the server down
            log.exception(error)
        finally:
            self._sockets.discard(websocket)
            if session is not None:
                await session.stop()
                log.info("session %s ended", session.app_service_id[:8])
        return websocket

    async def on_shutdown(self, app: web.Application) -> None:
        """Close every websocket: their sessions end (bounded) and aiohttp stops waiting
        for the handlers, which would otherwise run until each browser left."""
        for websocket in list(self._sockets):
            await websocket.close(code=WSCloseCode.GOING_AWAY, message=b"plant web stopped")
        self.auth.close()


def _closer(websocket: web.WebSocketResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await websocket.close()

    return close


def _size(text: str | None, default: int) -> int:
    """A terminal dimension from the query string (1-1000, else ``default``)."""
    try:
        value = int(text or "")
    except ValueError:
        return default
    return value if 0 < value <= 1000 else default
