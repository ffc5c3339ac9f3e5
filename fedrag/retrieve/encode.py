"""Encoding a corpus with the passage encoder: in chunks that survive a kill, with progress.

Each finished chunk of `CHUNK` passages is written to fedrag's cache under a key of
the encoder's weights, its prompt, the precision and every passage's text, so the same
command run again after a kill (or `fedrag train` on the same corpus) continues from
the last finished chunk instead of starting over. Inside a chunk, sentence-transformers
batches passages of similar length together.

Precision: `bfloat16` encodes with a bfloat16 copy of the passage encoder (the vectors
are stored as float32). On a CPU with bfloat16 units (AVX512-BF16 or AMX) it encoded
MiniLM about twice as fast as float32 and kept Recall@5 within the measured tolerance
(docs/results.md, "Knowledge stores at size"); `auto` uses it there and on CUDA GPUs
that support it, float32 elsewhere.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fedrag import _faults
from fedrag._env import cache_dir
from fedrag._progress import Progress
from fedrag.data.types import Passage

EncodeDtype = Literal["auto", "float32", "bfloat16"]
CHUNK = 2048  # passages per resumable chunk: ~30 s of MiniLM on 2 CPU cores
CPU_BATCH, GPU_BATCH = 16, 256  # measured on 2 cores: 16 beat 32-128 (less padding per batch)


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype `dtype` (`auto` | `float32` | `bfloat16`) means on `device`."""
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
    return torch.float32


def reader_id(model) -> str:
    """What turns a passage into tokens beside the weights: the tokenizer's vocabulary and
    the longest input (equal weights read through another vocabulary or cut elsewhere
    embed passages differently)."""
    tok = getattr(model, "tokenizer", None)
    vocab = sorted(tok.get_vocab().items()) if tok is not None else []
    return hashlib.sha1(repr((vocab, getattr(model, "max_seq_length", None))).encode()).hexdigest()[:12]


def corpus_key(passages: Sequence[Passage], retriever, dtype: torch.dtype) -> str:
    """A key naming these passages' embeddings by this encoder (weights, tokenizer, input
    length, prompt) at this precision."""
    model = retriever.passage_encoder
    h = hashlib.sha1(f"{retriever.passage_fingerprint()}|{reader_id(model)}|{retriever.passage_prompt}|{dtype}".encode())
    for p in passages:
        h.update(p.as_text().encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _encoder(retriever, dtype: torch.dtype):
    model = retriever.passage_encoder
    if next(model.parameters()).dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype)


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    with torch.no_grad():
        emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
    emb = torch.nn.functional.normalize(emb.float(), dim=-1)  # renormalised in float32 after a bf16 encode
    return np.ascontiguousarray(emb.cpu().numpy(), dtype=np.float32)


def encode_corpus(
    passages: Sequence[Passage],
    retriever,
    dtype: str = "float32",
    batch_size: int | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
    label: str = "encoding",
) -> np.ndarray:
    """Embed `passages` with `retriever`'s passage encoder: float32 `[n, dim]`, L2-normalised.

    Args:
        dtype: `float32`, `bfloat16` or `auto` (see the module).
        batch_size: passages per forward (default 16 on CPU, 256 on a GPU).
        use_cache: keep each finished chunk in fedrag's cache and reuse it.
        progress: a bar on a terminal (None), always (True), or one line per chunk
            on stderr (False when not a terminal); `label` names the work.
    """
    n, dim = len(passages), retriever.dim
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    device = retriever.device
    tdtype = resolve_dtype(dtype, device)
    batch_size = batch_size or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    folder = Path(cache_dir()) / "embeddings" / corpus_key(passages, retriever, tdtype) if use_cache else None
    starts = range(0, n, CHUNK)
    done = [s for s in starts if folder is not None and (folder / f"{s:09d}.npy").is_file()]
    bar = Progress(n, label, done=sum(min(CHUNK, n - s) for s in done), bar=progress)
    parts: dict[int, np.ndarray] = {}
    model = None
    try:
        for s in starts:
            path = folder / f"{s:09d}.npy" if folder is not None else None
            if s in done:
                continue
            model = model or _encoder(retriever, tdtype)
            texts = [retriever.passage_prompt + p.as_text() for p in passages[s : s + CHUNK]]
            emb = _encode(model, texts, batch_size)
            if path is not None:
                _save_atomic(path, emb)
            else:
                parts[s] = emb
            bar.update(len(texts))
            _release_freed_memory()
            _faults.checkpoint("encode-chunk")
    finally:
        bar.close()
    out = np.empty((n, dim), dtype=np.float32)
    for s in starts:
        out[s : s + CHUNK] = parts[s] if s in parts else np.load(folder / f"{s:09d}.npy")
    return out


def _release_freed_memory() -> None:
    """Hand the chunk's freed buffers back to the OS (glibc keeps them otherwise, and a long
    encode's peak memory grew with every chunk); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _save_atomic(path: Path, emb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
