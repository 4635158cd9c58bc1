"""Small WebSocket chores every protocol adapter shares."""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from lectern.realtime.config import ClientInfo
from lectern.realtime.session import ClientClosed

# Close codes of a client that ended the connection on purpose (1005: closed without a code).
NORMAL_CLOSE_CODES = (1000, 1001, 1005)


# What a session row keeps of the client (stream_sessions.client_address and user_agent).
MAX_ADDRESS, MAX_USER_AGENT = 100, 500


def client_info(websocket: WebSocket) -> ClientInfo:
    """Who connected, cut to what the session row keeps: a header may be any length."""
    user_agent = websocket.headers.get("user-agent")
    return ClientInfo(
        address=(websocket.client.host if websocket.client else "")[:MAX_ADDRESS],
        user_agent=None if user_agent is None else user_agent[:MAX_USER_AGENT],
    )


def disconnected(message: dict[str, Any]) -> ClientClosed | None:
    """The client's close as a core event, for an ASGI ``websocket.disconnect`` message."""
    if message["type"] != "websocket.disconnect":
        return None
    return ClientClosed(normal=message.get("code", 1000) in NORMAL_CLOSE_CODES)


async def close_quietly(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close unless either side already has."""
    if websocket.application_state == WebSocketState.CONNECTED and websocket.client_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code, reason)
        except (RuntimeError, WebSocketDisconnect):  # the client closed first
            pass
