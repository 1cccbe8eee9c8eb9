"""Per-image descriptions: read from a dataset folder, recorded in the manifest, composed with the task
prompt for training, and dropped whole with the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.test_data_readers import _png
from unildiff.data.captions import CaptionFinder, compose_prompt, read_captions_file
from unildiff.data.config import DataConfig
from unildiff.data.manifest import MANIFEST_NAME, REQUIRED_COLUMNS, read_manifest
from unildiff.data.prepare import prepare_dataset
from unildiff.errors import DataError
from unildiff.training.batches import PromptTable
from unildiff.training.latents import load_training_pairs


def _custom_tree(root: Path, count: int = 4) -> Path:
    for split in ("train", "test"):
        for index in range(count):
            _png(root / split / "lq" / f"{index}.png", index)
            _png(root / split / "gt" / f"{index}.png", index + 10)
    return root


def _jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_compose_prompt_joins_what_exists():
    assert compose_prompt("remove rain", "a red car on a street") == "remove rain, a red car on a street"
    assert compose_prompt("remove rain", "") == "remove rain"
    assert compose_prompt("", "a red car") == "a red car"
    assert compose_prompt("", "") == ""


def test_captions_file_errors_name_the_line(tmp_path):
    path = tmp_path / "captions.jsonl"
    _jsonl(path, [{"file": "a.png", "text": "a  cat\n"}, {"file_name": "b.png", "text": "a dog"}])
    assert read_captions_file(path) == {"a.png": "a cat", "b.png": "a dog"}
    path.write_text('{"file": "a.png", "text": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"captions.jsonl:2: not JSON"):
        read_captions_file(path)
    path.write_text('{"file": "a.png"}\n')
    with pytest.raises(DataError, match=r"captions.jsonl:1: expected"):
        read_captions_file(path)
    _jsonl(path, [{"file": "a.png", "text": "x"}, {"file": "a.png", "text": "y"}])
    with pytest.raises(DataError, match=r"captions.jsonl:2: 'a.png' is listed twice"):
        read_captions_file(path)


def test_caption_lookup_order(tmp_path):
    root = _custom_tree(tmp_path)
    gt, lq = root / "train/gt", root / "train/lq"
    (gt / "0.txt").write_text("beside the gt\n")
    (lq / "0.txt").write_text("beside the lq")
    (lq / "1.txt").write_text("beside the lq only")
    _jsonl(gt / "captions.jsonl", [{"file": "2.png", "text": "gt folder listing"}])
    _jsonl(root / "captions.jsonl", [{"file": "train/gt/3.png", "text": "root listing"}])
    finder = CaptionFinder(root)
    assert finder.caption(gt / "0.png", lq / "0.png") == "beside the gt"
    assert finder.caption(gt / "1.png", lq / "1.png") == "beside the lq only"
    assert finder.caption(gt / "2.png", lq / "2.png") == "gt folder listing"
    assert finder.caption(gt / "3.png", lq / "3.png") == "root listing"
    assert finder.caption(root / "test/gt/0.png", root / "test/lq/0.png") == ""


def test_prepare_records_captions_and_leaves_folders_without_them_as_before(tmp_path):
    plain = _custom_tree(tmp_path / "plain")
    config = DataConfig(setting="custom", source="folder", root=plain, val_fraction=0.0)
    prepare_dataset(config, tmp_path / "plain_prepared")
    header = (tmp_path / "plain_prepared" / MANIFEST_NAME).read_text().splitlines()[0]
    assert header == ",".join(REQUIRED_COLUMNS)  # no caption column: the manifest is the same as before
    assert all(row.caption == "" for row in read_manifest(tmp_path / "plain_prepared"))

    captioned = _custom_tree(tmp_path / "captioned")
    _jsonl(captioned / "train/gt/captions.jsonl", [{"file": "0.png", "text": "a red car, parked"}])
    (captioned / "test/gt/1.txt").write_text('a "quoted" dog')
    config = DataConfig(setting="custom", source="folder", root=captioned, val_fraction=0.0)
    rows = prepare_dataset(config, tmp_path / "prepared")
    assert (tmp_path / "prepared" / MANIFEST_NAME).read_text().splitlines()[0].endswith(",caption")
    read_back = {(row.split, row.source_id): row.caption for row in read_manifest(tmp_path / "prepared")}
    assert read_back == {(row.split, row.source_id): row.caption for row in rows}
    assert read_back[("train", "train/gt/0")] == "a red car, parked"
    assert read_back[("test", "test/gt/1")] == 'a "quoted" dog'
    assert sum(bool(caption) for caption in read_back.values()) == 2


def test_training_prompts_are_task_prompt_plus_description_and_drop_whole(tmp_path):
    root = _custom_tree(tmp_path / "raw")
    _jsonl(root / "train/gt/captions.jsonl", [{"file": "0.png", "text": "a red car"}])
    config = DataConfig(setting="custom", source="folder", root=root, val_fraction=0.0,
                        custom_prompt="remove the glare")  # fmt: skip
    prepare_dataset(config, tmp_path / "prepared")
    pairs = load_training_pairs(tmp_path / "prepared", crop_size=16, seed=0)
    assert sorted(pairs.prompts) == ["remove the glare"] * 3 + ["remove the glare, a red car"]

    distinct = sorted(set(pairs.prompts))
    table = PromptTable(distinct, torch.arange(3.0).reshape(3, 1, 1), torch.arange(3.0).reshape(3, 1))
    ids = table.ids(pairs.prompts)
    embeds, _ = table.lookup(ids.repeat(50), 0.2, torch.Generator().manual_seed(0))
    rows = embeds.flatten().long()
    kept = rows == ids.repeat(50)
    assert set(rows[~kept].tolist()) == {0}  # a dropped prompt is "" whole, never the task part alone
    assert 0.1 < (~kept).float().mean().item() < 0.3
