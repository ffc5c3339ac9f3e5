"""fedrag's training steps and decoding against a plain transformers + peft loop on the same
batch, in one process, on a GPU: step time (min/median/max after warm-up), tokens/s, MFU,
peak memory and the fedrag/plain ratio.

    python benchmarks/gpu_step_speed.py --device cuda --sizes 1b,8b --out gpu_speed.json
    python benchmarks/gpu_step_speed.py --device cpu --sizes tiny --steps 2 --warmup 1 --passage-words 20 --top-k 2 --out dry.json  # a test

Nothing is downloaded: random-weight Llamas of `gpu_check.py`'s shapes (bfloat16 weights,
a LoRA adapter, bf16 autocast) around the tokenizer trained by `tests/tiny.py`, a tiny BERT
retriever over demo passages lengthened to `--passage-words` words, top `--top-k`.

Training rows, each timed per step by fedrag's own step record (`seconds`):
* `ralt`: fedrag's RALT step (all passages in one prompt) against the plain loop: the same
  token ids, `model(input_ids, attention_mask, labels)` (HF's label-masked loss over the
  full vocabulary), backward, clipping, AdamW. The plain loop gets the batch on the device
  before timing; fedrag retrieves and tokenizes inside its step, as it does when training.
* `rag-sequence`, `rag-token`: fedrag's joint steps (generator side) against the plain loop
  on the same B·k one-passage rows.
MFU counts 4·N·tokens a step (forward 2N, backward to activations 2N: the frozen base has
no weight gradients; the adapter's and attention's FLOPs are left out), N the base's
parameters, against the card's dense bf16 peak (`--peak-tflops`, or known by name).

`--batch-size auto` rows (`--auto-sizes`): the batch the probe chose for a RALT step, then
one step at the chosen batch (it must run) and one at chosen / 0.9 + 1 questions: when that
one runs out of memory, the chosen batch is within 10 % of the largest that runs.

Decoding rows: fedrag's concat decoding (`Generator.generate`) against plain
`model.generate` on the same prompts (greedy, `--new-tokens`), and fedrag's RAG-Sequence
(fast) and RAG-Token evaluation, in ms per question.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from _decode_speed import decode_rows, rows_of  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM, from NVIDIA's data sheets


def peak_mib(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(device: str, size: str, words: int, top_k: int, work: Path, people: int = 40):
    """The RAG system (random-weight generator with a LoRA adapter) and the demo questions."""
    from gpu_check import _generator
    from tiny import build_tiny_bert, build_tiny_llama

    from fedrag.data import demo
    from fedrag.data.types import Passage
    from fedrag.rag import RAGSystem
    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    bert, llama = build_tiny_bert(work), build_tiny_llama(work)
    passages, train, test = demo.generate(n_people=people, seed=1)
    filler = " ".join(p.text for p in passages).split()
    long = [Passage(p.id, " ".join(p.text.split() + filler[: max(0, words - len(p.text.split()))]), p.title) for p in passages]
    retriever = Retriever.load(str(bert), device=device)
    store = KnowledgeStore.build(long, retriever, use_cache=False)
    gen = _generator(llama, size, "bfloat16", device, False, work)
    return RAGSystem(Searcher(store, retriever), gen, top_k=top_k), train, test


def plain_steps(rag, prompts, answers, steps: int, warmup: int, lr: float, device: str) -> tuple[list[float], int]:
    """A textbook transformers + peft step on pre-built device tensors; per-step seconds and tokens a step."""
    import torch

    gen = rag.generator
    ids = [gen.token_ids(p) + gen.answer_ids(a) for p, a in zip(prompts, answers)]
    labels = [[-100] * len(gen.token_ids(p)) + gen.answer_ids(a) for p, a in zip(prompts, answers)]
    width, pad = max(map(len, ids)), gen.tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in ids], device=device)
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], device=device)
    target = torch.tensor([r + [-100] * (width - len(r)) for r in labels], device=device)
    params = [p for p in gen.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    gen.model.train()
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = gen.model(input_ids=input_ids, attention_mask=attention, labels=target).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # waits for the device, as fedrag's step does
        times.append(time.perf_counter() - t0)
    return times[warmup:], int(attention.sum())


def fedrag_steps(rag, stage_name: str, batch, steps: int, warmup: int, lr: float, top_k: int) -> tuple[list[float], int]:
    from fedrag.train import TrainConfig, make_stage, train_stage

    opts = {"top_k": top_k} if stage_name == "ralt" else {"top_k": top_k, "train_retriever": False}
    cfg = TrainConfig(steps=warmup + steps, batch_size=len(batch), lr_generator=lr, warmup_ratio=0, dtype="bfloat16")
    res = train_stage(make_stage(stage_name, **opts), rag, batch, cfg)
    times = [h["seconds"] for h in res.history if "seconds" in h]
    return times[warmup:], res.cost.generator_tokens // (warmup + steps)


def stats(times: list[float]) -> dict:
    return {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times)}


def train_rows(rag, batch, args, size: str, params: int, peak: float | None) -> list[dict]:
    import torch

    rows = []
    for stage in ("ralt", "rag-sequence", "rag-token"):
        prompts, answers = rows_of(rag, batch, stage, args.top_k)
        for who in ("fedrag", "plain"):
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            if who == "fedrag":
                times, tokens = fedrag_steps(rag, stage, batch, args.steps, args.warmup, args.lr, args.top_k)
            else:
                times, tokens = plain_steps(rag, prompts, answers, args.steps, args.warmup, args.lr, args.device)
            s = stats(times)
            flops = 4 * params * tokens / s["median_s"]
            rows.append(
                {
                    "size": size,
                    "stage": stage,
                    "who": who,
                    **s,
                    "tokens_per_step": tokens,
                    "tokens_per_s": tokens / s["median_s"],
                    "mfu": flops / (peak * 1e12) if peak else None,
                    "peak_mib": peak_mib(args.device),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        rows[-2]["vs_plain"] = rows[-2]["median_s"] / rows[-1]["median_s"]
    return rows


def auto_row(rag, train, args, size: str) -> dict:
    """What `--batch-size auto` chose for a RALT step, and whether 1/0.9 of it still runs."""
    import torch

    from fedrag.train import TrainConfig, make_stage, train_stage

    stage = make_stage("ralt", top_k=args.top_k)

    def one_step(batch) -> bool:
        cfg = TrainConfig(steps=1, batch_size=batch, lr_generator=args.lr, warmup_ratio=0, dtype="bfloat16")
        try:
            return train_stage(stage, rag, train, cfg).cost.batch_size
        except torch.OutOfMemoryError:
            return 0
        finally:
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()

    t0 = time.perf_counter()
    chosen = one_step("auto")
    probe_s = time.perf_counter() - t0
    over = int(chosen / 0.9) + 1
    row = {
        "size": size,
        "chosen": chosen,
        "probe_s": probe_s,
        "chosen_runs": one_step(chosen) == chosen,
        "over": over,
        "over_runs": over <= len(train) and one_step(over) == over,
        "questions": len(train),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="1b,8b")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--passage-words", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-questions", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--auto-sizes", default="1b", help="sizes whose --batch-size auto choice is checked")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: known by name)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_step_speed: no CUDA device; use --device cpu for the dry run")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    t0, train, decode, auto = time.perf_counter(), [], [], []
    for size in args.sizes.split(","):
        people = 800 if size in args.auto_sizes.split(",") else 40  # ~1,800 questions: room above any chosen batch
        with tempfile.TemporaryDirectory(prefix="fedrag-gpu-speed-") as work:  # the size's models: removed after
            rag, train_ex, test = build(args.device, size, args.passage_words, args.top_k, Path(work), people)
            params = sum(p.numel() for p in rag.generator.model.get_base_model().parameters())
            train += train_rows(rag, train_ex[: args.batch_size], args, size, params, peak)
            decode += decode_rows(rag, test, args, size)
            if size in args.auto_sizes.split(","):
                auto.append(auto_row(rag, train_ex, args, size))
            del rag
    meta = {
        "device": name,
        "peak_bf16_tflops": peak,
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - t0,
        "batch_size": args.batch_size,
        "top_k": args.top_k,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "train": train, "decode": decode, "auto": auto}, indent=2))
    _print_tables(train, decode, auto)
    print(f"gpu_step_speed: {meta['wall_s']:.0f} s on {name}")


def _print_tables(train: list[dict], decode: list[dict], auto: list[dict]) -> None:
    """The step rows, the decoding rows and the batch-size choices, as tables."""
    from _common import table

    print(
        table(
            ["size", "stage", "who", "median s", "min s", "max s", "tokens/s", "MFU", "peak MiB", "vs plain"],
            [
                [
                    r["size"],
                    r["stage"],
                    r["who"],
                    r["median_s"],
                    r["min_s"],
                    r["max_s"],
                    r["tokens_per_s"],
                    r["mfu"] if r["mfu"] is not None else "",
                    r["peak_mib"],
                    r.get("vs_plain", ""),
                ]
                for r in train
            ],
        )
    )
    print(
        table(
            ["size", "decoding", "fedrag ms/question", "plain generate ms/question", "vs plain"],
            [
                [r["size"], r["decoding"], r["fedrag_ms_per_question"], r.get("plain_ms_per_question", ""), r["vs_plain"]]
                for r in decode
            ],
        )
    )
    for r in auto:
        print(
            f"--batch-size auto ({r['size']}): chose {r['chosen']} in {r['probe_s']:.0f} s; runs: {r['chosen_runs']}; "
            f"{r['over']} runs: {r['over_runs']} (of {r['questions']} questions)"
        )


if __name__ == "__main__":
    main()
