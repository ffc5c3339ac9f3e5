"""Dense retriever: a sentence-transformers model in a dual-encoder arrangement.

By default the *query* encoder trains and the *passage* encoder is a frozen copy,
so an index built with the passage encoder stays valid during and after training.
`shared=True` uses one model for both (then the store must be re-encoded after
training the passage side).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fedrag.errors import FedragError
from fedrag.models import load_sentence_transformer

META_FILE = "fedrag_retriever.json"

# The retriever learning rate a LoRA adapter trains with when the user sets none: an adapter
# that starts at zero needs a larger step than full weights. Measured (docs/results.md,
# "Retriever LoRA against full query-encoder training"): LoRA at 1e-3 matched full training
# at 5e-5 on three held-out sets.
LORA_LR = 1e-3


def lora_default(retriever_lora: bool | None, federated: bool) -> bool:
    """`--retriever-lora` left unset: on for federated runs (a round moves the adapter,
    ~0.4 MB for MiniLM, not the 90.9 MB encoder), off centrally."""
    return federated if retriever_lora is None else bool(retriever_lora)


class Embedded(NamedTuple):
    """L2-normalised embeddings `[n, dim]` and the number of tokens encoded."""

    vectors: torch.Tensor
    tokens: int


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a model's weights (names an encoder in store manifests/caches)."""
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        # raw bytes through a uint8 view: numpy has no bfloat16 (float32 gives numpy's bytes exactly)
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class Retriever(torch.nn.Module):
    """Query encoder (trainable) + passage encoder (frozen copy unless `shared`)."""

    def __init__(
        self,
        model,
        name: str,
        passage_model=None,
        passage_name: str | None = None,
        shared: bool = False,
        query_prompt: str = "",
        passage_prompt: str = "",
    ):
        super().__init__()
        self.name = name
        self.query_encoder = model
        self.shared = shared
        if shared:
            self.passage_encoder = model
        else:
            self.passage_encoder = passage_model if passage_model is not None else copy.deepcopy(model)
            self.passage_encoder.requires_grad_(False)
        self.passage_name = passage_name or name
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self._passage_fp: str | None = None

    @classmethod
    def load(
        cls, name: str, device: str = "cpu", shared: bool = False, dtype: str = "float32", lora: bool = False
    ) -> "Retriever":
        """Load from any model argument; a directory saved by [`save`][save] restores its
        frozen passage encoder (so indexes built with the base model stay valid).
        `dtype`: the weights' dtype (see [`fedrag.models.weight_dtype`][fedrag.models.weight_dtype]). `lora`:
        train a LoRA adapter on the query encoder instead of all its weights
        ([`add_lora`][add_lora])."""
        from fedrag.models import weight_dtype

        torch_dtype = weight_dtype(dtype, device)
        model = load_sentence_transformer(name, device, torch_dtype)
        meta_path = Path(name) / META_FILE
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if not isinstance(meta, dict):
                raise ValueError("expected a JSON object")
        except (OSError, ValueError) as exc:
            raise FedragError(f"{meta_path}: not a valid fedrag retriever file ({exc})") from None
        passage_name = meta.get("passage_encoder")
        passage_model = None
        if passage_name and not shared:
            passage_model = load_sentence_transformer(passage_name, device, torch_dtype)
        ret = cls(
            model,
            name,
            passage_model=passage_model,
            passage_name=passage_name or name,
            shared=shared,
            query_prompt=meta.get("query_prompt", ""),
            passage_prompt=meta.get("passage_prompt", ""),
        )
        if lora:
            ret.add_lora()
        return ret

    def share(self) -> None:
        """Use the query encoder for passages too (what training the passage side needs).
        A store embedded by the old passage encoder stays valid while both encoders hold the
        same weights; [`fedrag.rag.RAGSystem.sync_store`][fedrag.rag.RAGSystem.sync_store] re-embeds it otherwise."""
        if not self.shared:
            self.passage_encoder, self.shared, self._passage_fp = self.query_encoder, True, None

    @property
    def is_lora(self) -> bool:
        return any("lora_" in n for n, _ in self.query_encoder.named_parameters())

    def add_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.0, seed: int = 0) -> None:
        """Train a LoRA adapter (peft, on the attention's query/key/value projections) on
        the query encoder instead of all its weights: only the adapter trains and travels
        between sites (~0.3 MB for MiniLM against 90.9 MB). The adapter's product starts at
        zero, so the retriever starts as the base model; its random half is drawn from `seed`
        without touching the global RNG, so every run and site starts from the same adapter.
        [`save`][save] writes the merged weights."""
        from peft import LoraConfig, get_peft_model

        module = self.query_encoder[0]  # sentence-transformers' Transformer module: its ``model`` is the HF model
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["query", "key", "value"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module.model = get_peft_model(module.model, config)

    @property
    def device(self) -> torch.device:
        return next(self.query_encoder.parameters()).device

    @property
    def dim(self) -> int:
        enc = self.query_encoder
        fn = getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
        return int(fn())

    def passage_fingerprint(self) -> str:
        if self._passage_fp is None or self.shared:
            self._passage_fp = fingerprint(self.passage_encoder)
        return self._passage_fp

    def _embed(self, model, texts: list[str]) -> Embedded:
        features = model.preprocess(texts)
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        tokens = int(features["attention_mask"].sum()) if "attention_mask" in features else 0
        return Embedded(F.normalize(model(features)["sentence_embedding"], dim=-1), tokens)

    def embed_queries(self, questions: list[str], grad: bool = False) -> Embedded:
        """Embed questions (L2-normalised `[n, dim]`) and count their tokens. With
        `grad=True` the vectors are connected to the query encoder's weights."""
        texts = [self.query_prompt + q for q in questions]
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self._embed(self.query_encoder, texts)

    def encode_queries(self, questions: list[str], grad: bool = False) -> torch.Tensor:
        """The vectors of [`embed_queries`][embed_queries]."""
        return self.embed_queries(questions, grad).vectors

    def embed_passages_with_grad(self, texts: list[str]) -> Embedded:
        """Embed passages as differentiable vectors (L2-normalised `[n, dim]`) with their
        token count, for training the passage side; only a `shared` retriever's passage
        encoder trains."""
        if not self.shared:
            raise FedragError("training the passage encoder needs a shared retriever (--train-passages loads one)")
        return self._embed(self.passage_encoder, [self.passage_prompt + t for t in texts])

    def encode_passages(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embed passages with the passage encoder: float32 `[n, dim]`, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.passage_encoder.encode(
            [self.passage_prompt + t for t in texts],
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Named parameters of the query encoder (which *is* the passage encoder when
        shared): all of them, or only the LoRA adapter's with [`add_lora`][add_lora]."""
        params = dict(self.query_encoder.named_parameters())
        return {n: p for n, p in params.items() if "lora_" in n} if self.is_lora else params

    def save(self, out_dir: str | Path) -> None:
        """Save the query encoder as a sentence-transformers folder (a LoRA adapter merged
        into its weights) + the passage encoder's name."""
        out = Path(out_dir)
        encoder = self.query_encoder
        if self.is_lora:
            encoder = copy.deepcopy(encoder)
            encoder[0].model = encoder[0].model.merge_and_unload()
        encoder.save(str(out))
        meta = {"query_prompt": self.query_prompt, "passage_prompt": self.passage_prompt}
        if not self.shared:
            meta["passage_encoder"] = self.passage_name
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
