#!/usr/bin/python3
"""TLS handshakes per second on the direct-TLS XMPP port (issue 5):
`openssl s_time -new` (a full handshake per connection, no resumption)
against a private appliance's 5223-style listener, pinned to CPU 1;
nginx's 2 workers are left free.  Prints connections/s in real time
(what the server sustained) and the client's CPU-second figure.
Measures, asserts nothing.

    tls_handshake_bench.py [--seconds 8] [--repeat 2]
        [--extra-stream 'conclave_tls_record_layer off;']

The certificate is the harness's RSA-2048 one; the client is one
process, so on 2 cores it is often the limit: see the CPU figure.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

from appliance import Appliance  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--extra-stream", action="append", default=[],
                   help="a line for the stream{} block")
    args = p.parse_args()
    app = Appliance(tempfile.mkdtemp(prefix="tls-hs-"), log_level="warn",
                    extra_stream="\n".join(args.extra_stream))
    app.start()
    try:
        for rep in range(args.repeat):
            r = subprocess.run(
                ["taskset", "-c", "1", "openssl", "s_time", "-connect",
                 "127.0.0.1:%d" % app.nginx.xmpps_port, "-new", "-time",
                 str(args.seconds)], capture_output=True, text=True)
            m = re.search(r"(\d+) connections in ([\d.]+)s; ([\d.]+) "
                          r"connections/user sec", r.stdout)
            real = re.search(r"(\d+) connections in (\d+) real seconds",
                             r.stdout)
            if not (m and real):
                print("run %d: s_time failed: %s" % (rep + 1,
                                                     r.stderr[-300:]))
                continue
            print("run %d: %.0f handshakes/s real (%s in %s s), client "
                  "%.0f/s per CPU second" % (
                      rep + 1, int(real.group(1)) / int(real.group(2)),
                      real.group(1), real.group(2), float(m.group(3))))
    finally:
        app.stop()


if __name__ == "__main__":
    main()
