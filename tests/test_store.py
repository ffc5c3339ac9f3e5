"""Knowledge stores at size: the on-disk format (and the old one), approximate indexes and
their recorded recall, resumable encoding, in-place updates, and the rerank refresh.

Every expected ranking here is computed independently of the store: numpy's matrix
product over embeddings the test encodes itself."""

import json
import subprocess

import numpy as np
import pytest

from fedrag.data import load_corpus
from fedrag.data.types import Passage
from fedrag.errors import StoreError
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher
from fedrag.retrieve.faiss_index import FaissIndex
from fedrag.retrieve.passage_table import PassageTable

from test_cli import run


def brute_force(emb: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows, computed here and not by fedrag."""
    return np.argsort(-(np.asarray(q, dtype=np.float64) @ np.asarray(emb, dtype=np.float64).T), axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def base(tiny_models, demo_dir):
    ret = Retriever.load(tiny_models["retriever"])
    passages = load_corpus(demo_dir / "corpus.jsonl")
    return ret, passages, KnowledgeStore.build(passages, ret)


def questions(ret, n=12):
    return ret.encode_queries([f"who was born in place {i}?" for i in range(n)]).numpy()


def test_a_saved_store_loads_memory_mapped_and_searches_as_built(base, tmp_path):
    ret, passages, store = base
    store.save(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["format"] == "fedrag-store/2" and manifest["count"] == len(passages)
    loaded = KnowledgeStore.load(tmp_path / "s", retriever=ret)
    assert isinstance(loaded.passages, PassageTable) and isinstance(loaded.embeddings, np.memmap)
    assert list(loaded.passages) == passages and loaded.passages[7] == passages[7]
    assert loaded.position(passages[11].id) == 11
    q = questions(ret)
    assert np.array_equal(loaded.search(q, 5)[1], brute_force(store.embeddings, q, 5))


def test_float16_vectors_halve_the_file_and_keep_the_ranking(base, tmp_path):
    ret, passages, store = base
    store.save(tmp_path / "h", vectors="float16")
    loaded = KnowledgeStore.load(tmp_path / "h")
    assert loaded.embeddings.dtype == np.float16
    assert (tmp_path / "h" / "embeddings.npy").stat().st_size < 0.6 * store.embeddings.nbytes + 256
    assert np.allclose(loaded.rows([3, 5]).numpy(), store.embeddings[[3, 5]], atol=1e-3)


def test_a_format_1_store_still_loads(base, tmp_path):
    ret, passages, store = base
    old = tmp_path / "v1"
    old.mkdir()
    np.save(old / "embeddings.npy", store.embeddings)
    (old / "passages.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in passages))
    manifest = {
        "format": "fedrag-store/1",
        "encoder": "x",
        "fingerprint": store.fingerprint,
        "dim": store.dim,
        "count": len(passages),
    }
    (old / "manifest.json").write_text(json.dumps(manifest))
    loaded = KnowledgeStore.load(old, retriever=ret)
    q = questions(ret)
    assert np.array_equal(loaded.search(q, 4)[1], brute_force(store.embeddings, q, 4))


def test_a_store_whose_files_disagree_is_one_store_error(base, tmp_path):
    ret, passages, store = base
    store.save(tmp_path / "s")
    np.save(tmp_path / "s" / "embeddings.npy", store.embeddings[:5])
    with pytest.raises(StoreError, match="disagree with the manifest"):
        KnowledgeStore.load(tmp_path / "s")


@pytest.mark.parametrize("kind", ["hnsw", "HNSW8,Flat", "IVF4,Flat", "IVF2,PQ4x4"])
def test_approximate_indexes_are_faiss_own_and_round_trip(base, tmp_path, kind):
    ret, passages, store = base
    approx = KnowledgeStore(passages, store.embeddings, index=FaissIndex(kind, nprobe=4 if "IVF" in kind else None))
    assert approx.index.approximate
    approx.save(tmp_path / "a")
    loaded = KnowledgeStore.load(tmp_path / "a")
    q = questions(ret)
    assert np.array_equal(loaded.search(q, 3)[1], approx.search(q, 3)[1])  # the index as built, not rebuilt
    if "PQ" not in kind:  # all lists visited / a small graph: exact on 48 passages
        assert np.array_equal(loaded.search(q, 3)[1], brute_force(store.embeddings, q, 3))


def test_a_search_knob_on_an_index_without_it_is_refused(base):
    ret, passages, store = base
    hnsw = KnowledgeStore(passages, store.embeddings, index=FaissIndex("hnsw", nprobe=8))
    with pytest.raises(StoreError, match="nprobe does not apply to a 'HNSW32' index"):
        hnsw.search(questions(ret), 3)
    with pytest.raises(StoreError, match="index kind must be one of"):
        FaissIndex("annoy")
    with pytest.raises(StoreError, match=r"cannot train a 'IVF4,PQ8' index on 48 vectors: Number of training points \(48\)"):
        KnowledgeStore(passages, store.embeddings, index=FaissIndex("IVF4,PQ8"))


def test_rows_reads_the_rows_asked_for(base):
    _, _, store = base
    pos = [[4, 1], [0, 4]]
    assert np.array_equal(store.rows(pos).numpy(), store.embeddings[np.array(pos)])


def test_index_cli_records_the_recall_it_measured(tiny_models, demo_dir, tmp_path, monkeypatch, capsys):
    code, out, err = run(
        monkeypatch, capsys, "index", "--corpus", demo_dir / "corpus.jsonl", "--retriever", tiny_models["retriever"],
        "--out", tmp_path / "s", "--index", "IVF4,Flat", "--nprobe", "1", "--encode-dtype", "float32",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    rec = manifest["recall"]
    store = KnowledgeStore.load(tmp_path / "s")
    rows = np.sort(np.random.default_rng(0).choice(len(store), rec["probes"], replace=False))
    q = np.asarray(store.embeddings[rows])
    exact, (_, approx) = brute_force(store.embeddings, q, 6), store.search(q, 6)
    # each probe passage's 5 nearest *other* passages (it finds itself too easily to tell anything)
    others = lambda ps, own: [p for p in ps if p != own][:5]  # noqa: E731
    expected = np.mean(
        [len(set(others(a, r)) & set(others(e, r))) / 5 for a, e, r in zip(approx.tolist(), exact.tolist(), rows.tolist())]
    )
    assert rec["recall"] == pytest.approx(expected, abs=1e-4) and rec["recall"] < 1.0  # one list of four: recall is lost
    assert f"IVF4,Flat, recall@5 {rec['recall']:.3f} vs exact" in out


def test_index_cli_refuses_bad_store_settings_in_one_line(tiny_models, demo_dir, tmp_path, monkeypatch, capsys):
    for args, msg in (
        (["--index", "annoy"], "index kind must be one of"),
        (["--encode-batch", "0"], "--encode-batch must be >= 1"),
        (["--add", demo_dir / "corpus.jsonl"], "give one or the other"),
    ):
        code, _, err = run(monkeypatch, capsys, "index", "--corpus", demo_dir / "corpus.jsonl", "--out", tmp_path / "x", *args)
        assert code == 2 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x").exists()


def _big_corpus(path, n):
    words = "river stone light harbor field iron cloud amber north glass".split()
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6 + i % 5)) + f" number {i}"
            fh.write(json.dumps({"id": f"b{i}", "title": f"T{i % 97}", "text": text}) + "\n")


@pytest.mark.slow  # a killed `fedrag index` and the rebuild of a 3-chunk corpus: the fast loop checks the store in process
def test_a_killed_build_continues_from_its_last_finished_chunk(tiny_models, tmp_path, monkeypatch, capsys, warm_cli):
    """`fedrag index` killed (SIGKILL, at an exact chunk) in a process of its own (`warm_cli`);
    the same command again, here in this test's process, encodes only what the killed one had not."""
    from fedrag.retrieve.encode import CHUNK

    n = 2 * CHUNK + 100  # three chunks
    _big_corpus(tmp_path / "c.jsonl", n)
    env = {**warm_cli, "FEDRAG_CACHE": str(tmp_path / "cache")}
    cmd = [
        "fedrag",
        "index",
        "--corpus",
        str(tmp_path / "c.jsonl"),
        "--retriever",
        tiny_models["retriever"],
    ]
    cmd += ["--out", str(tmp_path / "s"), "--encode-dtype", "float32"]
    killed = subprocess.run(cmd, env={**env, "FEDRAG_FAULT": "encode-chunk:2"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9 and not (tmp_path / "s").exists()
    assert f"encoding {2 * CHUNK}/{n} passages" in killed.stderr
    monkeypatch.setenv("FEDRAG_CACHE", env["FEDRAG_CACHE"])
    code, _, err = run(monkeypatch, capsys, *cmd[1:])
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("fedrag: encoding")]
    assert len(lines) == 1 and f"encoding {n}/{n} passages" in lines[0] and "/s, ETA" in lines[0]  # the last chunk only
    store = KnowledgeStore.load(tmp_path / "s")
    ret = Retriever.load(tiny_models["retriever"])
    fresh = ret.encode_passages([p.as_text() for p in load_corpus(tmp_path / "c.jsonl")])
    assert np.allclose(np.asarray(store.embeddings), fresh, atol=1e-5)


def test_add_and_remove_change_the_store_as_a_fresh_build_would(tiny_models, demo_dir, tmp_path, monkeypatch, capsys):
    passages = load_corpus(demo_dir / "corpus.jsonl")
    head, tail = passages[:-10], passages[-10:]
    (tmp_path / "head.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in head))
    (tmp_path / "tail.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in tail + head[:2]))
    common = ["--retriever", tiny_models["retriever"], "--encode-dtype", "float32"]
    assert run(monkeypatch, capsys, "index", "--corpus", tmp_path / "head.jsonl", "--out", tmp_path / "s", *common)[0] == 0
    code, out, err = run(monkeypatch, capsys, "index", "--add", tmp_path / "tail.jsonl", "--out", tmp_path / "s", *common)
    assert code == 0, err
    assert "added 10 (skipped 2 whose id the store holds)" in out and "encoding added 10/10 passages" in err
    ret = Retriever.load(tiny_models["retriever"])
    q = questions(ret)
    every = ret.encode_passages([p.as_text() for p in passages])
    store = KnowledgeStore.load(tmp_path / "s")
    assert [p.id for p in store.passages] == [p.id for p in passages]
    assert np.array_equal(store.search(q, 5)[1], brute_force(every, q, 5))
    gone = [passages[3].id, passages[40].id, "no-such-id"]
    code, out, err = run(monkeypatch, capsys, "index", "--remove", ",".join(gone), "--out", tmp_path / "s", *common)
    assert code == 0 and "removed 2 (1 ids not in the store)" in out, err
    store = KnowledgeStore.load(tmp_path / "s")
    keep = [i for i, p in enumerate(passages) if p.id not in gone]
    assert [p.id for p in store.passages] == [passages[i].id for i in keep]
    assert np.array_equal(np.array(keep)[store.search(q, 5)[1]], np.array(keep)[brute_force(every[keep], q, 5)])


def _moved(ret):
    import torch

    ret.share()
    with torch.no_grad():
        for p in ret.query_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ret._passage_fp = None


def test_rerank_refresh_keeps_the_store_and_ranks_candidates_by_fresh_embeddings(tiny_models, demo_dir):
    from fedrag.rag import RAGSystem

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ret = Retriever.load(tiny_models["retriever"], shared=True)
    passages = load_corpus(demo_dir / "corpus.jsonl")
    store = KnowledgeStore.build(passages, ret)
    rag = RAGSystem(Searcher(store, ret, refresh="rerank"))
    _moved(ret)
    assert rag.sync_store() is None and rag.store is store and rag.searcher.stale
    qs = [f"who was born in place {i}?" for i in range(6)]
    k = len(passages) // 4  # RERANK_DEPTH * k candidates = the whole store: the fresh ranking is exact
    fresh = ret.encode_passages([p.as_text() for p in passages])
    expected = brute_force(fresh, ret.encode_queries(qs).numpy(), k)
    got = [[passages.index(h.passage) for h in hs] for hs in rag.retrieve(qs, k)]
    assert np.array_equal(np.array(got), expected)
    assert not np.array_equal(np.array(got), brute_force(store.embeddings, ret.encode_queries(qs).numpy(), k))


def test_phase_refresh_reembeds_the_store(tiny_models, demo_dir):
    from fedrag.rag import RAGSystem

    ret = Retriever.load(tiny_models["retriever"], shared=True)
    store = KnowledgeStore.build(load_corpus(demo_dir / "corpus.jsonl"), ret)
    rag = RAGSystem(Searcher(store, ret, refresh="phase"))
    _moved(ret)
    cost = rag.sync_store()
    assert cost["reencoded_passages"] == len(store) and rag.store is not store and not rag.searcher.stale
    assert rag.store.fingerprint == ret.passage_fingerprint()


def test_the_refresh_setting_travels_and_resolves_per_context():
    from fedrag.federation.task import FedTask
    from fedrag.retrieve.search import resolve_refresh

    task = FedTask.from_config({**FedTask(strategy="ra-dit").to_config(), "index-refresh": "rerank"})
    assert FedTask(strategy="ra-dit").to_config()["index_refresh"] == "auto" and task.models.index_refresh == "rerank"
    assert resolve_refresh("auto", federated=True) == "rerank" and resolve_refresh("auto", federated=False) == "phase"
    assert resolve_refresh("phase", federated=True) == "phase"


def test_a_federated_retriever_defaults_to_an_adapter_at_the_adapters_rate():
    from fedrag.federation.task import FedTask
    from fedrag.retrieve.retriever import lora_default
    from fedrag.strategies.base import Phase
    from fedrag.train import TrainConfig, make_stage

    assert "retriever_lora" not in FedTask(strategy="ra-dit").to_config(), "unset: each side resolves its default"
    assert lora_default(None, federated=True) and not lora_default(None, federated=False)
    assert not lora_default(False, federated=True) and lora_default(True, federated=False)
    phase = Phase(make_stage("contrastive"))
    # the contrastive stage prefers 5e-5 for full weights; an adapter trains at 1e-3; the user's rate wins over both
    assert phase.config(TrainConfig()).lr_retriever == 5e-5
    assert phase.config(TrainConfig(), retriever_lora=True).lr_retriever == 1e-3
    assert phase.config(TrainConfig(), True, True).lr_retriever == 1e-3
    assert phase.config(TrainConfig(lr_retriever=2e-4), retriever_lora=True).lr_retriever == 2e-4


def test_the_encoding_cache_key_names_the_tokenizer_and_input_length(tiny_models, demo_dir):
    """Equal weights read through another vocabulary, or cut at another length, embed passages
    differently: their cached chunks must not be shared."""
    import torch

    from fedrag.retrieve.encode import corpus_key

    passages = load_corpus(demo_dir / "corpus.jsonl")
    ret = Retriever.load(tiny_models["retriever"])
    key = corpus_key(passages, ret, torch.float32)
    assert corpus_key(passages, Retriever.load(tiny_models["retriever"]), torch.float32) == key
    ret.passage_encoder.max_seq_length = 8
    assert corpus_key(passages, ret, torch.float32) != key
    ret.passage_encoder.max_seq_length = Retriever.load(tiny_models["retriever"]).passage_encoder.max_seq_length
    ret.passage_encoder.tokenizer.add_tokens(["zzzunseen"])
    assert corpus_key(passages, ret, torch.float32) != key


def test_progress_lines_give_rate_and_eta(capsys):
    from fedrag._progress import Progress

    bar = Progress(100, "encoding", bar=False)
    bar.update(40)
    bar.close()
    line = capsys.readouterr().err.strip()
    assert line.startswith("fedrag: encoding 40/100 passages (") and "/s, ETA " in line


def test_passage_table_reads_rows_lazily(tmp_path):
    from fedrag.retrieve.passage_table import write_passages

    rows = [Passage(f"id{i}", f"text {i}", f"title {i % 3}") for i in range(20000)]
    assert write_passages(tmp_path / "p.arrow", rows) == 20000
    table = PassageTable(tmp_path / "p.arrow")
    assert len(table) == 20000 and table[-1] == rows[-1] and table[12345] == rows[12345]
    assert table.position("id19999") == 19999 and table[3:5] == rows[3:5]
    with pytest.raises(IndexError):
        table[20000]
