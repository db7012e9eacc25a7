"""Slowloris: clients that never finish are closed after the timeouts."""

import socket
import time

from rawws import RawWS

APPLIANCE_EXTRA_HTTP = """
    conclave_auth_timeout 2s;
    conclave_idle_timeout 3s;
    conclave_close_timeout 1s;
    client_header_timeout 2s;
"""


def test_http_handshake_never_completed(appliance):
    s = socket.create_connection(("127.0.0.1", appliance.nginx.http_port))
    s.sendall(b"GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(10)
    t0 = time.monotonic()
    data = s.recv(4096)
    while data:
        data = s.recv(4096)
    assert time.monotonic() - t0 < 8


def test_stream_never_opened(appliance):
    ws = RawWS(appliance.nginx.http_port)
    assert ws.stream_error(timeout=10) == "connection-timeout"
    assert ws.closed_by_server(timeout=10)


def test_auth_never_sent(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.open()
    assert ws.stream_error(timeout=10) == "connection-timeout"
    assert ws.closed_by_server(timeout=10)


def test_auth_trickled_byte_by_byte(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.open()
    ws.send_frame(1, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' ",
                  fin=False)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 8:
            ws.send_frame(0, " ", fin=False)
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert ws.stream_error(timeout=5) == "connection-timeout"


def test_bound_session_idle_is_closed(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.login("alice", resource="idle")
    assert ws.stream_error(timeout=10) == "connection-timeout"


def test_websocket_pings_keep_a_session(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.login("bob", resource="pinger")
    for _ in range(5):
        time.sleep(1)
        ws.send_frame(9, "keepalive")
        op, payload, _ = ws.recv_frame()
        assert op == 10
    ws.send("<iq type='get' id='k1' to='example.com'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert "type='result'" in ws.expect(r"id='k1'")
    ws.close()


def test_peer_that_never_answers_close(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.login("carol", resource="noclose")
    ws.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
    assert ws.close_code() == 1000
    # we never send our close frame; the server gives up after 1s
    assert ws.closed_by_server(timeout=5)
