"""Report files: the size cap and no symlink escape from a directory (issue 21 item 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aqe.errors import ReportError
from aqe.ingest.files import find_reports, read_report
from aqe.ingest.parsers import detect_format, parse_report
from aqe.ingest.spool import read_spool

REPORT = (
    b'<testsuite name="s" tests="1"><testcase classname="a.B" name="t" time="0.1"/></testsuite>'
)


def test_a_file_over_the_cap_is_refused_naming_file_and_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(REPORT)
    with pytest.raises(ReportError) as info:
        parse_report(path, max_bytes=len(REPORT) - 1)
    message = str(info.value)
    assert message.startswith(f"{path}: file too large: {len(REPORT)} bytes")
    assert f"the cap is {len(REPORT) - 1} bytes" in message
    with pytest.raises(ReportError, match="file too large"):
        detect_format(path, max_bytes=10)
    with pytest.raises(ReportError, match="file too large"):
        read_spool(path, max_bytes=10)
    assert parse_report(path, max_bytes=len(REPORT)).cases[0].test_id == "a.B.t"


def test_a_device_that_never_ends_stops_at_the_cap() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(ReportError, match="file too large: more than that"):
        read_report(Path("/dev/zero"), max_bytes=3 * 1024 * 1024 + 5)


def test_a_symlink_out_of_the_directory_is_skipped_with_a_message(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "sub").mkdir(parents=True)
    (reports / "a.xml").write_bytes(REPORT)
    secret_dir = tmp_path / "private"
    secret_dir.mkdir()
    (secret_dir / "secret.xml").write_bytes(REPORT)
    os.symlink(secret_dir / "secret.xml", reports / "escape.xml")
    os.symlink(secret_dir, reports / "sub" / "outside")
    os.symlink(reports / "a.xml", reports / "sub" / "inside.xml")
    files, skipped = find_reports([reports])
    assert files == [reports / "a.xml", reports / "sub" / "inside.xml"]
    assert skipped == sorted(
        [
            f"{reports / 'escape.xml'}: skipped, a symbolic link to outside {reports}",
            f"{reports / 'sub' / 'outside'}: skipped, a symbolic link to outside {reports}",
        ]
    )


def test_a_file_named_directly_is_read_as_named(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.xml"
    target.write_bytes(REPORT)
    link = tmp_path / "link.xml"
    os.symlink(target, link)
    assert find_reports([link]) == ([link], [])


def test_missing_paths_and_empty_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such file"):
        find_reports([tmp_path / "nope.xml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"no \.xml/\.json/\.jsonl reports"):
        find_reports([tmp_path / "empty"])
