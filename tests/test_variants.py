"""Every row of table 5 is a configuration, and its local branch drops what the row says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import PRESETS, SONA, VARIANTS, SONANet, SONANetConfig, apply_variant
from model.dropblock import DropBlock2d
from model.erasing import BatchErasing2d, SquareDropBlock2d

TABLE_5 = [
    "BL",
    "BL+DB",
    "BL+DB*",
    "BL+BFE",
    "BL+SONA2",
    "BL+BFE+SONA2",
    "SONA2-Net",
    "SONA3-Net",
    "SONA2+3-Net",
]
DROP_MODULE = {
    "none": torch.nn.Identity,
    "dropblock": SquareDropBlock2d,
    "dropblock*": DropBlock2d,
    "bfe": BatchErasing2d,
}


def test_every_table_5_row_is_named() -> None:
    assert list(VARIANTS)[: len(TABLE_5)] == TABLE_5
    with pytest.raises(ValueError, match="unknown variant"):
        apply_variant(PRESETS["tiny"], "BL+XYZ")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_builds_what_it_names(name: str) -> None:
    config = apply_variant(PRESETS["tiny"], name)
    net = SONANet(config).train()
    stages = [s for s in (2, 3, 4) if isinstance(getattr(net, f"sona{s}"), SONA)]
    assert tuple(stages) == VARIANTS[name].sona_stages
    assert type(net.drop_block) is DROP_MODULE[VARIANTS[name].drop]
    out = net(torch.randn(2, 3, *config.input_size))
    assert out.global_features.shape == (2, config.global_dim)
    assert SONANetConfig.from_dict(config.to_dict()) == config  # travels in checkpoints


def test_sona_after_stage_4_on_the_paper_configuration() -> None:
    config = apply_variant(SONANetConfig(num_classes=0), "SONA4-Net")
    net = SONANet(config).eval()
    with torch.no_grad():
        assert net.backbone(torch.randn(1, 3, 384, 128)).shape == (1, 2048, 48, 16)
    assert isinstance(net.sona4, SONA)


def test_square_dropblock_gamma_and_valid_region() -> None:
    """Ghiasi et al.'s gamma, seeds only where a whole block fits, square blocks."""
    block = SquareDropBlock2d(drop_prob=0.1, block_size=5)
    assert block.gamma(48, 16) == pytest.approx(0.1 / 25 * (48 * 16) / (44 * 12))
    torch.manual_seed(0)
    masks = block.mask(4000, 48, 16, torch.device("cpu"))[:, 0].numpy()
    dropped = 1 - masks
    frac = dropped.mean()
    assert 0.08 < frac < 0.105  # overlapping blocks drop a little under drop_prob
    # the border is dropped less often than the centre: the original's bias
    assert dropped[:, 0, 0].mean() < dropped[:, 24, 8].mean() / 3
    single = SquareDropBlock2d(0.5, 5)
    torch.manual_seed(1)
    for mask in single.mask(200, 12, 12, torch.device("cpu"))[:, 0].numpy():
        if (1 - mask).sum() == 25:  # one block alone: a 5 x 5 square, inside the map
            rows, cols = np.nonzero(1 - mask)
            assert rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4
            break
    else:
        pytest.fail("no draw had a single block")


def test_square_dropblock_rescales_by_kept_fraction() -> None:
    block = SquareDropBlock2d(0.3, 3).train()
    torch.manual_seed(2)
    x = torch.ones(8, 4, 20, 10)
    y = block(x)
    assert y.sum().item() == pytest.approx(x.sum().item(), rel=1e-5)
    assert block.eval()(x) is x


def test_batch_erasing_is_one_rectangle_per_batch_a_third_high_full_width() -> None:
    erase = BatchErasing2d().train()
    for seed in range(20):
        torch.manual_seed(seed)
        y = erase(torch.ones(5, 3, 48, 16))
        zero = (y == 0).all(dim=(0, 1))  # the same place in every sample and channel
        assert torch.equal((y == 0).any(dim=(0, 1)), zero)
        rows = torch.nonzero(zero.all(dim=1)).flatten()
        assert zero.sum() == 16 * 16 and len(rows) == 16  # 48 / 3 rows, all 16 columns
        assert rows.max() - rows.min() == 15
        assert (y[y != 0] == 1).all()  # no rescaling, as in BFE
    x = torch.ones(2, 3, 48, 16)
    assert erase.eval()(x) is x
