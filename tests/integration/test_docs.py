"""Docs are part of the feature: every conclave_* directive in the
module's ngx_command_t tables has a row in docs/configuration.md."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_every_directive_is_documented():
    src = "".join(open(f).read() for f in glob.glob(
        os.path.join(REPO, "nginx-module", "src", "*.c")))
    directives = set(re.findall(
        r'\{\s*ngx_string\("(conclave_[a-z0-9_]+)"\),', src))
    assert len(directives) > 50, directives
    doc = open(os.path.join(REPO, "docs", "configuration.md")).read()
    documented = set(re.findall(r"^\| `(conclave_[a-z0-9_]+)` \|", doc, re.M))
    assert directives - documented == set(), "undocumented"
    assert documented - directives == set(), "documented but gone"
