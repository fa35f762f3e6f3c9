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
