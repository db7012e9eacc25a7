"""A private MariaDB server for tests and the demo.

MariaDB(workdir, port=None) initialises a data directory under workdir
with mariadb-install-db, runs mariadbd on 127.0.0.1:<port> (a free port
unless one is given) with its unix socket in workdir, and creates the
database `conclave` and the user conclave/conclave-pw for both 127.0.0.1
and localhost.  The server is stopped by PID; nothing outside workdir is
touched (--no-defaults: /etc/mysql is never read).

Flags and timings: /work/shared/notes/PLATFORM.md section 4.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from ports import free_port  # noqa: E402

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
CLIENT = "/usr/bin/mariadb"

# sun_path is 108 bytes including the NUL
_SUN_PATH_MAX = 107


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "pid (comm) S ...": comm may contain spaces and parentheses
    state = stat[stat.rindex(")") + 2:].split()[0]
    return state not in ("Z", "X")


def pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid, sig=signal.SIGTERM, timeout=30.0, proc=None):
    """Send sig to pid, wait up to timeout, then SIGKILL.

    proc is the subprocess.Popen for pid when we are its parent (so it is
    reaped).  Returns True if the process exited on sig, False if it had
    to be killed (or was already gone: None).
    """
    if not pid_alive(pid):
        if proc is not None:
            proc.poll()
        return None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not pid_alive(pid):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    else:
        end = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.02)
    return False


class MariaDBError(RuntimeError):
    pass


class MariaDB:
    """mariadbd on 127.0.0.1:port, data and socket inside workdir."""

    database = "conclave"
    user = "conclave"
    password = "conclave-pw"
    host = "127.0.0.1"

    def __init__(self, workdir, port=None):
        self.workdir = os.path.abspath(workdir)
        self.fixed_port = port
        self.port = port or free_port()
        self.datadir = os.path.join(self.workdir, "data")
        self.rundir = os.path.join(self.workdir, "run")
        self.pidfile = os.path.join(self.rundir, "mariadbd.pid")
        self.error_log_path = os.path.join(self.workdir, "error.log")
        self._sockdir = None
        self.socket = os.path.join(self.rundir, "mysqld.sock")
        if len(self.socket.encode()) > _SUN_PATH_MAX:
            # deep pytest tmp dirs can exceed sun_path; keep the socket
            # in a short private directory instead
            self._sockdir = tempfile.mkdtemp(prefix="cmdb-", dir="/tmp")
            self.socket = os.path.join(self._sockdir, "mysqld.sock")
        self.proc = None
        self.pid = None
        self.timings = {}
        # more mariadbd options (benchmarks: a larger buffer pool; a
        # later option of the same name wins)
        self.extra_args = []

    # lifecycle

    def start(self, timeout=60.0):
        os.makedirs(self.datadir, exist_ok=True)
        os.makedirs(self.rundir, exist_ok=True)
        t0 = time.monotonic()
        if not os.path.isdir(os.path.join(self.datadir, "mysql")):
            self._install_db()
        t1 = time.monotonic()
        # the port was only checked free when drawn; another process can
        # bind it first: draw again unless the caller fixed it
        attempts = 1 if self.fixed_port else 3
        for attempt in range(attempts):
            self._spawn()
            try:
                self._wait_ready(timeout)
                break
            except MariaDBError:
                if (attempt + 1 == attempts or self.proc.poll() is None
                        or "Address already in use" not in self._run_log()):
                    raise
                self.port = free_port()
        t2 = time.monotonic()
        self._setup_sql()
        t3 = time.monotonic()
        self.timings = {"install_db": t1 - t0, "ready": t2 - t1,
                        "setup": t3 - t2, "total": t3 - t0}
        return self

    def pause(self):
        """SIGSTOP: connections are accepted by the kernel, nothing is
        answered; returns once every thread is stopped."""
        procs.freeze(self.pid)

    def resume(self):
        procs.thaw(self.pid)

    def stop(self, timeout=30.0):
        """Stop mariadbd by PID: TERM, wait, KILL after timeout.

        Returns True on a clean exit, False if it had to be killed, None
        if it was not running.
        """
        pid = self.pid or self._read_pidfile()
        if pid is None:
            return None
        rc = stop_pid(pid, signal.SIGTERM, timeout, self.proc)
        self.proc = None
        self.pid = None
        if self._sockdir:
            try:
                os.unlink(self.socket)
            except FileNotFoundError:
                pass
            try:
                os.rmdir(self._sockdir)
            except OSError:
                pass
        return rc

    def running(self):
        pid = self.pid or self._read_pidfile()
        return pid is not None and pid_alive(pid)

    # queries

    def query(self, sql, database=None, root=True, timeout=30.0):
        """Run sql with the mariadb CLI over the unix socket.

        Returns the rows as a list of tuples of strings (NULL is None);
        raises MariaDBError on failure.  root=False connects as the
        conclave user over TCP, to check what the module would see.
        """
        args = [CLIENT, "--no-defaults", "--batch", "--skip-column-names",
                "--raw"]
        if root:
            args += ["-S", self.socket, "-uroot"]
        else:
            args += ["-h", self.host, "-P", str(self.port),
                     "-u" + self.user, "-p" + self.password]
        if database:
            args += ["-D", database]
        r = subprocess.run(args, input=sql, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise MariaDBError("mariadb: %s (sql: %.200s)"
                               % (r.stderr.strip(), sql))
        rows = []
        for line in r.stdout.splitlines():
            rows.append(tuple(None if v == "NULL" else v
                              for v in line.split("\t")))
        return rows

    def scalar(self, sql, database=None):
        rows = self.query(sql, database)
        return rows[0][0] if rows else None

    def _run_log(self):
        """The error log written since the last spawn."""
        return self.error_log()[self._log_offset:]

    def error_log(self):
        try:
            with open(self.error_log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # internals

    def _install_db(self):
        """Copy a pristine data directory made once per mariadbd binary:
        mariadb-install-db takes ~0.7 s, the copy a few ms."""
        st = os.stat(MARIADBD)
        template = os.path.join(
            tempfile.gettempdir(), "conclave-mariadb-template-%d-%d"
            % (st.st_size, int(st.st_mtime)))
        if not os.path.isdir(template):
            tmp = tempfile.mkdtemp(prefix=os.path.basename(template) + ".",
                                   dir=os.path.dirname(template))
            self._run_install_db(tmp)
            try:
                os.rename(tmp, template)
            except OSError:
                # another process made it first
                shutil.rmtree(tmp, ignore_errors=True)
        r = subprocess.run(["cp", "-a", template + "/.", self.datadir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise MariaDBError("copying %s failed: %s" % (template, r.stderr))

    def _run_install_db(self, datadir):
        r = subprocess.run(
            [INSTALL_DB, "--no-defaults", "--user=root",
             "--datadir=" + datadir,
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120)
        if r.returncode != 0:
            raise MariaDBError("mariadb-install-db failed:\n%s\n%s"
                               % (r.stdout[-2000:], r.stderr[-2000:]))

    def _spawn(self):
        self._log_offset = len(self.error_log())
        args = [
            MARIADBD, "--no-defaults", "--user=root",
            "--datadir=" + self.datadir,
            "--socket=" + self.socket,
            "--pid-file=" + self.pidfile,
            "--bind-address=127.0.0.1", "--port=%d" % self.port,
            "--log-error=" + self.error_log_path,
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ] + list(self.extra_args)
        out = open(os.path.join(self.workdir, "stdout.log"), "ab")
        try:
            # own session: ^C in the caller's terminal does not reach it,
            # and it outlives the demo CLI
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, close_fds=True)
        finally:
            out.close()
        self.pid = self.proc.pid

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise MariaDBError(
                    "mariadbd exited with %s; error log tail:\n%s"
                    % (self.proc.returncode, self.error_log()[-3000:]))
            if os.path.exists(self.socket) and self._port_open():
                try:
                    self.query("SELECT 1", timeout=5)
                    return
                except (MariaDBError, subprocess.TimeoutExpired):
                    pass
            if time.monotonic() > deadline:
                self.stop(5)
                raise MariaDBError("mariadbd not ready after %.0fs:\n%s"
                                   % (timeout, self.error_log()[-3000:]))
            time.sleep(0.05)

    def _port_open(self):
        try:
            with socket.create_connection((self.host, self.port), 0.2):
                return True
        except OSError:
            return False

    def _setup_sql(self):
        # idempotent: the demo keeps its data directory across restarts
        u, p, d = self.user, self.password, self.database
        self.query(
            "CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4"
            " COLLATE utf8mb4_unicode_ci;\n"
            "CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s';\n"
            "CREATE USER IF NOT EXISTS '%s'@'localhost' IDENTIFIED BY '%s';\n"
            "GRANT ALL ON `%s`.* TO '%s'@'127.0.0.1', '%s'@'localhost';\n"
            % (d, u, p, u, p, d, u, u))

    def _read_pidfile(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def __repr__(self):
        return "<MariaDB 127.0.0.1:%d %s>" % (self.port, self.workdir)


class Locker:
    """A mariadb client of its own (root, unix socket) that ran `take`,
    statements that take locks, and holds them until release() runs
    `give_back`: the module's statements that need them wait (a slow
    backend, not a dead one)."""

    def __init__(self, db, take, give_back):
        self.give_back = give_back
        self.proc = subprocess.Popen(
            ["/usr/bin/mariadb", "--no-defaults", "--batch", "--unbuffered",
             "--skip-column-names", "-S", db.socket, "-uroot",
             "-D", db.database],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(take + "\nSELECT 'locked';\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "locked"

    def holding(self):
        return self.proc.poll() is None

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(self.give_back + "\n")
            self.proc.stdin.close()
            self.proc.wait(30)


def table_lock(db, table):
    """LOCK TABLES table WRITE until release()."""
    return Locker(db, "LOCK TABLES %s WRITE;" % table, "UNLOCK TABLES;")
