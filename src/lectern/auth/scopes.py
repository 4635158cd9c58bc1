"""Scope names (``service:resource:action``) and the default grant of a normal user."""

SESSIONS_READ = "speech:sessions:read"
SESSIONS_WRITE = "speech:sessions:write"  # open realtime streams
SESSIONS_DELETE = "speech:sessions:delete"
SESSIONS_ADMIN = "speech:sessions:admin"  # read every session of the tenant

NORMAL_USER_SCOPES: tuple[str, ...] = (
    SESSIONS_READ,
    SESSIONS_WRITE,
    SESSIONS_DELETE,
    "speech:files:read",
    "speech:files:write",
    "speech:files:delete",
    "speech:transcriptions:read",
    "speech:transcriptions:write",
    "speech:transcriptions:delete",
    "speech:summaries:read",
    "speech:summaries:write",
    "speech:summaries:delete",
)
