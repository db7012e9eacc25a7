"""The `pool` fixture: a SlixPool (tests/lib/slixclient.py), the one
asyncio loop every slixmpp client of a test runs on, closed with all
its clients when the test ends.

tests/integration/conftest.py offers `pool` to every test file.  A
file whose clients live across its tests takes the module-scoped one
instead, under the same name:

    import slixpool
    pool = slixpool.module_pool
"""

import pytest

from slixclient import SlixPool


def _pool():
    with SlixPool() as p:
        yield p


pool = pytest.fixture(_pool, name="pool")
module_pool = pytest.fixture(_pool, scope="module", name="pool")
