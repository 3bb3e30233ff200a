package main

import (
	"bytes"
	"os"
	"runtime"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/syscalltable"
)

// TestTableMatchesLibseccomp fails when the committed table is not what
// the installed libseccomp generates: policy would then accept a name the
// renderer's filter cannot be compiled with, or refuse one it can.
func TestTableMatchesLibseccomp(t *testing.T) {
	want, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../syscalltable/zsyscalls.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("internal/syscalltable/zsyscalls.go is stale: run make syscalls")
	}
}

// TestTableAgreesWithKernelHeaders checks the table's lookups against
// golang.org/x/sys/unix (the kernel's own numbers) and libseccomp for the
// native architecture, so a generator that shifted or mixed up the
// architectures fails here even if its output was committed.
func TestTableAgreesWithKernelHeaders(t *testing.T) {
	native := map[string]int{
		"read": unix.SYS_READ, "write": unix.SYS_WRITE, "openat": unix.SYS_OPENAT, "close": unix.SYS_CLOSE,
		"clone": unix.SYS_CLONE, "seccomp": unix.SYS_SECCOMP, "pidfd_open": unix.SYS_PIDFD_OPEN,
		"landlock_restrict_self": unix.SYS_LANDLOCK_RESTRICT_SELF, "exit_group": unix.SYS_EXIT_GROUP,
	}
	for name, want := range native {
		got, ok := syscalltable.Number(runtime.GOARCH, name)
		if !ok || got != want {
			t.Errorf("Number(%s, %q) = %d, %v; the kernel's is %d", runtime.GOARCH, name, got, ok, want)
		}
		if nr, err := seccomp.GetSyscallFromName(name); err != nil || int(nr) != got {
			t.Errorf("libseccomp resolves %q to %d (%v), the table to %d", name, nr, err, got)
		}
	}
	for _, tc := range []struct {
		arch, name string
		nr         int
		ok         bool
	}{
		{"amd64", "open", 2, true},
		{"arm64", "openat", 56, true},
		{"arm64", "open", 0, false}, // arm64 has only openat
		{"amd64", "socketcall", 0, false},
		{"arm64", "socketcall", 0, false},
		{"riscv64", "read", 0, false},
		{"amd64", "no_such_syscall", 0, false},
	} {
		nr, ok := syscalltable.Number(tc.arch, tc.name)
		if nr != tc.nr || ok != tc.ok {
			t.Errorf("Number(%s, %q) = %d, %v; want %d, %v", tc.arch, tc.name, nr, ok, tc.nr, tc.ok)
		}
	}
	if !syscalltable.Known("open") || syscalltable.Known("socketcall") || syscalltable.Known("") {
		t.Error("Known: open is an amd64 syscall; socketcall is i386's only; the empty name is none")
	}
}
