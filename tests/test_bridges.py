"""A fedrag-tuned system inside LangChain and LlamaIndex: the frameworks see the same top-k
passages and the same answers as fedrag itself."""

import pytest

from fedrag.data import load_qa
from fedrag.generate.decoding import GenerationSettings


@pytest.fixture(scope="module")
def tuned(tiny_models, demo_dir, tmp_path_factory):
    """One RALT step (LoRA) and one contrastive step, saved and loaded back as a user would."""
    from fedrag.pipeline import build_rag, build_training_rag
    from fedrag.strategies import make_strategy, save_outputs
    from fedrag.train import TrainConfig

    out = tmp_path_factory.mktemp("tuned")
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    plan = make_strategy("independent", top_k=2)
    results = plan.run(rag, load_qa(demo_dir / "train.jsonl")[:8], TrainConfig(steps=1, batch_size=2))
    save_outputs(rag, out, results, plan.name, decoding=plan.decoding)
    return build_rag(str(demo_dir / "corpus.jsonl"), str(out / "retriever"), str(out / "generator"), top_k=2,
                     settings=GenerationSettings(max_new_tokens=4))


def _questions(demo_dir):
    return [e.question for e in load_qa(demo_dir / "test.jsonl")[:4]]


def test_langchain_retrieves_and_generates_as_fedrag(tuned, demo_dir):
    from fedrag.bridges.langchain import FedragLLM, FedragRetriever

    for q in _questions(demo_dir):
        (hits,) = tuned.retrieve([q], 3)
        docs = FedragRetriever(rag=tuned, k=3).invoke(q)
        assert [d.id for d in docs] == [h.passage.id for h in hits]
        assert [d.metadata["score"] for d in docs] == pytest.approx([h.score for h in hits])
    prompt = tuned.generator.prompt(q, [h.passage for h in hits[:2]])
    assert FedragLLM(rag=tuned).invoke(prompt) == tuned.generator.generate([prompt], settings=tuned.settings)[0]


def test_llama_index_retrieves_and_answers_as_fedrag(tuned, demo_dir):
    from fedrag.bridges.llama_index import FedragLLM, FedragRetriever, as_query_engine

    engine = as_query_engine(tuned)
    for q in _questions(demo_dir):
        (out,) = tuned.answer([q])
        nodes = FedragRetriever(tuned).retrieve(q)
        assert [n.node.node_id for n in nodes] == out.passage_ids[:2]
        response = engine.query(q)
        assert [n.node.node_id for n in response.source_nodes] == out.passage_ids[:2]
        assert str(response) == out.answer
    assert FedragLLM(tuned).complete("Question: who?").text == tuned.generator.generate(["Question: who?"],
                                                                                        settings=tuned.settings)[0]
