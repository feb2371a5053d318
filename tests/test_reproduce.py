"""``sona reproduce``: table 5 from one command, resumable, with the paper's figures beside."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from cli.main import main
from training.paper_table5 import PAPER_TABLE_5
from training.reproduce import csv_text, markdown, summarize


def test_summary_puts_the_paper_beside_mean_and_std() -> None:
    results = [
        {"row": "SONA2+3-Net", "seed": s, "mAP": m, "rank1": 95.0, "rank5": 98.0, "rank10": 99.0}
        for s, m in enumerate((88.0, 89.0, 90.0))
    ]
    cells = summarize(results, "market1501")
    mAP = next(c for c in cells if c.metric == "mAP")
    assert mAP.runs == 3 and mAP.mean == pytest.approx(89.0) and mAP.std == pytest.approx(1.0)
    assert mAP.paper == 88.83 and mAP.difference == pytest.approx(0.17)
    text = markdown(cells, "market1501")
    assert "| SONA2+3-Net | 3 | 89.00 ± 1.00 (88.83, +0.17) |" in text
    rows = list(csv.DictReader(io.StringIO(csv_text(cells))))
    assert [r["metric"] for r in rows] == ["mAP", "rank1", "rank5", "rank10"]
    assert float(rows[1]["paper"]) == 95.58 and float(rows[1]["paper_std"]) == 0.15
    # no published figure for synthetic data: the cell says only what was measured
    assert "(" not in markdown(summarize(results, "synthetic"), "synthetic").splitlines()[-1]


def test_the_paper_table_has_every_row_and_dataset() -> None:
    rows = {"BL", "BL+DB", "BL+DB*", "BL+BFE", "BL+SONA2", "BL+BFE+SONA2"}
    rows |= {"SONA2-Net", "SONA3-Net", "SONA2+3-Net"}
    for dataset in ("market1501", "dukemtmcreid", "cuhk03-labeled", "cuhk03-detected"):
        assert rows <= set(PAPER_TABLE_5[dataset])
        for cells in PAPER_TABLE_5[dataset].values():
            for mean, std in cells.values():
                assert 70 < mean < 100 and (std is None or 0 < std < 1)
    # the caption of table 4 repeats two cells: they agree with table 5
    assert PAPER_TABLE_5["cuhk03-labeled"]["SONA2-Net"]["rank5"] == (92.55, 0.56)
    assert PAPER_TABLE_5["cuhk03-detected"]["SONA2+3-Net"]["rank10"] == (94.48, 0.13)


def command(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "reproduce",
        "--dataset",
        "synthetic",
        "--data",
        str(root),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--rows",
        "BL,SONA2-Net",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--quiet",
        *extra,
    ]


@pytest.mark.slow
def test_reproduce_two_rows_two_seeds_end_to_end_and_resumes(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "table5"
    assert main(command(synthetic_root, out, "--dry-run")) == 0
    plan = capsys.readouterr().out
    assert plan.count("to run") == 4 and "4 of 4 runs to go" in plan and "GPU-hours" in plan

    assert main(command(synthetic_root, out)) == 0
    printed = capsys.readouterr().out
    table = (out / "table5.md").read_text()
    assert table in printed
    for row in ("BL", "SONA2-Net"):
        assert f"| {row} | 2 | " in table
        for seed in (0, 1):
            assert (out / row / f"seed{seed}" / "result.json").is_file()
    cells = list(csv.DictReader((out / "table5.csv").open()))
    assert len(cells) == 8 and all(float(c["std"]) >= 0 for c in cells)
    assert all(0 <= float(c["mean"]) <= 100 for c in cells)

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/result.json")}
    assert main(command(synthetic_root, out)) == 0  # again: nothing is trained twice
    assert capsys.readouterr().out.count("done, skipped") == 4
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/result.json")}
    assert (out / "table5.md").read_text() == table


def test_reproduce_refuses_unknown_rows_and_the_paper_preset_without_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(command(tmp_path, tmp_path / "out", "--rows", "BL,BL+XYZ"))
    assert exit_info.value.code == 2 and "BL+XYZ" in capsys.readouterr().err
    args = command(tmp_path, tmp_path / "out")
    args[args.index("tiny")] = "paper"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "IMAGENET1K_V1" in err and len(err.strip().splitlines()) == 1
