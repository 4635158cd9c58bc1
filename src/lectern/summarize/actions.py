"""Action items: who committed to doing what, and by when, found from the words people use when
they take or hand out work (English cue lists; other languages find none).

A sentence yields an item when it has an owner and a commitment to an action:

- a request to a named person: "Daniel, can you finish the migration script by Thursday?",
  "Tom, you'll own the test plan", "Lena, please draft the announcement";
- "let's have Sam collect the tickets", "action item: Tom to write the test plan";
- a commitment: "Priya will update the mockups", "Lena is going to draft...", "I'll send...",
  "Tom said he'd..." (he/she stand for the name said before them), "we'll ship ... by Friday"
  ("we" only with a due date: without one it is usually a plan, not a task);
- "can you ...?" without a name, when the next sentence accepts ("Sure, I'll do it").

Who "I" is cannot be known from a flattened transcript, so the owner is "Speaker", except just
after a named person accepted a request ("Daniel, can you...? Yes, I'll have it by Thursday."):
the answer completes that item (with its due date), and an "I'll..." in the next two sentences is
taken as that person's. "We" is "Team". The first word of the action must be a doing verb, not
"be", "see", "think"... ("Priya will be out Monday" is no task), meeting mechanics ("walk us
through", "share my screen") are none, and neither is a commitment reported as a guess ("I think
Tom will...", "if Dana will..."). Due dates are cues.find_due's, said with the action.

Names are capitalized words never written in lower case (not days, months, pronouns), and, for
lower-case transcripts, words used to address someone ("so jordan can you...", "thanks jordan");
in text with neither, requests have no owner ("Unassigned").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lectern.summarize.cues import due_phrase, find_due
from lectern.summarize.ranking import STOPWORDS

MAX_ACTION_WORDS = 18

_TOKEN = re.compile(r"[^\W\d_][\w'’-]*")
_NOT_NAMES = frozenset("""
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december i okay ok hi hello hey yes no thanks thank sorry please team everyone
someone somebody nobody anyone anybody everybody people nothing something everything whoever good great perfect
honestly finally also
""".split())
# An answer that takes on what was just asked: "Sure, happy to.", "Yes, I'll have it by Thursday."
_ACCEPTS = re.compile(r"^(?:(?:yes|yeah|yep|sure|absolutely|definitely|of course|okay|ok)\b[\s,.!]*)*"
                      r"(?:will do|no problem|happy to|on it|I\s*(?:'ll|will|can|am\s+going\s+to|'m\s+going\s+to)\b"
                      r"|(?:yes|yeah|yep|sure|absolutely|of course)\b)", re.IGNORECASE)
SPEAKER_CARRIES = 2  # sentences after accepting a request in which "I" is still that person
_VOCATIVE = re.compile(r"(?:^|\b(?:okay|ok|so|and|alright|right|now|then|great|thanks)\s+)([a-z]+)\s*,?\s+"
                       r"(?:can|could|would|will)\s+you\b|\bthank(?:s|\s+you)\s+([a-z]+)\b")

_NAME = r"[^\W\d_][\w-]*"
_OWNER = rf"(?P<owner>{_NAME}(?:\s+and\s+{_NAME})?)"
_ACTION = (r"(?:(?:also|just|then|definitely|quickly|first|go\s+ahead\s+and|try\s+to|please|probably)\s+)*"
           r"(?P<action>\w.*)")
_COMMIT = (r"(?P<modal>\s+will|'ll|\s+shall|'d"
           r"|(?:\s+is|'s|\s+are|'re|\s+am|'m)\s+(?:going\s+to|gonna)"
           r"|\s+(?:has|have|needs?)\s+to"
           r"|\s+(?:volunteered|offered|agreed|promised)\s+to"
           r"|\s+can(?=\s+take\b))")
_PATTERNS = [  # (kind, pattern); the first that gives a valid item wins
    ("request", re.compile(rf"\b{_OWNER}\s*,?\s+(?:can|could|would|will)\s+you\s+{_ACTION}", re.IGNORECASE)),
    ("assign", re.compile(rf"\b{_OWNER}\s*,\s*(?:you'll|you\s+will|you're\s+going\s+to|please)\s+{_ACTION}",
                          re.IGNORECASE)),
    ("assign", re.compile(rf"\blet's\s+(?:have|get|ask)\s+{_OWNER}\s+(?:to\s+)?{_ACTION}", re.IGNORECASE)),
    ("assign", re.compile(rf"(?:^|[,:;]\s*|\b(?:okay|so|and|then|item)\s+){_OWNER}\s+to\s+{_ACTION}", re.IGNORECASE)),
    ("commit", re.compile(rf"\b{_OWNER}{_COMMIT}\s+{_ACTION}", re.IGNORECASE)),
    ("ask", re.compile(rf"\b(?:can|could|would|will)\s+you\s+{_ACTION}", re.IGNORECASE)),
]
# First words of an "action" that is no task: states, opinions, meeting mechanics.
_NON_ACTION = frozenset("""
be been being not never no probably likely maybe see know think guess bet say admit want like love hate feel
seem hear mean need wonder assume expect hope agree remember imagine let leave jump stop happen end hold wait
repeat clarify mute unmute
""".split())
_NON_ACTION_PHRASES = re.compile(
    r"^(?:share\s+(?:my|the|your)\s+screen|stop\s+sharing|look\s+(?:like|good|great|fine)|work\s+(?:out|fine|well)"
    r"|make\s+sense|go\s+(?:first|next|ahead|now|back)|start\s+(?:with|by|off)|begin\s+(?:with|by)|kick\s+(?:it\s+)?off"
    r"|hand\s+(?:it\s+)?(?:over|back)|turn\s+it\s+over|wrap\s+(?:it\s+|this\s+|things\s+)?up|run$"
    r"|walk\s+(?:us|me|everyone)\s+through|tell\s+(?:us|me|everyone)\b|give\s+(?:us|me)\s+(?:an?\s+)?(?:quick\s+)?"
    r"(?:update|overview|summary|rundown)|talk\s+(?:us\s+)?(?:about|through)|introduce|cover\s+(?:that|this|it)\b"
    r"|say\s+a\s+few\s+words)",
    re.IGNORECASE)
_VAGUE = frozenset({
    "do it", "do that", "do this", "handle it", "handle that", "take care of it", "take care of that", "take it",
    "take that", "have it done", "have that done", "get it done", "get that done", "own it", "own that",
})
_HEDGE = re.compile(r"\b(?:think|hope|guess|assume|expect|doubt|wonder|whether|if|unless|when|maybe|hopefully)\s+"
                    r"(?:that\s+)?(?:\w+\s+)?$", re.IGNORECASE)
_CLAUSE_END = re.compile(
    r"\s+(?:but|because|since|although|though|unless|otherwise|and\s+then\s+we)\b|[;?!]|\.\s"
    r"|,\s+(?:so|which|and\s+(?:I|we|you|he|she|they)\b|and\s+\w+\s+will\b)"
    r"|\s+so\s+(?:that\s+)?(?:we|they|the|he|she|I|you|it|nobody|everyone|people)\b", re.IGNORECASE)
_TRAILING = re.compile(r"(?:[\s,]+(?:okay|ok|right|please|thanks|thank\s+you|if\s+that's\s+okay|if\s+possible"
                       r"|as\s+well|too))+\W*$|[\s,.;:!?]+$", re.IGNORECASE)


@dataclass(frozen=True)
class ActionItem:
    owner: str
    action: str
    due: str | None
    sentence: int  # index of the sentence it was found in

    def render(self) -> str:
        return f"{self.owner}: {self.action}" + (f" (due {self.due})" if self.due else "")


def find_names(sentences: Sequence[str]) -> set[str]:
    """Lower-cased names of people (see the module's docstring). A capitalized word that opens a
    sentence counts too ("Tom to write the test plan."), unless it looks like an adverb or a
    participle: an owner pattern still has to match around it before it owns anything."""
    capitalized: set[str] = set()
    lower: set[str] = set()
    for sentence in sentences:
        for j, word in enumerate(_TOKEN.findall(sentence.replace("’", "'"))):
            base = word.split("'")[0]
            if base.islower():
                lower.add(base)
            elif (base[:1].isupper() and base[1:].islower() and len(base) > 1
                  and (j > 0 or not base.lower().endswith(("ing", "ly", "ed")))):
                capitalized.add(base.lower())
    names = {w for w in capitalized - lower if w not in STOPWORDS and w not in _NOT_NAMES}
    for sentence in sentences:
        for m in _VOCATIVE.finditer(sentence.lower().replace("’", "'")):
            word = m.group(1) or m.group(2)
            if word not in STOPWORDS and word not in _NOT_NAMES:
                names.add(word)
    return names


def find_action_items(sentences: Sequence[str], names: set[str] | None = None) -> list[ActionItem]:
    names = find_names(sentences) if names is None else names
    items: list[ActionItem] = []
    seen: set[tuple[str, str]] = set()
    open_request: int | None = None  # the item the previous sentence asked someone to take
    speaker: tuple[str, int] | None = None  # who "I" is, after a named person accepted a request
    for index, raw in enumerate(sentences):
        sentence = raw.replace("’", "'").strip()
        if open_request is not None and _ACCEPTS.match(sentence):
            # "Daniel, can you...? Yes, I'll have it done by Thursday.": the answer completes the
            # request, and whoever accepted keeps speaking for a sentence or two
            earlier = items[open_request]
            due_match = find_due(sentence)
            due = earlier.due or (due_phrase(due_match) if due_match else None)
            items[open_request] = ActionItem(earlier.owner, earlier.action, due, earlier.sentence)
            speaker = (earlier.owner, index) if earlier.owner != "Unassigned" else None
            open_request = None
            continue
        open_request = None
        found = _match(sentence, names)
        if found is None:
            continue
        kind, owner, action, start = found
        # the due date said with the action, else one said just before it ("Tomorrow I'll send...")
        due_match = find_due(sentence[start:])
        if due_match is None and (before := find_due(sentence[:start])) and start - before.end() <= 20:
            due_match = before
        due = due_phrase(due_match) if due_match else None
        if owner == "Speaker" and speaker is not None and index - speaker[1] <= SPEAKER_CARRIES:
            owner = speaker[0]
            speaker = (owner, index)
        if kind == "ask" and (index + 1 >= len(sentences) or not _ACCEPTS.match(sentences[index + 1].strip())):
            continue  # "can you see my screen?": a request nobody took on is no item
        if (owner == "Team" and due is None) or action.lower().rstrip("…") in _VAGUE:
            continue  # "we'll look at it": a plan, not a task; "I'll take care of it": of what?
        key = (owner.lower(), " ".join(action.lower().split()[:6]))
        if key in seen:
            continue
        seen.add(key)
        items.append(ActionItem(owner, action, due, index))
        if kind in ("request", "ask", "assign"):
            open_request = len(items) - 1
    return items


def _match(sentence: str, names: set[str]) -> tuple[str, str, str, int] | None:
    """(kind, owner, action, where the action starts) of the first pattern that fits."""
    for kind, pattern in _PATTERNS:
        for m in _overlapping(pattern, sentence):
            owner = _owner(m, kind, sentence, names)
            if owner is None:
                continue
            start = m.start("action")
            action = _action(sentence[start:], find_due(sentence[start:]))
            if action is not None:
                return kind, owner, action, start
    return None


def _overlapping(pattern: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """Matches starting at every position: a match whose owner is no name must not hide a later
    one ("the tests and Tom will..." contains "Tom will...")."""
    found, position = [], 0
    while (m := pattern.search(text, position)) is not None:
        found.append(m)
        position = m.start() + 1
    return found


def _owner(m: re.Match[str], kind: str, sentence: str, names: set[str]) -> str | None:
    if kind == "ask":
        return "Unassigned"
    if _HEDGE.search(sentence[:m.start()]):
        return None  # "I think Tom will...", "if we will..."
    owner = m.group("owner")
    words = owner.lower().split()
    if kind == "commit" and m.group("modal") == "'d" and words[0] not in ("he", "she"):
        return None  # "Tom said he'd send it" reports a promise; "I'd send it" is a suggestion
    if kind == "commit" and len(words) == 1:
        pronoun = words[0]
        if pronoun == "i":
            return "Speaker"
        if pronoun == "we":
            return "Team"
        if pronoun in ("he", "she"):
            before = [w for w in _TOKEN.findall(sentence[:m.start()]) if w.lower() in names]
            return before[-1].capitalize() if before else None
    if all(w in names or w == "and" for w in words) and any(w in names for w in words):
        return " ".join(w if w == "and" else w.capitalize() for w in words)
    return None


def _action(text: str, due: re.Match[str] | None) -> str | None:
    """The action as the item shows it: from its verb to the end of its clause, without the due date."""
    if due is not None:
        text = text[:due.start()] + " " + text[due.end():]
    if end := _CLAUSE_END.search(text):
        text = text[:end.start()]
    text = _TRAILING.sub("", re.sub(r"\s+([,.;:])", r"\1", " ".join(text.split())))
    words = text.split()
    if not words or words[0].lower().strip(",.") in _NON_ACTION or _NON_ACTION_PHRASES.match(text):
        return None
    if len(words) > MAX_ACTION_WORDS:
        text = " ".join(words[:MAX_ACTION_WORDS]).rstrip(",") + "…"
    if len(text.split()) < 2 and words[0].lower() in ("it", "that", "this"):
        return None
    return text[0].lower() + text[1:] if not text.startswith(("I ", "I'")) else text
