"""fedrag: fine-tune Retrieval-Augmented Generation systems centrally or with Flower.

Pipeline: data → retrieve (store, retriever) → generate/score (generator) → losses →
train (stages) → strategies → federation (converter to Flower).
"""

from fedrag._env import apply_defaults

apply_defaults()

from fedrag.data import Example, Passage  # noqa: E402
from fedrag.generate import Generator  # noqa: E402
from fedrag.rag import RAGSystem  # noqa: E402
from fedrag.retrieve import KnowledgeStore, Retriever, Searcher  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Example", "Generator", "KnowledgeStore", "Passage", "RAGSystem", "Retriever", "Searcher"]
