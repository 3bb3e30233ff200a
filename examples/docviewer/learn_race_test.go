//go:build race

package main

// raceEnabled: this test binary is built with -race, under which Go code
// runs several times slower (the PDF writer's page encoding above all).
const raceEnabled = true
