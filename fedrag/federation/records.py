"""Named tensors ↔ Flower ArrayRecord, and what a message weighs."""

from __future__ import annotations

from collections import OrderedDict

import torch


def to_record(state: dict[str, torch.Tensor]):
    """An ArrayRecord from named tensors (Flower serialises each as an ``Array``)."""
    from flwr.app import ArrayRecord

    return ArrayRecord(OrderedDict((n, t.detach().cpu().contiguous()) for n, t in state.items()))


def from_record(record) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())


def record_bytes(record) -> int:
    """Payload bytes of an ArrayRecord (the serialised tensors)."""
    return int(sum(len(a.data) for a in record.values()))
