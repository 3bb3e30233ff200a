// Package seccompfilter compiles a policy's syscall allowlist to a
// classic BPF seccomp program (libseccomp), carries the program in a
// renderer's argv, and loads it. The broker compiles once per policy for
// renderers that are pid 1 of their own pid namespace, and for foreign
// programs; a renderer without a pid namespace compiles its own, with its
// pid in the rules that name it. Both sides use this one compiler.
package seccompfilter

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"unsafe"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// CompileAndLoad installs p's allowlist on every thread (TSYNC), for a
// renderer that is not pid 1 of its own pid namespace: the program is
// compiled here, with this process's pid in the rules that need it, and
// loaded like the broker-compiled one (Program.Load), because the
// flags the monitor needs are not all within libseccomp 2.5's reach.
func CompileAndLoad(p *policy.Policy, allowUnmonitored bool) (listener *os.File, unmonitored, err error) {
	prog, err := compile(p, os.Getpid())
	if err != nil {
		return nil, nil, err
	}
	return prog.Load(allowUnmonitored)
}

// DenyAction is the default action of p's filter: user notification to
// the broker's monitor when p asks for it and the kernel and libseccomp
// support it (notify reports which), killing the process otherwise.
func DenyAction(p *policy.Policy) (deny seccomp.ScmpAction, notify bool) {
	if p.Seccomp.Monitor && NotifySupported() {
		return seccomp.ActNotify, true
	}
	return seccomp.ActKillProcess, false
}

// NotifySupported reports whether libseccomp and the kernel both support
// user notification (libseccomp API level 6).
func NotifySupported() bool {
	api, err := seccomp.GetAPI()
	return err == nil && api >= 6
}

// CompileRules compiles rules to classic BPF for a process whose pid is
// self, denying everything else with deny: a foreign program's filter,
// whose rules are not only its policy's (see lockdownplan.PlanForeign).
func CompileRules(rules []policy.SyscallRule, deny seccomp.ScmpAction, self int) (*Program, error) {
	filter, err := newFilter(rules, deny, self)
	if err != nil {
		return nil, err
	}
	defer filter.Release()
	return export(filter)
}

// newFilter is a libseccomp filter allowing rules and denying everything
// else with deny. self is the pid for rules that let signals go only to
// the process itself.
func newFilter(rules []policy.SyscallRule, deny seccomp.ScmpAction, self int) (*seccomp.ScmpFilter, error) {
	filter, err := seccomp.NewFilter(deny)
	if err != nil {
		return nil, fmt.Errorf("new seccomp filter: %w", err)
	}
	err = AddRules(filter, rules, self)
	if err == nil {
		// Syscalls of another architecture's table (i386 through int
		// 0x80 on amd64, and x32's numbers, which libseccomp's amd64
		// filter sends to the same action) bypass every rule written for
		// the native one: they are denied like any other syscall, so
		// that the monitor, when there is one, reports them.
		err = filter.SetBadArchAction(deny)
	}
	if err != nil {
		filter.Release()
		return nil, err
	}
	return filter, nil
}

func AddRules(filter *seccomp.ScmpFilter, rules []policy.SyscallRule, self int) error {
	for _, r := range rules {
		nr, err := seccomp.GetSyscallFromName(r.Name)
		if err != nil {
			return fmt.Errorf("syscall %q: %w", r.Name, err)
		}
		if r.Errno != 0 {
			if err := filter.AddRule(nr, seccomp.ActErrno.SetReturnCode(int16(r.Errno))); err != nil {
				return fmt.Errorf("rule %s: %w", r.Name, err)
			}
			continue
		}
		if len(r.AnyOf) == 0 {
			if err := filter.AddRule(nr, seccomp.ActAllow); err != nil {
				return fmt.Errorf("rule %s: %w", r.Name, err)
			}
			continue
		}
		for _, alt := range r.AnyOf {
			conds := make([]seccomp.ScmpCondition, 0, len(alt))
			for _, c := range alt {
				cond, err := condition(c, self)
				if err != nil {
					return fmt.Errorf("rule %s %v: %w", r.Name, c, err)
				}
				conds = append(conds, cond)
			}
			if err := filter.AddRuleConditional(nr, seccomp.ActAllow, conds); err != nil {
				return fmt.Errorf("rule %s: %w", r.Name, err)
			}
		}
	}
	return nil
}

func condition(c policy.ArgCond, self int) (seccomp.ScmpCondition, error) {
	v := c.Value
	if c.Self {
		v = uint64(self)
	}
	switch c.Op {
	case policy.Equal:
		return seccomp.MakeCondition(c.Arg, seccomp.CompareEqual, v)
	case policy.MaskedEqual:
		return seccomp.MakeCondition(c.Arg, seccomp.CompareMaskedEqual, c.Mask, v)
	}
	return seccomp.ScmpCondition{}, errors.New("unknown comparison")
}

// Program is a policy's allowlist compiled to classic BPF by the
// broker (Precompile), for renderers that are pid 1 of their own pid
// namespace: the one value a rule can depend on that the broker cannot
// know in advance is the renderer's pid.
type Program struct {
	Insns  []unix.SockFilter
	Notify bool // the default action is user notification (the monitor)
}

// maxBPFInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const maxBPFInsns = 4096

// Precompile compiles p's filter for a renderer whose pid is 1. It
// returns nil when p has no seccomp layer or no pid namespace.
func Precompile(p *policy.Policy) (*Program, error) {
	if !p.Seccomp.Enabled || !p.Namespaces.PID {
		return nil, nil
	}
	return compile(p, 1)
}

// compile compiles p's filter to classic BPF for a renderer whose
// pid is self.
func compile(p *policy.Policy, self int) (*Program, error) {
	deny, notify := DenyAction(p)
	prog, err := CompileRules(p.SyscallRules(), deny, self)
	if err != nil {
		return nil, err
	}
	prog.Notify = notify
	return prog, nil
}

// export exports filter as classic BPF.
func export(filter *seccomp.ScmpFilter) (*Program, error) {
	// libseccomp 2.5 exports only to a descriptor.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("seccomp export: %w", err)
	}
	defer r.Close()
	exported := make(chan error, 1)
	go func() {
		err := filter.ExportBPF(w)
		w.Close()
		exported <- err
	}()
	raw, readErr := io.ReadAll(io.LimitReader(r, 8*maxBPFInsns+1))
	if err := <-exported; err != nil {
		return nil, fmt.Errorf("seccomp export: %w", err)
	}
	if readErr != nil {
		return nil, fmt.Errorf("seccomp export: %w", readErr)
	}
	return parseBPF(raw)
}

// parseBPF reads a classic BPF program in the kernel's in-memory layout.
func parseBPF(raw []byte) (*Program, error) {
	if len(raw) == 0 || len(raw)%8 != 0 || len(raw)/8 > maxBPFInsns {
		return nil, fmt.Errorf("seccomp program of %d bytes", len(raw))
	}
	insns := make([]unix.SockFilter, len(raw)/8)
	for i := range insns {
		b := raw[8*i:]
		insns[i] = unix.SockFilter{
			Code: binary.NativeEndian.Uint16(b[0:]),
			Jt:   b[2],
			Jf:   b[3],
			K:    binary.NativeEndian.Uint32(b[4:]),
		}
	}
	return &Program{Insns: insns}, nil
}

// Encode and Decode carry a program in the renderer's argv:
// "n" (monitored) or "k" (kill), then the instructions in base64.
func (p *Program) Encode() string {
	raw := make([]byte, 8*len(p.Insns))
	for i, in := range p.Insns {
		b := raw[8*i:]
		binary.NativeEndian.PutUint16(b[0:], in.Code)
		b[2], b[3] = in.Jt, in.Jf
		binary.NativeEndian.PutUint32(b[4:], in.K)
	}
	mode := "k"
	if p.Notify {
		mode = "n"
	}
	return mode + base64.RawURLEncoding.EncodeToString(raw)
}

func Decode(s string) (*Program, error) {
	if s == "" || (s[0] != 'n' && s[0] != 'k') {
		return nil, errors.New("unknown mode")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[1:])
	if err != nil {
		return nil, err
	}
	p, err := parseBPF(raw)
	if err != nil {
		return nil, err
	}
	p.Notify = s[0] == 'n'
	return p, nil
}

// ErrWaitKillableUnsupported is why the violation monitor cannot be in
// force on a kernel older than Linux 5.19.
var ErrWaitKillableUnsupported = errors.New("the kernel lacks SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19): a signal could withdraw a violation the monitor has read")

// Load installs the program on every thread (TSYNC), as libseccomp's load
// does: no_new_privs is already set (renderer/early.go). With the monitor, the
// kernel returns the listener; TSYNC_ESRCH makes a failed thread sync an
// error (ESRCH) rather than a thread id, which the listener's return value
// would be confused with.
//
// WAIT_KILLABLE_RECV makes a syscall the monitor has received wait for
// its verdict through any signal but SIGKILL: without it, a renderer that
// signals its own blocked thread ends the wait and lives on while the
// monitor is still reporting. (Before the monitor has received it, a
// signal can still withdraw the notification; see the filter's
// rt_sigaction rule and the broker's monitor.) On a kernel without the
// flag the monitor is not in force: if allowUnmonitored, the same program
// is loaded with every notification turned into a kill and unmonitored
// says why; otherwise load fails with ErrWaitKillableUnsupported.
func (p *Program) Load(allowUnmonitored bool) (listener *os.File, unmonitored, err error) {
	switch {
	case !p.Notify:
		return nil, nil, p.install(unix.SECCOMP_FILTER_FLAG_TSYNC)
	case !WaitKillableSupported() && !allowUnmonitored:
		return nil, nil, fmt.Errorf("load seccomp filter: %w", ErrWaitKillableUnsupported)
	case !WaitKillableSupported():
		if err := p.Killing().install(unix.SECCOMP_FILTER_FLAG_TSYNC); err != nil {
			return nil, nil, err
		}
		return nil, ErrWaitKillableUnsupported, nil
	}
	r, errno := p.syscall(unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH |
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	if errno != 0 {
		return nil, nil, fmt.Errorf("load seccomp filter: %w", errno)
	}
	unix.CloseOnExec(int(r))
	return os.NewFile(r, "seccomp-listener"), nil, nil
}

// WaitKillableSupported reports whether the kernel knows
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV. Asked to load no program at all,
// seccomp(2) checks the flags first (EINVAL for one it does not know) and
// only then fails to read the program (EFAULT): nothing is loaded.
func WaitKillableSupported() bool {
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER|unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, 0)
	return errno == unix.EFAULT
}

// install loads a program without a listener.
func (p *Program) install(flags uintptr) error {
	r, errno := p.syscall(flags)
	if errno != 0 {
		return fmt.Errorf("load seccomp filter: %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("load seccomp filter: thread %d could not be synchronized", r)
	}
	return nil
}

func (p *Program) syscall(flags uintptr) (uintptr, unix.Errno) {
	prog := unix.SockFprog{Len: uint16(len(p.Insns)), Filter: &p.Insns[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	return r, errno
}

// Killing returns a copy of p in which every return of user notification
// kills the process instead: the filter without its monitor.
func (p *Program) Killing() *Program {
	k := &Program{Insns: slices.Clone(p.Insns)}
	for i, in := range k.Insns {
		if in.Code == unix.BPF_RET|unix.BPF_K && in.K&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_USER_NOTIF {
			k.Insns[i].K = unix.SECCOMP_RET_KILL_PROCESS
		}
	}
	return k
}
