package renderer

import (
	"errors"
	"fmt"
	"os"

	seccomp "github.com/seccomp/libseccomp-golang"

	"github.com/sandkit/sandkit/policy"
)

// loadSeccomp installs p's allowlist on every thread (TSYNC). Everything
// else goes to the broker's violation monitor when p asks for it and the
// kernel supports user notification, and kills the process otherwise.
// monitored reports which of the two is in force; listener is the
// notification fd the broker needs, nil without the monitor.
func loadSeccomp(p *policy.Policy) (listener *os.File, monitored bool, err error) {
	deny := seccomp.ActKillProcess
	if p.Seccomp.Monitor && notifySupported() {
		deny = seccomp.ActNotify
	}
	filter, err := buildFilter(p, deny, os.Getpid())
	if err != nil {
		return nil, false, err
	}
	defer filter.Release()
	if err := filter.Load(); err != nil {
		return nil, false, fmt.Errorf("load seccomp filter: %w", err)
	}
	if deny != seccomp.ActNotify {
		return nil, false, nil
	}
	fd, err := filter.GetNotifFd()
	if err != nil {
		return nil, false, fmt.Errorf("seccomp listener: %w", err)
	}
	return os.NewFile(uintptr(fd), "seccomp-listener"), true, nil
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
