"""Generator: a Hugging Face causal LM (full or LoRA) that answers and scores answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fedrag.data.types import Passage
from fedrag.errors import ModelResolutionError
from fedrag.generate.prompts import SYSTEM, build_prompt, clean_answer
from fedrag.models import ADAPTER_FILE, adapter_base, load_causal_lm

DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}


@dataclass
class AnswerScores:
    """Output of [`Generator.score`][Generator.score].

    `token_logp[b, j]` is log p(answer token j | prompt_b, answer tokens < j) and
    `mask[b, j]` marks real (non-padding) answer tokens; `seq_logp = (token_logp *
    mask).sum(-1)` is log p(answer | prompt_b).
    """

    seq_logp: torch.Tensor
    token_logp: torch.Tensor
    mask: torch.Tensor
    n_tokens: int


class Generator:
    """A causal LM with a tokenizer, chat-template prompts, greedy decoding and a scorer."""

    def __init__(self, model, tokenizer, name: str = "", system: str = SYSTEM, score_batch_size: int | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.system = system
        self.score_batch_size = score_batch_size  # rows per scoring forward (None: all); see score()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.base_name = name

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name: str,
        device: str = "cpu",
        lora: bool | dict = False,
        trainable: bool = False,
        seed: int = 0,
        dtype: str = "float32",
        quantize: str = "none",
        device_map: str | None = None,
    ) -> "Generator":
        """Load any model argument. A saved adapter directory loads its base + adapter;
        `lora=True` (or a dict of `peft.LoraConfig` fields) wraps the model in a
        fresh LoRA adapter for training. An adapter loaded for inference (`trainable=False`)
        is merged into its base (peft's `merge_and_unload`), unless the base is quantized
        or spread by `device_map`.

        `dtype` (`auto` | `float32` | `bfloat16` | `float16`) is the weights'
        dtype: keep float32 to train with autocast (`TrainConfig.dtype`), use half
        precision for inference. `quantize="4bit"|"8bit"` loads a bitsandbytes base
        (GPU only) prepared for k-bit training (QLoRA: only the float32 adapter trains).
        `device_map="auto"` spreads a model too large for one device (accelerate)."""
        from fedrag.models import weight_dtype

        if quantize != "none" and trainable and not lora and adapter_base(Path(name)) is None:
            raise ModelResolutionError("a quantized base trains only through a LoRA adapter (drop --full or --quantize)")
        model, tok, adapter_dir = load_causal_lm(
            name, device, dtype=weight_dtype(dtype, device), quantize=quantize, device_map=device_map
        )
        if quantize != "none" and trainable:  # pragma: no cover - needs a CUDA GPU
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        base_name = name
        if adapter_dir is not None:
            from peft import PeftModel

            base_name = adapter_base(Path(adapter_dir))
            try:
                model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
            except Exception as exc:  # noqa: BLE001 - truncated safetensors, bad config, shape mismatch ...
                raise ModelResolutionError(
                    f"could not load the adapter in '{adapter_dir}' "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
                ) from None
            if not trainable and quantize == "none" and device_map is None:
                # inference: the adapter folded into the base weights answers with no adapter
                # layers (measured, benchmarks/gpu_eval_speed.py: 2x on a bf16 8B shape)
                model = model.merge_and_unload()
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

    def token_ids(self, text: str) -> list[int]:
        """Token ids of `text` as the model reads it (prompts carry their own specials)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens followed by EOS (so training teaches the model to stop)."""
        return self.token_ids(answer) + [self.tokenizer.eos_token_id]

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, prompts: list[str], batch_size: int = 8, settings=None, num_return_sequences: int = 1) -> list[str]:
        """Decode each prompt (batched, left padding) with `settings`
        ([`fedrag.generate.decoding.GenerationSettings`][fedrag.generate.decoding.GenerationSettings]; default greedy, 32 new
        tokens); returns `num_return_sequences` stripped answers per prompt, in order."""
        from fedrag.generate.decoding import GenerationSettings

        settings = settings or GenerationSettings()
        self.model.eval()
        tok, out = self.tokenizer, []
        side, tok.padding_side = tok.padding_side, "left"
        try:
            for i in range(0, len(prompts), batch_size):
                batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(
                    self.device
                )
                ids = self.model.generate(
                    **batch,
                    **settings.hf_kwargs(),
                    num_return_sequences=num_return_sequences,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
                new = ids[:, batch["input_ids"].shape[1] :]
                out += [clean_answer(t) for t in tok.batch_decode(new, skip_special_tokens=True)]
        finally:
            tok.padding_side = side
        return out

    @torch.no_grad()
    def score_no_grad(self, prompts: list[str], answers: list[str], batch_size: int = 8) -> torch.Tensor:
        """log p(answer | prompt) per pair, `[n]`, scored `batch_size` pairs at a time."""
        parts = [
            self.score(prompts[i : i + batch_size], answers[i : i + batch_size]).seq_logp
            for i in range(0, len(prompts), batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    # ------------------------------------------------------------------ scoring
    def encode_pairs(self, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded `prompt + answer + EOS` ids with the answer's start and length."""
        rows, starts, lengths = [], [], []
        for p, a in zip(prompts, answers):
            pid, aid = self.token_ids(p), self.answer_ids(a)
            rows.append(pid + aid)
            starts.append(len(pid))
            lengths.append(len(aid))
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "start": torch.tensor(starts),
            "length": torch.tensor(lengths),
        }

    def score(self, prompts: list[str], answers: list[str], chunk: int | None = None) -> AnswerScores:
        """log p(answer | prompt) for each pair.

        Only answer tokens are scored: the logits at position `t` predict token
        `t + 1`, so answer token `j` (at `start + j`) is read from the logits at
        `start + j - 1`. Hidden states are gathered at those positions before the LM
        head, so the vocabulary projection runs on answer positions only. Gradients
        flow when grad mode is on (training) and not under `torch.no_grad`.

        `chunk` (default `self.score_batch_size`; `None`: all rows in one forward)
        bounds memory: rows are scored `chunk` at a time and, when gradients are on,
        each chunk's activations are recomputed in the backward pass
        (`torch.utils.checkpoint`), so the loss and its gradients are those of one
        forward while only one chunk's activations are alive at a time.
        """
        enc = self.encode_pairs(prompts, answers)
        dev = self.device
        input_ids, attention = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        start, length = enc["start"].to(dev), enc["length"].to(dev)
        width = int(length.max())
        chunk = chunk or self.score_batch_size or len(prompts)
        parts = []
        for i in range(0, len(prompts), chunk):
            rows = slice(i, i + chunk)
            args = (input_ids[rows], attention[rows], start[rows], length[rows], width)
            if torch.is_grad_enabled() and chunk < len(prompts):
                from torch.utils.checkpoint import checkpoint

                parts.append(checkpoint(self._score_rows, *args, use_reentrant=False))
            else:
                parts.append(self._score_rows(*args))
        token_logp = torch.cat(parts) if len(parts) > 1 else parts[0]
        mask = torch.arange(width, device=dev)[None, :] < length[:, None]
        return AnswerScores(token_logp.sum(-1), token_logp, mask, int(attention.sum()))

    def _score_rows(self, input_ids, attention, start, length, width: int) -> torch.Tensor:
        """`token_logp [rows, width]` (zero past each answer's end) for right-padded rows."""
        j = torch.arange(width, device=input_ids.device)
        mask = j[None, :] < length[:, None]
        pos = (start[:, None] + j[None, :] - 1).clamp(max=input_ids.shape[1] - 1)
        pos = torch.where(mask, pos, start[:, None] - 1)
        targets = input_ids.gather(1, torch.where(mask, pos + 1, start[:, None]))
        hidden = self._hidden(input_ids, attention)
        picked = hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self._lm_head(picked).float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        return token_logp * mask

    @property
    def cache_keyword(self) -> str:
        """The name the model's `forward` takes its key/value cache by, which is also its output's
        attribute: `cache` where transformers has renamed it (5.25 has: `past_key_values` is
        deprecated there, to be removed in 5.40), `past_key_values` before."""
        import inspect

        return "cache" if "cache" in inspect.signature(self._base().forward).parameters else "past_key_values"

    def _base(self):
        return self.model.get_base_model() if self.is_lora else self.model

    def _hidden(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        decoder = self._base().get_decoder()
        return decoder(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state

    def _lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._base().get_output_embeddings()(hidden)


def training_weights_dtype(dtype: str, lora: bool) -> str:
    """The weights' dtype of a generator loaded for training at precision `dtype`
    (`TrainConfig.dtype`): a LoRA run's frozen base takes it, while weights the optimizer
    updates (a full fine-tuning) stay float32."""
    return dtype if lora else "float32"


def add_lora(model, config: dict | None = None, seed: int = 0):
    """Wrap a causal LM in a fresh peft LoRA adapter (defaults: r=8, alpha=16, all linear).

    The adapter's random init is drawn from `seed` without touching the global RNG,
    so the same seed gives the same adapter on every site and every run."""
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **{**DEFAULT_LORA, **(config or {})}))
