"""ptune.files: every file ptune writes appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import json
import os

import pytest

from ptune.files import atomic_dir, write_json_atomic, write_jsonl_atomic, write_text_atomic


def test_writers_replace_the_file_whole_with_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = write_json_atomic(tmp_path / "sub" / "r.json", {"b": 1, "a": [1, 2]})
        assert list(json.loads(target.read_text())) == ["b", "a"]  # key order kept
        assert target.stat().st_mode & 0o777 == 0o644
        write_jsonl_atomic(target, [{"x": 1}, {"x": 2}])
        assert target.read_text().splitlines() == ['{"x": 1}', '{"x": 2}']
        write_text_atomic(target, "done\n")
        assert target.read_text() == "done\n"
        assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]  # no temporary left
    finally:
        os.umask(old)


def test_atomic_dir_replaces_a_folder_only_on_success(tmp_path):
    old = os.umask(0o022)
    try:
        dest = tmp_path / "ckpt"
        with atomic_dir(dest) as tmp:
            (tmp / "a.txt").write_text("one")
        assert (dest / "a.txt").read_text() == "one" and dest.stat().st_mode & 0o777 == 0o755
        with pytest.raises(RuntimeError):
            with atomic_dir(dest) as tmp:
                (tmp / "a.txt").write_text("two")
                raise RuntimeError("crash while writing")
        assert (dest / "a.txt").read_text() == "one", "a failed write leaves the old folder as it was"
        with atomic_dir(dest) as tmp:
            (tmp / "b.txt").write_text("three")
        assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    finally:
        os.umask(old)


def test_appending_json_lines_keeps_the_old_lines_and_refuses_what_is_not_json(tmp_path):
    from ptune.errors import PtuneError
    from ptune.files import append_jsonl_atomic

    log = tmp_path / "bench.jsonl"
    append_jsonl_atomic(log, [{"run": 1}])
    log.write_text(log.read_text() + '{"run": 2}')  # a line without its newline, written by hand
    append_jsonl_atomic(log, [{"run": 3}, {"run": 4}])
    assert [json.loads(x)["run"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]
    with pytest.raises((PtuneError, ValueError)):
        append_jsonl_atomic(log, [{"run": 5}, {"speed": float("nan")}])  # strict JSON: not NaN
    assert [json.loads(x)["run"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.jsonl"]
