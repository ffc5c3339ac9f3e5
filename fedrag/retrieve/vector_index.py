"""Where a knowledge store's vectors are searched: FAISS (the default, exact or approximate:
[`fedrag.retrieve.faiss_index`][fedrag.retrieve.faiss_index]) or an external vector database
(Qdrant, in its embedded local mode or as a server).

An index is built from the store's embeddings and answers batched inner-product top-k
with `(scores [n, k], positions [n, k])`, positions being the passages' rows in the
store. `fresh()` gives an empty index of the same kind for a re-encoded store, so the
store it came from stays searchable and untouched.
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol, runtime_checkable

import numpy as np

from fedrag._env import require
from fedrag.errors import StoreError
from fedrag.retrieve.faiss_index import FaissIndex

__all__ = ["FaissIndex", "QdrantIndex", "VectorIndex"]


def _one_line(exc: BaseException) -> str:
    """`Type: first line` of an exception (Qdrant's HTTP errors append the raw response)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@runtime_checkable
class VectorIndex(Protocol):
    """What a knowledge store searches with: built from normalised embeddings, searched by inner product."""

    def build(self, embeddings: np.ndarray) -> "VectorIndex": ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def fresh(self) -> "VectorIndex": ...


class QdrantIndex:
    """The vectors in a Qdrant collection (dot product on the store's normalised vectors,
    i.e. cosine, as FAISS computes it). `path`: Qdrant's embedded local mode on disk
    (no server; one process at a time); `url`: a Qdrant server; neither: in memory.
    Building (re)creates `collection`; a re-encoded store gets `collection-2`, ...
    Needs the `qdrant` extra (`pip install 'fedrag[qdrant]'`).

    Raises:
        StoreError: `path` and `url` both given; `path` is a file, a non-empty
            directory that is no Qdrant storage, or open in another client; the server at
            `url` fails; `search` before `build`.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        url: str | None = None,
        collection: str = "fedrag",
        client=None,
        batch_size: int = 256,
    ):
        if path and url:
            raise StoreError("QdrantIndex: pass path (local mode) or url (a server), not both")
        self.path, self.url, self.collection, self.batch_size = path, url, collection, batch_size
        self.client = client
        self._generation = 1
        self._built = False

    def _client(self):
        if self.client is None:
            qc = require("qdrant_client", "fedrag[qdrant]")
            if self.url:
                self.client = qc.QdrantClient(url=self.url)
            elif not self.path:
                self.client = qc.QdrantClient(location=":memory:")
            else:
                self.client = self._open_local(qc)
        return self.client

    def _open_local(self, qc):
        path = os.fspath(self.path)
        # Qdrant writes meta.json and collection/ into whatever directory it is given: a
        # user's data directory would end up mixed with a vector store
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"{path}: not a directory; QdrantIndex(path=...) is Qdrant's local storage folder")
        if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "meta.json")):
            raise StoreError(
                f"{path}: a non-empty directory that is not a Qdrant local storage (no meta.json); "
                "give QdrantIndex a new or empty directory"
            )
        try:
            return qc.QdrantClient(path=path)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:  # locked by another client, unreadable, ...
            raise StoreError(f"{path}: cannot open the Qdrant local storage ({_one_line(exc)})") from None

    @contextlib.contextmanager
    def _server_errors(self):
        """A server's failure (unreachable, refused, HTTP error) as one line naming the url."""
        from qdrant_client.http.exceptions import ApiException

        try:
            yield
        except ApiException as exc:
            raise StoreError(f"Qdrant at {self.url or 'local mode'}: {_one_line(exc)}") from None

    def build(self, embeddings: np.ndarray) -> "QdrantIndex":
        client = self._client()  # first: a missing extra fails here with its install hint
        from qdrant_client import models

        with self._server_errors():
            if client.collection_exists(self.collection):
                client.delete_collection(self.collection)
            client.create_collection(
                self.collection, vectors_config=models.VectorParams(size=int(embeddings.shape[1]), distance=models.Distance.DOT)
            )
            client.upload_collection(
                self.collection, vectors=embeddings, ids=list(range(len(embeddings))), batch_size=self.batch_size
            )
        self._built = True
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # positions are rows of the embeddings this index was built from: a collection
        # left by another run would answer with rows of another store
        if not self._built:
            raise StoreError(
                f"QdrantIndex: search before build (collection '{self.collection}'); build it from the store's embeddings first"
            )
        client = self._client()
        from qdrant_client import models

        requests = [models.QueryRequest(query=q.tolist(), limit=k) for q in queries]
        with self._server_errors():
            results = client.query_batch_points(self.collection, requests=requests)
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
