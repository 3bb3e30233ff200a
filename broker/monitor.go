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
	var (
		notif  *seccomp.ScmpNotifReq
		hup    bool
		monErr error
	)
	err = lrc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, perr := unix.Poll(pfd, 0)
		switch step, serr := afterPoll(n, pfd[0].Revents, perr); step {
		case stepWait:
			return false // on the runtime's poller
		case stepBroken:
			monErr = serr
		case stepHangUp:
			hup = true
		case stepRead:
			var rerr error
			notif, rerr = seccomp.NotifReceive(seccomp.ScmpFd(fd))
			switch step, serr := afterReceive(rerr); step {
			case stepWait:
				notif = nil
				r.b.log.Debug("violation monitor: notification withdrawn before it was read", "pid", r.pid)
				return false
			case stepBroken:
				monErr = serr
			}
		}
		return true
	})
	if err == nil {
		err = monErr
	}
	if err != nil {
		// Fail closed: a renderer whose violations nobody watches
		// must not run.
		r.kill(ExitBadMessage, "seccomp listener unusable: "+err.Error())
		return
	}
	if hup || notif == nil {
		r.b.log.Debug("violation monitor: every task of the filter is gone", "pid", r.pid)
		return
	}
	name, nerr := seccomp.ScmpSyscall(notif.Data.Syscall).GetNameByArch(notif.Data.Arch)
	if nerr != nil {
		name = "syscall " + strconv.Itoa(int(notif.Data.Syscall))
	}
	r.killWith(&ExitError{
		Reason:  ExitViolation,
		Syscall: name,
		Args:    append([]uint64(nil), notif.Data.Args[:]...),
		Detail:  "disallowed by the seccomp policy",
	})
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
	stepWait   monitorStep = iota // nothing to read: wait for the listener
	stepRead                      // a notification is pending: read it
	stepReport                    // a violation was read: report it, kill
	stepHangUp                    // every task of the filter is gone
	stepBroken                    // the listener failed: kill, fail closed
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
// ENOENT means the notification went away between poll and receive: its
// task was interrupted by a signal (it retries the syscall, which notifies
// again) or died (the hang-up follows). Either way the monitor keeps
// watching. Giving up there closed the listener, and the retried syscall,
// with nobody listening, failed with ENOSYS instead of being caught.
func afterReceive(err error) (monitorStep, error) {
	switch {
	case err == nil:
		return stepReport, nil
	case errors.Is(err, unix.ENOENT):
		return stepWait, nil
	}
	return stepBroken, err
}
