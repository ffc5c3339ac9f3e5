"""A knowledge store's directory: what is written, and how it is read back.

`fedrag-store/2` (written since 0.1.0's store rework):

| file | what |
|---|---|
| `manifest.json` | format, encoder name and weight fingerprint, dim, count, vector dtype, index and its measured recall |
| `passages.arrow` | id, text, title: an uncompressed Arrow IPC file, memory-mapped on load |
| `embeddings.npy` | `[count, dim]` float32 or float16, memory-mapped on load |
| `index.faiss` | the FAISS index as built (`faiss.write_index`), memory-mapped where FAISS can |

`fedrag-store/1` directories (`passages.jsonl` + `embeddings.npy`, a flat index rebuilt
on load) still load as they are; `fedrag index --upgrade DIR` rewrites one as format 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fedrag._io import atomic_dir
from fedrag._settings import check_choice
from fedrag.errors import StoreError
from fedrag.retrieve.faiss_index import FaissIndex
from fedrag.retrieve.passage_table import PassageTable, write_passages
from fedrag.retrieve.settings import VectorsDtype

FORMAT = "fedrag-store/2"
MANIFEST = "manifest.json"
_CHUNK = 65536


def save_store(store, out_dir: str | os.PathLike, vectors: str = "float32") -> None:
    """Write `store` to `out_dir` atomically, as format 2 (see the module)."""
    check_choice(vectors, VectorsDtype, "vectors", StoreError)
    with atomic_dir(out_dir) as tmp:
        write_passages(tmp / "passages.arrow", store.passages)
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=vectors, shape=store.embeddings.shape)
        for i in range(0, len(store), _CHUNK):
            emb[i : i + _CHUNK] = store.embeddings[i : i + _CHUNK]
        emb.flush()
        del emb
        index = {"kind": "external"}
        if isinstance(store.index, FaissIndex):
            store.index.save(tmp / "index.faiss")
            index = {**store.index.describe(), "file": "index.faiss"}
        manifest = {
            **store.info,
            "format": FORMAT,
            "encoder": store.encoder,
            "fingerprint": store.fingerprint,
            "dim": store.dim,
            "count": len(store),
            "metric": "inner_product",
            "normalized": True,
            "vectors": vectors,
            "index": index,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))


def read_manifest(path: Path) -> dict:
    """The manifest of store directory `path` (one-line errors for a missing or bad one)."""
    if not (path / MANIFEST).is_file():
        raise StoreError(f"{path}: not a fedrag index directory (no {MANIFEST})")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        (manifest["count"], manifest["dim"])
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}/{MANIFEST}: corrupt ({type(exc).__name__}: {exc}); rebuild it with fedrag index") from None


def load_store(cls, path: str | os.PathLike, index=None):
    """A `cls` (KnowledgeStore) read from `path`, format 1 or 2."""
    path = Path(path)
    manifest = read_manifest(path)
    shape = (manifest["count"], manifest["dim"])
    try:
        emb = np.load(path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        if manifest.get("format") == FORMAT:
            passages = PassageTable(path / "passages.arrow")
            info = manifest.get("index", {})
            if index is None and info.get("file"):
                index = FaissIndex.load(path / info["file"], info)
                built = True
            else:
                built = False
        else:
            from fedrag.data.jsonl import load_corpus

            emb, passages, built = np.ascontiguousarray(emb, dtype=np.float32), load_corpus(path / "passages.jsonl"), False
    except (OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError) as exc:
        raise StoreError(f"{path}: corrupt index ({type(exc).__name__}: {exc}); rebuild it with fedrag index") from None
    if emb.shape != shape or len(passages) != shape[0] or (built and index.ntotal != shape[0]):
        raise StoreError(
            f"{path}: embeddings {emb.shape}, {len(passages)} passages"
            f"{f' and an index of {index.ntotal}' if built else ''} disagree with the manifest {shape}"
        )
    extra = {k: v for k, v in manifest.items() if k in ("encode_dtype", "recall", "vectors")}
    return cls(passages, emb, manifest.get("encoder", ""), manifest.get("fingerprint", ""), index=index, built=built, info=extra)
