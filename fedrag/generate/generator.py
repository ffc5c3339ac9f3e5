"""Generator: a Hugging Face causal LM (full or LoRA) that answers and scores answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fedrag.data.types import Passage
from fedrag.generate.prompts import SYSTEM, build_prompt
from fedrag.models import ADAPTER_FILE, load_causal_lm

DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}


@dataclass
class AnswerScores:
    """Output of :meth:`Generator.score`.

    ``token_logp[b, j]`` is log p(answer token j | prompt_b, answer tokens < j) and
    ``mask[b, j]`` marks real (non-padding) answer tokens; ``seq_logp = (token_logp *
    mask).sum(-1)`` is log p(answer | prompt_b).
    """

    seq_logp: torch.Tensor
    token_logp: torch.Tensor
    mask: torch.Tensor
    n_tokens: int


class Generator:
    """A causal LM with a tokenizer, chat-template prompts, greedy decoding and a scorer."""

    def __init__(self, model, tokenizer, name: str = "", system: str = SYSTEM, max_new_tokens: int = 24):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.system, self.max_new_tokens = system, max_new_tokens
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.base_name = name

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name: str, device: str = "cpu", lora: bool | dict = False, trainable: bool = False,
             seed: int = 0) -> "Generator":
        """Load any model argument. A saved adapter directory loads its base + adapter;
        ``lora=True`` (or a dict of ``peft.LoraConfig`` fields) wraps the model in a
        fresh LoRA adapter for training."""
        model, tok, adapter_dir = load_causal_lm(name, device)
        base_name = name
        if adapter_dir is not None:
            from peft import PeftModel

            base_name = json.loads((Path(adapter_dir) / ADAPTER_FILE).read_text())["base_model_name_or_path"]
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
        elif lora:
            model = add_lora(model, lora if isinstance(lora, dict) else None, seed=seed)
        gen = cls(model, tok, name)
        gen.base_name = base_name
        return gen

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """LoRA adapter weights when wrapped, else every weight of the model."""
        if self.is_lora:
            return {n: p for n, p in self.model.named_parameters() if "lora_" in n}
        return dict(self.model.named_parameters())

    def enable_checkpointing(self) -> None:
        """Recompute activations in the backward pass (less memory, slower steps)."""
        kwargs = {"use_reentrant": False}
        if hasattr(self._base(), "activation_checkpointing_enable"):  # transformers >= 5.x
            self._base().activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # pragma: no cover - older transformers
            self._base().gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if hasattr(self.model, "enable_input_require_grads"):
            self.model.enable_input_require_grads()

    def save(self, out_dir: str | Path) -> None:
        """Save the adapter (recording the base as its resolvable model argument) or the full model."""
        out = Path(out_dir)
        self.model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        if self.is_lora:
            cfg_path = out / ADAPTER_FILE
            cfg = json.loads(cfg_path.read_text())
            cfg["base_model_name_or_path"] = self.base_name
            cfg_path.write_text(json.dumps(cfg, indent=2))

    # ------------------------------------------------------------------ prompts
    def prompt(self, question: str, passages: list[Passage]) -> str:
        return build_prompt(self.tokenizer, question, passages, self.system)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens followed by EOS (so training teaches the model to stop)."""
        return self._ids(answer) + [self.tokenizer.eos_token_id]

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, prompts: list[str], batch_size: int = 8, max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding, batched with left padding; returns stripped answer strings."""
        self.model.eval()
        tok, out = self.tokenizer, []
        side, tok.padding_side = tok.padding_side, "left"
        try:
            for i in range(0, len(prompts), batch_size):
                batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                ids = self.model.generate(**batch, max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                new = ids[:, batch["input_ids"].shape[1]:]
                out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        finally:
            tok.padding_side = side
        return out

    # ------------------------------------------------------------------ scoring
    def encode_pairs(self, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``prompt + answer + EOS`` ids with the answer's start and length."""
        rows, starts, lengths = [], [], []
        for p, a in zip(prompts, answers):
            pid, aid = self._ids(p), self.answer_ids(a)
            rows.append(pid + aid)
            starts.append(len(pid))
            lengths.append(len(aid))
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {"input_ids": input_ids, "attention_mask": attention,
                "start": torch.tensor(starts), "length": torch.tensor(lengths)}

    def score(self, prompts: list[str], answers: list[str]) -> AnswerScores:
        """log p(answer | prompt) for each pair, in one forward pass over the batch.

        Only answer tokens are scored: the logits at position ``t`` predict token
        ``t + 1``, so answer token ``j`` (at ``start + j``) is read from the logits at
        ``start + j - 1``. Hidden states are gathered at those positions before the LM
        head, so the vocabulary projection runs on answer positions only. Gradients
        flow when grad mode is on (training) and not under ``torch.no_grad``.
        """
        enc = self.encode_pairs(prompts, answers)
        dev = self.device
        input_ids, attention = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        start, length = enc["start"].to(dev), enc["length"].to(dev)
        width = int(length.max())
        j = torch.arange(width, device=dev)
        mask = j[None, :] < length[:, None]
        pos = (start[:, None] + j[None, :] - 1).clamp(max=input_ids.shape[1] - 1)
        pos = torch.where(mask, pos, start[:, None] - 1)
        targets = input_ids.gather(1, torch.where(mask, pos + 1, start[:, None]))
        hidden = self._hidden(input_ids, attention)
        picked = hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self._lm_head(picked).float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        token_logp = token_logp * mask
        return AnswerScores(token_logp.sum(-1), token_logp, mask, int(attention.sum()))

    def _base(self):
        return self.model.get_base_model() if self.is_lora else self.model

    def _hidden(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        decoder = self._base().get_decoder()
        return decoder(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state

    def _lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._base().get_output_embeddings()(hidden)


def add_lora(model, config: dict | None = None, seed: int = 0):
    """Wrap a causal LM in a fresh peft LoRA adapter (defaults: r=8, alpha=16, all linear).

    The adapter's random init is drawn from ``seed`` without touching the global RNG,
    so the same seed gives the same adapter on every site and every run."""
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **{**DEFAULT_LORA, **(config or {})}))
