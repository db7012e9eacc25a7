"""Legal holds against every path that deletes (issue 8 item 6).

Records go through the real path (journal_cli in small segments, then
`conclavectl ship` into a real mariadbd).  An active hold on alice must
survive both deletion paths of the record: `conclavectl prune` (journal
segments MariaDB already has) and `conclavectl retention run` (rows in
MariaDB, with signed tombstones); `conclavectl verify` passes after
each.  Prune keeps the segment holding a held record and every later
segment of that journal, so its removals stay a prefix; releasing the
hold lets a later prune and retention run go on.
"""

import glob
import os
import re
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from auditstore import NODE, started  # noqa: E402

DAY = 86400 * 10 ** 6
NOW = int(time.time()) * 10 ** 6
OLD = NOW - 400 * DAY
SEG = dict(size=400, segment_size=4096, checkpoint=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    yield from started(tmp_path_factory.mktemp("holdpaths"))


def segments(s, writer):
    return sorted(glob.glob(os.path.join(s.dir, "journal-%d-*.cj" % writer)))


def first_seq(path):
    return int(re.search(r"-(\d{20})\.cj$", path).group(1))


def count(s, where):
    return int(s.scalar("SELECT COUNT(*) FROM audit_record WHERE node = "
                        "'%s' AND %s" % (NODE, where)))


def verify(s, *args):
    r = s.ctl("verify", *args, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith(": OK"), r.stdout


def test_a_held_record_survives_prune_and_retention(store):
    # writer 0: alice's old messages first, then carol's, then a recent one
    store.write(0, 20, ts=OLD, user="alice@example.com",
                peer="bob@example.com", **SEG)
    store.write(0, 20, ts=OLD + 1, user="carol@example.com",
                peer="dave@example.com", **SEG)
    store.write(0, 2, ts=NOW - DAY, user="carol@example.com",
                peer="dave@example.com", size=400, segment_size=4096)
    store.ship()
    segs = segments(store, 0)
    assert len(segs) > 4, segs

    store.ctl("retention", "set", "--messages", "365", "--signins", "365",
              "--actor", "frank@example.com")
    store.ctl("hold", "create", "--matter", "PATHS-1", "--custodians",
              "alice@example.com", "--actor", "erin@example.com")

    # path 1: prune.  alice's records are in the first segment: nothing
    # of this journal may go
    r = store.ctl("prune", "--keep-days", "0")
    assert "pruned 0 segments" in r.stdout, r.stdout
    assert re.search(r"kept %s and later segments of journal 0 \(records "
                     r"1-\d+: a legal hold\)" % os.path.basename(segs[0]),
                     r.stdout), r.stdout
    assert segments(store, 0) == segs
    verify(store)

    # path 2: retention.  carol's old ones go, alice's stay
    r = store.ctl("retention", "run")
    assert "20 deleted" in r.stdout and "20 kept by legal holds" in \
        r.stdout, r.stdout
    assert count(store, "actor_user = 'alice@example.com'") == 20
    assert count(store, "actor_user = 'carol@example.com'") == 2
    verify(store)
    verify(store, "--db-only")

    # prune again: still nothing (the hold is still on)
    r = store.ctl("prune", "--keep-days", "0")
    assert "pruned 0 segments" in r.stdout and segments(store, 0) == segs

    # released: back to retention, and prune goes on
    store.ctl("hold", "release", "--matter", "PATHS-1", "--actor",
              "erin@example.com")
    r = store.ctl("retention", "run")
    assert "20 deleted" in r.stdout, r.stdout
    assert count(store, "actor_user = 'alice@example.com'") == 0
    r = store.ctl("prune", "--keep-days", "0")
    left = segments(store, 0)
    assert left and left[-1] == segs[-1] and len(left) < len(segs), r.stdout
    verify(store, "--db-only")


def test_prune_stops_at_the_first_held_segment(store):
    # writer 1: carol's old messages, then alice's under a new hold, then
    # carol's again
    store.write(1, 20, ts=OLD, user="carol@example.com",
                peer="dave@example.com", **SEG)
    store.write(1, 5, ts=OLD + 2, user="grace@example.com",
                peer="alice@example.com", **SEG)
    store.write(1, 20, ts=OLD + 3, user="carol@example.com",
                peer="dave@example.com", size=400, segment_size=4096)
    store.ship()
    segs = segments(store, 1)
    store.ctl("hold", "create", "--matter", "PATHS-2", "--custodians",
              "alice@example.com", "--actor", "erin@example.com")

    r = store.ctl("prune", "--keep-days", "0")
    left = segments(store, 1)
    removed = [p for p in segs if p not in left]
    assert removed, r.stdout
    # every removed segment is before grace's records to alice (21-25),
    # every segment from the one holding seq 21 on is kept
    for i, p in enumerate(segs):
        last = first_seq(segs[i + 1]) - 1 if i + 1 < len(segs) else None
        if p in removed:
            assert last is not None and last < 21, (p, last)
        elif last is not None and first_seq(p) <= 21 <= last:
            held = p
    assert held in left and segs[-1] in left
    assert left == segs[segs.index(held):]
    assert "kept %s" % os.path.basename(held) in r.stdout, r.stdout
    # the held records are all there, in MariaDB and in the journal
    assert count(store, "peer = 'alice@example.com'") == 5
    verify(store, "--db-only")
