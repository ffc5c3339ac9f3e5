"""Knowledge store: passages + their embeddings in an inner-product index (FAISS by
default, exact or approximate, or a vector database: [`fedrag.retrieve.vector_index`][fedrag.retrieve.vector_index]).

Vectors are L2-normalised, so inner product = cosine similarity. On disk a store is a
directory ([`fedrag.retrieve.store_files`][fedrag.retrieve.store_files]): the passages in a
memory-mapped Arrow file, the embeddings in a memory-mapped `.npy`, the FAISS index as
built, and `manifest.json`. Loading one reads no passage text until a hit asks for it.
Pass `index=QdrantIndex(...)` to build, load or re-encode to search in Qdrant instead.

Documented clamp: `search(k)` with `k` larger than the store returns
`len(store)` hits per query (never FAISS's `-1` padding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from fedrag.data.types import Passage
from fedrag.errors import StoreError
from fedrag.retrieve.faiss_index import FaissIndex
from fedrag.retrieve.vector_index import VectorIndex


class KnowledgeStore:
    """Passages with fixed embeddings and an inner-product index over them.

    Args:
        passages: a list, or a [`PassageTable`][fedrag.retrieve.passage_table.PassageTable] read from disk.
        embeddings: `[n, dim]` float32 or float16 (an array or a memory map), L2-normalised.
        encoder: the passage encoder's name.
        fingerprint: the passage encoder's weight fingerprint.
        index: an empty [`VectorIndex`][fedrag.retrieve.vector_index.VectorIndex] to build
            (exact FAISS when None), or one already built over `embeddings` (`built=True`).
        info: what the manifest records beyond the above (index, precision, recall).
    """

    def __init__(
        self,
        passages: Sequence[Passage],
        embeddings: np.ndarray,
        encoder: str = "",
        fingerprint: str = "",
        index: VectorIndex | None = None,
        built: bool = False,
        info: dict | None = None,
    ):
        if embeddings.dtype not in (np.float32, np.float16):
            embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(passages):
            raise StoreError(f"store needs one embedding per passage: {len(passages)} passages, embeddings {embeddings.shape}")
        self.passages = passages
        self.embeddings = embeddings
        self.encoder, self.fingerprint = encoder, fingerprint
        self.info = dict(info or {})
        self.index = index if built and index is not None else (index or FaissIndex()).build(embeddings)
        self._pos: dict[str, int] | None = None
        self._tensor: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def position(self, passage_id: str) -> int:
        """The row of `passage_id` (KeyError when the store has none)."""
        if hasattr(self.passages, "position"):
            return self.passages.position(passage_id)
        if self._pos is None:
            self._pos = {p.id: i for i, p in enumerate(self.passages)}
        return self._pos[passage_id]

    def rows(self, positions, device: torch.device | str = "cpu") -> torch.Tensor:
        """The float32 embeddings at `positions` (any shape of ints) as a tensor `[..., dim]`:
        reads those rows only, whatever the store's size."""
        pos = np.asarray(positions, dtype=np.int64)
        flat = np.asarray(self.embeddings[pos.reshape(-1)], dtype=np.float32)
        return torch.from_numpy(flat.reshape(*pos.shape, self.dim)).to(device)

    def embedding_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """All passage embeddings as a (cached) float32 tensor; prefer [`rows`][rows] on large stores."""
        if self._tensor is None or self._tensor.device != torch.device(device):
            self._tensor = torch.from_numpy(np.array(self.embeddings, dtype=np.float32)).to(device)
        return self._tensor

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        retriever,
        batch_size: int | None = None,
        use_cache: bool = True,
        show_progress: bool | None = None,
        index: VectorIndex | None = None,
        dtype: str = "float32",
    ) -> "KnowledgeStore":
        """Encode passages with the retriever's passage encoder ([`encode_corpus`][fedrag.retrieve.encode.encode_corpus]:
        resumable, cached chunks; `dtype` its precision) and index them."""
        from fedrag.retrieve.encode import encode_corpus, resolve_dtype

        emb = encode_corpus(passages, retriever, dtype, batch_size, use_cache, show_progress)
        info = {"encode_dtype": str(resolve_dtype(dtype, retriever.device)).removeprefix("torch.")}
        return cls(
            passages, emb, encoder=retriever.passage_name, fingerprint=retriever.passage_fingerprint(), index=index, info=info
        )

    def reencoded(self, retriever, show_progress: bool | None = False) -> "KnowledgeStore":
        """The same passages embedded anew by `retriever`'s passage encoder (after it
        was trained): a new store, this one untouched."""
        return KnowledgeStore.build(
            self.passages, retriever, use_cache=False, show_progress=show_progress, index=self.index.fresh()
        )

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched top-k: `(scores [n, k'], positions [n, k'])` with `k' = min(k, len(store))`."""
        if len(self) == 0:
            raise StoreError("cannot search an empty knowledge store")
        if k < 1:
            raise StoreError(f"top-k must be >= 1, got {k}")
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().float().cpu().numpy()  # numpy has no bfloat16
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise StoreError(
                f"query dimension {queries.shape[-1]} does not match the store's dimension {self.dim} (encoder '{self.encoder}')"
            )
        return self.index.search(queries, min(k, len(self)))

    def check_encoder(self, retriever) -> None:
        """Fail if this store was built with a different passage encoder than `retriever`'s."""
        if retriever.dim != self.dim:
            raise StoreError(
                f"index dimension {self.dim} (encoder '{self.encoder}') does not match the retriever's dimension {retriever.dim} ('{retriever.name}')"
            )
        if self.fingerprint and retriever.passage_fingerprint() != self.fingerprint:
            raise StoreError(
                f"index was built with encoder '{self.encoder}' (weights {self.fingerprint}), but the retriever's passage encoder "
                f"'{retriever.passage_name}' has weights {retriever.passage_fingerprint()}: rebuild the index"
            )

    def save(self, out_dir: str | os.PathLike, vectors: str = "float32") -> None:
        """Write the store atomically (the directory appears complete or not at all);
        `vectors`: the embeddings' dtype on disk, `float32` or `float16` (half the size)."""
        from fedrag.retrieve.store_files import save_store

        save_store(self, out_dir, vectors)

    @classmethod
    def load(cls, path: str | os.PathLike, retriever=None, index: VectorIndex | None = None) -> "KnowledgeStore":
        """Load a saved store (memory-mapped); with `retriever` given, check it matches the
        encoder. `index`: search with this (empty) index instead of the saved one."""
        from fedrag.retrieve.store_files import load_store

        store = load_store(cls, path, index)
        if retriever is not None:
            store.check_encoder(retriever)
        return store
