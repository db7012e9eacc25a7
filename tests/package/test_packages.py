"""What the built packages hold: make package-test builds them first.

The .debs are read with dpkg-deb, the RPMs with rpm -qp (Debian's rpm):
file lists, dependencies, conffiles and maintainer scripts.  Nothing is
installed here; tests/package/test_install.py installs the .debs in a
clean Debian 12 root.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
VERSION = os.environ.get("PKG_VERSION") or open(
    os.path.join(REPO, "VERSION")).read().strip()
DEB = os.path.join(REPO, "build", "deb")
RPM = os.path.join(REPO, "build", "rpm", "RPMS", "x86_64")
SO = "ngx_http_conclave_module.so"


def one(pattern):
    found = glob.glob(pattern)
    if len(found) != 1:
        pytest.fail("%s: %d files; run make deb rpm first" % (pattern,
                                                             len(found)),
                    pytrace=False)
    return found[0]


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def deb(name):
    return one(os.path.join(DEB, "%s_%s_amd64.deb" % (name, VERSION)))


def rpm(name):
    return one(os.path.join(RPM, "%s-%s-1.x86_64.rpm" % (name, VERSION)))


def abi():
    with open("/usr/share/nginx/src/debian/libnginx-mod.abisubstvars") as f:
        return re.search(r"^nginx:abi=(\S+)", f.read(), re.M).group(1)


# ------------------------------------------------------------------ deb

def test_deb_module_package():
    path = deb("libnginx-mod-conclave")
    depends = run("dpkg-deb", "-f", path, "Depends")
    deps = [d.strip() for d in depends.split(",")]
    assert abi() in deps, depends                 # nginx-abi-1.22.1-7
    assert "libnginx-mod-stream" in deps, depends
    files = run("dpkg-deb", "-c", path)
    assert "./usr/lib/nginx/modules/%s" % SO in files
    assert "./usr/share/nginx/modules-available/mod-conclave.conf" in files
    ctl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", path],
                         capture_output=True).stdout
    out = subprocess.run(["tar", "-xOf", "-", "./postinst"], input=ctl,
                         capture_output=True).stdout.decode()
    # dh_nginx enables the load file at priority 70, after stream's 50
    assert "mod-conclave.conf:70-mod-conclave.conf" in out, out


def test_deb_appliance_package():
    path = deb("conclave")
    deps = run("dpkg-deb", "-f", path, "Depends")
    assert "libnginx-mod-conclave (= %s)" % VERSION in deps, deps
    files = run("dpkg-deb", "-c", path)
    for f in ("./usr/sbin/conclavectl", "./usr/share/man/man8/conclavectl.8.gz",
              "./usr/share/conclave/nginx.conf.in",
              "./usr/share/conclave/schema/001_audit.sql",
              "./usr/share/conclave/webclient/index.html",
              "./usr/share/conclave/webclient/converse/converse.min.js",
              "./usr/share/conclave/admin/",
              "./etc/conclave/hardening.conf",
              "./lib/systemd/system/conclave.service",
              "./usr/lib/conclave/conclave-nginx",
              "./usr/share/doc/conclave/install.md.gz",
              "./usr/share/doc/conclave/operations.md.gz"):
        assert f in files, f
    assert ".map" not in files
    tar = subprocess.run(["dpkg-deb", "--ctrl-tarfile", path],
                         capture_output=True).stdout

    def member(name):
        return subprocess.run(["tar", "-xOf", "-", name], input=tar,
                              capture_output=True).stdout.decode()
    conffiles = member("./conffiles")
    assert "/etc/conclave/hardening.conf" in conffiles
    postinst = member("./postinst")
    assert "skip-auto-migrate" in postinst
    assert "conclavectl backup-schema && conclavectl migrate" in postinst
    assert "try-restart" in postinst
    assert not re.search(r"^[^#]*\breload\b", postinst, re.M), postinst
    postrm = member("./postrm")
    assert "CONCLAVE_PURGE_AUDIT_DATA" in postrm
    # purge never removes the journals unless asked
    keep = postrm.split('if [ "${CONCLAVE_PURGE_AUDIT_DATA:-}" = yes ]')[0]
    assert "/var/lib/conclave/audit" not in keep.split("rm -rf")[-1]


def test_deb_logrotate(tmp_path):
    """/etc/logrotate.d/conclave is a conffile of the appliance package,
    rotates as the workers' user and makes nginx reopen its logs; the
    host's logrotate accepts it (-d: parse and plan, touch nothing)."""
    path = deb("conclave")
    files = run("dpkg-deb", "-c", path)
    assert "./etc/logrotate.d/conclave" in files
    ctl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", path],
                         capture_output=True).stdout
    conffiles = subprocess.run(["tar", "-xOf", "-", "./conffiles"],
                               input=ctl, capture_output=True).stdout
    assert b"/etc/logrotate.d/conclave" in conffiles
    subprocess.run(["dpkg-deb", "-x", path, str(tmp_path)], check=True)
    conf = tmp_path / "etc/logrotate.d/conclave"
    text = conf.read_text()
    assert "/var/log/conclave/*.log {" in text
    assert re.search(r"^\s*su www-data www-data$", text, re.M), text
    assert re.search(r"^\s*create 0640 www-data www-data$", text, re.M)
    # the pid file of the packaged configuration (nginx.conf.in's
    # @RUN_DIR@, conclavectl setup's /run/conclave)
    assert 'pid=/run/conclave/nginx.pid' in text
    assert 'kill -USR1 "$(cat "$pid")"' in text
    r = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"),
                        str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr
    assert "rotating pattern: /var/log/conclave/*.log" in r.stderr, r.stderr


def test_deb_lintian_clean():
    log = os.path.join(DEB, "lintian.log")
    assert os.path.exists(log), "make deb writes lintian.log"
    lines = [l for l in open(log) if re.match(r"^[EW]: ", l)]
    assert lines == [], lines


def test_man_page_from_help(tmp_path):
    """conclavectl(8) is generated from the packaged conclavectl's own
    --help (packaging/man/mkman.py): every line of the help text is in
    the man page, and every command it lists has a line there."""
    path = deb("conclave")
    man = subprocess.run(
        "dpkg-deb --fsys-tarfile %s | tar -xOf - "
        "./usr/share/man/man8/conclavectl.8.gz | gzip -dc" % path,
        shell=True, capture_output=True, text=True).stdout
    assert man.startswith(".TH CONCLAVECTL 8")
    subprocess.run(["dpkg-deb", "-x", path, str(tmp_path)], check=True)
    help_text = run(str(tmp_path / "usr/sbin/conclavectl"), "--help")
    sys.path.insert(0, os.path.join(REPO, "packaging", "man"))
    from mkman import esc
    man_lines = set(man.split("\n"))
    lines = help_text.split("\n")[1:]
    for line in lines:
        if line and not line[0].isspace() and line.endswith(":"):
            assert ".SH " + esc(line[:-1].upper()) in man_lines, line
        elif line:
            assert esc(line) in man_lines, line
    assert len([l for l in lines if l.strip()]) > 20, help_text
    for cmd in ("setup", "backup\\-schema", "migrate", "verify", "prune"):
        assert cmd in man, cmd


# ------------------------------------------------------------------ rpm

def qp(path, *what):
    return run("rpm", "-qp", *what, path)


def rpm_file(path, name):
    """One file's content from an RPM's payload: rpm2cpio (Debian's rpm)
    gives the "newc" cpio archive, read here (no cpio on the host)."""
    data = subprocess.run(["rpm2cpio", path], capture_output=True,
                          check=True).stdout
    pos = 0
    while data[pos:pos + 6] == b"070701":
        size = int(data[pos + 54:pos + 62], 16)
        nlen = int(data[pos + 94:pos + 102], 16)
        start = pos + 110
        fname = data[start:start + nlen - 1].decode()
        body = (start + nlen + 3) & ~3
        if fname == name:
            return data[body:body + size]
        if fname == "TRAILER!!!":
            break
        pos = (body + size + 3) & ~3
    pytest.fail("%s: no %s" % (path, name), pytrace=False)


def test_rpm_module_package():
    path = rpm("nginx-mod-conclave")
    req = qp(path, "--requires").split("\n")
    assert "nginx(abi) = 1.22.1" in req, req
    assert "nginx-mod-stream" in req, req
    files = qp(path, "--list").split()
    so = [f for f in files if f.endswith("/nginx/modules/" + SO)]
    assert so and re.match(r"^/usr/lib(64)?/nginx/modules/", so[0]), files
    conf = "/usr/share/nginx/modules/mod-xmpp-conclave.conf"
    assert conf in files
    # the glob in Fedora's nginx.conf loads it after mod-stream.conf
    assert sorted(["mod-stream.conf", os.path.basename(conf)])[0] == \
        "mod-stream.conf"
    scripts = qp(path, "--scripts")
    assert re.search(r"if \[ \$1 -eq 1 \]; then\s+systemctl reload "
                     r"nginx.service", scripts), scripts


def test_rpm_appliance_package():
    path = rpm("conclave")
    req = qp(path, "--requires").split("\n")
    assert "nginx-mod-conclave(x86-64) = %s-1" % VERSION in req, req
    files = qp(path, "--list").split()
    for f in ("/usr/sbin/conclavectl", "/usr/share/conclave/nginx.conf.in",
              "/usr/share/conclave/schema/001_audit.sql",
              "/usr/share/conclave/webclient/index.html",
              "/usr/lib/systemd/system/conclave.service",
              "/usr/lib/conclave/conclave-nginx", "/var/lib/conclave/audit"):
        assert f in files, f
    assert set(qp(path, "--configfiles").split()) == {
        "/etc/conclave/hardening.conf", "/etc/conclave/stream-hardening.conf",
        "/etc/logrotate.d/conclave"}
    scripts = qp(path, "--scripts")
    post = scripts.split("preuninstall scriptlet")[0]
    assert "skip-auto-migrate" in post
    assert "conclavectl backup-schema && conclavectl migrate" in post
    assert "try-restart conclave.service" in post
    assert "$1 -ge 2" in post                       # only on upgrade
    preun = scripts.split("preuninstall scriptlet")[1].split(
        "postuninstall scriptlet")[0]
    assert "$1 -eq 0" in preun and "stop" in preun
    postun = scripts.split("postuninstall scriptlet")[1]
    assert "rm " not in postun                      # never deletes data
    # Debian's logrotate file, rotating as Fedora's nginx user, the
    # owner of /var/log/conclave
    lr = rpm_file(path, "./etc/logrotate.d/conclave").decode()
    assert re.search(r"^\s*su nginx nginx$", lr, re.M), lr
    assert re.search(r"^\s*create 0640 nginx nginx$", lr, re.M), lr
    assert "www-data" not in lr and "kill -USR1" in lr, lr
    dump = qp(path, "--dump")
    audit = [l for l in dump.split("\n")
             if l.startswith("/var/lib/conclave/audit ")]
    assert audit and " 040750 " in " " + audit[0] + " ", audit
