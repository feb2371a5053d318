"""The README and the docs site keep their promise: every command they show is run by a test.

The convention, for every page (``README.md`` and ``docs/*.md``): a shell command a reader is
meant to run goes in a ```sh block, and the line just above the block's opening fence is one of

    <!-- run by tests/FILE.py::TEST_NAME -->
    <!-- not run here: needs WHAT -->

The first names the test that runs the block's commands as written (the host and port of
``http://127.0.0.1:8000`` replaced by its own server's; any other change, such as a smaller
size, said in that test's docstring); that test file reads the page (its path, e.g.
``docs/footage.md``, appears in the file). The second is for commands a CPU machine without
the internet cannot run (a GPU, Docker, a real dataset, root, a package archive), and the page
says so in words as well, since the comment is not shown. A new ```sh block without either
line fails ``test_every_shell_block_is_run_or_says_what_it_needs``. Output shown to the reader
goes in a ```text block; bench/RESULTS.md (the benchmarks page) holds benchmark commands,
which the suite never runs. ``make test`` builds the site with ``mkdocs build --strict`` before
pytest, so a broken link or anchor fails too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docs_support import (
    MARKER,
    ROOT,
    code_blocks,
    commands,
    pages,
    read,
    section,
    shell_blocks,
)


def test_every_shell_block_is_run_or_says_what_it_needs() -> None:
    blocks = [block for page in pages() for block in shell_blocks(page)]
    assert len(blocks) >= 10, "the pages' shell blocks were not found"
    unmarked = [f"{b.page}:{b.line}" for b in blocks if not MARKER.fullmatch(b.marker)]
    assert not unmarked, (
        "a ```sh block needs '<!-- run by tests/FILE.py::TEST -->' or "
        f"'<!-- not run here: needs WHAT -->' on the line above it: {unmarked}"
    )
    for block in blocks:
        run_by = block.run_by()
        if run_by is None:
            continue
        file, test = run_by
        source = ROOT / file
        assert source.is_file(), f"{block.page}:{block.line}: no {file}"
        text = source.read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {test}\(", text, re.M), (
            f"{block.page}:{block.line}: {file} has no test {test}"
        )
        assert block.page in text, f"{file} does not read {block.page}, whose block it claims"


def test_the_site_has_every_page_in_its_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}
    assert config["strict"] is True and config["theme"]["font"] is False  # offline


def test_the_benchmarks_page_is_bench_results() -> None:
    assert '--8<-- "bench/RESULTS.md"' in read("docs/benchmarks.md")


def test_the_readme_is_a_front_door_whose_links_resolve() -> None:
    text = read("README.md")
    assert len(text.splitlines()) < 200
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, missing


@pytest.mark.slow
def test_the_model_page_shows_what_sona_info_prints(tmp_path: Path) -> None:
    """docs/model.md's command, run as written, prints exactly the output the page shows."""
    text = section(read("docs/model.md"), "# The model")
    (command,) = commands(code_blocks(text, "sh")[0])
    shown = code_blocks(text, "text")[0]
    printed = run(command, tmp_path)
    assert printed == shown, printed


@pytest.mark.slow
def test_the_training_commands_train_and_score_a_model(tmp_path: Path) -> None:
    """docs/training.md's synth, train and eval, with two sizes cut so that it takes a minute
    and not the preset's full schedule: 16 identities instead of 100, and ``--epochs 1``."""
    block = code_blocks(read("docs/training.md"), "sh")[0]
    synth, train, evaluate = commands(block)
    assert "--identities 100" in synth
    run(synth.replace("--identities 100", "--identities 16"), tmp_path)
    run(f"{train} --epochs 1", tmp_path)
    assert (tmp_path / "runs/tiny/last.pt").is_file()
    assert (tmp_path / "runs/tiny/metrics.jsonl").read_text().strip()
    scored = run(evaluate, tmp_path)
    assert re.search(r"mAP", scored) and re.search(r"rank-?1|R-1", scored, re.I), scored


def run(command: str, workdir: Path) -> str:
    """A page's command in ``workdir``, where ``.venv`` is this environment, as the pages
    expect after ``make serve``."""
    venv = workdir / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout
