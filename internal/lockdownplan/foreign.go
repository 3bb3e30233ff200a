package lockdownplan

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/policy"
)

// ForeignPlan is the lockdown the broker's launcher applies to a foreign
// program (broker.Program): a process that knows nothing of sandkit and
// so cannot lock itself down. The launcher applies it in the child
// between clone and exec, and the plan is computed here, beside the plan
// of a Go renderer's lockdown, so that both get the same seccomp compiler
// and Landlock rights.
type ForeignPlan struct {
	// Seccomp is the program's filter, compiled for pid 1 of its pid
	// namespace; nil without the seccomp layer.
	Seccomp []unix.SockFilter
	// Notify is whether Seccomp's default action is user notification
	// (the violation monitor); otherwise it kills.
	Notify bool
	// The Landlock ruleset's handled rights; zero for a layer the policy
	// does not ask for. Landlock is not applied when all three are zero.
	HandledFS, HandledNet, Scoped uint64
	// The rights granted beneath each kind of mount, within HandledFS:
	// read-only binds, executable binds, tmpfs mounts.
	ReadRights, ExecRights, WriteRights uint64
	// Layers is what is in force in the program once the launcher has
	// exec'd it. Every layer the policy asks for is applied or the spawn
	// fails: a degraded layer is reported inactive only where the kernel
	// lacks it and the policy allows that (AllowDegraded).
	Layers policy.Status
}

// PlanForeign plans the lockdown of a foreign program under p. launcher
// holds the rules the launcher itself needs between installing the filter
// and exec (its exec of the program), added to the program's allowlist
// (p.ForeignSyscallRules).
func PlanForeign(p *policy.Policy, launcher []policy.SyscallRule) (*ForeignPlan, error) {
	plan := &ForeignPlan{}
	var status policy.Status
	record := func(layer policy.Layer, err error, detail string) error {
		switch {
		case err == nil:
			status = append(status, policy.LayerStatus{Layer: layer, Active: true, Detail: detail})
		case p.Degradable(layer):
			status = append(status, policy.LayerStatus{Layer: layer, Active: false, Detail: err.Error()})
		default:
			return &policy.UnavailableError{Layer: layer, Err: err}
		}
		return nil
	}
	ns := p.Namespaces
	for _, n := range []struct {
		on    bool
		layer policy.Layer
	}{
		{ns.User, policy.LayerUserNS}, {ns.Mount, policy.LayerMountNS}, {ns.PID, policy.LayerPIDNS},
		{ns.Net, policy.LayerNetNS}, {ns.IPC, policy.LayerIPCNS}, {ns.UTS, policy.LayerUTSNS},
		{ns.Cgroup, policy.LayerCgroupNS},
	} {
		if n.on {
			// Created by the clone, which fails otherwise.
			_ = record(n.layer, nil, "")
		}
	}
	_ = record(policy.LayerRlimits, nil, "set before exec")
	_ = record(policy.LayerNoNewPrivs, nil, "")
	_ = record(policy.LayerCapabilities, nil, "bounding, ambient, permitted, effective and inheritable sets empty; securebits locked")

	steps, handled, abi, kernel := LandlockPlan(p)
	for _, st := range steps {
		if st.Skip {
			continue
		}
		if err := record(st.Layer, st.Err, LandlockDetail(st.Layer, abi, kernel, handled)); err != nil {
			return nil, err
		}
	}
	plan.HandledFS, plan.HandledNet, plan.Scoped = handled.FS, handled.Net, handled.Scoped
	read := uint64(unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR)
	plan.ReadRights = plan.HandledFS & read
	plan.ExecRights = plan.HandledFS & (read | unix.LANDLOCK_ACCESS_FS_EXECUTE)
	plan.WriteRights = plan.HandledFS & (read | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM | unix.LANDLOCK_ACCESS_FS_REFER | unix.LANDLOCK_ACCESS_FS_TRUNCATE)
	if p.Seccomp.AllowUnixSockets {
		// A socket it binds by path lies in its tmpfs.
		plan.WriteRights |= plan.HandledFS & unix.LANDLOCK_ACCESS_FS_MAKE_SOCK
	}

	if p.Seccomp.Enabled {
		if !ns.PID {
			// The rules that let signals go to the program itself
			// name its pid, which only a pid namespace fixes (1)
			// before the program exists.
			return nil, &policy.UnavailableError{Layer: policy.LayerSeccomp, Err: errors.New("a foreign program's filter needs the pid namespace")}
		}
		deny, notify := seccompfilter.DenyAction(p)
		prog, err := seccompfilter.CompileRules(append(p.ForeignSyscallRules(), launcher...), deny, 1)
		if err != nil {
			return nil, &policy.UnavailableError{Layer: policy.LayerSeccomp, Err: err}
		}
		plan.Seccomp = prog.Insns
		_ = record(policy.LayerSeccomp, nil, fmt.Sprintf("%d BPF instructions", len(plan.Seccomp)))
		if p.Seccomp.Monitor {
			var monErr error
			switch {
			case !notify:
				monErr = errors.New("libseccomp or the kernel lacks user notification")
			case !seccompfilter.WaitKillableSupported():
				monErr = seccompfilter.ErrWaitKillableUnsupported
			}
			if err := record(policy.LayerSeccompMonitor, monErr, "violations reported by the broker"); err != nil {
				return nil, err
			}
			plan.Notify = monErr == nil
			if notify && monErr != nil {
				plan.Seccomp = (&seccompfilter.Program{Insns: plan.Seccomp}).Killing().Insns
			}
		}
	}
	plan.Layers = status
	return plan, nil
}
