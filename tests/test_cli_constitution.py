"""The `charter principles` and `charter constitution` commands, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.cli.main import cli


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from charter.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0 and 'constitution' in r.output, r.output\n"
        "heavy = {'torch', 'transformers', 'trl', 'openai'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_subcommand_imports_only_its_own_modules() -> None:
    """`charter train` does not import the service, the suites, the pipeline or the workbench:
    their import cost was most of what `charter train dpo` cost over a plain TRL script."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from charter.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['train', 'dpo', '--help'])\n"
        "assert r.exit_code == 0 and '--max-steps' in r.output, r.output\n"
        "unused = {'charter.cli.serve', 'charter.cli.evaluate', 'charter.cli.workbench',\n"
        "          'charter.cli.pipeline', 'charter.cli.generate', 'charter.service',\n"
        "          'charter.evals', 'sqlite_utils'} & set(sys.modules)\n"
        "assert not unused, unused\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_command_has_help() -> None:
    import click

    def walk(group: click.Group, path: list[str]) -> list[list[str]]:
        found = [path]
        context = click.Context(group)
        for name in group.list_commands(context):
            sub = group.get_command(context, name)
            assert sub is not None, name
            found += walk(sub, [*path, name]) if isinstance(sub, click.Group) else [[*path, name]]
        return found

    commands = walk(cli, [])
    assert ["constitution", "diff"] in commands and ["principles", "new"] in commands
    for command in commands:
        code, out, _ = run(*command, "--help")
        assert code == 0 and "Usage:" in out, command


def test_show_json_is_stable_and_tracks_edits(principles_dir: Path) -> None:
    first = json.loads(run("constitution", "show", "--dir", str(principles_dir), "--json")[1])
    again = json.loads(run("constitution", "show", "--dir", str(principles_dir), "--json")[1])
    assert first["digest"] == again["digest"]
    assert len(first["principles"]) >= 16
    path = principles_dir / "privacy.toml"
    path.write_text(path.read_text().replace("real people", "real persons"))
    edited = json.loads(run("constitution", "show", "--dir", str(principles_dir), "--json")[1])
    assert edited["digest"] != first["digest"]


def test_env_vars_choose_directory_and_store(
    principles_dir: Path, store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run from a directory where the defaults (./principles, ./.charter) would find nothing, on
    # a constitution the shipped one is not (its own version), so only the variables can work.
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    header = principles_dir / "constitution.toml"
    header.write_text(header.read_text().replace('"1.0.0"', '"7.7.7"'))
    shown = json.loads(run("constitution", "show", "--dir", str(principles_dir), "--json")[1])
    env = {"CHARTER_PRINCIPLES": str(principles_dir), "CHARTER_STORE": str(store_path)}
    code, out, err = run("constitution", "freeze", "-m", "via env", env=env)
    assert code == 0 and "froze" in out, err
    code, out, err = run("constitution", "log", "--json", env=env)
    assert code == 0, err
    [frozen] = json.loads(out)
    assert (frozen["version"], frozen["digest"]) == ("7.7.7", shown["digest"])
    assert list(cwd.iterdir()) == []  # nothing went to the default store


def test_lint_passes_on_defaults_and_fails_naming_the_file(principles_dir: Path) -> None:
    code, out, _ = run("principles", "lint", "--dir", str(principles_dir))
    assert code == 0 and out.startswith("ok: ")
    (principles_dir / "oops.toml").write_text('id = "oops"\ntitle = "x"\n')
    code, _, err = run("principles", "lint", "--dir", str(principles_dir))
    assert code == 1
    assert "oops.toml" in err and "missing required field 'critique'" in err
    report = json.loads(run("principles", "lint", "--dir", str(principles_dir), "--json")[1])
    assert report["ok"] is False
    assert {f["path"].split("/")[-1] for f in report["findings"]} == {"oops.toml"}


@pytest.mark.parametrize(
    "command",
    [
        ["principles", "list"],
        ["principles", "lint"],
        ["constitution", "show"],
        ["constitution", "freeze"],
    ],
)
@pytest.mark.parametrize(
    "breakage",
    [
        "malformed",
        "not-utf8",
        "missing-field",
        "unknown-key",
        "duplicate-id",
        "empty-dir",
        "no-dir",
    ],
)
def test_bad_input_is_one_clean_error(
    principles_dir: Path, store_path: Path, command: list[str], breakage: str
) -> None:
    target = principles_dir
    if breakage == "malformed":
        (principles_dir / "bad.toml").write_text("id = \n")
    elif breakage == "not-utf8":
        (principles_dir / "bad.toml").write_bytes(b'id = "bad"\ntitle = "caf\xe9"\n')
    elif breakage == "missing-field":
        (principles_dir / "bad.toml").write_text('id = "bad"\n')
    elif breakage == "unknown-key":
        text = (principles_dir / "clarity.toml").read_text()
        (principles_dir / "bad.toml").write_text(
            text.replace('id = "clarity"', 'id = "bad"') + "priority = 3\n"
        )
    elif breakage == "duplicate-id":
        text = (principles_dir / "clarity.toml").read_text()
        (principles_dir / "bad.toml").write_text(text)
    elif breakage == "empty-dir":
        target = principles_dir.parent / "empty"
        target.mkdir()
    else:
        target = principles_dir.parent / "does-not-exist"
    extra = ["--store", str(store_path)] if command[-1] == "freeze" else []
    code, out, err = run(*command, "--dir", str(target), *extra)
    assert code == 1
    assert "Traceback" not in out + err
    named = "bad.toml" if target == principles_dir else target.name
    assert named in err.splitlines()[0]
    assert not store_path.exists()  # nothing frozen from a broken directory


def test_freeze_edit_freeze_diff_log(principles_dir: Path, store_path: Path) -> None:
    common = ["--dir", str(principles_dir), "--store", str(store_path)]
    assert run("constitution", "freeze", "-m", "initial", *common)[0] == 0
    path = principles_dir / "concision.toml"
    path.write_text(path.read_text().replace("without padding", "with no padding"))

    code, _, err = run("constitution", "freeze", *common)
    assert code == 1 and "already names other content" in err and 'version = "1.0.1"' in err
    header = principles_dir / "constitution.toml"
    header.write_text(header.read_text().replace('"1.0.0"', '"1.0.1"'))
    assert run("constitution", "freeze", "-m", "tighter", *common)[0] == 0

    log = json.loads(run("constitution", "log", "--store", str(store_path), "--json")[1])
    assert [v["version"] for v in log] == ["1.0.1", "1.0.0"]
    assert [v["message"] for v in log] == ["tighter", "initial"]

    code, out, _ = run("constitution", "diff", "1.0.0", "1.0.1", "--store", str(store_path))
    assert code == 0
    assert "~ concision" in out
    assert "-Which response conveys what the user needs without padding" in out
    d = json.loads(
        run(
            "constitution",
            "diff",
            log[1]["digest"][:8],
            "1.0.1",
            "--store",
            str(store_path),
            "--json",
        )[1]
    )
    assert [c["id"] for c in d["changed"]] == ["concision"]
    assert d["added"] == d["removed"] == []


def test_diff_unknown_version_is_a_clean_error(store_path: Path) -> None:
    code, _, err = run("constitution", "diff", "1.0.0", "2.0.0", "--store", str(store_path))
    assert code == 1 and "no frozen version or digest matches '1.0.0'" in err
    assert not store_path.exists()  # read-only commands never create a store


def test_new_scaffolds_a_file(principles_dir: Path) -> None:
    code, _, _ = run("principles", "new", "kindness", "--dir", str(principles_dir))
    assert code == 0 and (principles_dir / "kindness.toml").exists()
    code, _, err = run("principles", "new", "kindness", "--dir", str(principles_dir))
    assert code == 1 and "already exists" in err


def test_corrupt_store_is_a_clean_error(principles_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "not.db"
    bad.write_text("this is not sqlite" * 100)
    code, _, err = run("constitution", "freeze", "--dir", str(principles_dir), "--store", str(bad))
    assert code == 1 and "cannot open as a SQLite store" in err
    assert bad.read_text().startswith("this is not sqlite")
