module github.com/sandkit/sandkit/deploy

go 1.26.8

require github.com/sandkit/sandkit v0.0.0-00010101000000-000000000000

require (
	github.com/landlock-lsm/go-landlock v0.11.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	kernel.org/pub/linux/libs/security/libcap/psx v1.2.78 // indirect
)

require (
	github.com/moby/profiles/seccomp v0.3.0
	github.com/opencontainers/runtime-spec v1.2.1
	github.com/sandkit/sandkit/examples/docviewer v0.0.0-00010101000000-000000000000
	github.com/seccomp/libseccomp-golang v0.11.1 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/sandkit/sandkit => ..

replace github.com/sandkit/sandkit/examples/docviewer => ../examples/docviewer
