"""The harness's own port handling (tests/lib/ports.py, mariadb.py).

CI at stop 15 lost 16 tests to one collision: slapd drew the port already
promised to an appliance's mariadbd and bound it first.  These tests pin
the two defences: a process never hands out a port twice, and mariadbd
draws a new port when another process holds the one it was given.

    /usr/bin/python3 -m pytest tests/integration/test_harness_ports.py
"""

import os
import socket
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

import pytest  # noqa: E402

import ports  # noqa: E402
from mariadb import MariaDB, MariaDBError  # noqa: E402


def test_a_port_is_never_handed_out_twice():
    drawn = [ports.free_port() for _ in range(2000)]
    assert len(set(drawn)) == len(drawn)
    low = ports._ephemeral_low()
    assert all(ports._LOW <= p < low for p in drawn)


def test_mariadb_draws_again_when_its_port_is_taken(tmp_path):
    db = MariaDB(str(tmp_path / "db"))
    promised = db.port
    # another process binds the promised port before mariadbd starts
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", promised))
    squatter.listen(1)
    try:
        db.start()
        try:
            assert db.port != promised
            assert db.scalar("SELECT 1") == "1"
            assert "Address already in use" in db.error_log()
        finally:
            db.stop()
    finally:
        squatter.close()


def test_mariadb_with_a_fixed_port_does_not_move(tmp_path):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    db = MariaDB(str(tmp_path / "db"), port)
    try:
        # the caller asked for this port: fail rather than move
        with pytest.raises(MariaDBError, match="Address already in use"):
            db.start(timeout=30)
        assert db.port == port
    finally:
        db.stop()
        squatter.close()
