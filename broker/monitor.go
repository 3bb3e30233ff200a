package broker

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// monitor is the violation monitor of one renderer. The renderer's
// seccomp filter sends every disallowed syscall here (user notification)
// and the calling thread waits; the monitor records the syscall and its
// arguments and kills the renderer, so the attempt never completes and
// the exit says exactly what was tried.
//
// A legitimate renderer never causes a notification, so any notification
// is a violation, even one that a signal withdrew before the monitor could
// read it (see afterReceive).
//
// The listener is waited on with the runtime's poller: no OS thread is
// parked per renderer.
func (r *Renderer) monitor(listener *os.File) {
	defer listener.Close()
	rc, err := listener.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { err = unix.SetNonblock(int(fd), true) })
	}
	if err != nil {
		r.kill(ExitBadMessage, "seccomp listener unusable: "+err.Error())
		return
	}
	// Re-wrap so os registers the now non-blocking fd with the poller.
	dup, err := dupFD(listener)
	if err != nil {
		r.kill(ExitBadMessage, "seccomp listener unusable: "+err.Error())
		return
	}
	l := os.NewFile(uintptr(dup), "seccomp-listener")
	defer l.Close()
	lrc, err := l.SyscallConn()
	if err != nil {
		r.kill(ExitBadMessage, "seccomp listener unusable: "+err.Error())
		return
	}
	if lr := r.b.cfg.Learn; lr != nil {
		r.learn(lrc, lr)
		return
	}
	var (
		notif  *seccomp.ScmpNotifReq
		step   monitorStep
		monErr error
	)
	err = lrc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, perr := unix.Poll(pfd, 0)
		step, monErr = afterPoll(n, pfd[0].Revents, perr)
		if step == stepRead {
			// The poll saw a pending notification and only this
			// goroutine receives: the receive does not block.
			var rerr error
			notif, rerr = seccomp.NotifReceive(seccomp.ScmpFd(fd))
			step, monErr = afterReceive(rerr)
		}
		return step != stepWait // stepWait: on the runtime's poller
	})
	if err != nil {
		monErr = err
	}
	switch {
	case monErr != nil:
		// Fail closed: a renderer whose violations nobody watches
		// must not run.
		r.kill(ExitBadMessage, "seccomp listener unusable: "+monErr.Error())
	case step == stepWithdrawn:
		r.killWith(&ExitError{Reason: ExitViolation, Detail: withdrawnDetail})
	case step == stepReport:
		r.killWith(violation(notif.Data))
	default: // stepHangUp
		r.b.log.Debug("violation monitor: every task of the filter is gone", "pid", r.pid)
	}
}

// withdrawnDetail explains a violation whose notification a signal
// withdrew before the monitor could read it: the syscall is unknown.
const withdrawnDetail = "disallowed syscall withdrawn by a signal before the monitor could read it (syscall unknown)"

// x32SyscallBit marks the syscall numbers of the x32 ABI on amd64. The
// kernel reports them with the native architecture.
const x32SyscallBit = 0x40000000

// violation describes the disallowed syscall of a notification. A syscall
// of another architecture than the broker's (i386 through int 0x80, x32
// numbers on amd64) is an architecture violation, named with its
// architecture so that it never reads like the native syscall of the
// same number.
func violation(d seccomp.ScmpNotifData) *ExitError {
	e := &ExitError{
		Reason: ExitViolation,
		Args:   append([]uint64(nil), d.Args[:]...),
		Detail: "disallowed by the seccomp policy",
	}
	arch, nr := d.Arch, d.Syscall
	native, err := seccomp.GetNativeArch()
	foreign := err != nil || arch != native
	if !foreign && native == seccomp.ArchAMD64 && nr&x32SyscallBit != 0 {
		arch, foreign = seccomp.ArchX32, true
	}
	name, nerr := nr.GetNameByArch(arch)
	if !foreign {
		e.Syscall = name
		if nerr != nil {
			e.Syscall = "syscall " + strconv.Itoa(int(nr))
		}
		return e
	}
	if nerr != nil {
		name = "unknown"
	}
	e.Syscall = archName(arch) + ":" + name
	e.Detail = fmt.Sprintf("architecture violation: %s syscall %#x (%s)", archName(arch), uint32(nr), name)
	return e
}

// archName names an architecture as its kernel ABI is usually called.
func archName(a seccomp.ScmpArch) string {
	switch a {
	case seccomp.ArchX86:
		return "i386"
	case seccomp.ArchInvalid:
		return "unknown architecture"
	}
	return a.String()
}

// dupFD duplicates f's descriptor (close-on-exec) through RawConn.Control,
// which holds f open meanwhile, so a concurrent Close cannot hand the
// number to another file under us.
func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) { dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return dup, dupErr
}

// monitorStep is what the violation monitor does next.
type monitorStep int

const (
	stepWait      monitorStep = iota // nothing to read: wait for the listener
	stepRead                         // a notification is pending: read it
	stepReport                       // a violation was read: report it, kill
	stepWithdrawn                    // a notification was withdrawn: report it, kill
	stepHangUp                       // every task of the filter is gone
	stepBroken                       // the listener failed: kill, fail closed
)

// afterPoll decides from a zero-timeout poll of the listener.
func afterPoll(n int, revents int16, err error) (monitorStep, error) {
	switch {
	case errors.Is(err, unix.EINTR) || (err == nil && n == 0):
		return stepWait, nil
	case err != nil:
		return stepBroken, err
	case revents&unix.POLLIN != 0:
		return stepRead, nil
	case revents == unix.POLLHUP:
		return stepHangUp, nil
	}
	return stepBroken, fmt.Errorf("unexpected poll events %#x", revents)
}

// afterReceive decides from SECCOMP_IOCTL_NOTIF_RECV's error.
//
// ENOENT means a notification was there (the listener polled readable,
// the kernel's count of notifications was up) and went away before the
// monitor could read it: a signal interrupted its task, or the task died.
// A signal handler without SA_RESTART then returns EINTR to the renderer,
// which lives on having tried a disallowed syscall; the kernel retries
// the syscall only with SA_RESTART. The renderer's filter (with
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) makes the wait killable-only
// once the notification is received, not before. A legitimate renderer
// never causes a notification, so this is a violation like a read one,
// with the syscall unknown: report it and kill.
func afterReceive(err error) (monitorStep, error) {
	switch {
	case err == nil:
		return stepReport, nil
	case errors.Is(err, unix.ENOENT):
		return stepWithdrawn, nil
	}
	return stepBroken, err
}
