"""bilstm_tagger.util: the atomic write and the curated-transformers fix with its version guard."""
import os

import pytest

from bilstm_tagger.util import compat
from bilstm_tagger.util.atomic import atomic_write, write_json_atomic, write_jsonl_atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "cfg"
    path.write_bytes(b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["cfg"]
    assert (path.stat().st_mode & 0o777) == 0o644


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "cfg"
    path.write_bytes(b"old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["cfg"]


def test_jsonl_rows_that_fail_midway_keep_the_old_file_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "errors.jsonl"
    write_jsonl_atomic(path, [{"id": "a"}])

    def rows():
        yield {"id": "b"}
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError, match="reader died"):
        write_jsonl_atomic(path, rows())
    assert path.read_text() == '{"id": "a"}\n'
    assert os.listdir(tmp_path) == ["errors.jsonl"]
    write_json_atomic(tmp_path / "settings.json", {"b": 1, "a": [2]})
    assert (tmp_path / "settings.json").read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["errors.jsonl", "settings.json"]


@pytest.fixture
def curated(monkeypatch):
    mod = pytest.importorskip(
        "spacy_curated_transformers.pipeline.transformer", reason="spacy-curated-transformers (the curated extra) is not installed"
    )
    # Each test starts from the package's own method (put back if an earlier test applied the fix)
    # and leaves the class as it found it.
    found = mod.CuratedTransformer._create_backprops
    mod.CuratedTransformer._create_backprops = compat.REPLACED.get("CuratedTransformer._create_backprops", found)
    assert not getattr(mod.CuratedTransformer._create_backprops, "_bilstm_tagger_fix", False)
    yield mod.CuratedTransformer
    mod.CuratedTransformer._create_backprops = found


def test_curated_fix_applies_once_where_numpy_refuses(curated, monkeypatch):
    monkeypatch.setattr(compat, "_numpy_refuses_1d_float", lambda: True)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.3.1")
    assert compat.fix_curated_loss()
    assert curated._create_backprops is compat._create_backprops
    assert compat.fix_curated_loss()  # a second call is a no-op
    assert curated._create_backprops is compat._create_backprops


@pytest.mark.parametrize("installed,refuses", [("1.0.0", True), ("0.3.1", False)])
def test_curated_fix_is_guarded_by_version_and_numpy(curated, monkeypatch, installed, refuses):
    original = curated._create_backprops
    monkeypatch.setattr(compat, "_numpy_refuses_1d_float", lambda: refuses)
    monkeypatch.setattr("importlib.metadata.version", lambda name: installed)
    assert not compat.fix_curated_loss()
    assert curated._create_backprops is original
