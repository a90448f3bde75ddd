"""Corpus loading, the document split, the token cache and the batch iterator."""

import hashlib

import numpy as np
import pytest

from scalefit.training import corpus as data


def _write_docs(folder, n=40, size=300):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        text = "".join(rng.choice(list("abcdefgh \n"), size=size))
        (folder / f"doc{i:03d}.txt").write_text(text)
    return folder


def test_stdlib_corpus_split_fingerprint_and_cache(tmp_path):
    c1 = data.load_corpus(cache_dir=tmp_path)
    assert c1.source.startswith("stdlib:")
    assert c1.split == "document"
    assert c1.n_documents > 100 and 0 < c1.n_val_documents < 0.06 * c1.n_documents
    assert c1.train.dtype == np.uint8 and c1.train.size > 1_000_000 and c1.val.size > 10_000
    assert len(c1.fingerprint) == 64
    cached = list((tmp_path / "corpus").glob("*.npz"))
    assert len(cached) == 1
    c2 = data.load_corpus(cache_dir=tmp_path)  # from the cache file
    assert c2.fingerprint == c1.fingerprint
    np.testing.assert_array_equal(c2.train, c1.train)
    np.testing.assert_array_equal(c2.val, c1.val)
    assert c2.info() == c1.info()


def test_split_is_by_document_hash_and_stable(tmp_path):
    folder = _write_docs(tmp_path / "docs", n=200)
    c = data.load_corpus(folder, val_fraction=0.1, cache_dir=tmp_path / "cache")
    expected_val = [
        p for p in sorted(folder.iterdir())
        if int.from_bytes(hashlib.sha256(p.name.encode()).digest()[:8], "big") / 2**64 < 0.1
    ]
    assert c.n_val_documents == len(expected_val) > 0
    val_text = b"\0".join(p.read_bytes() for p in expected_val)
    assert c.val.tobytes() == val_text
    # Separators: one between neighbouring documents on each side.
    assert c.train.size + c.val.size + 2 == sum(p.stat().st_size for p in folder.iterdir()) + c.n_documents
    # Adding a document moves no other document between the sides.
    (folder / "zzz_new.txt").write_text("new document " * 10)
    c2 = data.load_corpus(folder, val_fraction=0.1, cache_dir=tmp_path / "cache")
    assert c2.fingerprint != c.fingerprint
    new_is_val = data._val_side(data.Path("zzz_new.txt"), 0.1)
    assert c2.n_val_documents == c.n_val_documents + int(new_is_val)


def test_fingerprint_sees_content_and_names(tmp_path):
    a = _write_docs(tmp_path / "a", n=5)
    fp = data.load_corpus(a, cache_dir=tmp_path / "c").fingerprint
    (a / "doc000.txt").rename(a / "renamed.txt")
    fp2 = data.load_corpus(a, cache_dir=tmp_path / "c").fingerprint
    assert fp2 != fp


def test_excluded_files_are_counted(tmp_path):
    folder = _write_docs(tmp_path / "d", n=4)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blob.bin").write_bytes(b"\x00\x01\x02")
    (folder / ".hidden").write_text("secret")
    c = data.load_corpus(folder, cache_dir=tmp_path / "c")
    assert c.n_documents == 4
    assert dict(c.excluded) == {
        "empty file": 1, "binary file (contains NUL bytes)": 1, "hidden file or folder": 1}


def test_single_file_holds_out_its_tail(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("x" * 1000)
    c = data.load_corpus(f, val_fraction=0.1, cache_dir=tmp_path / "c")
    assert c.split == "tail" and c.train.size == 900 and c.val.size == 100


def test_bad_corpora_name_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*no files"):
        data.load_corpus(empty, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="no such file"):
        data.load_corpus(tmp_path / "missing", cache_dir=tmp_path / "c")
    only_empty = tmp_path / "only_empty"
    only_empty.mkdir()
    (only_empty / "a.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{only_empty}.*no usable text files"):
        data.load_corpus(only_empty, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="shorter than one sequence"):
        data.get_batch(np.zeros(10, np.uint8), 0, 2, 16, 0)


def test_get_batch_is_pure_in_seed_and_step():
    tokens = np.arange(10_000, dtype=np.int64).astype(np.uint8)
    x1, y1 = data.get_batch(tokens, 7, 4, 32, seed=3)
    x2, y2 = data.get_batch(tokens, 7, 4, 32, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == (4, 32) and x1.dtype == np.int32
    np.testing.assert_array_equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one
    x3, _ = data.get_batch(tokens, 8, 4, 32, seed=3)
    x4, _ = data.get_batch(tokens, 7, 4, 32, seed=4)
    assert not np.array_equal(x1, x3) and not np.array_equal(x1, x4)
    # Every window fits: the last possible start is n - T - 1.
    small = np.arange(33, dtype=np.uint8)
    for step in range(20):
        x, y = data.get_batch(small, step, 8, 32, 0)
        np.testing.assert_array_equal(x, np.broadcast_to(np.arange(32), (8, 32)))


def test_eval_batches_are_fixed_and_cover_the_stream():
    tokens = (np.arange(5000) % 251).astype(np.uint8)
    b = data.eval_batches(tokens, 3, 4, 16)
    assert len(b) == 3 and b[0][0].shape == (4, 16)
    assert b[0][0][0, 0] == tokens[0]
    assert b[-1][1][-1, -1] == tokens[-1]  # the last window ends at the last token
