"""glora.data: every table format reads the same columns; each bad file, label or split size fails with a
DataError naming the file, the column and the row; seeded, stratified splits."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from collections import Counter

import pytest

from glora.data.labels import LabelSet
from glora.data.splits import plan_splits
from glora.data.tables import check_texts, is_saved_dataset, load_saved_dataset, read_columns
from glora.errors import DataError

ROWS = [
    {"text": "a fine film", "label": "pos"},
    {"text": "dull, and long", "label": "neg"},
    {"text": 'he said "no"\tthen left', "label": "neg"},
]
COLUMNS = {"text": [r["text"] for r in ROWS], "label": [r["label"] for r in ROWS]}


def _write_delimited(path, delimiter, rows=ROWS, bom=False):
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _write_jsonl(path, rows=ROWS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---- formats -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,delimiter", [("x.csv", ","), ("x.tsv", "\t"), ("x.tab", "\t")])
def test_delimited_round_trip(tmp_path, name, delimiter):
    path = _write_delimited(tmp_path / name, delimiter)
    assert read_columns(path, ["text", "label"], "train") == COLUMNS


def test_csv_with_bom_and_blank_lines(tmp_path):
    path = _write_delimited(tmp_path / "x.csv", ",", bom=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n\n")
    assert read_columns(path, ["label", "text"], "train") == COLUMNS


def test_csv_long_field(tmp_path):
    rows = [{"text": "w" * 300_000, "label": "pos"}]
    path = _write_delimited(tmp_path / "x.csv", ",", rows)
    assert read_columns(path, ["text"], "train")["text"][0] == "w" * 300_000


@pytest.mark.parametrize("name", ["x.jsonl", "x.ndjson"])
def test_json_lines_round_trip(tmp_path, name):
    assert read_columns(_write_jsonl(tmp_path / name), ["text", "label"], "train") == COLUMNS


def test_json_records_and_columns(tmp_path):
    records = tmp_path / "records.json"
    records.write_text(json.dumps(ROWS), encoding="utf-8")
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps(COLUMNS), encoding="utf-8")
    assert read_columns(str(records), ["text", "label"], "train") == COLUMNS
    assert read_columns(str(columns), ["text", "label"], "train") == COLUMNS


def test_json_lines_in_a_json_file(tmp_path):
    """``Dataset.to_json`` writes JSON Lines under ``.json``."""
    assert read_columns(_write_jsonl(tmp_path / "x.json"), ["text", "label"], "train") == COLUMNS


def test_values_keep_their_types(tmp_path):
    rows = [{"text": "a", "label": 1, "score": 0.5, "note": None}, {"text": "b", "label": 0, "score": 2.0, "note": "x"}]
    got = read_columns(_write_jsonl(tmp_path / "x.jsonl", rows), ["label", "score", "note"], "train")
    assert got == {"label": [1, 0], "score": [0.5, 2.0], "note": [None, "x"]}
    assert isinstance(got["label"][0], int)


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({**COLUMNS, "extra": [1, 2, 3]}), path)
    assert read_columns(path, ["text", "label"], "train") == COLUMNS
    assert read_columns(path, ["extra"], "train") == {"extra": [1, 2, 3]}


def test_saved_dataset_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = str(tmp_path / "ds")
    datasets.Dataset.from_dict(COLUMNS).save_to_disk(folder)
    assert is_saved_dataset(folder)
    assert read_columns(folder, ["text", "label"], "train") == COLUMNS
    assert load_saved_dataset(folder, "test").num_rows == 3


def test_saved_dataset_dict_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict(COLUMNS)
    test = datasets.Dataset.from_dict({"text": ["t"], "label": ["pos"]})
    both = str(tmp_path / "both")
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(both)
    assert is_saved_dataset(both)
    assert read_columns(both, ["text", "label"], "train") == COLUMNS
    assert read_columns(both, ["text"], "test") == {"text": ["t"]}
    with pytest.raises(
        DataError,
        match=r"validation file .*both is a DatasetDict without a split named 'validation'; its splits are \['train', 'test'\]",
    ):
        read_columns(both, ["text"], "validation")
    only = str(tmp_path / "only")
    datasets.DatasetDict({"whatever": train}).save_to_disk(only)
    assert read_columns(only, ["label"], "validation") == {"label": COLUMNS["label"]}


# ---- file errors ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "data" / "x.csv")
    with pytest.raises(DataError, match=r"^train file .*x\.csv does not exist$") as info:
        read_columns(path, ["text"], "train")
    assert info.value.details["path"] == path


def test_missing_column_lists_the_columns(tmp_path):
    path = _write_delimited(tmp_path / "x.csv", ",", [{"sentence": "s", "y": "1"}])
    with pytest.raises(
        DataError, match=r"^test file .*x\.csv has no column 'label'; its columns are \['sentence', 'y'\]$"
    ) as info:
        read_columns(path, ["sentence", "label"], "test")
    assert info.value.details == {"path": path, "column": "label"}


@pytest.mark.parametrize(
    "name,content,columns",
    [
        ("x.jsonl", "", []),
        ("x.jsonl", "\n\n", ["text"]),
        ("x.json", "[]", []),
        ("x.csv", "text,label\n", ["text"]),
        ("x.csv", "", ["text"]),
    ],
)
def test_no_examples(tmp_path, name, content, columns):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"^validation file .*holds no examples"):
        read_columns(str(path), columns, "validation")


BAD_FILES = [
    pytest.param(
        "x.jsonl",
        "\n".join([json.dumps(r) for r in ROWS] + ["", "", "", "{broken"]) + "\n",
        "train",
        r"^train file .*x\.jsonl: line 7 is not valid JSON \(.+\)$",
        id="json_line_broken",
    ),
    pytest.param(
        "x.jsonl",
        '{"text": "a"}\n[1, 2]\n',
        "train",
        r"train file .*x\.jsonl: line 2 is not a JSON object",
        id="json_line_not_an_object",
    ),
    pytest.param("bad.json", "[{", "input", r"input file .*bad\.json is not valid JSON", id="json_broken"),
    pytest.param(
        "scalar.json",
        "3",
        "input",
        r"must hold a list of records or an object of equal-length column lists",
        id="json_scalar",
    ),
    pytest.param(
        "ragged.json",
        json.dumps({"text": ["a", "b"], "label": [1]}),
        "input",
        r"ragged\.json: its column lists differ in length",
        id="json_ragged_columns",
    ),
    pytest.param(
        "records.json",
        json.dumps([{"text": "a"}, "b"]),
        "input",
        r"records\.json: record 2 is not a JSON object",
        id="json_record_not_an_object",
    ),
    pytest.param(
        "x.csv",
        "text,label\na,pos\nb,neg,extra\n",
        "train",
        r"train file .*x\.csv: line 3 has 3 fields, the header has 2",
        id="csv_ragged_row",
    ),
    pytest.param("x.csv", "text,text\na,b\n", "train", r"the header names column 'text' twice", id="csv_header_twice"),
    pytest.param(
        "x.csv", b"text,label\n\xff\xfe,pos\n", "train", r"train file .*x\.csv is not UTF-8 text", id="not_utf8"
    ),
    pytest.param(
        "x.xlsx",
        "x",
        "train",
        r"train file .*x\.xlsx has an unsupported format \(\.xlsx\); expected CSV .*Parquet",
        id="unknown_extension",
    ),
    pytest.param(
        "x.parquet",
        b"not parquet at all",
        "train",
        r"train file .*x\.parquet is not a readable Parquet file",
        id="corrupt_parquet",
        marks=pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow"),
    ),
]
"""A bad file of each format: its name, its content, its role and what the DataError says (the file, the line)."""


@pytest.mark.parametrize("name,content,role,pattern", BAD_FILES)
def test_bad_file_names_the_file_and_the_place(tmp_path, name, content, role, pattern):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        read_columns(str(path), ["text"], role)


def test_json_line_missing_key(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": 1}, {"text": "b"}])
    with pytest.raises(DataError, match=r"train file .*x\.jsonl: line 2 has no key 'label'") as info:
        read_columns(path, ["text", "label"], "train")
    assert info.value.details["column"] == "label"


def test_plain_folder_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    assert not is_saved_dataset(str(tmp_path / "folder"))
    with pytest.raises(
        DataError, match=r"train file .*folder is a folder, but not one written by datasets' save_to_disk"
    ):
        read_columns(str(tmp_path / "folder"), ["text"], "train")
    with pytest.raises(DataError, match=r"not a folder written by datasets' save_to_disk"):
        load_saved_dataset(str(tmp_path / "folder"), "train")


def test_check_texts():
    assert check_texts(["a", "b c"], "x.csv", "text", "train") == ["a", "b c"]
    with pytest.raises(
        DataError, match=r"^train file x\.csv: column 'text' holds a value that is not text at row 3: 4\.5$"
    ) as info:
        check_texts(["a", "b", 4.5], "x.csv", "text", "train")
    assert info.value.details == {"path": "x.csv", "column": "text", "row": 3}
    with pytest.raises(DataError, match=r"at row 1: nothing \(null\)"):
        check_texts([None], "x.csv", "text", "train")
    with pytest.raises(DataError, match=r"at row 2: NaN"):
        check_texts(["a", float("nan")], "x.csv", "text", "train")
    with pytest.raises(DataError, match=r"^test file x\.csv: column 'text' holds an empty text at row 2$"):
        check_texts(["a", "  "], "x.csv", "text", "test")


# ---- labels --------------------------------------------------------------------------------------------------


def test_string_labels_sorted():
    labels = LabelSet.from_train(["pos", "neg", " pos ", "neutral"], "x.csv", "label")
    assert labels.names == ["neg", "neutral", "pos"]
    assert labels.ids(["neutral", "pos", "neg"], "y.csv", "label", "test") == [1, 2, 0]


def test_integer_labels_sorted_numerically():
    labels = LabelSet.from_train([10, 2, 1.0, True, 2], "x.jsonl", "label")
    assert labels.names == ["1", "2", "10"]
    assert labels.ids([1, 10.0, "2", "02"], "y.csv", "label", "test") == [0, 2, 1, 1]


def test_csv_integer_strings_sorted_numerically():
    assert LabelSet.from_train(["10", "2", "1"], "x.csv", "label").names == ["1", "2", "10"]


@pytest.mark.parametrize(
    "values,pattern",
    [
        ([0, 1, "pos"], r"mixes integer labels \(row 1: 0\) and string labels \(row 3: 'pos'\)"),
        ([0, 1, 0.5], r"holds a value that is not a label: 0\.5 at row 3"),
        (["a", None], r"holds a value that is not a label: nothing \(null\) at row 2"),
        ([1, float("nan")], r"holds a value that is not a label: NaN at row 2"),
        (["a", ""], r"holds an empty label at row 2"),
        (["a", "a"], r"holds only the class 'a'; classification needs at least two"),
        ([], r"holds no labels"),
    ],
)
def test_bad_training_labels(values, pattern):
    with pytest.raises(DataError, match=r"^train file x\.csv: column 'label' " + pattern) as info:
        LabelSet.from_train(values, "x.csv", "label")
    assert info.value.details["column"] == "label"


def test_unseen_label_refused():
    labels = LabelSet.from_train(["pos", "neg"], "train.csv", "label")
    values = ["pos"] * 11 + ["neutral"]
    with pytest.raises(
        DataError,
        match=r"^test file x\.csv: label 'neutral' \(row 12\) is not among the training split's labels \['neg', 'pos'\]$",
    ) as info:
        labels.ids(values, "x.csv", "label", "test")
    assert info.value.details == {"path": "x.csv", "column": "label", "row": 12}


def test_label_set_from_names():
    labels = LabelSet(names=["neg", "pos"])
    assert labels == LabelSet.from_train(["pos", "neg"], "x", "label")
    assert len(labels) == 2 and not labels.integer and LabelSet(["0", "1"]).integer
    with pytest.raises(ValueError):
        LabelSet(["a", "a"])


# ---- splits --------------------------------------------------------------------------------------------------


def _check_partition(n, splits):
    every = [i for indices in splits.values() for i in indices]
    assert len(every) == len(set(every))
    assert set(every) <= set(range(n))
    for indices in splits.values():
        assert indices == sorted(indices)


def test_plain_split_sizes_and_record():
    splits, record = plan_splits(100, None, ["validation", "test"], {"validation": 0.2, "test": 15}, seed=1)
    _check_partition(100, splits)
    assert {role: len(v) for role, v in splits.items()} == {"train": 65, "validation": 20, "test": 15}
    assert sorted(i for v in splits.values() for i in v) == list(range(100))
    assert record == {
        "cut_from_train": ["validation", "test"],
        "sizes": {"train": 65, "validation": 20, "test": 15},
        "seed": 1,
        "stratified": False,
    }


def test_default_share_and_train_cap():
    splits, record = plan_splits(50, None, ["test"], {"train": 0.5}, seed=0)
    assert record["sizes"] == {"train": 23, "test": 5}  # test: 10% of 50; train: half of the 45 left (rounded up)
    splits, _ = plan_splits(50, None, [], {"train": 7}, seed=0)
    assert len(splits["train"]) == 7 and set(splits) == {"train"}


def test_seeded():
    labels = [i % 3 for i in range(60)]
    one = plan_splits(60, labels, ["validation"], {}, seed=5)
    assert one == plan_splits(60, labels, ["validation"], {}, seed=5)
    assert one[0] != plan_splits(60, labels, ["validation"], {}, seed=6)[0]
    assert plan_splits(60, None, ["test"], {}, seed=5)[0] != plan_splits(60, None, ["test"], {}, seed=6)[0]


def test_stratified_within_one_per_class():
    """Each split's count of each class is within 1 of its share where every class's share of train is at least
    1; otherwise rare classes may take training examples from others, and every class is in train."""
    rng = random.Random(0)
    strict_cases = 0
    for _ in range(50):
        classes = rng.randint(1, 6)
        n = rng.randint(classes + 3, 300)
        labels = [rng.choice(range(classes)) if rng.random() < 0.7 else 0 for _ in range(n)]
        cut = rng.choice([[], ["validation"], ["test"], ["validation", "test"]])
        sizes = {}
        for role in cut:
            sizes[role] = rng.choice([None, rng.randint(1, max(1, n // 4)), rng.uniform(0.01, 0.3)])
        if rng.random() < 0.5:
            sizes["train"] = rng.choice([rng.uniform(0.1, 0.99), rng.randint(1, n // 3)])
        seed = rng.randint(0, 10**6)
        splits, record = plan_splits(n, labels, cut, sizes, seed)
        _check_partition(n, splits)
        assert record["stratified"] and set(splits) == {"train", *cut}
        assert record["sizes"] == {role: len(v) for role, v in splits.items()}
        left = n - sum(len(splits[role]) for role in cut)
        if "train" not in sizes:
            assert len(splits["train"]) == left
        counts = Counter(labels)
        strict = min(counts.values()) * len(splits["train"]) >= n  # every class's share of train is at least 1
        strict_cases += strict
        for role, indices in splits.items():
            got = Counter(labels[i] for i in indices)
            for c, n_c in counts.items():
                assert not strict or abs(got[c] - len(indices) * n_c / n) < 1, (n, sizes, seed, role, c)
        if len(splits["train"]) >= len(counts):
            assert set(Counter(labels[i] for i in splits["train"])) == set(counts)
    assert strict_cases >= 25


def test_rare_class_stays_in_train():
    labels = [0] * 30 + [1]
    for seed in range(20):
        splits, _ = plan_splits(31, labels, ["validation", "test"], {"validation": 0.3, "test": 0.3}, seed)
        assert 30 in splits["train"]


def test_many_rare_classes_all_trained():
    labels = [0] * 20 + list(range(1, 16))  # 15 classes of one example, and a large one
    splits, record = plan_splits(35, labels, ["validation"], {"validation": 10}, seed=0)
    assert record["sizes"] == {"train": 25, "validation": 10}
    assert set(labels[i] for i in splits["train"]) == set(labels)
    assert all(labels[i] == 0 for i in splits["validation"])


def test_exact_counts():
    splits, _ = plan_splits(20, [0] * 10 + [1] * 10, ["validation", "test"], {"validation": 4, "test": 6}, seed=3)
    assert [len(splits[r]) for r in ("train", "validation", "test")] == [10, 4, 6]
    for role, k in (("validation", 2), ("test", 3), ("train", 5)):
        assert Counter(i >= 10 for i in splits[role]) == {False: k, True: k}


@pytest.mark.parametrize(
    "n,cut,sizes,pattern",
    [
        (10, ["validation"], {"validation": 11}, r"validation_size 11 asks for 11 examples, more than the 10"),
        (
            10,
            ["validation", "test"],
            {"validation": 6, "test": 5},
            r"test_size 5 asks for 5 examples, more than the 4 .* after validation \(6\)",
        ),
        (10, ["validation", "test"], {"validation": 5, "test": 5}, r"the train split would be empty"),
        (10, ["test"], {"test": 1.5}, r"test_size must be a count or a share in \(0, 1\), got 1\.5"),
        (10, ["test"], {"test": 0.0}, r"test_size must be a count or a share in \(0, 1\)"),
        (10, ["test"], {"test": 0}, r"test_size must be a positive count"),
        (10, [], {"train": 11}, r"train_size 11 is more than the 10 examples"),
        (10, [], {"train": 1.0}, r"train_size must be a count or a share in \(0, 1\)"),
        (0, [], {}, r"the training file holds no examples"),
    ],
)
def test_impossible_sizes(n, cut, sizes, pattern):
    with pytest.raises(DataError, match=pattern):
        plan_splits(n, None, cut, sizes, seed=0)
    if n:
        with pytest.raises(DataError, match=pattern):
            plan_splits(n, [i % 2 for i in range(n)], cut, sizes, seed=0)


def test_error_names_the_setting():
    with pytest.raises(DataError) as info:
        plan_splits(10, None, ["validation"], {"validation": 20}, seed=0)
    assert info.value.details["setting"] == "validation_size"
