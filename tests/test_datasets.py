"""Dataset loaders on fake folders of empty files: the loaders list names and never open images."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from training.datasets import (
    DATASET_NAMES,
    PAPER_COUNTS,
    DatasetCountWarning,
    DatasetError,
    ImageRecord,
    ReIDDataset,
    SkippedFilesWarning,
    SplitCounts,
    load_dataset,
    require_evaluable,
)

SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def touch(folder: Path, names: Iterable[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))


@contextmanager
def no_warnings() -> Iterator[None]:
    """Fail on any warning inside the block (an exact dataset must load silently)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def make_market(root: Path) -> Path:
    touch(
        root / "bounding_box_train",
        [
            "0007_c6s2_000004_01.jpg",
            "0002_c1s1_000001_00.jpg",
            "0002_c3s1_000002_00.jpg",
            "0007_c2s1_000003_00.jpg",
            "-1_c1s1_000005_00.jpg",
        ],
    )
    touch(root / "query", ["0005_c1s1_000010_00.jpg", "0009_c2s1_000011_00.jpg"])
    touch(
        root / "bounding_box_test",
        [
            "0005_c2s1_000020_00.jpg",
            "0009_c1s1_000021_00.JPG",
            "0000_c3s1_000022_00.jpg",
            "-1_c1s1_000023_00.jpg",
        ],
    )
    return root


def test_market_records_relabelling_junk_and_distractors(tmp_path: Path) -> None:
    root = make_market(tmp_path / "Market-1501-v15.09.15")
    with pytest.warns(DatasetCountWarning):
        ds = load_dataset("market1501", root)
    assert isinstance(ds, ReIDDataset)
    assert ds.name == "market1501"
    assert ds.root == root
    train = root / "bounding_box_train"
    assert ds.train == [
        ImageRecord(train / "0002_c1s1_000001_00.jpg", 0, 0),
        ImageRecord(train / "0002_c3s1_000002_00.jpg", 0, 2),
        ImageRecord(train / "0007_c2s1_000003_00.jpg", 1, 1),
        ImageRecord(train / "0007_c6s2_000004_01.jpg", 1, 5),
    ]
    assert ds.num_train_pids == 2
    assert [(r.pid, r.camid) for r in ds.query] == [(5, 0), (9, 1)]
    gallery = {(r.path.name, r.pid, r.camid) for r in ds.gallery}
    assert gallery == {
        ("0005_c2s1_000020_00.jpg", 5, 1),
        ("0009_c1s1_000021_00.JPG", 9, 0),
        ("0000_c3s1_000022_00.jpg", 0, 2),  # distractor kept
    }
    all_records = ds.train + ds.query + ds.gallery
    assert all(r.pid != -1 for r in all_records)  # junk gone everywhere
    assert all(isinstance(r.path, Path) and r.path.is_absolute() for r in all_records)
    assert ds.gallery == sorted(ds.gallery)
    assert require_evaluable(ds) is ds


def test_market_count_warning_names_split_expected_and_found(tmp_path: Path) -> None:
    root = make_market(tmp_path / "m")
    with pytest.warns(DatasetCountWarning) as caught:
        load_dataset("market1501", root)
    message = str(caught[0].message)
    # raw folder counts: junk and distractors included, as in the paper's 19,732 gallery
    assert "train images expected 12936, found 5" in message
    assert "query images expected 3368, found 2" in message
    assert "gallery images expected 19732, found 4" in message
    assert "train identities expected 751, found 2" in message
    assert "test identities (query + gallery) expected 750, found 2" in message
    with no_warnings():
        load_dataset("market1501", root, check_counts=False)


@pytest.mark.parametrize("sub", ["Market-1501-v15.09.15", "market1501", None])
def test_market_root_may_be_dataset_or_parent(tmp_path: Path, sub: str | None) -> None:
    target = tmp_path / sub if sub else tmp_path
    make_market(target)
    ds = load_dataset("Market-1501", tmp_path, check_counts=False)
    assert ds.root == target
    assert len(ds.train) == 4


@pytest.fixture(scope="module")
def exact_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Market-1501 of empty files with exactly table 1's numbers (about 36k files)."""
    root = tmp_path_factory.mktemp("exact") / "Market-1501-v15.09.15"
    frame = iter(range(10**7))

    def names(pids: list[int], total: int) -> list[str]:
        return [
            f"{pid:04d}_c{i % 6 + 1}s1_{next(frame):06d}_00.jpg"
            if pid >= 0
            else f"-1_c{i % 6 + 1}s1_{next(frame):06d}_00.jpg"
            for i, pid in enumerate(pids[i % len(pids)] for i in range(total))
        ]

    train_ids = list(range(1, 752))  # 751
    test_ids = list(range(1001, 1751))  # 750
    touch(root / "bounding_box_train", names(train_ids, 12936))
    touch(root / "query", names(test_ids, 3368))
    gallery = names(test_ids, 13120) + names([0], 2793) + names([-1], 3819)
    touch(root / "bounding_box_test", gallery)
    return root


def test_market_exact_table1_counts_load_without_warning(exact_market: Path) -> None:
    with no_warnings():
        ds = load_dataset("market1501", exact_market.parent)
    assert len(ds.train) == 12936
    assert ds.num_train_pids == 751
    assert len(ds.query) == 3368
    assert len(ds.gallery) == 19732 - 3819  # junk left out, distractors kept
    assert sum(r.pid == 0 for r in ds.gallery) == 2793


def make_duke(root: Path) -> Path:
    touch(
        root / "bounding_box_train",
        ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg", "0001_c8_f0000001.jpg"],
    )
    touch(root / "query", ["0100_c1_f0000010.jpg"])
    touch(root / "bounding_box_test", ["0100_c3_f0000011.jpg", "0200_c1_f0000012.jpg"])
    return root


def test_duke_records_and_count_warning(tmp_path: Path) -> None:
    root = make_duke(tmp_path / "DukeMTMC-reID")
    with pytest.warns(DatasetCountWarning, match="gallery images expected 17661, found 2"):
        ds = load_dataset("dukemtmcreid", tmp_path)
    assert ds.root == root
    assert [(r.path.name, r.pid, r.camid) for r in ds.train] == [
        ("0001_c8_f0000001.jpg", 0, 7),
        ("0005_c2_f0046985.jpg", 1, 1),
        ("0005_c5_f0051341.jpg", 1, 4),
    ]
    assert [(r.pid, r.camid) for r in ds.query] == [(100, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(100, 2), (200, 0)]


def test_duke_exact_counts_no_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_duke(tmp_path / "DukeMTMC-reID")
    # Duke's distractor identities are ordinary ids: test ids = {100, 200}.
    monkeypatch.setitem(PAPER_COUNTS, "dukemtmcreid", SplitCounts(3, 1, 2, 2, 2))
    with no_warnings():
        load_dataset("dukemtmcreid", tmp_path)


def make_cuhk(base: Path, variant: str, n_train: int = 3) -> Path:
    folder = base / "cuhk03-np" / variant
    touch(
        folder / "bounding_box_train",
        [f"{i:04d}_c{i % 2 + 1}_{i}.png" for i in range(1, n_train + 1)],
    )
    touch(folder / "query", ["0800_c1_1.png", "0801_c2_1.png"])
    touch(folder / "bounding_box_test", ["0800_c2_2.png", "0801_c1_2.png", "0802_c1_3.png"])
    return folder


@pytest.mark.parametrize(("variant", "n_train"), [("labeled", 3), ("detected", 4)])
def test_cuhk03_np_variants(tmp_path: Path, variant: str, n_train: int) -> None:
    make_cuhk(tmp_path, "labeled", 3)
    make_cuhk(tmp_path, "detected", 4)
    expected = PAPER_COUNTS[f"cuhk03-{variant}"]
    with pytest.warns(DatasetCountWarning, match=f"train images expected {expected.train_images}"):
        ds = load_dataset(f"cuhk03-{variant}", tmp_path)
    assert ds.root == tmp_path / "cuhk03-np" / variant
    assert ds.name == f"cuhk03-{variant}"
    assert len(ds.train) == n_train
    assert [r.pid for r in ds.train] == list(range(n_train))
    assert {r.camid for r in ds.train} == {0, 1}
    assert [(r.pid, r.camid) for r in ds.query] == [(800, 0), (801, 1)]
    # the cuhk03-np folder and the variant folder itself work as roots too
    for root in (tmp_path / "cuhk03-np", tmp_path / "cuhk03-np" / variant):
        ds2 = load_dataset(f"cuhk03_{variant}", root, check_counts=False)
        assert ds2.train == ds.train


def test_cuhk03_wrong_variant_folder_and_mat_only(tmp_path: Path) -> None:
    detected = make_cuhk(tmp_path, "detected")
    with pytest.raises(DatasetError, match="'detected' folder"):
        load_dataset("cuhk03-labeled", detected)
    release = tmp_path / "only_mat" / "cuhk03_release"
    touch(release, ["cuhk-03.mat"])
    with pytest.raises(DatasetError, match=r"cuhk-03\.mat.*cuhk03-np"):
        load_dataset("cuhk03-labeled", tmp_path / "only_mat")
    with pytest.raises(DatasetError, match="missing folder 'labeled'"):
        load_dataset("cuhk03-labeled", tmp_path)


def test_synthetic_needs_marker_and_skips_table_check(tmp_path: Path) -> None:
    root = make_market(tmp_path / "synth")
    with pytest.raises(DatasetError, match=r"synthetic\.json.*incomplete.*not a synthetic"):
        load_dataset("synthetic", root)
    (root / "synthetic.json").write_text("{}")
    with no_warnings():
        ds = load_dataset("synthetic", root)
    assert ds.name == "synthetic"
    assert len(ds.train) == 4
    assert len(ds.gallery) == 3


def test_missing_folder_names_it(tmp_path: Path) -> None:
    root = make_market(tmp_path / "m")
    for child in (root / "query").iterdir():
        child.unlink()
    (root / "query").rmdir()
    with pytest.raises(DatasetError) as info:
        load_dataset("market1501", root)
    assert str(info.value) == (
        f"Market-1501 at {root}: missing folder 'query' "
        "(expected bounding_box_train, query, bounding_box_test, in this folder or in a "
        "sub-folder Market-1501-v15.09.15 or market1501)"
    )
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("market1501", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="missing folders 'bounding_box_train', 'query'"):
        load_dataset("dukemtmcreid", tmp_path / "m" / "bounding_box_test")


def test_empty_folder_and_bad_name(tmp_path: Path) -> None:
    root = make_duke(tmp_path / "d")
    for child in (root / "query").iterdir():
        child.unlink()
    with pytest.raises(DatasetError, match=r"no images in .*query"):
        load_dataset("dukemtmcreid", root)
    touch(root / "query", ["0100_c1_f0000010.jpg", "person.jpg"])
    with pytest.raises(DatasetError, match=r"'person\.jpg'.*PPPP_cC_fFFFFFFF\.jpg"):
        load_dataset("dukemtmcreid", root)
    (root / "query" / "person.jpg").unlink()
    touch(root / "query", ["z.txt"])
    with pytest.raises(DatasetError, match=r"'z\.txt'.*expected pattern"):
        load_dataset("dukemtmcreid", root)
    (root / "query" / "z.txt").unlink()
    touch(root / "query", ["0100_c0_f0000013.jpg"])
    with pytest.raises(DatasetError, match="numbered from 1"):
        load_dataset("dukemtmcreid", root, check_counts=False)


def test_known_extra_files_skipped_with_warning(tmp_path: Path) -> None:
    root = make_market(tmp_path / "m")
    touch(root / "bounding_box_train", ["Thumbs.db", ".DS_Store", "._0002_c1s1_000001_00.jpg"])
    with pytest.warns(SkippedFilesWarning, match="Thumbs.db"):
        ds = load_dataset("market1501", root, check_counts=False)
    assert len(ds.train) == 4


def test_custom_camera_in_file_name(tmp_path: Path) -> None:
    touch(tmp_path / "bob", ["0001_c2_000123.jpg", "0001_C10_000124.png"])
    touch(tmp_path / "alice", ["front_cam3_17.png", "side-camera2-4.webp", "x_c2s1_9.jpeg"])
    touch(tmp_path, ["README.txt"])
    with pytest.warns(SkippedFilesWarning, match="README"):
        ds = load_dataset("custom", tmp_path)
    assert ds.name == "custom"
    assert ds.query == []
    assert ds.gallery == []
    # identities sorted: alice 0, bob 1; cameras sorted naturally: 2 -> 0, 3 -> 1, 10 -> 2
    got = {(r.path.name, r.pid, r.camid) for r in ds.train}
    assert got == {
        ("front_cam3_17.png", 0, 1),
        ("side-camera2-4.webp", 0, 0),
        ("x_c2s1_9.jpeg", 0, 0),
        ("0001_c2_000123.jpg", 1, 0),
        ("0001_C10_000124.png", 1, 2),
    }
    assert ds.train == sorted(ds.train)


def test_custom_camera_subfolders(tmp_path: Path) -> None:
    touch(tmp_path / "zoe" / "lobby", ["1.jpg", "2.jpg"])
    touch(tmp_path / "zoe" / "garage", ["3.jpg"])
    touch(tmp_path / "adam" / "lobby", ["4.bmp"])
    touch(tmp_path / "adam", ["5_cam7.jpg"])  # camera in the name beside camera folders
    ds = load_dataset("custom", tmp_path)
    # cameras: "7" < "garage" < "lobby"
    got = {(r.path.name, r.pid, r.camid) for r in ds.train}
    assert got == {
        ("1.jpg", 1, 2),
        ("2.jpg", 1, 2),
        ("3.jpg", 1, 1),
        ("4.bmp", 0, 2),
        ("5_cam7.jpg", 0, 0),
    }


def test_custom_folder_errors(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "nocam", [])
    touch(tmp_path / "a", ["snapshot_17.jpg"])
    with pytest.raises(DatasetError, match=r"'snapshot_17\.jpg'.*no camera"):
        load_dataset("custom", tmp_path)
    with pytest.raises(DatasetError, match="no identity folders"):
        load_dataset("custom", tmp_path / "a" / "nocam")
    stray = tmp_path / "stray"
    touch(stray, ["0001_c1_1.jpg"])
    with pytest.raises(DatasetError, match="directly in the root"):
        load_dataset("custom", stray)
    market = make_market(tmp_path / "market")
    with pytest.raises(DatasetError, match="market1501"):
        load_dataset("custom", market)


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_custom_csv_with_split(tmp_path: Path) -> None:
    touch(tmp_path / "img", [f"{i}.jpg" for i in range(6)])
    csv_path = write_csv(
        tmp_path / "labels.csv",
        "path,identity,camera,split,note\n"
        "img/0.jpg,carol,north,train,x\n"
        "img/1.jpg,carol,south,train,\n"
        "img/2.jpg,bob,north,TRAIN,\n"
        "img/3.jpg,dan,north,query,\n"
        "img/4.jpg,dan,south,gallery,\n"
        "\n"
        "img/5.jpg,erin,south,gallery,\n",
    )
    ds = load_dataset("custom", csv_path)
    assert ds.root == csv_path
    assert [(r.path.name, r.pid, r.camid) for r in ds.train] == [
        ("0.jpg", 1, 0),  # train ids relabelled: bob 0, carol 1
        ("1.jpg", 1, 1),
        ("2.jpg", 0, 0),
    ]
    # query/gallery ids numbered over all identities: bob 0, carol 1, dan 2, erin 3
    assert [(r.pid, r.camid) for r in ds.query] == [(2, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(2, 1), (3, 1)]
    require_evaluable(ds)
    with pytest.raises(DatasetError, match="split"):
        load_dataset("custom", csv_path, test_fraction=0.5)


def test_custom_csv_without_split_and_errors(tmp_path: Path) -> None:
    touch(tmp_path / "img", ["a.png", "b.png"])
    good = write_csv(tmp_path / "ok.csv", "path,identity,camera\nimg/a.png,7,1\nimg/b.png,7,2\n")
    ds = load_dataset("custom", good)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 1)]
    assert ds.query == []
    bad = {
        "path,identity\nimg/a.png,7\n": "missing column.*camera",
        "path,identity,camera,split\nimg/a.png,7,1,test\n": r"line 2.*'test'",
        "path,identity,camera\nimg/missing.png,7,1\n": r"missing\.png",
        "path,identity,camera\nimg/a.png,7,1\nimg/a.png,8,1\n": "already listed on line 2",
        "path,identity,camera\nimg/a.png,,1\n": "empty 'identity'",
        "path,identity,camera\n": "no images",
    }
    for i, (text, pattern) in enumerate(bad.items()):
        with pytest.raises(DatasetError, match=pattern):
            load_dataset("custom", write_csv(tmp_path / f"bad{i}.csv", text))


def test_single_camera_trains_but_cannot_be_evaluated(tmp_path: Path) -> None:
    for person in ("p1", "p2", "p3", "p4"):
        touch(tmp_path / person / "door", ["1.jpg", "2.jpg"])
    ds = load_dataset("custom", tmp_path)
    assert ds.num_train_cams == 1
    assert ds.num_train_pids == 4
    with pytest.raises(DatasetError, match="query and gallery sets are empty"):
        require_evaluable(ds)
    held = load_dataset("custom", tmp_path, test_fraction=0.5)
    with pytest.raises(DatasetError, match=r"one camera.*same-camera matches"):
        require_evaluable(held)
    two_cams = ReIDDataset(
        "x",
        tmp_path,
        query=[ImageRecord(tmp_path / "q", 1, 0)],
        gallery=[ImageRecord(tmp_path / "g", 1, 0), ImageRecord(tmp_path / "h", 2, 1)],
    )
    with pytest.raises(DatasetError, match="from another camera"):
        require_evaluable(two_cams)


def test_custom_test_fraction_split(tmp_path: Path) -> None:
    for p in range(20):
        for cam in range(1, 4):
            touch(tmp_path / f"id{p}", [f"f_c{cam}_{k}.jpg" for k in range(3)])
    ds = load_dataset("custom", tmp_path, test_fraction=0.25, seed=3)
    test_paths = {r.path.parent.name for r in ds.query + ds.gallery}
    train_paths = {r.path.parent.name for r in ds.train}
    assert len(test_paths) == 5
    assert len(train_paths) == 15
    assert test_paths.isdisjoint(train_paths)
    assert sorted({r.pid for r in ds.train}) == list(range(15))
    # one query per identity and camera, the rest gallery
    assert len(ds.query) == 5 * 3
    assert len(ds.gallery) == 5 * 3 * 3 - 15
    assert len({(r.pid, r.camid) for r in ds.query}) == len(ds.query)
    for q in ds.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    assert not {r.path for r in ds.query} & {r.path for r in ds.gallery}
    require_evaluable(ds)
    assert load_dataset("custom", tmp_path, test_fraction=0.25, seed=3) == ds
    other = load_dataset("custom", tmp_path, test_fraction=0.25, seed=4)
    assert {r.path for r in other.query} != {r.path for r in ds.query}


def test_test_fraction_keeps_only_queries_with_cross_camera_matches(tmp_path: Path) -> None:
    touch(tmp_path / "a", ["a_c1_0.jpg", "a_c2_0.jpg"])  # one image per camera
    touch(tmp_path / "b", ["b_c1_0.jpg", "b_c1_1.jpg"])  # one camera only
    seen = set()
    for seed in range(10):
        ds = load_dataset("custom", tmp_path, test_fraction=0.99, seed=seed)
        assert len(ds.train) == 2  # one identity always stays for training
        assert len({r.pid for r in ds.query + ds.gallery}) == 1
        if ds.query:  # person a: one query, the other camera's image as its gallery match
            assert [r.path.parent.name for r in ds.query + ds.gallery] == ["a", "a"]
            require_evaluable(ds)
        else:  # person b: a gallery distractor, no query
            assert [r.path.name for r in ds.gallery] == ["b_c1_0.jpg", "b_c1_1.jpg"]
        seen.add(bool(ds.query))
    assert seen == {True, False}
    with pytest.raises(DatasetError, match=r"test_fraction must be .*\[0, 1\)"):
        load_dataset("custom", tmp_path, test_fraction=1.0)


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert DATASET_NAMES == (
        "market1501",
        "dukemtmcreid",
        "cuhk03-labeled",
        "cuhk03-detected",
        "synthetic",
        "custom",
    )
    with pytest.raises(DatasetError) as info:
        load_dataset("imagenet", tmp_path)
    for name in DATASET_NAMES:
        assert name in str(info.value)
    with pytest.raises(DatasetError, match=r"unknown option.*test_fraction.*check_counts"):
        load_dataset("market1501", tmp_path, test_fraction=0.2)
