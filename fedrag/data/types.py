"""The two record types every part of fedrag speaks, and the log of records left out."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

from fedrag.errors import DataError


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of the knowledge store."""

    id: str
    text: str
    title: str = ""

    def as_text(self) -> str:
        """The string that is embedded / indexed: `title. text`; a passage without
        text (a title-only Wikipedia section) is its title alone, not `title. `."""
        if not self.text.strip():
            return self.title
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


@dataclass
class RecordLog:
    """Records a converter or loader skipped (could not convert) or renamed (repeated an
    id of the source), kept so they are reported in one line instead of passing silently.

    Attributes:
        strict: refuse instead: the first such record raises a one-line `DataError`.
        skipped: how many records were left out.
        renamed: how many records got a new id because the source repeated theirs.
        first_skip: `WHERE: reason` of the first skipped record.
        first_rename: `WHERE: reason` of the first renamed record.
        unanswerable: valid questions left out because they have no answer (SQuAD v2.0's
            `is_impossible`): nothing to train or score on, and not an error even when strict.
    """

    strict: bool = False
    skipped: int = 0
    renamed: int = 0
    unanswerable: int = 0
    first_skip: str = ""
    first_rename: str = ""

    def skip(self, where: str, reason: str, n: int = 1) -> None:
        """Count `n` records left out at `where` (a record and its dependents count each)."""
        if self.strict:
            raise DataError(f"{where}: {reason}")
        self.skipped += n
        self.first_skip = self.first_skip or f"{where}: {reason}"

    def rename(self, where: str, reason: str) -> None:
        """Count one record whose source id was repeated and that was given a new one."""
        if self.strict:
            raise DataError(f"{where}: {reason}")
        self.renamed += 1
        self.first_rename = self.first_rename or f"{where}: {reason}"

    def summary(self, what: str = "record") -> str:
        """One line, e.g. `skipped 3 records (first: FILE:LINE: reason)`; empty if none."""
        parts = []
        if self.skipped:
            parts.append(f"skipped {self.skipped} {what}{'s' * (self.skipped != 1)} (first: {self.first_skip})")
        if self.renamed:
            parts.append(f"renamed {self.renamed} repeated id{'s' * (self.renamed != 1)} (first: {self.first_rename})")
        if self.unanswerable:
            parts.append(f"left out {self.unanswerable} unanswerable question{'s' * (self.unanswerable != 1)}")
        return "; ".join(parts)

    def warn(self, what: str = "record") -> None:
        """The summary as one warning line on stderr, if anything was skipped or renamed:
        a caller that kept no log of its own still learns what was left out."""
        if self.skipped or self.renamed or self.unanswerable:
            print(f"fedrag: warning: {self.summary(what)}", file=sys.stderr)
