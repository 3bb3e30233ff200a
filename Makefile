# sandkit — see README.md. Targets that build first make sure the Debian
# packages they need are installed (.ci/deps installs them as root and
# prints the exact apt-get command for anyone else).

GO          ?= go
# The Go toolchain every target builds with, fetched once through the module
# proxy when the installed one differs: a release with the standard
# library's security fixes (govulncheck in make check finds ten reachable
# vulnerabilities in go1.26.8's net/http, crypto/tls and crypto/x509). Set
# GOTOOLCHAIN=local to build with the installed one.
GOTOOLCHAIN ?= go1.26.11
export GOTOOLCHAIN
GOTESTFLAGS ?= -count=1 -timeout 20m
FUZZTIME    ?= 10m
# Go minimizes each new input for up to a minute by default, which stalls
# a short run of the broker targets (coverage there is not deterministic,
# so they keep finding "new" inputs) past its -fuzztime.
FUZZFLAGS   ?= -fuzzminimizetime=2s
export FUZZFLAGS
# Tools, each pinned and fetched through the Go module proxy (go run
# pkg@version builds it once and caches it).
PROTOC_GEN_GO_VERSION := v1.36.12
BUF_VERSION           := v1.75.0
STATICCHECK_VERSION   := v0.8.2
GOVULNCHECK_VERSION   := v1.10.0
# cmd/indexdb of golang.org/x/vulndb, which turns the database's OSV files
# into the index govulncheck reads (see .ci/vulncheck).
INDEXDB_VERSION       := v0.0.0-20261105234957-e22db6528018
# Every Go module in the repository.
MODULES     := . examples/docviewer internal/bench deploy
DOCVIEWER   := examples/docviewer
# Packages system: libseccomp for the seccomp filter, poppler-utils to
# check converted PDFs, chromium for the viewer's browser test,
# tesseract-ocr and its English data for convert -ocr, LibreOffice
# (no GUI) for Office documents.
TEST_DEPS   := poppler-utils chromium tesseract-ocr tesseract-ocr-eng libreoffice-core-nogui libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui

.PHONY: all deps build vet test check lint vulncheck tidy proto-check demo serve loadtest bench soak fuzz fuzz-smoke proto docs syscalls seccomp-profile container-test clean

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
	cd internal/bench && $(GO) vet ./...

# The race detector's shadow memory cannot live under a memory limit, so
# renderers built with it run without one and the tests below, which are
# about that limit, skip themselves or their memory cases under -race.
# make test runs each test of the root module once: these without -race,
# in NORACE_PKGS, and every other test with it. -skip applies to every
# package, so the test target checks that no other package of the module
# has a test of these names. The document viewer runs under -race only.
NORACE_TESTS := TestLimits TestMemoryLimitCountsEveryMapping TestMemoryClaimNeedsEvidence \
	TestMemoryLimit TestMisbehavingRenderer TestPolicy
NORACE_PKGS  := ./broker ./examples/imageparser/parser
norace_alt   := $(subst $(eval) ,|,$(strip $(NORACE_TESTS)))
norace_re    := ^($(norace_alt))$$

test: deps
	@.ci/deps $(TEST_DEPS)
	@$(MAKE) --no-print-directory vet
	@dirs=$$(grep -rlE --include='*_test.go' --exclude-dir=docviewer --exclude-dir=bench '^func ($(norace_alt))\(' . | xargs -n1 dirname | LC_ALL=C sort -u); \
	[ "$$(echo $$dirs)" = "$(sort $(NORACE_PKGS))" ] || { echo "NORACE_TESTS are defined in" $$dirs", not only in $(NORACE_PKGS): rename the test or add its package" >&2; exit 1; }
	$(GO) test -race $(GOTESTFLAGS) -skip '$(norace_re)' ./...
	$(GO) test $(GOTESTFLAGS) -run '$(norace_re)' $(NORACE_PKGS)
	cd $(DOCVIEWER) && $(GO) test -race $(GOTESTFLAGS) ./...
	cd internal/bench && $(GO) test $(GOTESTFLAGS) ./...
	cd deploy && $(GO) vet ./... && $(GO) test $(GOTESTFLAGS) ./...

# Static checks, over every module: staticcheck; govulncheck, against the
# database as the module proxy serves it (vuln.go.dev need not be
# reachable: see .ci/vulncheck); go.mod and go.sum tidy; and the committed
# protobuf code exactly what make proto generates.
check: lint vulncheck tidy proto-check

lint:
	@.ci/deps --check
	for m in $(MODULES); do (cd $$m && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...) || exit 1; done

vulncheck:
	@.ci/deps --check
	GO=$(GO) .ci/vulncheck $(GOVULNCHECK_VERSION) $(INDEXDB_VERSION) $(MODULES)

tidy:
	for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff) || { echo "$$m: go.mod or go.sum is not tidy: run go mod tidy there" >&2; exit 1; }; done

proto-check: proto
	@git diff --exit-code -- '*.pb.go' || { echo "the committed protobuf code differs from what make proto generates" >&2; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- '*.pb.go'); [ -z "$$untracked" ] || { echo "make proto generated files that are not committed: $$untracked" >&2; exit 1; }

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

# The sandboxed document viewer under load, on loopback only
# (examples/docviewer/internal/loadtest): 50 clients, 2,000 page requests
# over 20 generated documents, -max-renderers 8. Fails on any failed page
# or when the server's resident size after the load is over 20 % above
# idle; reports latency and peak resident size. Bounded: 15 min.
LOADTESTFLAGS ?=
loadtest: deps
	@mkdir -p bin
	cd $(DOCVIEWER) && $(GO) build -o $(CURDIR)/bin/docviewer . && \
		$(GO) run ./internal/loadtest -bin $(CURDIR)/bin/docviewer $(LOADTESTFLAGS)

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

# Regenerates the committed protobuf code with pinned generators, both Go
# programs from the module proxy: buf compiles the .proto files (no protoc
# needed) and protoc-gen-go writes the code (see buf.gen.yaml). Generated
# files say "protoc (unknown)" where protoc would put its version.
proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	PATH=$(CURDIR)/bin:$$PATH $(GO) run github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION) generate \
		$$(git ls-files '*.proto' | sed 's/^/--path /') .

# Regenerates deploy/seccomp.json (the container runtime's default seccomp
# profile plus what the document viewer's nested sandbox needs) and its
# table in docs/deploying-containers.md; deploy's tests fail when stale.
# Builds deploy/Containerfile (on local stand-ins for its base images when
# no registry is reachable), converts a document in the image under
# deploy/seccomp.json and checks serve's /healthz there. Root: it installs
# podman and debootstrap; about 6 minutes on 2 cores.
CONTAINER_DEPS := podman runc conmon netavark aardvark-dns containernetworking-plugins \
	slirp4netns fuse-overlayfs uidmap catatonit iptables debootstrap curl
container-test:
	@.ci/deps $(CONTAINER_DEPS)
	deploy/build-and-test.sh

seccomp-profile:
	cd deploy && $(GO) run ./cmd/seccomp-profile -write

# Regenerates the allowlist tables in SECURITY.md from policy.Strict().
docs:
	$(GO) run ./internal/gendoc -write SECURITY.md

# Regenerates policy's table of syscall names (amd64, arm64) from the
# installed libseccomp, so that policy needs neither cgo nor libseccomp.
syscalls:
	@.ci/deps --check
	$(GO) run ./internal/gensyscalls -o internal/syscalltable/zsyscalls.go

clean:
	rm -rf bin out
