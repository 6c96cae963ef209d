"""Split files: plain or gzipped JSONL read the same, and bytes that are not UTF-8 are bad input naming the line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import friends_rows, write_task

from dfwe.data.tasks import SPLITS, load_task, read_jsonl
from dfwe.errors import BadInput


def gzip_folder(plain: Path, out: Path) -> Path:
    """A copy of task folder ``plain`` with every split gzipped (``train.jsonl.gz`` ...), no plain files."""
    out.mkdir(parents=True)
    for split in SPLITS:
        (out / f"{split}.jsonl.gz").write_bytes(gzip.compress((plain / f"{split}.jsonl").read_bytes()))
    return out


def test_gzipped_task_folder_loads_the_same_examples(small_task, tmp_path):
    zipped = gzip_folder(small_task, tmp_path / "zipped")
    plain, packed = load_task(small_task, name="t"), load_task(zipped, name="t")
    assert packed.labels == plain.labels == ("neg", "neu", "pos")
    assert packed.splits == plain.splits and len(packed.splits["train"]) == 60


def test_either_name_finds_the_file_that_exists(small_task, tmp_path):
    zipped = gzip_folder(small_task, tmp_path / "zipped")
    expected = read_jsonl(small_task / "dev.jsonl", 3)
    assert read_jsonl(zipped / "dev.jsonl", 3) == expected
    assert read_jsonl(small_task / "dev.jsonl.gz", 3) == expected


def test_plain_file_is_preferred_when_both_exist(small_task):
    (small_task / "dev.jsonl.gz").write_bytes(gzip.compress(b'{"id": "other", "text": "x", "label": "neg"}\n'))
    assert [e.id for e in read_jsonl(small_task / "dev.jsonl", 3)][0] == "dv-neg-0"


def test_missing_split_names_both_spellings(tmp_path):
    folder = write_task(tmp_path / "t", {"train": friends_rows("tr", ["a", "b"], 2)})
    with pytest.raises(BadInput) as caught:
        read_jsonl(folder / "dev.jsonl", 3)
    assert f"{folder / 'dev.jsonl'}: missing" in str(caught.value) and "dev.jsonl.gz" in str(caught.value)


@pytest.mark.parametrize("compressed", [False, True])
def test_latin1_byte_names_file_and_line(small_task, compressed):
    lines = (small_task / "dev.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"Ross", b"Ren\xe9")  # latin-1 for é: not UTF-8
    data = b"".join(lines)
    path = small_task / "dev.jsonl"
    if compressed:
        path.unlink()
        path = small_task / "dev.jsonl.gz"
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    with pytest.raises(BadInput) as caught:
        read_jsonl(small_task / "dev.jsonl", 3)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: not UTF-8") and "0xe9" in message and "\n" not in message


def test_corrupt_gzip_is_bad_input(small_task):
    (small_task / "dev.jsonl").unlink()
    (small_task / "dev.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BadInput, match=r"dev\.jsonl\.gz: not a readable gzip file"):
        read_jsonl(small_task / "dev.jsonl", 3)


def test_utf8_text_is_read_as_written(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"id": "1", "text": "Café — naïve", "label": "a"}\n', encoding="utf-8")
    assert read_jsonl(path, 3)[0].text == "Café — naïve"
