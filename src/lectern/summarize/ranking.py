"""Sentence centrality: continuous LexRank (Erkan & Radev, 2004) over TF-IDF cosine similarity.

Each sentence is a TF-IDF vector of its content words; two sentences are as similar as the cosine
of their vectors; a sentence is central when it is similar to many sentences that are themselves
central, which PageRank's power iteration computes on the similarity graph. Central sentences
state what the meeting kept coming back to. Nothing here depends on the language except the stop
word list, which is English (other languages rely on IDF alone to discount their function words).

numpy only: the similarity matrix is dense (n x n), which for a three-hour meeting (about 3,000
sentences) is 36 MB of float32; longer ones are ranked block by block (analysis.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DAMPING = 0.85
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

# English function words, and what speech adds: fillers, backchannels, meeting chatter.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here
here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
just let's me more most mustn't my myself no nor not now of off on once only or other ought our ours
ourselves out over own same shan't she she'd she'll she's should shouldn't so some such than that that's
the their theirs them themselves then there there's these they they'd they'll they're they've this those
through to too under until up very was wasn't we we'd we'll we're we've were weren't what what's when
when's where where's which while who who's whom why why's will with won't would wouldn't you you'd you'll
you're you've your yours yourself yourselves
um uh umm uhm er erm ah eh hmm hm mm mhm huh oh okay ok yeah yes yep nope right alright well like really
actually basically literally kind sort maybe probably thing things stuff lot lots gonna wanna gotta got
get getting go going know think mean guess say said see look sure just mean want need bit little pretty
one two also still even much many good great thanks thank everyone everybody guys folks today next week
everything anything something nothing talk item join joining joined welcome hello hi bye morning
""".split())


def stem(word: str) -> str | None:
    """The term a lower-case word counts as, or None for a stop word, a number or a lone letter.
    English plurals and possessives are folded ("tickets", "ticket's" -> "ticket")."""
    if word in STOPWORDS or (len(word) < 2 and word.isascii()) or word.isdigit():
        return None
    if word.endswith("'s"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(sentence: str) -> list[str]:
    return _WORD.findall(sentence.lower().replace("’", "'"))


def terms(sentence: str) -> list[str]:
    """Content words of ``sentence``, as terms."""
    return [t for t in map(stem, words(sentence)) if t is not None]


@dataclass(frozen=True)
class TfIdf:
    vocabulary: dict[str, int]  # term -> column, for terms found in at least two sentences
    idf: dict[str, float]  # every term
    rows: np.ndarray  # sentences x columns, scaled as unit vectors over all their terms

    @classmethod
    def fit(cls, documents: Sequence[Sequence[str]]) -> TfIdf:
        """A term in one sentence only adds nothing to any similarity, so it gets no column (half
        a transcript's vocabulary, typically); it still counts in its sentence's length."""
        df: Counter[str] = Counter()
        for doc in documents:
            df.update(set(doc))
        n = len(documents)
        idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        vocabulary = {t: i for i, t in enumerate(sorted(t for t, c in df.items() if c > 1))}
        rows = np.zeros((n, len(vocabulary)), dtype=np.float32)
        for i, doc in enumerate(documents):
            weights = {t: (1.0 + math.log(c)) * idf[t] for t, c in Counter(doc).items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for term, weight in weights.items():
                column = vocabulary.get(term)
                if column is not None:
                    rows[i, column] = weight / norm
        return cls(vocabulary, idf, rows)


def cosine_matrix(rows: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of unit rows, with a zero diagonal (no sentence votes for itself)."""
    similarity = rows @ rows.T
    np.fill_diagonal(similarity, 0.0)
    return np.clip(similarity, 0.0, 1.0)


def lexrank(
    similarity: np.ndarray, *, tolerance: float = 1e-6, max_iterations: int = 200,
    check: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Stationary scores of the random walk on ``similarity`` (rows normalized; a sentence like no
    other links to all), teleporting with probability 1 - DAMPING. Scores sum to 1. ``check`` runs
    between iterations, so a cancelled summary stops here."""
    n = similarity.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    sums = similarity.sum(axis=1, keepdims=True)
    transition = np.where(sums > 0, similarity / np.where(sums > 0, sums, 1.0), 1.0 / n).astype(np.float32)
    scores = np.full(n, 1.0 / n, dtype=np.float32)
    for _ in range(max_iterations):
        check()
        updated = (1.0 - DAMPING) / n + DAMPING * (transition.T @ scores)
        if float(np.abs(updated - scores).sum()) < tolerance:
            return updated
        scores = updated
    return scores
