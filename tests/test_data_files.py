"""Data files in: one reader, one error, limits on files, rows and texts, no crash on any input.

Every command that reads a data file is fed every kind of broken file and must answer with one
`Error:` line naming the file (and the line where there is one), exit non-zero without a
traceback, call no model, and leave the store's rows as they were.
"""

from __future__ import annotations

import json
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from tests.support.generation import PROMPTS, responder, write_constitution, write_prompts
from tests.support.scripted_server import ScriptedJudgeServer

DEEP = "[" * 100_000 + "]" * 100_000
"""Nesting far past what a recursive JSON parser survives: the probe that crashed the loader."""

ROW_LIMIT = 4096
FILE_LIMIT = 4096


# --- the files -------------------------------------------------------------------------------

# What each kind of file holds when it is good, and the field its rows need.
GOOD: dict[str, dict[str, Any]] = {
    "prompts": {"prompt": "How do I boil an egg?"},
    "pairs": {"prompt": "Q?", "a": "Yes, like this.", "b": "No."},
    "labelled": {"prompt": "Q?", "a": "Yes, like this.", "b": "No.", "preferred": "a"},
    "preference": {"prompt": "Q?", "chosen": "Yes, like this.", "rejected": "No."},
    "prompt_rows": {"prompt": "How do I boil an egg?"},
    "calibration": {"temperature": 1.5, "bias": 0.0},
}
NEEDED = {
    "prompts": "prompt",
    "pairs": "b",
    "labelled": "preferred",
    "preference": "rejected",
    "prompt_rows": "prompt",
    "calibration": "temperature",
}
# Kinds whose reader drops a row with a missing or mistyped field.
DROPS_ROWS = {"preference", "prompt_rows"}


@dataclass(frozen=True)
class Broken:
    """A broken file: its name, its bytes (None: a directory; absent: not written), the line
    the error must name (None: none), and limits to set in the environment."""

    name: str
    content: bytes | None
    line: int | None
    env: tuple[tuple[str, str], ...] = ()
    absent: bool = False


def _lines(*rows: object) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _good_then(kind: str, row: object) -> Broken:
    return Broken("data.jsonl", _lines(GOOD[kind], row), 2)


def _bad_row(kind: str, row: dict[str, Any]) -> Broken:
    """Training readers drop unusable rows (and count them): only a file of nothing else is
    an error, and it names the file, not a line."""
    if kind in DROPS_ROWS:
        return Broken("data.jsonl", _lines(row), None)
    return _good_then(kind, row)


def _jsonl_fault(fault: str, kind: str) -> Broken:
    good, needed = GOOD[kind], NEEDED[kind]
    if fault == "not utf-8":
        return Broken("data.jsonl", _lines(good) + json.dumps(good).encode()[:-1] + b'\xff"}\n', 2)
    if fault == "invalid json":
        return _good_then(kind, '{"prompt": "Q?",')
    if fault == "nested too deep":
        return _good_then(kind, DEEP)
    if fault == "wrong top-level type":
        return _good_then(kind, [1, 2])
    if fault == "missing field":
        return _bad_row(kind, {k: v for k, v in good.items() if k != needed} | {"other": "x"})
    if fault == "wrong field type":
        return _bad_row(kind, good | {needed: 5})
    if fault == "text over limit":
        return _good_then(kind, good | {needed: "x" * 100_001})
    if fault == "row over limit":
        env = (("CHARTER_MAX_ROW_BYTES", str(ROW_LIMIT)),)
        row = good | {"notes": ["y" * 1000] * 5}
        return Broken("data.jsonl", _lines(good, row), 2, env)
    if fault == "file over limit":
        env = (("CHARTER_MAX_FILE_BYTES", str(FILE_LIMIT)),)
        return Broken("data.jsonl", _lines(*[good] * (FILE_LIMIT // 20)), None, env)
    raise AssertionError(fault)


def _calibration_fault(fault: str) -> Broken:
    """A calibration file is one JSON document: its faults, where it has them."""
    body = json.dumps(GOOD["calibration"])
    cases: dict[str, tuple[bytes, int | None, tuple[tuple[str, str], ...]]] = {
        "not utf-8": (b'{"temperature": 1.5, "bias": "\xff"}', 1, ()),
        "invalid json": (b'{"temperature": 1.5,', 1, ()),
        "nested too deep": (DEEP.encode(), 1, ()),
        "wrong top-level type": (b"[1.5, 0.0]", None, ()),
        "missing field": (b'{"bias": 0.1}', None, ()),
        "wrong field type": (b'{"temperature": "hot"}', None, ()),
        "file over limit": (
            (body + " " * FILE_LIMIT).encode(),
            None,
            (("CHARTER_MAX_FILE_BYTES", str(FILE_LIMIT)),),
        ),
    }
    content, line, env = cases[fault]
    return Broken("calibration.json", content, line, env)


def broken_file(fault: str, kind: str) -> Broken:
    """The file of `kind` with `fault`."""
    if fault == "empty file":
        return Broken("data.json" if kind == "calibration" else "data.jsonl", b"", None)
    if fault == "csv missing column":
        # Prompt readers read CSV; the others do not, and must say so (or that it is not JSON).
        line = 1 if kind in ("prompts", "pairs", "labelled", "calibration") else None
        return Broken("data.csv", b"question\nhow?\n", line)
    if fault == "corrupt parquet":
        line = 1 if kind in ("pairs", "labelled", "calibration") else None
        return Broken("data.parquet", b"PAR1\x15\x04\xff\xfe not parquet", line)
    if fault == "directory":
        return Broken("data.json" if kind == "calibration" else "data.jsonl", None, None)
    if fault == "missing file":
        return Broken("absent.jsonl", b"", None, absent=True)
    if kind == "calibration":
        return _calibration_fault(fault)
    return _jsonl_fault(fault, kind)


FAULTS = [
    "not utf-8",
    "invalid json",
    "nested too deep",
    "wrong top-level type",
    "missing field",
    "wrong field type",
    "empty file",
    "text over limit",
    "row over limit",
    "file over limit",
    "csv missing column",
    "corrupt parquet",
    "directory",
    "missing file",
]
NO_ROWS = {"text over limit", "row over limit"}  # a calibration has no rows or texts


# --- the commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    principles: Path
    store: Path
    labelled: Path
    judge_url: str

    def judge(self) -> list[str]:
        return ["--judge", "openai:scripted", "--judge-base-url", self.judge_url]


Args = Callable[[World, str, Path], list[str]]

# Command -> (kind of file it reads, its arguments given the world, the file and a scratch dir).
COMMANDS: dict[str, tuple[str, Args]] = {
    "generate": (
        "prompts",
        lambda w, f, tmp: [
            "generate", "--prompts", f, *w.judge(), "--policy", "openai:scripted",
            "--policy-base-url", w.judge_url, "--dir", str(w.principles), "--store", str(w.store),
        ],
    ),
    "eval": (
        "prompts",
        lambda w, f, tmp: [
            "eval", "--prompts", f, "--model", "openai:scripted", "--baseline", "openai:scripted",
            "--model-base-url", w.judge_url, "--baseline-base-url", w.judge_url, *w.judge(),
            "--dir", str(w.principles), "--store", str(w.store),
        ],
    ),
    "judge compare": (
        "pairs",
        lambda w, f, tmp: [
            "judge", "compare", "--pairs", f, *w.judge(), "--dir", str(w.principles),
        ],
    ),
    "judge eval": (
        "labelled",
        lambda w, f, tmp: [
            "judge", "eval", "--pairs", f, *w.judge(), "--dir", str(w.principles),
            "--store", str(w.store),
        ],
    ),
    "judge calibrate": (
        "labelled",
        lambda w, f, tmp: [
            "judge", "calibrate", "--pairs", f, *w.judge(), "--dir", str(w.principles),
            "--store", str(w.store),
        ],
    ),
    "judge eval --calibration": (
        "calibration",
        lambda w, f, tmp: [
            "judge", "eval", "--pairs", str(w.labelled), "--calibration", f, *w.judge(),
            "--dir", str(w.principles), "--store", str(w.store),
        ],
    ),
    **{
        f"train {method}": (
            "preference" if method in ("dpo", "reward") else "prompt_rows",
            lambda w, f, tmp, method=method: [
                "train", "-q", method, "--data", f, "--model", str(tmp / "no-model"),
                "--out", str(tmp / "out"), "--store", str(w.store),
                *(["--reward-model", str(tmp / "no-rm")] if method == "ppo" else []),
                *([*w.judge(), "--dir", str(w.principles)] if method in ("grpo", "rloo") else []),
            ],
        )
        for method in ("dpo", "reward", "ppo", "grpo", "rloo")
    },
}  # fmt: skip

CASES = [
    pytest.param(
        command,
        fault,
        id=f"{command}-{fault}",
        marks=[pytest.mark.ppo] if command == "train ppo" else [],
    )
    for command, (kind, _) in COMMANDS.items()
    for fault in FAULTS
    if not (kind == "calibration" and fault in NO_ROWS)
]


def store_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(tuple, db.execute(f"select * from [{t}]")), key=repr) for t in tables}


@pytest.fixture(scope="module")
def judge_server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(responder(PROMPTS[:2])) as server:
        yield server


@pytest.fixture(scope="module")
def filled_store(
    tmp_path_factory: pytest.TempPathFactory, judge_server: ScriptedJudgeServer
) -> tuple[Path, Path]:
    """(principles, a store holding a finished job, its preferences and its calls)."""
    root = tmp_path_factory.mktemp("filled")
    principles = write_constitution(root / "principles")
    store = root / "store.db"
    prompts = write_prompts(root / "prompts.jsonl", PROMPTS[:2])
    result = CliRunner().invoke(
        cli,
        ["generate", "--prompts", str(prompts), "--dir", str(principles), "--store", str(store),
         "--judge", "openai:scripted", "--policy", "openai:scripted",
         "--judge-base-url", judge_server.base_url, "--policy-base-url", judge_server.base_url],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert store_rows(store)["preferences"]
    return principles, store


@pytest.fixture
def world(
    tmp_path: Path, filled_store: tuple[Path, Path], judge_server: ScriptedJudgeServer
) -> World:
    principles, store = filled_store
    copy = tmp_path / "store.db"
    with sqlite3.connect(store) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_bytes(_lines(GOOD["labelled"]))
    return World(principles, copy, labelled, judge_server.base_url)


def write_broken(broken: Broken, directory: Path) -> Path:
    path = directory / broken.name
    if broken.content is None:
        path.mkdir()
    elif not broken.absent:
        path.write_bytes(broken.content)
    return path


@pytest.mark.parametrize(("command", "fault"), CASES)
def test_every_command_refuses_every_broken_file_in_one_line(
    command: str,
    fault: str,
    world: World,
    tmp_path: Path,
    judge_server: ScriptedJudgeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind, args = COMMANDS[command]
    broken = broken_file(fault, kind)
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = write_broken(broken, inputs)
    for name, value in broken.env:
        monkeypatch.setenv(name, value)
    before = store_rows(world.store)
    calls = judge_server.calls

    result = CliRunner().invoke(cli, args(world, str(path), tmp_path))

    output = result.stdout + result.stderr
    assert result.exit_code != 0, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in output
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert broken.name in error, error
    if broken.line is not None:
        assert f"{broken.name}:{broken.line}" in error, error
    assert store_rows(world.store) == before
    assert judge_server.calls == calls


# --- the readers -----------------------------------------------------------------------------


def load_with(reader: str, path: Path) -> object:
    """Read `path` with one of charter's readers (imported here: they are what is tested)."""
    if reader == "prompts":
        from charter.prompt_files import load_prompts

        return load_prompts(path)
    if reader == "pairs":
        from charter.judge import load_pairs

        return load_pairs(path, labelled=False)
    if reader == "training":
        from charter.trainer import load_preference_data

        return load_preference_data(path)
    raise AssertionError(reader)


ROWS = {
    "prompts": GOOD["prompts"],
    "pairs": GOOD["pairs"],
    "training": GOOD["preference"],
}


@pytest.mark.parametrize(
    ("reader", "name", "content", "where"),
    [
        ("prompts", "p.jsonl", _lines(ROWS["prompts"], DEEP), "p.jsonl:2:1: "),
        (
            "prompts",
            "p.json",
            f"[\n{json.dumps(ROWS['prompts'])},\n{DEEP}]".encode(),
            "p.json:3:1: ",
        ),
        ("prompts", "p.csv", b"prompt,responses\nq," + b"[" * 20_000 + b"]" * 20_000, "p.csv:2: "),
        ("pairs", "p.jsonl", _lines(ROWS["pairs"], DEEP), "p.jsonl:2:1: "),
        ("training", "p.jsonl", _lines(ROWS["training"], DEEP), "p.jsonl:2:1: "),
        (
            "training",
            "p.json",
            f"[{json.dumps(ROWS['training'])},\n {DEEP}]".encode(),
            "p.json:2:2: ",
        ),
    ],
    ids=["prompts-jsonl", "prompts-json", "prompts-csv-cell", "pairs", "train-jsonl", "train-json"],
)
def test_nesting_too_deep_is_a_located_error_not_a_recursion_error(
    reader: str, name: str, content: bytes, where: str, tmp_path: Path
) -> None:
    from charter.common.datafiles import DataFileError

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        load_with(reader, path)
    message = str(info.value)
    assert message.startswith(f"{path.parent}/{where}"), message
    assert "\n" not in message
    assert "JSON nested too deeply to read" in message


def test_rows_deeper_than_the_stack_are_checked_without_recursion() -> None:
    """Parquet or `datasets` rows are not limited by a JSON parser's depth."""
    from charter.common.datafiles import DataFileError, check_row
    from charter.common.limits import InputLimits

    value: object = "deep"
    for _ in range(5000):
        value = [value]
    check_row(Path("t.parquet"), 1, {"prompt": value}, InputLimits(), unit="row")
    with pytest.raises(DataFileError, match=r"t\.parquet: row 1: 'prompt\[1\]\[1\]"):
        check_row(
            Path("t.parquet"), 1, {"prompt": value}, InputLimits(max_text_chars=3), unit="row"
        )


def test_calibration_file_nested_too_deep(tmp_path: Path) -> None:
    from charter.calibrations import CalibrationError, load
    from charter.store import open_store

    path = tmp_path / "cal.json"
    path.write_text(DEEP)
    with pytest.raises(CalibrationError, match=r"cal\.json:1:1: .*nested too deeply"):
        load(open_store(tmp_path / "s.db"), str(path))


@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        (
            "principles/constitution.toml",
            f'name = "t"\nversion = "1"\nx = {DEEP}\n'.encode(),
            ["constitution", "show", "--dir", "{dir}"],
            "constitution.toml:4: error: malformed TOML: TOML nested too deeply to read",
        ),
        (
            "train.toml",
            f"beta = {DEEP}\n".encode(),
            [
                "train",
                "dpo",
                "--config",
                "{file}",
                "--data",
                "x.jsonl",
                "--model",
                "m",
                "--out",
                "o",
            ],
            "train.toml: not valid TOML: TOML nested too deeply to read",
        ),
        (
            "train.toml",
            b"beta = 0.1\nlearning_rate = \xff\n",
            [
                "train",
                "dpo",
                "--config",
                "{file}",
                "--data",
                "x.jsonl",
                "--model",
                "m",
                "--out",
                "o",
            ],
            "train.toml:2:17: not valid UTF-8 (byte offset 27)",
        ),
        (
            "tokens.txt",
            b"a-good-long-token-0123456789\nbad-\xff\n",
            ["serve", "--tokens-file", "{file}", "--port", "0", "--dir", "{dir}"],
            "tokens file {file}:2:5: not valid UTF-8 (byte offset 33)",
        ),
    ],
    ids=["principle-file-nested", "train-config-nested", "train-config-not-utf8", "tokens-file"],
)
def test_other_files_the_cli_reads_are_one_line_errors(
    name: str,
    content: bytes,
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHARTER_API_TOKENS", raising=False)
    monkeypatch.chdir(tmp_path)
    principles = write_constitution(tmp_path / "principles")
    path = tmp_path / name
    path.write_bytes(content)
    filled = [a.format(file=path, dir=principles) for a in args]
    result = CliRunner().invoke(cli, filled)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message.format(file=path) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_every_reader_words_the_same_problem_the_same_way(tmp_path: Path) -> None:
    from charter.common.datafiles import DataFileError

    reasons = set()
    for reader, row in ROWS.items():
        path = tmp_path / f"{reader}.jsonl"
        path.write_bytes(_lines(row) + b'{"prompt": "Q?",\n')
        with pytest.raises(DataFileError) as info:
            load_with(reader, path)
        assert (info.value.line, info.value.column) == (2, 17)
        reasons.add(info.value.reason)
    assert reasons == {"not valid JSON (Expecting property name enclosed in double quotes)"}


def test_json_lines_under_a_json_name_are_training_data_but_not_prompts(tmp_path: Path) -> None:
    """`datasets`' `to_json` writes JSON Lines as .json: training data takes it; a prompts
    .json must be an array, and the error says what to do."""
    from charter.prompt_files import PromptFileError
    from charter.trainer import load_preference_data

    path = tmp_path / "rows.json"
    path.write_bytes(_lines(GOOD["preference"], GOOD["preference"] | {"prompt": "Another?"}))
    assert [r["prompt"] for r in load_preference_data(path).train] == ["Q?", "Another?"]
    with pytest.raises(PromptFileError, match=r"rows\.json:1: expected a JSON array .*use \.jsonl"):
        load_with("prompts", path)


# --- the limits ------------------------------------------------------------------------------


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` in the format `path`'s suffix names."""
    if path.suffix == ".jsonl":
        path.write_bytes(_lines(*rows))
    elif path.suffix == ".json":
        path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    elif path.suffix == ".csv":
        import csv

        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".txt":
        path.write_text("".join(r["prompt"] + "\n" for r in rows))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))


# (reader, file name): every format each reader takes.
FORMATS = [
    *(("prompts", f"p{s}") for s in (".jsonl", ".json", ".csv", ".txt", ".parquet", "_dir")),
    ("pairs", "p.jsonl"),
    *(("training", f"p{s}") for s in (".jsonl", ".json", ".parquet", "_dir")),
]


@pytest.mark.parametrize(("reader", "name"), FORMATS)
@pytest.mark.parametrize(
    ("variable", "fits", "over"),
    [
        ("CHARTER_MAX_TEXT_CHARS", "5000", "1000"),
        ("CHARTER_MAX_ROW_BYTES", "20000", "2000"),
        ("CHARTER_MAX_FILE_BYTES", "10000000", "1000"),
    ],
)
def test_each_limit_is_named_and_raising_it_lets_the_same_file_load(
    reader: str,
    name: str,
    variable: str,
    fits: str,
    over: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from charter.common.datafiles import DataFileError

    long_text = "word " * 500  # 2,500 characters
    rows = [dict(ROWS[reader]), dict(ROWS[reader])]
    rows[0]["prompt"] = "Short question?"
    rows[1]["prompt"] = long_text
    path = tmp_path / name
    write_table(path, rows)

    monkeypatch.setenv(variable, over)
    with pytest.raises(DataFileError) as info:
        load_with(reader, path)
    message = str(info.value)
    assert variable in message and f"{int(over):,}" in message and "\n" not in message
    assert message.startswith(str(path))
    if variable != "CHARTER_MAX_FILE_BYTES":  # the long text is on the second row
        assert info.value.line == (3 if name in ("p.json", "p.csv") else 2), message

    monkeypatch.setenv(variable, fits)
    loaded = load_with(reader, path)
    assert loaded is not None


def test_a_50_mb_row_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    from charter.common.limits import InputLimits
    from charter.prompt_files import PromptFileError, load_prompts

    path = tmp_path / "huge.jsonl"
    size = 50 * 1024 * 1024
    with path.open("w") as f:
        f.write('{"prompt": "' + "x" * size + '"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(
            PromptFileError, match=r"huge\.jsonl:1: line is too long.*MAX_ROW_BYTES"
        ):
            load_prompts(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What refusing costs is bounded by the limit (one buffer of it, twice), not by the row.
    bound = 3 * InputLimits().max_row_bytes
    assert peak < bound < size // 2, f"peak {peak:,} bytes while refusing a {size:,}-byte row"


def test_a_limit_set_to_nonsense_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:1])
    monkeypatch.setenv("CHARTER_MAX_ROW_BYTES", "a lot")
    result = CliRunner().invoke(
        cli, ["eval", "--prompts", str(prompts), "--model", "smollm2", "--baseline", "smollm2",
              "--dir", str(write_constitution(tmp_path / "principles"))],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == (
        "Error: CHARTER_MAX_ROW_BYTES='a lot': Input should be a valid integer, unable to parse "
        "string as an integer"
    )
    monkeypatch.setenv("CHARTER_MAX_ROW_BYTES", "0")
    with pytest.raises(ValueError, match="CHARTER_MAX_ROW_BYTES='0': Input should be greater"):
        from charter.common.limits import InputLimits

        InputLimits.from_env()


def test_limits_agree_with_the_service() -> None:
    """A request body can carry the largest row allowed, and requests take the texts files do."""
    from charter.common.limits import InputLimits
    from charter.service.schemas import ChatMessage, CompareRequest
    from charter.service.settings import ServiceSettings

    limits = InputLimits()
    body = ServiceSettings.model_fields["max_body_bytes"].default
    assert limits.max_text_chars * 3 < limits.max_row_bytes < body <= limits.max_file_bytes
    at_limit = "x" * limits.max_text_chars
    CompareRequest(prompt=at_limit, a="a", b="b")
    ChatMessage(role="user", content=at_limit)
    with pytest.raises(ValueError, match="at most 100000 characters"):
        CompareRequest(prompt=at_limit + "x", a="a", b="b")


# --- the service -----------------------------------------------------------------------------


def test_service_uploads_and_requests_meet_the_same_reader_and_limits(
    tmp_path: Path, judge_server: ScriptedJudgeServer
) -> None:
    import httpx

    from charter.service.settings import ServiceSettings
    from tests.support.service import TOKEN_A, running_service

    settings = ServiceSettings(
        store_path=tmp_path / "service.db",
        principles_dir=write_constitution(tmp_path / "principles"),
        judge="openai:scripted",
        policy="openai:scripted",
        judge_base_url=judge_server.base_url,
        policy_base_url=judge_server.base_url,
        tokens=(TOKEN_A,),  # type: ignore[arg-type]
    )
    calls = judge_server.calls
    uploads = {
        "deep.jsonl": (_lines(GOOD["prompts"], DEEP), "deep.jsonl:2:1: JSON nested too deeply"),
        "long.jsonl": (
            _lines(GOOD["prompts"], {"prompt": "x" * 100_001}),
            "long.jsonl:2: 'prompt' is 100,001 characters, over the limit of 100,000 "
            "characters; set CHARTER_MAX_TEXT_CHARS to raise it",
        ),
    }
    with (
        running_service(settings) as service,
        httpx.Client(
            base_url=service.base_url, headers={"Authorization": f"Bearer {TOKEN_A}"}
        ) as http,
    ):
        for name, (content, message) in uploads.items():
            response = http.post("/v1/jobs", files={"file": (name, content)})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_prompts" and error["message"].startswith(message)
        inline = http.post("/v1/jobs", json={"prompts": [{"prompt": "x" * 100_001}]})
        assert inline.status_code == 422 and "100000 characters" in inline.text
        deep_inline = http.post(
            "/v1/jobs",
            content=b'{"prompts": [' + DEEP.encode() + b"]}",
            headers={"Content-Type": "application/json"},
        )
        assert deep_inline.status_code == 422, deep_inline.text
        assert http.get("/v1/jobs").json()["jobs"] == []
    assert judge_server.calls == calls
