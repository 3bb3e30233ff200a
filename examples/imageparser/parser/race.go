//go:build race

package parser

// raceDetector: this binary is built with -race. The race detector
// reserves terabytes of shadow address space, so a renderer built with it
// cannot run under any memory rlimit; Policy drops Limits.Memory then.
// Race builds are for tests only.
const raceDetector = true
