"""Knowledge store: passages + their embeddings in an inner-product index (FAISS in
memory by default, or a vector database: [`fedrag.retrieve.vector_index`][fedrag.retrieve.vector_index]).

Vectors are L2-normalised, so inner product = cosine similarity. On disk a store is
a directory: `embeddings.npy`, `passages.jsonl` and `manifest.json` (encoder
name, weight fingerprint, dimension, count); the flat FAISS index is rebuilt from the
embeddings on load (exact search: nothing to persist beyond the vectors). Pass
`index=QdrantIndex(...)` to build, load or re-encode to search in Qdrant instead.

Documented clamp: `search(k)` with `k` larger than the store returns
`len(store)` hits per query (never FAISS's `-1` padding).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from fedrag._env import cache_dir
from fedrag._io import atomic_dir
from fedrag.data.jsonl import load_corpus, write_jsonl
from fedrag.data.types import Passage
from fedrag.errors import StoreError
from fedrag.retrieve.vector_index import FaissIndex, VectorIndex

MANIFEST = "manifest.json"


class KnowledgeStore:
    """Passages with fixed embeddings and an inner-product index over them (`index`:
    an empty [`VectorIndex`][fedrag.retrieve.vector_index.VectorIndex], FAISS when None)."""

    def __init__(
        self,
        passages: list[Passage],
        embeddings: np.ndarray,
        encoder: str = "",
        fingerprint: str = "",
        index: VectorIndex | None = None,
    ):
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(passages):
            raise StoreError(f"store needs one embedding per passage: {len(passages)} passages, embeddings {embeddings.shape}")
        self.passages = passages
        self.embeddings = embeddings
        self.encoder, self.fingerprint = encoder, fingerprint
        self.index = (index or FaissIndex()).build(embeddings)
        self._pos = {p.id: i for i, p in enumerate(passages)}
        self._tensor: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def position(self, passage_id: str) -> int:
        return self._pos[passage_id]

    def embedding_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The passage embeddings as a (cached) torch tensor, for differentiable scores."""
        if self._tensor is None or self._tensor.device != torch.device(device):
            self._tensor = torch.from_numpy(self.embeddings).to(device)
        return self._tensor

    @classmethod
    def build(
        cls,
        passages: list[Passage],
        retriever,
        batch_size: int = 64,
        use_cache: bool = True,
        show_progress: bool = False,
        index: VectorIndex | None = None,
    ) -> "KnowledgeStore":
        """Encode passages with the retriever's passage encoder (reusing cached embeddings)."""
        fp = retriever.passage_fingerprint()
        h = hashlib.sha1(f"{fp}|{retriever.passage_prompt}".encode())
        for p in passages:
            h.update(p.as_text().encode())
            h.update(b"\0")
        cache = Path(cache_dir()) / "embeddings" / f"{h.hexdigest()[:20]}.npy"
        if use_cache and cache.exists():
            emb = np.load(cache)
        else:
            emb = retriever.encode_passages([p.as_text() for p in passages], batch_size=batch_size, show_progress=show_progress)
            if use_cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, emb)
                os.replace(tmp, cache)
        return cls(passages, emb, encoder=retriever.passage_name, fingerprint=fp, index=index)

    def reencoded(self, retriever, show_progress: bool = False) -> "KnowledgeStore":
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
        scores, pos = self.index.search(queries, min(k, len(self)))
        return scores, pos

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

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write the store atomically: the directory appears complete or not at all."""
        with atomic_dir(out_dir) as tmp:
            np.save(tmp / "embeddings.npy", self.embeddings)
            write_jsonl(tmp / "passages.jsonl", self.passages)
            manifest = {
                "format": "fedrag-store/1",
                "encoder": self.encoder,
                "fingerprint": self.fingerprint,
                "dim": self.dim,
                "count": len(self),
                "metric": "inner_product",
                "normalized": True,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike, retriever=None, index: VectorIndex | None = None) -> "KnowledgeStore":
        """Load a saved store; with `retriever` given, check it matches the encoder."""
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise StoreError(f"{path}: not a fedrag index directory (no {MANIFEST})")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            emb = np.load(path / "embeddings.npy", allow_pickle=False)
            shape = (manifest["count"], manifest["dim"])
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise StoreError(f"{path}: corrupt index ({type(exc).__name__}: {exc}); rebuild it with fedrag index") from None
        passages = load_corpus(path / "passages.jsonl")
        if emb.shape != shape:
            raise StoreError(
                f"{path}: embeddings {emb.shape} disagree with the manifest ({manifest['count']}, {manifest['dim']})"
            )
        store = cls(passages, emb, encoder=manifest["encoder"], fingerprint=manifest.get("fingerprint", ""), index=index)
        if retriever is not None:
            store.check_encoder(retriever)
        return store
