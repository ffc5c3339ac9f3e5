"""The GPU check: fedrag's training and decoding paths on a CUDA device, sized for one short window.

    python benchmarks/gpu_check.py --device cuda --sizes tiny,1b,8b --out gpu_check.json
    python benchmarks/gpu_check.py --device cuda --sizes 1b --quantize --out gpu_4bit.json   # bitsandbytes
    python benchmarks/gpu_check.py --device cpu --sizes tiny --out dry.json                  # CPU dry run (a test)

Nothing is downloaded: the generators are random-weight Llamas built from configs around a
tokenizer trained here (`tests/tiny.py`), the retriever a tiny random BERT; only the
machine's own PyTorch, transformers, peft, sentence-transformers and accelerate are used,
plus faiss-cpu and, for `--quantize`, bitsandbytes, carried as wheels (18.8 + 43.1 MB: with
the working tree they fit one call's 64 MiB). `gpu_cli_check.sh` beside this file runs the
CLI commands on the device. Figures from an H200: docs/results.md, "GPU check".

For each generator size and weight dtype (`--weights`: float32, and bfloat16 with bf16
autocast; a LoRA adapter over a frozen base, the adapter float32): `--steps` RALT steps and
`--steps` RAG-Token steps on one batch of 4 demo questions (top-3 passages), then a
RAG-Sequence evaluation of 8 questions. Each row reports seconds per step, generator
tokens per second, peak device memory (CUDA: `max_memory_allocated`; CPU: the process's
peak RSS), the first and last loss, and whether the losses are finite and decreased.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

# hidden, layers, heads, kv heads, intermediate: tiny (tests), ~1.1B and ~7B (Llama-3-8B's
# shape, the large vocabulary aside: the tokenizer trained here has 700 entries)
SIZES = {"tiny": (32, 2, 4, 2, 64), "1b": (2048, 18, 32, 8, 8192), "8b": (4096, 32, 32, 8, 14336)}
# LoRA learning rate per size: 1e-2 moves the tiny model in 6 steps; on the 1B and 8B shapes it
# makes the loss on the repeated batch rise (seen on an H200), 1e-4 is peft's usual range
LR = {"tiny": 1e-2, "1b": 1e-4, "8b": 1e-4}


def _peak(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _generator(tok_dir: Path, size: str, weights: str, device: str, quantize: bool, work: Path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from fedrag.generate.generator import Generator, add_lora

    hidden, layers, heads, kv, inter = SIZES[size]
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    dtype = getattr(torch, weights)
    if quantize:  # bitsandbytes quantizes while loading a checkpoint: write one (bf16), load it 4-bit
        with torch.device(device):
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        ckpt = work / f"llama-{size}"
        model.save_pretrained(ckpt)
        tok.save_pretrained(ckpt)
        del model
        return Generator.load(str(ckpt), device=device, lora=True, trainable=True, quantize="4bit")
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return Generator(add_lora(model, seed=0), tok, f"random-llama-{size}")


def _row(name: str, device: str, res, t0: float) -> dict:
    losses = [h["loss"] for h in res.history]
    return {
        "run": name,
        "s_per_step": (time.perf_counter() - t0) / max(1, res.steps),
        "gen_tokens_per_s": res.cost.generator_tokens_per_s,
        "peak_mb": _peak(device),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "finite": all(math.isfinite(v) for v in losses),
        "decreased": losses[-1] < losses[0],
    }


def check(device: str, sizes: list[str], weights: list[str], steps: int, quantize: bool, lr: float | None) -> list[dict]:
    """Train and evaluate each size and weight dtype; the models it builds are removed after."""
    with tempfile.TemporaryDirectory(prefix="fedrag-gpu-check-") as tmp:
        return _check(Path(tmp), device, sizes, weights, steps, quantize, lr)


def _check(work: Path, device: str, sizes: list[str], weights: list[str], steps: int, quantize: bool, lr: float | None):
    import torch
    from tiny import build_tiny_bert, build_tiny_llama

    from fedrag.data import demo
    from fedrag.evaluate import evaluate
    from fedrag.generate.decoding import GenerationSettings
    from fedrag.rag import RAGSystem
    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher
    from fedrag.train import RAGTokenStage, RALTStage, TrainConfig, train_stage

    bert, llama = build_tiny_bert(work), build_tiny_llama(work)
    passages, train, test = demo.generate(n_people=40, seed=1)
    retriever = Retriever.load(str(bert), device=device)
    store = KnowledgeStore.build(passages, retriever, use_cache=False)
    batch = train[:4]  # one batch of 4, seen at every step: its loss must fall
    rows = []
    for size in sizes:
        for w in ["4bit"] if quantize else weights:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            gen = _generator(llama, size, "bfloat16" if w == "4bit" else w, device, w == "4bit", work)
            rag = RAGSystem(Searcher(store, retriever), gen, top_k=3)
            autocast = "float32" if w == "float32" else "bfloat16"
            if autocast == "bfloat16" and not device.startswith("cuda"):
                autocast = "float32"  # bf16 autocast on a CPU is emulated: the dry run checks the path, not speed
            cfg = TrainConfig(steps=steps, batch_size=4, lr_generator=lr or LR[size], warmup_ratio=0, dtype=autocast)
            label = f"{size} {w} weights"
            for stage in (RALTStage(top_k=3), RAGTokenStage(top_k=3, train_retriever=False)):
                t0 = time.perf_counter()
                res = train_stage(stage, rag, batch, cfg)
                rows.append(
                    {**_row(f"{label}, {stage.name}", device, res, t0), "size": size, "weights": w, "lr": cfg.lr_generator}
                )
                print(json.dumps(rows[-1]), flush=True)
            t0 = time.perf_counter()
            m = evaluate(
                RAGSystem(
                    Searcher(store, retriever),
                    gen,
                    top_k=3,
                    settings=GenerationSettings(decoding="rag-sequence", max_new_tokens=8, rag_sequence="fast"),
                ),
                test[:8],
            )
            rows.append(
                {
                    "run": f"{label}, rag-sequence eval",
                    "size": size,
                    "weights": w,
                    "ms_per_question": (time.perf_counter() - t0) * 1000 / 8,
                    "peak_mb": _peak(device),
                    "f1": m["f1"],
                    "finite": True,
                    "decreased": None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            del rag, gen
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="tiny,1b", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--weights", default="float32,bfloat16", help="weight dtypes of the frozen base")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=None, help="generator (LoRA) learning rate (default: per size, LR)")
    ap.add_argument("--quantize", action="store_true", help="4-bit base (bitsandbytes, CUDA only) instead of --weights")
    ap.add_argument("--out", required=True, help="JSON file for the rows")
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; use --device cpu for the dry run")
    t0 = time.perf_counter()
    rows = check(args.device, args.sizes.split(","), args.weights.split(","), args.steps, args.quantize, args.lr)
    meta = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - t0,
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    bad = [r["run"] for r in rows if not r["finite"] or r["decreased"] is False]
    print(
        f"gpu_check: {len(rows)} rows, {meta['wall_s']:.0f} s on {meta['device']}; "
        f"{'all finite and decreasing' if not bad else 'check: ' + ', '.join(bad)}"
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
