"""Model cards for saved models: what trained them, in words a reader can check.

peft and sentence-transformers write their own `README.md` templates, which name the
base model by the absolute path it was loaded from and leave the training blank. fedrag
replaces them with a card that names the base model as the user gave it, the strategy,
each phase's stage, steps and examples, the last training loss and, for a federated run,
the sites and rounds. No machine path appears in it.
"""

from __future__ import annotations

from pathlib import Path

from fedrag._io import atomic_write_text


def public_name(model: str) -> str:
    """A model argument as a card may show it: a bundled name or Hub id as given; a local
    path by its last component only."""
    p = Path(model)
    return p.name if (p.is_absolute() or model.startswith((".", "~")) or p.exists()) else model


def write_model_card(
    model_dir: str | Path,
    *,
    role: str,
    base: str,
    strategy: str,
    phases: list[dict],
    trained: bool | None = None,
    lora: bool = False,
    decoding: str | None = None,
    federated: dict | None = None,
) -> None:
    """Write `model_dir/README.md`.

    Args:
        model_dir: the saved model's folder.
        role: `"generator"` or `"retriever"`.
        base: the base model argument the run loaded (a path is shown by its last part).
        strategy: the strategy (or stage) name.
        phases: one dict per phase with `stage`, `steps`, `examples` and, when known, `final_loss`.
        trained: whether a phase trained this model (None: not known).
        lora: the folder holds a LoRA adapter over `base`.
        decoding: how the generator must be decoded (concat, rag-sequence, rag-token).
        federated: for a federated run, `{"sites": N, "rounds": R, "local_steps": S, "aggregator": A}`
            (`sites`: the fewest a round needs).
    """
    library = "peft" if lora else ("sentence-transformers" if role == "retriever" else "transformers")
    lines = [
        "---",
        f"library_name: {library}",
        f"base_model: {public_name(base)}",
        f"tags: [fedrag, retrieval-augmented-generation, {strategy}]",
        "---",
        "",
        f"# {public_name(base)}, {role} saved by fedrag",
        "",
    ]
    how = "federated training" if federated else "centralized training"
    kind = "a LoRA adapter over" if lora else "the weights of"
    verb = {True: "trained by", False: "left untrained by", None: "saved after"}[trained]
    lines += [f"This folder holds {kind} `{public_name(base)}`, {verb} fedrag's `{strategy}` run ({how}).", ""]
    if federated:
        lines += [
            f"Rounds per phase: {federated.get('rounds', '?')}, with at least {federated.get('sites', '?')} sites a "
            f"round, {federated.get('local_steps', '?')} local steps each; aggregation: "
            f"{federated.get('aggregator', '?')}. Steps below are the global model's sequential steps.",
            "",
        ]
    lines += ["| phase | stage | optimizer steps | examples seen | last training loss |", "|---|---|---|---|---|"]
    for i, p in enumerate(phases, 1):
        loss = p.get("final_loss")
        lines.append(
            f"| {i} | {p.get('stage', '?')} | {p.get('steps', '?')} | {p.get('examples', '?')} | "
            f"{f'{loss:.4f}' if isinstance(loss, (int, float)) else '-'} |"
        )
    lines.append("")
    if decoding:
        lines += [
            f"Decode it as it was trained: `{decoding}` (recorded in `fedrag_decoding.json`, which `fedrag eval` reads).",
            "",
        ]
    lines += [
        "Evaluate it:",
        "",
        "```bash",
        f"fedrag eval --corpus CORPUS.jsonl --test TEST.jsonl --{role} THIS_FOLDER --metrics metrics.json",
        "```",
        "",
    ]
    atomic_write_text(Path(model_dir) / "README.md", "\n".join(lines))
