import numpy as np
import pytest

from fedrag.data import load_corpus, load_qa
from fedrag.errors import StoreError
from fedrag.evaluate import recall_at_k
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher


@pytest.fixture(scope="module")
def setup(tiny_models, demo_dir):
    retriever = Retriever.load(tiny_models["retriever"])
    passages = load_corpus(demo_dir / "corpus.jsonl")
    return retriever, passages, KnowledgeStore.build(passages, retriever)


def test_store_matches_plain_sentence_transformers_and_faiss(setup, demo_dir):
    import faiss
    from sentence_transformers import SentenceTransformer

    retriever, passages, store = setup
    qa = load_qa(demo_dir / "test.jsonl")
    plain = SentenceTransformer(retriever.name, device="cpu")
    emb = plain.encode([p.as_text() for p in passages], normalize_embeddings=True)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    _, ref = index.search(plain.encode([e.question for e in qa], normalize_embeddings=True), 5)
    ours = Searcher(store, retriever).search([e.question for e in qa], 5)
    r_ref = np.mean([recall_at_k([passages[i].id for i in row], e.gold_ids, 5) for row, e in zip(ref, qa)])
    r_ours = np.mean([recall_at_k([h.passage.id for h in hits], e.gold_ids, 5) for hits, e in zip(ours, qa)])
    assert abs(r_ref - r_ours) < 1e-9


def test_save_load_roundtrip_and_encoder_checks(setup, tmp_path, tiny_models):
    retriever, passages, store = setup
    store.save(tmp_path / "idx")
    loaded = KnowledgeStore.load(tmp_path / "idx", retriever=retriever)
    q = retriever.encode_queries(["Where was someone born?"])
    assert np.array_equal(loaded.search(q, 4)[1], store.search(q, 4)[1])
    # a different encoder (other weights) must be refused
    other = Retriever.load(tiny_models["retriever"])
    with __import__("torch").no_grad():
        next(other.passage_encoder.parameters()).add_(1.0)
    other._passage_fp = None
    with pytest.raises(StoreError, match="rebuild the index"):
        KnowledgeStore.load(tmp_path / "idx", retriever=other)


def test_dimension_mismatch_empty_store_and_k_clamp(setup):
    retriever, passages, store = setup
    with pytest.raises(StoreError, match="query dimension 7 does not match"):
        store.search(np.zeros((1, 7), dtype=np.float32), 3)
    empty = KnowledgeStore([], np.zeros((0, store.dim), dtype=np.float32))
    with pytest.raises(StoreError, match="empty knowledge store"):
        empty.search(np.zeros((1, store.dim), dtype=np.float32), 3)
    scores, pos = store.search(retriever.encode_queries(["x"]), 10_000)
    assert pos.shape == (1, len(store)) and (pos >= 0).all()


def test_embedding_cache_is_reused(setup, monkeypatch):
    retriever, passages, store = setup

    def no_encode(*a, **k):
        raise AssertionError("cache miss: corpus re-encoded")

    monkeypatch.setattr(retriever.passage_encoder, "encode", no_encode)
    again = KnowledgeStore.build(passages, retriever)
    assert np.array_equal(again.embeddings, store.embeddings)
    with pytest.raises(AssertionError, match="cache miss"):
        KnowledgeStore.build(passages, retriever, use_cache=False)


def test_bm25_and_hybrid(setup, demo_dir):
    retriever, passages, store = setup
    qa = load_qa(demo_dir / "test.jsonl")
    questions = [e.question for e in qa]
    bm25 = Searcher(store, None, "bm25").search(questions, 5)
    hybrid = Searcher(store, retriever, "hybrid").search(questions, 5)
    r = lambda res: np.mean([recall_at_k([h.passage.id for h in hs], e.gold_ids, 5) for hs, e in zip(res, qa)])  # noqa: E731
    assert r(bm25) > 0.8, "names are rare tokens: BM25 must find the person's passages"
    assert all(len(h) == 5 for h in hybrid) and r(hybrid) > 0.5


def test_query_embeddings_are_differentiable(setup):
    retriever = setup[0]
    q = retriever.encode_queries(["Where was Varn born?"], grad=True)
    q.sum().backward()
    grads = [p.grad for p in retriever.query_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in retriever.passage_encoder.parameters())
    retriever.query_encoder.zero_grad(set_to_none=True)


def test_a_qdrant_backed_store_returns_the_faiss_stores_top_k(setup, demo_dir, tmp_path):
    """Qdrant's embedded local mode (a directory, no server) against the default FAISS index."""
    from fedrag.retrieve import QdrantIndex

    retriever, passages, store = setup
    questions = [e.question for e in load_qa(demo_dir / "test.jsonl")]
    qdrant = KnowledgeStore(
        passages, store.embeddings, store.encoder, store.fingerprint, index=QdrantIndex(path=str(tmp_path / "qdrant"))
    )
    ours, theirs = Searcher(store, retriever).search(questions, 5), Searcher(qdrant, retriever).search(questions, 5)
    for a, b in zip(ours, theirs):
        ids_a, ids_b = [h.passage.id for h in a], [h.passage.id for h in b]
        sa, sb = np.array([h.score for h in a]), np.array([h.score for h in b])
        assert np.allclose(sa, sb, atol=1e-5)
        assert ids_a == ids_b, "same top-5, same order"
    assert (tmp_path / "qdrant").is_dir(), "the vectors live in Qdrant's local store on disk"
    again = qdrant.reencoded(retriever)  # a re-encoded store searches its own collection
    assert again.index.collection != qdrant.index.collection
    assert [h.passage.id for h in Searcher(qdrant, retriever).search(questions[:3], 5)[0]] == [h.passage.id for h in theirs[0]]


def test_a_lora_retriever_trains_only_its_adapter_and_saves_merged(tiny_models, demo_dir, tmp_path):
    import torch

    from fedrag.pipeline import build_training_rag
    from fedrag.train import ContrastiveStage, TrainConfig, get_state, train_stage

    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], "none", retriever_lora=True)
    before = {n: p.detach().clone() for n, p in rag.retriever.query_encoder.named_parameters()}
    q = ["Where was someone born?"]
    start = rag.retriever.encode_queries(q)
    assert torch.allclose(start, Retriever.load(tiny_models["retriever"]).encode_queries(q), atol=1e-6), (
        "the adapter starts at zero: the retriever starts as its base model"
    )
    train_stage(
        ContrastiveStage(top_k=2, train_passages=False),
        rag,
        load_qa(demo_dir / "train.jsonl")[:8],
        TrainConfig(steps=2, batch_size=4, lr_retriever=1e-2),
    )
    state = get_state(rag, ("retriever",))
    assert state and all("lora_" in n for n in state), "only the adapter is the retriever's trainable state"
    after = dict(rag.retriever.query_encoder.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n), "base weights frozen"
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_" in n)
    moved = rag.retriever.encode_queries(q)
    assert not torch.allclose(moved, start, atol=1e-4)
    rag.retriever.save(tmp_path / "ret")
    loaded = Retriever.load(str(tmp_path / "ret"))
    assert not loaded.is_lora and torch.allclose(loaded.encode_queries(q), moved, atol=1e-5), "saved merged"
    assert loaded.passage_fingerprint() == rag.retriever.passage_fingerprint(), "the index stays valid"
