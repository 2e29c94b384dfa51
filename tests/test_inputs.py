"""Prompt files: every format round-trips, and every bad input names the file and the place."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from charter.judge.backends.base import Message
from charter.prompt_files import PromptFileError, PromptRecord, PromptSet, load_prompts, prompt_key

REPO = Path(__file__).resolve().parent.parent

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]
ROWS: list[dict[str, Any]] = [
    {"prompt": "How do I boil an egg?", "responses": ["Boil it.", "Put it in hot water."]},
    {"prompt": "Why is the sky blue?", "responses": None},
    {"prompt": "Naïve café — “quotes” and emoji 🎉", "responses": ["Sure."]},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            cells = {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            writer.writerow({k: "" if v is None else v for k, v in cells.items()})
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_dataset(path: Path, rows: list[dict[str, Any]], split: str | None = None) -> Path:
    import datasets

    ds = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({split: ds}) if split else ds).save_to_disk(str(path))
    return path


def summary(prompts: PromptSet) -> list[tuple[object, tuple[str, ...] | None]]:
    return [(r.prompt, r.responses) for r in prompts]


EXPECTED = [(r["prompt"], tuple(r["responses"]) if r["responses"] else None) for r in ROWS]


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["p.jsonl", "p.json", "p.csv", "p.parquet", "dataset_dir", "dataset_dict_train"],
)
def test_every_format_round_trips(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        write_jsonl(path, ROWS)
    elif name.endswith(".json"):
        path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    elif name.endswith(".csv"):
        write_csv(path, ROWS)
    elif name.endswith(".parquet"):
        write_parquet(path, ROWS)
    elif name == "dataset_dir":
        write_dataset(path, ROWS)
    else:
        write_dataset(path, ROWS, split="train")
    prompts = load_prompts(path)
    assert summary(prompts) == EXPECTED
    assert prompts.duplicates_dropped == 0
    assert prompts.path == path
    assert all(r.source.startswith(f"{path.name}:") for r in prompts)


def test_sources_give_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('\n{"prompt": "a"}\n\n  \n{"prompt": "b"}\n', encoding="utf-8")
    assert [r.source for r in load_prompts(path)] == ["p.jsonl:2", "p.jsonl:5"]
    arr = tmp_path / "p.json"
    arr.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    lines = arr.read_text().splitlines()
    starts = [i for i, line in enumerate(lines, start=1) if line.strip() == "{"]
    assert [r.source for r in load_prompts(arr)] == [f"p.json:{n}" for n in starts]
    quoted = tmp_path / "q.csv"
    quoted.write_text('prompt\n"two\nlines"\nnext\n', encoding="utf-8")
    records = load_prompts(quoted)
    assert [(r.prompt, r.source) for r in records] == [
        ("two\nlines", "q.csv:2"),
        ("next", "q.csv:4"),
    ]


def test_txt_one_prompt_per_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"first prompt\r\n\r\n   \n  second prompt  \nthird\n")
    prompts = load_prompts(path)
    assert [r.prompt for r in prompts] == ["first prompt", "second prompt", "third"]
    assert [r.source for r in prompts] == ["p.txt:1", "p.txt:4", "p.txt:5"]
    assert all(r.responses is None for r in prompts)


def test_tsv_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    path.write_bytes('\ufeffprompt\tresponses\nhello, world\t["x"]\n'.encode())
    assert summary(load_prompts(path)) == [("hello, world", ("x",))]


def test_line_separators_inside_json_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a\u2028b\x0cc"}, ensure_ascii=False) + "\n")
    assert [r.prompt for r in load_prompts(path)] == ["a\u2028b\x0cc"]


# --- conversational prompts ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ""])
def test_conversational_prompts(tmp_path: Path, suffix: str) -> None:
    rows = [{"prompt": CONVERSATION}, {"prompt": [{"role": "user", "content": "Just one"}]}]
    path = tmp_path / f"conv{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".parquet":
        write_parquet(path, rows)
    else:
        write_dataset(path, rows)
    first, second = load_prompts(path)
    assert first.is_conversational
    assert first.messages == tuple(Message(**m) for m in CONVERSATION)
    assert first.text == (
        "system: Be brief.\nuser: Hi there\nassistant: Hello!\nuser: What is 2+2?"
    )
    assert second.prompt == (Message(role="user", content="Just one"),)


def test_plain_prompt_properties() -> None:
    record = PromptRecord(prompt="Hello?", responses=("a", "b"), source="x:1")
    assert record.messages == (Message(role="user", content="Hello?"),)
    assert record.text == "Hello?"
    assert not record.is_conversational
    assert record.responses == ("a", "b")
    with pytest.raises(ValueError):
        PromptRecord(prompt="   ")
    with pytest.raises(ValueError):
        record.source = "y"


# --- columns ---------------------------------------------------------------------------------


def test_responses_column_absent(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b", "responses": []}])
    assert summary(load_prompts(path)) == [("a", None), ("b", None)]
    csv_path = write_csv(tmp_path / "p.csv", [{"prompt": "a", "id": "1"}])
    assert summary(load_prompts(csv_path)) == [("a", None)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_custom_column_names(tmp_path: Path, suffix: str) -> None:
    rows = [{"question": "q1", "answers": ["x", "y"], "prompt": "ignored", "responses": ["no"]}]
    path = tmp_path / f"p{suffix}"
    {".jsonl": write_jsonl, ".csv": write_csv, ".parquet": write_parquet}[suffix](path, rows)
    prompts = load_prompts(path, column="question", responses_column="answers")
    assert summary(prompts) == [("q1", ("x", "y"))]


# --- bad input -------------------------------------------------------------------------------


def assert_error(path: Path, where: str | None, *needles: str, **kwargs: str) -> None:
    """`where`: "line 3" (shown `file:3:` or `file:3:COLUMN:`), "line 3:12" or "row 2"."""
    with pytest.raises(PromptFileError) as info:
        load_prompts(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    if where is not None:
        unit, _, place = where.partition(" ")
        shown = f": row {place}: " if unit == "row" else f":{place}:"
        assert message[len(str(path)) :].startswith(shown), message
    for needle in needles:
        assert needle in message, message


def test_missing_file(tmp_path: Path) -> None:
    assert_error(tmp_path / "nope.jsonl", None, "not found")


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "p.xlsx"
    path.write_text("x")
    assert_error(path, None, "'.xlsx'", ".jsonl", ".csv", ".parquet", "save_to_disk")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".txt"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    path.write_text("")
    assert_error(path, None, "empty")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("blank.jsonl", "\n  \n"),
        ("blank.txt", "\n\n"),
        ("header.csv", "prompt,responses\n"),
        ("empty.json", "[]"),
    ],
)
def test_no_prompts(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert_error(path, None, "no prompts")


def test_malformed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": "broken\n')
    assert_error(path, "line 3:12", "not valid JSON (Unterminated string")
    path.write_text('{"prompt": "ok"}\n["a list"]\n')
    assert_error(path, "line 2", "expected a JSON object, got array")


def test_malformed_json_array(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[\n  {"prompt": "a"},\n  {"prompt": "b",}\n]\n')
    assert_error(path, "line 3:18", "not valid JSON")
    path.write_text('[\n  {"prompt": "a"}\n  {"prompt": "b"}\n]\n')
    assert_error(path, "line 3:3", "not valid JSON (expected ',' or ']')")
    path.write_text('{"prompt": "a"}')
    assert_error(path, "line 1", "expected a JSON array", ".jsonl")
    path.write_text('[{"prompt": "a"}] x')
    assert_error(path, "line 1", "extra data")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ""])
def test_missing_column(tmp_path: Path, suffix: str) -> None:
    rows = [{"text": "a", "id": 1}]
    path = tmp_path / f"p{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, [{"prompt": "fine"}, {"text": "a", "id": 1}])
        where = "line 2"
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
        where = "line 1"
    elif suffix == ".parquet":
        write_parquet(path, rows)
        where = "row 1"
    else:
        write_dataset(path, rows)
        where = "row 1"
    assert_error(path, where, "no 'prompt' column", "'text'", "'id'")


def test_missing_column_csv_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [{"question": "a", "id": "1"}])
    assert_error(path, "line 1", "no 'prompt' column", "'question'", "'id'")
    assert_error(path, "line 1", "no 'q' column", column="q")


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,id\nfine,1\nWhat is 1,2 plus 3?,2\n")
    assert_error(path, "line 3", "3 fields", "header has 2")
    path.write_text("prompt,id\nfine,1,,\n")  # trailing empty cells are fine
    assert summary(load_prompts(path)) == [("fine", None)]


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        (None, "got null"),
        (42, "got int"),
        ({"role": "user"}, "got dict"),
        ([], "empty list"),
        (["just text"], "message 1 must be an object"),
        ([{"role": "robot", "content": "hi"}], "role 'robot'"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}], "last"),
        ([{"role": "user", "content": " "}], "empty"),
        ([{"role": "user", "content": "hi", "name": "bob"}], "unsupported keys: name"),
    ],
)
def test_bad_prompt_values(tmp_path: Path, prompt: object, needle: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"prompt": prompt}])
    assert_error(path, "line 2", needle)


def test_empty_csv_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,id\nfine,1\n ,2\n")
    assert_error(path, "line 3", "prompt is empty")


@pytest.mark.parametrize(
    ("responses", "needle"),
    [
        ("one answer", "got str"),
        ([1, 2], "response 1 must be a string"),
        (["ok", ""], "response 2 is empty"),
        ({"a": 1}, "got dict"),
    ],
)
def test_bad_responses(tmp_path: Path, responses: object, needle: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "responses": responses}])
    assert_error(path, "line 1", needle)


def test_bad_csv_responses(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('prompt,responses\na,"[""x""]"\nb,not json\n')
    assert_error(path, "line 3", "JSON-encoded list")
    path.write_text('prompt,responses\na,"[""x""]"\nb,"[1]"\n')
    assert_error(path, "line 3", "response 1 must be a string")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt", ".json"])
def test_not_utf8(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    body = {
        ".jsonl": b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n',
        ".csv": b"prompt\ncaf\xe9\n",
        ".txt": b"a\ncaf\xe9\n",
        ".json": b'[{"prompt": "a"},\n {"prompt": "caf\xe9"}]',
    }[suffix]
    path.write_bytes(body)
    assert_error(path, "line 2", "not valid UTF-8", f"byte offset {body.index(0xE9)}")
    column = body.index(0xE9) - body.rindex(b"\n", 0, body.index(0xE9))
    assert_error(path, f"line 2:{column}")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"this is not parquet at all")
    assert_error(path, None, "cannot read as Parquet")


def test_dataset_dir_problems(tmp_path: Path) -> None:
    plain = tmp_path / "not_a_dataset"
    plain.mkdir()
    assert_error(plain, None, "save_to_disk")

    import datasets

    split = datasets.Dataset.from_list([{"prompt": "a"}])
    only = tmp_path / "only_split"
    datasets.DatasetDict({"validation": split}).save_to_disk(str(only))
    assert [r.prompt for r in load_prompts(only)] == ["a"]
    many = tmp_path / "many_splits"
    datasets.DatasetDict({"validation": split, "test": split}).save_to_disk(str(many))
    assert_error(many, None, "validation", "test", "no 'train' split")


# --- duplicates and keys ---------------------------------------------------------------------


def test_duplicates_keep_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows: list[dict[str, Any]] = [
        {"prompt": "a", "responses": ["first"]},
        {"prompt": "b"},
        {"prompt": "a", "responses": ["second"]},
        {"prompt": CONVERSATION},
        {"prompt": CONVERSATION},
        {"prompt": "a"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="charter.prompt_files"):
        prompts = load_prompts(path)
    assert prompts.duplicates_dropped == 3
    assert [r.source for r in prompts] == ["p.jsonl:1", "p.jsonl:2", "p.jsonl:4"]
    assert prompts[0].responses == ("first",)
    assert "dropped 3 duplicate prompts" in caplog.text


def test_keys_equal_across_formats(tmp_path: Path) -> None:
    rows = [{"prompt": "How do I boil an egg?"}, {"prompt": "Why is the sky blue?"}]
    loaded = [
        load_prompts(write_jsonl(tmp_path / "p.jsonl", rows)),
        load_prompts(write_csv(tmp_path / "p.csv", rows)),
        load_prompts(write_parquet(tmp_path / "p.parquet", rows)),
        load_prompts(write_dataset(tmp_path / "ds", rows)),
    ]
    txt = tmp_path / "p.txt"
    txt.write_text("How do I boil an egg?\nWhy is the sky blue?\n")
    loaded.append(load_prompts(txt))
    keys = {tuple(r.key for r in prompts) for prompts in loaded}
    assert len(keys) == 1
    (first_keys,) = keys
    assert first_keys[0] != first_keys[1]
    assert first_keys[0] == prompt_key("How do I boil an egg?")
    assert len(first_keys[0]) == 64


def test_keys_ignore_responses_and_distinguish_shapes() -> None:
    plain = PromptRecord.model_validate({"prompt": "hi", "responses": ["x"], "source": "a:1"})
    again = PromptRecord(prompt="hi", source="b:9")
    conv = PromptRecord.model_validate({"prompt": [{"role": "user", "content": "hi"}]})
    assert plain.key == again.key
    assert conv.key != plain.key
    assert conv.key == PromptRecord(prompt=(Message(role="user", content="hi"),)).key


def test_example_prompts_file() -> None:
    prompts = load_prompts(REPO / "examples" / "prompts.jsonl")
    assert 8 <= len(prompts) <= 20
    assert prompts.duplicates_dropped == 0
    assert any(r.is_conversational for r in prompts)


def test_records_round_trip_through_json(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": CONVERSATION}, *ROWS])
    for record in load_prompts(path):
        assert PromptRecord.model_validate_json(record.model_dump_json()) == record
