"""What a sentence says beyond its words' weight: that something was decided, or is due by a
date. The cue lists are English; in another language no sentence matches, and the minutes then say
no decisions were recorded rather than guess."""

from __future__ import annotations

import re

_DAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = (r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
          r"|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)")
_ORDINAL = r"\d{1,2}(?:st|nd|rd|th)?"
_PART_OF_DAY = r"(?:\s+(?:morning|afternoon|evening|night|noon|eod))?"
_EVENT = r"(?:meeting|launch|release|review|demo|deadline|standup|stand-up|call|retro|sync|kickoff|board meeting)"

# The due date is the leftmost match (the earlier pattern if two start together).
_BY = r"(?:by|before|until|on|no later than)"
_DUE_PATTERNS = [
    (rf"(?:by|before|until|till|on|no later than)\s+(?:the\s+)?end\s+of\s+(?:the\s+|this\s+|next\s+)?"
     rf"(?:day|week|month|quarter|year|sprint|{_MONTH})"),
    r"(?:by\s+)?\b(?:eod|eow|end\s+of\s+(?:the\s+)?(?:day|week|month|quarter|sprint))\b",
    rf"(?:by|before|in|during)\s+the\s+(?:first|second|third|fourth|last)\s+week\s+of\s+(?:{_MONTH}|the\s+month)",
    rf"{_BY}\s+(?:{_MONTH}\s+(?:the\s+)?{_ORDINAL}|(?:the\s+)?{_ORDINAL}(?:\s+of\s+{_MONTH})?)\b",
    rf"{_BY}\s+(?:\d{{4}}-\d\d-\d\d|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?)",
    rf"{_BY}\s+(?:this\s+|next\s+|the\s+)?(?:{_DAY}|tomorrow|tonight|today|noon){_PART_OF_DAY}",
    rf"(?:by|before|until|ahead\s+of)\s+(?:the\s+|our\s+)?(?:next\s+)?(?:\w+\s+)?{_EVENT}(?:\s+(?:next|this|on)\s+{_DAY})?",
    rf"\b(?:next|this|coming)\s+(?:{_DAY}|week|month|quarter|sprint){_PART_OF_DAY}",
    r"\bwithin\s+(?:a|an|one|two|three|four|five|\d+)\s+(?:business\s+)?(?:days?|weeks?|hours?)",
    r"\bin\s+(?:two|three|four|\d+)\s+(?:days|weeks)",
    rf"\b(?:tomorrow|tonight|today|this\s+(?:morning|afternoon|evening)|{_DAY}){_PART_OF_DAY}",
]
_DUE = [re.compile(p, re.IGNORECASE) for p in _DUE_PATTERNS]
_DROP_PREPOSITION = re.compile(r"^(?:by|on|no later than)\s+", re.IGNORECASE)
_CAPITALIZED = re.compile(rf"\b(?:{_DAY}|{_MONTH})\b", re.IGNORECASE)


def find_due(text: str) -> re.Match[str] | None:
    found = [m for pattern in _DUE if (m := pattern.search(text))]
    return min(found, key=lambda m: m.start()) if found else None


def due_phrase(match: re.Match[str]) -> str:
    """A due date as the item shows it: "Friday", "end of the week", "before the design review"."""
    phrase = _DROP_PREPOSITION.sub("", " ".join(match.group(0).split()))
    return _CAPITALIZED.sub(lambda m: m.group(0).capitalize(), phrase)


_DECISION = re.compile(
    r"\b(?:"
    r"(?:we|they|everyone|everybody|the\s+(?:team|group|council|board|committee))\s+(?:have\s+|has\s+|all\s+)?"
    r"(?:agreed|decided|settled|chose|voted|signed\s+off|approved)"
    r"|(?:we've|we'd|it's|it\s+is|that's|that\s+is)\s+(?:been\s+)?(?:agreed|decided|settled|approved|final)"
    r"|(?:agreed|decided)\s+(?:to|that|on)"
    r"|(?:the|our|final)\s+decision\s+(?:is|was|to)"
    r"|let's\s+go\s+(?:with|ahead)"
    r"|(?:we're|we\s+are|we'll|we\s+will)\s+(?:going\s+to\s+)?go(?:ing)?\s+(?:with|ahead)"
    r"|(?:is|was|were|are|been|get|got)\s+approved|approves|approved\s+(?:the|a|an|it|unanimously)"
    r"|signed\s+off|sign-off|motion\s+(?:passes|passed|carries|carried|is\s+adopted)"
    r"|voted\s+to|unanimous(?:ly)?|consensus\s+(?:is|was)|resolved\s+to"
    r"|(?:we're|we\s+are)\s+(?:officially\s+)?(?:moving\s+forward\s+with|dropping|cutting|keeping|pushing|switching)"
    r")\b",
    re.IGNORECASE,
)
_UNDECIDED = re.compile(
    r"\b(?:not|haven't|hasn't|didn't|don't|never|un)\s*(?:yet\s+)?(?:decided|agreed|approved|settled)\b"
    r"|\b(?:to|should|need\s+to|must|can't|cannot)\s+(?:decide|agree)\b|\bif\s+we\s+(?:agree|decide)",
    re.IGNORECASE,
)


def is_decision(sentence: str) -> bool:
    """A sentence that records a decision: a cue such as "we agreed", "decided to", "approved",
    "let's go with", "the motion carries", and no sign that it is still open ("haven't decided",
    "we need to decide") nor a question."""
    s = sentence.replace("’", "'").strip()
    return s[-1:] != "?" and bool(_DECISION.search(s)) and not _UNDECIDED.search(s)
