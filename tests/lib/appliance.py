"""A complete Conclave appliance on loopback: slapd + mariadbd + nginx.

    from appliance import Appliance
    with Appliance(tmpdir) as app:       # or .start() / .stop()
        app.ws_url, app.status_url, app.ldap, app.mariadb, app.nginx

Each part lives in its own subdirectory of workdir (ldap/, mariadb/,
nginx/) and is stopped by PID.  Tests use free ports; the demo uses fixed
ones (fixed_ports=True): HTTPS 8443, LDAP 10389, MariaDB 13306.

Command line (used by "make demo" / "make stop"):
    appliance.py start --dir run/demo [--demo] [--no-module] [--sanitize]
    appliance.py stop --dir run/demo
The started servers keep running after the command exits; their PIDs
are in <dir>/pids.json, the endpoints in <dir>.env (shell-sourceable).
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import slapd  # noqa: E402
from mariadb import MariaDB, pid_alive, pid_cmdline, stop_pid  # noqa: E402
from nginx import Nginx  # noqa: E402
from packaged import PackagedNginx  # noqa: E402
from slapd import Slapd  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
MODULE_NAME = "ngx_http_conclave_module.so"

HTTPS_PORT = 8443
LDAP_PORT = 10389
MARIADB_PORT = 13306
XMPP_PORT = 5222
XMPPS_PORT = 5223

# uids in the demo directory that are not in the sign-in group
SIGNIN_DENIED = ("dave", "grace")

_DEFAULT = object()


def env_sanitize():
    """CONCLAVE_SANITIZE=1 selects the ASan+UBSan build."""
    return os.environ.get("CONCLAVE_SANITIZE", "") not in ("", "0")


def module_path(sanitize=False):
    """build/release/ or build/asan/ in the repository."""
    return os.path.join(REPO, "build", "asan" if sanitize else "release",
                        MODULE_NAME)


def conclavectl_path(sanitize=False):
    return os.path.join(REPO, "build", "asan" if sanitize else "release",
                        "conclavectl")


class Appliance:
    """slapd, mariadbd and nginx(+module) composed; see module doc."""

    domain = "example.com"

    def __init__(self, workdir, fixed_ports=False, sanitize=None, tls=False,
                 module_so=_DEFAULT, workers=2, extra_http="",
                 extra_main="", extra_server="", log_level="info",
                 plaintext_auth=None, extra_stream="", packaged=False,
                 ldap_tls=False, ldap_flavor="openldap"):
        self.workdir = os.path.abspath(workdir)
        self.sanitize = env_sanitize() if sanitize is None else sanitize
        if module_so is _DEFAULT:
            module_so = module_path(self.sanitize)
        self.module_so = module_so
        self.tls = tls
        self.fixed_ports = fixed_ports
        self.ldap = Slapd(os.path.join(self.workdir, "ldap"),
                          LDAP_PORT if fixed_ports else None,
                          tls=ldap_tls, flavor=ldap_flavor)
        self.mariadb = MariaDB(os.path.join(self.workdir, "mariadb"),
                               MARIADB_PORT if fixed_ports else None)
        # packaged: conclavectl setup writes nginx.conf from the package's
        # template (make demo); otherwise tests/lib/nginx.conf.in
        cls, extra = Nginx, {}
        if packaged and module_so:
            cls = PackagedNginx
            extra = {"ctl": conclavectl_path(self.sanitize)}
        self.nginx = cls(os.path.join(self.workdir, "nginx"), module_so,
                           **extra,
                           http_port=HTTPS_PORT if fixed_ports else None,
                           xmpp_port=XMPP_PORT if fixed_ports else None,
                           xmpps_port=XMPPS_PORT if fixed_ports else None,
                           extra_stream=extra_stream,
                           ldap=self.ldap, mariadb=self.mariadb,
                           extra_http=extra_http, extra_main=extra_main,
                           extra_server=extra_server, tls=tls,
                           workers=workers, sanitize=self.sanitize,
                           log_level=log_level,
                           plaintext_auth=plaintext_auth)
        self.timings = {}

    # lifecycle

    def start(self):
        if self.module_so and not os.path.isfile(self.module_so):
            raise FileNotFoundError(
                "%s not built: run `make%s`" % (
                    self.module_so, " SANITIZE=1" if self.sanitize else ""))
        os.makedirs(self.workdir, exist_ok=True)
        started = []
        try:
            for name, part in (("slapd", self.ldap),
                               ("mariadb", self.mariadb),
                               ("nginx", self.nginx)):
                t0 = time.monotonic()
                if name == "nginx" and self.module_so and not getattr(
                        self.nginx, "migrates_itself", False):
                    self.migrate()
                part.start()
                started.append(part)
                self.timings[name] = time.monotonic() - t0
        except BaseException:
            for part in reversed(started):
                part.stop()
            raise
        self._write_pids()
        return self

    def stop(self):
        """Stop nginx, then mariadbd, then slapd, each by PID."""
        self.nginx.stop()
        self.mariadb.stop()
        self.ldap.stop()
        try:
            os.unlink(self.pids_file)
        except FileNotFoundError:
            pass

    def conclavectl(self, *args, check=True, timeout=120):
        """Run build/<variant>/conclavectl against this appliance's
        nginx.conf; returns the CompletedProcess (text)."""
        cmd = [conclavectl_path(self.sanitize), "--config",
               self.nginx.conf_path] + list(args)
        env = dict(os.environ)
        if self.sanitize:
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise RuntimeError("%s: exit %d\n%s%s" % (
                " ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r

    def migrate(self):
        """Render nginx.conf and apply the audit schema to MariaDB."""
        self.nginx.render_conf()
        return self.conclavectl("migrate", "--schema",
                                os.path.join(REPO, "audit", "schema"))

    def check_logs(self):
        """nginx [alert]/[emerg] lines and sanitizer reports; [] = clean."""
        return self.nginx.check_logs()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # endpoints

    @property
    def ws_url(self):
        return self.nginx.ws_url

    @property
    def status_url(self):
        return self.nginx.status_url

    @property
    def base_url(self):
        return self.nginx.base_url

    @property
    def http_port(self):
        return self.nginx.port

    @property
    def cert(self):
        """The self-signed certificate (tls=True), to trust in clients."""
        return self.nginx.cert if self.tls else None

    @property
    def users(self):
        """uid -> password for every demo account."""
        return dict(slapd.USERS)

    @property
    def signin_users(self):
        return {u: p for u, p in slapd.USERS.items()
                if u not in SIGNIN_DENIED}

    def jid(self, uid):
        return "%s@%s" % (uid, self.domain)

    def env(self):
        """The endpoints as CONCLAVE_* variables (also <dir>.env)."""
        m = self.mariadb
        return {
            "CONCLAVE_DOMAIN": self.domain,
            "CONCLAVE_BASE_URL": self.base_url,
            "CONCLAVE_WS_URL": self.ws_url,
            "CONCLAVE_STATUS_URL": self.status_url,
            "CONCLAVE_HTTP_PORT": str(self.http_port),
            "CONCLAVE_TLS": "1" if self.tls else "0",
            "CONCLAVE_TLS_CERT": self.cert or "",
            "CONCLAVE_LDAP_URI": self.ldap.uri,
            "CONCLAVE_LDAP_PORT": str(self.ldap.port),
            "CONCLAVE_LDAP_BIND_DN": slapd.SERVICE_DN,
            "CONCLAVE_LDAP_BIND_PASSWORD": slapd.SERVICE_PW,
            "CONCLAVE_LDAP_BASE": slapd.PEOPLE,
            "CONCLAVE_MARIADB_HOST": m.host,
            "CONCLAVE_MARIADB_PORT": str(m.port),
            "CONCLAVE_MARIADB_SOCKET": m.socket,
            "CONCLAVE_MARIADB_USER": m.user,
            "CONCLAVE_MARIADB_PASSWORD": m.password,
            "CONCLAVE_MARIADB_DATABASE": m.database,
            "CONCLAVE_NGINX_PREFIX": self.nginx.workdir,
            "CONCLAVE_RUN_DIR": self.workdir,
        }

    # the PIDs a later "stop" needs

    @property
    def pids_file(self):
        return os.path.join(self.workdir, "pids.json")

    def _write_pids(self):
        pids = {"nginx": self.nginx.pid, "mariadbd": self.mariadb.pid,
                "slapd": self.ldap.pid}
        with open(self.pids_file, "w") as f:
            json.dump(pids, f)
            f.write("\n")


# command line

# stop order and signal; the name must appear in the process's command
# line, so a recycled PID is never signalled
_STOP = (("nginx", signal.SIGQUIT), ("mariadbd", signal.SIGTERM),
         ("slapd", signal.SIGTERM))


def read_pids(workdir):
    try:
        with open(os.path.join(workdir, "pids.json")) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def running_pids(workdir):
    return {name: pid for name, pid in read_pids(workdir).items()
            if pid and pid_alive(pid) and name in pid_cmdline(pid)}


def stop_dir(workdir):
    pids = read_pids(workdir)
    if not pids:
        print("nothing to stop in %s (no pids.json)" % workdir)
        return 0
    for name, sig in _STOP:
        pid = pids.get(name)
        if not pid or not pid_alive(pid):
            continue
        if name not in pid_cmdline(pid):
            print("%s: pid %d is no longer %s; left alone" % (name, pid, name))
            continue
        t0 = time.monotonic()
        clean = stop_pid(pid, sig, 30.0)
        print("stopped %-8s pid %-7d %.2fs%s" % (
            name, pid, time.monotonic() - t0,
            "" if clean is not False else " (killed)"))
    os.unlink(os.path.join(workdir, "pids.json"))
    return 0


def write_env(app, path):
    with open(path, "w") as f:
        f.write("# Conclave demo endpoints; source it: set -a; . %s; set +a\n"
                % path)
        for k, v in app.env().items():
            f.write("%s=%s\n" % (k, shlex.quote(v)))


def describe(app, env_path):
    users = []
    for uid, pw in app.users.items():
        note = "  (not in conclave-users: may not sign in)" \
            if uid in SIGNIN_DENIED else ""
        users.append(("    %-22s password %-10s%s"
                      % (app.jid(uid), pw, note)).rstrip())
    return "\n".join([
        "Conclave demo is running (XMPP domain %s)" % app.domain,
        "  web client %s/" % app.base_url,
        "  WebSocket  %s" % app.ws_url,
        "  BOSH       %s/http-bind" % app.base_url,
        "  XMPP/TCP   127.0.0.1:%d (STARTTLS)   127.0.0.1:%d (direct TLS)"
        % (app.nginx.xmpp_port, app.nginx.xmpps_port),
        "  status     %s   (loopback only)" % app.status_url,
        "  TLS cert   %s   (self-signed)" % app.cert if app.tls else
        "  TLS        off (plain HTTP on loopback)",
        "  LDAP       %s   bind %s / %s" % (app.ldap.uri, slapd.SERVICE_DN,
                                           slapd.SERVICE_PW),
        "  MariaDB    127.0.0.1:%d   %s / %s, database %s" % (
            app.mariadb.port, app.mariadb.user, app.mariadb.password,
            app.mariadb.database),
        "  audit      journals %s, key %s" % (app.nginx.audit_dir,
                                                 app.nginx.audit_key),
        "             %s --config %s status|verify" % (
            os.path.relpath(conclavectl_path(app.sanitize)),
            os.path.relpath(app.nginx.conf_path)),
        "  env file   %s" % env_path,
        "  logs       %s, %s/{mariadb,ldap}" % (
            os.path.dirname(app.nginx.error_log_path), app.workdir),
        "Demo accounts:",
    ] + users + ["stop with: make stop"])


def cmd_start(args):
    workdir = os.path.abspath(args.dir)
    env_path = workdir.rstrip("/") + ".env"
    sanitize = args.sanitize or env_sanitize()
    app = Appliance(workdir, fixed_ports=args.demo, sanitize=sanitize,
                    tls=args.demo and not args.plain,
                    module_so=None if args.no_module else _DEFAULT,
                    workers=args.workers,
                    packaged=args.demo and not args.plain)
    live = running_pids(workdir)
    if live:
        print("already running in %s (%s); stop with: make stop"
              % (workdir, ", ".join("%s %d" % kv for kv in live.items())))
        return 0
    t0 = time.monotonic()
    try:
        app.start()
    except Exception as e:
        sys.stderr.write("appliance start failed: %s\n" % e)
        return 1
    write_env(app, env_path)
    print(describe(app, env_path))
    print("started in %.2fs (slapd %.2fs, mariadb %.2fs, nginx %.2fs)" % (
        time.monotonic() - t0, app.timings["slapd"],
        app.timings["mariadb"], app.timings["nginx"]))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="appliance.py",
                                description="run a Conclave appliance")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start slapd, mariadbd and nginx")
    s.add_argument("--dir", required=True, help="state directory")
    s.add_argument("--demo", action="store_true",
                   help="fixed ports (8443, 10389, 13306) and TLS")
    s.add_argument("--plain", action="store_true",
                   help="with --demo: plain HTTP instead of TLS")
    s.add_argument("--no-module", action="store_true",
                   help="stock nginx without the Conclave module")
    s.add_argument("--sanitize", action="store_true",
                   help="use build/asan/ (also CONCLAVE_SANITIZE=1)")
    s.add_argument("--workers", type=int, default=2)
    t = sub.add_parser("stop", help="stop the servers by their PIDs")
    t.add_argument("--dir", required=True)
    args = p.parse_args(argv)
    if args.cmd == "start":
        return cmd_start(args)
    return stop_dir(os.path.abspath(args.dir))


if __name__ == "__main__":
    sys.exit(main())
