"""A small HTTP client for the admin console's JSON API (docs/console.md).

    c = Console(app.base_url)
    c.signin("erin", "erin-pw")          # keeps the cookie and CSRF token
    status, doc = c.get("search", q="hello")
    status, doc = c.post("kick", {"jid": ..., "session": ...})

The cookie is Secure; tests run over plain HTTP on loopback, so it is
kept and sent by hand (a cookie jar would drop it).
"""

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

COOKIE = "conclave_admin"


class Console:
    def __init__(self, base_url, prefix="/admin/"):
        self.base = base_url.rstrip("/") + prefix
        self.cookie = None
        self.csrf = None
        self.me = None
        self.last_headers = {}

    def request(self, method, path, body=None, headers=None, cookie=True,
                raw_body=None, timeout=30):
        h = dict(headers or {})
        if cookie and self.cookie:
            h["Cookie"] = "%s=%s" % (COOKIE, self.cookie)
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if method == "POST" and data is None:
            data = b"{}"
        req = urllib.request.Request(self.base + path, data=data, headers=h,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, hdrs, payload = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, payload = e.code, e.headers, e.read()
        self.last_headers = hdrs
        for v in hdrs.get_all("Set-Cookie") or []:
            name, _, rest = v.partition("=")
            if name == COOKIE:
                value = rest.split(";")[0]
                self.cookie = value or None
        return status, hdrs, payload

    def api(self, method, name, body=None, csrf=True, **query):
        path = "api/" + name
        q = {k: v for k, v in query.items() if v is not None}
        if q:
            path += "?" + urllib.parse.urlencode(q)
        headers = {}
        if method == "POST" and csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        status, _, payload = self.request(method, path, body=body,
                                          headers=headers)
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = {"raw": payload}
        return status, doc

    def get(self, name, **query):
        return self.api("GET", name, **query)

    def post(self, name, body=None, csrf=True):
        return self.api("POST", name, body=body or {}, csrf=csrf)

    def signin(self, user, password, check=True):
        status, doc = self.post("signin", {"user": user,
                                           "password": password})
        if check:
            assert status == 200, (status, doc)
        if status == 200:
            self.me = doc
            self.csrf = doc["csrf"]
        return status, doc


# role bits, the directory's (NGX_XMPP_ROLE_*)
ROLE_ADMIN, ROLE_COMPLIANCE, ROLE_AUDITOR = 2, 4, 8


def forge_cookie(key_material, user, roles, issued, last, nonce=None):
    """A cookie signed like the module does, from the contents of
    conclave_admin_key_file (the key is HMAC-SHA256("conclave-admin",
    file)); for expiry tests.  roles: ROLE_* bits."""
    key = hmac.new(b"conclave-admin", key_material, hashlib.sha256).digest()
    nonce = nonce or os.urandom(16)
    payload = ("2|%s|%d|%d|%d|%s" % (user, roles, issued, last,
                                     nonce.hex())).encode()
    mac = hmac.new(key, b"session|" + payload, hashlib.sha256).digest()

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    return "%s.%s" % (b64(payload), b64(mac))


def now():
    return int(time.time())
