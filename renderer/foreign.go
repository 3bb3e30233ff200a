package renderer

import (
	"errors"
	"fmt"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// ForeignPlan is the lockdown the broker's launcher applies to a foreign
// program (broker.Program): a process that knows nothing of sandkit and
// so cannot lock itself down. The launcher applies it in the child
// between clone and exec, and the plan is computed here, by the code that
// plans a Go renderer's lockdown, so that both get the same seccomp
// compiler and Landlock rights.
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

	steps, cfg, abi, kernel := landlockPlan(p)
	for _, st := range steps {
		if st.skip {
			continue
		}
		if err := record(st.layer, st.err, landlockDetail(st.layer, abi, kernel, cfg)); err != nil {
			return nil, err
		}
	}
	plan.HandledFS, plan.HandledNet, plan.Scoped = uint64(cfg.HandledAccessFS), uint64(cfg.HandledAccessNet), uint64(cfg.Scoped)
	read := uint64(llsys.AccessFSReadFile | llsys.AccessFSReadDir)
	plan.ReadRights = plan.HandledFS & read
	plan.ExecRights = plan.HandledFS & (read | llsys.AccessFSExecute)
	plan.WriteRights = plan.HandledFS & (read | llsys.AccessFSWriteFile | llsys.AccessFSRemoveDir | llsys.AccessFSRemoveFile |
		llsys.AccessFSMakeDir | llsys.AccessFSMakeReg | llsys.AccessFSMakeSym | llsys.AccessFSRefer | llsys.AccessFSTruncate)
	if p.Seccomp.AllowUnixSockets {
		// A socket it binds by path lies in its tmpfs.
		plan.WriteRights |= plan.HandledFS & llsys.AccessFSMakeSock
	}

	if p.Seccomp.Enabled {
		if !ns.PID {
			// The rules that let signals go to the program itself
			// name its pid, which only a pid namespace fixes (1)
			// before the program exists.
			return nil, &policy.UnavailableError{Layer: policy.LayerSeccomp, Err: errors.New("a foreign program's filter needs the pid namespace")}
		}
		deny, notify := denyAction(p)
		insns, err := compileForeign(append(p.ForeignSyscallRules(), launcher...), deny)
		if err != nil {
			return nil, &policy.UnavailableError{Layer: policy.LayerSeccomp, Err: err}
		}
		plan.Seccomp = insns
		_ = record(policy.LayerSeccomp, nil, fmt.Sprintf("%d BPF instructions", len(plan.Seccomp)))
		if p.Seccomp.Monitor {
			var monErr error
			switch {
			case !notify:
				monErr = errors.New("libseccomp or the kernel lacks user notification")
			case !waitKillableSupported():
				monErr = ErrWaitKillableUnsupported
			}
			if err := record(policy.LayerSeccompMonitor, monErr, "violations reported by the broker"); err != nil {
				return nil, err
			}
			plan.Notify = monErr == nil
			if notify && monErr != nil {
				plan.Seccomp = (&seccompProgram{insns: plan.Seccomp}).killing().insns
			}
		}
	}
	plan.Layers = status
	return plan, nil
}

// compileForeign compiles rules for pid 1, denying everything else with
// deny, as buildFilter does a Go renderer's.
func compileForeign(rules []policy.SyscallRule, deny seccomp.ScmpAction) ([]unix.SockFilter, error) {
	filter, err := seccomp.NewFilter(deny)
	if err != nil {
		return nil, fmt.Errorf("new seccomp filter: %w", err)
	}
	defer filter.Release()
	if err := addRules(filter, rules, 1); err != nil {
		return nil, err
	}
	if err := filter.SetBadArchAction(deny); err != nil {
		return nil, err
	}
	prog, err := exportFilter(filter)
	if err != nil {
		return nil, err
	}
	return prog.insns, nil
}
