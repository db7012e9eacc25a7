"""TLS 1.3 on Conclave's own record layer after OpenSSL's handshake
(nginx-module/src/ngx_xmpp_tls.c, conclave_tls_record_layer, on by
default): real clients over direct TLS and STARTTLS with stanzas larger
than one record both ways; openssl s_client's KeyUpdate commands (k, K)
mid-session; gnutls-cli as a second TLS implementation; ChaCha20 and
AES-256 forced by the client; a TLS 1.2 client, which stays on OpenSSL.

Then the bad records a real client never sends, from a client built on
Python's ssl over memory BIOs: it knows its traffic secret (key log)
and how many records it sent, so it can send records of its own making.
Each must get its RFC 8446 alert and a close, deliver nothing, and leave
the worker and its other sessions alone.
"""

import base64
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import (AESGCM,
                                                         ChaCha20Poly1305)
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from rawtcp import HEADER, RawTCP

APPLIANCE_PLAINTEXT_AUTH = False
APPLIANCE_LOG_LEVEL = "info"

BIG = 40000          # a body over two records of 2^14 bytes


def log_count(app, text):
    return app.nginx.error_log().count(text)


def wait_log(app, text, n, timeout=10):
    deadline = time.monotonic() + timeout
    while log_count(app, text) < n:
        if time.monotonic() > deadline:
            pytest.fail("%d x %r not in error.log: %s" % (
                n, text, [l for l in app.nginx.error_log().splitlines()
                          if "TLS" in l or "OpenSSL" in l][-10:]))
        time.sleep(0.05)


def exchange(a, b, a_jid, b_jid, n=20, tag=""):
    """n stanzas each way, small and large interleaved."""
    for i in range(n):
        body = ("%s a%d " % (tag, i)) + ("x" * BIG if i % 5 == 4 else "")
        a.message(b_jid, body)
        m = b.wait_message(lambda m: m["body"] == body)
        assert str(m["from"]) == a_jid
        body = ("%s b%d " % (tag, i)) + ("y" * BIG if i % 5 == 0 else "")
        b.message(a_jid, body)
        a.wait_message(lambda m: m["body"] == body)


@pytest.mark.parametrize("direct", [True, False],
                         ids=["direct-tls", "starttls"])
def test_slixmpp_on_record_layer(appliance, pool, direct):
    port = appliance.nginx.xmpps_port if direct else appliance.nginx.xmpp_port
    before = log_count(appliance, "xmpp: TLSv1.3 TLS_")
    a = pool.client("alice@example.com/rl-a", "alice-pw", port, direct)
    b = pool.client("bob@example.com/rl-b", "bob-pw", port, direct)
    assert a.secure and b.secure
    wait_log(appliance, "xmpp: TLSv1.3 TLS_", before + 2)
    exchange(a, b, "alice@example.com/rl-a", "bob@example.com/rl-b",
             tag="direct" if direct else "starttls")
    a.disconnect()
    b.disconnect()


# -- a line-driven TLS tool (s_client, gnutls-cli) as an XMPP client ----

class ToolClient:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.out = b""
        self.pos = 0
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            d = self.proc.stdout.read1(65536)
            if not d:
                return
            with self.lock:
                self.out += d

    def text(self):
        with self.lock:
            return self.out.decode(errors="replace")

    def send(self, s):
        self.proc.stdin.write(s.encode())
        self.proc.stdin.flush()

    def expect(self, pattern, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            t = self.text()
            m = re.compile(pattern, re.S).search(t, self.pos)
            if m:
                self.pos = m.end()
                return m.group(0)
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("no %r from %s; tail %r" % (
                    pattern, self.proc.args[0], t[-1500:]))
            time.sleep(0.02)

    def login(self, user, resource):
        self.send(HEADER)
        self.expect(r"</stream:features>")
        msg = base64.b64encode(("\0%s\0%s-pw" % (user, user)).encode())
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                  "mechanism='PLAIN'>%s</auth>" % msg.decode())
        self.expect(r"<success[^>]*/>")
        self.send(HEADER)
        self.expect(r"</stream:features>")
        self.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:"
                  "ns:xmpp-bind'><resource>%s</resource></bind></iq>"
                  % resource)
        self.expect(r"</iq>")
        self.send("<presence/>")
        return "%s@example.com/%s" % (user, resource)

    def message(self, to, body):
        self.send("<message to='%s' type='chat'><body>%s</body></message>"
                  % (to, body))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def tool_exchange(tool, tool_jid, peer, peer_jid, n, tag):
    for i in range(n):
        body = "%s t%d %s" % (tag, i, "z" * BIG if i % 3 == 2 else "")
        tool.message(peer_jid, body)
        m = peer.wait_message(lambda m: m["body"] == body)
        assert str(m["from"]) == tool_jid
        body = "%s p%d %s" % (tag, i, "w" * BIG if i % 3 == 0 else "")
        peer.message(tool_jid, body)
        tool.expect(re.escape(body) + "</body>")


def s_client(port, msgfile, *extra):
    # -msg output in a file of its own: on stdout it would split bodies
    return ToolClient(["openssl", "s_client", "-connect",
                       "127.0.0.1:%d" % port, "-tls1_3", "-msg",
                       "-msgfile", msgfile, "-servername", "example.com"]
                      + list(extra))


def test_s_client_key_updates(appliance, pool, tmp_path):
    """RFC 8446 4.6.3 both ways: the client's k (update_not_requested)
    and K (update_requested: we must answer with our own KeyUpdate)."""
    peer = pool.client("bob@example.com/ku-peer", "bob-pw",
                       appliance.nginx.xmpps_port, True)
    msgs = str(tmp_path / "s_client.msg")
    t = s_client(appliance.nginx.xmpps_port, msgs)
    try:
        jid = t.login("alice", "ku")
        tool_exchange(t, jid, peer, "bob@example.com/ku-peer", 3, "before")
        n_in = open(msgs).read().count("<<< TLS 1.3, Handshake "
                                       "[length 0005], KeyUpdate")
        for cmd in ("k\n", "K\n", "k\n", "K\n"):
            time.sleep(0.3)       # a line of its own on s_client's stdin
            t.send(cmd)
            time.sleep(0.3)
            tool_exchange(t, jid, peer, "bob@example.com/ku-peer", 3,
                          "after-%s" % cmd.strip())
        out = open(msgs).read()
        assert out.count(">>> TLS 1.3, Handshake [length 0005], "
                         "KeyUpdate") == 4, out[-3000:]
        # ours: one for each K, none for k
        assert out.count("<<< TLS 1.3, Handshake [length 0005], "
                         "KeyUpdate") - n_in == 2, out[-3000:]
    finally:
        t.close()


@pytest.mark.parametrize("suite", ["TLS_AES_256_GCM_SHA384",
                                   "TLS_CHACHA20_POLY1305_SHA256"])
def test_s_client_forced_suite(appliance, pool, tmp_path, suite):
    peer = pool.client("bob@example.com/suite-peer", "bob-pw",
                       appliance.nginx.xmpp_port, False)
    before = log_count(appliance, "xmpp: TLSv1.3 %s on the record layer"
                       % suite)
    t = s_client(appliance.nginx.xmpps_port, str(tmp_path / "msg"),
                 "-ciphersuites", suite)
    try:
        jid = t.login("alice", "suite")
        wait_log(appliance, "xmpp: TLSv1.3 %s on the record layer" % suite,
                 before + 1)
        tool_exchange(t, jid, peer, "bob@example.com/suite-peer", 4, suite)
    finally:
        t.close()


@pytest.mark.parametrize("prio", ["+CHACHA20-POLY1305", "+AES-256-GCM",
                                  "+AES-128-GCM"])
def test_gnutls_cli(appliance, pool, prio):
    """A second, independent TLS stack (GnuTLS)."""
    peer = pool.client("bob@example.com/gnutls-peer", "bob-pw",
                       appliance.nginx.xmpps_port, True)
    t = ToolClient(["gnutls-cli", "--insecure", "--port",
                    str(appliance.nginx.xmpps_port), "--priority",
                    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:" + prio,
                    "127.0.0.1"])
    try:
        t.expect(r"Handshake was completed")
        jid = t.login("alice", "gnutls")
        tool_exchange(t, jid, peer, "bob@example.com/gnutls-peer", 4, prio)
    finally:
        t.close()


def test_tls12_stays_on_openssl(appliance):
    before = log_count(appliance, "TLSv1.2 stays on OpenSSL: not TLS 1.3")
    c = RawTCP(appliance.nginx.xmpps_port)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c.sock = ctx.wrap_socket(c.sock, server_hostname="example.com")
    assert c.sock.version() == "TLSv1.2"
    jid = c.login("carol", resource="tls12")
    c.send("<message to='%s'><body>%s</body></message>" % (jid, "q" * BIG))
    c.expect("q" * BIG + "</body>")
    wait_log(appliance, "TLSv1.2 stays on OpenSSL: not TLS 1.3", before + 1)
    c.close()


# -- bad records -------------------------------------------------------

SUITES = {
    "TLS_AES_128_GCM_SHA256": (AESGCM, 16, hashes.SHA256()),
    "TLS_AES_256_GCM_SHA384": (AESGCM, 32, hashes.SHA384()),
    "TLS_CHACHA20_POLY1305_SHA256": (ChaCha20Poly1305, 32, hashes.SHA256()),
}


def expand_label(secret, label, length, h):
    info = (struct.pack(">H", length) + bytes([6 + len(label)])
            + b"tls13 " + label + b"\0")
    return HKDFExpand(h, length, info).derive(secret)


class RecordSock:
    """Python's ssl over memory BIOs, standing in for a socket under
    RawTCP; counts the records it sends after the handshake."""

    def __init__(self, port, keylog):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.keylog_filename = keylog
        self.keylog = keylog
        self.inc = ssl.MemoryBIO()
        self.outb = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outb,
                                server_hostname="example.com")
        self.error = None
        self.rx = b""          # what the server sent after the handshake
        self.sent = 0
        self.done = False
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self.inc.write(self.raw.recv(65536))
        self._flush()
        self.done = True

    def _flush(self, mangle=None):
        data = self.outb.read()
        if not data:
            return
        if self.done:
            i = 0
            while i < len(data):
                self.sent += 1
                i += 5 + struct.unpack(">H", data[i + 3:i + 5])[0]
        if mangle:
            data = mangle(data)
        self.raw.sendall(data)

    def settimeout(self, t):
        self.raw.settimeout(t)

    def sendall(self, data, mangle=None):
        self.obj.write(data)
        self._flush(mangle)

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                d = self.raw.recv(65536)
                self.rx += d
                if d:
                    self.inc.write(d)
                else:
                    self.inc.write_eof()
            except ssl.SSLError as e:
                self.error = str(e)
                raise

    def close(self):
        self.raw.close()

    def _keys(self, who, seq):
        aead, klen, h = SUITES[self.obj.cipher()[0]]
        with open(self.keylog) as f:
            secret = [bytes.fromhex(l.split()[2]) for l in f
                      if l.startswith(who + "_TRAFFIC_SECRET_0 ")][-1]
        key = expand_label(secret, b"key", klen, h)
        iv = expand_label(secret, b"iv", 12, h)
        nonce = bytes(a ^ b for a, b in
                      zip(iv, bytes(4) + struct.pack(">Q", seq)))
        return aead(key), nonce

    def craft(self, inner_type, content):
        """A record of our own making under the client's current keys."""
        aead, nonce = self._keys("CLIENT", self.sent)
        inner = content + bytes([inner_type])
        hdr = b"\x17\x03\x03" + struct.pack(">H", len(inner) + 16)
        self.sent += 1
        return hdr + aead.encrypt(nonce, inner, hdr)

    def server_records(self):
        """The server's records after the handshake, opened here with
        its key log secret: [(inner type, content)]."""
        out, i, seq = [], 0, 0
        while i + 5 <= len(self.rx):
            n = struct.unpack(">H", self.rx[i + 3:i + 5])[0]
            hdr, body = self.rx[i:i + 5], self.rx[i + 5:i + 5 + n]
            aead, nonce = self._keys("SERVER", seq)
            inner = aead.decrypt(nonce, body, hdr).rstrip(b"\0")
            out.append((inner[-1], inner[:-1]))
            i += 5 + n
            seq += 1
        return out


def record_client(app, tmp_path, user, resource):
    c = RawTCP(app.nginx.xmpps_port)
    c.sock.close()
    c.sock = RecordSock(app.nginx.xmpps_port,
                        str(tmp_path / ("keylog-" + resource)))
    return c, c.login(user, resource=resource)


def flip(data):
    b = bytearray(data)
    b[12] ^= 0x01
    return bytes(b)


BAD = {
    # RFC 8446 5.2: a tag that does not verify
    "flipped-byte": ("bad record mac",
                     lambda s, msg: s.sendall(msg, mangle=flip)),
    # 5.2: TLSCiphertext.length over 2^14 + 256
    "oversized-header": ("record overflow",
                         lambda s, msg: s.raw.sendall(
                             b"\x17\x03\x03\x41\x01" + b"\0" * 64)),
    # 5: after the handshake every record is protected
    "plaintext-record": ("unexpected message",
                         lambda s, msg: s.raw.sendall(
                             b"\x16\x03\x03\x00\x04\x14\x00\x00\x00")),
    "garbage": ("unexpected message",
                lambda s, msg: s.raw.sendall(b"GET / HTTP/1.1\r\n\r\n")),
    # 4.6.3: KeyUpdate is the only handshake message a client may send
    "new-session-ticket": ("unexpected message",
                           lambda s, msg: s.raw.sendall(
                               s.craft(22, b"\x04\x00\x00\x01\x00"))),
    # 5.4: a record with no non-zero octet
    "all-padding": ("unexpected message",
                    lambda s, msg: s.raw.sendall(s.craft(0, b"\0" * 8))),
    # 4.6.3: request_update must be 0 or 1
    "key-update-2": ("illegal parameter",
                     lambda s, msg: s.raw.sendall(
                         s.craft(22, b"\x18\x00\x00\x01\x02"))),
}


CODES = {"bad record mac": 20, "record overflow": 22,
         "unexpected message": 10, "illegal parameter": 47}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record(appliance, pool, tmp_path, case):
    alert, send_bad = BAD[case]
    port = appliance.nginx.xmpps_port
    bob = pool.client("bob@example.com/bad-peer-" + case, "bob-pw", port,
                      True)
    bob_jid = "bob@example.com/bad-peer-" + case
    c, jid = record_client(appliance, tmp_path, "alice", "bad-" + case)

    # a good record first: the layer is in use and the counts are right
    c.send("<message to='%s' type='chat'><body>good %s</body></message>"
           % (bob_jid, case))
    bob.wait_message(lambda m: m["body"] == "good " + case)

    msg = ("<message to='%s' type='chat'><body>never %s</body></message>"
           % (bob_jid, case)).encode()
    before = log_count(appliance, "sending alert")
    send_bad(c.sock, msg)

    assert c.closed_by_server(timeout=10), "the server kept the connection"
    assert c.sock.error and alert in c.sock.error.replace("_", " "), \
        c.sock.error
    # RFC 8446 6: our last record is that fatal alert, nothing after it
    assert c.sock.server_records()[-1] == (21, bytes([2, CODES[alert]]))
    wait_log(appliance, "sending alert", before + 1)

    # nothing delivered; the peer and the worker are fine
    assert not [m for m in bob.drain(settle=1.0)
                if "never" in m["body"]]
    other = pool.client("carol@example.com/after-" + case, "carol-pw",
                        port, True)
    other.message(bob_jid, "still here " + case)
    bob.wait_message(lambda m: m["body"] == "still here " + case)
    other.disconnect()
    bob.disconnect()
    c.close()


def test_fatal_alert_from_client(appliance, pool, tmp_path):
    """RFC 8446 6.2: a client's fatal alert ends the connection, and no
    alert goes back."""
    c, jid = record_client(appliance, tmp_path, "alice", "client-alert")
    before = log_count(appliance, "TLS alert 40 from the client")
    n = len(c.sock.server_records())
    c.sock.raw.sendall(c.sock.craft(21, b"\x02\x28"))
    assert c.closed_by_server(timeout=10)
    assert len(c.sock.server_records()) == n, c.sock.server_records()[n:]
    wait_log(appliance, "TLS alert 40 from the client", before + 1)
    c.close()


def test_close_notify_both_ways(appliance, tmp_path):
    """6.1: the client's close_notify ends its data; ours follows."""
    c, jid = record_client(appliance, tmp_path, "alice", "close")
    before = log_count(appliance, "TLS close_notify from the client")
    c.sock.raw.sendall(c.sock.craft(21, b"\x01\x00"))
    assert c.closed_by_server(timeout=10)
    # our close_notify arrived: a clean TLS end, not a truncation
    assert c.sock.server_records()[-1] == (21, b"\x01\x00"), \
        c.sock.server_records()[-3:]
    wait_log(appliance, "TLS close_notify from the client", before + 1)
    c.close()


def test_slow_reader_on_record_layer(appliance, tmp_path):
    """A TLS reader that stops reading: our partial records queue, the
    session's backlog limit (conclave_max_output) still cuts it off,
    and the sender is not held up."""
    slow = RawTCP(appliance.nginx.xmpps_port, tls=True, rcvbuf=4096)
    slow.login("bob", resource="slow")
    fast = RawTCP(appliance.nginx.xmpps_port, tls=True)
    fast.login("alice", resource="fast")
    body = "z" * 8000
    for i in range(4000):
        fast.send("<message to='bob@example.com/slow' id='s%d'>"
                  "<body>%s</body></message>" % (i, body))
        if i % 50 == 0 and "closing slow client" in \
                appliance.nginx.error_log():
            break
    fast.send("<iq type='get' id='alive' to='example.com'>"
              "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert "type='result'" in fast.expect(r"id='alive'.*?/>", timeout=20)
    assert "closing slow client" in appliance.nginx.error_log()
    assert slow.closed_by_server(timeout=10)
    fast.close()


def tls_layers(app):
    """conclave_tls_connections_total of (record_layer, openssl)."""
    return tuple(app.nginx.metric("conclave_tls_connections_total",
                                  layer=layer)
                 for layer in ("record_layer", "openssl"))


def test_metrics_count_both_layers(appliance):
    before = tls_layers(appliance)
    conns = []
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        c = RawTCP(appliance.nginx.xmpps_port)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = version
        c.sock = ctx.wrap_socket(c.sock, server_hostname="example.com")
        c.open()                 # the stream is served either way
        conns.append(c)
    deadline = time.monotonic() + 10
    while tls_layers(appliance) != (before[0] + 1, before[1] + 1):
        assert time.monotonic() < deadline, before
        time.sleep(0.05)
    for c in conns:
        c.close()
