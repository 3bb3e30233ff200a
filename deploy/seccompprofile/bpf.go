package seccompprofile

import (
	"fmt"

	moby "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

// Filter compiles a profile in the runtime's JSON format into a libseccomp
// filter for this machine's architecture, for a container without
// capabilities, the way runc does: conditional rules are resolved by
// moby's own code (LoadProfile), syscalls libseccomp does not know are
// skipped, and arguments on the same index make one rule each (an OR),
// others one rule together (an AND). It exists to test the profile by
// running the real program under it; runtimes compile the profile
// themselves.
func Filter(profileJSON []byte) (*libseccomp.ScmpFilter, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	ls, err := moby.LoadProfile(string(profileJSON), spec)
	if err != nil {
		return nil, err
	}
	def, err := action(ls.DefaultAction, ls.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, err
	}
	for _, s := range ls.Syscalls {
		act, err := action(s.Action, s.ErrnoRet)
		if err != nil {
			f.Release()
			return nil, err
		}
		for _, name := range s.Names {
			nr, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue // not a syscall of this architecture
			}
			if err := addRule(f, nr, act, s.Args); err != nil {
				f.Release()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return f, nil
}

func addRule(f *libseccomp.ScmpFilter, nr libseccomp.ScmpSyscall, act libseccomp.ScmpAction, args []specs.LinuxSeccompArg) error {
	if len(args) == 0 {
		return f.AddRule(nr, act)
	}
	conds := make([]libseccomp.ScmpCondition, len(args))
	sameIndex := false
	for i, a := range args {
		c, err := condition(a)
		if err != nil {
			return err
		}
		conds[i] = c
		for _, b := range args[:i] {
			sameIndex = sameIndex || b.Index == a.Index
		}
	}
	if !sameIndex {
		return f.AddRuleConditional(nr, act, conds)
	}
	for _, c := range conds {
		if err := f.AddRuleConditional(nr, act, []libseccomp.ScmpCondition{c}); err != nil {
			return err
		}
	}
	return nil
}

func condition(a specs.LinuxSeccompArg) (libseccomp.ScmpCondition, error) {
	ops := map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
		specs.OpNotEqual:     libseccomp.CompareNotEqual,
		specs.OpLessThan:     libseccomp.CompareLess,
		specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
		specs.OpEqualTo:      libseccomp.CompareEqual,
		specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
		specs.OpGreaterThan:  libseccomp.CompareGreater,
		specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
	}
	op, ok := ops[a.Op]
	if !ok {
		return libseccomp.ScmpCondition{}, fmt.Errorf("operator %q", a.Op)
	}
	if op == libseccomp.CompareMaskedEqual {
		return libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
	}
	return libseccomp.MakeCondition(a.Index, op, a.Value)
}

func action(a specs.LinuxSeccompAction, errno *uint) (libseccomp.ScmpAction, error) {
	switch a {
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActErrno:
		e := uint(1) // EPERM, runc's default
		if errno != nil {
			e = *errno
		}
		return libseccomp.ActErrno.SetReturnCode(int16(e)), nil
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("action %q", a)
}
