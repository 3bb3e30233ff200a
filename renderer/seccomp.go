package renderer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// loadSeccomp installs p's allowlist on every thread (TSYNC). Everything
// else goes to the broker's violation monitor when p asks for it and the
// kernel supports user notification, and kills the process otherwise.
// monitored reports which of the two is in force; listener is the
// notification fd the broker needs, nil without the monitor.
func loadSeccomp(p *policy.Policy) (listener *os.File, monitored bool, err error) {
	deny, notify := denyAction(p)
	filter, err := buildFilter(p, deny, os.Getpid())
	if err != nil {
		return nil, false, err
	}
	defer filter.Release()
	if err := filter.Load(); err != nil {
		return nil, false, fmt.Errorf("load seccomp filter: %w", err)
	}
	if !notify {
		return nil, false, nil
	}
	fd, err := filter.GetNotifFd()
	if err != nil {
		return nil, false, fmt.Errorf("seccomp listener: %w", err)
	}
	return os.NewFile(uintptr(fd), "seccomp-listener"), true, nil
}

// denyAction is the default action of p's filter: user notification to
// the broker's monitor when p asks for it and the kernel and libseccomp
// support it (notify reports which), killing the process otherwise.
func denyAction(p *policy.Policy) (deny seccomp.ScmpAction, notify bool) {
	if p.Seccomp.Monitor && notifySupported() {
		return seccomp.ActNotify, true
	}
	return seccomp.ActKillProcess, false
}

// notifySupported reports whether libseccomp and the kernel both support
// user notification (libseccomp API level 6).
func notifySupported() bool {
	api, err := seccomp.GetAPI()
	return err == nil && api >= 6
}

// buildFilter translates p's rules into a libseccomp filter whose default
// action is deny. self is the renderer's pid for rules that let signals go
// only to the renderer itself.
func buildFilter(p *policy.Policy, deny seccomp.ScmpAction, self int) (*seccomp.ScmpFilter, error) {
	filter, err := seccomp.NewFilter(deny)
	if err != nil {
		return nil, fmt.Errorf("new seccomp filter: %w", err)
	}
	err = addRules(filter, p.SyscallRules(), self)
	if err == nil {
		// Syscalls of another architecture's table (i386 through int
		// 0x80 on amd64) bypass every rule written for the native one.
		err = filter.SetBadArchAction(seccomp.ActKillProcess)
	}
	if err != nil {
		filter.Release()
		return nil, err
	}
	return filter, nil
}

func addRules(filter *seccomp.ScmpFilter, rules []policy.SyscallRule, self int) error {
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

// seccompProgram is a policy's allowlist compiled to classic BPF by the
// broker (compileSeccomp), for renderers that are pid 1 of their own pid
// namespace: the one value a rule can depend on that the broker cannot
// know in advance is the renderer's pid.
type seccompProgram struct {
	insns  []unix.SockFilter
	notify bool // the default action is user notification (the monitor)
}

// maxBPFInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const maxBPFInsns = 4096

// compileSeccomp compiles p's filter as loadSeccomp would build it in a
// renderer whose pid is 1. It returns nil when p has no seccomp layer or
// no pid namespace.
func compileSeccomp(p *policy.Policy) (*seccompProgram, error) {
	if !p.Seccomp.Enabled || !p.Namespaces.PID {
		return nil, nil
	}
	deny, notify := denyAction(p)
	filter, err := buildFilter(p, deny, 1)
	if err != nil {
		return nil, err
	}
	defer filter.Release()
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
	prog, err := parseBPF(raw)
	if err != nil {
		return nil, err
	}
	prog.notify = notify
	return prog, nil
}

// parseBPF reads a classic BPF program in the kernel's in-memory layout.
func parseBPF(raw []byte) (*seccompProgram, error) {
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
	return &seccompProgram{insns: insns}, nil
}

// encode and decodeSeccompProgram carry a program in the renderer's argv:
// "n" (monitored) or "k" (kill), then the instructions in base64.
func (p *seccompProgram) encode() string {
	raw := make([]byte, 8*len(p.insns))
	for i, in := range p.insns {
		b := raw[8*i:]
		binary.NativeEndian.PutUint16(b[0:], in.Code)
		b[2], b[3] = in.Jt, in.Jf
		binary.NativeEndian.PutUint32(b[4:], in.K)
	}
	mode := "k"
	if p.notify {
		mode = "n"
	}
	return mode + base64.RawURLEncoding.EncodeToString(raw)
}

func decodeSeccompProgram(s string) (*seccompProgram, error) {
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
	p.notify = s[0] == 'n'
	return p, nil
}

// load installs the program on every thread (TSYNC), as libseccomp's load
// does: no_new_privs is already set (early.go). With the monitor, the
// kernel returns the listener; TSYNC_ESRCH makes a failed thread sync an
// error (ESRCH) rather than a thread id, which the listener's return value
// would be confused with.
func (p *seccompProgram) load() (listener *os.File, monitored bool, err error) {
	prog := unix.SockFprog{Len: uint16(len(p.insns)), Filter: &p.insns[0]}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_TSYNC)
	if p.notify {
		flags |= unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
	}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return nil, false, fmt.Errorf("load seccomp filter: %w", errno)
	}
	if !p.notify {
		if r != 0 {
			return nil, false, fmt.Errorf("load seccomp filter: thread %d could not be synchronized", r)
		}
		return nil, false, nil
	}
	unix.CloseOnExec(int(r))
	return os.NewFile(r, "seccomp-listener"), true, nil
}
