"""A stage's optimizer and learning-rate schedule: AdamW with one parameter group per side
(its own learning rate), any transformers scheduler with warmup, continued where a
federated site's earlier rounds left it."""

from __future__ import annotations

import torch

from fedrag.train.checkpoint import export_optimizer_state, import_optimizer_state
from fedrag.train.config import TrainConfig


def make_optimizer(params: dict[str, torch.nn.Parameter], cfg: TrainConfig):
    """AdamW over `params`: the retriever's and the generator's each at their own learning rate."""
    groups = []
    for side, lr in (("retriever.", cfg.lr_retriever), ("generator.", cfg.lr_generator)):
        ps = [p for n, p in params.items() if n.startswith(side)]
        if ps:
            groups.append({"params": ps, "lr": lr, "weight_decay": cfg.weight_decay})
    return torch.optim.AdamW(groups)


def optimizer_and_schedule(
    params: dict[str, torch.nn.Parameter], cfg: TrainConfig, total: int, moments: dict[str, torch.Tensor] | None
):
    """The optimizer and scheduler for a stage of `total` steps. The schedule spans
    `cfg.schedule_total` steps when that is longer and starts at `cfg.schedule_offset`
    (federated round r continues the schedule of rounds < r); `moments` (see
    [`export_optimizer_state`][fedrag.train.checkpoint.export_optimizer_state]) start AdamW
    where it stopped."""
    from transformers import get_scheduler

    opt = make_optimizer(params, cfg)
    horizon = max(total, cfg.schedule_total or 0)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=int(cfg.warmup_ratio * horizon), num_training_steps=horizon)
    opt.zero_grad(set_to_none=True)  # a model trained before in this process keeps its last gradients
    for _ in range(cfg.schedule_offset):
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
