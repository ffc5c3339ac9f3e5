"""The documentation site builds with `mkdocs build --strict` (every page, link and API
reference entry resolves), and the results page shows the plots drawn from benchmark JSON."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_site_builds_strictly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("load_hf", "KnowledgeStore", "QdrantIndex", "train_stage", "FedTask", "as_query_engine"):
        assert name in api, f"the API reference documents {name}"
    results = (tmp_path / "site" / "results" / "index.html").read_text()
    for img in ("quality_vs_cost_hotpotqa.png", "quality_vs_cost_squad.png", "fed_vs_central_by_round.png"):
        assert img in results and (tmp_path / "site" / "img" / img).is_file(), img
