"""Helpers for the data tests: tiny IDX files, tiny CIFAR archives, a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tradeoff.data.idx import IDX_FILES

_IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as an IDX file (big-endian, as the format requires)."""
    kind = f"{array.dtype.kind}{array.dtype.itemsize}"
    header = bytes([0, 0, _IDX_CODES[kind], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    """Downloads from the test's local server must not go through a proxy set in the env."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def encode_idx() -> Callable[[np.ndarray], bytes]:
    return idx_bytes


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """write_idx(path, array, gz=True): write ``array`` as a (gzipped) IDX file."""

    def write(path: Path, array: np.ndarray, gz: bool = True) -> Path:
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


@pytest.fixture
def fake_idx_release(tmp_path, write_idx) -> Callable[..., tuple[Path, dict[str, str]]]:
    """fake_idx_release(n_train, n_test): a folder with the 4 MNIST-style files of random
    28x28 images (labels cycle through 0..9), and the SHA-256 of each file."""

    def make(n_train: int = 40, n_test: int = 20) -> tuple[Path, dict[str, str]]:
        folder = tmp_path / "release"
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        arrays = (
            rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            (np.arange(n_train) % 10).astype(np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            (np.arange(n_test) % 10).astype(np.uint8),
        )
        hashes = {}
        for fname, array in zip(IDX_FILES, arrays, strict=True):
            hashes[fname] = sha256(write_idx(folder / fname, array))
        return folder, hashes

    return make


@pytest.fixture
def make_cifar_archive(tmp_path) -> Callable[..., Path]:
    """make_cifar_archive(per_batch, n_test): a CIFAR-10 python tar.gz of random images whose
    pixel [0, c, 0, 0] is the channel index c (to check the CHW layout)."""

    def make(per_batch: int = 4, n_test: int = 6, name: str = "cifar-10-python.tar.gz") -> Path:
        rng = np.random.default_rng(0)
        path = tmp_path / name
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        with tarfile.open(path, "w:gz") as tar:
            for b, batch in enumerate(batches):
                n = n_test if batch == "test_batch" else per_batch
                data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
                data[:, [0, 1024, 2048]] = [0, 1, 2]
                labels = [(b + i) % 10 for i in range(n)]
                payload = pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"})
                info = tarfile.TarInfo(f"cifar-10-batches-py/{batch}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        return path

    return make


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], str]]:
    """serve(folder) -> base URL (ending in /) of a local HTTP server for that folder."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
