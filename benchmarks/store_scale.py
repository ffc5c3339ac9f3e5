"""Knowledge stores at size: build, kill-and-resume, load, search and approximate-vs-exact
recall, beside plain sentence-transformers + FAISS on the same passages.

    python benchmarks/store_scale.py --squad ../shared/data/squad_v1.1_dev/dev-v1.1.json \
        [--sizes 10000,100000] [--plain-max 20000] [--kill] [--work /tmp/store-scale]

The corpus: every SQuAD dev paragraph, each of its sentences, and each run of 2 and 3
consecutive sentences (about 26,000 distinct passages); larger sizes repeat them with a
copy number in the title, so every passage text is distinct. Questions: 2,000 SQuAD dev
questions spread through the set; a question is answered at 5 when one of its top 5
passages contains an answer alias (answer-recall@5, robust to near-duplicate passages).

Each `fedrag index` runs as its own process with an empty embedding cache, timed with
`/usr/bin/time` (wall and peak memory). `--kill` also builds once more with the process
killed (SIGKILL) after half of its chunks, then runs the same command again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402

FEDRAG = [sys.executable, "-m", "fedrag"]


def corpus(squad: str, size: int) -> tuple[list[dict], list[tuple[str, list[str]]]]:
    """`size` passages (see the module) and every (question, answers) of the file."""
    data = json.loads(Path(squad).read_text())["data"]
    base, questions = [], []
    for art in data:
        title = art["title"].replace("_", " ")
        for para in art["paragraphs"]:
            sents = [s for s in re.split(r"(?<=[.!?])\s+", para["context"]) if s.strip()]
            texts = [para["context"]] + [" ".join(sents[i : i + w]) for w in (1, 2, 3) for i in range(len(sents) - w + 1)]
            base += [(title, t) for t in dict.fromkeys(texts)]
            questions += [(q["question"], [a["text"] for a in q["answers"]]) for q in para["qas"]]
    rows = [
        {"id": f"p{i}", "title": title if i < len(base) else f"{title} ({i // len(base)})", "text": text}
        for i, (title, text) in ((i, base[i % len(base)]) for i in range(size))
    ]
    return rows, questions


def timed_run(cmd: list[str], env: dict, log: Path) -> dict:
    """Wall seconds, peak RSS (MiB) and exit code of `cmd` run under /usr/bin/time -v."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    text = log.read_text()
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"wall": wall, "peak_mib": int(peak.group(1)) / 1024 if peak else float("nan"), "rc": rc}


def du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def plain_build(texts: list[str], out: Path) -> None:
    """The reference: SentenceTransformer.encode (float32) + faiss.IndexFlatIP, saved."""
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from fedrag.models import retriever_path

    model = SentenceTransformer(retriever_path("minilm"), device="cpu")
    emb = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "index.faiss"))
    np.save(out / "embeddings.npy", emb)


def answer_recall(pos, rows, answers) -> list[bool]:
    norm = lambda s: " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())  # noqa: E731
    return [any(norm(a) in norm(rows[p]["text"]) for p in ps for a in ans) for ps, ans in zip(pos, answers)]


def paired_counts(before: list[bool], after: list[bool]) -> tuple[int, int]:
    """(questions `after` answers that `before` did not, and the reverse)."""
    return sum(b and not a for a, b in zip(before, after)), sum(a and not b for a, b in zip(before, after))


def search_stats(store, queries) -> tuple[float, float]:
    """p50 and p99 milliseconds of one-query searches (the query vectors precomputed)."""
    times = []
    for q in queries:
        t0 = time.perf_counter()
        store.search(q[None, :], 5)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--squad", required=True)
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--plain-max", type=int, default=20000, help="largest size the plain reference builds")
    ap.add_argument("--questions", type=int, default=2000)
    ap.add_argument("--kill", action="store_true", help="also kill a build after half its chunks and resume it")
    ap.add_argument("--work", default="/tmp/store-scale")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    build_rows, quality_rows = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        rows, qa = corpus(args.squad, size)
        d = work / f"n{size}"
        d.mkdir(exist_ok=True)
        with open(d / "corpus.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        build_rows += run_size(args, d, rows)
        quality_rows += quality(args, d, rows, qa, size)
    print(table(["build", "passages", "wall s", "passages/s", "peak MiB", "disk MiB", "load s", "vs plain (time)"], build_rows))
    print()
    print(
        table(
            ["search", "passages", "index", "p50 ms", "p99 ms", "answer-recall@5", "vs exact", "gained/lost vs exact"],
            quality_rows,
        )
    )


def run_size(args, d: Path, rows: list[dict]) -> list[list]:
    size, out = len(rows), []
    env = {**os.environ, "FEDRAG_CACHE": str(d / "cache")}
    cmd = [*FEDRAG, "index", "--corpus", str(d / "corpus.jsonl"), "--index", "flat", "--overwrite"]
    subprocess.run(["rm", "-rf", str(d / "cache")])
    full = timed_run([*cmd, "--out", str(d / "flat")], env, d / "flat.log")
    load_s = load_time(d / "flat")
    plain = None
    if size <= args.plain_max:
        t0 = time.perf_counter()
        plain_build([f"{r['title']}. {r['text']}" for r in rows], d / "plain")
        plain = time.perf_counter() - t0
        out.append(["plain ST float32 + IndexFlatIP", size, plain, size / plain, "", du_mib(d / "plain"), "", 1.0])
    ratio = full["wall"] / plain if plain else ""
    out.append(
        ["fedrag index (flat)", size, full["wall"], size / full["wall"], full["peak_mib"], du_mib(d / "flat"), load_s, ratio]
    )
    hnsw = timed_run([*cmd[:-3], "--index", "hnsw", "--overwrite", "--out", str(d / "hnsw")], env, d / "hnsw.log")
    out.append(
        [
            "fedrag index (hnsw, cached vectors)",
            size,
            hnsw["wall"],
            "",
            hnsw["peak_mib"],
            du_mib(d / "hnsw"),
            load_time(d / "hnsw"),
            "",
        ]
    )
    if args.kill:
        subprocess.run(["rm", "-rf", str(d / "cache")])
        chunks = -(-size // 2048)
        killed = timed_run([*cmd, "--out", str(d / "k")], {**env, "FEDRAG_FAULT": f"encode-chunk:{chunks // 2}"}, d / "k1.log")
        again = timed_run([*cmd, "--out", str(d / "k")], env, d / "k2.log")
        out.append([f"killed after {chunks // 2}/{chunks} chunks (rc {killed['rc']})", size, killed["wall"], "", "", "", "", ""])
        out.append(
            [
                "same command again",
                size,
                again["wall"],
                "",
                again["peak_mib"],
                "",
                "",
                f"{again['wall'] / full['wall']:.2f} of full",
            ]
        )
    return out


def load_time(path: Path) -> float:
    code = "import time,sys;t=time.perf_counter();from fedrag.retrieve import KnowledgeStore;s=KnowledgeStore.load(sys.argv[1]);print(time.perf_counter()-t)"
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    return float(res.stdout.strip().splitlines()[-1])


def quality(args, d: Path, rows, qa, size) -> list[list]:
    import faiss
    import numpy as np

    from fedrag.retrieve import KnowledgeStore, Retriever

    step = max(1, len(qa) // args.questions)
    qa = qa[::step][: args.questions]
    ret = Retriever.load("minilm")
    q = ret.encode_queries([x for x, _ in qa]).numpy()
    answers = [a for _, a in qa]
    out, flat_hits = [], None
    for name in ("flat", "hnsw"):
        store = KnowledgeStore.load(d / name)
        _, pos = store.search(q, 5)
        hits = answer_recall(pos.tolist(), rows, answers)
        flat_hits = flat_hits or hits
        p50, p99 = search_stats(store, q[:500])
        g, lost = paired_counts(flat_hits, hits)
        rel = np.mean(hits) / np.mean(flat_hits)
        out.append(
            [
                f"fedrag {name} ({store.info.get('encode_dtype')})",
                size,
                name,
                p50,
                p99,
                float(np.mean(hits)),
                rel,
                f"+{g} / -{lost}",
            ]
        )
    if (d / "plain").exists():
        index = faiss.read_index(str(d / "plain" / "index.faiss"))
        _, pos = index.search(np.ascontiguousarray(q), 5)
        hits = answer_recall(pos.tolist(), rows, answers)
        g, lost = paired_counts(hits, flat_hits)
        out.append(
            [
                "plain float32 flat (fedrag flat vs it: gained/lost)",
                size,
                "Flat",
                "",
                "",
                float(np.mean(hits)),
                "",
                f"+{g} / -{lost}",
            ]
        )
    return out


if __name__ == "__main__":
    main()
