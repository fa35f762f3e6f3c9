# saslgate — build, test, lint. `make test` is what CI runs (README.md).
GO ?= go

.PHONY: build test unit e2e lint fuzz demo

build:
	$(GO) build -o bin/saslgate ./cmd/saslgate

# The e2e tests need Dovecot, Node (npm ci in e2e/idp), curl and python3;
# with SASLGATE_E2E=require a missing one fails the run instead of skipping.
test: lint
	@if command -v npm >/dev/null && [ ! -d e2e/idp/node_modules ]; then npm ci --prefix e2e/idp --no-audit --no-fund; fi
	$(GO) test -race -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed; skipped (CI installs it)"; fi

# A short run of every fuzz target (corpus seeds also run in `make test`).
FUZZTIME ?= 15s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

demo:
	$(GO) run ./cmd/saslgate demo

# Side-by-side benchmark of saslgate, nginx's mail proxy and Dovecot direct on
# this machine (bench/README.md): bulk FETCH, login rate, idle memory, NOOP
# round trips, then profiles. Runs as root; installs Dovecot and nginx with its
# mail module when missing. About 5 minutes. The report goes to bench/RESULTS.md;
# profiles, configs and log tails to bench/out (not committed).
BENCHFLAGS ?=
.PHONY: bench
bench:
	@command -v dovecot >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd; }
	@if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_mail_module.so ]; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx libnginx-mod-mail; fi
	$(GO) build -o bin/imapbench ./bench/imapbench
	bin/imapbench -out bench/out $(BENCHFLAGS)
	cp bench/out/results.md bench/RESULTS.md
