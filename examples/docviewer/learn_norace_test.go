//go:build !race

package main

// raceEnabled: see learn_race_test.go.
const raceEnabled = false
