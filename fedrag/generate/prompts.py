"""Prompts built from a question and retrieved passages, through the chat template."""

from __future__ import annotations

import re

from fedrag.data.types import Passage

# "[4] ", "(2) ", "1. ", "3) ", "- ": the numbered passage list of the prompt, continued
_LIST_MARKER = re.compile(r"^\s*(?:\[\d{1,2}\]|\(\d{1,2}\)|\d{1,2}[.)]|[-*\u2022])\s+(?=\S)")

SYSTEM = "Answer the question using the context. Reply with the short answer only, no full sentence."


def context_block(passages: list[Passage], max_chars: int = 1200) -> str:
    lines = []
    for i, p in enumerate(passages, 1):
        text = p.text if len(p.text) <= max_chars else p.text[:max_chars].rsplit(" ", 1)[0] + " ..."
        lines.append(f"[{i}] {p.title}: {text}" if p.title else f"[{i}] {text}")
    return "\n".join(lines)


def build_prompt(tokenizer, question: str, passages: list[Passage], system: str = SYSTEM) -> str:
    """The generation prompt as text, ending where the answer starts.

    Uses the tokenizer's chat template when it has one (system + user turn, then the
    assistant header); otherwise a plain `Context: / Question: / Answer:` layout.
    """
    user = (f"Context:\n{context_block(passages)}\n\n" if passages else "") + f"Question: {question}"
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system}\n{user}\nAnswer: "


def clean_answer(text: str) -> str:
    """A generated answer without the list marker a model trained on numbered contexts
    sometimes starts it with ("[4] NP-intermediate problems" -> "NP-intermediate problems",
    "1. 1974" -> "1974"), and without surrounding whitespace. A marker must be followed by
    a space and more text, so "1990." or "3" stay as they are."""
    return _LIST_MARKER.sub("", text.strip(), count=1).strip()
