# redoubt — privilege-separated TLS for Redis-protocol servers.
# `make` builds build/redoubt; `make test` runs unit, sanitizer and system tests;
# `make demo` runs a redis-server behind redoubt with development certificates.

CC      ?= cc
BUILD   ?= build
PKGS    := libssl libcrypto libseccomp libcap jansson inih tss2-esys tss2-mu tss2-tctildr

# Hardening flags are part of the build, not an option: FORTIFY, stack protector, PIE, full RELRO.
WARN    := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter -Wvla
HARDEN  := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection -fPIE \
           -fcf-protection
CFLAGS  ?= -O2 -g
# EXTRA_CFLAGS / EXTRA_LDFLAGS add to the build without replacing its own flags (sanitizers).
CFLAGS  += $(EXTRA_CFLAGS)
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) $(HARDEN) -I. $(shell pkg-config --cflags $(PKGS))
LDFLAGS += -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack $(EXTRA_LDFLAGS)
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lpthread

# Release builds never contain the sandbox self-test hooks; `make TEST_HOOKS=1` adds them.
ifeq ($(TEST_HOOKS),1)
CFLAGS  += -DREDOUBT_TEST_HOOKS
endif

SRCDIRS := common ipc policy keyd worker audit cli
SRCS    := $(foreach d,$(SRCDIRS),$(wildcard $(d)/*.c))
MAIN    := cli/main.c
LIBSRCS := $(filter-out $(MAIN),$(SRCS))
OBJS    := $(LIBSRCS:%.c=$(BUILD)/%.o)
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

.PHONY: all deps test test-unit test-asan test-system demo clean bench lint fuzz fuzz-libfuzzer \
	install deb test-package

all: $(BUILD)/redoubt

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libredoubt.a: $(OBJS)
	ar rcs $@ $^

$(BUILD)/redoubt: $(BUILD)/cli/main.o $(BUILD)/libredoubt.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libredoubt.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libredoubt.a $(LDFLAGS) $(LDLIBS) -lcmocka

FUZZ_SAN  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_SRCS := tests/fuzz/fuzz_ipc.c ipc/codec.c
FUZZ_N    ?= 200000
FUZZ_TIME ?= 60

# The IPC codec fuzzer: a standalone mutation driver (gcc + ASan), and libFuzzer with clang.
$(BUILD)/fuzz_ipc: $(FUZZ_SRCS) ipc/ipc.h common/limits.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -I. $(FUZZ_SAN) -DREDOUBT_FUZZ_MAIN -o $@ $(FUZZ_SRCS)

$(BUILD)/fuzz_ipc_libfuzzer: $(FUZZ_SRCS) ipc/ipc.h common/limits.h
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE $(WARN) -I. -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ $(FUZZ_SRCS)

fuzz: $(BUILD)/fuzz_ipc
	$(BUILD)/fuzz_ipc -n $(FUZZ_N) tests/fuzz/corpus/ipc

fuzz-libfuzzer: $(BUILD)/fuzz_ipc_libfuzzer
	@mkdir -p $(BUILD)/fuzz-corpus/ipc
	$(BUILD)/fuzz_ipc_libfuzzer -max_len=1100 -max_total_time=$(FUZZ_TIME) \
		$(BUILD)/fuzz-corpus/ipc tests/fuzz/corpus/ipc

test-unit: $(UNIT)
	@set -e; for t in $(UNIT); do echo "== $$t"; $$t; done

# The same unit tests and a short system run under AddressSanitizer + UBSan.
test-asan:
	$(MAKE) BUILD=build-asan \
		EXTRA_CFLAGS="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" TEST_HOOKS=1 build-asan/redoubt test-unit

# The unit tests under valgrind's memcheck: no invalid access, no leak.  Not test_sandbox:
# valgrind runs the code on its own emulated CPU and cannot live under the seccomp filters
# that test installs (ASan/UBSan cover it in test-asan).
VALGRIND_UNIT := $(filter-out %/test_sandbox,$(UNIT))
test-valgrind: $(UNIT)
	@set -e; for t in $(VALGRIND_UNIT); do echo "== valgrind $$t"; \
		valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
		--track-fds=no $$t >/dev/null; done

test-system: $(BUILD)/redoubt
	REDOUBT_BIN=$(abspath $(BUILD)/redoubt) /usr/bin/python3 -m pytest -q tests/system

test: deps
	$(MAKE) all test-unit
	$(MAKE) lint
	$(MAKE) test-valgrind
	$(MAKE) test-asan
	$(MAKE) fuzz FUZZ_N=100000
	$(MAKE) TEST_HOOKS=1 BUILD=build-hooks build-hooks/redoubt
	REDOUBT_BIN=$(abspath build-hooks/redoubt) REDOUBT_RELEASE_BIN=$(abspath $(BUILD)/redoubt) \
		REDOUBT_AUDIT_GEN=$(abspath $(BUILD)/tests/test_audit) \
		/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/system
	$(MAKE) test-package

PREFIX  ?= /usr/local
DESTDIR ?=

install: $(BUILD)/redoubt
	install -D -m 0755 $(BUILD)/redoubt $(DESTDIR)$(PREFIX)/bin/redoubt
	install -D -m 0644 docs/man/redoubt.8 $(DESTDIR)$(PREFIX)/share/man/man8/redoubt.8
	install -D -m 0644 docs/man/redoubt.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/redoubt.conf.5

deb:
	packaging/build-deb.sh

# Issue 9: every unit, and each example drop-in on the unit it names, scores <= 1.5 in
# systemd-analyze security (the split gives 0.4 for keyd's service, 1.2 for the workers').
REDOUBT_SECURITY_MAX ?= 1.5
test-package:
	REDOUBT_SECURITY_MAX=$(REDOUBT_SECURITY_MAX) /usr/bin/python3 tests/package/test_package.py

demo: deps all
	@scripts/demo.sh $(abspath $(BUILD)/redoubt)

bench: deps all
	@bench/run.sh $(abspath $(BUILD)/redoubt)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --std=c11 \
		--suppress=missingIncludeSystem --include=/usr/include/x86_64-linux-gnu/sys/queue.h \
		-I. $(SRCDIRS)
	@set -e; for f in $(SRCS); do clang-tidy --quiet $$f -- -std=c11 -D_GNU_SOURCE -I. \
		$(shell pkg-config --cflags $(PKGS)) 2>/dev/null; done

clean:
	rm -rf build build-asan build-hooks

-include $(OBJS:.o=.d) $(BUILD)/cli/main.d
