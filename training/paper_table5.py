"""The paper's table 5: mean and standard deviation over four runs, in percent.

Transcribed from the published table (CUHK03-NP labeled and detected, DukeMTMC-reID,
Market-1501; mAP, rank-1, rank-5, rank-10). ``SONA4-Net`` is section 3.4's stage-4 placement,
for which the text gives CUHK03 labeled mAP and rank-1 only.
"""

from __future__ import annotations

__all__ = ["METRICS", "PAPER_TABLE_5", "paper_figure"]

METRICS = ("mAP", "rank1", "rank5", "rank10")

# one block per dataset; each row: means, then standard deviations, in METRICS order
_TABLE = """
[cuhk03-labeled]
BL           77.05 79.70 91.52 94.98  .22 .44 .33 .19
BL+DB        77.02 79.13 90.90 94.88  .28 .42 .21 .15
BL+DB*       77.45 79.10 91.60 94.78  .54 .78 .31 .29
BL+BFE       77.20 79.83 91.03 94.90  .12 .47 .08 .14
BL+SONA2     78.48 80.78 92.03 95.50  .33 .13 .29 .41
BL+BFE+SONA2 79.15 81.68 92.25 95.38  .11 .35 .09 .11
SONA2-Net    79.23 81.85 92.55 95.58  .78 .84 .56 .61
SONA3-Net    79.18 81.05 92.10 95.45  .19 .36 .33 .45
SONA2+3-Net  79.23 81.40 92.35 95.57  .23 .80 .09 .04
[cuhk03-detected]
BL           74.00 76.70 89.45 93.45  .30 .30 .25 .55
BL+DB        74.50 77.25 89.38 93.03  .37 .57 .27 .30
BL+DB*       74.30 76.93 89.50 93.20  .25 .50 .25 .16
BL+BFE       74.85 77.48 89.95 93.48  .44 .58 .09 .26
BL+SONA2     76.20 78.93 90.40 94.48  .32 .41 .36 .50
BL+BFE+SONA2 76.00 78.83 90.23 94.10  .43 .66 .18 .21
SONA2-Net    76.35 79.10 90.25 94.03  .68 .56 .53 .55
SONA3-Net    76.38 78.90 90.68 94.35  .88 .80 .53 .45
SONA2+3-Net  77.27 79.90 91.00 94.48  .43 .67 .37 .13
[dukemtmcreid]
BL           76.20 88.00 94.60 96.20  .30 .60 .10 .10
BL+DB        76.93 88.28 94.65 96.15  .24 .23 .11 .18
BL+DB*       76.95 88.60 94.88 96.25  .15 .39 .18 .15
BL+BFE       76.85 88.15 94.60 95.98  .34 .50 .32 .11
BL+SONA2     78.18 89.55 95.05 96.45  .15 .32 .32 .21
BL+BFE+SONA2 77.98 88.90 95.05 96.25  .04 .16 .11 .11
SONA2-Net    78.05 89.25 95.23 96.50  .38 .32 .41 .31
SONA3-Net    78.18 89.55 95.13 96.50  .29 .38 .15 .22
SONA2+3-Net  78.28 89.38 95.35 96.55  .11 .36 .15 .11
[market1501]
BL           87.50 95.18 98.28 99.03  .16 .19 .04 .04
BL+DB        87.60 95.43 98.25 99.03  .07 .15 .15 .04
BL+DB*       87.68 95.18 98.32 99.00  .16 .15 .08 .07
BL+BFE       87.73 95.30 98.35 99.00  .04 .29 .11 .10
BL+SONA2     88.50 95.58 98.32 99.00  .12 .19 .08 .12
BL+BFE+SONA2 88.63 95.60 98.30 99.00  .04 .39 .16 .07
SONA2-Net    88.67 95.68 98.42 99.03  .08 .18 .08 .04
SONA3-Net    88.63 95.53 98.48 99.15  .08 .08 .11 .05
SONA2+3-Net  88.83 95.58 98.50 99.18  .04 .15 .07 .13
"""


def _parse() -> dict[str, dict[str, dict[str, tuple[float, float | None]]]]:
    table: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = {}
    dataset = ""
    for line in _TABLE.strip().splitlines():
        if line.startswith("["):
            dataset = line.strip("[]")
            table[dataset] = {}
            continue
        row, *values = line.split()
        numbers = [float(v) for v in values]
        table[dataset][row] = {m: (numbers[i], numbers[i + 4]) for i, m in enumerate(METRICS)}
    table["cuhk03-labeled"]["SONA4-Net"] = {"mAP": (75.8, None), "rank1": (78.9, None)}
    return table


#: dataset name (as ``sona train --dataset``) -> variant -> metric -> (mean, std or None)
PAPER_TABLE_5 = _parse()


def paper_figure(dataset: str, row: str, metric: str) -> tuple[float, float | None] | None:
    """The published (mean, std) of a cell, or None where the paper has none."""
    return PAPER_TABLE_5.get(dataset, {}).get(row, {}).get(metric)
