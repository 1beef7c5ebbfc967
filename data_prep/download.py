"""Download the public annotation files of the four benchmarks and verify their sha256.

    python -m data_prep download charades_sta|activitynet_captions|charades_cg|activitynet_cg --to DIR

Files land in DIR/<dataset>/<file>; a file already there with the right checksum is not fetched
again; a download with the wrong checksum is deleted and reported (never used).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vdi.data.format import sha256_file
from vdi.errors import InputError, UserError

# raw.githubusercontent.com resolves HEAD to the repository's default branch.
_VIDEOX = "https://raw.githubusercontent.com/microsoft/VideoX/HEAD/2D-TAN/data/Charades-STA"
_MMN = "https://raw.githubusercontent.com/MCG-NJU/MMN/HEAD/dataset/ActivityNet"
_CG = "https://raw.githubusercontent.com/YYJMJC/Compositional-Temporal-Grounding/HEAD"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: str


SOURCES: dict[str, list[RemoteFile]] = {
    "charades_sta": [
        RemoteFile(
            "charades_sta_train.txt",
            f"{_VIDEOX}/charades_sta_train.txt",
            "47ec9b6b488fca753373d9cc29b07a959f7237a922cb29463cd088cd6198e805",
        ),
        RemoteFile(
            "charades_sta_test.txt",
            f"{_VIDEOX}/charades_sta_test.txt",
            "fab341679c20b0917173dcffffde367a71113fe63f3a645558cef2ebfbfefb55",
        ),
    ],
    "activitynet_captions": [
        RemoteFile(
            "train.json", f"{_MMN}/train.json", "704536b2779011c1a729c927ae30e39ea9c90c38557836bbe969499917243d69"
        ),
        RemoteFile("val.json", f"{_MMN}/val.json", "466aaccb9ebe45c6db4c98488a4ddbeb5b22faffe62e1bbce81222c14fc29e1c"),
        RemoteFile(
            "test.json", f"{_MMN}/test.json", "08fe56568bc92dd02a6150fe1094457a5f2ac72975b8778a922bc9a65aa7f0e9"
        ),
    ],
    "charades_cg": [
        RemoteFile(
            "train.json",
            f"{_CG}/Charades-CG/train.json",
            "c66556077d8b6a1fd7ee91641f994cd1341c11adfa4fc078434c9fe7a4b93d8d",
        ),
        RemoteFile(
            "test_trivial.json",
            f"{_CG}/Charades-CG/test_trivial.json",
            "45eec9d3c46187235309344ab937a065b409cbdc3f3f9d926da6fd05302d822d",
        ),
        RemoteFile(
            "novel_composition.json",
            f"{_CG}/Charades-CG/novel_composition.json",
            "c92beda2c861bb0da356d94bba131d49e20a59d893d6e182bda1ee68a852514d",
        ),
        RemoteFile(
            "novel_word.json",
            f"{_CG}/Charades-CG/novel_word.json",
            "f3ccd59c9f18e221028138faaf9bdddb5215e2550215ca62c8f24659168eb7f3",
        ),
    ],
    "activitynet_cg": [
        RemoteFile(
            "train.json",
            f"{_CG}/ActivityNet_CG/train.json",
            "31a6e0aa938f1f0d469bcb8d5492de7f9e9f77f74ba5676772db052057e26102",
        ),
        RemoteFile(
            "test_trivial.json",
            f"{_CG}/ActivityNet_CG/test_trivial.json",
            "32c4d12ff1cdf35f4b48cf4d93bbb2c71beb802d693f57e0afc90347aaa937a4",
        ),
        RemoteFile(
            "novel_composition.json",
            f"{_CG}/ActivityNet_CG/novel_composition.json",
            "d44d2c456974a4661bf14008d6316926e3b04d7ab9d48ed694861dc28602fe1b",
        ),
        RemoteFile(
            "novel_word.json",
            f"{_CG}/ActivityNet_CG/novel_word.json",
            "74e071738ece6d75ab1237c04a9a8cdebc939d3d65b015181596a84ae14f782c",
        ),
    ],
}


class ChecksumMismatch(UserError, RuntimeError):
    """A file whose sha256 differs from the published one."""


def verify(path: str | Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatch(f"{path}: sha256 {actual} does not match the published {expected}")


def _fetch(url: str, target: Path, timeout: float) -> None:
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as handle:
            while block := response.read(1 << 20):
                handle.write(block)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ConnectionError(f"could not download {url}: {error}") from error
    partial.replace(target)


def download(dataset: str, folder: str | Path, timeout: float = 60.0, fetch=_fetch) -> list[Path]:
    """Fetch (or re-verify) every file of ``dataset`` into folder/dataset; returns their paths."""
    if dataset not in SOURCES:
        raise InputError(f"unknown dataset '{dataset}'; choose one of {', '.join(SOURCES)}")
    target_dir = Path(folder) / dataset
    target_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for remote in SOURCES[dataset]:
        target = target_dir / remote.name
        if target.exists():
            try:
                verify(target, remote.sha256)
                print(f"{target}: present, sha256 ok")
                paths.append(target)
                continue
            except ChecksumMismatch:
                print(f"{target}: present but sha256 differs, downloading again")
        fetch(remote.url, target, timeout)
        try:
            verify(target, remote.sha256)
        except ChecksumMismatch:
            target.unlink(missing_ok=True)
            raise
        print(f"{target}: downloaded, sha256 ok")
        paths.append(target)
    return paths


__all__ = ["SOURCES", "ChecksumMismatch", "RemoteFile", "download", "verify"]
