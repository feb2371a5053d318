"""``sona``'s help shows every option's default, and common mistakes are one clear line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import build_parser, main


def parsers(
    parser: argparse.ArgumentParser, name: str = "sona"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_every_option_with_a_default_shows_it() -> None:
    checked = 0
    for name, parser in parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            assert action.help, f"{name} {action.option_strings[-1]} has no help"
            helped = " ".join(action.help.split())
            at = text.find(helped.split("%")[0][:40])
            assert at >= 0, (name, action.option_strings)
            shown = text[at : at + len(helped) + 120].lower()
            assert "default" in shown, f"{name} {action.option_strings[-1]}: {shown!r}"
            checked += 1
    assert checked > 30


def test_gallery_add_help_shows_url_and_batch_size(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["gallery", "add", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "http://127.0.0.1:8000" in text
    assert "crops per request (default: 16)" in text


def test_a_missing_folder_says_it_does_not_exist(tmp_path: Path, capsys) -> None:
    assert main(["gallery", "add", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere: the folder does not exist" in err


def test_eval_of_a_file_that_is_no_checkpoint_prints_no_table(tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("hello\n")
    code = main(["eval", str(notes), "--dataset", "synthetic", "--data", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "not a readable checkpoint" in err and "KeyError" not in err
    assert len(err.strip().splitlines()) == 1


HELP_LOADS = """
import argparse, contextlib, io, sys
from cli.main import build_parser, main

def every(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from every(sub)

shown, parsers = 0, list(every(build_parser()))
for parser in parsers:
    argv = parser.prog.split()[1:] + ["--help"]
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(argv)
    shown += "usage:" in out.getvalue()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision"})
print(len(parsers) - shown, len(parsers), heavy)
"""


def test_help_of_every_command_loads_neither_torch_nor_torchvision() -> None:
    """``sona --help`` and every subcommand's ``--help`` start at once: torch loads only when a
    command runs (each command imports what it needs)."""
    out = subprocess.run(
        [sys.executable, "-c", HELP_LOADS], capture_output=True, text=True, timeout=120, check=True
    )
    unshown, parsers, heavy = out.stdout.split(maxsplit=2)
    assert unshown == "0" and int(parsers) > 10 and heavy.strip() == "[]", out.stdout


def test_options_a_library_refuses_are_one_line(capsys) -> None:
    assert main(["info", "--preset", "tiny", "--sona-stages", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sona_stages may hold 2, 3 and 4 only" in err


def test_a_value_error_from_a_bug_keeps_its_traceback(monkeypatch, capsys) -> None:
    """Only deliberate user errors become one line: an unexpected ``ValueError`` propagates."""
    import model.info

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an inconsistency inside the program")

    monkeypatch.setattr(model.info, "describe", broken)
    with pytest.raises(ValueError, match="inconsistency inside"):
        main(["info", "--preset", "tiny"])
    assert capsys.readouterr().err == ""
