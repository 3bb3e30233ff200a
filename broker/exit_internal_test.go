package broker

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestLogTailExhausted covers the runtime's fatal lines that name a
// limit, as a Go 1.26 renderer writes them, and lines that must not.
func TestLogTailExhausted(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  ExitReason
	}{
		{"heap", []string{"fatal error: runtime: out of memory", "", "runtime stack:"}, ExitMemoryLimit},
		{"runtime metadata", []string{"fatal error: runtime: cannot allocate memory", "runtime stack:"}, ExitMemoryLimit},
		{"thread stack", []string{"runtime/cgo: pthread_create failed: Resource temporarily unavailable", "SIGABRT: abort"}, ExitMemoryLimit},
		{"thread limit", []string{"runtime: program exceeds 62-thread limit", "fatal error: thread exhaustion"}, ExitThreadLimit},
		{"first fatal line wins", []string{"fatal error: thread exhaustion", "fatal error: runtime: out of memory"}, ExitThreadLimit},
		{"other pthread_create error", []string{"runtime/cgo: pthread_create failed: Invalid argument"}, ""},
		{"panic", []string{"panic: runtime error: invalid memory address or nil pointer dereference"}, ""},
		{"collector span queue", []string{"SIGSEGV: segmentation violation", "PC=0x435edd m=4 sigcode=1 addr=0x0", "", "goroutine 0 gp=0x28a4e6c9d860 m=4 mp=0x28a4e6ccb808 [idle]:", "runtime.(*spanQueue).tryDrain(0x7f3800000400?, 0x43e665?, 0xbadba8?)"}, ExitMemoryLimit},
		{"span queue fault elsewhere than address 0", []string{"SIGSEGV: segmentation violation", "PC=0x435edd m=4 sigcode=1 addr=0x18", "goroutine 0 gp=0x1 m=4 mp=0x2 [idle]:", "runtime.(*spanQueue).tryDrain(0x0?)"}, ""},
		{"segfault in the program", []string{"SIGSEGV: segmentation violation", "PC=0x6f1e2a m=0 sigcode=1 addr=0x0", "goroutine 7 gp=0x1 m=0 mp=0x2 [running]:", "main.parse(0x0?)"}, ""},
		{"segfault cut short", []string{"SIGSEGV: segmentation violation", "PC=0x435edd m=4 sigcode=1 addr=0x0"}, ""},
		{"not at line start", []string{"log: fatal error: runtime: out of memory"}, ""},
		{"nothing", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l logTail
			for _, line := range tt.lines {
				l.add(line)
			}
			assert.Equal(t, tt.want, l.exhausted())
		})
	}
}

// TestLogTailLastLine checks that a crash is explained by the runtime's
// first line about it, not by the end of its register dump.
func TestLogTailLastLine(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"signal", []string{"starting", "SIGSEGV: segmentation violation", "PC=0x1 m=0 sigcode=1 addr=0x0", "rip    0x1", "gs     0x0"}, "SIGSEGV: segmentation violation"},
		{"abort after a failed thread", []string{"runtime/cgo: pthread_create failed: Resource temporarily unavailable", "SIGABRT: abort"}, "runtime/cgo: pthread_create failed: Resource temporarily unavailable"},
		{"panic", []string{"panic: boom", "", "goroutine 1 [running]:"}, "panic: boom"},
		{"no fatal line", []string{"one", "two", "  "}, "two"},
		{"not a signal name", []string{"SIGNAL lost: retrying", "Sigh: no"}, "Sigh: no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l logTail
			for _, line := range tt.lines {
				l.add(line)
			}
			assert.Equal(t, tt.want, l.lastLine())
		})
	}
}
