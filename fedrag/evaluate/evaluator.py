"""Run a RAG system over a QA set and aggregate EM/F1/Recall@k/answer-recall@k/MRR@10 and latency."""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from fedrag._batch_probe import AUTO, CAP, largest_batch, probing
from fedrag.data.types import Example
from fedrag.evaluate.metrics import answer_recall_at_k, exact_match, f1_score, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k

RECALL_KS = (1, 5, 20)


def auto_batch_size(rag, examples: list[Example], depth: int) -> int:
    """`--batch-size auto` for answering: on a CUDA device the largest batch of questions
    answered within its free memory (a probe answers the first ones, as
    `fedrag._batch_probe` searches); elsewhere 8."""
    device = (rag.generator or rag.retriever).device
    if not probing(device):
        return 8
    questions = [e.question for e in examples]
    return largest_batch(lambda b: rag.answer(questions[:b], k=depth, batch_size=b), min(CAP, len(questions)))


def evaluate(rag, examples: list[Example], batch_size: int | str = 8, progress: bool = True, ks=RECALL_KS) -> dict:
    """Metrics over `examples`: answer-recall@k always (a top-k passage contains a gold
    answer), Recall@k, precision@k, MRR@10 and nDCG@10 where gold ids exist, EM/F1 when the system has a
    generator (decoded with `rag.settings`). `batch_size`: questions a batch, or `auto`
    ([`auto_batch_size`][auto_batch_size]). Returns a flat dict plus per-example rows
    under `"_rows"` (dropped before writing metrics files)."""
    depth = max(max(ks), 10, rag.top_k)
    if batch_size == AUTO:
        batch_size = auto_batch_size(rag, examples, depth)
    timing = getattr(rag.searcher, "timing", None)
    before = dict(timing) if timing else None
    rows, t0 = [], time.perf_counter()
    bar = tqdm(total=len(examples), desc="eval", disable=not progress, leave=False)
    for i in range(0, len(examples), batch_size):
        batch = examples[i : i + batch_size]
        outs = rag.answer([e.question for e in batch], k=depth, batch_size=batch_size)
        for ex, out in zip(batch, outs):
            row = {
                "id": ex.id,
                "retrieved": out.passage_ids[:10],
                "retrieve_ms": 1000 * out.retrieve_s,
                "generate_ms": 1000 * out.generate_s,
            }
            if out.answer is not None:
                row.update(prediction=out.answer, em=exact_match(out.answer, ex.answers), f1=f1_score(out.answer, ex.answers))
            texts = [h.passage.as_text() for h in out.hits]
            for k in ks:
                row[f"answer_recall@{k}"] = answer_recall_at_k(texts, ex.answers, k)
            if ex.gold_ids:
                for k in ks:
                    row[f"recall@{k}"] = recall_at_k(out.passage_ids, ex.gold_ids, k)
                    row[f"precision@{k}"] = precision_at_k(out.passage_ids, ex.gold_ids, k)
                row["mrr@10"] = mrr_at_k(out.passage_ids, ex.gold_ids, 10)
                row["ndcg@10"] = ndcg_at_k(out.passage_ids, ex.gold_ids, 10)
            rows.append(row)
        bar.update(len(batch))
    bar.close()
    wall = time.perf_counter() - t0
    metrics: dict = {"n": len(rows)}
    keys = (
        ["em", "f1"]
        + [f"recall@{k}" for k in ks]
        + [f"precision@{k}" for k in ks]
        + ["mrr@10", "ndcg@10"]
        + [f"answer_recall@{k}" for k in ks]
    )
    for key in keys:
        vals = [r[key] for r in rows if key in r]
        if vals:
            metrics[key] = sum(vals) / len(vals)
    metrics["retrieve_ms_per_query"] = sum(r["retrieve_ms"] for r in rows) / max(1, len(rows))
    metrics["generate_ms_per_query"] = sum(r["generate_ms"] for r in rows) / max(1, len(rows))
    metrics["wall_s"] = wall
    metrics["batch_size"] = batch_size
    if timing and timing["queries"] > before["queries"]:  # dense search apart from encoding the questions
        n = timing["queries"] - before["queries"]
        metrics["query_encode_ms_per_query"] = 1000 * (timing["encode_s"] - before["encode_s"]) / n
        metrics["search_ms_per_query"] = 1000 * (timing["search_s"] - before["search_s"]) / n
    if rag.generator is not None:
        metrics["decoding"] = rag.settings.decoding
        gen_s = sum(r["generate_ms"] for r in rows) / 1000
        tokens = sum(len(rag.generator.token_ids(r["prediction"])) for r in rows)
        metrics["generated_tokens_per_s"] = tokens / gen_s if gen_s > 0 else 0.0
    metrics["_rows"] = rows
    return metrics
