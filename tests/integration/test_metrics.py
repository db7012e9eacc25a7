"""conclave_metrics (Prometheus text format) and conclave_health.

The scrape is parsed twice: strictly, line by line, against the text
exposition format 0.0.4 (HELP/TYPE before samples, one TYPE per family,
valid names and label syntax, float values, no duplicate series,
histogram buckets cumulative and ending in +Inf), and by the official
Prometheus client's parser (Debian's python3-prometheus-client).  The
figures are driven by real clients: stanza.js over WebSocket and
slixmpp over TCP.
"""

import math
import re
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from slixclient import SlixPool

# /metrics (loopback only) and /health are in tests/lib/nginx.conf.in
APPLIANCE_EXTRA_SERVER = """
        location = /metrics-denied {
            deny all;
            conclave_metrics;
        }
"""

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (\S+)$" % (NAME, LABEL,
                                                              LABEL))
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def get(appliance, path):
    url = appliance.nginx.base_url + path
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def parse_strict(text):
    """{(name, labels tuple): value}, asserting the format as it goes."""
    assert text.endswith("\n"), "the last line must end with a newline"
    types, helps, series = {}, {}, {}
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and doc, where
            assert name not in helps, "second HELP, " + where
            helps[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and typ in TYPES, where
            assert name not in types, "second TYPE, " + where
            types[name] = typ
            continue
        assert not line.startswith("#") and line.strip() == line, where
        m = SAMPLE.match(line)
        assert m, where
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        fam = name if name in types else family
        assert fam in types, "sample before its TYPE, " + where
        if types[fam] == "counter":
            assert name.endswith("_total"), where
        v = float(value)                       # ValueError fails the test
        assert not math.isnan(v), where
        key = (name, tuple(re.findall(LABEL, labels)))
        assert key not in series, "duplicate series, " + where
        series[key] = v
    return series, types


def value(series, name, **labels):
    want = tuple(sorted('%s="%s"' % kv for kv in labels.items()))
    for (n, ls), v in series.items():
        if n == name and tuple(sorted(ls)) == want:
            return v
    raise KeyError((name, labels))


def scrape(appliance):
    status, headers, text = get(appliance, "/metrics")
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert headers.get("Cache-Control") == "no-store"
    series, types = parse_strict(text)
    # the reference parser must accept the same text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "conclave_ldap_latency_seconds" in families
    return series, types


def test_scrape_parses_and_has_every_family(appliance):
    series, types = scrape(appliance)
    for fam, typ in [
            ("conclave_sessions", "gauge"),
            ("conclave_messages_total", "counter"),
            ("conclave_signins_total", "counter"),
            ("conclave_ldap_requests_total", "counter"),
            ("conclave_ldap_latency_seconds", "histogram"),
            ("conclave_ldap_up", "gauge"),
            ("conclave_audit_backlog_records", "gauge"),
            ("conclave_audit_lag_seconds", "gauge"),
            ("conclave_audit_mariadb_up", "gauge"),
            ("conclave_worker_resident_bytes", "gauge"),
            ("conclave_workers", "gauge")]:
        assert types.get(fam) == typ, fam
    assert value(series, "conclave_workers") == 2
    rss = [v for (n, _), v in series.items()
           if n == "conclave_worker_resident_bytes"]
    assert len(rss) == 2 and all(v > 1 << 20 for v in rss), rss
    for t in ("websocket", "bosh", "tcp"):
        value(series, "conclave_sessions", transport=t)


def test_histogram_buckets_are_cumulative(appliance, clients):
    c = clients("stanza")
    assert c.connect(appliance.ws_url, "carol", "carol-pw")["ev"] == "online"
    series, _ = scrape(appliance)
    buckets = sorted(((float(dict(kv.split("=", 1) for kv in ls)["le"]
                             .strip('"')), v)
                      for (n, ls), v in series.items()
                      if n == "conclave_ldap_latency_seconds_bucket"))
    assert buckets[-1][0] == math.inf
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] >= 1, buckets
    assert value(series, "conclave_ldap_latency_seconds_count") == counts[-1]
    assert value(series, "conclave_ldap_latency_seconds_sum") >= 0


def test_figures_follow_real_clients(appliance, clients):
    before, _ = scrape(appliance)

    a = clients("stanza")
    assert a.connect(appliance.ws_url, "alice", "alice-pw")["ev"] == "online"
    bad = clients("stanza")
    assert bad.connect(appliance.ws_url, "bob", "wrong-pw")["ev"] == "error"

    with SlixPool() as pool:
        b = pool.client("bob@example.com/metrics", "bob-pw",
                        appliance.nginx.xmpp_port)
        for i in range(3):
            a.message("bob@example.com/metrics", "metrics %d" % i)
        for i in range(3):
            b.wait_message(lambda m, i=i: m["body"] == "metrics %d" % i)

        after, _ = scrape(appliance)
        ws = value(after, "conclave_sessions", transport="websocket")
        tcp = value(after, "conclave_sessions", transport="tcp")
        assert ws >= value(before, "conclave_sessions",
                           transport="websocket") + 1
        assert tcp == value(before, "conclave_sessions", transport="tcp") + 1

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("conclave_messages_total") >= 3
    assert delta("conclave_signins_total", result="success") == 2
    assert delta("conclave_signins_total", result="failure") == 1
    assert delta("conclave_ldap_requests_total", result="ok") == 2
    assert delta("conclave_ldap_requests_total", result="denied") == 1
    assert value(after, "conclave_ldap_up") == 1
    assert value(after, "conclave_audit_mariadb_up") == 1
    assert value(after, "conclave_audit_journals") == 2

    # the TCP session ended: its gauge goes back down
    deadline = time.time() + 10
    while time.time() < deadline:
        now, _ = scrape(appliance)
        if value(now, "conclave_sessions", transport="tcp") == \
                value(before, "conclave_sessions", transport="tcp"):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("tcp sessions gauge did not drop")


def test_access_is_restricted_by_nginx(appliance):
    status, _, _ = get(appliance, "/metrics-denied")
    assert status == 403


def test_metrics_methods(appliance):
    req = urllib.request.Request(appliance.nginx.base_url + "/metrics",
                                 data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("POST accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405


def test_health_ok(appliance):
    status, headers, text = get(appliance, "/health")
    assert status == 200 and text == "ok\n", text
    assert headers.get("Cache-Control") == "no-store"


def test_health_reports_directory_and_database_outages(make_appliance,
                                                      clients):
    app = make_appliance(extra_server=APPLIANCE_EXTRA_SERVER)
    app.mariadb.stop()
    try:
        # MariaDB down: chat goes on, the journal keeps the records; the
        # sign-in's record gives the shipper something to fail on
        c = clients("stanza")
        assert c.connect(app.ws_url, "bob", "bob-pw")["ev"] == "online"
        deadline = time.time() + 15
        while True:
            status, _, text = get(app, "/health")
            if "mariadb unreachable" in text or time.time() > deadline:
                break
            time.sleep(0.3)
        assert status == 200 and "mariadb unreachable" in text, text
        # the audit figures show the outage: records wait in the
        # journal, and the oldest one's age grows (the shipper looks
        # for that record every 2 s, so poll for the first figure)
        deadline = time.time() + 30
        while True:
            series, _ = scrape(app)
            lag1 = value(series, "conclave_audit_lag_seconds")
            if lag1 > 0 or time.time() > deadline:
                break
            time.sleep(0.3)
        assert lag1 > 0, lag1
        assert value(series, "conclave_audit_mariadb_up") == 0
        assert value(series, "conclave_audit_backlog_records") >= 1
        time.sleep(1.1)
        series, _ = scrape(app)
        assert value(series, "conclave_audit_lag_seconds") > lag1
    finally:
        app.mariadb.start()

    # come back on the same port: nginx's configuration names it
    app.ldap.fixed_port = app.ldap.port
    app.ldap.stop()
    try:
        c = clients("stanza")
        ev = c.connect(app.ws_url, "alice", "alice-pw")
        assert ev.get("condition") == "temporary-auth-failure", ev
        status, _, text = get(app, "/health")
        assert status == 503, text
        assert text.startswith("unavailable: directory unavailable"), text
        series, _ = scrape(app)
        assert value(series, "conclave_ldap_up") == 0
        assert value(series, "conclave_ldap_requests_total",
                     result="unavailable") >= 1
    finally:
        app.ldap.start()

    c = clients("stanza")
    assert c.connect(app.ws_url, "alice", "alice-pw")["ev"] == "online"
    status, _, text = get(app, "/health")
    assert status == 200 and text.startswith("ok"), text

    # MariaDB is back: the backlog drains and the lag returns to 0
    deadline = time.time() + 60
    while True:
        series, _ = scrape(app)
        if value(series, "conclave_audit_backlog_records") == 0 or \
                time.time() > deadline:
            break
        time.sleep(0.3)
    assert value(series, "conclave_audit_backlog_records") == 0
    assert value(series, "conclave_audit_lag_seconds") == 0
    assert value(series, "conclave_audit_mariadb_up") == 1
