"""Loading, digesting, linting, freezing and diffing constitutions (the Python API)."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.constitution import (
    Constitution,
    ConstitutionError,
    VersionError,
    diff_constitutions,
    freeze,
    get_version,
    history,
    inspect_directory,
    load_constitution,
    resolve,
    scaffold_principle,
)
from charter.store import open_store

from .conftest import DEFAULT_PRINCIPLES


def codes(directory: Path) -> dict[str, str]:
    """Finding code -> file name, for the errors found in `directory`."""
    return {f.code: f.path.name for f in inspect_directory(directory).errors}


def test_default_constitution_is_valid_and_broad() -> None:
    inspection = inspect_directory(DEFAULT_PRINCIPLES)
    assert inspection.findings == []
    c = inspection.constitution
    assert c is not None
    assert len(c.enabled) >= 16
    tags = {t for p in c.principles for t in p.tags}
    assert {"harmlessness", "helpfulness", "honesty"} <= tags


def test_digest_is_stable_and_ignores_formatting(principles_dir: Path) -> None:
    before = load_constitution(principles_dir).digest
    assert load_constitution(principles_dir).digest == before
    path = principles_dir / "clarity.toml"
    text = path.read_text()
    # Same meaning, different TOML: basic strings instead of multi-line, keys reordered,
    # comments and blank lines added, whitespace around the text.
    p = load_constitution(principles_dir).principle("clarity")
    path.write_text(
        f"# reformatted\n\ncomparison = {p.comparison!r}\n".replace("'", '"')
        + f'critique = "  {p.critique}  "\n'
        + f'revision = """{p.revision}"""\n'
        + f'title = "{p.title}"\n'
        + 'tags = ["helpfulness", "helpfulness"]\n'
        + f'id = "clarity"\nweight = {p.weight}\n'
        + f'score = "  {p.score}"\n'
        + text[text.index("[[examples]]") :]  # the examples, as they were
    )
    assert path.read_text() != text
    assert load_constitution(principles_dir).digest == before


def test_digest_changes_with_meaning(principles_dir: Path) -> None:
    before = load_constitution(principles_dir)
    path = principles_dir / "clarity.toml"
    path.write_text(path.read_text().replace("clearer", "plainer"))
    after = load_constitution(principles_dir)
    assert after.digest != before.digest
    # Only the edited principle's own digest moved.
    moved = [p.id for p in after.principles if p.digest != before.principle(p.id).digest]
    assert moved == ["clarity"]


def test_digest_ignores_file_order_and_version_label(principles_dir: Path, tmp_path: Path) -> None:
    before = load_constitution(principles_dir).digest
    renamed = tmp_path / "copy"
    renamed.mkdir()
    for f in sorted(principles_dir.iterdir(), reverse=True):
        (renamed / f.name).write_bytes(f.read_bytes())
    header = renamed / "constitution.toml"
    header.write_text(header.read_text().replace('version = "1.0.0"', 'version = "9.9"'))
    relabelled = load_constitution(renamed)
    assert relabelled.version == "9.9" and relabelled.digest == before
    # Files are read in name order whatever the directory says, so the order principles are
    # given in is tested on the model itself: reversed, the digest is the same.
    c = load_constitution(principles_dir)
    shuffled = Constitution.model_validate(
        c.model_dump() | {"principles": [p.model_dump() for p in reversed(c.principles)]}
    )
    assert shuffled.digest == before


def test_disabling_a_principle_changes_digest(principles_dir: Path) -> None:
    before = load_constitution(principles_dir).digest
    path = principles_dir / "concision.toml"
    path.write_text("enabled = false\n" + path.read_text())  # top-level, before [[examples]]
    c = load_constitution(principles_dir)
    assert c.digest != before
    assert "concision" not in {p.id for p in c.enabled}


GOOD = """id = "{id}"
title = "T"
critique = "Critique it."
revision = "Revise it."
comparison = "Which response is better?"
"""


@pytest.mark.parametrize(
    ("content", "code", "line"),
    [
        (b'id = "x"\ntitle = "unterminated\n', "bad-toml", 2),
        (GOOD.format(id="x").encode() + b'title2 = "\xff\xfe"\n', "not-utf8", 6),
        (
            GOOD.format(id="x").replace('revision = "Revise it."\n', "").encode(),
            "missing-field",
            None,
        ),
        (GOOD.format(id="x").encode() + b'colour = "blue"\n', "unknown-key", 6),
        (GOOD.format(id="x").replace('"Revise it."', '"   "').encode(), "empty-text", 4),
        (GOOD.format(id="y").encode(), "id-mismatch", 1),
        (
            GOOD.format(id="x").replace("Which response is better?", "Rate the response.").encode(),
            "comparison-no-choice",
            5,
        ),
        (GOOD.format(id="x").encode() + b"weight = -1\n", "invalid-value", 6),
        (
            GOOD.format(id="x").encode() + b'score = "Which response is safer?"\n',
            "score-not-yes-no",
            6,
        ),
        (GOOD.format(id="x").encode() + b'score = "Rate the response."\n', "score-not-yes-no", 6),
        (GOOD.format(id="x").encode() + b'score = "Is it kind"\n', "score-not-yes-no", 6),
        (GOOD.format(id="x").encode() + b'score = "  "\n', "empty-text", 6),
    ],
    ids=[
        "bad-toml",
        "not-utf8",
        "missing",
        "unknown",
        "empty",
        "mismatch",
        "no-choice",
        "weight",
        "score-chooses",
        "score-not-a-question",
        "score-no-question-mark",
        "score-empty",
    ],
)
def test_bad_principle_file_names_file_and_line(
    principles_dir: Path, content: bytes, code: str, line: int | None
) -> None:
    (principles_dir / "x.toml").write_bytes(content)
    errors = inspect_directory(principles_dir).errors
    assert [(e.code, e.path.name) for e in errors] == [(code, "x.toml")]
    assert errors[0].line == line
    with pytest.raises(ConstitutionError) as raised:
        load_constitution(principles_dir)
    assert "x.toml" in str(raised.value)


def test_duplicate_ids_name_both_files(principles_dir: Path) -> None:
    (principles_dir / "clarity-copy.toml").write_text(GOOD.format(id="clarity"))
    found = {(e.code, e.path.name) for e in inspect_directory(principles_dir).errors}
    assert ("duplicate-id", "clarity.toml") in found
    assert ("duplicate-id", "clarity-copy.toml") in found


def test_every_principle_disabled(tmp_path: Path) -> None:
    (tmp_path / "constitution.toml").write_text('name = "n"\nversion = "1"\n')
    (tmp_path / "x.toml").write_text(GOOD.format(id="x") + "enabled = false\n")
    assert codes(tmp_path) == {"all-disabled": tmp_path.name}


def test_directory_problems(tmp_path: Path) -> None:
    assert codes(tmp_path / "missing") == {"no-directory": "missing"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert set(codes(empty)) == {"no-principles", "no-header"}


def test_header_unknown_key_and_bad_defaults(principles_dir: Path) -> None:
    header = principles_dir / "constitution.toml"
    header.write_text(header.read_text() + "owner = 'me'\n")
    assert codes(principles_dir) == {"unknown-key": "constitution.toml"}
    header.write_text(header.read_text().replace("owner = 'me'\n", "").replace("= 4", "= 0"))
    [error] = inspect_directory(principles_dir).errors
    assert error.field == "defaults.principles_per_comparison"


def test_scaffold_fails_lint_until_filled(principles_dir: Path) -> None:
    path = scaffold_principle(principles_dir, "kindness")
    found = {e.code for e in inspect_directory(principles_dir).errors}
    assert found == {"empty-text"}
    text = path.read_text().replace('title = ""', 'title = "Kindness"')
    for field, value in [
        ("critique", "Point out unkind words."),
        ("revision", "Rewrite kindly."),
        ("comparison", "Which response is kinder?"),
    ]:
        text = text.replace(f'{field} = """\n"""', f'{field} = """\n{value}\n"""')
    path.write_text(text)
    assert inspect_directory(principles_dir).ok
    with pytest.raises(FileExistsError):
        scaffold_principle(principles_dir, "kindness")
    with pytest.raises(ValueError, match="invalid principle id"):
        scaffold_principle(principles_dir, "Bad Id")


def test_freeze_edit_freeze_diff_log(principles_dir: Path, store_path: Path) -> None:
    db = open_store(store_path)
    first = freeze(db, load_constitution(principles_dir), "first")
    assert first.created
    assert not freeze(db, load_constitution(principles_dir)).created  # idempotent

    path = principles_dir / "truthfulness.toml"
    path.write_text(path.read_text().replace("more truthful", "more honest"))
    with pytest.raises(VersionError, match=r'already names other content.*version = "1.0.1"'):
        freeze(db, load_constitution(principles_dir))
    header = principles_dir / "constitution.toml"
    header.write_text(header.read_text().replace('"1.0.0"', '"1.1.0"'))
    second = freeze(db, load_constitution(principles_dir), "second")
    assert second.created

    assert [v.version for v in history(db)] == ["1.1.0", "1.0.0"]
    d = diff_constitutions(resolve(db, "1.0.0"), resolve(db, second.frozen.digest[:8]))
    assert d.added == [] and d.removed == []
    assert [c.id for c in d.changed] == ["truthfulness"]
    [change] = d.changed[0].changes
    assert change.field == "comparison"
    assert "-Which response is more truthful" in change.diff
    assert "+Which response is more honest" in change.diff
    # A directory compares against a frozen version too.
    assert not diff_constitutions(resolve(db, str(principles_dir)), resolve(db, "1.1.0")).changed


def test_frozen_versions_survive_failed_commands(principles_dir: Path, store_path: Path) -> None:
    db = open_store(store_path)
    freeze(db, load_constitution(principles_dir), "keep me")
    (principles_dir / "broken.toml").write_text("id = [")
    with pytest.raises(ConstitutionError):
        freeze(db, load_constitution(principles_dir))
    [only] = history(open_store(store_path))
    assert only.message == "keep me"
    assert only.constitution.digest == only.digest


def test_version_lookup_errors(store_path: Path, principles_dir: Path) -> None:
    db = open_store(store_path)
    with pytest.raises(VersionError, match="no frozen version"):
        get_version(db, "1.0.0")
    freeze(db, load_constitution(principles_dir))
    with pytest.raises(VersionError, match="no frozen version"):
        get_version(db, "abc")  # too short to be a digest prefix
