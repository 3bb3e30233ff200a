// Package fuzz holds sandkit's fuzz targets for the surface a compromised
// renderer reaches: everything the broker receives from it. The targets
// drive the real code — a real ipc.Conn over a real socketpair, a real
// broker spawning real locked-down renderers — because the bugs that matter
// live in the interplay of parsing, state and descriptor ownership, not in
// one pure function.
//
// The package has no non-test code besides this comment; see
// docs/fuzzing.md for the targets, their invariants and how to run them
// (fuzz/run.sh).
package fuzz
