"""A store's passages on disk: an Arrow IPC file read through a memory map.

Opening the table reads its schema and row count, not its text; a passage is
materialised only when a hit (or a training batch) asks for its row, so a store of
millions of passages loads in the time it takes to map the file. The id → row map
that training needs is built on first use, from the `id` column alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from fedrag.data.types import Passage

COLUMNS = ("id", "text", "title")
_BATCH = 8192  # rows per record batch written


def _schema():
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in COLUMNS])


def write_passages(path: str | os.PathLike, passages: Iterable[Passage]) -> int:
    """Write passages to an uncompressed Arrow IPC file (mappable); returns the row count."""
    import pyarrow as pa

    schema, count = _schema(), 0
    with pa.OSFile(os.fspath(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        batch: list[Passage] = []
        for p in passages:
            batch.append(p)
            if len(batch) == _BATCH:
                writer.write_batch(_to_batch(batch, schema))
                count, batch = count + len(batch), []
        if batch or not count:
            writer.write_batch(_to_batch(batch, schema))
            count += len(batch)
    return count


def _to_batch(batch: list[Passage], schema):
    import pyarrow as pa

    return pa.record_batch([[getattr(p, c) for p in batch] for c in COLUMNS], schema=schema)


class PassageTable(Sequence):
    """The passages of an Arrow file as a read-only sequence of
    [`Passage`][fedrag.data.types.Passage]s, rows materialised on access."""

    def __init__(self, path: str | os.PathLike):
        import pyarrow as pa

        self.path = Path(path)
        self._table = pa.ipc.open_file(pa.memory_map(os.fspath(self.path), "r")).read_all()
        if tuple(self._table.column_names[:3]) != COLUMNS:
            raise ValueError(f"expected columns {COLUMNS}, found {tuple(self._table.column_names)}")
        self._cols = [self._table.column(c) for c in COLUMNS]
        self._pos: dict[str, int] | None = None

    def __len__(self) -> int:
        return self._table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"passage row {i} out of range ({len(self)} rows)")
        pid, text, title = (c[i].as_py() for c in self._cols)
        return Passage(pid, text, title)

    def __iter__(self) -> Iterator[Passage]:
        for batch in self._table.to_batches():
            ids, texts, titles = (batch.column(c).to_pylist() for c in COLUMNS)
            yield from (Passage(*row) for row in zip(ids, texts, titles))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def ids(self) -> list[str]:
        """Every passage id, in row order (the id column alone is read)."""
        return self._cols[0].to_pylist()

    def position(self, passage_id: str) -> int:
        """The row of `passage_id` (KeyError when absent)."""
        if self._pos is None:
            self._pos = {pid: i for i, pid in enumerate(self.ids())}
        return self._pos[passage_id]
