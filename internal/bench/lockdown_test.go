package bench_test

// BenchmarkLockdownSteps splits a cold spawn into its parts by replaying,
// in a child started exactly as the broker starts a renderer (every
// namespace of policy.Strict, the same uid/gid maps), the syscalls of each
// step of renderer's lockdown (renderer/lockdown.go, seccomp.go) with a
// clock around each. It is a measurement copy, not the framework's code:
// when the renderer's steps change, this must follow to stay meaningful.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/psx"

	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
)

// monotonic is CLOCK_MONOTONIC in ns, comparable across processes (no
// time namespace is involved), unlike time.Now's process-relative reading.
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// lockdownSteps is the child: it times each step and sends "step=ns ..."
// back as one datagram on fd 3. args[0] is "full" (every step) or "exec"
// (report the time main was reached, nothing else).
func lockdownSteps(args []string) error {
	atMain := monotonic()
	var out []string
	mark := func(name string, since int64) int64 {
		now := monotonic()
		out = append(out, fmt.Sprintf("%s=%d", name, now-since))
		return now
	}
	out = append(out, fmt.Sprintf("main-at=%d", atMain))
	send := func() error {
		return unix.Sendmsg(3, []byte(strings.Join(out, " ")), nil, nil, 0)
	}
	if len(args) == 0 || args[0] != "full" {
		return send()
	}
	runtime.GOMAXPROCS(1)
	t := monotonic()
	if err := replaySanitize(); err != nil {
		return err
	}
	t = mark("sanitize-stdio", t)
	mine, theirs, err := ipc.SocketPair() // a stand-in for the broker socket
	if err != nil {
		return err
	}
	defer theirs.Close()
	c, err := ipc.NewConn(mine)
	if err != nil {
		return err
	}
	defer c.Close()
	t = mark("ipc-newconn", t)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("rprivate: %w", err)
	}
	t = mark("mount-rprivate", t)
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	base := "/tmp"
	if err := unix.Mount("sandkit", base, "tmpfs", flags, "size=64k,nr_inodes=256,mode=0755"); err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	t = mark("mount-tmpfs", t)
	if err := os.Mkdir(filepath.Join(base, "proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", filepath.Join(base, "proc"), "proc", flags, ""); err != nil {
		return fmt.Errorf("proc: %w", err)
	}
	t = mark("mount-proc", t)
	if err := unix.Chdir(base); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	t = mark("pivot-root", t)
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	t = mark("detach-old-root", t)
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("remount ro: %w", err)
	}
	t = mark("remount-ro", t)
	p := policy.Strict()
	if err := unix.Sethostname([]byte("sandkit")); err != nil {
		return err
	}
	for _, l := range []struct {
		r int
		v uint64
	}{{unix.RLIMIT_CORE, 0}, {unix.RLIMIT_FSIZE, 0}, {unix.RLIMIT_MEMLOCK, 0}, {unix.RLIMIT_DATA, p.Limits.Memory},
		{unix.RLIMIT_NOFILE, p.Limits.OpenFiles}, {unix.RLIMIT_NPROC, p.Limits.Threads}, {unix.RLIMIT_CPU, p.Limits.CPUSeconds()}, {unix.RLIMIT_STACK, p.Limits.Stack}} {
		if err := unix.Setrlimit(l.r, &unix.Rlimit{Cur: l.v, Max: l.v}); err != nil {
			return fmt.Errorf("rlimit %d: %w", l.r, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return err
	}
	t = mark("hostname-rlimits-dumpable", t)
	// The renderer sets no_new_privs in an ELF constructor before the
	// runtime starts (renderer/early.go); this child cannot, so it pays
	// for one psx broadcast here: the cost the constructor saves.
	if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("no_new_privs: %w", e)
	}
	t = mark("nnp-psx", t)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, e := psx.Syscall3(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	t = mark("capset-psx", t)
	abi, err := llsys.LandlockGetABIVersion()
	if err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	configs := []landlock.Config{landlock.V1, landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5, landlock.V6, landlock.V7}
	full := configs[min(abi, len(configs)-1)]
	if err := full.Restrict(); err != nil {
		return fmt.Errorf("landlock: %w", err)
	}
	t = mark("landlock", t)
	filter, err := seccomp.NewFilter(seccomp.ActNotify)
	if err != nil {
		return err
	}
	if err := seccompfilter.AddRules(filter, p.SyscallRules(), os.Getpid()); err != nil {
		return err
	}
	if err := filter.SetBadArchAction(seccomp.ActKillProcess); err != nil {
		return err
	}
	t = mark("seccomp-build", t)
	if err := filter.Load(); err != nil {
		return fmt.Errorf("seccomp load: %w", err)
	}
	if _, err := filter.GetNotifFd(); err != nil {
		return err
	}
	t = mark("seccomp-load", t)
	filter.Release()
	mark("seccomp-release", t)
	return send()
}

func replaySanitize() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		_, _ = os.Readlink("/proc/self/fd/" + e.Name())
	}
	for fd := 0; fd <= 2; fd++ {
		_, _ = unix.IoctlGetTermios(fd, unix.TCGETS)
	}
	return nil
}

// BenchmarkLockdownSteps reports the median of each step, in µs:
//
//   - exec-to-main: from just before fork to the child's TestMain (clone,
//     exec, the dynamic loader, runtime start, package init), "plain" with
//     no namespaces, "namespaces" with policy.Strict's;
//   - the lockdown steps, in the renderer's order (namespaces only).
//
// What is not here is the broker's side: the ready and bind calls and the
// first Ping, about three ipc round trips (BenchmarkRoundTrip64/ipc).
func BenchmarkLockdownSteps(b *testing.B) {
	exe := executable(b)
	steps := func(b *testing.B, attr *syscall.SysProcAttr, mode string) {
		vals := map[string][]float64{}
		var order []string
		buf := make([]byte, 4096)
		for b.Loop() {
			fd, theirs := seqpacketPair(b)
			cmd := exec.Command(exe, modeFlag+"lockdown-steps", mode)
			cmd.ExtraFiles = []*os.File{theirs}
			cmd.Stderr = os.Stderr
			cmd.SysProcAttr = attr
			start := monotonic()
			err := cmd.Start()
			theirs.Close()
			if err != nil {
				b.Skipf("cannot start the child this way here: %v", err)
			}
			n, err := unix.Read(fd, buf)
			if err != nil || n == 0 {
				b.Fatalf("child report: %d bytes, %v", n, err)
			}
			unix.Close(fd)
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			var total float64
			for _, kv := range strings.Fields(string(buf[:n])) {
				k, v, _ := strings.Cut(kv, "=")
				ns, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatal(kv)
				}
				if k == "main-at" {
					k, ns = "exec-to-main", ns-start
				} else {
					total += float64(ns)
				}
				if _, seen := vals[k]; !seen {
					order = append(order, k)
				}
				vals[k] = append(vals[k], float64(ns)/1e3)
			}
			if mode == "full" {
				if _, seen := vals["lockdown-total"]; !seen {
					order = append(order, "lockdown-total")
				}
				vals["lockdown-total"] = append(vals["lockdown-total"], total/1e3)
			}
		}
		for _, k := range order {
			xs := vals[k]
			sort.Float64s(xs)
			b.ReportMetric(xs[len(xs)/2], k+"-us")
		}
	}
	b.Run("plain", func(b *testing.B) { steps(b, nil, "exec") })
	nsAttr := func() *syscall.SysProcAttr {
		return &syscall.SysProcAttr{
			Cloneflags:                 unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP,
			Pdeathsig:                  syscall.SIGKILL,
			Setsid:                     true,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
			GidMappingsEnableSetgroups: false,
		}
	}
	b.Run("namespaces-exec", func(b *testing.B) { steps(b, nsAttr(), "exec") })
	b.Run("namespaces-full", func(b *testing.B) { steps(b, nsAttr(), "full") })
}
