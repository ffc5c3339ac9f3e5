"""Where a knowledge store's vectors are searched: FAISS in memory (the default) or an
external vector database (Qdrant, in its embedded local mode or as a server).

An index is built from the store's embeddings and answers batched inner-product top-k
with ``(scores [n, k], positions [n, k])``, positions being the passages' rows in the
store. ``fresh()`` gives an empty index of the same kind for a re-encoded store, so the
store it came from stays searchable and untouched.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from fedrag._env import require


@runtime_checkable
class VectorIndex(Protocol):
    def build(self, embeddings: np.ndarray) -> "VectorIndex": ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def fresh(self) -> "VectorIndex": ...


class FaissIndex:
    """Exact inner-product search in memory (``faiss.IndexFlatIP``)."""

    def __init__(self):
        self._index = None

    def build(self, embeddings: np.ndarray) -> "FaissIndex":
        self._index = require("faiss", "faiss-cpu").IndexFlatIP(embeddings.shape[1])
        if len(embeddings):
            self._index.add(embeddings)
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, k)

    def fresh(self) -> "FaissIndex":
        return FaissIndex()


class QdrantIndex:
    """The vectors in a Qdrant collection (dot product on the store's normalised vectors,
    i.e. cosine, as FAISS computes it). ``path``: Qdrant's embedded local mode on disk
    (no server; one process at a time); ``url``: a Qdrant server; neither: in memory.
    Building (re)creates ``collection``; a re-encoded store gets ``collection-2``, ...
    Needs the ``qdrant`` extra (``pip install 'fedrag[qdrant]'``)."""

    def __init__(self, path: str | None = None, url: str | None = None, collection: str = "fedrag",
                 client=None, batch_size: int = 256):
        self.path, self.url, self.collection, self.batch_size = path, url, collection, batch_size
        self.client = client
        self._generation = 1

    def _client(self):
        if self.client is None:
            qc = require("qdrant_client", "fedrag[qdrant]")
            self.client = qc.QdrantClient(url=self.url) if self.url else qc.QdrantClient(
                path=str(self.path) if self.path else None, location=None if self.path else ":memory:")
        return self.client

    def build(self, embeddings: np.ndarray) -> "QdrantIndex":
        from qdrant_client import models

        client = self._client()
        if client.collection_exists(self.collection):
            client.delete_collection(self.collection)
        client.create_collection(self.collection, vectors_config=models.VectorParams(
            size=int(embeddings.shape[1]), distance=models.Distance.DOT))
        client.upload_collection(self.collection, vectors=embeddings, ids=list(range(len(embeddings))),
                                 batch_size=self.batch_size)
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from qdrant_client import models

        requests = [models.QueryRequest(query=q.tolist(), limit=k) for q in queries]
        results = self._client().query_batch_points(self.collection, requests=requests)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        pos = np.full((len(queries), k), -1, dtype=np.int64)
        for i, res in enumerate(results):
            for j, point in enumerate(res.points):
                scores[i, j], pos[i, j] = point.score, int(point.id)
        return scores, pos

    def fresh(self) -> "QdrantIndex":
        base = self.collection.rsplit("-", 1)[0] if self._generation > 1 else self.collection
        other = QdrantIndex(self.path, self.url, f"{base}-{self._generation + 1}", self._client(), self.batch_size)
        other._generation = self._generation + 1
        return other
