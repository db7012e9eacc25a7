"""conclave_audit_fsync interval and off: messages go at once, records
still reach MariaDB (for "interval" only once synced), and checkpoints
are written on the record count.
"""

import os
import subprocess

import pytest

from appliance import env_sanitize
from auditwait import wait_drained
from nginx import NGINX, Nginx

from rawws import RawWS
from test_audit import rows, verify


@pytest.mark.parametrize("policy", ["interval", "off"])
def test_fsync_policy(make_appliance, policy):
    app = make_appliance(extra_http="conclave_audit_fsync %s;\n"
                         "conclave_audit_fsync_interval 200ms;\n"
                         "conclave_audit_checkpoint_records 20;" % policy)
    a = RawWS(app.nginx.http_port)
    a.login("alice")
    b = RawWS(app.nginx.http_port)
    b.login("bob")
    for i in range(50):
        a.send("<message xmlns='jabber:client' to='bob@example.com' "
               "id='%s-%d' type='chat'><body>%s %d</body></message>"
               % (policy, i, policy, i))
        b.expect(r"<body>%s %d</body>" % (policy, i))
    wait_drained(app)
    n = int(rows(app, "SELECT COUNT(*) FROM audit_record WHERE "
                 "stanza_id LIKE '%s-%%'" % policy)[0][0])
    assert n == 50
    notes = [f for f in os.listdir(app.nginx.audit_dir)
             if f.startswith("checkpoint-")]
    assert notes, os.listdir(app.nginx.audit_dir)
    a.close()
    b.close()
    verify(app)


def test_bad_fsync_value_is_a_config_error(make_appliance, tmp_path,
                                           conclave_module):
    # conclavectl (run by the harness before nginx) refuses it ...
    with pytest.raises(BaseException) as e:
        make_appliance(extra_http="conclave_audit_fsync sometimes;")
    assert "conclave_audit_fsync" in str(e.value)
    # ... and so does nginx itself
    n = Nginx(str(tmp_path / "t"), conclave_module, sanitize=env_sanitize(),
              extra_http="conclave_audit_fsync sometimes;")
    n.render_conf()
    r = subprocess.run([NGINX, "-t", "-p", n.workdir + "/", "-c",
                        "conf/nginx.conf"], env=n.env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert 'invalid value "sometimes"' in r.stderr, r.stderr
