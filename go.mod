module github.com/sandkit/sandkit

go 1.26.8

require (
	github.com/landlock-lsm/go-landlock v0.11.2 // indirect
	github.com/seccomp/libseccomp-golang v0.11.1 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/image v0.48.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
