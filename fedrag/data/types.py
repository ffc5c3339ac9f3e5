"""The two record types every part of fedrag speaks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of the knowledge store."""

    id: str
    text: str
    title: str = ""

    def as_text(self) -> str:
        """The string that is embedded / indexed: ``title. text`` (title optional)."""
        return f"{self.title}. {self.text}" if self.title else self.text

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Example:
    """A question with its accepted answer aliases and, optionally, gold passage ids."""

    id: str
    question: str
    answers: tuple[str, ...]
    gold_ids: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = {"id": self.id, "question": self.question, "answers": list(self.answers)}
        if self.gold_ids:
            d["gold_ids"] = list(self.gold_ids)
        return d
