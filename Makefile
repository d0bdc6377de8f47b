# rack: make build | make test | make lint | make fuzz | make bench
# `make test` is what CI runs (.ci/run): it installs what it needs itself.

GO          ?= go
BIN         := bin/rack
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 15s
# Built tools and images. Test hosts see this machine's files except their
# private /tmp, /var/tmp, /root and /home (internal/testrack), yet run the
# cached binaries: a clone below one of those keeps its cache where they look.
CACHE_DIR := $(CURDIR)/.cache
ifneq ($(filter /tmp/% /var/tmp/% /root/% /home/%,$(CURDIR)/),)
CACHE_DIR := /var/cache/rack-test$(CURDIR)
endif
export CACHE_DIR

.PHONY: build test lint fmt vet fuzz deps bench clean demo demo-down

# Static and path-free: the binary runs on any Linux of its architecture, and
# shares make test's build cache (same flags), so it does not compile again.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/rack

## test: everything CI runs — system packages, lint, a bounded fuzz run, all tests.
## scripts/test.sh schedules them: gofmt first, vet/staticcheck and the fuzzers
## beside the last tests, so a cold machine is never idle.
test: deps
	@scripts/test.sh

# Debian packages the test rack needs (real sshd hosts in namespaces). Needs
# root; without it the root-only tests skip with a reason instead.
deps:
	@scripts/install-deps.sh

lint: fmt vet

fmt:
	@echo "== gofmt"; out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi

vet:
	@echo "== go vet"; $(GO) vet ./...
	@echo "== module versions shared by the builds (scripts/modalign)"; $(GO) run ./scripts/modalign -check
	@echo "== staticcheck"; $(GO) run $(STATICCHECK) ./...

# One target per run: -fuzz takes a single fuzz test, so each is anchored.
FUZZ_TARGETS := inventory:FuzzParse inventory:FuzzParseK3sVersion nodes:FuzzCmdLine nodes:FuzzParseFacts

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; \
		echo "== fuzz $$fn in ./$$pkg ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg/; \
	done

bench:
	@scripts/bench.sh

## demo: a 3-host test rack on this machine whose pods really run (needs root),
## brought up by rack: nodes, MetalLB, Traefik, local volumes and a sample app,
## then a request to the app through MetalLB's address. Remove it with make demo-down.
demo: build deps
	@scripts/demo.sh

demo-down:
	@$(GO) run ./scripts/demo down -dir .demo

clean:
	rm -rf bin .cache $(CACHE_DIR)
