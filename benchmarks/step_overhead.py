"""One training step of each stage: fedrag vs a plain PyTorch implementation of the same maths.

    python benchmarks/step_overhead.py [--batch-size 4] [--top-k 3] [--repeats 5]

Same models (bundled MiniLM + SmolLM2 with the same LoRA adapter), same batch, same
AdamW; each side's step is forward + loss + backward + optimizer step, timed alternately.
The plain side is written the textbook way: top-k by a torch matmul, full-vocabulary
logits from ``model(...).logits``, HF's label-masked loss for RALT. Overhead = fedrag/plain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def plain_scores(rag, questions, k, grad):
    st = rag.retriever.query_encoder
    with torch.set_grad_enabled(grad):
        q = F.normalize(st(st.preprocess(questions))["sentence_embedding"], dim=-1)
    emb = torch.from_numpy(rag.store.embeddings)
    top = (q.detach() @ emb.T).topk(k, dim=-1).indices
    return q, (q[:, None, :] * emb[top]).sum(-1), top


def plain_answer_logp(gen, prompts, answers):
    """Full logits, log-softmax over the vocabulary, gather the answer tokens: ``[N, T]``."""
    tok = gen.tokenizer
    rows, starts, lens = [], [], []
    for p, a in zip(prompts, answers):
        pid = tok(p, add_special_tokens=False)["input_ids"]
        aid = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(pid + aid)
        starts.append(len(pid))
        lens.append(len(aid))
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    att = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    logp = torch.log_softmax(gen.model(input_ids=ids, attention_mask=att).logits.float(), -1)  # [N, L, V]
    j = torch.arange(max(lens))
    mask = j[None] < torch.tensor(lens)[:, None]
    pos = (torch.tensor(starts)[:, None] + j[None] - 1).clamp(max=width - 2) * mask
    tgt = ids.gather(1, (pos + 1) * mask)
    tok_lp = logp.gather(1, pos[..., None].expand(-1, -1, logp.shape[-1])).gather(-1, tgt[..., None]).squeeze(-1)
    return tok_lp * mask, mask


def plain_step(stage, rag, batch, k):
    qs, ans = [e.question for e in batch], [e.answers[0] for e in batch]
    gen = rag.generator
    if stage == "contrastive":
        q, _, top = plain_scores(rag, qs, 2, grad=True)
        emb = torch.from_numpy(rag.store.embeddings)
        gold = torch.tensor([rag.store.position(e.gold_ids[0]) for e in batch])
        neg = torch.stack([row[row != g][0] for row, g in zip(top, gold)])
        logits = 20.0 * q @ torch.cat([emb[gold], emb[neg]]).T
        return F.cross_entropy(logits, torch.arange(len(batch)))
    if stage == "ralt":
        with torch.no_grad():
            _, _, top = plain_scores(rag, qs, k, grad=False)
        prompts = [gen.prompt(q, [rag.store.passages[i] for i in row]) for q, row in zip(qs, top.tolist())]
        tok = gen.tokenizer
        rows, labels = [], []
        for p, a in zip(prompts, ans):
            pid = tok(p, add_special_tokens=False)["input_ids"]
            aid = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append(pid + aid)
            labels.append([-100] * len(pid) + aid)
        width = max(map(len, rows))
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        att = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])  # pad id = <|im_end|> also occurs in prompts
        return gen.model(input_ids=ids, attention_mask=att, labels=lab).loss
    train_ret = stage in ("lsr", "rag-sequence", "rag-token")
    q, scores, top = plain_scores(rag, qs, k, grad=train_ret)
    prompts = [gen.prompt(q_, [rag.store.passages[i]]) for q_, row in zip(qs, top.tolist()) for i in row]
    answers = [a for a in ans for _ in range(k)]
    with torch.set_grad_enabled(stage != "lsr"):
        tok_lp, mask = plain_answer_logp(gen, prompts, answers)
    seq = tok_lp.sum(-1).view(len(batch), k)
    if stage == "lsr":
        p_lm = torch.softmax(seq.detach(), -1)
        return (p_lm * (p_lm.log() - torch.log_softmax(scores / 0.1, -1))).sum(-1).mean()
    prior = torch.log_softmax(scores, -1)
    if stage == "rag-sequence":
        return -torch.logsumexp(prior + seq, -1).mean()
    tl = tok_lp.view(len(batch), k, -1)
    m = mask.view(len(batch), k, -1)[:, 0]
    return -(torch.logsumexp(prior[..., None] + tl, 1) * m).sum(-1).mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from fedrag.data import demo
    from fedrag.pipeline import build_training_rag
    from fedrag.train import make_stage
    from fedrag.train.state import freeze_except

    passages, train, _ = demo.generate()
    import tempfile

    from fedrag.data import write_jsonl

    corpus = Path(tempfile.mkdtemp()) / "corpus.jsonl"
    write_jsonl(corpus, passages)
    rag = build_training_rag(str(corpus), "minilm", "smollm2-135m", top_k=args.top_k)
    batch = train[: args.batch_size]
    rows = []
    for name in ("contrastive", "ralt", "lsr", "rag-sequence", "rag-token"):
        stage = make_stage(name, top_k=args.top_k, **({"hard_negatives": 1} if name == "contrastive" else {}))
        params = list(freeze_except(rag, stage.trains).values())
        opt = torch.optim.AdamW(params, lr=1e-6)
        rag.retriever.query_encoder.eval()  # no dropout: both sides do identical work
        rag.generator.model.eval()

        def ours():
            opt.zero_grad(set_to_none=True)
            stage.loss(rag, batch).loss.backward()
            opt.step()

        def plain():
            opt.zero_grad(set_to_none=True)
            plain_step(name, rag, batch, args.top_k).backward()
            opt.step()

        ours(), plain()  # warm-up
        t_ours, t_plain = [], []
        for _ in range(args.repeats):
            for fn, acc in ((ours, t_ours), (plain, t_plain)):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
        mo, mp = statistics.median(t_ours), statistics.median(t_plain)
        rows.append([name, ", ".join(stage.trains), mp, mo, mo / mp])
        print(f"{name}: plain {mp:.3f}s fedrag {mo:.3f}s ratio {mo / mp:.3f}", flush=True)
    print()
    print(table(["stage", "trains", "plain PyTorch s/step", "fedrag s/step", "overhead ratio"], rows))
    print(f"\nbatch {args.batch_size}, top-k {args.top_k}, median of {args.repeats}, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
