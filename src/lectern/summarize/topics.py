"""A meeting as consecutive topic blocks, each labelled with its distinctive words.

TextTiling (Hearst, 1997) on the TF-IDF rows: at each gap between sentences, compare the
``WINDOW`` sentences before with the ``WINDOW`` after; where the vocabulary changes the similarity
dips, and the deepest dips (measured against the peaks on either side) are where topics change.
Blocks are at least ``MIN_BLOCK`` sentences long and there are at most one per
``SENTENCES_PER_BLOCK`` sentences (``MAX_BLOCKS`` in all), so a heading covers a real stretch of
the meeting. Minutes group their discussion points by these blocks; the summary uses them to draw
its sentences from the whole meeting rather than from its most talked-about part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

WINDOW = 4
MIN_BLOCK = 6
SENTENCES_PER_BLOCK = 15
MAX_BLOCKS = 12


def topic_blocks(rows: np.ndarray) -> list[range]:
    n = rows.shape[0]
    wanted = min(MAX_BLOCKS, n // SENTENCES_PER_BLOCK)
    if wanted < 2:
        return [range(n)]
    prefix = np.vstack([np.zeros((1, rows.shape[1]), dtype=np.float32), np.cumsum(rows, axis=0)])
    similarity = np.zeros(n)  # similarity[i]: the gap before sentence i
    for i in range(1, n):
        left = prefix[i] - prefix[max(0, i - WINDOW)]
        right = prefix[min(n, i + WINDOW)] - prefix[i]
        norm = float(np.linalg.norm(left) * np.linalg.norm(right))
        similarity[i] = float(left @ right) / norm if norm else 0.0
    depth = _depths(similarity)
    cutoff = depth[1:].mean() - depth[1:].std() / 2  # Hearst's cutoff
    boundaries: list[int] = []
    for gap in sorted(range(1, n), key=lambda g: -depth[g]):
        if len(boundaries) == wanted - 1 or depth[gap] <= cutoff:
            break
        edges = sorted([0, n, *boundaries])
        if all(abs(gap - e) >= MIN_BLOCK for e in edges):
            boundaries.append(gap)
    edges = sorted([0, n, *boundaries])
    return [range(a, b) for a, b in pairwise(edges)]


def _depths(similarity: np.ndarray) -> np.ndarray:
    """Depth of each gap: how far the similarity climbs to its left and to its right (the peak
    reached by walking uphill, computed in one pass each way)."""
    n = len(similarity)
    left, right = similarity.copy(), similarity.copy()
    for i in range(2, n):
        if similarity[i - 1] >= similarity[i]:
            left[i] = left[i - 1]
    for i in range(n - 2, 0, -1):
        if similarity[i + 1] >= similarity[i]:
            right[i] = right[i + 1]
    depth = (left - similarity) + (right - similarity)
    depth[0] = 0.0
    return depth


# Words that say when or how much, not what: never a topic's name.
_NOT_TOPICS = frozenset("""
monday tuesday wednesday thursday friday saturday sunday week weekend day today tomorrow yesterday morning
afternoon evening night month year quarter time minute hour first second third last next previous three four
five six seven eight nine ten twenty thirty forty fifty sixty hundred thousand percent meeting question point
item update start end number people anything something everything nothing january february march april
may june july august september october november december send make take give move want check ask talk come put
keep find use tell try help show let sure able
""".split())


def block_labels(
    blocks: Sequence[range], terms: Sequence[Sequence[str]], idf: dict[str, float], surface: dict[str, str],
    *, count: int = 3,
) -> list[str]:
    """Per block, its ``count`` most distinctive words (frequent in the block, rare elsewhere),
    joined as a heading: "Migration, script, staging"."""
    totals: Counter[str] = Counter(t for doc in terms for t in doc)
    labels = []
    for block in blocks:
        local: Counter[str] = Counter(t for i in block for t in terms[i])
        ranked = sorted(
            (t for t, c in local.items() if c >= 2 and t not in _NOT_TOPICS and surface.get(t, t) not in _NOT_TOPICS),
            key=lambda t: (-(local[t] * local[t] / totals[t]) * idf.get(t, 1.0), t),
        )
        words = [surface.get(t, t) for t in ranked[:count]] or ["Other points"]
        labels.append(", ".join(words).capitalize())
    return labels
