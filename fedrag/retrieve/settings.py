"""A knowledge store's settings, for `fedrag index` and the Python API: one definition each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedrag._settings import check_choices, setting
from fedrag.errors import FedragError
from fedrag.retrieve.encode import EncodeDtype
from fedrag.retrieve.faiss_index import FaissIndex, factory_string

VectorsDtype = Literal["float32", "float16"]
# below this many passages `auto` builds an exact (flat) index: measured by benchmarks/store_scale.py
AUTO_APPROXIMATE_FROM = 200_000


@dataclass
class StoreSettings:
    """How a store is encoded, indexed and written."""

    index: str = setting(
        "auto",
        "flat (exact), hnsw, ivf-pq, or a faiss index_factory string; auto: flat below 200,000 passages, hnsw above",
    )
    nprobe: int | None = setting(None, "IVF indexes: inverted lists searched per query (default 16)")
    ef_search: int | None = setting(None, "HNSW indexes: candidates kept while searching (default 512)")
    encode_dtype: EncodeDtype = setting(
        "auto", "precision of the passage encoder while indexing; auto: bfloat16 where the CPU or GPU has bfloat16 units"
    )
    vectors: VectorsDtype = setting("float32", "the embeddings' dtype on disk (float16: half the size)")
    encode_batch: int | None = setting(None, "passages per forward pass (default 16 on CPU, 256 on a GPU)")

    def __post_init__(self):
        check_choices(self)
        if self.index != "auto":
            factory_string(self.index, 1, 8)
        for name in ("nprobe", "ef_search", "encode_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise FedragError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def kind(self, count: int) -> str:
        """The index kind for a store of `count` passages."""
        if self.index != "auto":
            return self.index
        return "flat" if count < AUTO_APPROXIMATE_FROM else "hnsw"

    def make_index(self, count: int) -> FaissIndex:
        """An empty index for `count` passages."""
        return FaissIndex(self.kind(count), self.nprobe, self.ef_search)
