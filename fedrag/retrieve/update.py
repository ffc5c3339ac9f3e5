"""Changing a saved store in place: passages added or removed without re-encoding the rest.

The new passages alone are encoded (in resumable chunks, as a build); the index is rebuilt
from the stored vectors (exact search then returns what a fresh build of the same passages
returns) and the directory is replaced atomically, so a reader sees the old store or the
new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedrag.data.types import Passage
from fedrag.errors import StoreError
from fedrag.retrieve.encode import encode_corpus
from fedrag.retrieve.store import KnowledgeStore


class _Concat(Sequence):
    """Two passage sequences read as one, without copying either."""

    def __init__(self, first: Sequence[Passage], second: Sequence[Passage]):
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = i + len(self) if i < 0 else i
        return self.first[i] if i < len(self.first) else self.second[i - len(self.first)]

    def __iter__(self):
        yield from self.first
        yield from self.second


class _Rows(Sequence):
    """The rows `keep` of a passage sequence."""

    def __init__(self, base: Sequence[Passage], keep: np.ndarray):
        self.base, self.keep = base, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.base[int(self.keep[i])]


def _ids(store: KnowledgeStore) -> list[str]:
    return store.passages.ids() if hasattr(store.passages, "ids") else [p.id for p in store.passages]


def add_passages(
    store: KnowledgeStore, new: Sequence[Passage], retriever, dtype: str = "float32", progress: bool | None = None
) -> tuple[KnowledgeStore, int]:
    """`store` with the passages of `new` whose ids it lacks appended; returns the new
    store and how many were skipped because the store already held their id."""
    have = set(_ids(store))
    fresh = [p for p in new if p.id not in have]
    emb = encode_corpus(fresh, retriever, dtype, progress=progress, label="encoding added")
    vectors = np.concatenate([np.asarray(store.embeddings, dtype=np.float32), emb]) if len(fresh) else store.embeddings
    out = KnowledgeStore(
        _Concat(store.passages, fresh), vectors, store.encoder, store.fingerprint, index=store.index.fresh(), info=store.info
    )
    return out, len(new) - len(fresh)


def remove_passages(store: KnowledgeStore, ids: Sequence[str]) -> tuple[KnowledgeStore, int]:
    """`store` without the passages `ids`; returns it and how many ids it did not hold."""
    drop = set(ids)
    mask = np.array([pid not in drop for pid in _ids(store)], dtype=bool)
    removed = int((~mask).sum())
    if removed == len(store):
        raise StoreError("removing these ids would leave the store empty")
    keep = np.flatnonzero(mask)
    vectors = np.asarray(store.embeddings[keep])
    out = KnowledgeStore(
        _Rows(store.passages, keep), vectors, store.encoder, store.fingerprint, index=store.index.fresh(), info=store.info
    )
    return out, len(drop) - removed
