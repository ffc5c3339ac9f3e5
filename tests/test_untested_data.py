"""Conversion behaviours issue #39 listed as untested: SQuAD v2.0's unanswerable questions
and `convert --format hf --split`, through `fedrag convert` in-process."""

import json

from fedrag.data import converters, load_corpus, load_qa
from test_cli import run


def convert(monkeypatch, capsys, fmt, src, out, *extra):
    capsys.readouterr()  # what came before (datasets' progress bars while the test saved its input)
    return run(monkeypatch, capsys, "convert", "--format", fmt, "--input", src, "--out", out, *extra)


def _one_line_error(code, err, *parts):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and all(p in lines[0] for p in parts), (code, err)


def test_squad_v2_leaves_unanswerable_questions_out_and_keeps_their_paragraphs(monkeypatch, capsys, tmp_path):
    """SQuAD v2.0 marks a question `is_impossible` with no `answers` (the span a reader
    might wrongly give is under `plausible_answers`). fedrag trains and scores answers, so
    such a question is left out and counted; it is no malformed record, so nothing is
    reported as skipped. Its paragraph stays in the corpus (it is evidence for other questions, or a
    distractor)."""
    impossible = lambda qid: {  # noqa: E731
        "id": qid,
        "question": f"Which river runs through {qid}?",
        "answers": [],
        "plausible_answers": [{"text": "the Seine", "answer_start": 0}],
        "is_impossible": True,
    }
    answerable = {
        "id": "a1",
        "question": "Where does Ada live?",
        "answers": [{"text": "Paris", "answer_start": 13}],
        "is_impossible": False,
    }
    squad = {
        "version": "v2.0",
        "data": [
            {
                "title": "Ada_Lovelace",
                "paragraphs": [
                    {"context": "Ada lives in Paris.", "qas": [answerable, impossible("i1")]},
                    {"context": "Ada plays the oboe.", "qas": [impossible("i2")]},
                ],
            }
        ],
    }
    (tmp_path / "v2.json").write_text(json.dumps(squad))
    code, out, err = convert(monkeypatch, capsys, "squad", tmp_path / "v2.json", tmp_path / "out")
    assert code == 0, err
    assert "2 passages, 1 questions" in out and "skipped" not in err, (out, err)
    assert "left out 2 unanswerable questions" in err, "what was left out is said, with its count"
    examples, passages = load_qa(tmp_path / "out" / "qa.jsonl"), load_corpus(tmp_path / "out" / "corpus.jsonl")
    assert [(e.id, e.answers, e.gold_ids) for e in examples] == [("a1", ("Paris",), ("Ada_Lovelace#0",))]
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("Ada_Lovelace#0", "Ada Lovelace", "Ada lives in Paris."),
        ("Ada_Lovelace#1", "Ada Lovelace", "Ada plays the oboe."),
    ]
    # the library keeps them when asked, with the empty answer SQuAD v2.0 scores them against
    _, kept = converters.squad(tmp_path / "v2.json", skip_unanswerable=False)
    assert [(e.id, e.answers, e.gold_ids) for e in kept] == [
        ("a1", ("Paris",), ("Ada_Lovelace#0",)),
        ("i1", ("",), ("Ada_Lovelace#0",)),
        ("i2", ("",), ("Ada_Lovelace#1",)),
    ]


def test_convert_hf_reads_the_split_it_is_told_and_asks_for_one_when_there_are_several(monkeypatch, capsys, tmp_path):
    import datasets

    def rows(split, n):
        return [
            {"id": f"{split}{i}", "question": f"{split} question {i}?", "answers": [f"{split} answer {i}"],
             "context": f"{split} context {i}.", "title": f"{split.title()} {i}"}
            for i in range(n)
        ]  # fmt: skip

    ds = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows("train", 3)), "validation": datasets.Dataset.from_list(rows("validation", 2))}
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    code, out, err = convert(monkeypatch, capsys, "hf", tmp_path / "hf", tmp_path / "val", "--split", "validation")
    assert code == 0, err
    examples, passages = load_qa(tmp_path / "val" / "qa.jsonl"), load_corpus(tmp_path / "val" / "corpus.jsonl")
    assert [(e.id, e.question, e.answers) for e in examples] == [
        ("validation0", "validation question 0?", ("validation answer 0",)),
        ("validation1", "validation question 1?", ("validation answer 1",)),
    ]
    assert sorted((p.title, p.text) for p in passages) == [
        ("Validation 0", "validation context 0."),
        ("Validation 1", "validation context 1."),
    ]
    assert all(e.gold_ids == (p.id,) for e, p in zip(examples, sorted(passages, key=lambda p: p.title)))
    code, _, err = convert(monkeypatch, capsys, "hf", tmp_path / "hf", tmp_path / "train", "--split", "train")
    assert code == 0, err
    assert [e.id for e in load_qa(tmp_path / "train" / "qa.jsonl")] == ["train0", "train1", "train2"]
    # two splits and none named, or one it lacks: one line naming the splits there are
    for extra in ((), ("--split", "test")):
        code, _, err = convert(monkeypatch, capsys, "hf", tmp_path / "hf", tmp_path / "none", *extra)
        _one_line_error(code, err, "choose a split with --split (train, validation)")
        assert not (tmp_path / "none").exists()
    # a dataset of one split needs no --split; a plain Dataset has no other split
    datasets.DatasetDict({"test": ds["validation"]}).save_to_disk(str(tmp_path / "one"))
    code, _, err = convert(monkeypatch, capsys, "hf", tmp_path / "one", tmp_path / "one-out")
    assert code == 0 and len(load_qa(tmp_path / "one-out" / "qa.jsonl")) == 2, err
    ds["train"].save_to_disk(str(tmp_path / "plain"))
    code, _, err = convert(monkeypatch, capsys, "hf", tmp_path / "plain", tmp_path / "plain-out", "--split", "validation")
    _one_line_error(code, err, "a single dataset has no split 'validation'")
    code, _, err = convert(monkeypatch, capsys, "squad", tmp_path / "v2.json", tmp_path / "squad-out", "--split", "train")
    _one_line_error(code, err, "--columns and --split apply to --format hf")
