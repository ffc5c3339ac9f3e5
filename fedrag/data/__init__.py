"""Data: record types, the JSONL contract, converters, the synthetic demo set."""

from fedrag.data.jsonl import as_dataset, check_gold_ids, load_corpus, load_qa, write_jsonl
from fedrag.data.types import Example, Passage

__all__ = ["Example", "Passage", "as_dataset", "check_gold_ids", "load_corpus", "load_qa", "write_jsonl"]
