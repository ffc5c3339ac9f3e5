"""Named tensors ↔ Flower ArrayRecord, and what a message weighs.

On the wire ([`to_wire`][to_wire] / [`from_wire`][from_wire]) a stage's tensors travel *packed*: one
flat array per dtype, the tensors in name order. Both ends know the layout (names,
shapes, dtypes: the phase's trainable set), so nothing but the numbers travels. Flower
sends every Array of a message as its own object (one HTTP request per object and
hop); SmolLM2's LoRA adapter is 420 tensors, and packed it is a handful of 5 MB
chunks (benchmarks/federated_overhead.py: the deployment round that carried them
one by one spent ~13 s pushing one site's reply).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the first tensor: a ClientApp that only forwards never needs it
    import torch

PACKED = "packed."  # key prefix of a packed array: packed.<dtype>


def to_record(state: dict[str, torch.Tensor]):
    """An ArrayRecord from named tensors, one `Array` each (site-local state)."""
    from flwr.app import ArrayRecord

    return ArrayRecord(OrderedDict((n, t.detach().cpu().contiguous()) for n, t in state.items()))


def from_record(record) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())


def _dtype(t) -> str:
    return str(t.dtype).replace("torch.", "")


def tensor_spec(state: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{name: (shape, dtype)}` of named torch tensors, as Flower's Arrays report them: a
    phase's layout, which the server and each site derive from the same trainable set."""
    return {n: (tuple(t.shape), _dtype(t)) for n, t in state.items()}


def pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`{"packed.<dtype>": 1-D tensor}`: each dtype's tensors flattened in name order."""
    import torch

    groups: dict[str, list[torch.Tensor]] = {}
    for name in sorted(state):
        t = state[name]
        groups.setdefault(PACKED + _dtype(t), []).append(t.detach().cpu().reshape(-1))
    return {key: torch.cat(parts) for key, parts in groups.items()}


def unpack(packed: dict[str, torch.Tensor], layout: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """Inverse of [`pack`][pack] for `layout` (`{name: (shape, dtype)}`, as
    [`tensor_spec`][tensor_spec] gives). Sizes must match exactly."""
    out, offsets = {}, {}
    for name in sorted(layout):
        shape, dtype = layout[name]
        key = PACKED + dtype
        if key not in packed:
            raise ValueError(f"packed arrays lack '{key}' (tensor '{name}')")
        n = math.prod(shape)
        start = offsets.get(key, 0)
        out[name] = packed[key][start : start + n].reshape(shape)
        offsets[key] = start + n
    for key, flat in packed.items():
        if offsets.get(key, 0) != flat.numel():
            raise ValueError(f"'{key}' holds {flat.numel()} values, the layout {offsets.get(key, 0)}")
    return out


def packed_spec(layout: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The packed arrays' `{key: ((size,), dtype)}` for `layout`."""
    sizes: dict[str, int] = {}
    for shape, dtype in layout.values():
        sizes[PACKED + dtype] = sizes.get(PACKED + dtype, 0) + math.prod(shape)
    return {key: ((n,), key[len(PACKED) :]) for key, n in sizes.items()}


def to_wire(state: dict[str, torch.Tensor]):
    """The ArrayRecord a message carries: `state` packed."""
    return to_record(pack(state))


def from_wire(record, layout) -> dict[str, torch.Tensor]:
    """Named tensors from a message's packed ArrayRecord."""
    return unpack(from_record(record), layout)


def record_bytes(record) -> int:
    """Payload bytes of an ArrayRecord (the serialised tensors)."""
    return int(sum(len(a.data) for a in record.values()))
