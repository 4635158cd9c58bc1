"""A transcript analysed once for every kind of output: its sentences as spoken and as shown, their
content words, centrality and token cost, and the topic blocks they fall into; and the greedy
choice of sentences within a token budget that every section uses."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from lectern.speech.text import FILLERS
from lectern.summarize.ranking import TfIdf, cosine_matrix, lexrank, stem, terms, words
from lectern.summarize.sentences import split_sentences
from lectern.summarize.tokens import count_tokens
from lectern.summarize.topics import block_labels, topic_blocks

GLOBAL_RANKING_LIMIT = 2500  # sentences ranked together; beyond, each topic block is ranked alone
MIN_SELECTABLE_WORDS = 6  # shorter sentences ("Sounds good.") never stand for the meeting
MIN_SELECTABLE_TERMS = 3  # nor do those with fewer content words ("Okay, thanks everyone, see you next week.")
REDUNDANCY = 0.5  # a sentence this similar to one already chosen says nothing new
BLOCK_DIVERSITY = 0.7  # each sentence already taken from a block discounts the next by this

_LEADING_JUNK = re.compile(r"^(?:(?:okay|ok|so|and|um|uh|erm|well|alright|all right|yeah|anyway)\b[\s,]*)+",
                           re.IGNORECASE)
_FILLER = re.compile(r"\s*\b(?:" + "|".join(sorted(FILLERS)) + r")\b,?", re.IGNORECASE)
_PRONOUN_I = re.compile(r"\bi\b")


@dataclass
class Analysis:
    sentences: list[str]  # as split from the transcript
    shown: list[str]  # as written in a summary
    costs: list[int]  # tokens of each shown sentence
    terms: list[list[str]]
    scores: np.ndarray  # centrality
    rows: np.ndarray  # TF-IDF rows (unit length)
    blocks: list[range]
    labels: list[str]  # a heading per block
    block_of: list[int]  # each sentence's block


def analyse(transcript: str, language: str, check: Callable[[], None]) -> Analysis:
    sentences = split_sentences(transcript)
    english = language.lower().startswith("en")
    shown = [show(s, english) for s in sentences]
    documents = [terms(s) for s in sentences]
    tfidf = TfIdf.fit(documents)
    check()
    blocks = topic_blocks(tfidf.rows)
    check()
    if len(sentences) <= GLOBAL_RANKING_LIMIT:
        scores = lexrank(cosine_matrix(tfidf.rows), check=check)
    else:
        scores = np.zeros(len(sentences), dtype=np.float32)
        for block in blocks:
            part = tfidf.rows[block.start:block.stop]
            scores[block.start:block.stop] = lexrank(cosine_matrix(part), check=check) * len(block) / len(sentences)
    labels = block_labels(blocks, documents, tfidf.idf, _surface_forms(sentences))
    block_of = [b for b, block in enumerate(blocks) for _ in block]
    costs = [count_tokens(s) for s in shown]
    return Analysis(sentences, shown, costs, documents, scores, tfidf.rows, blocks, labels, block_of)


def show(sentence: str, english: bool) -> str:
    """A spoken sentence as written: hesitations and a leading "okay, so" gone, a capital first
    letter, the pronoun I (English), and a closing full stop."""
    text = _FILLER.sub("", sentence).strip(" ,")
    if english:
        text = _LEADING_JUNK.sub("", text) or text
        text = _PRONOUN_I.sub("I", text)
    text = text.strip(" ,;:-") or sentence.strip()
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…。！？\"'”)" else text + "."


def _surface_forms(sentences: list[str]) -> dict[str, str]:
    """The word most often written for each term ("ticket" is shown as "tickets" if said so)."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for sentence in sentences:
        for word in words(sentence):
            term = stem(word)
            if term is not None:
                seen[term][word] += 1
    return {term: counts.most_common(1)[0][0] for term, counts in seen.items()}


def pick(
    a: Analysis, candidates: Iterable[int], budget: int, *, boost: Mapping[int, float] | None = None,
    required: bool = True,
) -> list[int]:
    """Sentences chosen greedily by centrality (times ``boost``, halved for questions), each
    discounted by its similarity to those already chosen and by how many its block already gave,
    while their tokens fit ``budget``. If ``required``, the first is chosen even if it alone
    exceeds the budget (a summary is never empty). In transcript order."""
    candidates = list(candidates)
    pool = [i for i in candidates
            if len(a.sentences[i].split()) >= MIN_SELECTABLE_WORDS and len(a.terms[i]) >= MIN_SELECTABLE_TERMS]
    if not pool and required:  # a transcript of short sentences: take what there is
        pool = [i for i in candidates if a.terms[i]] or candidates
    if not pool:
        return []
    boost = boost or {}
    members = np.array(pool)
    rows = a.rows[members]
    quality = np.array([float(a.scores[i]) * boost.get(i, 1.0) * (0.5 if a.sentences[i].rstrip().endswith("?") else 1.0)
                        for i in pool])
    costs = np.array([a.costs[i] + 1 for i in pool])  # and what separates it from the next (a break, a bullet)
    blocks = np.array([a.block_of[i] for i in pool])
    taken_from = np.zeros(len(a.blocks))  # sentences chosen per block
    closest = np.zeros(len(pool))  # similarity to the nearest chosen sentence
    available = np.ones(len(pool), dtype=bool)
    chosen: list[int] = []
    spent = 0
    while spent < budget:
        eligible = available & (closest <= REDUNDANCY)
        if chosen or not required:
            eligible &= spent + costs <= budget
        if not eligible.any():
            break
        value = np.where(eligible, quality * (1.0 - closest) * BLOCK_DIVERSITY ** taken_from[blocks], -1.0)
        best = int(np.argmax(value))
        chosen.append(int(members[best]))
        spent += int(costs[best])
        taken_from[blocks[best]] += 1
        available[best] = False
        closest = np.maximum(closest, rows @ rows[best])
    return sorted(chosen)
