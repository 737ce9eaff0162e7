"""Where dataset files live, what their bytes must hash to, and fetching them with pooch.

Every file is looked up in ``<root>/<name>/`` (then in system folders such as Debian's
``/usr/share/datasets/fashion-mnist``), downloaded there when missing and allowed, and its
SHA-256 checked against the pinned value on every load, so no run ever trains on a corrupt
or substituted file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pooch

from .cifar import CIFAR10_ARCHIVE
from .errors import DatasetIntegrityError, DatasetNotFoundError
from .idx import IDX_FILES

__all__ = [
    "REGISTRY",
    "LocalFile",
    "RemoteFiles",
    "dataset_dir",
    "default_root",
    "fetch",
    "sha256_of",
]

DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFiles:
    """The files of one dataset: where to download them and the SHA-256 each must have."""

    base_url: str
    sha256: Mapping[str, str]
    # Other accepted hashes of a file: the same data, repackaged by a distribution.
    also_accept: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Read-only folders searched after <root>/<name>/, e.g. a Debian data package.
    system_dirs: tuple[str, ...] = ()
    # Extra sentence for the "files missing" message.
    hint: str = ""

    def url(self, fname: str) -> str:
        return self.base_url + fname

    def accepted(self, fname: str) -> tuple[str, ...]:
        return (self.sha256[fname], *self.also_accept.get(fname, ()))


# Official SHA-256 sums (of the files as distributed), cross-checked against TensorFlow
# Datasets' url_checksums/{mnist,fashion_mnist,kmnist}.txt and, for CIFAR-10 (TFDS pins only
# the binary archive), against Keras' cifar10.load_data and other public pins.
REGISTRY: dict[str, RemoteFiles] = {
    "mnist": RemoteFiles(
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        sha256=dict(
            zip(
                IDX_FILES,
                (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
                strict=True,
            )
        ),
    ),
    "fashion_mnist": RemoteFiles(
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        sha256=dict(
            zip(
                IDX_FILES,
                (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
                strict=True,
            )
        ),
        # Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1) ships the same four
        # .gz names, recompressed (no file name in the gzip header), so their hashes differ
        # from the official ones. These are computed from the Debian files; their gunzipped
        # payloads hash to the published SHA-256 of the official uncompressed IDX files
        # (c59f468a..., bad3541b..., 5b4141f0..., 0402a96d...), i.e. the data is identical.
        also_accept=dict(
            zip(
                IDX_FILES,
                (
                    ("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",),
                    ("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",),
                    ("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",),
                    ("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",),
                ),
                strict=True,
            )
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        hint="On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` also provides them.",
    ),
    "kmnist": RemoteFiles(
        base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        sha256=dict(
            zip(
                IDX_FILES,
                (
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                ),
                strict=True,
            )
        ),
    ),
    "cifar10": RemoteFiles(
        base_url="https://www.cs.toronto.edu/~kriz/",
        sha256={
            CIFAR10_ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
        },
    ),
}


@dataclass(frozen=True)
class LocalFile:
    """A dataset file on disk whose SHA-256 matched an accepted value."""

    name: str
    path: Path
    sha256: str


def default_root() -> Path:
    """``$TRADEOFF_DATA`` if set, else ``~/.cache/tradeoff/data``."""
    env = os.environ.get("TRADEOFF_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tradeoff" / "data"


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding one dataset's files: ``<root>/<name>/``."""
    return (Path(root).expanduser() if root is not None else default_root()) / name


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so each load re-checks cheaply."""
    st = os.stat(path)
    return _sha256_cached(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    name: str, root: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[LocalFile, ...]:
    """Find (or download) and verify every file of dataset ``name``, in registry order.

    Raises `DatasetNotFoundError` when files are missing and cannot or may not be downloaded,
    `DatasetIntegrityError` when a file (local or downloaded) fails its pinned hash."""
    remote = REGISTRY[name]
    folder = dataset_dir(name, root)
    found: dict[str, Path] = {}
    for fname in remote.sha256:
        for directory in (folder, *map(Path, remote.system_dirs)):
            if (directory / fname).is_file():
                found[fname] = directory / fname
                break
    verified = {f: _verify(name, remote, f, p) for f, p in found.items()}
    missing = [f for f in remote.sha256 if f not in found]
    if missing and not download:
        raise _not_found(name, remote, folder, missing, "download=False, so nothing was fetched")
    for i, fname in enumerate(missing):
        path = _download(name, remote, folder, fname, still_missing=missing[i:])
        verified[fname] = _verify(name, remote, fname, path)
    return tuple(verified[f] for f in remote.sha256)


def _verify(name: str, remote: RemoteFiles, fname: str, path: Path) -> LocalFile:
    actual = sha256_of(path)
    if actual not in remote.accepted(fname):
        raise _integrity_error(name, remote, fname, str(path), actual)
    return LocalFile(fname, path, actual)


def _download(
    name: str, remote: RemoteFiles, folder: Path, fname: str, still_missing: list[str]
) -> Path:
    url = remote.url(fname)
    try:
        out = pooch.retrieve(
            url,
            known_hash=f"sha256:{remote.sha256[fname]}",
            fname=fname,
            path=folder,
            progressbar=False,
            downloader=pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S),
        )
    except ValueError as exc:
        # pooch's own hash-mismatch error (it has already deleted the download).
        got = re.search(r"but got ([0-9a-fA-F]{64})", str(exc))
        if got is None:
            reason = f"download failed: {exc}"
            raise _not_found(name, remote, folder, still_missing, reason) from exc
        raise _integrity_error(name, remote, fname, url, got.group(1).lower()) from exc
    except Exception as exc:  # network, HTTP status, file system: all mean "still missing"
        reason = f"download failed: {type(exc).__name__}: {exc}"
        raise _not_found(name, remote, folder, still_missing, reason) from exc
    return Path(out)


def _not_found(
    name: str, remote: RemoteFiles, folder: Path, missing: list[str], reason: str
) -> DatasetNotFoundError:
    urls = ", ".join(remote.url(f) for f in missing)
    searched = ", ".join([str(folder), *remote.system_dirs])
    return DatasetNotFoundError(
        f"dataset {name!r}: missing {', '.join(missing)} (searched {searched}; {reason}). "
        f"Download {urls} and put the files in {folder}/ (or load with download=True where "
        f"those URLs are reachable). {remote.hint}".rstrip()
    )


def _integrity_error(
    name: str, remote: RemoteFiles, fname: str, where: str, actual: str
) -> DatasetIntegrityError:
    expected = " or ".join(remote.accepted(fname))
    return DatasetIntegrityError(
        f"dataset {name!r}: {fname} ({where}) failed its SHA-256 check: expected {expected}, "
        f"actual {actual}. The file is corrupt, truncated or not the official release: "
        f"delete it and load again with download=True to re-download it, or replace it with "
        f"the file from {remote.url(fname)}."
    )
