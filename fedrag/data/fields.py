"""The checks every converter applies to a source record's fields, and the ids it makes
unique: text fields are strings (a null is no value, never the text `"None"`), required
ones non-empty; answers are a non-empty list of non-empty strings (a bare string is one
answer, never its characters). A field that fails raises [`BadRecord`][fedrag.data.fields.BadRecord],
which a converter counts per record."""

from __future__ import annotations

import hashlib

from fedrag.data.types import Passage, RecordLog

MISSING = object()  # a field absent from its record, told apart from a null one in messages


class BadRecord(Exception):
    """A record that cannot be converted; the message says why (caught per record)."""


def _absent(value, name: str, required: bool) -> bool:
    if value is MISSING or value is None:
        if required:
            raise BadRecord(f"'{name}' is {'missing' if value is MISSING else 'null'}")
        return True
    return False


def text_of(value, name: str, required: bool = True) -> str:
    """A text field: non-empty if `required`, else `""` where absent or null."""
    if _absent(value, name, required):
        return ""
    if not isinstance(value, str):
        raise BadRecord(f"'{name}' is {type(value).__name__}, expected text")
    if required and not value.strip():
        raise BadRecord(f"'{name}' is empty")
    return value


def id_of(value, name: str = "id") -> str | None:
    """A source id (text or integer), or None where absent, null or blank: the caller numbers it."""
    if _absent(value, name, False):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRecord(f"'{name}' is {type(value).__name__}, expected text or an integer")
    return str(value) if str(value).strip() else None


def answers_of(value, name: str = "answers") -> tuple[str, ...]:
    """Answer aliases: a non-empty list of non-empty strings, or one bare string."""
    _absent(value, name, True)
    if isinstance(value, str):
        value = [value]  # one answer: iterating the string would split it into characters
    if not isinstance(value, (list, tuple)):
        raise BadRecord(f"'{name}' is {type(value).__name__}, expected a list of texts")
    if not value:
        raise BadRecord(f"'{name}' is empty")
    if not all(isinstance(a, str) and a.strip() for a in value):
        raise BadRecord(f"'{name}' must hold non-empty texts only")
    return tuple(dict.fromkeys(value))


class UniqueIds:
    """Ids made unique in the order they come: a repeated `ID` becomes `ID#2`, `ID#3`, ..."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def take(self, want: str) -> str:
        new, k = want, 1
        while new in self.seen:
            k += 1
            new = f"{want}#{k}"
        self.seen.add(new)
        return new


class Corpus:
    """Passages by id: an id seen again with the same title and text is the same passage
    (a context retrieved for many questions); with other content it gets a new id."""

    def __init__(self) -> None:
        self.by_id: dict[str, Passage] = {}

    def add(self, pid: str, title: str, text: str) -> tuple[str, bool]:
        """`(id the passage has, whether that id is a new one because `pid` was taken)`."""
        new, k = pid, 1
        while new in self.by_id:
            if (self.by_id[new].title, self.by_id[new].text) == (title, text):
                return new, False
            k += 1
            new = f"{pid}#{k}"
        self.by_id[new] = Passage(id=new, title=title, text=text)
        return new, k > 1

    def passages(self) -> list[Passage]:
        return list(self.by_id.values())


def stable_id(*parts: str) -> str:
    """A short id that is the same in every run (unlike the salted built-in `hash`)."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:10]


def take_qid(qids: UniqueIds, qid: str | None, fallback: str, where: str, log: RecordLog) -> str:
    """A unique question id: the source's (renamed and counted if repeated), else `fallback`."""
    new = qids.take(qid or fallback)
    if qid is not None and new != qid:
        log.rename(where, f"repeated id '{qid}' (written as '{new}')")
    return new
