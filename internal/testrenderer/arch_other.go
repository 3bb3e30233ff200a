//go:build !amd64

package testrenderer

// foreignSyscall is only implemented for amd64, whose kernel also runs
// i386 and x32 syscalls.
func foreignSyscall(abi string) string { return "foreign ABIs are tested on amd64 only" }
