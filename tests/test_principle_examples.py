"""Examples in principle files: the default constitution's, lint's file:line errors, the digest
rule, few-shot demonstrations, and `charter principles test` against the scripted judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.constitution import Example, inspect_directory, load_constitution
from charter.judge.prompts import comparison_messages, critique_messages, score_messages
from tests.support.relevance import Case, RelevanceResponder
from tests.support.scripted_server import ScriptedJudgeServer

from .conftest import DEFAULT_PRINCIPLES

UNIVERSAL = {"clarity", "helpful-directness", "respect", "truthfulness"}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------ the default constitution


def test_default_principles_carry_examples_and_applies_both_ways() -> None:
    constitution = load_constitution(DEFAULT_PRINCIPLES)
    assert {p.id for p in constitution.principles if not p.conditional} == UNIVERSAL
    for p in constitution.principles:
        assert len(p.examples) >= 3, p.id
        stated = {e.applies for e in p.examples}
        if p.conditional:
            assert {True, False} <= stated, p.id
        else:
            assert stated == {None}, p.id
    prompts = [e.prompt for p in constitution.principles for e in p.examples]
    assert len(prompts) == len(set(prompts))  # each example its own case


# ------------------------------------------------------------------ lint: file:line errors

HEAD = """id = "x"
title = "T"
critique = "Critique it."
revision = "Revise it."
comparison = "Which response is better?"
applies = "Does the user ask about bread?"
"""
GOOD_EXAMPLE = """
[[examples]]
prompt = "How do I bake bread?"
better = "Knead, prove, bake at 220 C."
worse = "Buy some."
applies = true
"""


@pytest.mark.parametrize(
    ("extra", "code", "line", "field"),
    [
        ('\n[[examples]]\nprompt = "P"\nbetter = "B"\n', "missing-field", 14, "examples[2]"),
        ('\n[[examples]]\nprompt = "P"\nbetter = "  "\nworse = "W"\n', "empty-text", 16,
         "examples[2].better"),
        ('\n[[examples]]\nprompt = "P"\nbetter = "Same."\nworse = " Same. "\n',
         "same-better-worse", 17, "examples[2].worse"),
        (GOOD_EXAMPLE, "duplicate-example", 14, "examples[2]"),
        ('\n[[examples]]\nprompt = "P"\nbetter = "B"\nworse = "W"\nwhy = ""\n', "empty-text", 18,
         "examples[2].why"),
        ('\n[[examples]]\nprompt = "P"\nbetter = "B"\nworse = "W"\nscore = 1\n', "unknown-key",
         18, "examples[2].score"),
        ('\n[[examples]]\nprompt = "P"\nbetter = "B"\nworse = "W"\napplies = "yes"\n',
         "invalid-value", 18, "examples[2].applies"),
        ('\n[[examples]]\nprompt = 3\nbetter = "B"\nworse = "W"\n', "invalid-value", 15,
         "examples[2].prompt"),
    ],
    ids=["missing", "empty", "same", "duplicate", "empty-why", "unknown", "applies-type", "type"],
)  # fmt: skip
def test_malformed_examples_are_one_line_file_line_errors(
    principles_dir: Path, store_path: Path, extra: str, code: str, line: int, field: str
) -> None:
    path = principles_dir / "x.toml"
    path.write_text(HEAD + GOOD_EXAMPLE + extra)
    errors = inspect_directory(principles_dir).errors
    assert [(e.code, e.line, e.field) for e in errors] == [(code, line, field)]
    # The CLI: one line per problem, naming file and line, exit 1, nothing frozen.
    code_, out, err = run("principles", "lint", "--dir", str(principles_dir))
    assert code_ == 1 and f"x.toml:{line} [{field}]: error:" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the error + a count
    code_, out, err = run(
        "constitution", "freeze", "--dir", str(principles_dir), "--store", str(store_path)
    )
    assert code_ == 1 and err.strip().splitlines()[0].startswith("Error:")
    assert f"x.toml:{line}" in err and len(err.strip().splitlines()) == 1
    code_, out, _ = run("constitution", "log", "--store", str(store_path), "--json")
    assert json.loads(out or "[]") == []


def test_applies_on_an_unconditional_principle_and_applies_about_the_response(
    principles_dir: Path,
) -> None:
    path = principles_dir / "x.toml"
    path.write_text(HEAD.replace('applies = "Does the user ask about bread?"\n', "") + GOOD_EXAMPLE)
    [error] = inspect_directory(principles_dir).errors
    assert (error.code, error.line, error.field) == (
        "applies-without-question",
        11,
        "examples[1].applies",
    )
    path.write_text(HEAD.replace("about bread?", "about bread in the response?") + GOOD_EXAMPLE)
    [error] = inspect_directory(principles_dir).errors
    assert (error.code, error.line) == ("applies-not-yes-no", 6)
    path.write_text(HEAD.replace("Does the user ask about bread?", "Bread.") + GOOD_EXAMPLE)
    assert [e.code for e in inspect_directory(principles_dir).errors] == ["applies-not-yes-no"]


# ------------------------------------------------------------------ the digest rule


def test_examples_and_applies_are_part_of_the_principle_digest(principles_dir: Path) -> None:
    """The judge is shown a principle's examples (few-shot), so editing one must change the
    principle's digest, and only that principle's."""
    before = load_constitution(principles_dir)
    path = principles_dir / "privacy.toml"
    path.write_text(path.read_text().replace("About 454 grams", "About 453.6 grams", 1))
    text = (principles_dir / "non-manipulation.toml").read_text()
    assert "About 454 grams" in text  # the edited example lives in non-manipulation instead
    path = principles_dir / "non-manipulation.toml"
    path.write_text(text.replace("About 454 grams.", "About 453.6 grams.", 1))
    after = load_constitution(principles_dir)
    moved = [p.id for p in after.principles if p.digest != before.principle(p.id).digest]
    assert moved == ["non-manipulation"] and after.digest != before.digest
    # ...and an edited `applies` question likewise.
    path = principles_dir / "privacy.toml"
    path.write_text(path.read_text().replace("a particular individual?", "a specific person?"))
    again = load_constitution(principles_dir)
    moved = [p.id for p in again.principles if p.digest != after.principle(p.id).digest]
    assert moved == ["privacy"]


def test_a_principle_without_applies_or_examples_keeps_its_digest() -> None:
    from charter.constitution import Principle, canonical_digest

    fields = {
        "id": "kind",
        "title": "Be kind",
        "critique": "c",
        "revision": "r",
        "comparison": "Which is kinder?",
    }
    old = Principle(**fields)  # type: ignore[arg-type]
    assert old.digest == canonical_digest({**fields, "weight": 1.0, "tags": []})


def test_few_shot_shows_the_examples_and_off_shows_none() -> None:
    constitution = load_constitution(DEFAULT_PRINCIPLES)
    p = constitution.principle("truthfulness")
    first, second = p.examples[0], p.examples[1]
    plain = score_messages(p, "Q?", "R.")
    assert len(plain) == 1 and first.prompt not in plain[0].content
    shown = score_messages(p, "Q?", "R.", few_shot=2)
    assert [m.role for m in shown] == ["user", "assistant"] * 4 + ["user"]
    assert [m.content for m in shown if m.role == "assistant"] == ["Yes", "No"] * 2
    assert first.better in shown[0].content and second.worse in shown[6].content
    pairwise = comparison_messages(p, "Q?", "A.", "B.", few_shot=2)
    assert [m.content for m in pairwise if m.role == "assistant"] == ["A", "B"]
    critique = critique_messages(p, "Q?", "R.", few_shot=1)
    assert first.why is not None and first.why in critique[-1].content
    assert first.prompt not in critique_messages(p, "Q?", "R.")[-1].content


def test_example_model_is_strict() -> None:
    with pytest.raises(ValueError):
        Example(prompt="p", better="b")  # type: ignore[call-arg]


# ------------------------------------------------------------------ charter principles test

TESTED = {
    "kind": ("Which response is kinder?", "Does the user need kindness?"),
    "exact": ("Which response is more exact?", None),
}


def write_tested(directory: Path) -> Path:
    """Two principles, three examples each; `exact`'s examples are what the judge gets wrong."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "constitution.toml").write_text('name = "t"\nversion = "1"\n')
    for pid, (question, applies) in TESTED.items():
        text = (
            f'id = "{pid}"\ntitle = "{pid}"\ncritique = "Critique for {pid}."\n'
            f'revision = "Revise for {pid}."\ncomparison = "{question}"\n'
        )
        if applies:
            text += f'applies = "{applies}"\n'
        for n in range(1, 4):
            text += (
                f'\n[[examples]]\nprompt = "{pid} prompt {n}"\n'
                f'better = "{pid} better {n}"\nworse = "{pid} worse {n}"\n'
            )
            if applies:
                text += f"applies = {'true' if n < 3 else 'false'}\n"
        (directory / f"{pid}.toml").write_text(text)
    return directory


def scripted_for(directory: Path, wrong: dict[str, set[int]]) -> RelevanceResponder:
    """Right on every example except those in `wrong` (principle -> example numbers), and says
    `applies` Yes for the examples that state true."""
    constitution = load_constitution(directory)
    cases = []
    for p in constitution.principles:
        for n, e in enumerate(p.examples, start=1):
            flip = n in wrong.get(p.id, set())
            cases.append(
                Case(
                    prompt=e.prompt,
                    preferred=e.worse if flip else e.better,
                    other=e.better if flip else e.worse,
                    relevant=frozenset({p.id}) if e.applies is not False else frozenset(),
                )
            )
    # An example whose principle does not apply is still judged: `applies` is answered from
    # `relevant`, the verdict from the preferred text either way.
    return RelevanceResponder(constitution, cases, always_right=True)


def principles_test(server: ScriptedJudgeServer, directory: Path, store: Path, *args: str):  # type: ignore[no-untyped-def]
    return run(
        "principles", "test", "--dir", str(directory), "--store", str(store),
        "--judge", "openai:scripted", "--judge-base-url", server.base_url, "--timeout", "2",
        *args,
    )  # fmt: skip


def test_principles_test_fails_names_the_example_then_passes_with_max_fail(
    tmp_path: Path, store_path: Path
) -> None:
    directory = write_tested(tmp_path / "principles")
    with ScriptedJudgeServer(scripted_for(directory, {"exact": {2}})) as server:
        code, out, err = principles_test(server, directory, store_path)
        assert code == 1
        assert "FAIL exact example 2 ('exact prompt 2'): did not choose better" in err
        assert "kind" not in err  # the passing principle is not named as failing
        lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
        assert lines["kind"][1:5] == ["3/3", "0.90", "1.00", "3/3"]
        assert lines["exact"][1] == "2/3" and lines["exact"][-1] == "FAIL"
        made = server.calls
        assert made == 2 * 6 + 3  # both orders of six examples, three applies questions
        # A fraction above the one failing example in three lets it pass; nothing is asked again.
        code, out, err = principles_test(server, directory, store_path, "--max-fail", "0.34")
        assert code == 0, err
        assert server.calls == made
        assert "calls: 0 made, 15 from the store; all principles pass" in out
        code, out, _ = principles_test(server, directory, store_path, "--json", "--max-fail", "0.3")
        assert code == 1 and server.calls == made
        report = json.loads(out)
        exact = next(p for p in report["principles"] if p["principle_id"] == "exact")
        assert (exact["passed"], exact["total"], exact["ok"]) == (2, 3, False)
        assert [e["passed"] for e in exact["examples"]] == [True, False, True]
        kind = next(p for p in report["principles"] if p["principle_id"] == "kind")
        assert (kind["applies_right"], kind["applies_total"]) == (3, 3)
        assert report["calls_made"] == 0 and report["calls_reused"] == 15


def test_principles_test_after_editing_one_principle_asks_only_its_examples(
    tmp_path: Path, store_path: Path
) -> None:
    directory = write_tested(tmp_path / "principles")
    with ScriptedJudgeServer(scripted_for(directory, {})) as server:
        code, _, err = principles_test(server, directory, store_path)
        assert code == 0, err
        made = server.calls
        path = directory / "exact.toml"
        path.write_text(path.read_text().replace("more exact?", "more precise?"))
        server.responder = scripted_for(directory, {})
        code, _, err = principles_test(server, directory, store_path)
        assert code == 0, err
        asked = server.requests[-(server.calls - made) :]
        assert server.calls - made == 6  # exact's three examples, both orders
        assert all("more precise?" in json.dumps(body) for body in asked)


def test_an_applies_answer_that_disagrees_fails_the_example(
    tmp_path: Path, store_path: Path
) -> None:
    directory = write_tested(tmp_path / "principles")
    responder = scripted_for(directory, {})
    # The judge now says No to `kind`'s first example prompt.
    responder.cases["kind prompt 1"] = Case(
        prompt="kind prompt 1",
        preferred="kind better 1",
        other="kind worse 1",
        relevant=frozenset(),
    )
    with ScriptedJudgeServer(responder) as server:
        code, out, err = principles_test(server, directory, store_path, "kind")
    assert code == 1
    assert "FAIL kind example 1 ('kind prompt 1'): applies should be true (P(yes) 0.10)" in err
    assert "exact" not in out  # only the principle named was tested
