"""Corpora -> byte tokens, a deterministic train/validation split, and batches.

Tokens are raw bytes (vocabulary 256), so no tokenizer has to travel with a run: the corpus
fingerprint (sha256 over every document's relative path and bytes) names the data exactly.

The default corpus is the Python standard library's own source (``*.py`` under
``sysconfig.get_paths()["stdlib"]``, without site-packages and test folders): every machine with
Python has it, it is ~11 MB, and it is the same text on every machine with the same Python version.

The split is by document: a document goes to validation when the hash of its relative path falls
below ``val_fraction``, so adding or removing one file never moves another between the two sides.
Batches are a pure function of ``(seed, step)``, so a resumed run sees exactly the data it would have
seen without the interruption.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalefit.atomic import atomic_write_bytes
from scalefit.store.records import CorpusRecord

VOCAB_SIZE = 256  # byte-level tokens
# Documents are joined with a NUL byte so a window can see where one file ends and the next begins;
# text files practically never contain one, and files that do are excluded as binary.
DOC_SEPARATOR = b"\0"
# Folder names left out of the default corpus: third-party code varies between installs and the
# test suites hold large generated data files.
_STDLIB_EXCLUDE = frozenset({"site-packages", "dist-packages", "test", "tests", "__pycache__"})
_CACHE_VERSION = 1  # bump when the cache layout or the split rule changes


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus split into train and validation streams (uint8 byte tokens)."""

    source: str  # "stdlib:<path>" for the default corpus, else the resolved user path
    fingerprint: str  # sha256 hex over (relative path, bytes) of every document, in sorted order
    train: np.ndarray  # uint8 [n_train_tokens], train documents joined by DOC_SEPARATOR
    val: np.ndarray  # uint8 [n_val_tokens], validation documents joined by DOC_SEPARATOR
    n_documents: int  # documents used (train + validation)
    n_val_documents: int  # documents on the validation side
    split: str  # "document" (hash of relative path) or "tail" (single document: last bytes held out)
    excluded: tuple[tuple[str, int], ...]  # (reason, count) of files that were not used

    def info(self) -> CorpusRecord:
        """The description recorded in every run's spec.json."""
        return CorpusRecord(source=self.source, fingerprint=self.fingerprint, tokenizer="bytes",
                            vocab_size=VOCAB_SIZE, n_documents=self.n_documents,
                            n_val_documents=self.n_val_documents, split=self.split,
                            train_tokens=int(self.train.size), val_tokens=int(self.val.size),
                            excluded=dict(self.excluded))


def stdlib_root() -> Path:
    """Folder of this interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def list_documents(path: str | os.PathLike | None = None) -> tuple[Path, list[Path], dict[str, int]]:
    """Documents of a corpus as (root, sorted relative paths, excluded counts by reason).

    ``path=None`` is the standard library (``*.py``); a file is a one-document corpus; a folder
    contributes every non-hidden regular file below it. Raises ValueError when nothing is left.
    """
    excluded: dict[str, int] = {}
    if path is None:
        root = stdlib_root()
        docs = []
        for dirpath, dirnames, filenames in os.walk(root):
            # Prune instead of filtering afterwards: site-packages alone can hold 10^4+ files.
            for d in [d for d in dirnames if d in _STDLIB_EXCLUDE]:
                reason = "folder left out of the stdlib corpus (site-packages/test/__pycache__)"
                excluded[reason] = excluded.get(reason, 0) + 1
                dirnames.remove(d)
            rel_dir = Path(dirpath).relative_to(root)
            docs.extend(rel_dir / f for f in filenames if f.endswith(".py"))
        docs.sort()
        if not docs:
            raise ValueError(f"corpus {root}: no *.py files found in the standard library folder")
        return root, docs, excluded
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise ValueError(f"corpus {p}: no such file or folder")
    if p.is_file():
        return p.parent, [Path(p.name)], excluded
    docs = []
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if not f.is_file():
            continue
        if _is_hidden(rel):
            excluded["hidden file or folder"] = excluded.get("hidden file or folder", 0) + 1
            continue
        docs.append(rel)
    if not docs:
        raise ValueError(f"corpus {p}: folder holds no files")
    return p, docs, excluded


def _val_side(rel: Path, val_fraction: float) -> bool:
    """True when the document's path hashes into the validation fraction."""
    h = hashlib.sha256(rel.as_posix().encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < val_fraction


def _manifest_key(root: Path, docs: list[Path], val_fraction: float) -> str:
    """Cheap cache key from paths, sizes and mtimes; the content fingerprint is stored inside."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{root}|{val_fraction!r}".encode())
    for rel in docs:
        st = (root / rel).stat()
        h.update(f"|{rel.as_posix()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    """$SCALEFIT_CACHE, else $XDG_CACHE_HOME/scalefit, else ~/.cache/scalefit."""
    if "SCALEFIT_CACHE" in os.environ:
        return Path(os.environ["SCALEFIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scalefit"


def _read(root: Path, docs: list[Path], val_fraction: float, source: str):
    fp = hashlib.sha256()
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    excluded: dict[str, int] = {}
    used: list[tuple[Path, bytes]] = []
    for rel in docs:
        data = (root / rel).read_bytes()
        if not data:
            excluded["empty file"] = excluded.get("empty file", 0) + 1
            continue
        if DOC_SEPARATOR in data:
            reason = "binary file (contains NUL bytes)"
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        used.append((rel, data))
        # Length-prefix both fields so (path, bytes) pairs cannot alias across boundaries.
        name = rel.as_posix().encode()
        fp.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
        fp.update(data)
    if not used:
        raise ValueError(f"corpus {source}: no usable text files ({', '.join(excluded) or 'none found'})")
    if len(used) == 1:
        # One document cannot be split by document: hold out its tail instead.
        data = used[0][1]
        cut = len(data) - max(1, int(len(data) * val_fraction))
        train_parts, val_parts, split, n_val = [data[:cut]], [data[cut:]], "tail", 0
    else:
        split = "document"
        sides = [_val_side(rel, val_fraction) for rel, _ in used]
        if not any(sides):
            # Tiny corpora can miss the fraction entirely; hold out the lowest-hash document.
            low = min(range(len(used)), key=lambda i: hashlib.sha256(used[i][0].as_posix().encode()).digest())
            sides[low] = True
        if all(sides):
            raise ValueError(f"corpus {source}: every document hashed into validation; lower val_fraction")
        for (rel, data), is_val in zip(used, sides):
            (val_parts if is_val else train_parts).append(data)
        n_val = sum(sides)
    join = DOC_SEPARATOR.join
    train = np.frombuffer(join(train_parts), dtype=np.uint8)
    val = np.frombuffer(join(val_parts), dtype=np.uint8)
    return fp.hexdigest(), train, val, len(used), n_val, split, excluded


def _atomic_savez(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_corpus(
    path: str | os.PathLike | None = None,
    val_fraction: float = 0.02,
    cache_dir: str | os.PathLike | None = None,
) -> Corpus:
    """Read, fingerprint, split and tokenize a corpus; cached so the files are read once.

    The cache file is keyed by (paths, sizes, mtimes, val_fraction) and holds the token arrays and the
    content fingerprint; it is written atomically, so concurrent runs never see half a file.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    root, docs, excluded = list_documents(path)
    source = f"stdlib:{root}" if path is None else str(Path(path).expanduser().resolve())
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cfile = cache / "corpus" / f"{_manifest_key(root, docs, val_fraction)}.npz"
    if cfile.exists():
        try:
            with np.load(cfile) as z:
                meta = z["meta"].tolist()  # [fingerprint, n_docs, n_val, split, excluded-json]
                train, val = z["train"], z["val"]
            excl = dict(excluded, **json.loads(meta[4]))
            return Corpus(source, meta[0], train, val, int(meta[1]), int(meta[2]), meta[3],
                          tuple(sorted(excl.items())))
        except (OSError, KeyError, ValueError, IndexError):
            pass  # unreadable cache (e.g. written by an older version): rebuild it below
    fp, train, val, n_docs, n_val, split, read_excl = _read(root, docs, val_fraction, source)
    meta = np.array([fp, str(n_docs), str(n_val), split, json.dumps(read_excl)])
    try:
        _atomic_savez(cfile, train=train, val=val, meta=meta)
    except OSError:
        pass  # a read-only cache only costs speed
    excl = dict(excluded, **read_excl)
    return Corpus(source, fp, train, val, n_docs, n_val, split, tuple(sorted(excl.items())))


def check_length(tokens: np.ndarray, seq_len: int, what: str) -> None:
    """ValueError unless ``tokens`` holds at least one (input, target) window of ``seq_len``."""
    if tokens.size < seq_len + 1:
        raise ValueError(
            f"{what} has {tokens.size} tokens, shorter than one sequence of {seq_len} (+1 target); "
            "use a larger corpus or a smaller seq_len"
        )


def get_batch(tokens: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int):
    """Random windows ``(x, y)``, int32 [batch_size, seq_len], with ``y`` shifted by one.

    A pure function of ``(seed, step)``: the generator is seeded by both, so step k of a resumed run
    draws the same windows as step k of an unbroken one.
    """
    check_length(tokens, seq_len, "token stream")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - seq_len, size=batch_size)  # [B], last start n-T-1
    idx = starts[:, None] + np.arange(seq_len + 1)  # [B, T+1]
    w = tokens[idx].astype(np.int32)  # [B, T+1]
    return w[:, :-1], w[:, 1:]


def eval_batches(tokens: np.ndarray, n_batches: int, batch_size: int, seq_len: int):
    """Fixed validation windows as a list of ``(x, y)``, int32 [batch_size, seq_len] each.

    Windows are evenly spaced over the whole validation stream and do not depend on any seed, so
    every run on the same corpus and ``seq_len`` is scored on the same text.
    """
    check_length(tokens, seq_len, "validation split")
    k = n_batches * batch_size
    starts = np.linspace(0, tokens.size - seq_len - 1, k).astype(np.int64)  # [k]
    idx = starts[:, None] + np.arange(seq_len + 1)  # [k, T+1]
    w = tokens[idx].astype(np.int32).reshape(n_batches, batch_size, seq_len + 1)  # [n, B, T+1]
    return [(b[:, :-1], b[:, 1:]) for b in w]
