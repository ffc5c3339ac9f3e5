"""Step time, throughput and peak memory by precision and scoring micro-batch.

    python benchmarks/precision_memory.py [--generator smollm2-135m] [--steps 3] [--k 4]
    python benchmarks/precision_memory.py --weights [--generator smollm2-135m]

`--weights`: the generator's weight bytes (frozen base and LoRA adapter) and the process's
resident memory once the training system is loaded, float32 against bfloat16 weights
(`TrainConfig.dtype`), each in a fresh process; no training step.

Each configuration runs in a fresh subprocess (peak memory is per process): a RALT step
(LoRA, all-in-one, top-3) and a RAG-Sequence step (k passages, both sides training),
batch 4 on the demo data. On CPU the peak is the process's resident set above the
loaded models (measured before the warm-up step, so the peak covers every step); on a
GPU, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402

CONFIGS = [
    ("ralt", "float32", None),
    ("ralt", "bfloat16", None),
    ("rag-sequence", "float32", None),
    ("rag-sequence", "bfloat16", None),
    ("rag-sequence", "float32", 4),
    ("rag-sequence", "float32", 1),
]


def child(args) -> None:
    import resource
    import tempfile
    import time

    import torch

    from fedrag.data import demo, load_qa
    from fedrag.pipeline import build_training_rag
    from fedrag.train import RAGSequenceStage, RALTStage, TrainConfig, train_stage

    data = Path(tempfile.mkdtemp())
    demo.write(data)
    train = load_qa(data / "train.jsonl")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rag = build_training_rag(str(data / "corpus.jsonl"), args.retriever, args.generator, top_k=args.k, device=dev)
    stage = RALTStage(top_k=3) if args.stage == "ralt" else RAGSequenceStage(top_k=args.k)
    cfg = TrainConfig(steps=1, batch_size=4, dtype=args.dtype, score_batch_size=args.chunk, warmup_ratio=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # models and store loaded, nothing trained yet
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_stage(stage, rag, train[:4], cfg)  # warm-up (allocator, kernels); counts towards the peak
    t0 = time.perf_counter()
    res = train_stage(stage, rag, train[4:], TrainConfig(**{**cfg.__dict__, "steps": args.steps}))
    step_s = (time.perf_counter() - t0) / args.steps
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if dev == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    )
    print(
        json.dumps(
            {
                "step_s": step_s,
                "peak_mb": peak,
                "gen_tok_s": res.cost.generator_tokens_per_s,
                "loss": res.final_loss,
                "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
            }
        )
    )


def weights_child(args) -> None:
    import resource
    import tempfile

    from fedrag.data import demo
    from fedrag.pipeline import build_training_rag

    data = Path(tempfile.mkdtemp())
    demo.write(data)
    rag = build_training_rag(str(data / "corpus.jsonl"), args.retriever, args.generator, top_k=3, dtype=args.dtype)
    params = dict(rag.generator.model.named_parameters())
    base = sum(p.numel() * p.element_size() for n, p in params.items() if "lora_" not in n)
    adapter = sum(p.numel() * p.element_size() for n, p in params.items() if "lora_" in n)
    print(
        json.dumps(
            {
                "base_mb": base / 2**20,
                "adapter_mb": adapter / 2**20,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def weights(args) -> None:
    rows, ref = [], None
    for dtype in ("float32", "bfloat16"):
        cmd = [
            sys.executable,
            __file__,
            "--weights-child",
            "--dtype",
            dtype,
            "--generator",
            args.generator,
            "--retriever",
            args.retriever,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = r["base_mb"] + r["adapter_mb"]
        ref = ref or (total, r["rss_mb"])
        rows.append([dtype, r["base_mb"], r["adapter_mb"], total, total / ref[0], r["rss_mb"], r["rss_mb"] / ref[1]])
    print(f"\n{args.generator} with a LoRA adapter, loaded for training (no step taken)\n")
    print(table(["weights dtype", "frozen base MB", "adapter MB", "generator MB", "ratio", "process peak RSS MB", "ratio"], rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="smollm2-135m")
    ap.add_argument("--retriever", default="minilm")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--stage", default="ralt")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--configs", default=None, help="indices into CONFIGS to run, e.g. 0,2,4 (default: all)")
    ap.add_argument("--weights", action="store_true", help="weight bytes and memory, float32 vs bfloat16 weights")
    ap.add_argument("--weights-child", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.weights_child:
        return weights_child(args)
    if args.weights:
        return weights(args)
    rows = []
    chosen = [CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs else CONFIGS
    for stage, dtype, chunk in chosen:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--stage",
            stage,
            "--dtype",
            dtype,
            "--generator",
            args.generator,
            "--retriever",
            args.retriever,
            "--steps",
            str(args.steps),
            "--k",
            str(args.k),
        ]
        cmd += ["--chunk", str(chunk)] if chunk else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([stage, dtype, chunk or "full", r["step_s"], r["gen_tok_s"], r["peak_mb"], r["loss"], r["device"]])
        print(rows[-1], flush=True)
    print(f"\n{args.generator}, batch 4, RAG-Sequence k={args.k}, {args.steps} timed steps after a warm-up\n")
    print(
        table(
            ["stage", "autocast dtype", "score batch", "s / step", "LM tokens / s", "peak MB over models", "loss", "device"], rows
        )
    )


if __name__ == "__main__":
    main()
