"""Phase-aware LR search, label-free retrieval metrics, and ``fedrag compare``."""

import json
from dataclasses import dataclass

import pytest

from fedrag.data import Example, load_qa
from fedrag.errors import FedragError
from fedrag.data.partition import evenly_spaced
from fedrag.evaluate import evaluate, paired_sign_test
from fedrag.pipeline import build_training_rag
from fedrag.rag import RAGSystem
from fedrag.strategies import Phase, Strategy
from fedrag.strategies.lr_search import search_lr
from fedrag.train import RAGSequenceStage, TrainConfig

from test_cli import run


@dataclass
class Counting:
    """A user-defined stage wrapping another: counts the optimizer steps it is trained for."""

    inner: object
    calls: int = 0

    @property
    def name(self):
        return self.inner.name

    @property
    def trains(self):
        return self.inner.trains

    @property
    def decoding(self):
        return self.inner.decoding

    def loss(self, rag, batch):
        self.calls += 1
        return self.inner.loss(rag, batch)


def _two_phase():
    gen, ret = (
        Counting(RAGSequenceStage(top_k=2, train_retriever=False)),
        Counting(RAGSequenceStage(top_k=2, train_generator=False)),
    )
    return Strategy("two-phase", [Phase(gen), Phase(ret)]), gen, ret


@pytest.fixture(scope="module")
def data(demo_dir):
    return load_qa(demo_dir / "train.jsonl")[:8], load_qa(demo_dir / "test.jsonl")[:3]


def test_two_phase_search_never_retrains_phase_one(tiny_models, demo_dir, data):
    train, val = data
    lrs_g, lrs_r = [1e-4, 1e-3], [1e-5, 1e-4, 1e-3]
    cfg = TrainConfig(steps=2, batch_size=2)
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    plan, gen, ret = _two_phase()
    report = search_lr(plan, rag, train, val, cfg, lrs_g, lrs_r, mode="phase-wise", top_k=2)
    g_runs, r_runs = gen.calls // cfg.steps, ret.calls // cfg.steps
    assert (g_runs, r_runs) == (len(lrs_g), len(lrs_r)), "phase 1 trained once per phase-1 point, never per phase-2 point"
    assert report["stage_runs"] == len(lrs_g) + len(lrs_r) and len(report["final_results"]) == 2
    assert report["best"]["lr_generator"] in lrs_g and report["best"]["lr_retriever"] in lrs_r
    assert [p["phase"] for p in report["points"]] == [0, 0, 1, 1, 1]
    # a point names only the rate its phase chose among: a retriever phase's lr_generator is unused
    assert [p["searched"] for p in report["points"]] == [["lr_generator"]] * 2 + [["lr_retriever"]] * 3
    assert report["final_cost"]["steps"] == 2 * cfg.steps


def test_a_choice_among_tied_points_is_reported_as_a_tie(tiny_models, demo_dir, data):
    """Equal rates train equal models: the search keeps the first and says it was a tie."""
    from fedrag.strategies.report import markdown_table

    train, val = data
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    plan, _, _ = _two_phase()
    report = search_lr(plan, rag, train, val, TrainConfig(steps=1, batch_size=2), [1e-4], [1e-5, 1e-5], top_k=2)
    assert report["chosen"] == ["lr_generator", "lr_retriever"] and report["ties"] == {"lr_retriever": 2}
    row = {"strategy": "two-phase", "train_s": 1.0, "train_flops": 1.0, "best_lrs": report["best"], "lr_ties": report["ties"]}
    text = markdown_table({"rows": [row]})
    assert "lr-generator 0.0001, lr-retriever 1e-05 (a tie of 2 points on validation: the first was kept)" in text, text


def test_a_searched_phase_that_keeps_its_best_validates_on_the_search_questions(tiny_models, demo_dir, data):
    """RA-DIT's LSR phase keeps its best by default: inside a search it is validated on the
    search's own questions, not on more questions taken out of its training set."""
    from fedrag.strategies import make_strategy

    train, val = data
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    report = search_lr(
        make_strategy("ra-dit", top_k=2), rag, train, val, TrainConfig(steps=1, batch_size=2), [1e-4], [1e-5], top_k=2
    )
    ralt, lsr = report["final_results"]
    assert ralt.best is None and lsr.best["val_questions"] == len(val) and not lsr.best["carved"]


def test_joint_search_is_the_2d_grid(tiny_models, demo_dir, data):
    train, val = data
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], tiny_models["generator"], top_k=2)
    stage = Counting(RAGSequenceStage(top_k=2))
    report = search_lr(
        Strategy("joint", [Phase(stage)]),
        rag,
        train,
        val,
        TrainConfig(steps=1, batch_size=2),
        [1e-4, 1e-3],
        [1e-5, 1e-4],
        top_k=2,
    )
    assert report["mode"] == "grid" and stage.calls == 4 and len(report["points"]) == 4
    assert all(p["searched"] == ["lr_generator", "lr_retriever"] for p in report["points"])


def test_without_gold_ids_answer_recall_replaces_recall(tiny_models, demo_dir, data):
    rag = build_training_rag(str(demo_dir / "corpus.jsonl"), tiny_models["retriever"], "none", top_k=3)
    test = [Example(e.id, e.question, e.answers) for e in data[1]]  # gold ids dropped
    m = evaluate(RAGSystem(rag.searcher, None, top_k=3), test, progress=False)
    assert "answer_recall@5" in m and not any(k.startswith("recall@") for k in m)
    # with gold ids both are reported, and answer-recall is computed from the passages' text
    m2 = evaluate(RAGSystem(rag.searcher, None, top_k=3), data[1], progress=False)
    assert "recall@5" in m2 and m2["answer_recall@20"] >= m2["answer_recall@1"]
    hit = rag.store.passages[rag.store.position(data[1][0].gold_ids[0])]
    from fedrag.evaluate import answer_recall_at_k

    assert answer_recall_at_k([hit.as_text()], data[1][0].answers, 1) == 1.0
    assert answer_recall_at_k(["nothing relevant"], data[1][0].answers, 1) == 0.0


def test_paired_sign_test_and_evenly_spaced_samples():
    assert paired_sign_test([0, 0, 0, 1], [1, 1, 1, 1]) == (3, 0, 0.25)  # 2 · (1/2)^3
    assert paired_sign_test([1, 0, 0.5], [0, 1, 0.5]) == (1, 1, 1.0)  # ties are dropped
    gained, lost, p = paired_sign_test([0.0] * 109, [1.0] * 48 + [-1.0] * 61)
    assert (gained, lost) == (48, 61) and abs(p - 0.2503) < 1e-3
    assert evenly_spaced(list(range(10)), 3) == [0, 3, 6] and evenly_spaced([1, 2], 5) == [1, 2]


def test_compare_writes_a_row_per_applicable_strategy_and_resumes(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    # the same data without gold ids: independent is skipped and said so
    def strip_gold(name):
        path = tmp_path / f"{name}_nogold.jsonl"
        path.write_text(
            "".join(
                json.dumps({"id": e.id, "question": e.question, "answers": list(e.answers)}) + "\n"
                for e in load_qa(demo_dir / f"{name}.jsonl")[:8]
            )
        )
        return path

    nogold, nogold_test = strip_gold("train"), strip_gold("test")
    args = [
        "compare",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--test",
        demo_dir / "test.jsonl",
        "--test-limit",
        "2",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--top-k",
        "2",
        "--max-new-tokens",
        "4",
    ]
    code, out, err = run(
        monkeypatch, capsys, *args, "--train", demo_dir / "train.jsonl", "--train-limit", "8", "--out", tmp_path / "c"
    )
    assert code == 0, err
    assert "ra-dit phase 2/2 (lsr): kept step" in err, "the LSR stage's keep-best says what it kept"
    result = json.loads((tmp_path / "c" / "compare.json").read_text())
    names = [r["strategy"] for r in result["rows"]]
    assert names == ["untuned", "independent", "two-phase", "joint-sequence", "joint-token", "ra-dit", "multi-task"]
    by = {r["strategy"]: r for r in result["rows"]}
    assert by["joint-token"]["decoding"] == "rag-token" and by["joint-sequence"]["decoding"] == "rag-sequence (fast)"
    assert by["independent"]["decoding"] == "concat" and by["ra-dit"]["decoding"] == "rag-token"
    assert all(r["train_s"] > 0 and r["train_flops"] > 0 for r in result["rows"][1:])
    assert all(0 <= r["precision@5"] <= 1 and 0 <= r["ndcg@10"] <= 1 for r in result["rows"]), "retrieval beside Recall@k"
    md = (tmp_path / "c" / "compare.md").read_text()
    assert md.count("\n| ") >= 7 and "## Advice" in md and (tmp_path / "c" / "compare.png").stat().st_size > 1000
    # per-question rows pair every strategy with the untuned pipeline and the best one
    untuned = [json.loads(x) for x in (tmp_path / "c" / "strategies" / "untuned.rows.jsonl").read_text().splitlines()]
    assert [q["id"] for q in untuned] == [e.id for e in evenly_spaced(load_qa(demo_dir / "test.jsonl"), 2)]
    best = max(result["rows"][1:], key=lambda r: r["f1"])["strategy"]
    for name, d in result["paired"].items():
        gained, lost, p = d["vs_untuned"]["f1"]
        assert d["best"] == best and gained + lost <= 2 and 0 < p <= 1 and ("vs_best" in d) == (name != best)
    assert set(result["paired"]) == set(names[1:]) and "Paired, question by question" in md
    # every row has its intervals; every trained one but the best its verdict against the best
    for r in result["rows"]:
        assert r["n"] == 2 and all(r[k][0] <= r[k][1] for k in ("em_ci", "f1_ci", "recall_ci")), r
        if r["strategy"] not in ("untuned", best):
            assert r["verdict"] in ("equivalent", "different", "inconclusive") and len(r["f1_diff_ci"]) == 2
            assert f"{r['strategy']}: F1" in md
    assert by[best]["verdict"] == "best" and "Verdicts" in md
    # resumed: nothing is trained again
    code, out, err = run(
        monkeypatch, capsys, *args, "--train", demo_dir / "train.jsonl", "--train-limit", "8", "--out", tmp_path / "c"
    )
    assert code == 0 and err.count("already finished") == 6, err
    args_nogold = [nogold_test if a == demo_dir / "test.jsonl" else a for a in args]
    code, out, err = run(
        monkeypatch, capsys, *args_nogold, "--train", nogold, "--out", tmp_path / "n", "--strategies", "independent,joint-token"
    )
    assert code == 0, err
    assert "skipping independent" in err and "gold passage ids" in err
    rows = json.loads((tmp_path / "n" / "compare.json").read_text())["rows"]
    assert (
        [r["strategy"] for r in rows] == ["untuned", "joint-token"] and "recall@5" not in rows[1] and "answer_recall@5" in rows[1]
    )
    # another choice of strategies reuses the finished rows; other settings in the same OUT are refused, not mixed
    code, out, err = run(
        monkeypatch, capsys, *args_nogold, "--train", nogold, "--out", tmp_path / "n", "--strategies", "joint-token"
    )
    assert code == 0 and "joint-token: already finished" in err and "training" not in err, err
    rows = json.loads((tmp_path / "n" / "compare.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["untuned", "joint-token"]
    other = [a if a != "4" else "3" for a in args_nogold]  # --max-new-tokens 3
    code, out, err = run(monkeypatch, capsys, *other, "--train", nogold, "--out", tmp_path / "n", "--strategies", "joint-token")
    assert code == 2 and "other settings" in err and "max_new_tokens" in err, err
    # the same paths with other content (a test file edited since) are refused, naming the input
    edited = nogold_test.read_text().splitlines()
    nogold_test.write_text("\n".join(edited[1:] + edited[:1]) + "\n")
    code, out, err = run(
        monkeypatch, capsys, *args_nogold, "--train", nogold, "--out", tmp_path / "n", "--strategies", "independent,joint-token"
    )
    assert code == 2 and "inputs.test" in err and "Traceback" not in err, err
    # from Python too: the library checks, not only the CLI
    from fedrag.data import load_corpus
    from fedrag.strategies.compare import CompareSettings, compare

    settings = CompareSettings(
        strategies=["joint-token"], retriever=tiny_models["retriever"], generator=tiny_models["generator"], top_k=2
    )
    with pytest.raises(FedragError, match="other settings or data"):
        compare(
            settings,
            load_corpus(demo_dir / "corpus.jsonl"),
            load_qa(nogold),
            load_qa(nogold_test),
            None,
            tmp_path / "n",
            build_rag=None,
        )


def test_compare_without_a_generator_is_one_line(monkeypatch, capsys, tmp_path, demo_dir):
    code, _, err = run(
        monkeypatch,
        capsys,
        "compare",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--test",
        demo_dir / "test.jsonl",
        "--generator",
        "none",
        "--out",
        tmp_path / "c",
    )
    assert code == 2 and "needs a generator" in err and "Traceback" not in err, err
    assert not (tmp_path / "c").exists()


def test_advice_on_one_trained_strategy_claims_no_verdict_or_rule():
    """With one strategy there is nothing to be equivalent to: no 'about equal', no rule backed."""
    from fedrag.strategies.report import advise

    row = {"strategy": "independent", "f1": 0.111, "train_flops": 1.6e13, "verdict": "best", "n": 50}
    untuned = {"strategy": "untuned", "f1": 0.085, "train_flops": 0.0}
    text = "\n".join(advise(True, False, {"rows": [untuned, row]}))
    assert "Only independent was trained (F1 0.111)" in text
    assert "about equal'" not in text and "backs the paper's rule" not in text and "spread" not in text, text
    from fedrag.strategies.report import verdict_lines

    said = verdict_lines({"rows": [untuned, {**row, "f1_ci": [0.046, 0.187]}]})
    assert "only trained strategy" in said and "best" not in said, said


def test_advice_checks_both_halves_of_the_rule_and_names_ties():
    """'About equal at a fraction of the compute': an equivalent independent that cost more backs half of it."""
    from fedrag.strategies.report import advise, verdict_lines

    best = {"strategy": "joint-sequence", "f1": 0.21, "train_flops": 2e13, "verdict": "best", "n": 50, "f1_ci": [0.1, 0.3]}
    ind = {"strategy": "independent", "f1": 0.20, "train_flops": 3e13, "verdict": "equivalent", "n": 50}
    rows = [{"strategy": "untuned", "f1": 0.08, "train_flops": 0.0}, best, ind]
    text = "\n".join(advise(True, False, {"rows": rows}))
    assert "backs only the quality half" in text and "1.5x the training FLOPs of joint-sequence" in text, text
    cheap = {**ind, "train_flops": 1e13}
    text = "\n".join(advise(True, False, {"rows": [rows[0], best, cheap]}))
    assert "backs the paper's rule for labelled data" in text and "0.5x" in text, text
    # the best F1 at more than another strategy's cost is the quality half only
    top = {**ind, "verdict": "best", "f1": 0.22}
    other = {**best, "verdict": "inconclusive", "f1": 0.21}
    text = "\n".join(advise(True, False, {"rows": [rows[0], other, top]}))
    assert "only the quality half" in text and "independent is the best in F1" in text, text
    said = verdict_lines(
        {
            "rows": [
                rows[0],
                {**best, "tied": ["two-phase"]},
                ind | {"f1_diff": -0.01, "f1_diff_ci": [-0.02, 0.0], "best": "joint-sequence"},
            ]
        }
    )
    assert "joint-sequence has the best F1, tied with two-phase" in said, said


def test_compare_from_the_cli_trains_each_phase_with_its_stage_defaults(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    # the options the user did not give stay open to a stage's own defaults, as in `fedrag train`:
    # independent = RALT (8 questions at batch 4: 2 steps) + contrastive (batch 16, at least 20 steps)
    args = ["compare", "--corpus", demo_dir / "corpus.jsonl", "--train", demo_dir / "train.jsonl", "--train-limit", "8"]
    args += ["--test", demo_dir / "test.jsonl", "--test-limit", "2", "--strategies", "independent", "--top-k", "2"]
    args += ["--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"], "--max-new-tokens", "2"]
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "c")
    assert code == 0, err
    row = json.loads((tmp_path / "c" / "strategies" / "independent.json").read_text())
    assert row["steps"] == 2 + 20, "the contrastive phase keeps its minimum of 20 steps inside compare"
    assert [p["batch_size"] for p in row["phases"]] == [4, 16], "the row records what each phase trained with"
    # an option the user gave wins over the stage's preference
    args += ["--steps", "3"]
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "d")
    assert code == 0, err
    path = tmp_path / "d" / "strategies" / "independent.json"
    row = json.loads(path.read_text())
    assert row["steps"] == 3 + 3 and [p["batch_size"] for p in row["phases"]] == [4, 16]
    # a row trained with other phase settings (a stage's defaults changed since) is trained again, not reused
    path.write_text(json.dumps({**row, "phases": [row["phases"][0], {**row["phases"][1], "batch_size": 4}]}))
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "d")
    assert code == 0 and "trained with other phase settings" in err and "already finished" not in err, err
    assert json.loads(path.read_text())["phases"] == row["phases"]
    # a row fedrag 0.1.0 wrote records settings since removed (a site's round window): it is reused
    old = [{**p, "prox_mu": 0.0, "schedule_total": None, "schedule_offset": 0} for p in row["phases"]]
    path.write_text(json.dumps({**row, "phases": old}))
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "d")
    assert code == 0 and "already finished" in err and "trained with other" not in err, err


USER_STRATEGY = """
from fedrag.strategies import custom
from fedrag.train import RAGTokenStage

CALLS = []


class Counted(RAGTokenStage):  # a user's own stage: it records each batch it is asked a loss for
    def loss(self, rag, batch):
        CALLS.append((self.top_k, len(batch)))
        return super().loss(rag, batch)


def plan(top_k):
    return custom("mine", Counted(top_k=top_k))
"""


def test_compare_and_search_lr_take_a_users_strategy_by_import_path(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    """`compare --strategies module:attribute` (as `train` and `federate` take one): trained
    with the run's --top-k, decoded as its stage is (RAG-Token here), its row named as asked
    and paired with the untuned pipeline; a path that does not import ends the run before
    anything is evaluated. `search-lr --strategy module:attribute` searches it."""
    (tmp_path / "myjoint.py").write_text(USER_STRATEGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import myjoint

    data = ["--corpus", demo_dir / "corpus.jsonl", "--train", demo_dir / "train.jsonl", "--train-limit", "4"]
    common = ["--top-k", "2", "--steps", "1", "--batch-size", "2"]
    common += ["--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"]]
    args = [*data, *common, "--test", demo_dir / "test.jsonl", "--test-limit", "3", "--max-new-tokens", "2"]
    code, _, err = run(monkeypatch, capsys, "compare", *args, "--strategies", "myjoint:plan", "--out", tmp_path / "c")
    assert code == 0, err
    assert myjoint.CALLS == [(2, 2)], "the user's stage took the one step, built with the run's --top-k"
    result = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [r["strategy"] for r in result["rows"]] == ["untuned", "myjoint:plan"]
    mine = result["rows"][1]
    assert mine["decoding"] == "rag-token" and mine["steps"] == 1 and mine["n"] == 3
    assert [p["batch_size"] for p in mine["phases"]] == [2]
    assert (tmp_path / "c" / "strategies" / "myjoint:plan.rows.jsonl").is_file()
    assert result["paired"]["myjoint:plan"]["vs_untuned"]["f1"] and result["paired"]["myjoint:plan"]["vs_untuned"]["n"] == 3

    code, _, err = run(monkeypatch, capsys, "compare", *args, "--strategies", "myjoint:nothing", "--out", tmp_path / "bad")
    assert code == 2 and "cannot import strategy 'myjoint:nothing' (AttributeError" in err.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists(), "nothing written before the error"
    before = (tmp_path / "c" / "compare.json").read_text()
    code, _, err = run(
        monkeypatch, capsys, "compare", *args, "--strategies", "myjoint:nothing", "--out", tmp_path / "c", "--overwrite"
    )
    assert code == 2 and (tmp_path / "c" / "compare.json").read_text() == before, "--overwrite destroys nothing first"
    code, _, err = run(
        monkeypatch, capsys, "compare", *args, "--strategies", "myjoint:plan,myjoint:plan", "--out", tmp_path / "dup"
    )
    assert code == 2 and "--strategies names myjoint:plan more than once" in err

    search = ["--lrs-generator", "1e-3,1e-2", "--lrs-retriever", "1e-5", "--val-limit", "2"]
    code, _, err = run(
        monkeypatch, capsys, "search-lr", "--strategy", "myjoint:plan", *data, *common, *search, "--out", tmp_path / "s"
    )
    assert code == 0, err
    report = json.loads((tmp_path / "s" / "lr_search.json").read_text())
    assert sorted((p["lr_generator"], p["lr_retriever"]) for p in report["points"]) == [(1e-3, 1e-5), (1e-2, 1e-5)]
