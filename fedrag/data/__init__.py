"""Data: record types, the JSONL contract, converters, the synthetic demo set."""

from fedrag.data.jsonl import check_gold_ids, load_corpus, load_qa, write_jsonl
from fedrag.data.hf import load_hf
from fedrag.data.types import Example, Passage

__all__ = ["Example", "Passage", "check_gold_ids", "load_corpus", "load_hf", "load_qa", "write_jsonl"]
