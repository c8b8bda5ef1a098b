"""make_database.py's shortcuts for speed give the answers of the plain ways they replace."""

import time

import pytest

import make_database as md


@pytest.mark.parametrize(
    "t",
    [
        "2021-10-17T18:26:14",
        "2021-03-28T02:30:00",  # a local time that does not exist in some zones
        "2021-10-31T02:30:00",  # one that exists twice in some zones
        "2021-10-17T23:59:60",  # strptime takes seconds 60 and 61
        "2021-1-5T1:2:3",  # and fields without their leading zeros
    ],
)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/Santiago"])
def test_t_seconds_reads_t_as_strptime_does(t, zone, monkeypatch):
    """Does a cycle's T give the same UTC seconds as time.strptime gave it?"""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert md.t_seconds(t) == time.mktime(time.strptime(t, md.TIME_FORMAT))
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "t", ["2021-02-29T00:00:00", "2021-13-01T00:00:00", "2021-10-17T24:00:00", "T", ""]
)
def test_t_seconds_refuses_what_strptime_refuses(t):
    """Is a T that names no time refused (the log's mtime then stands in for it)?"""
    with pytest.raises(ValueError):
        time.strptime(t, md.TIME_FORMAT)
    with pytest.raises(ValueError):
        md.t_seconds(t)
