# sandkit — see README.md. Targets that build first make sure the Debian
# packages they need are installed (.ci/deps installs them as root and
# prints the exact apt-get command for anyone else).

GO          ?= go
GOTESTFLAGS ?= -count=1 -timeout 20m
FUZZTIME    ?= 10m
# Go minimizes each new input for up to a minute by default, which stalls
# a short run of the broker targets (coverage there is not deterministic,
# so they keep finding "new" inputs) past its -fuzztime.
FUZZFLAGS   ?= -fuzzminimizetime=2s
export FUZZFLAGS
PROTOC_GEN_GO_VERSION := v1.36.12
DOCVIEWER   := examples/docviewer
# Packages system: libseccomp for the seccomp filter, poppler-utils to
# check converted PDFs, chromium for the viewer's browser test.
TEST_DEPS   := poppler-utils chromium

.PHONY: all deps build vet test test-race test-norace demo serve bench soak fuzz fuzz-smoke proto docs seccomp-profile clean

all: build

deps:
	@.ci/deps

# build and vet only check for the packages they need (and name the
# apt-get command); they never install anything.
build:
	@.ci/deps --check
	$(GO) build ./...
	cd $(DOCVIEWER) && $(GO) build ./...

vet:
	@.ci/deps --check
	$(GO) vet ./...
	cd $(DOCVIEWER) && $(GO) vet ./...

# The whole suite under the race detector, then the packages whose memory
# limits the race detector's shadow memory cannot live under, without it.
test: deps
	@.ci/deps $(TEST_DEPS)
	@$(MAKE) --no-print-directory vet
	$(GO) test -race $(GOTESTFLAGS) ./...
	$(GO) test $(GOTESTFLAGS) ./broker/... ./examples/imageparser/...
	cd $(DOCVIEWER) && $(GO) test -race $(GOTESTFLAGS) ./...
	cd internal/bench && $(GO) vet ./... && $(GO) test $(GOTESTFLAGS) ./...
	cd deploy && $(GO) vet ./... && $(GO) test $(GOTESTFLAGS) ./...

# The main job: the image parser on the sample images, each decoded in a
# renderer of its own; then the same on hostile files (each must FAIL
# cleanly while the others go on); then a document converted to a safe,
# image-only PDF by the sandboxed document viewer.
SAMPLES   := $(addprefix examples/imageparser/testdata/,png_640x480.png png_1x1.png png_gray16_64x64.png png_disguised.jpg jpeg_640x480.jpg jpeg_300x1000.jpg gif_anim_400x300_3frames.gif gif_partial_frame_200x100.gif bmp_101x67_24bit.bmp bmp_200x150_8bit.bmp tiff_500x375_deflate.tif tiff_multi_ifd_64x48.tif webp_lossy_640x480.webp webp_lossless_300x1000.webp webp_alpha_200x150.webp)
HOSTILE   := $(addprefix examples/imageparser/testdata/,png_bomb_20000x20000.png random_4k.bin png_truncated.png jpeg_header_65535x65535.jpg)

demo: deps
	@mkdir -p out bin
	@$(GO) build -o bin/imageparser ./examples/imageparser
	@cd $(DOCVIEWER) && $(GO) build -o $(CURDIR)/bin/docviewer .
	@echo "--- sample images, each decoded in a renderer of its own"
	bin/imageparser -out $(CURDIR)/out/thumbnails $(SAMPLES)
	@echo "--- hostile inputs: each must be refused (FAIL) while the others go on"
	@out=$$(bin/imageparser -out $(CURDIR)/out/thumbnails $(HOSTILE)); status=$$?; echo "$$out"; \
	refused=$$(echo "$$out" | grep -c '^FAIL '); \
	if [ $$status -eq 1 ] && [ $$refused -eq $(words $(HOSTILE)) ]; then echo "ok: all $(words $(HOSTILE)) hostile inputs refused"; \
	else echo "demo: $$refused of $(words $(HOSTILE)) hostile inputs refused (status $$status)"; exit 1; fi
	@echo "--- a PDF converted to a safe, image-only PDF by the sandboxed document viewer"
	bin/docviewer convert $(DOCVIEWER)/testdata/valid/multipage.pdf $(CURDIR)/out/multipage.safe.pdf
	@echo "thumbnails: $(CURDIR)/out/thumbnails"
	@echo "safe PDF:   $(CURDIR)/out/multipage.safe.pdf"
	@echo "viewer:     make serve   (then open http://127.0.0.1:8080/)"

# The sandboxed document viewer on the sample documents, on loopback.
serve: deps
	cd $(DOCVIEWER) && $(GO) run . serve -addr 127.0.0.1:8080 testdata/valid

# Every benchmark, the comparisons with bubblewrap, fork+exec, a raw
# socket and gRPC, and the generated table in docs/benchmarks.md.
bench: deps
	internal/bench/run.sh

# 32 renderers under 10,000 calls with descriptors and shared memory,
# hostile renderers and outside kills mixed in: nothing may be lost,
# misattributed or leaked (internal/soak). make test runs a short form.
SOAKFLAGS ?= -soak.renderers=32 -soak.calls=10000 -soak.workers=48
soak: deps
	$(GO) test -count=1 -timeout 30m -v -run TestSoak ./internal/soak $(SOAKFLAGS)

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

# Regenerates deploy/seccomp.json (the container runtime's default seccomp
# profile plus what the document viewer's nested sandbox needs) and its
# table in docs/deploying-containers.md; deploy's tests fail when stale.
seccomp-profile:
	cd deploy && $(GO) run ./cmd/seccomp-profile -write

# Regenerates the allowlist tables in SECURITY.md from policy.Strict().
docs:
	$(GO) run ./internal/gendoc -write SECURITY.md

clean:
	rm -rf bin out
