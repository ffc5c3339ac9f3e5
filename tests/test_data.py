import json

import pytest

from fedrag.data import converters, demo, load_corpus, load_qa
from fedrag.errors import DataError


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_demo_is_deterministic_and_consistent():
    a, b = demo.generate(n_people=20, seed=3), demo.generate(n_people=20, seed=3)
    assert a == b
    passages, train, test = a
    ids = {p.id for p in passages}
    assert all(set(e.gold_ids) <= ids for e in train + test)
    people = lambda xs: {e.id.split("-")[0] for e in xs}  # noqa: E731
    assert not people(train) & people(test), "train and test must be about different people"
    assert demo.generate(n_people=20, seed=4)[0] != passages


def test_jsonl_roundtrip(tmp_path):
    demo.write(tmp_path, n_people=8)
    corpus, qa = load_corpus(tmp_path / "corpus.jsonl"), load_qa(tmp_path / "train.jsonl")
    assert len(corpus) == 16 and qa[0].gold_ids and qa[0].answers
    assert len(load_qa(tmp_path / "train.jsonl", limit=3)) == 3


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"id": "a", "text": "x"}', '{"id": "b", "text": '], ":2: invalid JSON"),
        (['{"id": "a"}'], ":1: missing required field 'text'"),
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], ":2: duplicate passage id 'a'"),
        (['{"id": "a", "text": 3}'], "field 'text' must be a string"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([""], "corpus is empty"),
    ],
)
def test_malformed_corpus_reports_file_and_line(tmp_path, lines, message):
    path = write(tmp_path / "c.jsonl", lines)
    with pytest.raises(DataError, match=message):
        load_corpus(path)


def test_malformed_qa(tmp_path):
    with pytest.raises(DataError, match=r"q.jsonl:1: field 'answers' must be a list"):
        load_qa(write(tmp_path / "q.jsonl", ['{"id": "1", "question": "q", "answers": "x"}']))
    with pytest.raises(DataError, match="file not found"):
        load_qa(tmp_path / "missing.jsonl")


def test_squad_converter_and_split_by_title(tmp_path):
    squad = {
        "version": "1.1",
        "data": [
            {
                "title": f"T{t}",
                "paragraphs": [
                    {
                        "context": f"Context {t}-{i}",
                        "qas": [
                            {
                                "id": f"{t}-{i}",
                                "question": "q?",
                                "answers": [{"text": "a", "answer_start": 0}, {"text": "a", "answer_start": 0}],
                            }
                        ],
                    }
                    for i in range(2)
                ],
            }
            for t in range(5)
        ],
    }
    (tmp_path / "s.json").write_text(json.dumps(squad))
    passages, examples = converters.squad(tmp_path / "s.json")
    assert len(passages) == 10 and examples[0].answers == ("a",) and examples[0].gold_ids == ("T0#0",)
    train, test = converters.split_by_title(examples, passages, test_fraction=0.4)
    title = {p.id: p.title for p in passages}
    assert {title[e.gold_ids[0]] for e in train}.isdisjoint({title[e.gold_ids[0]] for e in test})
    assert len(train) + len(test) == 10


def test_hotpotqa_both_schemas(tmp_path):
    hf = [
        {
            "id": "x",
            "question": "q",
            "answer": "yes",
            "supporting_facts": {"title": ["A", "B"], "sent_id": [0, 0]},
            "context": {"title": ["A", "B", "C"], "sentences": [["a1", " a2"], ["b"], ["c"]]},
        }
    ]
    official = [
        {
            "_id": "x",
            "question": "q",
            "answer": "yes",
            "supporting_facts": [["A", 0], ["B", 0]],
            "context": [["A", ["a1", " a2"]], ["B", ["b"]], ["C", ["c"]]],
        }
    ]
    for i, data in enumerate([hf, official]):
        (tmp_path / f"h{i}.json").write_text(json.dumps(data))
        passages, examples = converters.hotpotqa(tmp_path / f"h{i}.json")
        assert [p.id for p in passages] == ["A", "B", "C"] and passages[0].text == "a1 a2"
        assert examples[0].gold_ids == ("A", "B") and examples[0].answers == ("yes",)


def test_nq_open_ctxs(tmp_path):
    row = {
        "question": "who?",
        "answers": ["x"],
        "ctxs": [
            {"id": "1", "title": "t", "text": "a", "hasanswer": False, "isgold": False},
            {"id": "2", "title": "t", "text": "x", "hasanswer": True, "isgold": True},
        ],
    }
    import gzip

    with gzip.open(tmp_path / "nq.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(row) + "\n")
    passages, examples = converters.nq_open(tmp_path / "nq.jsonl.gz")
    assert [p.id for p in passages] == ["1", "2"] and examples[0].gold_ids == ("2",)


@pytest.mark.parametrize("mode", ["iid", "by-title"])
def test_partition_keeps_every_gold_passage_on_its_questions_site(mode):
    from fedrag.data.partition import partition

    passages, train, _ = demo.generate(n_people=30, seed=2)
    sites = partition(passages, train, 3, mode)
    assert sum(len(s.train) for s in sites) == len(train)
    assert sorted(p.id for s in sites for p in s.passages) == sorted(p.id for p in passages), "no passage on two sites"
    for s in sites:
        ids = {p.id for p in s.passages}
        assert all(set(e.gold_ids) <= ids for e in s.train), "every question is answerable from its own site's store"
    if mode == "by-title":
        titles = [{p.title for p in s.passages} for s in sites]
        assert all(not (a & b) for i, a in enumerate(titles) for b in titles[i + 1 :]), "topics do not cross sites"


def test_a_saved_hugging_face_dataset_with_its_own_columns_converts_and_trains(monkeypatch, capsys, tmp_path, tiny_models):
    """SQuAD-shaped data under other column names, as a user's HF dataset would be:
    mapped with --columns (a dotted name for the nested answers), then one training step."""
    import datasets

    from fedrag.data import load_corpus, load_qa
    from test_cli import run

    people = [("Ada", "Paris", "painter"), ("Bo", "Oslo", "baker"), ("Cy", "Rome", "pilot"), ("Di", "Lima", "nurse")]
    rows = [
        {
            "qid": f"q{i}{j}",
            "heading": name,
            "passage": f"{name} lives in {city} and works as a {job}.",
            "query": q,
            "gold": {"text": [a], "answer_start": [0]},
        }
        for i, (name, city, job) in enumerate(people)
        for j, (q, a) in enumerate([(f"Where does {name} live?", city), (f"What is {name}'s job?", job)])
    ]
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    cols = "id=qid,question=query,answers=gold.text,context=passage,title=heading"
    code, out, err = run(
        monkeypatch,
        capsys,
        "convert",
        "--format",
        "hf",
        "--input",
        tmp_path / "hf",
        "--columns",
        cols,
        "--out",
        tmp_path / "data",
    )
    assert code == 0, err
    passages, examples = load_corpus(tmp_path / "data" / "corpus.jsonl"), load_qa(tmp_path / "data" / "qa.jsonl")
    assert len(passages) == 4 and len(examples) == 8
    ex = next(e for e in examples if e.id == "q11")
    gold = next(p for p in passages if p.id == ex.gold_ids[0])
    assert (ex.question, ex.answers, gold.title) == ("What is Bo's job?", ("baker",), "Bo") and "baker" in gold.text

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "rows.parquet"))  # files work the same way
    code, _, err = run(
        monkeypatch,
        capsys,
        "convert",
        "--format",
        "hf",
        "--input",
        tmp_path / "rows.parquet",
        "--columns",
        cols,
        "--out",
        tmp_path / "data2",
    )
    assert code == 0, err
    assert (tmp_path / "data2" / "qa.jsonl").read_text() == (tmp_path / "data" / "qa.jsonl").read_text()

    code, _, err = run(
        monkeypatch, capsys, "convert", "--format", "hf", "--input", tmp_path / "hf", "--out", tmp_path / "data3"
    )  # without the mapping: one line naming what is missing
    assert code == 2 and "no column for question, answers" in err and "--columns" in err

    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--stage",
        "ralt",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--corpus",
        tmp_path / "data" / "corpus.jsonl",
        "--train",
        tmp_path / "data" / "qa.jsonl",
        "--retriever",
        tiny_models["retriever"],
        "--generator",
        tiny_models["generator"],
        "--out",
        tmp_path / "run",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "cost.json").read_text())["total"]["steps"] == 1


# ``fedrag convert``: nothing false, nothing mixed. Each case goes through the CLI and checks
# that what was written loads; a record that cannot be converted is skipped with a count on
# stderr, or refused in one line with --strict.


def convert(monkeypatch, capsys, fmt, src, out, *extra):
    from test_cli import run

    return run(monkeypatch, capsys, "convert", "--format", fmt, "--input", src, "--out", out, *extra)


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_convert_keeps_a_bare_string_answer_whole(monkeypatch, capsys, tmp_path):
    src = write(
        tmp_path / "nq.jsonl",
        [
            json.dumps(
                {
                    "question": "capital of France?",
                    "answers": "Paris",
                    "ctxs": [{"title": "France", "text": "Paris is its capital."}],
                }
            )
        ],
    )
    code, _, err = convert(monkeypatch, capsys, "nq-open", src, tmp_path / "out")
    assert code == 0, err
    assert [e.answers for e in load_qa(tmp_path / "out" / "qa.jsonl")] == [("Paris",)]


def test_convert_parquet_nulls_are_never_written_as_strings(monkeypatch, capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "id": ["q0", "q1", "q2", "q3"],
        "question": ["Who?", None, "Where?", "When?"],
        "answers": [["Ada"], ["Bo"], ["Oslo"], None],
        "context": ["Ada was here.", "Bo too.", "In Oslo.", "Then."],
        "title": ["A", "B", None, "D"],
    }
    pq.write_table(pa.table(rows), tmp_path / "rows.parquet")
    code, _, err = convert(monkeypatch, capsys, "hf", tmp_path / "rows.parquet", tmp_path / "out")
    assert code == 0, err
    assert "None" not in (tmp_path / "out" / "qa.jsonl").read_text() + (tmp_path / "out" / "corpus.jsonl").read_text()
    examples, passages = load_qa(tmp_path / "out" / "qa.jsonl"), load_corpus(tmp_path / "out" / "corpus.jsonl")
    assert [e.id for e in examples] == ["q0", "q2"], "a null question or null answers: the record is skipped"
    assert {p.text: p.title for p in passages} == {"Ada was here.": "A", "In Oslo.": ""}, "a null title is no title"
    assert "convert: skipped 2 records" in err and "row 1" in err, err


def test_convert_squad_articles_with_one_title_get_distinct_stable_ids(monkeypatch, capsys, tmp_path):
    def article(n):
        qa = {"id": f"q{n}", "question": f"Fact {n}?", "answers": [{"text": f"{n}"}]}
        return {"title": "Paris", "paragraphs": [{"context": f"Fact {n}.", "qas": [qa]}]}

    (tmp_path / "s.json").write_text(json.dumps({"data": [article(1), article(2)]}))
    outs = []
    for run_no in range(2):
        code, _, err = convert(monkeypatch, capsys, "squad", tmp_path / "s.json", tmp_path / f"out{run_no}")
        assert code == 0, err
        outs.append(
            (tmp_path / f"out{run_no}" / "corpus.jsonl").read_text() + (tmp_path / f"out{run_no}" / "qa.jsonl").read_text()
        )
    assert outs[0] == outs[1], "the same ids in every run"
    passages = {p.id: p.text for p in load_corpus(tmp_path / "out0" / "corpus.jsonl")}
    assert len(passages) == 2
    for ex in load_qa(tmp_path / "out0" / "qa.jsonl"):
        assert ex.answers[0] in passages[ex.gold_ids[0]], "each question's gold is its own article's paragraph"


def squad_file(qas=None, context="Ada lives in Paris."):
    qas = qas or [{"id": "q1", "question": "Where does Ada live?", "answers": [{"text": "Paris"}]}]
    return {
        "data": [
            {
                "title": "Ada",
                "paragraphs": [
                    {
                        "context": "Bo lives in Oslo.",
                        "qas": [{"id": "ok", "question": "Where does Bo live?", "answers": [{"text": "Oslo"}]}],
                    },
                    {"context": context, "qas": qas},
                ],
            }
        ]
    }


@pytest.mark.parametrize(
    "case,fmt,data,where,reason",
    [
        ("empty passage", "squad", squad_file(context="  "), "paragraphs[1]", "'context' is empty"),
        (
            "null question",
            "squad",
            squad_file([{"id": "q1", "question": None, "answers": [{"text": "Paris"}]}]),
            "qas[0]",
            "'question' is null",
        ),
        (
            "empty answers",
            "squad",
            squad_file([{"id": "q1", "question": "Where?", "answers": []}]),
            "qas[0]",
            "'answers' is empty",
        ),
        (
            "empty answers list",
            "nq-open",
            [{"id": "ok", "question": "Who?", "answers": ["Ada"]}, {"question": "Why?", "answers": []}],
            ":2",
            "'answers' is empty",
        ),
        (
            "duplicate question ids",
            "nq-open",
            [{"id": "q", "question": "Who?", "answers": ["Ada"]}, {"id": "q", "question": "Why?", "answers": ["Bo"]}],
            ":2",
            "repeated id 'q'",
        ),
    ],
)
def test_convert_skips_bad_records_with_a_count_and_strict_refuses_them(
    monkeypatch, capsys, tmp_path, case, fmt, data, where, reason
):
    if fmt == "squad":
        src = tmp_path / "in.json"
        src.write_text(json.dumps(data))
    else:
        src = write(
            tmp_path / "in.jsonl", [json.dumps({**r, "ctxs": [{"title": "T", "text": f"{r['question']} text"}]}) for r in data]
        )
    code, _, err = convert(monkeypatch, capsys, fmt, src, tmp_path / "out")
    assert code == 0, err
    what = {"duplicate question ids": "renamed 1 repeated id", "empty passage": "skipped 2 records"}.get(case, "skipped 1 record")
    assert f"convert: {what} (first: {src}" in err and where in err and reason in err, err
    examples = load_qa(tmp_path / "out" / "qa.jsonl")
    load_corpus(tmp_path / "out" / "corpus.jsonl")
    assert len({e.id for e in examples}) == len(examples) == (2 if "duplicate" in case else 1)

    code, _, err = convert(monkeypatch, capsys, fmt, src, tmp_path / "strict", "--strict")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and str(src) in lines[0] and where in lines[0] and reason in lines[0], err
    assert not (tmp_path / "strict").exists(), "nothing written"


def test_convert_publishes_nothing_that_does_not_load(monkeypatch, capsys, tmp_path):
    """One article split by title leaves train.jsonl empty, which no command could load."""
    (tmp_path / "s.json").write_text(json.dumps(squad_file()))
    code, _, err = convert(monkeypatch, capsys, "squad", tmp_path / "s.json", tmp_path / "out", "--test-fraction", "0.5")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "train.jsonl: no QA examples" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*")), "nothing published, no temp left"


def test_a_title_only_passage_loads_and_its_title_is_its_text(tmp_path):
    path = write(
        tmp_path / "c.jsonl", ['{"id": "a", "title": "Paris", "text": ""}', '{"id": "b", "title": "Oslo", "text": "A city."}']
    )
    a, b = load_corpus(path)
    assert (a.id, a.as_text(), b.as_text()) == ("a", "Paris", "Oslo. A city.")


def test_a_passage_with_neither_title_nor_text_is_skipped_and_counted_or_refused(tmp_path, capsys):
    path = write(
        tmp_path / "c.jsonl", ['{"id": "a", "text": "x"}', '{"id": "b", "text": " "}', '{"id": "c", "title": "", "text": ""}']
    )
    assert [p.id for p in load_corpus(path)] == ["a"]
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "skipped 2 passages" in err and f"{path}:2" in err, err
    with pytest.raises(DataError, match=r"c.jsonl:2: passage has neither title nor text"):
        load_corpus(path, strict=True)
