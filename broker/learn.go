package broker

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// Learner records what a broker in learn mode (Config.Learn) lets its
// renderers do beyond their policy's allowlist. Make one with NewLearner,
// give it to the brokers that run the samples (it is safe for concurrent
// use, and one record across them all is the point), and read it with
// Uses once they are closed.
//
// In learn mode every layer is in force except one: a syscall the
// allowlist does not allow is sent to the violation monitor as always,
// which records it and answers the kernel "continue"
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the syscall runs as if allowed, and
// the renderer lives on, so that one run over the samples sees everything
// they need. Continuing a syscall by user notification has a known race:
// the kernel runs it with the arguments in the renderer's memory at that
// moment, not those the monitor saw, so a monitor that judged pointer
// arguments could be fooled. Learn mode judges nothing, it records: the
// race is irrelevant to it, and it is irrelevant to enforcement, which
// never continues a syscall.
//
// Learn mode is not a sandbox. A renderer in it may make any syscall a
// policy could allow, so it must only ever see trusted sample inputs,
// never untrusted ones. Syscalls no policy can allow (the escape surface,
// other architectures' tables, the base allowlist's refused argument
// conditions; see policy.CanAllow) are never continued even here: the
// monitor records them and fails them with EPERM.
type Learner struct {
	mu        sync.Mutex
	uses      map[string]*learnedUse
	other     uint64 // calls past maxLearnedSyscalls distinct names
	withdrawn uint64
}

// NewLearner returns an empty Learner.
func NewLearner() *Learner { return &Learner{uses: map[string]*learnedUse{}} }

// learnedUse is the record of one syscall.
type learnedUse struct {
	count  uint64
	shapes map[string]uint64
	other  uint64
}

// maxLearnedSyscalls bounds the distinct syscall names a Learner keeps:
// a name can be "syscall N" for any number N.
const maxLearnedSyscalls = 1024

func (l *Learner) record(name string, args [6]uint64) {
	shape := policy.ArgShape(args)
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.uses[name]
	if u == nil {
		if len(l.uses) >= maxLearnedSyscalls {
			l.other++
			return
		}
		u = &learnedUse{shapes: map[string]uint64{}}
		l.uses[name] = u
	}
	u.count++
	if _, ok := u.shapes[shape]; ok || len(u.shapes) < policy.MaxShapes {
		u.shapes[shape]++
	} else {
		u.other++
	}
}

func (l *Learner) recordWithdrawn() {
	l.mu.Lock()
	l.withdrawn++
	l.mu.Unlock()
}

// Uses returns every syscall recorded so far, the most frequent first.
func (l *Learner) Uses() []policy.SyscallUse {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]policy.SyscallUse, 0, len(l.uses))
	for name, u := range l.uses {
		su := policy.SyscallUse{Name: name, Count: u.count, OtherShapes: u.other}
		for shape, n := range u.shapes {
			su.Shapes = append(su.Shapes, policy.ShapeCount{Shape: shape, Count: n})
		}
		sortShapes(su.Shapes)
		out = append(out, su)
	}
	policy.SortUses(out)
	return out
}

// Unrecorded reports calls the Learner could not name: those past its
// bound on distinct syscalls, and notifications a signal withdrew before
// the monitor read them (the kernel restarts such a syscall, which then
// notifies again, when the handler has SA_RESTART, as all of Go's have).
func (l *Learner) Unrecorded() (overflow, withdrawn uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.other, l.withdrawn
}

// sortShapes orders shapes by count, most frequent first, then by shape.
func sortShapes(s []policy.ShapeCount) {
	slices.SortFunc(s, func(a, b policy.ShapeCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Shape, b.Shape))
	})
}

// LearnDetail is the detail of the seccomp layer of a renderer in learn
// mode, which is reported not in force.
const LearnDetail = "learning (not enforcing): disallowed syscalls are recorded and let through"

// ErrLearnUnavailable is why a broker refuses learn mode: the policy would
// not send every disallowed syscall to the monitor, so learning would miss
// some, or kill on them, without saying so.
var ErrLearnUnavailable = errors.New("learn mode needs seccomp with the violation monitor, neither allowed degraded")

// checkLearn refuses learn mode for a policy under which it could silently
// learn less than everything.
func checkLearn(p *policy.Policy) error {
	if !p.Seccomp.Enabled || !p.Seccomp.Monitor || p.Degradable(policy.LayerSeccomp) || p.Degradable(policy.LayerSeccompMonitor) {
		return ErrLearnUnavailable
	}
	return nil
}

// learningStatus marks the seccomp layer of a renderer in learn mode as
// not in force, so that no report shows it as a sandbox.
func learningStatus(s policy.Status) policy.Status {
	out := append(policy.Status(nil), s...)
	for i := range out {
		switch out[i].Layer {
		case policy.LayerSeccomp:
			out[i].Active, out[i].Detail = false, LearnDetail
		case policy.LayerSeccompMonitor:
			out[i].Detail = "learning: records every disallowed syscall, never kills"
		}
	}
	return out
}

// learn is the violation monitor of a renderer in learn mode: it records
// every notification and answers it, until every task of the filter is
// gone. lrc is the listener, non-blocking and on the runtime's poller.
func (r *Renderer) learn(lrc syscall.RawConn, lr *Learner) {
	for {
		var (
			notif  *seccomp.ScmpNotifReq
			step   monitorStep
			monErr error
		)
		err := lrc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, perr := unix.Poll(pfd, 0)
			step, monErr = afterPoll(n, pfd[0].Revents, perr)
			if step == stepRead {
				var rerr error
				notif, rerr = seccomp.NotifReceive(seccomp.ScmpFd(fd))
				step, monErr = afterReceive(rerr)
			}
			return step != stepWait
		})
		if err != nil {
			monErr = err
		}
		switch {
		case monErr != nil:
			r.kill(ExitBadMessage, "seccomp listener unusable: "+monErr.Error())
			return
		case step == stepWithdrawn:
			lr.recordWithdrawn()
			continue
		case step == stepHangUp:
			return
		}
		v := violation(notif.Data)
		var args [6]uint64
		copy(args[:], notif.Data.Args)
		lr.record(v.Syscall, args)
		resp := &seccomp.ScmpNotifResp{ID: notif.ID, Flags: seccomp.NotifRespFlagContinue}
		if policy.CanAllow(v.Syscall) != nil {
			resp = &seccomp.ScmpNotifResp{ID: notif.ID, Error: int32(unix.EPERM)}
		}
		var rerr error
		if err := lrc.Control(func(fd uintptr) { rerr = seccomp.NotifRespond(seccomp.ScmpFd(fd), resp) }); err != nil {
			rerr = err
		}
		// ENOENT: the task died or a signal withdrew the syscall
		// meanwhile; nothing waits for the answer.
		if rerr != nil && !errors.Is(rerr, unix.ENOENT) {
			r.kill(ExitBadMessage, fmt.Sprintf("seccomp listener unusable: answer %s: %v", v.Syscall, rerr))
			return
		}
	}
}
