"""FedProx's proximal term (Li et al. 2020): `mu/2 · ||w - w_ref||²`, which keeps a
federated site's weights near the round's global ones."""

from __future__ import annotations

import torch


class ProximalTerm:
    """`mu/2 · ||w - w_ref||²` over the trainable `params` named in `reference`. Under
    `torchrun` each of the `world` processes adds its share, so the summed gradients carry
    the term once."""

    def __init__(self, reference: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], mu: float, world: int):
        self.ref = {n: t.to(p.device) for n, t in reference.items() for p in [params[n]]}
        self.params = params
        self.weight = mu / 2 / world

    @classmethod
    def of(cls, reference: dict | None, params: dict, mu: float, world: int) -> ProximalTerm | None:
        """The term, or None without a reference or with `mu` 0 (plain FedAvg)."""
        if not mu >= 0:  # NaN too
            from fedrag.errors import FedragError

            raise FedragError(f"the proximal term's mu must be >= 0, got {mu}")
        return cls(reference, params, mu, world) if (reference and mu) else None

    def __call__(self) -> torch.Tensor:
        return self.weight * sum(((self.params[n] - r) ** 2).sum() for n, r in self.ref.items())
