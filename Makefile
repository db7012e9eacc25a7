# Conclave: top-level build.  See README.md for the targets.
#
#   make            build the nginx dynamic module (build/<variant>/*.so)
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
	ldap/src/*.c ldap/src/*.h) nginx-module/config

CC_OPT := $(shell dpkg-buildflags --get CFLAGS 2>/dev/null) -fPIC \
	$(shell dpkg-buildflags --get CPPFLAGS 2>/dev/null) \
	-Werror -Wno-error=deprecated-declarations $(SAN_FLAGS)
LD_OPT := $(shell dpkg-buildflags --get LDFLAGS 2>/dev/null) -fPIC $(SAN_FLAGS)

.PHONY: all build deps test unit integration demo stop clean

all: build

build: $(MODULE)

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

clean:
	rm -rf build
