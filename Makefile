# sandkit — see README.md. Every target that builds first makes sure the
# Debian packages it needs are there (.ci/deps installs them as root, and
# prints the apt-get command otherwise).

GO        ?= go
PKGS      ?= ./...
GOTESTFLAGS ?= -race -count=1 -timeout 20m
BENCHCOUNT ?= 6
FUZZTIME  ?= 10m
PROTOC_GEN_GO_VERSION := v1.36.12

.PHONY: all deps build test vet demo bench fuzz fuzz-smoke proto serve clean

all: build

deps:
	@.ci/deps

build: deps
	$(GO) build $(PKGS)

vet: deps
	$(GO) vet $(PKGS)

test: deps vet
	$(GO) test $(GOTESTFLAGS) $(PKGS)

# Regenerates the committed protobuf code with pinned generators: Debian's
# protoc (protobuf-compiler) and protoc-gen-go at PROTOC_GEN_GO_VERSION.
proto:
	@.ci/deps protobuf-compiler
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	for f in $$(git ls-files '*.proto'); do \
		PATH=$(CURDIR)/bin:$$PATH protoc -I. --go_out=. --go_opt=paths=source_relative $$f || exit 1; \
	done

clean:
	rm -rf bin out
