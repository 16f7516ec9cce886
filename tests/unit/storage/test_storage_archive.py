"""Safe unpacking: every way an archive can write outside its folder, or too much, is refused."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from servekit.storage import ArchiveLimits, StorageError, is_archive, unpack_archive

LIMITS = ArchiveLimits(max_bytes=1_000_000, max_members=50)


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def assert_refused(archive: Path, tmp_path: Path, match: str, limits: ArchiveLimits = LIMITS):
    dest = tmp_path / "out"
    with pytest.raises(StorageError, match=match) as caught:
        unpack_archive(archive, dest, limits, label="s3://b/evil")
    assert "s3://b/evil" in str(caught.value)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partials
    assert not (tmp_path.parent / "evil").exists()


def test_good_tar_unpacks_with_internal_links(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "repo.tar.gz",
        [
            ("./iris/model.yaml", b"name: iris\n"),
            ("iris/1/model.joblib", b"weights"),
            link("iris/2", "1"),
            link("iris/copy.joblib", "iris/1/model.joblib", tarfile.LNKTYPE),
        ],
    )
    dest = unpack_archive(archive, tmp_path / "out", LIMITS)
    assert (dest / "iris/1/model.joblib").read_bytes() == b"weights"
    assert (dest / "iris/2/model.joblib").read_bytes() == b"weights"
    assert (dest / "iris/copy.joblib").read_bytes() == b"weights"


def test_good_zip_unpacks(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "repo.zip", [("iris/", b""), ("iris/1/model.joblib", b"w")])
    dest = unpack_archive(archive, tmp_path / "out", LIMITS)
    assert (dest / "iris/1/model.joblib").read_bytes() == b"w"


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([("../evil", b"x")], r"'\.\.'"),
        ([("iris/../../evil", b"x")], r"'\.\.'"),
        ([("/etc/x", b"x")], "absolute"),
        ([link("escape", "../../evil")], "pointing outside"),
        ([link("escape", "/etc/passwd")], "absolute path"),
        ([link("dir", "."), link("dir/up", "..")], "under a link"),  # chain through a link
        ([link("dir", "."), link("up", "dir/..")], "passes through a link"),
        ([link("up", "dir/.."), link("dir", ".")], "passes through a link"),  # link declared later
        ([("dir/f", b"x"), link("dir", "sub")], "under a link"),  # file first, link later
        ([link("hard", "/etc/passwd", tarfile.LNKTYPE)], "absolute"),
        ([link("hard", "missing", tarfile.LNKTYPE)], "not an earlier file"),
        ([link("dev", "", tarfile.CHRTYPE)], "device"),
        ([link("fifo", "", tarfile.FIFOTYPE)], "fifo"),
        ([("a", b"1"), ("a", b"2")], "twice"),
        ([("a", b"1"), ("a/b", b"2")], "under a link or a file"),
    ],
)
def test_tar_refusals(tmp_path: Path, members: list, match: str) -> None:
    assert_refused(make_tar(tmp_path / "evil.tar.gz", members), tmp_path, match)


def test_tar_size_bomb_refused_before_writing(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bomb.tgz", [("zeros", bytes(2_000_000))])
    assert archive.stat().st_size < 10_000  # compresses to almost nothing
    assert_refused(archive, tmp_path, "uncompressed size exceeds 1000000 bytes")


def test_tar_member_count_limit(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "many.tar.gz", [(f"f{i}", b"") for i in range(51)])
    assert_refused(archive, tmp_path, "more than 50 members")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil", r"'\.\.'"),
        ("..\\evil", "backslash"),
        ("/abs/evil", "absolute"),
        ("C:/x", "absolute"),
    ],
)
def test_zip_slip_refused(tmp_path: Path, name: str, match: str) -> None:
    assert_refused(make_zip(tmp_path / "slip.zip", [("ok", b"1"), (name, b"x")]), tmp_path, match)


def test_zip_symlink_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("escape")
    info.external_attr = 0o120777 << 16  # S_IFLNK: zipfile would write the target as a file
    assert_refused(make_zip(tmp_path / "link.zip", [(info, b"../../etc")]), tmp_path, "symlink")


def test_zip_bomb_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", [("zeros", bytes(2_000_000))])
    assert_refused(archive, tmp_path, "uncompressed size exceeds")


def test_zip_member_count_limit(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(51)])
    assert_refused(archive, tmp_path, "more than 50 members")


def test_truncated_archive_leaves_nothing(tmp_path: Path) -> None:
    good = make_tar(tmp_path / "good.tar.gz", [("a", bytes(range(256)) * 400), ("b", b"x")])
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_refused(broken, tmp_path, "cannot unpack archive")


def test_not_an_archive(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    assert_refused(fake, tmp_path, "cannot unpack archive")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("m.tar.gz", True), ("m.TGZ", True), ("m.zip", True), ("m.tar", True), ("m.joblib", False)],
)
def test_is_archive(name: str, expected: bool) -> None:
    assert is_archive(name) is expected
