//go:build !race

package sandboxed

// raceDetector: see race.go.
const raceDetector = false
