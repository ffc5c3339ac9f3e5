"""Every user-caused error ends with exit code 2, one line on stderr, no traceback,
and no output file; the happy paths write what they promise."""

import json
import sys
from pathlib import Path

import pytest

from fedrag.cli.main import main


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["fedrag", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def index_dir(tiny_models, demo_dir, tmp_path_factory):
    from fedrag.data import load_corpus
    from fedrag.retrieve import KnowledgeStore, Retriever

    out = tmp_path_factory.mktemp("idx") / "index"
    KnowledgeStore.build(load_corpus(demo_dir / "corpus.jsonl"), Retriever.load(tiny_models["retriever"])).save(out)
    return out


def bad_files(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "question": "q", "answers": ["a"]}\n{"id": "2", "question": \n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "nogold.jsonl").write_text('{"id": "1", "question": "q", "answers": ["a"], "gold_ids": ["nope"]}\n')
    (tmp_path / "binary.json").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "squad_nopara.json").write_text('{"data": [{"title": "T"}]}')
    (tmp_path / "hotpot_noctx.json").write_text('[{"_id": "1", "question": "q", "answer": "a", "supporting_facts": []}]')
    (tmp_path / "changed.jsonl").write_text('{"id": "p1", "title": "Other", "text": "A corpus the index was not built from."}\n')
    (tmp_path / "bad_compare.json").write_text("{not json")
    (tmp_path / "list_compare.json").write_text("[1, 2]")
    (tmp_path / "noflops_compare.json").write_text('{"rows": [{"strategy": "independent", "f1": 0.5}]}')
    (tmp_path / "a_file").write_text("not a directory")
    return tmp_path


@pytest.mark.parametrize(
    "case,args,message",
    [
        (
            "missing qa",
            ["eval", "--test", "{t}/missing.jsonl", "--corpus", "{d}/corpus.jsonl", "--generator", "none"],
            "missing.jsonl: file not found",
        ),
        (
            "missing corpus",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{t}/nope.jsonl", "--generator", "none"],
            "nope.jsonl: file not found",
        ),
        (
            "bad json",
            ["eval", "--test", "{t}/bad.jsonl", "--corpus", "{d}/corpus.jsonl", "--generator", "none"],
            "bad.jsonl:2: invalid JSON",
        ),
        (
            "empty corpus",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{t}/empty.jsonl", "--retriever", "{r}", "--generator", "none"],
            "corpus is empty",
        ),
        (
            "gold not in corpus",
            ["eval", "--test", "{t}/nogold.jsonl", "--corpus", "{d}/corpus.jsonl", "--retriever", "{r}", "--generator", "none"],
            "gold id 'nope' not in the corpus",
        ),
        (
            "unknown retriever",
            [
                "eval",
                "--test",
                "{d}/test.jsonl",
                "--corpus",
                "{d}/corpus.jsonl",
                "--retriever",
                "no-such-model",
                "--generator",
                "none",
            ],
            "unknown retriever model 'no-such-model'",
        ),
        (
            "missing retriever path",
            ["index", "--corpus", "{d}/corpus.jsonl", "--retriever", "./no/such/dir", "--out", "{t}/idx"],
            "retriever path './no/such/dir' does not exist",
        ),
        (
            "unknown generator",
            [
                "eval",
                "--test",
                "{d}/test.jsonl",
                "--corpus",
                "{d}/corpus.jsonl",
                "--retriever",
                "{r}",
                "--generator",
                "./missing.gguf",
            ],
            "generator path './missing.gguf' does not exist",
        ),
        (
            "mismatched index",
            ["eval", "--test", "{d}/test.jsonl", "--index", "{i}", "--retriever", "minilm", "--generator", "none"],
            "does not match the retriever's dimension",
        ),
        (
            "not an index",
            ["eval", "--test", "{d}/test.jsonl", "--index", "{t}", "--retriever", "{r}", "--generator", "none"],
            "not a fedrag index directory",
        ),
        (
            "index of another corpus",
            [
                "eval",
                "--test",
                "{d}/test.jsonl",
                "--index",
                "{i}",
                "--corpus",
                "{t}/changed.jsonl",
                "--retriever",
                "{r}",
                "--generator",
                "none",
            ],
            "was built from another corpus than",
        ),
        (
            "eval zero batch",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{d}/corpus.jsonl", "--batch-size", "0", "--generator", "none"],
            "Invalid value for '--batch-size'",
        ),
        (
            "eval zero limit",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{d}/corpus.jsonl", "--test-limit", "0", "--generator", "none"],
            "Invalid value for '--test-limit'",
        ),
        (
            "eval negative limit",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{d}/corpus.jsonl", "--test-limit", "-1", "--generator", "none"],
            "Invalid value for '--test-limit'",
        ),
        ("advise bad json", ["advise", "--labels", "--compare", "{t}/bad_compare.json"], "not a compare.json (invalid JSON"),
        (
            "advise json list",
            ["advise", "--labels", "--compare", "{t}/list_compare.json"],
            "not a compare.json (expected an object",
        ),
        (
            "advise rows without flops",
            ["advise", "--labels", "--compare", "{t}/noflops_compare.json"],
            "row 1 lacks a numeric 'train_flops'",
        ),
        (
            "app strategy not a factory",
            ["app", "--strategy", "os:system", "--out", "{t}/run"],
            "'os:system' is not a strategy factory",
        ),
        ("app out onto a file", ["app", "--out", "{t}/a_file"], "exists and is not a directory"),
        (
            "bad retrieval mode",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{d}/corpus.jsonl", "--retrieval", "magic", "--generator", "none"],
            "Invalid value for '--retrieval': 'magic' is not one of 'dense', 'bm25', 'hybrid'",
        ),
        (
            "bad top-k",
            ["eval", "--test", "{d}/test.jsonl", "--corpus", "{d}/corpus.jsonl", "--top-k", "0", "--generator", "none"],
            "--top-k must be >= 1",
        ),
        (
            "unknown strategy",
            ["train", "--strategy", "magic", "--corpus", "{d}/corpus.jsonl", "--train", "{d}/train.jsonl", "--out", "{t}/run"],
            "Invalid value for '--strategy'",
        ),
        (
            "train with an unknown retriever",
            [
                "train",
                "--stage",
                "ralt",
                "--retriever",
                "no-such-model",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "unknown retriever model 'no-such-model'",
        ),
        (
            "unknown stage",
            ["train", "--stage", "magic", "--corpus", "{d}/corpus.jsonl", "--train", "{d}/train.jsonl", "--out", "{t}/run"],
            "Invalid value for '--stage'",
        ),
        (
            "passages with ralt",
            [
                "train",
                "--stage",
                "ralt",
                "--train-passages",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "--train-passages applies to --stage contrastive or --stage lsr",
        ),
        ("unknown option", ["eval", "--test", "x", "--frobnicate"], "No such option"),
        (
            "bad scheduler",
            [
                "train",
                "--stage",
                "ralt",
                "--scheduler",
                "bogus",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "Invalid value for '--scheduler'",
        ),
        (
            "bad two-phase order",
            [
                "train",
                "--stage",
                "ralt",
                "--two-phase-order",
                "bogus",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "Invalid value for '--two-phase-order'",
        ),
        (
            "zero steps",
            [
                "train",
                "--stage",
                "ralt",
                "--steps",
                "0",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "--steps must be >= 1",
        ),
        (
            "zero batch",
            [
                "train",
                "--stage",
                "ralt",
                "--batch-size",
                "0",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "Invalid value for '--batch-size': 0 is not a whole number >= 1",
        ),
        (
            "zero top-k in train",
            [
                "train",
                "--stage",
                "ralt",
                "--top-k",
                "0",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "--top-k must be >= 1, got 0",
        ),
        (
            "strategy import path that does not import",
            ["federate", "--strategy", "no_such_pkg:plan", "--corpus", "{d}/corpus.jsonl", "--train", "{d}/train.jsonl"]
            + ["--out", "{t}/run"],
            "cannot import strategy 'no_such_pkg:plan' (ModuleNotFoundError",
        ),
        (
            "zero fraction",
            [
                "federate",
                "--stage",
                "ralt",
                "--fraction",
                "0",
                "--corpus",
                "{d}/corpus.jsonl",
                "--train",
                "{d}/train.jsonl",
                "--out",
                "{t}/run",
            ],
            "--fraction must be in (0, 1]",
        ),
        (
            "binary convert input",
            ["convert", "--format", "squad", "--input", "{t}/binary.json", "--out", "{t}/run"],
            "not UTF-8 text",
        ),
        (
            "squad without paragraphs",
            ["convert", "--format", "squad", "--input", "{t}/squad_nopara.json", "--out", "{t}/run"],
            "not a valid SQuAD file: missing field 'paragraphs'",
        ),
        (
            "hotpotqa without context",
            ["convert", "--format", "hotpotqa", "--input", "{t}/hotpot_noctx.json", "--out", "{t}/run"],
            "not a valid HotpotQA file: missing field 'context'",
        ),
        (
            "train over a data directory",
            ["train", "--stage", "ralt", "--corpus", "{d}/corpus.jsonl", "--train", "{d}/train.jsonl", "--out", "{d}"],
            "is not empty and is not a fedrag output; pass --overwrite",
        ),
        (
            "index over a data directory",
            ["index", "--corpus", "{d}/corpus.jsonl", "--retriever", "{r}", "--out", "{d}"],
            "is not empty and is not a fedrag output; pass --overwrite",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(monkeypatch, capsys, tmp_path, demo_dir, tiny_models, index_dir, case, args, message):
    t = bad_files(tmp_path)
    fmt = dict(t=t, d=demo_dir, r=tiny_models["retriever"], i=index_dir)
    out_file = tmp_path / "metrics.json"
    args = [a.format(**fmt) for a in args] + (
        ["--metrics", str(out_file)] if args[0] == "eval" and case != "unknown option" else []
    )
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (case, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not out_file.exists(), "no half-written output"
    assert not (tmp_path / "run").exists() and not (tmp_path / "idx").exists()
    assert not (tmp_path / ".run.partial").exists(), "a refused command leaves nothing to resume"
    assert sorted(p.name for p in demo_dir.iterdir()) == ["corpus.jsonl", "test.jsonl", "train.jsonl"], (
        "the data directory is untouched"
    )


def test_index_then_eval_writes_metrics(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    code, _, err = run(
        monkeypatch,
        capsys,
        "index",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--out",
        tmp_path / "idx",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["count"] == 48
    for mode in ("dense", "bm25", "hybrid"):
        code, _, err = run(
            monkeypatch,
            capsys,
            "eval",
            "--test",
            demo_dir / "test.jsonl",
            "--index",
            tmp_path / "idx",
            "--retriever",
            tiny_models["retriever"],
            "--generator",
            tiny_models["generator"],
            "--retrieval",
            mode,
            "--test-limit",
            "4",
            "--metrics",
            tmp_path / f"{mode}.json",
        )
        assert code == 0, err
        m = json.loads((tmp_path / f"{mode}.json").read_text())
        assert m["n"] == 4 and {"em", "f1", "recall@1", "recall@5", "recall@20", "mrr@10", "precision@5", "ndcg@10"} <= set(m)
        assert m["retrieval"] == mode
    # each mode retrieves its own passages: on every test question (no generator), the ranked ids differ
    # between the modes, so an ignored --retrieval (dense three times) fails here
    ranked = {}
    for mode in ("dense", "bm25", "hybrid"):
        code, _, err = run(
            monkeypatch,
            capsys,
            "eval",
            "--test",
            demo_dir / "test.jsonl",
            "--index",
            tmp_path / "idx",
            "--retriever",
            tiny_models["retriever"],
            "--generator",
            "none",
            "--retrieval",
            mode,
            "--predictions",
            tmp_path / f"{mode}.jsonl",
        )
        assert code == 0, err
        ranked[mode] = [row["retrieved"] for row in map(json.loads, (tmp_path / f"{mode}.jsonl").read_text().splitlines())]
    assert ranked["dense"] != ranked["bm25"] and ranked["hybrid"] not in (ranked["dense"], ranked["bm25"])


def test_demo_data_command(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "demo-data", "--out", tmp_path, "--seed", "5", "--people", "8")
    assert code == 0 and "16 passages" in out
    assert {p.name for p in tmp_path.iterdir()} == {"corpus.jsonl", "train.jsonl", "test.jsonl", "fedrag_output.json"}


def test_train_takes_a_users_strategy_by_import_path(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    """`train --strategy module:attribute`, as `federate` takes it: a user's factory, called
    with the run's --top-k, trains under its own name."""
    (tmp_path / "myplans.py").write_text(
        "from fedrag.strategies import custom\nfrom fedrag.train import RALTStage\n\n"
        "def plan(top_k):\n    return custom(f'mine-k{top_k}', RALTStage(top_k=top_k))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = ["--corpus", demo_dir / "corpus.jsonl", "--train", demo_dir / "train.jsonl", "--steps", "1", "--batch-size", "2"]
    models = ["--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"], "--top-k", "3"]
    code, out, err = run(monkeypatch, capsys, "train", "--strategy", "myplans:plan", *data, *models, "--out", tmp_path / "run")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["strategy"] == "mine-k3" and (tmp_path / "run" / "generator").is_dir()
    code, _, err = run(monkeypatch, capsys, "train", "--strategy", "myplans:nothing", *data, "--out", tmp_path / "run2")
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        "fedrag: error: cannot import strategy 'myplans:nothing' (AttributeError"
    )
    assert not (tmp_path / "run2").exists()


def test_train_stage_from_cli_is_usable_by_eval(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--val",
        demo_dir / "test.jsonl",
        "--val-limit",
        "4",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "run",
        "--steps",
        "2",
        "--batch-size",
        "2",
    )
    assert code == 0, err
    cost = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert cost["total"]["steps"] == 2 and cost["total"]["flops"] > 0 and cost["total"]["generator_tokens"] > 0
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_f1" in r for r in logs)
    # model cards say what trained each model, with no machine path (peft's template names the base by its path)
    card = (tmp_path / "run" / "generator" / "README.md").read_text()
    base = Path(tiny_models["generator"]).name
    assert "library_name: peft" in card and f"base_model: {base}" in card and "trained by fedrag's `ralt` run" in card
    assert "| 1 | ralt | 2 |" in card and str(tmp_path) not in card and tiny_models["generator"] not in card
    card = (tmp_path / "run" / "retriever" / "README.md").read_text()
    assert "left untrained by fedrag's `ralt` run" in card and str(Path(tiny_models["retriever"]).parent) not in card
    code, _, err = run(
        monkeypatch,
        capsys,
        "eval",
        "--test",
        demo_dir / "test.jsonl",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--retriever",
        tmp_path / "run" / "retriever",
        "--generator",
        tmp_path / "run" / "generator",
        "--test-limit",
        "2",
        "--metrics",
        tmp_path / "m.json",
    )
    assert code == 0, err


def test_lsr_with_passages_writes_an_index_its_retriever_matches(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "lsr",
        "--train-passages",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "run",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--lr-retriever",
        "1e-3",
        "--keep-last",  # the stage's default could keep the weights it started from
    )
    assert code == 0, err
    cost = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert cost["reencode"]["reencoded_passages"] == 48 and "best" not in cost
    args = [
        "eval",
        "--test",
        demo_dir / "test.jsonl",
        "--index",
        tmp_path / "run" / "index",
        "--generator",
        "none",
        "--test-limit",
        "4",
    ]
    code, _, err = run(
        monkeypatch, capsys, *args, "--retriever", tmp_path / "run" / "retriever", "--metrics", tmp_path / "m.json"
    )
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, *args, "--retriever", tiny_models["retriever"], "--metrics", tmp_path / "x.json")
    assert code == 2 and "index was built with encoder" in err, "the re-encoded index no longer matches the base model"


def test_search_lr_reports_every_point(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    code, out, err = run(
        monkeypatch,
        capsys,
        "search-lr",
        "--strategy",
        "joint-sequence",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--val",
        demo_dir / "test.jsonl",
        "--val-limit",
        "3",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "lr",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--lrs-generator",
        "1e-4,1e-3",
        "--lrs-retriever",
        "1e-5,1e-4",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "lr" / "lr_search.json").read_text())
    assert len(report["points"]) == 4 and report["search_cost"]["steps"] == 4  # 2-D grid for joint
    assert report["final_cost"]["steps"] == 1 and (tmp_path / "lr" / "generator" / "fedrag_decoding.json").exists()
    assert {"f1", "recall@5"} <= set(report["points"][0])


def test_stage_defaults_apply_unless_an_option_is_given(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    common = [
        "train",
        "--stage",
        "contrastive",
        "--corpus",
        demo_dir / "corpus.jsonl",
        "--train",
        demo_dir / "train.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--train-limit",
        "16",
    ]
    code, _, err = run(monkeypatch, capsys, *common, "--out", tmp_path / "a")
    assert code == 0, err
    cost = json.loads((tmp_path / "a" / "cost.json").read_text())
    phase = cost["config"]["phases"][0]
    assert phase["batch_size"] == 16 and phase["lr_retriever"] == 5e-5
    assert cost["total"]["steps"] == 20, "16 questions at batch 16 is 1 step an epoch: the stage's minimum applies"
    assert (tmp_path / "a" / "index").is_dir(), "the passage side trains by default: the store is re-encoded"
    code, _, err = run(
        monkeypatch, capsys, *common, "--out", tmp_path / "b", "--batch-size", "2", "--query-only", "--lr-retriever", "1e-5"
    )
    assert code == 0, err
    cost = json.loads((tmp_path / "b" / "cost.json").read_text())
    phase = cost["config"]["phases"][0]
    assert (phase["batch_size"], phase["lr_retriever"]) == (2, 1e-5) and not (tmp_path / "b" / "index").exists()
