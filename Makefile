# limitd's builds. Every target is a plain go command; see deploy/ for how to
# run what they build.
#
#   make build     bin/limitd for this machine
#   make test      the Go tests with the race detector
#   make release   static binaries for each of PLATFORMS in dist/, with SHA256SUMS
#   make image     the container image (needs Docker)
#   make clean

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Static (modernc.org/sqlite is pure Go), without build paths, stamped with
# the version that "limitd version" prints.
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOFLAGS_RELEASE := -trimpath -ldflags "$(LDFLAGS)"
PLATFORMS := linux/amd64 linux/arm64 darwin/arm64
BIN       ?= bin
DIST      ?= dist
IMAGE     ?= limitd

.PHONY: all build test release image clean

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_RELEASE) -o $(BIN)/limitd ./cmd/limitd

test:
	$(GO) test -race ./...

# dist/ is emptied first so SHA256SUMS never lists a stale binary of another
# version.
release:
	rm -rf $(DIST)
	mkdir -p $(DIST)
	set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "building $(DIST)/limitd_$(VERSION)_$${os}_$${arch}"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build $(GOFLAGS_RELEASE) \
			-o $(DIST)/limitd_$(VERSION)_$${os}_$${arch} ./cmd/limitd; \
	done
	cd $(DIST) && if command -v sha256sum >/dev/null 2>&1; then \
		sha256sum limitd_* > SHA256SUMS; else shasum -a 256 limitd_* > SHA256SUMS; fi
	cat $(DIST)/SHA256SUMS

image:
	docker build -f deploy/docker/Dockerfile --build-arg VERSION=$(VERSION) \
		-t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

clean:
	rm -rf $(BIN) $(DIST)
