"""Fixtures for the integration suite: real slapd, mariadbd and nginx.

appliance       module-scoped: one set of servers per test file, in a
                pytest temp dir.  At teardown the servers are stopped and
                the module ERRORs if nginx logged [alert]/[emerg] or a
                sanitizer wrote a report.
make_appliance  function-scoped factory for a test that needs its own
                servers (other options, or servers it will break); each
                one gets the same teardown check.
pool            a SlixPool for slixmpp clients, one per test
                (tests/lib/slixpool.py; a file that sets
                pool = slixpool.module_pool has one for all its tests).

A test file tunes its appliance with module-level variables:
    APPLIANCE_EXTRA_HTTP   = "conclave_max_depth 10;"    (http{} lines)
    APPLIANCE_EXTRA_MAIN   = "..."                        (main context)
    APPLIANCE_EXTRA_SERVER = "..."                        (server{} lines)
    APPLIANCE_EXTRA_STREAM = "..."                        (stream{} lines)
    APPLIANCE_WORKERS      = 2
    APPLIANCE_TLS          = False
    APPLIANCE_LOG_LEVEL    = "info"
    APPLIANCE_PLAINTEXT_AUTH = None   (None: allowed exactly when not TLS)
A conclave_* directive in an APPLIANCE_EXTRA_* block replaces the
template's line of the same name (tests/lib/nginx.conf.in).

Environment:
    CONCLAVE_SANITIZE=1    use build/asan/ (ASan+UBSan, runtime preloaded)
    CONCLAVE_MODULE=path   use this .so instead; "none" runs a stock
                           nginx without the module (harness self-test)
"""

import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from appliance import Appliance, env_sanitize, module_path  # noqa: E402
import slixpool  # noqa: E402

_OPTIONS = {
    "APPLIANCE_EXTRA_HTTP": "extra_http",
    "APPLIANCE_EXTRA_MAIN": "extra_main",
    "APPLIANCE_EXTRA_SERVER": "extra_server",
    "APPLIANCE_WORKERS": "workers",
    "APPLIANCE_TLS": "tls",
    "APPLIANCE_LOG_LEVEL": "log_level",
    "APPLIANCE_PLAINTEXT_AUTH": "plaintext_auth",
    "APPLIANCE_EXTRA_STREAM": "extra_stream",
    "APPLIANCE_LDAP_TLS": "ldap_tls",
    "APPLIANCE_LDAP_FLAVOR": "ldap_flavor",
}

pool = slixpool.pool


@pytest.fixture(scope="session")
def conclave_module():
    """Path of the module .so under test, or None for a stock nginx."""
    path = os.environ.get("CONCLAVE_MODULE")
    if path == "none":
        return None
    path = os.path.abspath(path) if path else module_path(env_sanitize())
    if not os.path.isfile(path):
        pytest.fail("%s is missing: run `make build%s` first" % (
            path, " SANITIZE=1" if env_sanitize() else ""), pytrace=False)
    return path


def _start(workdir, module_so, **kwargs):
    app = Appliance(str(workdir), module_so=module_so,
                    sanitize=env_sanitize(), **kwargs)
    try:
        app.start()
    except Exception as e:
        pytest.fail("appliance did not start in %s:\n%s" % (workdir, e),
                    pytrace=False)
    return app


def _stop_and_check(app):
    app.stop()
    problems = app.check_logs()
    if problems:
        pytest.fail("nginx in %s logged problems:\n%s" % (
            app.nginx.workdir, "\n".join(problems)), pytrace=False)


@pytest.fixture(scope="module")
def appliance(request, tmp_path_factory, conclave_module):
    kwargs = {kw: getattr(request.module, var)
              for var, kw in _OPTIONS.items()
              if hasattr(request.module, var)}
    name = request.module.__name__.rsplit(".", 1)[-1]
    app = _start(tmp_path_factory.mktemp(name), conclave_module, **kwargs)
    yield app
    # pytest.fail here is reported as an ERROR at teardown of the
    # module's last test, so a clean-looking run cannot hide an alert
    _stop_and_check(app)


@pytest.fixture
def make_appliance(tmp_path_factory, conclave_module, request):
    apps = []

    def make(**kwargs):
        workdir = tmp_path_factory.mktemp(
            re.sub(r"[^\w.-]", "_", request.node.name)[:40])
        app = _start(workdir, conclave_module, **kwargs)
        apps.append(app)
        return app

    yield make
    problems = []
    for app in apps:
        app.stop()
        problems += app.check_logs()
    if problems:
        pytest.fail("nginx logged problems:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture
def clients():
    """Factory of real XMPP clients (npm @xmpp/client or stanza, driven by
    tests/lib/xmppdriver.mjs): clients("xmpp") or clients("stanza").
    Every client made is closed at the end of the test."""
    from xmppclient import NodeClient

    made = []

    def make(lib):
        c = NodeClient(lib)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
