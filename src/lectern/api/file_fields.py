"""A file's own fields (name, folder, description, metadata, tags), as an upload form or a PATCH
gives them: one set of rules for every endpoint that makes or changes a file.

Every check raises ApiError 400 naming the field, so a client learns which value to fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lectern.api.errors import ApiError
from lectern.api.uploads import Upload
from lectern.json_input import JsonInputError, check_json_value, parse_json

MAX_NAME, MAX_PATH, MAX_DESCRIPTION, MAX_TAGS, MAX_TAG = 500, 1000, 10_000, 50, 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class FileFields:
    """What ``store.files.ingest_upload`` takes beside the upload, validated."""

    name: str
    path: str
    description: str | None
    metadata: dict[str, Any] | None
    tags: list[str]


def file_fields(upload: Upload, max_metadata_bytes: int) -> FileFields:
    """The file fields of an upload form (``name``, ``path``, ``description``, ``metadata`` and
    ``tags`` as JSON strings); ApiError 400 naming the field when one is invalid."""
    for field in ("name", "path", "description", "metadata", "tags"):
        if len(upload.getlist(field)) > 1:
            raise ApiError(400, f"{field}: given more than once", field)
    form = upload.fields
    metadata = _json_field(form.get("metadata"), "metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(400, f"metadata: must be a JSON object, not {type(metadata).__name__}", "metadata")
    tags = _json_field(form.get("tags"), "tags")
    return FileFields(
        name=valid_name(form.get("name") or upload.filename or "upload"),
        path=valid_path(form.get("path") or "/"),
        description=valid_description(form.get("description") or None),
        metadata=valid_metadata(metadata, max_metadata_bytes),
        tags=valid_tags([] if tags is None else tags),
    )


def _json_field(raw: str | None, field: str) -> Any:
    if not raw:
        return None
    try:
        return parse_json(raw)
    except JsonInputError as exc:
        raise ApiError(400, f"{field}: {exc}", field) from None


def _text(value: str, field: str, max_length: int) -> str:
    if not value:
        raise ApiError(400, f"{field}: must not be empty", field)
    if len(value) > max_length:
        raise ApiError(400, f"{field}: longer than {max_length} characters", field)
    if _CONTROL.search(value):
        raise ApiError(400, f"{field}: control characters are not allowed", field)
    return value


def valid_name(value: str) -> str:
    return _text(value, "name", MAX_NAME)


def valid_path(value: str) -> str:
    if not value.startswith("/"):
        raise ApiError(400, f"path: a folder path starts with '/', not {value[:50]!r}", "path")
    return _text(value, "path", MAX_PATH)


def valid_description(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_DESCRIPTION:
        raise ApiError(400, f"description: longer than {MAX_DESCRIPTION} characters", "description")
    if value is not None and "\x00" in value:
        raise ApiError(400, "description: NUL characters are not allowed", "description")
    return value


def valid_metadata(value: dict[str, Any] | None, max_bytes: int) -> dict[str, Any] | None:
    if value is None:
        return None
    try:  # NaN, NUL or deep nesting: what PostgreSQL or a later json.dumps would fail on
        check_json_value(value)
    except JsonInputError as exc:
        raise ApiError(400, f"metadata: {exc}", "metadata") from None
    # Measured as a browser's JSON.stringify sends it: compact UTF-8.
    encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(encoded) > max_bytes:
        raise ApiError(400, f"metadata: larger than {max_bytes} bytes", "metadata")
    return value


def valid_tags(value: Any) -> list[str]:
    """Up to 50 distinct tags of 1-100 characters, without commas (the list filter's separator)."""
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ApiError(400, "tags: must be a JSON array of strings", "tags")
    if len(value) > MAX_TAGS:
        raise ApiError(400, f"tags: more than {MAX_TAGS} tags", "tags")
    tags: list[str] = []
    for tag in (t.strip() for t in value):
        if not 1 <= len(tag) <= MAX_TAG:
            raise ApiError(400, f"tags: each tag is 1 to {MAX_TAG} characters, not {len(tag)}", "tags")
        if "," in tag or _CONTROL.search(tag):
            raise ApiError(400, f"tags: {tag[:50]!r} holds a comma or a control character", "tags")
        if tag not in tags:
            tags.append(tag)
    return tags
