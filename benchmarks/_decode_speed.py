"""`gpu_step_speed.py`'s decoding rows: fedrag's decodings against plain `model.generate` on
the same prompts; and the prompts a stage's generator side scores, which its step rows use too."""

from __future__ import annotations

import json
import time


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rows_of(rag, batch, stage: str, top_k: int):
    """The prompts and answers a stage's generator side scores for `batch` (what the plain loop gets)."""
    questions = [e.question for e in batch]
    hits = rag.retrieve(questions, top_k)
    gen = rag.generator
    if stage == "ralt":
        return [gen.prompt(q, [h.passage for h in hs]) for q, hs in zip(questions, hits)], [e.answers[0] for e in batch]
    prompts = [gen.prompt(q, [h.passage]) for q, hs in zip(questions, hits) for h in hs]
    return prompts, [e.answers[0] for e, hs in zip(batch, hits) for _ in hs]


def decode_rows(rag, test, args, size: str) -> list[dict]:
    import torch

    from fedrag.evaluate import evaluate
    from fedrag.generate.decoding import GenerationSettings
    from fedrag.rag import RAGSystem

    qs = test[: args.eval_questions]
    prompts, _ = rows_of(rag, qs, "ralt", args.top_k)
    gen, n = rag.generator, len(qs)
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    gen.generate(prompts[:2], settings=settings)  # warm-up
    tok, rows, out = gen.tokenizer, [], {}
    for who in ("fedrag", "plain"):
        sync(args.device)
        t0 = time.perf_counter()
        if who == "fedrag":
            gen.generate(prompts, batch_size=n, settings=settings)
        else:
            tok.padding_side = "left"
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)
            with torch.no_grad():
                gen.model.generate(**enc, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        sync(args.device)
        out[who] = (time.perf_counter() - t0) * 1000 / n
    rows.append(
        {
            "size": size,
            "decoding": "concat",
            "fedrag_ms_per_question": out["fedrag"],
            "plain_ms_per_question": out["plain"],
            "vs_plain": out["fedrag"] / out["plain"],
        }
    )
    for decoding in ("rag-sequence", "rag-token"):
        system = RAGSystem(
            rag.searcher,
            gen,
            top_k=args.top_k,
            settings=GenerationSettings(decoding=decoding, max_new_tokens=args.new_tokens, rag_sequence="fast"),
        )
        t0 = time.perf_counter()
        evaluate(system, qs, progress=False)
        sync(args.device)
        ms = (time.perf_counter() - t0) * 1000 / n
        rows.append({"size": size, "decoding": decoding, "fedrag_ms_per_question": ms, "vs_plain": ms / out["plain"]})
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows
