"""The viewer over a whole term: after each commit of the loop the catalog reads only what
changed (new rows, rows replaced when a version becomes a backup, rows deleted or edited by
hand), and equals a full read of the database; a database replaced or renumbered is read
in full. Real databases made by the real scripts."""

import bisect
import os
import shutil
import sqlite3
import threading
import time

import demo_course
import numpy as np
import pytest
from conftest import private_access_db, rows, sync, write_json, write_users
from demo_course import execute_result, grade_cell, notebook

import progress_viewer as pv
from progress_views import access, activity, model, snapshot
from progress_views.data import (
    CatalogCache,
    Data,
    Follower,
    database_key,
    insertion_places,
    read_catalog,
)

MINUTE = 60
LONG_NAME = "課題" * 39 + ".ipynb"  # 240 bytes: with `.bak_T` over the 255-byte limit


def seen(catalog):
    """What the views see of a catalog, whatever the numbering of its sources: per source,
    its owner and its versions in order (t, rowid, counts); per student, their saves."""
    starts = catalog.starts().tolist()
    sources = {
        name: (
            catalog.source_owner[s],
            catalog.t[starts[s] : starts[s + 1]].astype(str).tolist(),
            catalog.rowid[starts[s] : starts[s + 1]].tolist(),
            np.nan_to_num(catalog.counts[starts[s] : starts[s + 1]], nan=-1).tolist(),
        )
        for s, name in enumerate(catalog.sources)
        if starts[s + 1] > starts[s]
    }
    saves = {
        uid: (catalog.saved.times[uid].tolist(), catalog.saved.rowids[uid].tolist())
        for uid in catalog.saved.times
    }
    return sources, saves


def saves_by_owner(catalog):
    """Every save: whose it is, when, its rowid; checked to be kept in order (of the
    owners' numbers, which depend on the order rows were read)."""
    saved = catalog.saved
    kept = list(zip(saved.owner.tolist(), saved.t.tolist(), saved.rowid.tolist()))
    assert kept == sorted(kept)
    return sorted((catalog.numbering.owners[n], t, rowid) for n, t, rowid in kept)


def viewer_settings(root, **more):
    """The viewer's settings for the course in `root` (a private ACCESS_DB of its own)."""
    return {
        **pv.DEFAULTS,
        "SYNC_SQLITE": str(root / "sync.sqlite"),
        "USERS_CSV": str(root / "users.csv"),
        "ACCESS_DB": private_access_db(),
        **more,
    }


def full_read(db):
    return read_catalog(str(db), database_key(str(db)))


@pytest.fixture
def term(tmp_path):
    """A course of 6 students, 2 assignments and a data file each, and a function running
    one real sync cycle at a minute of it."""
    course = demo_course.make_course(6, 2, problems=4, minutes=60, steady=True)
    demo_course.write_users_csv(tmp_path / "users.csv", course.students)
    start = int(time.time()) - 60 * MINUTE

    def cycle(minute):
        demo_course.write_course_at(str(tmp_path), course, minute, start)
        for student in course.students[: minute // 10 + 1]:
            data_file = tmp_path / student.notebooks / "data.csv"
            data_file.parent.mkdir(parents=True, exist_ok=True)
            data_file.write_text(f"{minute}\n")
            os.utime(data_file, (start + minute * MINUTE,) * 2)
        sync(tmp_path)

    return tmp_path, cycle


def test_the_catalog_followed_across_cycles_equals_a_full_read(term):
    """Each cycle adds versions and replaces the rows of the ones that became backups: the
    catalog kept up to date from the changes alone is the one a full read gives, with
    every student's saves of any file, and it was read in full only once."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    cache = CatalogCache()
    cycle(0)
    cache.get(db)
    for minute in range(10, 61, 10):
        cycle(minute)
        followed = cache.get(db)
        assert seen(followed) == seen(full_read(db))
        assert saves_by_owner(followed) == saves_by_owner(full_read(db))
        assert followed.mark.change > 0  # rows were replaced, and followed
    assert cache.full_reads == 1
    replaced = rows(db, "SELECT count(*) FROM summary_changes")[0][0]
    backups = rows(db, "SELECT count(*) FROM summary WHERE filename GLOB '*.bak_*'")[0][0]
    assert replaced == backups  # each backup's version had its row replaced once


def test_rows_deleted_or_edited_by_hand_are_followed_too(term):
    """The instructor deletes a version and edits another's time in the sqlite3 shell:
    the catalog follows both without a full read."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    cache = CatalogCache()
    for minute in (0, 20):
        cycle(minute)
    cache.get(db)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM summary WHERE rowid = (SELECT min(rowid) FROM summary)")
    conn.execute(
        "UPDATE summary SET t = '2001-01-01T00:00:00'"
        " WHERE rowid = (SELECT max(rowid) FROM summary WHERE filename LIKE '%.ipynb')"
    )
    conn.commit()
    conn.close()
    followed = cache.get(db)
    assert seen(followed) == seen(full_read(db))
    assert "2001-01-01T00:00:00" in str(followed.t.min())
    assert cache.full_reads == 1


def test_a_database_replaced_or_whose_counter_went_back_is_read_in_full(term):
    """A VACUUM keeps summary's rowids (followed as usual); a rebuilt database is another
    file, and summary_changes emptied by hand sends its counter back: both are read in
    full, and the histories read before are not reused."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    settings = viewer_settings(root)
    data = Data(settings, access.PasswordGate(settings))
    for minute in (0, 10, 20):
        cycle(minute)
    data.histories()
    conn = sqlite3.connect(db)
    conn.execute("VACUUM")
    conn.close()
    assert seen(data.catalog()) == seen(full_read(db)) and data.catalogs.full_reads == 1
    shutil.copy(db, db + ".copy")
    os.replace(db + ".copy", db)
    assert seen(data.catalog()) == seen(full_read(db)) and data.catalogs.full_reads == 2
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM summary_changes")
    conn.commit()
    conn.close()
    cycle(30)
    assert seen(data.catalog()) == seen(full_read(db)) and data.catalogs.full_reads == 3
    fresh = Data(settings, access.PasswordGate(settings))
    for assignment, history in data.histories().items():
        assert history.versions == fresh.history(assignment).versions
    assert data.earlier.lineage == 3  # the histories of lineage 1 were dropped


def test_a_database_made_before_summary_changes_is_read_in_full_after_each_change(tmp_path):
    """Without the triggers' table (a database of an older make_database) nothing tells
    what was replaced: every change is a full read, as before."""
    db = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE summary(filename unique, t, owner, code_ok, code_display, code_stream,"
        " code_error, code_empty)"
    )
    conn.execute(
        "INSERT INTO summary VALUES ('a/nb.ipynb', '2021-03-15T10:00:00', 'a', 1, 0, 0, 0, 0)"
    )
    conn.commit()
    cache = CatalogCache()
    cache.get(db)
    conn.execute(
        "INSERT OR REPLACE INTO summary"
        " VALUES ('a/nb.ipynb', '2021-03-15T10:05:00', 'a', 2, 0, 0, 0, 0)"
    )
    conn.commit()
    conn.close()
    assert seen(cache.get(db)) == seen(full_read(db)) and cache.full_reads == 2


def test_histories_kept_across_cycles_equal_fresh_ones(term):
    """The data layer updates every assignment's History after each cycle from the
    catalog's changes; each equals the History a fresh viewer reads."""
    root, cycle = term
    settings = viewer_settings(root)
    data = Data(settings, access.PasswordGate(settings))
    for minute in range(0, 61, 15):
        cycle(minute)
        kept, saves = data.histories(), data.saves()
        fresh = Data(settings, access.PasswordGate(settings))
        for assignment, history in fresh.histories().items():
            assert kept[assignment].problems == history.problems
            assert kept[assignment].versions == history.versions
            assert kept[assignment].classes.tolist() == history.classes.tolist()
        assert {u: t.tolist() for u, t in saves.times.items()} == {
            u: t.tolist() for u, t in fresh.saves().times.items()
        }
        # the first screen the teacher sees now, and 20 minutes ago
        now = max((int(h.table.t.max()) for h in kept.values() if len(h.table.t)), default=0)
        for moment in (now, now - 1200):
            assert data.class_at(moment, 10) == fresh.class_at(moment, 10)
    assert data.catalogs.full_reads == 1


def test_after_a_cycle_only_the_changed_assignments_history_is_read_and_new_files_show(term):
    """A cycle where one student saves one assignment and starts a new notebook: the other
    assignment's History is the one kept, the changed one equals a fresh read, and the new
    notebook is listed and found by the path regexp (what is kept per set of sources is
    made again when a source comes)."""
    root, cycle = term
    settings = viewer_settings(root, PASSWD="pw")
    data = Data(settings, access.PasswordGate(settings))
    for minute in (0, 30):
        cycle(minute)
    before = data.histories()
    assert len(before) == 2
    search = activity.Filters(path_re="scratch", password="pw")
    assert activity.graph(data, search)[1] == "0 rows"
    changed, untouched = sorted(before)
    folder = root / data.people().by_uid["u001"].notebooks
    answer = notebook([grade_cell("x = 1", "p1_1", [execute_result("1")])])
    write_json(folder / changed, answer, time.time())
    write_json(folder / "extra" / "scratch.ipynb", notebook([]), time.time())
    sync(root)
    after = data.histories()
    assert after[untouched] is before[untouched]
    fresh = Data(settings, access.PasswordGate(settings))
    assert after[changed].versions == fresh.history(changed).versions
    assert after[changed].versions["u001"] != before[changed].versions["u001"]
    figure = activity.graph(data, search)[0]
    assert [label.split()[0] for label in figure["layout"]["yaxis"]["ticktext"]] == [
        "extra/scratch.ipynb"
    ]
    assert data.catalogs.full_reads == 1


def test_a_viewer_starts_from_the_catalog_an_earlier_one_saved(term):
    """The first viewer reads the database in full and saves its catalog (private); the
    next one starts from it, reads only what changed since, and sees what a full read
    gives, before and after more cycles; a saved catalog of another database file, or a
    damaged one, is not used."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    stem = str(root / "viewer-")
    path = stem + "catalog.npz"
    for minute in (0, 10):
        cycle(minute)
    first = CatalogCache(snapshot.Store(stem))
    assert seen(first.get(db)) == seen(full_read(db)) and first.full_reads == 1
    assert os.stat(path).st_mode & 0o777 == 0o600
    for minute in (20, 30):
        cycle(minute)
    second = CatalogCache(snapshot.Store(stem))
    assert seen(second.get(db)) == seen(full_read(db)) and second.full_reads == 0
    cycle(40)
    assert seen(second.get(db)) == seen(full_read(db)) and second.full_reads == 0
    shutil.copy(db, db + ".copy")  # the database rebuilt: another file
    os.replace(db + ".copy", db)
    third = CatalogCache(snapshot.Store(stem))
    assert seen(third.get(db)) == seen(full_read(db)) and third.full_reads == 1
    with open(path, "r+b") as stream:
        stream.seek(100)
        stream.write(b"damaged" * 10)
    fourth = CatalogCache(snapshot.Store(stem))
    assert seen(fourth.get(db)) == seen(full_read(db)) and fourth.full_reads == 1
    np.savez(path, format=np.array([snapshot.FORMAT]), sources=np.frombuffer(b"[", np.uint8))
    fifth = CatalogCache(snapshot.Store(stem))  # the right format, not what it holds
    assert seen(fifth.get(db)) == seen(full_read(db)) and fifth.full_reads == 1
    assert fifth.store.load(1) is not None  # saved again after that full read
    os.chmod(path, 0o666)  # another account could have written it
    assert CatalogCache(snapshot.Store(stem)).store.load(1) is None
    os.replace(path, path + ".real")
    os.symlink(path + ".real", path)  # a link planted where the viewer saves
    assert CatalogCache(snapshot.Store(stem)).store.load(1) is None
    os.chmod(path + ".real", 0o600)
    assert snapshot.read(path + ".real")  # what the link points to is fine itself
    assert not [name for name in os.listdir(root) if name.endswith(".tmp")]
    os.unlink(path)
    os.mkfifo(path)  # a FIFO planted there: opening it must not wait for a writer
    loading = threading.Thread(
        target=CatalogCache(snapshot.Store(stem)).get, args=(db,), daemon=True
    )
    loading.start()
    loading.join(30)
    assert not loading.is_alive()


@pytest.mark.parametrize(
    "journal",
    [
        pytest.param("", id="same journal, its newest row differs"),
        pytest.param(
            "UPDATE summary_changes SET summary_rowid = summary_rowid + 1000",
            id="the journal entry names another row",
        ),
    ],
)
def test_a_saved_catalog_of_another_database_in_the_same_file_is_not_followed(term, journal):
    """Another database that took the file's inode with counters as high (a course made
    the same way, rebuilt in place): the saved catalog's last journal entry names
    another row, or its newest row differs, so the database is read in full."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    stem = str(root / "viewer-")
    for minute in (0, 10, 20):
        cycle(minute)
    CatalogCache(snapshot.Store(stem)).get(db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER summary_row_updated")
    conn.execute("UPDATE summary SET t = '2001-01-01T00:00:00'")
    if journal:
        conn.execute(journal)
    conn.commit()
    conn.close()
    followed = CatalogCache(snapshot.Store(stem))
    assert seen(followed.get(db)) == seen(full_read(db)) and followed.full_reads == 1


def by_rowid(histories):
    return {
        version.rowid: version
        for history in histories.values()
        for versions in history.versions.values()
        for version in versions
    }


def test_a_viewer_starts_from_the_histories_an_earlier_one_saved(term):
    """The first viewer reads every assignment's History and saves them; the next one
    starts from them: it shows the versions it has without reading their problems again
    (here deleted from the database after the save), and reads the new one of the next
    cycle; saved histories of another database are not used, and are replaced."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    stem = str(root / "viewer-")
    settings = viewer_settings(root)

    def viewer():
        return Data(settings, access.PasswordGate(settings), store=snapshot.Store(stem))

    for minute in (0, 20):
        cycle(minute)
    first = viewer().histories()
    assert os.stat(stem + "histories.npz").st_mode & 0o777 == 0o600
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM problems")
    conn.commit()
    conn.close()
    second = viewer()
    for assignment, history in second.histories().items():
        assert history.versions == first[assignment].versions
    folder = root / second.people().by_uid["u001"].notebooks
    answer = notebook([grade_cell("x = 1", "p1_1", [execute_result("1")])])
    write_json(folder / sorted(first)[0], answer, time.time())
    sync(root)
    fresh = Data(settings, access.PasswordGate(settings))
    kept, read = by_rowid(first), by_rowid(fresh.histories())
    later = by_rowid(second.histories())
    assert any(v.outcomes for v in kept.values())  # a cold read would show none now
    assert set(later) - set(kept) and set(later) & set(kept)
    for rowid, version in later.items():
        assert version == (kept[rowid] if rowid in kept else read[rowid])
    shutil.copy(db, db + ".copy")  # another file: the saved histories are not used
    os.replace(db + ".copy", db)
    for assignment, history in viewer().histories().items():
        assert history.versions == fresh.history(assignment).versions
    # and are replaced by this database's, for the next start
    saved = snapshot.mark_of(snapshot.read(stem + "histories.npz")["mark"])
    assert saved.inode == os.stat(db).st_ino


def test_the_follower_reads_each_commit_before_a_page_asks_and_stops_when_none_does(term):
    """While pages ask, a thread reads each commit as it lands: the catalog, every
    assignment's History and the saves are those of the database now before any page
    asks again, and equal a fresh viewer's; no page asking, it stops."""
    root, cycle = term
    db = str(root / "sync.sqlite")
    settings = viewer_settings(root)
    data = Data(settings, access.PasswordGate(settings))
    data.follower = Follower(data, seconds=0.05, idle=60)
    cycle(0)
    data.follower.touch()
    for minute in (20, 40):
        cycle(minute)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not read_now(data, db):
            time.sleep(0.05)
        assert read_now(data, db)  # read by the follower: no page asked since the commit
        fresh = Data(settings, access.PasswordGate(settings))
        for assignment, history in data.memo("histories", dict).items():
            assert history.versions == fresh.history(assignment).versions
    assert data.catalogs.full_reads == 1
    thread = data.follower.thread
    data.follower.idle = 0.2
    time.sleep(0.5)
    assert not thread.is_alive() and data.follower.thread is None
    data.follower.idle = 60
    data.follower.touch()  # a page asks again: following again
    assert data.follower.thread is not None and data.follower.thread.is_alive()


def test_one_call_gives_and_saves_the_histories_of_one_catalog(term, monkeypatch):
    """Another thread reads a commit while every assignment's History is being read: the
    call reads them again of the newer catalog, and what it saves for the next start is of
    that one (not an older History under the newer catalog's mark)."""
    root, cycle = term
    stem = str(root / "viewer-")
    settings = viewer_settings(root)
    data = Data(settings, access.PasswordGate(settings), store=snapshot.Store(stem))
    for minute in (0, 30):
        cycle(minute)
    first, *_ = data.assignments()
    read = Data.history
    calls = []

    def history(self, assignment):
        calls.append(assignment)
        if len(calls) == 2:  # the first is read: a commit changes it, another thread reads it
            folder = root / self.people().by_uid["u001"].notebooks
            answer = notebook([grade_cell("x = 1", "p1_1", [execute_result("1")])])
            write_json(folder / first, answer, time.time())
            sync(root)
            self.catalog()
        return read(self, assignment)

    monkeypatch.setattr(Data, "history", history)
    got = data.histories()
    monkeypatch.setattr(Data, "history", read)
    fresh = Data(settings, access.PasswordGate(settings))
    assert {a: h.versions for a, h in got.items()} == {
        a: h.versions for a, h in fresh.histories().items()
    }
    restarted = Data(settings, access.PasswordGate(settings), store=snapshot.Store(stem))
    for assignment, history in restarted.histories().items():
        assert history.versions == fresh.history(assignment).versions


def test_an_unexpected_error_while_following_is_logged_once_and_following_goes_on(
    term, monkeypatch, caplog
):
    """The follower meets an error no one foresaw while it reads a commit: the log says so
    once (not every second), and it reads again once the error is gone."""
    root, cycle = term
    settings = viewer_settings(root)
    data = Data(settings, access.PasswordGate(settings))
    cycle(0)
    monkeypatch.setattr(Data, "saves", lambda self: 1 / 0)
    for _ in range(3):
        data.follower.follow()
    assert caplog.text.count("following the database: ZeroDivisionError") == 1
    monkeypatch.undo()
    data.follower.follow()  # works again
    monkeypatch.setattr(Data, "saves", lambda self: 1 / 0)
    data.follower.follow()  # and fails again: said again
    assert caplog.text.count("following the database: ZeroDivisionError") == 2
    assert data.catalogs.full_reads == 1


def read_now(data, db):
    """True when the data layer holds the database as it is now: its catalog, and the
    History of every assignment."""
    current = data.catalogs.current
    if current is None or current.key != database_key(db):
        return False
    kept = current.cache.items.get(("histories", data.people().key), {})
    return set(kept) == set(data.assignments())


# ---------------------------------------------------------------------------- version_details


def activity_data(root):
    settings = viewer_settings(root, PASSWD="pw")
    return Data(settings, access.PasswordGate(settings), lambda: "10.0.0.9")


def answered(answer):
    return notebook([grade_cell(answer, "q", [execute_result(answer)])])


def test_a_long_named_notebooks_versions_are_one_row(tmp_path):
    """A 240-byte notebook name: its replaced versions are recorded under shortened names
    (version_details.source says whose); the activity view shows all three versions on the
    notebook's one row, the latest last."""
    write_users(tmp_path / "users.csv", [("a", "hoge/a")])
    path = tmp_path / "hoge/a" / LONG_NAME
    for i in range(3):
        write_json(path, answered(str(i)), 1_600_000_000 + 100 * i)
        sync(tmp_path)
    data = activity_data(tmp_path)
    figure, n_rows, message = activity.graph(data, activity.Filters(password="pw"))
    assert (n_rows, message) == ("1 rows", "")
    catalog = data.catalog()
    assert catalog.sources == [f"hoge/a/{LONG_NAME}"]
    assert sum(len(trace["x"]) for trace in figure["data"]) == 3
    assert catalog.t.astype(str).tolist() == [
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_600_000_000 + 100 * i))
        for i in range(3)
    ]


def test_versions_in_the_repeated_hour_are_shown_in_save_order(tmp_path, monkeypatch):
    """On 2021-10-31 in Berlin 02:00-03:00 happens twice: a version saved at 02:30 (summer
    time), the next at 02:10 (winter time). The catalog orders them by their epoch, so
    the activity view's latest version is the 02:10 one (answered, green)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        write_users(tmp_path / "users.csv", [("a", "hoge/a")])
        path = tmp_path / "hoge/a/nb.ipynb"
        write_json(path, notebook([grade_cell("", "q1")]), mtime=1_635_640_200)
        sync(tmp_path)
        write_json(path, answered("1"), mtime=1_635_642_600)
        sync(tmp_path)
        data = activity_data(tmp_path)
        catalog = data.catalog()
        assert catalog.t.astype(str).tolist() == ["2021-10-31T02:30:00", "2021-10-31T02:10:00"]
        latest = activity.Filters(password="pw", only_latest=True)
        figure, n_rows, _ = activity.graph(data, latest)
        (trace,) = figure["data"]
        assert trace["marker"]["color"] == "green" and len(trace["x"]) == 1
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_row_place_noted_for_another_history_is_never_taken_for_a_version():
    """The places of versions in their Histories are kept for every assignment in one
    array, as hints: a place noted for another History (the rowid of a row the database
    deleted and gave again, a thread's older read) makes the version read again; it never
    carries over another version's outcomes."""

    def history(*versions):
        return model.History("pl01.ipynb", ["p1"], {"u001": list(versions)})

    answered = {"p1": "execute_result"}
    earlier = history(model.Version(10, 5, "a", answered), model.Version(20, 7, "b", answered))
    error = {"p1": "error"}
    later = history(model.Version(30, 7, "c", error), model.Version(40, 8, "d", error))
    places = model.RowPlaces()
    places.note(earlier)  # rowid 7 in row 1 of `earlier`, where `later` has rowid 8
    rowid = np.array([7, 5, 9, -1])
    assert model.reused_rows(later, rowid, places).tolist() == [-1, -1, -1, -1]
    places.note(later)
    assert model.reused_rows(later, rowid, places).tolist() == [0, -1, -1, -1]
    assert model.reused_rows(earlier, rowid).tolist() == [1, 0, -1, -1]
    # rowids far above the versions (a database renumbered by hand): nothing that size is
    # made, and the previous History is searched instead
    high = history(model.Version(10, 10**12, "a", answered), model.Version(20, 5, "b", error))
    places.note(high)
    assert places.partial and len(places.places) < 100
    assert model.reused_rows(high, np.array([5, 10**12, 7]), places).tolist() == [1, 0, -1]


def test_new_versions_go_before_the_first_row_whose_key_is_not_smaller():
    """Where a commit's versions are merged into the catalog (and its saves): by
    (source, order, rowid), ties of source and order included, as a search of the
    sorted keys one by one finds it."""
    rng = np.random.default_rng(5)
    for size in (0, 1, 7, 500):
        keys = sorted(zip(*(rng.integers(0, n, size).tolist() for n in (4, 6, 1_000))))
        new = list(zip(*(rng.integers(0, n, 300).tolist() for n in (5, 7, 1_000))))
        arrays = [np.array([k[i] for k in keys], dtype=np.int64) for i in range(3)]
        news = [np.array([k[i] for k in new], dtype=np.int64) for i in range(3)]
        places = insertion_places(*arrays, *news)
        assert places.tolist() == [bisect.bisect_left(keys, key) for key in new]


def test_versions_read_as_states_in_the_order_asked_and_a_row_gone_has_none(term):
    """read_states: each version's problems as the database holds them, for rowids in
    any order, and no problems for a rowid no longer recorded (a row replaced after the
    catalog was read)."""
    root, cycle = term
    cycle(30)
    db = root / "sync.sqlite"
    recorded = rows(db, "SELECT rowid, filename FROM summary WHERE filename LIKE '%.ipynb'")
    asked = [rowid for rowid, _ in reversed(recorded)] + [10**9]
    names = {}
    with sqlite3.connect(db) as conn:
        numbers, states = model.read_states(conn, asked, names)
    for rowid, filename in recorded:
        query = "SELECT grade_id, result FROM problems WHERE filename = ? ORDER BY rowid"
        problems = rows(db, query, (filename,))
        grade_ids, results = states[numbers[asked.index(rowid)]]
        assert list(zip(grade_ids, results)) == problems
        assert names[rowid] == filename
    assert states[numbers[-1]] == ((), ()) and 10**9 not in names
    assert len(recorded) > 10 and len(states) > 2  # versions with problems, not all alike


def test_rowids_renumbered_far_apart_by_hand_are_followed_without_memory_for_the_gap(term):
    """A database whose newest row was renumbered by hand to a rowid far above the others
    (so that every later version is numbered above it): the catalog, the saves and the
    histories follow it with nothing as large as the gap in memory, and equal a fresh
    viewer's."""
    root, cycle = term
    settings = viewer_settings(root)
    data = Data(settings, access.PasswordGate(settings))
    cycle(0)
    data.histories()
    with sqlite3.connect(root / "sync.sqlite") as conn:
        conn.execute(
            "UPDATE summary SET rowid = rowid + ? WHERE rowid = (SELECT max(rowid) FROM summary)",
            (10**15,),
        )
    for minute in (20, 40, 60):
        cycle(minute)
        kept = data.histories()
        fresh = Data(settings, access.PasswordGate(settings))
        assert seen(data.catalog()) == seen(fresh.catalog())
        for assignment, history in fresh.histories().items():
            assert kept[assignment].versions == history.versions
        now = max(int(h.table.t.max()) for h in kept.values())
        assert data.class_at(now, 10) == fresh.class_at(now, 10)
    assert rows(root / "sync.sqlite", "SELECT max(rowid) FROM summary")[0][0] > 10**15
    assert data.catalogs.full_reads == 1


def test_a_save_killed_midway_leaves_no_temporary_file_behind_for_long(term, tmp_path):
    """The temporary files of a save that was killed (each as large as the catalog) are
    removed at the next save once an hour old; a younger one (another worker saving now),
    another name's and a link are left."""
    root, cycle = term
    cycle(0)
    stem = str(tmp_path / "access.sqlite-")
    old, young, other = (
        tmp_path / "access.sqlite-catalog.npz.k1ll3d.tmp",
        tmp_path / "access.sqlite-catalog.npz.sav1ng.tmp",
        tmp_path / "notes.txt.k1ll3d.tmp",
    )
    for path in (old, young, other):
        path.write_bytes(b"x" * 1000)
    link = tmp_path / "access.sqlite-catalog.npz.l1nk.tmp"
    link.symlink_to(other)
    hour_ago = time.time() - 3700
    for path in (old, other):
        os.utime(path, (hour_ago, hour_ago))
    CatalogCache(snapshot.Store(stem)).get(str(root / "sync.sqlite"))  # a full read: saved
    assert (tmp_path / "access.sqlite-catalog.npz").exists()
    assert not old.exists()
    assert young.exists() and other.exists() and link.is_symlink()
