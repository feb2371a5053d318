"""``sona eval``'s reference-code options: ``--max-rank`` (BFE's mAP cut) and ``--rerank``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from tests.service_support import make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=4)


def table_row(out: str) -> dict[str, float]:
    """The figures of ``sona eval``'s one checkpoint row, by column."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("checkpoint"))
    values = [float(v) for v in lines[header + 1].split()[-5:]]
    return dict(zip(("mAP", "R-1", "R-5", "R-10", "mINP"), values, strict=True))


def test_max_rank_cuts_map_only_and_says_so(checkpoint, synthetic_root, capsys) -> None:
    args = ["eval", str(checkpoint), "--dataset", "synthetic", "--data", str(synthetic_root)]
    assert main(args) == 0
    full = capsys.readouterr().out
    assert main([*args, "--max-rank", "3"]) == 0
    cut = capsys.readouterr().out
    assert "mAP over the first 3 ranks" in cut and "first" not in full
    # an untrained network ranks many matches past 3: AP loses their precision, not the rest
    assert table_row(cut)["mAP"] < table_row(full)["mAP"]
    assert {k: v for k, v in table_row(cut).items() if k != "mAP"} == {
        k: v for k, v in table_row(full).items() if k != "mAP"
    }
    # past the gallery's size every match is within the cut: the full mAP
    assert main([*args, "--max-rank", "100000"]) == 0
    assert table_row(capsys.readouterr().out) == table_row(full)


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_max_rank_refuses_what_is_not_a_positive_rank(checkpoint, value, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            ["eval", str(checkpoint), "--dataset", "synthetic", "--data", ".", "--max-rank", value]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--max-rank" in err and "Traceback" not in err
