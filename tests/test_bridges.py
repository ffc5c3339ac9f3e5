"""A fedrag-tuned system inside LangChain and LlamaIndex: the frameworks see the same top-k
passages and the same answers as fedrag itself."""

import pytest

from fedrag.data import load_qa
from fedrag.generate.decoding import GenerationSettings

# qdrant-client's version check of an unreachable server warns from a thread, during a later test
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")


def _trained(strategy: str, tiny_models, demo_dir, out):
    """`strategy` trained a step per phase on the demo data and saved to `out`, as a user would."""
    from fedrag.pipeline import build_training_rag
    from fedrag.strategies import make_strategy, save_outputs
    from fedrag.train import TrainConfig

    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    plan = make_strategy(strategy, top_k=2)
    results = plan.run(rag, load_qa(demo_dir / "train.jsonl")[:8], TrainConfig(steps=1, batch_size=2))
    save_outputs(rag, out, results, plan.name, decoding=plan.decoding)
    return out


@pytest.fixture(scope="module")
def tuned(tiny_models, demo_dir, tmp_path_factory):
    """One RALT step (LoRA) and one contrastive step, saved and loaded back as a user would."""
    from fedrag.pipeline import build_rag

    out = _trained("independent", tiny_models, demo_dir, tmp_path_factory.mktemp("tuned"))
    return build_rag(
        str(demo_dir / "corpus.jsonl"),
        str(out / "retriever"),
        str(out / "generator"),
        top_k=2,
        settings=GenerationSettings(max_new_tokens=4),
    )


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
    assert (
        FedragLLM(tuned).complete("Question: who?").text
        == tuned.generator.generate(["Question: who?"], settings=tuned.settings)[0]
    )


# --- user mistakes: each is one FedragError line, at construction where it can be --------


@pytest.fixture(scope="module")
def retrieval_only(demo_dir):
    """A BM25 system without a generator: no model loads, so these checks stay cheap."""
    from fedrag.pipeline import build_rag

    return build_rag(str(demo_dir / "corpus.jsonl"), None, "none", retrieval="bm25", top_k=2)


def _one_line_error(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert all(p in msg for p in parts), msg
    return msg


def _vectors(n=6, dim=4):
    import numpy as np

    v = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_fedrag_exports_qdrant_index_and_imports_without_qdrant_client():
    """``fedrag.QdrantIndex`` (the README's name) exists; without the extra, ``import fedrag``
    and the constructor work and the first build names the extra to install."""
    import subprocess
    import sys

    import fedrag
    from fedrag.retrieve import QdrantIndex

    assert fedrag.QdrantIndex is QdrantIndex and "QdrantIndex" in dir(fedrag)
    code = (
        "import sys; sys.modules['qdrant_client'] = None\n"
        "import numpy as np, fedrag\nfrom fedrag.errors import FedragError\n"
        "index = fedrag.QdrantIndex()\n"
        "try:\n    index.build(np.zeros((2, 4), np.float32))\nexcept FedragError as exc:\n    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("refused:")]
    assert "pip install fedrag[qdrant]" in line


@pytest.mark.parametrize("case", ["file", "data-directory", "open-elsewhere", "path-and-url"])
def test_a_bad_qdrant_path_is_one_store_error(case, tmp_path):
    from fedrag.errors import StoreError
    from fedrag.retrieve import QdrantIndex

    path = tmp_path / "qdrant"
    keep = None
    if case == "file":
        path.write_text("not a directory")
    elif case == "data-directory":  # e.g. the corpus' folder: Qdrant would write its files among the user's
        path.mkdir()
        (path / "corpus.jsonl").write_text("{}\n")
    elif case == "open-elsewhere":  # local mode: one client per folder
        keep = QdrantIndex(path=path).build(_vectors())
    with pytest.raises(StoreError) as exc:
        QdrantIndex(path=path, url="http://localhost:6333" if case == "path-and-url" else None).build(_vectors())
    _one_line_error(exc, "QdrantIndex" if case == "path-and-url" else str(path))
    if case == "data-directory":
        assert sorted(p.name for p in path.iterdir()) == ["corpus.jsonl"], "the user's directory is untouched"
    if keep is not None:
        keep.client.close()  # frees the folder's lock


def test_an_unreachable_qdrant_server_is_one_store_error():
    import socket

    from fedrag.errors import StoreError
    from fedrag.retrieve import QdrantIndex

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(StoreError) as exc:
        QdrantIndex(url=url).build(_vectors())
    _one_line_error(exc, url)


@pytest.mark.parametrize("kind", ["qdrant", "faiss"])
def test_an_index_searched_before_build_is_one_store_error(kind):
    from fedrag.errors import StoreError
    from fedrag.retrieve import FaissIndex, QdrantIndex

    index = QdrantIndex() if kind == "qdrant" else FaissIndex()
    with pytest.raises(StoreError) as exc:
        index.search(_vectors(1), 1)
    _one_line_error(exc, "search before build")


def test_without_a_generator_both_bridges_refuse_alike(retrieval_only):
    """LangChain's and LlamaIndex's LLM and LlamaIndex's query engine: the same one line,
    when built (not an AttributeError, nor the answer "None", on the first query)."""
    from fedrag.bridges import langchain as lc
    from fedrag.bridges import llama_index as li
    from fedrag.errors import FedragError

    messages = set()
    for make in (
        lambda: lc.FedragLLM(rag=retrieval_only),
        lambda: li.FedragLLM(retrieval_only),
        lambda: li.as_query_engine(retrieval_only),
    ):
        with pytest.raises(FedragError) as exc:
            make()
        messages.add(_one_line_error(exc, "no generator"))
    assert len(messages) == 1, messages


@pytest.mark.parametrize("bridge", ["langchain", "llama_index"])
@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True])
def test_a_bad_k_is_refused_at_construction(bridge, k, retrieval_only):
    """``k=0`` used to fall back to the system's ``top_k`` without a word."""
    import importlib

    from fedrag.errors import FedragError

    module = importlib.import_module(f"fedrag.bridges.{bridge}")
    with pytest.raises(FedragError) as exc:
        module.FedragRetriever(retrieval_only, k=k)
    _one_line_error(exc, "k must be an integer >= 1", repr(k))


def test_langchain_takes_rag_positionally_and_a_numpy_k(retrieval_only, demo_dir):
    """As the LlamaIndex bridge does: ``FedragRetriever(rag, k=...)`` (was a raw TypeError)."""
    import numpy as np

    from fedrag.bridges.langchain import FedragRetriever

    q = _questions(demo_dir)[0]
    (hits,) = retrieval_only.retrieve([q], 1)
    assert [d.id for d in FedragRetriever(retrieval_only, k=np.int64(1)).invoke(q)] == [hits[0].passage.id]


@pytest.mark.parametrize("make", ["lc-retriever", "lc-retriever-no-rag", "lc-llm", "li-retriever", "li-llm", "li-engine"])
def test_what_is_not_a_rag_system_is_refused_at_construction(make):
    """E.g. a run's path where the system built from it belongs."""
    from fedrag.bridges import langchain as lc
    from fedrag.bridges import llama_index as li
    from fedrag.errors import FedragError

    path = "runs/ra-dit"
    build = {
        "lc-retriever": lambda: lc.FedragRetriever(rag=path),
        "lc-retriever-no-rag": lambda: lc.FedragRetriever(k=2),
        "lc-llm": lambda: lc.FedragLLM(rag=path),
        "li-retriever": lambda: li.FedragRetriever(path),
        "li-llm": lambda: li.FedragLLM(path),
        "li-engine": lambda: li.as_query_engine(path),
    }[make]
    with pytest.raises(FedragError) as exc:
        build()
    _one_line_error(exc, "rag must be a fedrag RAGSystem")


def test_a_query_that_is_not_text_is_one_fedrag_error(retrieval_only, tuned):
    from fedrag.bridges.langchain import FedragRetriever
    from fedrag.bridges.llama_index import as_query_engine
    from fedrag.errors import FedragError

    for ask in (lambda: FedragRetriever(rag=retrieval_only).invoke(None), lambda: as_query_engine(tuned).query(None)):
        with pytest.raises(FedragError) as exc:
            ask()
        _one_line_error(exc, "the query must be a string, got NoneType")


@pytest.fixture(scope="module")
def token_tuned(tiny_models, demo_dir, tmp_path_factory):
    """A joint-token output loaded with no decoding given: the RAG-Token decoding it recorded applies."""
    from fedrag.pipeline import build_rag

    out = _trained("joint-token", tiny_models, demo_dir, tmp_path_factory.mktemp("token"))
    return out, build_rag(str(demo_dir / "corpus.jsonl"), str(out / "retriever"), str(out / "generator"), top_k=2)


def test_the_bridges_answer_with_the_decoding_the_generator_recorded(token_tuned, demo_dir):
    """The reference is read from the saved generator's file and decoded with explicit
    settings; concat (the default a bridge would fall back to) answers otherwise, so a
    bridge that ignored the recorded decoding fails here."""
    import json
    from dataclasses import replace

    from fedrag.bridges.llama_index import as_query_engine

    out, rag = token_tuned
    recorded = json.loads((out / "generator" / "fedrag_decoding.json").read_text())
    assert recorded["decoding"] == "rag-token"
    questions = [e.question for e in load_qa(demo_dir / "test.jsonl")[:6]]
    hits = [hs[:2] for hs in rag.retrieve(questions, 2)]

    def decode(settings):
        before = rag.settings
        rag.settings = settings
        try:
            return rag.decode(questions, hits, 8)
        finally:
            rag.settings = before

    explicit = GenerationSettings(decoding="rag-token", gamma=recorded["gamma"])
    expected = decode(replace(explicit, max_new_tokens=rag.settings.max_new_tokens))
    concat = decode(replace(explicit, decoding="concat", max_new_tokens=rag.settings.max_new_tokens))
    assert expected != concat, "the two decodings must tell a bridge's choice apart on these questions"
    engine = as_query_engine(rag)
    assert [str(engine.query(q)) for q in questions] == expected
