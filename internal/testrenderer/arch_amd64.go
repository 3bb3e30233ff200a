package testrenderer

/*
// sandkit_test_int80 makes syscall nr of the i386 table through int $0x80.
static long sandkit_test_int80(long nr) {
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr) : "memory", "r8", "r9", "r10", "r11");
	return ret;
}
*/
import "C"

import (
	"golang.org/x/sys/unix"
)

// foreignSyscall makes getpid through another ABI than the native one:
// "i386" (int 0x80, syscall 20) or "x32" (the native instruction with the
// x32 bit, 0x40000000|39). The sandbox must stop both: their numbers
// would otherwise escape every rule written for amd64's.
func foreignSyscall(abi string) string {
	switch abi {
	case "i386":
		r := int64(C.sandkit_test_int80(20))
		if r < 0 {
			return unix.ErrnoName(unix.Errno(-r))
		}
		return "ok"
	case "x32":
		return raw(0x40000000 | unix.SYS_GETPID)
	}
	return "unknown ABI " + abi
}
