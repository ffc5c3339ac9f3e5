"""Generation and answer scoring with a causal LM."""

from fedrag.generate.generator import AnswerScores, Generator, add_lora
from fedrag.generate.prompts import build_prompt

__all__ = ["AnswerScores", "Generator", "add_lora", "build_prompt"]
