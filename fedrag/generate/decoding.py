"""Decoding that matches training: concatenated context, RAG-Sequence and RAG-Token.

A generator trained with a marginal likelihood over retrieved passages (RAG-Sequence,
RAG-Token, RA-DIT's per-passage RALT) must be decoded with that marginal, not with
all passages pasted into one prompt (Lewis et al. 2020, §2.4):

* `concat`: one prompt holding the top-k passages, then ordinary `generate`.
* `rag-sequence`: a candidate answer per passage (or `num_beams` per passage),
  ranked by $p(y|x) = \\sum_z p(z|x)\\, p(y|x,z)$. "Thorough" decoding scores
  every candidate under every passage (k² rows); "fast" decoding (Lewis et al. 2020,
  §2.4) takes $p(y|x,z) \\approx 0$ where passage `z` did not produce `y`, so
  it scores only each passage's own candidates (k rows).
* `rag-token`: greedy (or sampled) decoding over the per-step mixture
  $p(y_i|x,y_{<i}) = \\sum_z p(z|x)\\, p(y_i|x,z,y_{<i})$; the k passages of a
  question run as k rows of one batched forward per step, with a KV cache.

`p(z|x) = softmax(s(x, z) / gamma)` over the retrieval scores, with the `gamma`
the stage was trained with. With `k = 1` all three give the same answers.

fedrag's scores are cosine similarities (normalised embeddings), so the top passages'
scores lie within about 0.1 of each other: at Lewis et al.'s `gamma = 1` (made for
DPR's unnormalised inner products, tens of units apart) p(z|x) is nearly uniform and
RAG-Token's mixture averages the passages' next tokens into words none of them holds.
[`RETRIEVAL_GAMMA`][RETRIEVAL_GAMMA] (0.1) is the default everywhere; see docs/results.md for the
measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from fedrag._settings import check_choice, check_choices, setting
from fedrag.errors import FedragError
from fedrag.generate.prompts import clean_answer

Decoding = Literal["concat", "rag-sequence", "rag-token"]
RagSequenceMode = Literal["thorough", "fast"]
DECODINGS: tuple[str, ...] = get_args(Decoding)
DECODING_FILE = "fedrag_decoding.json"
RETRIEVAL_GAMMA = 0.1
"""Temperature of p(z|x) = softmax(cosine score / gamma), in training and decoding alike."""


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated. `max_new_tokens` caps an answer's length;
    `num_beams` > 1 is beam search (concat; per-passage candidates for RAG-Sequence);
    `do_sample` samples with `temperature` / `top_p` instead of greedy decoding."""

    decoding: Decoding = setting(
        "concat",
        "concat: one prompt holding the top-k passages; rag-sequence / rag-token: "
        "the marginal over passages the generator was trained with",
    )
    max_new_tokens: int = setting(32, "longest answer, in tokens")
    num_beams: int = setting(1, "beam search width (1: greedy); rag-sequence: candidates per passage")
    do_sample: bool = setting(False, "sample instead of greedy decoding")
    temperature: float = setting(1.0, "sampling temperature (with --do-sample)")
    top_p: float = setting(1.0, "nucleus sampling mass (with --do-sample)")
    gamma: float = setting(RETRIEVAL_GAMMA, "temperature of p(z|x) = softmax(score / gamma) for the rag-* decodings")
    rag_sequence: RagSequenceMode = setting(
        "thorough",
        "rag-sequence: score every candidate under every passage "
        "(thorough, k² rows), or only under the passages that produced "
        "it (fast, k rows; Lewis et al. 2020; compare's default, as it decodes every strategy)",
    )

    def __post_init__(self):
        from fedrag.errors import check_finite

        check_finite(self)
        check_choices(self)  # --decoding, --rag-sequence: from their Literal types
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise FedragError("--max-new-tokens and --num-beams must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.gamma <= 0:
            raise FedragError("--temperature and --gamma must be > 0 and --top-p in (0, 1]")
        if self.decoding == "rag-token" and self.num_beams > 1:
            raise FedragError("rag-token decoding is greedy or sampled; beam search (--num-beams > 1) is not supported")

    def hf_kwargs(self) -> dict:
        """Keyword arguments for `transformers`' `generate`."""
        kw = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


def save_decoding(out_dir: str | Path, decoding: str, gamma: float = RETRIEVAL_GAMMA, strategy: str = "") -> None:
    """Record in a saved generator directory the decoding that matches its training."""
    Path(out_dir, DECODING_FILE).write_text(json.dumps({"decoding": decoding, "gamma": gamma, "strategy": strategy}))


def recorded_decoding(generator_dir: str | Path | None) -> dict | None:
    """`{"decoding", "gamma", "strategy"}` recorded by [`save_decoding`][save_decoding], or None."""
    if not generator_dir:
        return None
    path = Path(generator_dir) / DECODING_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FedragError(f"{path}: unreadable ({exc})") from None
    check_choice(meta.get("decoding"), Decoding, f"{path}: the recorded decoding")
    return meta


def resolve_settings(decoding: str, generator: str | None, gamma: float | None = None, **options) -> GenerationSettings:
    """Settings for a generator argument: `decoding="auto"` uses the decoding recorded
    in a fedrag-trained generator directory (concat for any other model); `gamma`
    defaults to the recorded one."""
    meta = recorded_decoding(generator) if generator and Path(generator).is_dir() else None
    if decoding == "auto":
        decoding = meta["decoding"] if meta else "concat"
    if gamma is None:
        gamma = float(meta.get("gamma", RETRIEVAL_GAMMA)) if meta else RETRIEVAL_GAMMA
    return GenerationSettings(decoding, gamma=gamma, **options)


def log_prior(scores: torch.Tensor, gamma: float) -> torch.Tensor:
    """`log p(z|x)` over each question's passages: `log_softmax(scores / gamma)`."""
    return torch.log_softmax(scores.float() / gamma, dim=-1)


def rag_sequence_decode(
    gen,
    question_prompts: list[list[str]],
    scores: torch.Tensor,
    settings: GenerationSettings,
    batch_size: int = 8,
    return_candidates: bool = False,
):
    """RAG-Sequence decoding of a batch, thorough or fast (`settings.rag_sequence`).

    `question_prompts[b][z]` is question `b`'s prompt with passage `z` alone;
    `scores` `[B, k]` the retrieval scores. With `return_candidates`, also each
    question's candidate answers (the set it ranked)."""
    flat = [p for ps in question_prompts for p in ps]
    n = settings.num_beams
    cands = gen.generate(flat, batch_size=batch_size, settings=settings, num_return_sequences=n)
    prior = log_prior(scores, settings.gamma)
    fast = settings.rag_sequence == "fast"
    # fast: each candidate is scored only under the passage(s) that produced it
    own = gen.score_no_grad([p for p in flat for _ in range(n)], cands, batch_size) if fast else None
    answers, ranked, i = [], [], 0
    for b, prompts in enumerate(question_prompts):
        k = len(prompts)
        mine_all = cands[i : i + n * k]
        mine = list(dict.fromkeys(mine_all))  # unique, first-seen order
        ranked.append(mine)
        if fast:
            logp = torch.full((len(mine), k), float("-inf"))
            for j, y in enumerate(mine_all):  # candidate j came from passage j // n
                logp[mine.index(y), j // n] = own[i + j]
        else:
            logp = gen.score_no_grad([p for _ in mine for p in prompts], [y for y in mine for _ in prompts], batch_size).view(
                len(mine), k
            )
        i += n * k
        marginal = torch.logsumexp(prior[b, :k][None, :] + logp, dim=-1)
        answers.append(mine[int(marginal.argmax())])
    return (answers, ranked) if return_candidates else answers


@torch.no_grad()
def rag_token_decode(
    gen, question_prompts: list[list[str]], scores: torch.Tensor, settings: GenerationSettings, return_step_logp: bool = False
):
    """RAG-Token decoding of a batch: one forward of `B·k` rows per step, KV cached.

    Returns the answers, and with `return_step_logp` also, per question, the list of
    mixture log-distributions `[V]` the tokens were chosen from (for tests)."""
    model, tok = gen.model, gen.tokenizer
    k = len(question_prompts[0])
    if any(len(ps) != k for ps in question_prompts):
        raise ValueError("every question needs the same number of passages")
    bsz = len(question_prompts)
    prior = log_prior(scores, settings.gamma).to(gen.device)  # [B, k]
    ids = [gen.token_ids(p) for ps in question_prompts for p in ps]
    width = max(map(len, ids))
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=gen.device)
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=gen.device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    gen.model.eval()
    kv = gen.cache_keyword
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    past, logits = getattr(out, kv), out.logits[:, -1, :]
    next_pos = positions[:, -1:] + 1
    done = torch.zeros(bsz, dtype=torch.bool, device=gen.device)
    chosen: list[list[int]] = [[] for _ in range(bsz)]
    steps: list[list[torch.Tensor]] = [[] for _ in range(bsz)]
    rng = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(settings.max_new_tokens):
        token_logp = torch.log_softmax(logits.float(), dim=-1).view(bsz, k, -1)
        mixture = torch.logsumexp(prior[..., None] + token_logp, dim=1)  # [B, V]
        nxt = _pick(mixture, settings, rng)
        for b in range(bsz):
            if not done[b]:
                chosen[b].append(int(nxt[b]))
                if return_step_logp:
                    steps[b].append(mixture[b].cpu())
        done |= nxt == tok.eos_token_id
        if bool(done.all()):
            break
        step_ids = nxt.repeat_interleave(k)[:, None]
        attention = torch.cat([attention, torch.ones_like(step_ids)], dim=1)
        out = model(input_ids=step_ids, attention_mask=attention, position_ids=next_pos, use_cache=True, **{kv: past})
        past, logits, next_pos = getattr(out, kv), out.logits[:, -1, :], next_pos + 1
    answers = [clean_answer(tok.decode([t for t in row if t != tok.eos_token_id], skip_special_tokens=True)) for row in chosen]
    return (answers, steps) if return_step_logp else answers


def _pick(mixture: torch.Tensor, settings: GenerationSettings, rng: torch.Generator) -> torch.Tensor:
    if not settings.do_sample:
        return mixture.argmax(-1)
    logits = mixture / settings.temperature
    if settings.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > settings.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1).to(mixture.device)
