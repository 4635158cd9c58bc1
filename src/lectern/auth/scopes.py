"""Scope names (``service:resource:action``) and the default grant of a normal user."""

SESSIONS_READ = "speech:sessions:read"
SESSIONS_WRITE = "speech:sessions:write"  # open realtime streams
SESSIONS_DELETE = "speech:sessions:delete"
SESSIONS_ADMIN = "speech:sessions:admin"  # read every session of the tenant
FILES_READ = "speech:files:read"
FILES_WRITE = "speech:files:write"
FILES_DELETE = "speech:files:delete"
TRANSCRIPTIONS_READ = "speech:transcriptions:read"
TRANSCRIPTIONS_WRITE = "speech:transcriptions:write"
TRANSCRIPTIONS_DELETE = "speech:transcriptions:delete"
SUMMARIES_READ = "speech:summaries:read"
SUMMARIES_WRITE = "speech:summaries:write"
SUMMARIES_DELETE = "speech:summaries:delete"
PROMPTS_ADMIN = "ai:prompts:admin"  # tenant-wide prompt templates, assignments for other users; not a default

NORMAL_USER_SCOPES: tuple[str, ...] = (
    SESSIONS_READ,
    SESSIONS_WRITE,
    SESSIONS_DELETE,
    FILES_READ,
    FILES_WRITE,
    FILES_DELETE,
    TRANSCRIPTIONS_READ,
    TRANSCRIPTIONS_WRITE,
    TRANSCRIPTIONS_DELETE,
    SUMMARIES_READ,
    SUMMARIES_WRITE,
    SUMMARIES_DELETE,
)
