"""Evaluation speed of a LoRA generator by weight dtype and adapter form, on a GPU (or a CPU dry run).

    python benchmarks/gpu_eval_speed.py --device cuda --sizes 1b,8b --out eval_speed.json
    python benchmarks/gpu_eval_speed.py --device cpu --sizes tiny --questions 8 --out dry.json

The GPU check (`gpu_check.py`) saw a bfloat16 base answer RAG-Sequence questions 3.7x slower
than a float32 one on an 8B shape. This locates why. For each size and weight dtype the
same random-weight Llama (built from a config, as in `gpu_check.py`) answers `--questions`
demo questions with `evaluate`, after one warm-up batch, in three adapter forms:

- `adapter-f32`: the LoRA adapter in float32 over the base, as training leaves it (and as
  peft loads a saved adapter, `autocast_adapter_dtype`);
- `adapter-cast`: the adapter cast to the base's dtype;
- `merged`: the adapter merged into the base (`merge_and_unload`), no adapter at inference.

Rows: ms per question for concat and RAG-Sequence ("fast") decoding at each `--batch-sizes`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gpu_check import _generator  # noqa: E402  (importing it puts tests/ on the path)

FORMS = ("adapter-f32", "adapter-cast", "merged")


def _form(gen, form: str, weights: str):
    import torch

    from fedrag.generate.generator import Generator

    if form == "adapter-cast":
        gen.model.to(getattr(torch, weights))
    elif form == "merged":
        return Generator(gen.model.merge_and_unload(), gen.tokenizer, gen.name)
    return gen


def run(device: str, sizes: list[str], weights: list[str], questions: int, batch_sizes: list[int]) -> list[dict]:
    import tempfile

    import torch
    from tiny import build_tiny_bert, build_tiny_llama

    from fedrag.data import demo
    from fedrag.evaluate import evaluate
    from fedrag.generate.decoding import GenerationSettings
    from fedrag.rag import RAGSystem
    from fedrag.retrieve import KnowledgeStore, Retriever, Searcher

    work = Path(tempfile.mkdtemp(prefix="fedrag-eval-speed-"))
    bert, llama = build_tiny_bert(work), build_tiny_llama(work)
    passages, _, test = demo.generate(n_people=max(40, questions), seed=1)
    test = (test * (1 + questions // max(1, len(test))))[:questions]
    retriever = Retriever.load(str(bert), device=device)
    store = KnowledgeStore.build(passages, retriever, use_cache=False)
    rows = []
    for size in sizes:
        for w in weights:
            for form in FORMS:
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                gen = _form(_generator(llama, size, w, device, False, work), form, w)
                gen.model.eval()
                for decoding in ("concat", "rag-sequence"):
                    settings = GenerationSettings(decoding=decoding, max_new_tokens=8, rag_sequence="fast")
                    rag = RAGSystem(Searcher(store, retriever), gen, top_k=3, settings=settings)
                    for bs in batch_sizes:
                        evaluate(rag, test[:bs], batch_size=bs, progress=False)  # warm-up: kernels, allocator
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        m = evaluate(rag, test, batch_size=bs, progress=False)
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                        ms = (time.perf_counter() - t0) * 1000 / len(test)
                        rows.append(
                            {
                                "size": size,
                                "weights": w,
                                "form": form,
                                "decoding": decoding,
                                "batch": bs,
                                "ms_per_question": round(ms, 1),
                                "f1": m["f1"],
                            }
                        )
                        print(json.dumps(rows[-1]), flush=True)
                del gen, rag
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="1b,8b")
    ap.add_argument("--weights", default="float32,bfloat16")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_eval_speed: no CUDA device; use --device cpu for the dry run")
    t0 = time.perf_counter()
    rows = run(
        args.device, args.sizes.split(","), args.weights.split(","), args.questions, [int(b) for b in args.batch_sizes.split(",")]
    )
    meta = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - t0,
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"gpu_eval_speed: {len(rows)} rows in {meta['wall_s']:.0f} s on {meta['device']}")


if __name__ == "__main__":
    main()
