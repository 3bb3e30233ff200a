//go:build race

package soak_test

// raceEnabled: the race detector reserves terabytes of shadow address
// space, so no memory rlimit can apply to a renderer built with it.
const raceEnabled = true
