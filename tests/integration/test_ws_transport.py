"""RFC 6455 / RFC 7395 transport: the handshake and framing, good and bad.

Driven by tests/lib/rawws.py, since real clients never send bad frames.
"""

import socket
import struct

import pytest

from rawws import RawWS, OPEN, CLOSE


@pytest.fixture(scope="module")
def port(appliance):
    return appliance.nginx.http_port


def test_handshake_selects_xmpp_subprotocol(port):
    ws = RawWS(port, protocol="chat, xmpp")
    assert ws.status == 101
    assert ws.headers["sec-websocket-protocol"] == "xmpp"
    assert ws.headers["upgrade"].lower() == "websocket"
    ws.close()


@pytest.mark.parametrize("protocol", ["chat", None])
def test_handshake_without_xmpp_subprotocol_is_400(port, protocol):
    ws = RawWS(port, protocol=protocol)
    assert ws.status == 400
    ws.close()


def test_handshake_wrong_version_is_426(port):
    ws = RawWS(port, version="8")
    assert ws.status == 426
    assert ws.headers["sec-websocket-version"] == "13"
    ws.close()


def test_plain_get_is_400(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 400")
    s.close()


def test_open_split_across_fragments(port):
    ws = RawWS(port)
    ws.send_frame(1, OPEN[:30], fin=False)
    ws.send_frame(9, "mid-message ping")          # control frames interleave
    ws.send_frame(0, OPEN[30:60], fin=False)
    ws.send_frame(0, OPEN[60:])
    op, payload, _ = ws.recv_frame()
    assert (op, payload) == (10, b"mid-message ping")
    assert ws.recv().startswith("<open ")
    assert "PLAIN" in ws.expect("stream:features")
    ws.close()


def test_ping_gets_pong_with_same_payload(port):
    ws = RawWS(port)
    ws.send_frame(9, b"\x00\x01binary-ok")
    op, payload, fin = ws.recv_frame()
    assert (op, payload, fin) == (10, b"\x00\x01binary-ok", True)
    ws.close()


def test_client_close_is_echoed(port):
    ws = RawWS(port)
    ws.open()
    ws.send_frame(8, struct.pack("!H", 1000) + b"bye")
    assert ws.close_code() == 1000
    assert ws.closed_by_server()


def test_xmpp_close_then_websocket_close(port):
    ws = RawWS(port)
    ws.login("alice")
    ws.send(CLOSE)
    assert "<close" in ws.expect(r"<close")
    assert ws.close_code() == 1000
    ws.send_frame(8, struct.pack("!H", 1000))
    assert ws.closed_by_server()


@pytest.mark.parametrize("name,send,code", [
    ("unmasked", lambda ws: ws.send_frame(1, OPEN, mask=False), 1002),
    ("opcode 3", lambda ws: ws.send_frame(3, "x"), 1002),
    ("opcode 11", lambda ws: ws.send_frame(11, "x"), 1002),
    ("rsv1 bit", lambda ws: ws.send_frame(1, OPEN, rsv=4), 1002),
    ("orphan continuation", lambda ws: ws.send_frame(0, "x"), 1002),
    ("text inside text", lambda ws: (ws.send_frame(1, "<a", fin=False),
                                     ws.send_frame(1, "b/>")), 1002),
    ("fragmented ping", lambda ws: ws.send_frame(9, "x", fin=False), 1002),
    ("126-byte ping", lambda ws: ws.send_frame(9, "p" * 126), 1002),
    ("1-byte close", lambda ws: ws.send_frame(8, b"\x03"), 1002),
    ("binary frame", lambda ws: ws.send_frame(2, OPEN), 1003),
    ("overlong UTF-8", lambda ws: ws.send_frame(1, b"<a>\xc0\xaf</a>"),
     1007),
    ("UTF-8 cut at message end",
     lambda ws: ws.send_frame(1, b"<a>\xe2\x82"), 1007),
    ("surrogate", lambda ws: ws.send_frame(1, b"\xed\xa0\x80"), 1007),
    ("close reason not UTF-8",
     lambda ws: ws.send_frame(8, b"\x03\xe8\xff"), 1007),
])
def test_bad_frames_close_with_code(port, name, send, code):
    ws = RawWS(port)
    send(ws)
    assert ws.close_code() == code, name
    assert ws.closed_by_server(), name


def test_oversized_frame_is_1009_before_its_payload(port, appliance):
    ws = RawWS(port)
    # only the header: the server must refuse on the declared length
    ws.send_frame(1, b"", length=512 * 1024)
    assert ws.close_code() == 1009
    assert ws.closed_by_server()


def test_oversized_fragmented_message_is_1009(port):
    ws = RawWS(port)
    chunk = b"a" * 60000
    try:
        for _ in range(6):
            ws.send_frame(1 if _ == 0 else 0, chunk, fin=False)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert ws.close_code() == 1009
