"""A federated run's `cost.json`: what it moved, how long it took, and what each phase's
sites trained with."""

from __future__ import annotations

from dataclasses import asdict

from fedrag.federation.task import FedTask
from fedrag.retrieve.retriever import lora_default

# the training settings cost.json reports per phase (the rest are the task's, reported whole)
PHASE_SETTINGS = (
    "batch_size",
    "lr_generator",
    "lr_retriever",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "grad_accum",
    "scheduler",
)


def run_summary(history: list, wall: float, task: FedTask, plan) -> dict:
    """Totals over the rounds in `history`, the largest one site's message (to it or back)
    in any round, the task, and each phase's settings as its sites trained with them (the
    task's, the stage's defaults and the phase's overrides)."""
    sent = [h.get("bytes_sent", 0) + h.get("context_bytes_sent", 0) for h in history]
    per_site = [s / max(h.get("sites", 1), 1) for s, h in zip(sent, history)]
    per_site += [h.get("bytes_received", 0) / max(h.get("replies", 1), 1) for h in history]
    lora = lora_default(task.models.retriever_lora, True)
    return {
        "strategy": task.models.strategy or task.models.stage,
        "wall_s": wall,
        "rounds": len(history),
        "bytes_sent": sum(sent),
        "bytes_received": sum(h.get("bytes_received", 0) for h in history),
        "bytes_per_site_round": max(per_site, default=0),
        "task": task.to_config(),
        "phases": [
            {
                "stage": p.name,
                **{k: v for k, v in asdict(p.config(task.train_config(), True, lora)).items() if k in PHASE_SETTINGS},
            }
            for p in plan.phases
        ],
    }
