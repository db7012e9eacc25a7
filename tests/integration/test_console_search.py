"""Console keyword search on a store larger than its first look by time
(docs/console.md "Search"; issue 8 item 3).

A keyword search without a participant or room is answered by walking
the time index newest first for at most 5,000 rows, then, if the keyword
was frequent enough there, by a longer walk, and otherwise by FULLTEXT.
These tests put 12,000 message records straight into audit_record (SQL,
like tests/bench/console_bench.py: the chain is not what is tested) with
keywords of every frequency, page through each search with the API's
cursor and compare with the rows the keyword must find, computed here:
whichever way a page was answered, the pages are exact.

Real slapd, mariadbd and nginx; erin (compliance) searches through the
API.
"""

import pytest

from console import Console

APPLIANCE_EXTRA_HTTP = """
conclave_db_timeout 20s;
conclave_audit_db_timeout 20s;
"""

N = 12000
BASE_US = 1_700_000_000_000_000

# every 10th row (the first look fills a page), every 100th (about 50
# in the first look: the longer walk), the oldest 30 (neither: FULLTEXT),
# and a word that is also inside another word ("azebra77" must not match
# "zebra77": a keyword's words begin words)
BODY = """CONCAT('note ',
    IF(s.seq % 10 = 0, 'kwcommon ', ''),
    IF(s.seq % 100 = 7, 'kwmiddle ', ''),
    IF(s.seq <= 30, 'kwrare ', ''),
    IF(s.seq % 50 = 3, 'zebra77 ', IF(s.seq % 50 = 4, 'azebra77 ', '')),
    'end')"""

FILL = """
INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event, status,
    actor_user, peer, actor_ip, session_id, transport, msg_type, stanza_id,
    body, payload, prev_hash, entry_hash)
SELECT 'searchtest', 0, s.seq, %d + s.seq * 1000000, 'message', 'success',
       CONCAT('u', s.seq %% 7, '@example.com'), 'peer@example.com',
       '127.0.0.1', 'test', 'websocket', 'chat', CONCAT('s', s.seq),
       %s, '{}', UNHEX(SHA2(s.seq, 256)), UNHEX(SHA2(s.seq + 1, 256))
FROM seq_1_to_%d s;
""" % (BASE_US, BODY, N)


def body(seq):
    b = "note "
    if seq % 10 == 0:
        b += "kwcommon "
    if seq % 100 == 7:
        b += "kwmiddle "
    if seq <= 30:
        b += "kwrare "
    if seq % 50 == 3:
        b += "zebra77 "
    elif seq % 50 == 4:
        b += "azebra77 "
    return b + "end"


def expected(pred):
    """stanza ids of the rows pred keeps, newest first"""
    return ["s%d" % seq for seq in range(N, 0, -1) if pred(body(seq))]


@pytest.fixture(scope="module")
def store(appliance):
    db = appliance.mariadb
    db.query(FILL, database=db.database, timeout=300)
    n = int(db.scalar("SELECT COUNT(*) FROM audit_record WHERE node = "
                      "'searchtest'", database=db.database))
    assert n == N
    return appliance


@pytest.fixture
def erin(appliance):
    c = Console(appliance.base_url)
    c.signin("erin", "erin-pw")
    return c


def search_all(erin, **query):
    """Every page of a search: the stanza ids in order and the pages."""
    ids, cursor, pages = [], None, 0
    while True:
        q = dict(query)
        if cursor:
            q["cursor"] = cursor
        status, doc = erin.get("search", **q)
        assert status == 200, (query, status, doc)
        pages += 1
        assert len(doc["results"]) <= 50
        ids += [m["stanza_id"] for m in doc["results"]]
        cursor = doc.get("next")
        if not cursor:
            return ids, pages
        assert len(doc["results"]) == 50


@pytest.mark.parametrize("q, pred", [
    # 1,200 rows: every page from the first look
    ("kwcommon", lambda b: "kwcommon" in b),
    # 120 rows, ~50 in the first look: the longer walk, then FULLTEXT
    # for the last page
    ("kwmiddle", lambda b: "kwmiddle" in b),
    # the oldest 30: not in any walk, FULLTEXT answers
    ("kwrare", lambda b: "kwrare" in b),
    # a word prefix, upper case: same rows as the whole word
    ("KWRAR", lambda b: "kwrare" in b),
    # 240 rows with "zebra77" at a word start, 240 with it inside
    # "azebra77": only the first
    ("zebra77", lambda b: " zebra77" in b),
    # a phrase of two words
    ("note kwcommon", lambda b: "note kwcommon" in b),
])
def test_every_page_is_exact(store, erin, q, pred):
    want = expected(pred)
    assert want, q
    got, pages = search_all(erin, q=q)
    assert got == want, q
    assert pages == (len(want) + 49) // 50


def test_a_word_inside_another_word_is_not_a_hit(store, erin):
    # "ebra77" begins no word (only "zebra77" and "azebra77" contain it)
    assert search_all(erin, q="ebra77") == ([], 1)
    # nor does a word no row has
    assert search_all(erin, q="kwnothing") == ([], 1)


def test_time_range_bounds_the_walk(store, erin):
    since_ms = (BASE_US + 5000 * 1000000) // 1000
    until_ms = (BASE_US + 6000 * 1000000) // 1000
    want = ["s%d" % seq for seq in range(5999, 4999, -1)
            if "kwcommon" in body(seq)]
    got, _ = search_all(erin, q="kwcommon", since=since_ms, until=until_ms)
    assert got == want


def test_a_participant_keeps_to_its_index(store, erin):
    # u3's rows (seq % 7 == 3) with the keyword: answered by the user's
    # index, the same rows
    want = ["s%d" % seq for seq in range(N, 0, -1)
            if seq % 7 == 3 and "kwmiddle" in body(seq)]
    got, _ = search_all(erin, q="kwmiddle", user="u3")
    assert got == want
