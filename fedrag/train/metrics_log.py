"""Where a stage's per-step records go: `metrics.jsonl` in its output directory, and the
experiment trackers `TrainConfig.report_to` names (one tracker run per stage)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from fedrag.train.config import TrainConfig


class MetricsLog:
    """metrics.jsonl, and the experiment trackers `cfg.report_to` names (one run per stage)."""

    def __init__(self, out: Path | None, stage: str, cfg: TrainConfig):
        from fedrag.train.tracking import Tracker

        self.path = out / "metrics.jsonl" if out else None
        if out:
            out.mkdir(parents=True, exist_ok=True)
        run_dir = Path(cfg.tracking_dir) / stage if cfg.tracking_dir else (out or Path("fedrag-runs"))
        self.tracker = Tracker(cfg.report_to, run_dir, f"{cfg.run_name or 'fedrag'}/{stage}", {"stage": stage, **asdict(cfg)})

    def truncate(self, step: int) -> list[dict]:
        """Drop records after `step` (a resumed run trains them again); return the rest."""
        if not (self.path and self.path.is_file()):
            return []
        keep = [r for r in map(json.loads, self.path.read_text().splitlines()) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        return keep

    def write(self, record: dict) -> None:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        self.tracker.log({k: v for k, v in record.items() if k != "step"}, record["step"])

    def close(self) -> None:
        self.tracker.close()
