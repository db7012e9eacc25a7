#!/usr/bin/python3
"""Make conclavectl(8) from "conclavectl --help": one source for both.

    mkman.py CONCLAVECTL VERSION > conclavectl.8

The help text's first line is the synopsis; lines ending in ":" at the
left margin start sections; everything else is kept as written, in
no-fill blocks so the columns of the help text survive.
"""

import subprocess
import sys
import time


def esc(line):
    line = line.replace("\\", "\\e")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line.replace("-", "\\-")


def main():
    ctl, version = sys.argv[1], sys.argv[2]
    text = subprocess.run([ctl, "--help"], check=True, capture_output=True,
                          text=True).stdout.splitlines()
    date = time.strftime("%Y-%m-%d", time.gmtime(
        int(__import__("os").environ.get("SOURCE_DATE_EPOCH", time.time()))))
    out = ['.TH CONCLAVECTL 8 "%s" "conclave %s" "Conclave"' % (date, version),
           ".SH NAME",
           "conclavectl \\- set up and operate a Conclave chat appliance",
           ".SH SYNOPSIS", ".nf", esc(text[0].replace("usage: ", "")), ".fi",
           ".SH DESCRIPTION", ".nf"]
    for line in text[1:]:
        if line and not line[0].isspace() and line.endswith(":"):
            out += [".fi", ".SH " + esc(line[:-1].upper()), ".nf"]
        else:
            out.append(esc(line))
    out += [".fi", ".SH SEE ALSO", "nginx(8), /usr/share/doc/conclave/"]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
