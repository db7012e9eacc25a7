"""A deliberately small XMPP-over-TCP client for negative tests.

Real clients never send a stanza before STARTTLS, garbage instead of a
TLS handshake, or a wrong stream namespace, so the bad-input tests drive
the wire with this one.  It speaks just enough RFC 6120 to open a
stream, upgrade it with STARTTLS, authenticate and bind.
"""

import base64
import re
import socket
import ssl
import time

HEADER = ("<?xml version='1.0'?><stream:stream to='example.com' "
          "xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


class Closed(Exception):
    pass


class RawTCP:
    def __init__(self, port, tls=False, timeout=10.0, header=HEADER,
                 rcvbuf=None, alpn=None, source=None):
        self.port = port
        self.header = header
        self.timeout = timeout
        self.alpn = alpn
        if source:
            # another loopback address, so the server can tell us apart
            self.sock = socket.create_connection(("127.0.0.1", port),
                                                 timeout=timeout,
                                                 source_address=(source, 0))
        elif rcvbuf:
            # a small receive window makes the server's writes back up
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port),
                                                 timeout=timeout)
        self.buf = ""
        if tls:
            self.wrap_tls()

    def wrap_tls(self):
        # the harness's certificate is self-signed
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if self.alpn:
            ctx.set_alpn_protocols(self.alpn)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="example.com")
        self.buf = ""

    def send(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def _read(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the server; have %r"
                               % self.buf[-300:])
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            raise Closed("closed by the server; have %r" % self.buf[-300:])
        self.buf += data.decode(errors="replace")

    def expect(self, pattern, timeout=None):
        """Reads until pattern matches the buffer; returns the text up to
        the end of the match and keeps the rest."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = re.search(pattern, self.buf, re.S)
            if m:
                out = self.buf[:m.end()]
                self.buf = self.buf[m.end():]
                return out
            self._read(deadline)

    def closed_by_server(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._read(deadline)
        except Closed:
            return True
        except TimeoutError:
            return False

    def open(self):
        self.send(self.header)
        return self.expect(r"</stream:features>")

    def starttls(self):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.expect(r"<proceed[^>]*/>")
        self.wrap_tls()

    def auth(self, user, password):
        msg = ("\0%s\0%s" % (user, password)).encode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                  "mechanism='PLAIN'>%s</auth>"
                  % base64.b64encode(msg).decode())
        return self.expect(r"<success[^>]*/>|</failure>")

    def login(self, user, password=None, resource=None, tls=True):
        """STARTTLS (unless already TLS or tls=False), SASL PLAIN, bind."""
        feats = self.open()
        if tls and "starttls" in feats:
            self.starttls()
            self.open()
        r = self.auth(user, password or user + "-pw")
        assert "<success" in r, r
        self.open()
        res = "<resource>%s</resource>" % resource if resource else ""
        self.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:"
                  "xml:ns:xmpp-bind'>%s</bind></iq>" % res)
        r = self.expect(r"</iq>")
        m = re.search(r"<jid>([^<]+)</jid>", r)
        assert m, r
        self.jid = m.group(1)
        return self.jid

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
