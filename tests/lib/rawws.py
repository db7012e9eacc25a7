"""A deliberately small WebSocket + XMPP client for negative tests.

Real XMPP clients never send unmasked frames, bad opcodes or broken XML,
so the bad-input tests drive the wire with this one.  It speaks
RFC 6455 framing over a plain socket and knows just enough RFC 7395 to
open a stream, authenticate and bind.
"""

import base64
import os
import re
import socket
import ssl
import struct
import time

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = "<open xmlns='%s' to='example.com' version='1.0'/>" % FRAMING
CLOSE = "<close xmlns='%s'/>" % FRAMING


class Closed(Exception):
    """The server closed the WebSocket (code is None without a frame)."""

    def __init__(self, code, reason=b""):
        super().__init__("closed with %r %r" % (code, reason))
        self.code = code
        self.reason = reason


def handshake_request(path, host, key, protocol="xmpp", version="13",
                      extra=""):
    lines = ["GET %s HTTP/1.1" % path, "Host: %s" % host,
             "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: %s" % key]
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    if protocol is not None:
        lines.append("Sec-WebSocket-Protocol: %s" % protocol)
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawWS:
    def __init__(self, port, path="/xmpp-websocket", protocol="xmpp",
                 version="13", timeout=10.0, connect=True, tls=False,
                 alpn=None, source=None):
        self.port = port
        self.path = path
        self.timeout = timeout
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout,
            source_address=(source, 0) if source else None)
        if tls:
            # the harness's certificate is self-signed
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if alpn:
                ctx.set_alpn_protocols(alpn)
            self.sock = ctx.wrap_socket(self.sock,
                                        server_hostname="example.com")
        self.buf = b""
        self.status = None
        self.headers = {}
        if connect:
            self.upgrade(protocol, version)

    # -- HTTP upgrade ---------------------------------------------------
    def upgrade(self, protocol="xmpp", version="13", extra=""):
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(handshake_request(self.path,
                                            "127.0.0.1:%d" % self.port,
                                            key, protocol, version, extra))
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        return self.status

    # -- frames -----------------------------------------------------------
    def send_frame(self, opcode, payload, fin=True, mask=True, rsv=0,
                   length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        head = bytes([b0])
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            head += key
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, text):
        self.send_frame(1, text)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no data from the server")
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                raise Closed(None)
            self.buf += data

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7f
        off = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        assert not b1 & 0x80, "server frames must not be masked"
        self._need(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0f, payload, bool(b0 & 0x80)

    def recv(self, timeout=None):
        """Next text message; raises Closed on a close frame."""
        while True:
            op, payload, _ = self.recv_frame(timeout)
            if op == 1:
                return payload.decode()
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                raise Closed(code, payload[2:])
            if op == 9:
                self.send_frame(10, payload)

    def expect(self, pattern, timeout=None):
        """Reads messages until one matches; returns it."""
        seen = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%r not seen; got %r" % (pattern, seen))
            msg = self.recv(left)
            if re.search(pattern, msg):
                return msg
            seen.append(msg)

    def close_code(self, timeout=None):
        """Reads until the server's close frame; returns its code."""
        try:
            while True:
                self.recv(timeout)
        except Closed as e:
            return e.code

    def stream_error(self, timeout=None):
        """The condition of the stream error that must come next."""
        msg = self.expect(r"stream:error|<close", timeout)
        m = re.search(r"<([a-z-]+) xmlns='urn:ietf:params:xml:ns:"
                      r"xmpp-streams'", msg)
        return m.group(1) if m else None

    def closed_by_server(self, timeout=None):
        """True once the server has closed the TCP connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._need(len(self.buf) + 1, deadline)
                self.buf = b""
        except Closed:
            return True
        except TimeoutError:
            return False

    # -- XMPP -------------------------------------------------------------
    def open(self):
        self.send(OPEN)
        self.expect(r"<open ")
        return self.expect(r"stream:features")

    def auth(self, user, password, authzid=""):
        msg = ("%s\0%s\0%s" % (authzid, user, password)).encode()
        self.send_auth(base64.b64encode(msg).decode())
        return self.expect(r"<success|<failure")

    def send_auth(self, text):
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                  "mechanism='PLAIN'>%s</auth>" % text)

    def bind(self, resource=None):
        res = "<resource>%s</resource>" % resource if resource else ""
        self.send("<iq xmlns='jabber:client' type='set' id='bind1'>"
                  "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>%s</bind>"
                  "</iq>" % res)
        return self.expect(r"id='bind1'")

    def login(self, user, password=None, resource=None, presence=True):
        self.open()
        r = self.auth(user, password or user + "-pw")
        assert "<success" in r, r
        self.open()
        r = self.bind(resource)
        m = re.search(r"<jid>([^<]+)</jid>", r)
        assert m, r
        self.jid = m.group(1)
        if presence:
            self.send("<presence xmlns='jabber:client'/>")
            self.expect(r"<presence")
        return self.jid

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
