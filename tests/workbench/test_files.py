"""The one JSONL reader (workbench/files.py): records with their line numbers, and one-line
errors for a missing file, a folder and a line that is not JSON."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.files import read_jsonl


def test_records_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n\n  \n{"text": "b"}\n')
    assert read_jsonl(path) == [(1, {"text": "a"}), (4, {"text": "b"})]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.jsonl", None, "no dataset file"),
        ("folder", "dir", "is a folder, not a JSONL file"),
        ("bad.jsonl", '{"text": "a"}\n{"text": \n', "bad.jsonl:2: not valid JSON"),
    ],
)
def test_a_file_that_cannot_be_read_is_a_one_line_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(WorkbenchError) as info:
        read_jsonl(path, "dataset")
    assert message in str(info.value) and "\n" not in str(info.value)
