"""A stage's optimizer and learning-rate schedule: AdamW with one parameter group per side
(its own learning rate), any transformers scheduler with warmup, continued where a
federated site's earlier rounds left it."""

from __future__ import annotations

import torch

from dataclasses import dataclass

from fedrag.train.checkpoint import export_optimizer_state, import_optimizer_state
from fedrag.train.config import TrainConfig


@dataclass(frozen=True)
class RoundWindow:
    """Where a federated site's round sits in its phase's learning-rate schedule: the
    schedule spans `total` optimizer steps (the phase's rounds × local steps) and the round
    starts `offset` steps in (round r at (r-1)·local steps), so the rounds together follow
    one schedule as central training of the same length would."""

    total: int
    offset: int = 0

    def __post_init__(self):
        from fedrag.errors import FedragError

        if self.total < 1 or not 0 <= self.offset < self.total:
            raise FedragError(f"a round's schedule window must start inside it, got offset {self.offset} of {self.total}")


def make_optimizer(params: dict[str, torch.nn.Parameter], cfg: TrainConfig):
    """AdamW over `params`: the retriever's and the generator's each at their own learning rate."""
    groups = []
    for side, lr in (("retriever.", cfg.lr_retriever), ("generator.", cfg.lr_generator)):
        ps = [p for n, p in params.items() if n.startswith(side)]
        if ps:
            groups.append({"params": ps, "lr": lr, "weight_decay": cfg.weight_decay})
    return torch.optim.AdamW(groups)


def optimizer_and_schedule(
    params: dict[str, torch.nn.Parameter],
    cfg: TrainConfig,
    total: int,
    moments: dict[str, torch.Tensor] | None,
    window: RoundWindow | None = None,
):
    """The optimizer and scheduler for a stage of `total` steps. Inside a federated round's
    `window` the schedule spans `window.total` steps when that is longer and starts at
    `window.offset` (round r continues the schedule of rounds < r); `moments` (see
    [`export_optimizer_state`][fedrag.train.checkpoint.export_optimizer_state]) start AdamW
    where it stopped."""
    from transformers import get_scheduler

    opt = make_optimizer(params, cfg)
    window = window or RoundWindow(total)
    horizon = max(total, window.total)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=int(cfg.warmup_ratio * horizon), num_training_steps=horizon)
    opt.zero_grad(set_to_none=True)  # a model trained before in this process keeps its last gradients
    for _ in range(window.offset):
        opt.step()  # no grads (cleared above): a no-op for AdamW, keeps torch's scheduler-order check quiet
        sched.step()
    if moments:
        import_optimizer_state(opt, params, moments)
    return opt, sched


def hand_back_moments(opt, params: dict[str, torch.nn.Parameter], moments: dict[str, torch.Tensor]) -> None:
    """Replace `moments` in place with AdamW's final ones: a federated site passes the same
    dict every round, so its optimizer continues instead of restarting."""
    moments.clear()
    moments.update(export_optimizer_state(opt, params))
