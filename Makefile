# SPDX-License-Identifier: ISC
# odmrd build. `make` builds bin/odmrd and bin/odmrctl; `make asan` builds the same
# programs with ASan+UBSan into build-asan/; `make check` runs every test.
CC      ?= cc
PKGS    := libevent_core libevent_extra libevent_openssl libevent_pthreads openssl libgsasl inih
BUILD   ?= build
BINDIR  ?= bin
CSTD    := -std=c17 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wno-unused-parameter -Wvla
OPT     ?= -O2 -g
SANITIZE ?=
CFLAGS  += $(CSTD) $(WARN) $(OPT) $(SANITIZE) -Isrc $(shell pkg-config --cflags $(PKGS)) -pthread
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -pthread
LDFLAGS += $(SANITIZE)

LIB_SRC  := $(wildcard src/lib/*.c src/platform/*.c src/store/*.c src/engines/*.c src/services/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_A    := $(BUILD)/libodmr.a
# odmr-client's modules but main.c: a library the program, the unit tests and the fuzz
# targets link (none of them #includes a .c file).
CLIENT_SRC := $(filter-out src/client/main.c,$(wildcard src/client/*.c))
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/%.o)
CLIENT_A   := $(BUILD)/libodmrclient.a
PROGRAMS := odmrd odmrctl $(if $(wildcard src/client/*.c),odmr-client)
BINS     := $(PROGRAMS:%=$(BINDIR)/%)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)

.DEFAULT_GOAL := all

# The version is written in one place, the VERSION file; only version.o sees it.
VERSION := $(shell cat VERSION)
$(BUILD)/src/lib/version.o: CFLAGS += -DODMR_VERSION='"$(VERSION)"'
$(BUILD)/src/lib/version.o: VERSION

# Default paths (lib/paths.c): in the tree ./run (the quick start); FHS=1 (`make install`, the
# .deb) compiles in SYSCONFDIR and SPOOLDIR. A stamp rebuilds paths.o when they change.
FHS        ?=
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc/odmrd
SPOOLDIR   ?= /var/spool/odmrd
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DESTDIR    ?=
PATH_DEFS  := -DODMR_SYSCONFDIR='"$(SYSCONFDIR)"' -DODMR_SPOOLDIR='"$(SPOOLDIR)"'
$(BUILD)/src/lib/paths.o: CFLAGS += $(if $(FHS),$(PATH_DEFS))
$(BUILD)/src/lib/paths.o: $(BUILD)/paths.stamp
$(BUILD)/paths.stamp: FORCE
	@mkdir -p $(@D); s="fhs=$(FHS) $(SYSCONFDIR) $(SPOOLDIR)"; \
	  [ "$$(cat $@ 2>/dev/null)" = "$$s" ] || echo "$$s" > $@
FORCE:

odmrd_OBJ       := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/odmrd/*.c))
odmrctl_OBJ     := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/ctl/*.c))
odmr-client_OBJ := $(BUILD)/src/client/main.o $(CLIENT_A)

.PHONY: all asan unit check check-all check-unit check-proto fuzz fuzz-targets fuzz-check clean \
        deps run install install-build FORCE
all: $(BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLIENT_A): $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

define link_program
$(BINDIR)/$(1): $$($(1)_OBJ) $(LIB_A)
	@mkdir -p $(BINDIR)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach p,$(PROGRAMS),$(eval $(call link_program,$(p))))

# -MMD: a test that #includes a program's .c file (odmrctl's) is rebuilt when that file changes.
$(BUILD)/tests/%: tests/unit/%.c $(CLIENT_A) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(CLIENT_A) $(LIB_A) $(LDLIBS) \
	    $(shell pkg-config --libs cmocka)

unit: $(UNIT_BIN)

asan:
	$(MAKE) BUILD=build-asan BINDIR=build-asan/bin OPT="-O1 -g -fno-omit-frame-pointer" \
	    SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all unit

# `make check` installs what it needs, then runs the unit tests, the same unit tests under
# ASan+UBSan, the protocol and interop tests, and the protocol and interop tests again against
# the ASan+UBSan binaries (leaks at exit included: odmrd must then exit 0), and every fuzz
# target for FUZZ_SECONDS (clang, ASan+UBSan).
check:
	scripts/install-deps
	$(MAKE) check-all

check-all: all unit asan
	scripts/run-unit $(BUILD)/tests
	scripts/run-unit build-asan/tests
	scripts/run-proto
	ODMR_BIN=$(CURDIR)/build-asan/bin scripts/run-proto
	$(MAKE) fuzz-check

check-unit: all unit
	scripts/run-unit $(BUILD)/tests

check-proto: all
	scripts/run-proto

# libFuzzer targets (docs/fuzzing.md): `make fuzz` builds them with clang into build-fuzz/fuzz/;
# `make fuzz-check` runs each for FUZZ_SECONDS from its seeds in fuzz/corpus/<target>/ and fails
# on a crash, a leak, a timeout or 2 GB of memory.
FUZZ_BIN     := $(FUZZ_SRC:fuzz/%.c=build-fuzz/fuzz/%)
FUZZ_SECONDS ?= 10
fuzz:
	$(MAKE) CC=clang BUILD=build-fuzz BINDIR=build-fuzz/bin OPT="-O1 -g" \
	    SANITIZE="-fsanitize=fuzzer-no-link,address,undefined" build-fuzz/libodmr.a \
	    build-fuzz/libodmrclient.a
	$(MAKE) fuzz-targets

fuzz-targets: $(FUZZ_BIN)

build-fuzz/fuzz/%: fuzz/%.c build-fuzz/libodmrclient.a build-fuzz/libodmr.a
	@mkdir -p build-fuzz/fuzz build-fuzz/dep
	clang $(CSTD) $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
	    $(shell pkg-config --cflags $(PKGS)) -MMD -MP -MF build-fuzz/dep/$(@F).d \
	    -o $@ $< build-fuzz/libodmrclient.a build-fuzz/libodmr.a $(LDLIBS)

# Every target from its seeds only (a fresh corpus each time), one after another.
fuzz-check: fuzz
	rm -rf build-fuzz/check-corpus
	FUZZ_WORK=build-fuzz/check-corpus scripts/fuzz-run $(FUZZ_SECONDS)

deps:
	scripts/install-deps

# Quick start: build and run odmrd in the foreground on embedded defaults (./run/...).
run:
	scripts/install-deps
	$(MAKE) all
	scripts/quickstart

# `make install [PREFIX=/usr/local] [DESTDIR=]`: builds the programs with FHS defaults into
# build-install/ (the in-tree bin/ keeps ./run), then installs them, the man pages, the docs,
# the examples and the systemd units. It creates SYSCONFDIR (with tls/, 0700) and SPOOLDIR
# (0700) and writes SYSCONFDIR/odmrd.conf from the example only when there is none.
INSTALL_BUILD := build-install
DOCDIR := $(PREFIX)/share/doc/odmrd
MANDIR := $(PREFIX)/share/man
install-build:
	$(MAKE) BUILD=$(INSTALL_BUILD) BINDIR=$(INSTALL_BUILD)/bin FHS=1 all

install: install-build
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(DOCDIR)/examples \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(INSTALL_BUILD)/bin/odmrd $(INSTALL_BUILD)/bin/odmrctl $(DESTDIR)$(PREFIX)/sbin/
	install -m 0755 $(INSTALL_BUILD)/bin/odmr-client $(DESTDIR)$(PREFIX)/bin/
	for m in $(wildcard man/*.[158]); do \
	  install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/ || exit 1; done
	install -m 0644 README.md NEWS LICENSE docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 contrib/*.example $(DESTDIR)$(DOCDIR)/examples/
	for u in contrib/*.service contrib/*.timer; do \
	  sed -e 's|/usr/sbin/|$(PREFIX)/sbin/|g' -e 's|/usr/bin/odmr|$(PREFIX)/bin/odmr|g' \
	      -e 's|/usr/share/doc/odmrd|$(DOCDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/tls $(DESTDIR)$(SPOOLDIR)
	[ -e $(DESTDIR)$(SYSCONFDIR)/odmrd.conf ] || \
	  install -m 0644 contrib/odmrd.conf.example $(DESTDIR)$(SYSCONFDIR)/odmrd.conf

clean:
	rm -rf build build-asan build-fuzz build-install bin

-include $(LIB_OBJ:.o=.d) $(CLIENT_OBJ:.o=.d) $(odmrd_OBJ:.o=.d) $(odmrctl_OBJ:.o=.d) \
         $(BUILD)/src/client/main.d $(UNIT_BIN:=.d) \
         $(FUZZ_SRC:fuzz/%.c=build-fuzz/dep/%.d)
