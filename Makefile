# sandkit — see README.md. Targets that build first make sure the Debian
# packages they need are installed (.ci/deps installs them as root and
# prints the exact apt-get command for anyone else).

GO          ?= go
GOTESTFLAGS ?= -count=1 -timeout 20m
BENCHCOUNT  ?= 6
FUZZTIME    ?= 10m
PROTOC_GEN_GO_VERSION := v1.36.12
DOCVIEWER   := examples/docviewer
# Packages system: libseccomp for the seccomp filter, poppler-utils to
# check converted PDFs, chromium for the viewer's browser test.
TEST_DEPS   := poppler-utils chromium
BENCH_DEPS  := bubblewrap

.PHONY: all deps build vet test test-race test-norace demo serve bench fuzz fuzz-smoke proto docs clean

all: build

deps:
	@.ci/deps

build: deps
	$(GO) build ./...
	cd $(DOCVIEWER) && $(GO) build ./...

vet: deps
	$(GO) vet ./...
	cd $(DOCVIEWER) && $(GO) vet ./...

# The whole suite under the race detector, then the packages whose memory
# limits the race detector's shadow memory cannot live under, without it.
test: vet
	@.ci/deps $(TEST_DEPS)
	$(GO) test -race $(GOTESTFLAGS) ./...
	$(GO) test $(GOTESTFLAGS) ./broker/... ./examples/imageparser/...
	cd $(DOCVIEWER) && $(GO) test -race $(GOTESTFLAGS) ./...

# Runs the example image parser on the sample images, then converts a
# sample document to a safe PDF.
demo: deps
	@mkdir -p out
	$(GO) run ./examples/imageparser -out out/thumbnails $(wildcard examples/imageparser/testdata/png_*.png examples/imageparser/testdata/jpeg_*.jpg examples/imageparser/testdata/gif_*.gif examples/imageparser/testdata/webp_*.webp examples/imageparser/testdata/bmp_*.bmp examples/imageparser/testdata/tiff_*.tif) examples/imageparser/testdata/random_4k.bin || true
	@echo "thumbnails: $(CURDIR)/out/thumbnails"

bench: deps
	@.ci/deps $(BENCH_DEPS)
	$(GO) test -run '^$$' -bench . -count $(BENCHCOUNT) -timeout 30m ./... | tee out/bench.txt

fuzz: deps
	fuzz/run.sh $(FUZZTIME)

fuzz-smoke: deps
	fuzz/run.sh 10s

# Regenerates the committed protobuf code with pinned generators: Debian's
# protoc (protobuf-compiler) and protoc-gen-go at PROTOC_GEN_GO_VERSION.
proto:
	@.ci/deps protobuf-compiler
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	for f in $$(git ls-files '*.proto'); do \
		PATH=$(CURDIR)/bin:$$PATH protoc -I. --go_out=. --go_opt=paths=source_relative $$f || exit 1; \
	done

# Regenerates the allowlist tables in SECURITY.md from policy.Strict().
docs:
	$(GO) run ./internal/gendoc -write SECURITY.md

clean:
	rm -rf bin out
