// Package bench compares sandkit with its peers — bubblewrap and a bare
// fork+exec for spawning, a raw SEQPACKET socket and gRPC for calls, a
// stream socket for bulk data, a plain Go process for memory — in one
// process run, so that every ratio comes from numbers measured side by
// side on the same machine under the same load.
//
// It is a module of its own so that gRPC, used only as a point of
// comparison, never enters the framework's go.mod. Everything lives in the
// package's benchmarks (bench_test.go); the test binary re-executes itself
// as every child process it measures, so that all peers run the very same
// binary. run.sh runs these benchmarks with the framework's own and the
// examples', and the report command (./report) turns the output into
// docs/benchmarks.md's generated section.
//
// None of this means anything under the race detector; `make test` does
// not run the benchmarks, and the package's tests stay quick and need no
// bubblewrap.
package bench
