"""Small WebSocket chores every protocol adapter shares."""

from __future__ import annotations

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from lectern.realtime.config import ClientInfo

# Close codes of a client that ended the connection on purpose (1005: closed without a code).
NORMAL_CLOSE_CODES = (1000, 1001, 1005)


def client_info(websocket: WebSocket) -> ClientInfo:
    return ClientInfo(
        address=websocket.client.host if websocket.client else "",
        user_agent=websocket.headers.get("user-agent"),
    )


async def close_quietly(websocket: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close unless either side already has."""
    if websocket.application_state == WebSocketState.CONNECTED and websocket.client_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code, reason)
        except (RuntimeError, WebSocketDisconnect):  # the client closed first
            pass
