# Conclave: top-level build.  See README.md for the targets.
#
#   make            build the nginx dynamic module (build/<variant>/*.so)
#                   and conclavectl (build/<variant>/conclavectl)
#   make SANITIZE=1 the same with ASan + UBSan (build/asan/)
#   make deps       install every Debian package and npm package we need
#   make test       unit tests, then the integration suite
#   make demo       start a complete appliance on loopback; make stop

SHELL := /bin/bash
TOP := $(CURDIR)
NGX_SRC := /usr/share/nginx/src

ifeq ($(SANITIZE),1)
VARIANT := asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
else
VARIANT := release
SAN_FLAGS :=
endif

BUILD := $(TOP)/build/$(VARIANT)
MODULE := $(BUILD)/ngx_http_conclave_module.so
MODULE_SRCS := $(wildcard nginx-module/src/*.c nginx-module/src/*.h \
	ldap/src/*.c ldap/src/*.h audit/src/*.c audit/src/*.h) \
	nginx-module/config

# conclavectl (admin/) with the audit library; from the build tree it
# finds the schema files in audit/schema (admin/README.md)
CTL := $(BUILD)/conclavectl
CTL_SRCS := $(wildcard admin/*.c audit/src/*.c)
CTL_CFLAGS := -std=gnu11 $(shell dpkg-buildflags --get CFLAGS 2>/dev/null) \
	$(shell dpkg-buildflags --get CPPFLAGS 2>/dev/null) \
	-Wall -Wextra -Werror $(SAN_FLAGS) -Iadmin -Iaudit/src \
	$(shell mariadb_config --cflags 2>/dev/null) \
	$(shell pkg-config --cflags libxml-2.0 libzip gmime-3.0 zlib 2>/dev/null) \
	-DCCTL_BUILD_SCHEMA='"$(TOP)/audit/schema"' \
	-DCCTL_BUILD_TOP='"$(TOP)"'
CTL_LIBS := $(shell dpkg-buildflags --get LDFLAGS 2>/dev/null) $(SAN_FLAGS) \
	-lmariadb -lldap -llber -lcrypto -ljansson -lpthread \
	$(shell pkg-config --libs libxml-2.0 libzip gmime-3.0 zlib 2>/dev/null)

CC_OPT := $(shell dpkg-buildflags --get CFLAGS 2>/dev/null) -fPIC \
	$(shell dpkg-buildflags --get CPPFLAGS 2>/dev/null) \
	-Werror -Wno-error=deprecated-declarations $(SAN_FLAGS)
LD_OPT := $(shell dpkg-buildflags --get LDFLAGS 2>/dev/null) -fPIC $(SAN_FLAGS)

.PHONY: all build ctl man deps deb-deps npm-deps test unit fuzz integration \
	bench bench-audit bench-transports bench-deps bench-compare demo stop \
	pkg-deps deb rpm package-test install-test packages-test clean

all: build

build: $(MODULE) $(CTL) webclient adminweb

ctl: $(CTL)

# configure once per variant; nginx's configure writes nothing into
# /usr/share/nginx/src when --builddir is given (PLATFORM.md 1a)
$(BUILD)/Makefile: nginx-module/config | $(NGX_SRC)/configure
	mkdir -p $(BUILD)
	cd $(NGX_SRC) && . ./conf_flags && ./configure \
	    --with-cc-opt="$(CC_OPT)" --with-ld-opt="$(LD_OPT)" \
	    "$${NGX_CONF_FLAGS[@]}" --with-stream=dynamic \
	    --add-dynamic-module=$(TOP)/nginx-module \
	    --builddir=$(BUILD) > $(BUILD)/configure.log 2>&1 \
	    || { tail -30 $(BUILD)/configure.log; exit 1; }

# only our .so: "make modules" would also try ngx_stream_module.so
$(MODULE): $(BUILD)/Makefile $(MODULE_SRCS)
	$(MAKE) -s -f $(BUILD)/Makefile -C $(NGX_SRC) $(MODULE)

$(NGX_SRC)/configure:
	$(MAKE) deps

$(CTL): $(CTL_SRCS) $(wildcard admin/*.h audit/src/*.h)
	@mkdir -p $(BUILD)
	$(CC) $(CTL_CFLAGS) -o $@ $(CTL_SRCS) $(CTL_LIBS)

# conclavectl(8) from "conclavectl --help": one source for both
VERSION := $(shell cat $(TOP)/VERSION)
man: $(BUILD)/conclavectl.8

$(BUILD)/conclavectl.8: $(CTL) packaging/man/mkman.py VERSION
	/usr/bin/python3 packaging/man/mkman.py $(CTL) $(VERSION) > $@.tmp
	mv $@.tmp $@

# webclient: build/webclient/ = our page and settings (packaging/webclient/)
# + converse.js's prebuilt dist/ from npm (pinned in package-lock.json) in
# converse/, without source maps or unminified copies.  Assembled in a
# temp dir and moved into place, so a running nginx never sees half; the
# lock keeps two makes in one tree from assembling at once.
WEBCLIENT := $(TOP)/build/webclient
CONVERSE_DIST := node_modules/converse.js/dist
# (not libomemo*.js and its wasm: OMEMO is off, packaging/webclient/conclave.js)
CONVERSE_FILES := converse.min.js converse.min.css emoji.json \
	chunkjs images sounds webfonts

.PHONY: webclient
webclient: $(WEBCLIENT)/.built

$(WEBCLIENT)/.built: $(wildcard packaging/webclient/*) package-lock.json
	@$(MAKE) --no-print-directory npm-deps
	@mkdir -p build; exec 9> build/.webclient.lock; flock 9; \
	set -e; new=$(WEBCLIENT).new; rm -rf $$new $(WEBCLIENT).old; \
	mkdir -p $$new/converse; \
	cp -p packaging/webclient/* $$new/; \
	for f in $(CONVERSE_FILES); do \
	    cp -Rp $(CONVERSE_DIST)/$$f $$new/converse/; \
	done; \
	cp -p node_modules/converse.js/LICENSE $$new/converse/LICENSE; \
	find $$new -name '*.map' -delete; \
	touch $$new/.built; \
	[ ! -d $(WEBCLIENT) ] || mv $(WEBCLIENT) $(WEBCLIENT).old; \
	mv $$new $(WEBCLIENT); rm -rf $(WEBCLIENT).old; \
	v=$$(node -p 'require("./$(CONVERSE_DIST)/../package.json").version'); \
	echo "webclient: $(WEBCLIENT), converse.js $$v," \
	    "$$(du -sh $(WEBCLIENT) | cut -f1)"

# adminweb: build/admin/ = the admin console's static files (admin/web/,
# plain JS and CSS, nothing from npm); conclave_admin_root points here.
# Copied whole and swapped in, like the web client.
ADMINWEB := $(TOP)/build/admin

.PHONY: adminweb
adminweb: $(ADMINWEB)/.built

$(ADMINWEB)/.built: $(wildcard admin/web/*)
	@mkdir -p build; exec 9> build/.adminweb.lock; flock 9; \
	set -e; new=$(ADMINWEB).new; rm -rf $$new $(ADMINWEB).old; \
	mkdir -p $$new; cp -p admin/web/* $$new/; touch $$new/.built; \
	[ ! -d $(ADMINWEB) ] || mv $(ADMINWEB) $(ADMINWEB).old; \
	mv $$new $(ADMINWEB); rm -rf $(ADMINWEB).old; \
	echo "adminweb: $(ADMINWEB)"


# ---------------------------------------------------------------------
# deps: Debian packages, then npm packages from package-lock.json.
# Idempotent: apt-get runs only when dpkg-query finds something missing.

DEB_PKGS := nginx nginx-dev libnginx-mod-stream \
	mariadb-server-core mariadb-client-core libmariadb-dev \
	slapd ldap-utils libldap-dev libxml2-dev libssl-dev libjansson-dev \
	libzip-dev libgmime-3.0-dev libxml2-utils \
	python3-pytest python3-slixmpp python3-aioxmpp python3-websockets \
	python3-prometheus-client tmux \
	openssl ca-certificates gcc make libc6-dev dpkg-dev pkg-config \
	clang libclang-rt-14-dev chromium gnutls-bin python3-cryptography

deps: deb-deps
	@$(MAKE) --no-print-directory npm-deps

# slapd's debconf questions: noninteractive.  Services the packages may
# start on a fresh machine do not matter: we never use the system ones.
deb-deps:
	@missing=""; \
	for p in $(DEB_PKGS); do \
	    [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" \
	        = installed ] || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	    [ "$$(id -u)" = 0 ] || \
	        { echo "deps: need root to install:$$missing"; exit 1; }; \
	    echo "deps: installing$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && \
	    apt-get install -y -q --no-install-recommends \
	        -o Dpkg::Options::=--force-confdef \
	        -o Dpkg::Options::=--force-confold $$missing; \
	else \
	    echo "deps: all Debian packages present"; \
	fi

# npm ci when node_modules is missing or was installed from another lock
npm-deps:
	@want=$$(sha256sum package-lock.json | cut -d' ' -f1); \
	have=$$(cat node_modules/.conclave-lock.sha256 2>/dev/null); \
	if [ "$$want" != "$$have" ]; then \
	    echo "deps: npm ci"; \
	    npm ci --no-audit --no-fund --loglevel=error && \
	    echo "$$want" > node_modules/.conclave-lock.sha256; \
	else \
	    echo "deps: node_modules up to date"; \
	fi

# ---------------------------------------------------------------------
# unit: every tests/unit/<name>_test.c, built with ASan+UBSan and run.
#   <name>_test.srcs    extra source files (paths from the repo root)
#   <name>_test.libs    link flags, e.g. -lldap -llber
#   <name>_test.cflags  extra compile flags
# The files are shell words, so $$(pkg-config --libs x) works in them.
# Each test prints "N passed, N failed" (tests/unit/unit.h's
# unit_report()); a test that does not build,
# prints no such line, or exits non-zero counts as (one more) failure.

UNIT_BUILD := $(TOP)/build/unit
UNIT_TESTS := $(sort $(wildcard tests/unit/*_test.c))
UNIT_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-Inginx-module/src -Ildap/src -Iaudit/src -Itests/unit

unit:
	@mkdir -p $(UNIT_BUILD); rm -f build/unit.counts; pass=0; fail=0; \
	for t in $(UNIT_TESTS); do \
	    n=$$(basename $$t .c); b=$${t%.c}; bin=$(UNIT_BUILD)/$$n; \
	    srcs=; libs=; cflags=; \
	    [ -f $$b.srcs ] && srcs=$$(cat $$b.srcs); \
	    [ -f $$b.libs ] && libs=$$(cat $$b.libs); \
	    [ -f $$b.cflags ] && cflags=$$(cat $$b.cflags); \
	    echo "== $$n"; \
	    if ! eval "$(CC) $(UNIT_CFLAGS) $$cflags -o $$bin $$t $$srcs $$libs" \
	            > $$bin.build.log 2>&1; then \
	        cat $$bin.build.log; echo "$$n: BUILD FAILED"; \
	        fail=$$((fail + 1)); continue; \
	    fi; \
	    timeout 300 $$bin > $$bin.log 2>&1; rc=$$?; cat $$bin.log; \
	    line=$$(grep -oE '[0-9]+ passed, [0-9]+ failed' $$bin.log | tail -1); \
	    if [ -z "$$line" ]; then \
	        echo "$$n: exit $$rc, no \"N passed, N failed\" line"; \
	        fail=$$((fail + 1)); continue; \
	    fi; \
	    p=$${line%% passed*}; f=$${line##*, }; f=$${f%% failed}; \
	    if [ $$rc -ne 0 ] && [ $$f -eq 0 ]; then \
	        echo "$$n: exit $$rc"; f=1; \
	    fi; \
	    pass=$$((pass + p)); fail=$$((fail + f)); \
	done; \
	echo "$$pass $$fail" > build/unit.counts; \
	echo "unit total:"; echo "$$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]

# ---------------------------------------------------------------------
# fuzz: every tests/fuzz/fuzz_<name>.c with libFuzzer + ASan + UBSan for
# FUZZ_SECONDS each (<name>.srcs, .cflags and .libs as for unit
# tests; a directory <name>.seeds is read as a seed corpus).  A crash, leak or sanitizer report fails it; each target counts
# as one test.

FUZZ_SECONDS ?= 60
FUZZ_BUILD := $(TOP)/build/fuzz
FUZZ_TARGETS := $(sort $(wildcard tests/fuzz/fuzz_*.c))

fuzz:
	@mkdir -p $(FUZZ_BUILD)/corpus; pass=0; fail=0; \
	for t in $(FUZZ_TARGETS); do \
	    n=$$(basename $$t .c); b=$${t%.c}; bin=$(FUZZ_BUILD)/$$n; \
	    srcs=; [ -f $$b.srcs ] && srcs=$$(cat $$b.srcs); \
	    cflags=; [ -f $$b.cflags ] && cflags=$$(cat $$b.cflags); \
	    libs=; [ -f $$b.libs ] && libs=$$(cat $$b.libs); \
	    seeds=; [ -d $$b.seeds ] && seeds=$$b.seeds; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$n; \
	    if eval "clang -g -O1 -fsanitize=fuzzer,address,undefined \
	        -fno-sanitize-recover=undefined -Inginx-module/src $$cflags \
	        -o $$bin $$t $$srcs $$libs" > $$bin.build.log 2>&1 && \
	       $$bin -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	        -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$n $$seeds \
	        > $$bin.log 2>&1; then \
	        echo "$$n: $$(grep -E '^stat::number_of_executed_units' \
	            $$bin.log | awk '{print $$2}') runs, no crash"; \
	        pass=$$((pass + 1)); \
	    else \
	        cat $$bin.build.log; tail -40 $$bin.log; \
	        echo "$$n: FAILED"; fail=$$((fail + 1)); \
	    fi; \
	done; \
	echo "$$pass $$fail" > build/fuzz.counts; \
	echo "fuzz total:"; echo "$$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]

# ---------------------------------------------------------------------
# integration: pytest on Debian's python3 (not a pyenv one on PATH).
# SANITIZE=1 runs the suite against build/asan/.  pytest's exit 5 (no
# tests collected) and any other non-zero exit count as a failure.

PYTEST := /usr/bin/python3 -m pytest tests/integration -q

integration:
	@mkdir -p build; rm -f build/integration.counts; \
	$(if $(filter 1,$(SANITIZE)),export CONCLAVE_SANITIZE=1;) \
	set -o pipefail; $(PYTEST) 2>&1 | tee build/integration.log; rc=$$?; \
	last=$$(grep -E ' in [0-9.]+s' build/integration.log | tail -1); \
	p=$$(echo "$$last" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); \
	f=0; for n in $$(echo "$$last" | grep -oE '[0-9]+ (failed|errors?)' \
	    | grep -oE '[0-9]+'); do f=$$((f + n)); done; \
	p=$${p:-0}; \
	if [ $$rc -ne 0 ] && [ $$f -eq 0 ]; then \
	    echo "integration: pytest exit $$rc counts as a failure"; f=1; \
	fi; \
	echo "$$p $$f" > build/integration.counts; \
	exit $$rc

# ---------------------------------------------------------------------
# test: deps, build, unit, integration (release, then ASan+UBSan), then
# the packages (packages-test); the
# last line of output is the combined "N passed, N failed".  Unit tests run even if the module
# does not build; integration tests then count as one failure.

test:
	@rc=0; \
	if $(MAKE) --no-print-directory deps && \
	   $(MAKE) --no-print-directory build; then built=1; \
	else built=0; rc=1; fi; \
	$(MAKE) --no-print-directory unit || rc=1; \
	up=0; uf=1; [ -f build/unit.counts ] && read up uf < build/unit.counts; \
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=15 || rc=1; \
	fp=0; ff=1; [ -f build/fuzz.counts ] && read fp ff < build/fuzz.counts; \
	up=$$((up + fp)); uf=$$((uf + ff)); \
	ip=0; if_=1; ap=0; af=1; \
	if [ $$built = 1 ]; then \
	    $(MAKE) --no-print-directory integration || rc=1; \
	    [ -f build/integration.counts ] && \
	        read ip if_ < build/integration.counts; \
	    echo "== integration again, against the ASan+UBSan build"; \
	    if $(MAKE) --no-print-directory build SANITIZE=1; then \
	        $(MAKE) --no-print-directory integration SANITIZE=1 || rc=1; \
	        [ -f build/integration.counts ] && \
	            read ap af < build/integration.counts; \
	    else rc=1; fi; \
	else \
	    echo "build failed: integration tests not run"; \
	fi; \
	echo "== packages: deb N and N+1, rpm, inspection, install and upgrade"; \
	$(MAKE) --no-print-directory packages-test || rc=1; \
	pp=0; pf=1; [ -f build/package.counts ] && read pp pf < build/package.counts; \
	fails=$$((uf + if_ + af + pf)); [ $$fails -eq 0 ] || rc=1; \
	echo "$$((up + ip + ap + pp)) passed, $$fails failed"; \
	exit $$rc

# ---------------------------------------------------------------------
# bench (issue 4): print figures, assert nothing; flags via BENCH_ARGS,
# e.g. make bench BENCH_ARGS="--repeat 3 --rates 1000,5000,20000".
# Results land in build/bench/results/.  See tests/bench/README.md.

bench: build
	/usr/bin/python3 tests/bench/run_bench.py $(BENCH_ARGS)

# the audit trail's figures (issue 3): fsync policies through the module,
# the journal library, shipping into MariaDB and verify
bench-audit: build
	/usr/bin/python3 tests/bench/audit_bench.py $(BENCH_ARGS)

# the transports' figures (issue 5): idle TCP/TLS memory, TLS handshakes,
# BOSH round trip and idle BOSH memory
bench-transports: build
	/usr/bin/python3 tests/bench/tcp_idle_bench.py --mode direct
	/usr/bin/python3 tests/bench/tls_handshake_bench.py
	/usr/bin/python3 tests/bench/bosh_bench.py
	@mkdir -p build/bench
	$(CC) -O2 -o build/bench/openssl_conn_mem \
	    tests/bench/openssl_conn_mem.c -lssl -lcrypto
	build/bench/openssl_conn_mem 1000 sites

# ---------------------------------------------------------------------
# bench-compare (issue 4): Conclave, ejabberd, Prosody and the trivial
# relay (the physical ceiling) in one run of run_bench.py, plaintext TCP
# and then direct TLS (--passes tcp,tls; the relay has no TLS); figures and
# ratios in docs/benchmarks.md.  The peers are Debian's packages, run as
# private instances in a temp dir on free loopback ports: the system
# services and /etc/ejabberd, /etc/prosody are never used.  bench-deps
# installs them, and valgrind and linux-perf for tests/bench/profile.py
# (not in `make deps`: `make test` does not need them);
# a policy-rc.d keeps the packages from starting their system services.

BENCH_DEB_PKGS := ejabberd prosody lua-unbound gnuplot-nox valgrind linux-perf
BENCH_COMPARE_ARGS ?= --target conclave,ejabberd,prosody,relay \
	--passes tcp,tls --idle-sessions 1000,10000 --rates 1000,5000,20000 \
	--login-concurrency 20 --muc-occupants 100,1000 --repeat 2 \
	--plots docs/benchmarks

bench-deps:
	@missing=""; \
	for p in $(BENCH_DEB_PKGS); do \
	    [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" \
	        = installed ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    [ "$$(id -u)" = 0 ] || \
	        { echo "bench-deps: need root to install:$$missing"; exit 1; }; \
	    echo "bench-deps: installing$$missing"; \
	    prc=/usr/sbin/policy-rc.d; made=; \
	    if [ ! -e $$prc ]; then \
	        printf '#!/bin/sh\nexit 101\n' > $$prc && chmod 755 $$prc && \
	        made=1; \
	    fi; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && \
	    apt-get install -y -q --no-install-recommends \
	        -o Dpkg::Options::=--force-confdef \
	        -o Dpkg::Options::=--force-confold $$missing; rc=$$?; \
	    [ -z "$$made" ] || rm -f $$prc; \
	    exit $$rc; \
	else \
	    echo "bench-deps: ejabberd, prosody, gnuplot present"; \
	fi

bench-compare: bench-deps build
	/usr/bin/python3 tests/bench/run_bench.py $(BENCH_COMPARE_ARGS) \
	    $(BENCH_ARGS)

# ---------------------------------------------------------------------
# demo: a complete appliance on 127.0.0.1 (HTTPS 8443, LDAP 10389,
# MariaDB 13306) that keeps running; endpoints in run/demo.env.

DEMO_DIR := run/demo

demo:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@/usr/bin/python3 tests/lib/appliance.py start --dir $(DEMO_DIR) --demo

stop:
	@/usr/bin/python3 tests/lib/appliance.py stop --dir $(DEMO_DIR)

# ---------------------------------------------------------------------
# packages (issue 9): make deb, make rpm; docs/install.md.  Their tools
# are not in DEB_PKGS (make test does not need them): pkg-deps installs
# them when a package target runs.  PKG_VERSION overrides VERSION (the
# upgrade test builds N and N+1 from one tree).

PKG_DEB_PKGS := debhelper fakeroot lintian rpm debootstrap python3 logrotate
PKG_VERSION ?= $(VERSION)
DEB_OUT := $(TOP)/build/deb
RPM_OUT := $(TOP)/build/rpm

pkg-deps:
	@missing=""; \
	for p in $(PKG_DEB_PKGS); do \
	    [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" \
	        = installed ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    [ "$$(id -u)" = 0 ] || \
	        { echo "pkg-deps: need root to install:$$missing"; exit 1; }; \
	    echo "pkg-deps: installing$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && \
	    apt-get install -y -q --no-install-recommends $$missing; \
	else \
	    echo "pkg-deps: packaging tools present"; \
	fi

# the source tree as git sees it (tracked and new files, not ignored
# ones) and the assembled web client, copied into $(1)
define pkg_stage
rm -rf $(1); mkdir -p $(1); \
git ls-files -co --exclude-standard | grep -v '^node_modules$$' | \
    while read -r f; do [ -e "$$f" ] && echo "$$f"; done | \
    tar -cf - --no-recursion -T - | tar -xf - -C $(1); \
cp -R $(WEBCLIENT) $(1)/webclient; rm -f $(1)/webclient/.built
endef

# the snapshot plus debian/ from packaging/deb/
DEB_STAGE := $(DEB_OUT)/conclave-$(PKG_VERSION)

deb: pkg-deps webclient
	@set -e -o pipefail; $(call pkg_stage,$(DEB_STAGE)); \
	cp -R packaging/deb/debian $(DEB_STAGE)/debian; \
	printf '%s (%s) bookworm; urgency=medium\n\n  * Conclave %s.\n\n -- %s  %s\n' \
	    conclave $(PKG_VERSION) $(PKG_VERSION) \
	    'Conclave Packaging <packaging@conclave.invalid>' \
	    "$$(date -R)" > $(DEB_STAGE)/debian/changelog; \
	cd $(DEB_STAGE) && dpkg-buildpackage -b -us -uc > ../build.log 2>&1 \
	    || { tail -40 ../build.log; exit 1; }; \
	cd $(DEB_OUT) && lintian --fail-on error,warning \
	    conclave_$(PKG_VERSION)_*.changes | tee lintian.log; \
	ls -l $(DEB_OUT)/*_$(PKG_VERSION)_*.deb

# rpmbuild (Debian's rpm) from packaging/rpm/conclave.spec, Source0 the
# same snapshot; BuildRequires name Fedora's packages, so --nodeps
RPM_STAGE := $(RPM_OUT)/stage/conclave-$(PKG_VERSION)

rpm: pkg-deps webclient
	@set -e -o pipefail; rm -rf $(RPM_OUT); \
	$(call pkg_stage,$(RPM_STAGE)); mkdir -p $(RPM_OUT)/SOURCES; \
	tar -czf $(RPM_OUT)/SOURCES/conclave-$(PKG_VERSION).tar.gz \
	    -C $(RPM_OUT)/stage conclave-$(PKG_VERSION); \
	rpmbuild -bb --nodeps --define "_topdir $(RPM_OUT)" \
	    --define "conclave_version $(PKG_VERSION)" \
	    packaging/rpm/conclave.spec > $(RPM_OUT)/build.log 2>&1 \
	    || { tail -40 $(RPM_OUT)/build.log; exit 1; }; \
	ls -l $(RPM_OUT)/RPMS/*/*.rpm

# what the packages hold (dpkg-deb, rpm -qp); no installation
package-test: deb rpm
	/usr/bin/python3 -m pytest tests/package/test_packages.py -q

# a clean Debian 12 root from Debian's mirror (debootstrap; the minbase
# tarball is cached in build/install-test/), the .debs installed with
# apt-get, conclavectl setup, sign-in and chat, then the upgrade to
# PKG_VERSION+1, remove and purge (tests/package/test_install.py).
# Needs root and the host's Debian mirror; make test runs it through
# packages-test.
install-test: deb
	@$(MAKE) --no-print-directory deb PKG_VERSION=$(PKG_VERSION).1
	CONCLAVE_INSTALL_TEST=1 /usr/bin/python3 -m pytest \
	    tests/package/test_install.py -q

# packages-test: make test's packaging stage.  Builds the .debs N and
# N+1 and the .rpms, then runs all of tests/package/ (inspection, then
# install + upgrade + remove + purge) in one pytest, counted like the
# integration suite into build/package.counts.  A package that does not
# build is one more failure; the tests still run (and fail on the
# missing file), so the count says what is broken.
packages-test:
	@mkdir -p build; rm -f build/package.counts build/package.log; \
	bf=0; t0=$$(date +%s); \
	$(MAKE) --no-print-directory pkg-deps || bf=1; \
	[ $$bf = 1 ] || $(MAKE) --no-print-directory deb || bf=1; \
	[ $$bf = 1 ] || \
	    $(MAKE) --no-print-directory deb PKG_VERSION=$(PKG_VERSION).1 || bf=1; \
	[ $$bf = 1 ] || $(MAKE) --no-print-directory rpm || bf=1; \
	t1=$$(date +%s); echo "packages: built in $$((t1 - t0)) s"; \
	set -o pipefail; CONCLAVE_INSTALL_TEST=1 /usr/bin/python3 -m pytest \
	    tests/package -q -p no:cacheprovider 2>&1 | tee build/package.log; \
	rc=$$?; echo "packages: tested in $$(( $$(date +%s) - t1 )) s"; \
	last=$$(grep -E ' in [0-9.]+s' build/package.log | tail -1); \
	p=$$(echo "$$last" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); \
	f=0; for n in $$(echo "$$last" | grep -oE '[0-9]+ (failed|errors?)' \
	    | grep -oE '[0-9]+'); do f=$$((f + n)); done; \
	p=$${p:-0}; f=$$((f + bf)); \
	if [ $$rc -ne 0 ] && [ $$f -eq 0 ]; then \
	    echo "packages: pytest exit $$rc counts as a failure"; f=1; \
	fi; \
	echo "$$p $$f" > build/package.counts; \
	echo "packages total:"; echo "$$p passed, $$f failed"; \
	[ $$f -eq 0 ]

clean:
	rm -rf build
