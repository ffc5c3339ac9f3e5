"""FAISS indexes for a knowledge store, exact or approximate, built by `faiss.index_factory`.

`kind` names the index: `flat` (exact, the default), `hnsw` (a graph, `HNSW32`),
`ivf-pq` (inverted lists over product-quantised codes, sized to the store), or any
[index_factory](https://github.com/facebookresearch/faiss/wiki/The-index-factory)
string (`IVF4096,PQ48`, `HNSW64,Flat`, `OPQ48,IVF1024,PQ48` ...). The search knobs
are FAISS's own: `nprobe` (inverted lists visited, IVF kinds) and `ef_search` (HNSW's
candidate list). Kinds that need training (IVF, PQ) train on a random sample of the
vectors. A built index is saved with `faiss.write_index` and read back as built,
memory-mapped where FAISS can.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fedrag._env import require
from fedrag.errors import StoreError

KINDS = ("flat", "hnsw", "ivf-pq")
# FAISS's HNSW defaults (efConstruction 40, efSearch 16) kept 0.72 of exact search's top 5
# for SQuAD questions over 3,000 MiniLM passages; efConstruction 200 with efSearch 64 kept
# 0.97 and efSearch 128 more. At 100,000 passages (benchmarks/store_scale.py, 2,000 SQuAD
# questions) efSearch 128 kept 0.966 of exact search's answer-recall@5, 256 0.984, 512 0.991
# (0.36 ms a query), 1024 0.995 (0.72 ms)
EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 512
DEFAULT_NPROBE = 16
TRAIN_SAMPLE_MAX = 100_000


def factory_string(kind: str, count: int, dim: int) -> str:
    """The `index_factory` string for `kind` over `count` vectors of `dim` dimensions."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32"
    if kind == "ivf-pq":
        nlist = max(16, min(65536, 2 ** round(math.log2(max(16.0, 4 * math.sqrt(max(count, 1)))))))
        m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m and dim % m == 0)
        return f"IVF{nlist},PQ{m}"
    if kind and kind[0].isupper():
        return kind
    raise StoreError(f"index kind must be one of {', '.join(KINDS)} or a faiss index_factory string, got '{kind}'")


class FaissIndex:
    """Inner-product search with a FAISS index of the given `kind` (see the module).

    Attributes:
        kind: what the user asked for (`flat`, `hnsw`, `ivf-pq`, a factory string).
        factory: the factory string the index was built with (set by `build`).
    """

    def __init__(self, kind: str = "flat", nprobe: int | None = None, ef_search: int | None = None, seed: int = 0):
        factory_string(kind, 1, 8)  # an unknown kind fails here, before any encoding
        self.kind, self.nprobe, self.ef_search, self.seed = kind, nprobe, ef_search, seed
        self.factory = ""
        self._index = None

    @property
    def approximate(self) -> bool:
        """False only for an exact (flat) index."""
        return (self.factory or factory_string(self.kind, 1, 8)) != "Flat"

    def build(self, embeddings: np.ndarray) -> "FaissIndex":
        faiss = require("faiss", "faiss-cpu")
        n, dim = embeddings.shape
        self.factory = factory_string(self.kind, n, dim)
        try:
            index = faiss.index_factory(int(dim), self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise StoreError(f"faiss cannot build '{self.factory}': {str(exc).strip().splitlines()[-1]}") from None
        if not index.is_trained:
            if n == 0:
                raise StoreError(f"index '{self.factory}' needs vectors to train on; the store is empty")
            rows = np.random.default_rng(self.seed).choice(n, min(n, TRAIN_SAMPLE_MAX), replace=False)
            try:
                index.train(_f32(embeddings[np.sort(rows)]))
            except RuntimeError as exc:  # e.g. fewer vectors than the quantizers' centroids
                reason = str(exc).strip().splitlines()[-1].split("failed: ")[-1]
                raise StoreError(f"cannot train a '{self.factory}' index on {len(rows)} vectors: {reason}") from None
        if self.factory.startswith("HNSW"):
            faiss.downcast_index(index).hnsw.efConstruction = EF_CONSTRUCTION
        self._index = index
        self.add(embeddings)
        return self

    def add(self, embeddings: np.ndarray, chunk: int = 65536) -> None:
        """Append vectors (rows continue the store's positions), a chunk at a time."""
        for i in range(0, len(embeddings), chunk):
            self._index.add(_f32(embeddings[i : i + chunk]))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            raise StoreError("FaissIndex: search before build; build it from the store's embeddings first")
        self._apply_knobs()
        return self._index.search(queries, k)

    def _apply_knobs(self) -> None:
        faiss = require("faiss", "faiss-cpu")
        space = faiss.ParameterSpace()
        for name, value, default, applies in (
            ("nprobe", self.nprobe, DEFAULT_NPROBE, "IVF" in self.factory),
            ("efSearch", self.ef_search, DEFAULT_EF_SEARCH, "HNSW" in self.factory),
        ):
            if value is not None and not applies:
                raise StoreError(f"{name} does not apply to a '{self.factory}' index")
            if applies:
                space.set_index_parameter(self._index, name, int(value or default))

    def fresh(self) -> "FaissIndex":
        return FaissIndex(self.kind, self.nprobe, self.ef_search, self.seed)

    def describe(self) -> dict:
        """What the manifest records about this index."""
        return {"kind": self.kind, "factory": self.factory, "nprobe": self.nprobe, "ef_search": self.ef_search}

    def save(self, path: str | os.PathLike) -> None:
        require("faiss", "faiss-cpu").write_index(self._index, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, info: dict) -> "FaissIndex":
        """Read an index written by `save`, memory-mapped where FAISS supports it."""
        faiss = require("faiss", "faiss-cpu")
        out = cls(info.get("kind", "flat"), info.get("nprobe"), info.get("ef_search"))
        out.factory = info.get("factory") or factory_string(out.kind, 1, 8)
        try:
            out._index = faiss.read_index(os.fspath(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            out._index = faiss.read_index(os.fspath(path))
        return out

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
