// Package syscalltable names the system calls of the architectures
// sandkit supports, so that package policy can check a policy's syscall
// names without cgo or libseccomp. The table is generated from libseccomp
// (internal/gensyscalls, `make syscalls`), the library that compiles the
// renderer's filter: a name the table knows is one the filter can be
// built with, and a test fails when the two disagree.
package syscalltable

// Arches returns the architectures of the table, in Go's names.
func Arches() []string { return []string{"amd64", "arm64"} }

// Number returns the number of the syscall called name on arch (a Go
// architecture name), and false if arch has no such syscall or is not in
// the table.
func Number(arch, name string) (int, bool) {
	var nr int
	switch arch {
	case "amd64":
		nr = amd64(name)
	case "arm64":
		nr = arm64(name)
	default:
		return 0, false
	}
	if nr < 0 {
		return 0, false
	}
	return nr, true
}

// Known reports whether name is a syscall of any architecture of the
// table: a policy written on one stays valid on the other, as it did
// when libseccomp checked the names (a rule for a syscall the running
// architecture lacks, such as open on arm64, matches nothing).
func Known(name string) bool {
	for _, arch := range Arches() {
		if _, ok := Number(arch, name); ok {
			return true
		}
	}
	return false
}
