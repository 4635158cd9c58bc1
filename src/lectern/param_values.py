"""Parameter values as clients spell them, whatever the protocol: booleans and language codes.

Each caller keeps its own default for a missing value and its own error for a wrong one; these say
only what a spelling means.
"""

from __future__ import annotations

import re

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})
# ISO 639-1 or 639-3, with an optional region or script (en, eng, en-US, en_GB, zh-Hant).
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")


def boolean(raw: str) -> bool | None:
    """True or False for ``true``/``1``/``yes``/``on`` or their opposites (any case, spaces around
    ignored); None for anything else."""
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    return None


def is_language_code(code: str) -> bool:
    """Shaped like a language code; whether this server serves it is ``serves_language``'s question."""
    return _LANGUAGE_CODE.match(code) is not None
