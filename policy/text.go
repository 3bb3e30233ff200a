package policy

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/policy/policypb"
)

// MaxTextSize bounds a policy file; anything larger is refused before parsing.
const MaxTextSize = 1 << 20

// Parse reads a protobuf text-format policy (see policypb/policy.proto).
// Every field left out keeps its value from Strict, so a file states only
// how it differs from the default. The result is validated.
func Parse(text []byte) (*Policy, error) {
	if len(text) > MaxTextSize {
		return nil, fmt.Errorf("%w: policy text is %d bytes, over %d", ErrInvalid, len(text), MaxTextSize)
	}
	var pb policypb.Policy
	if err := (prototext.UnmarshalOptions{}).Unmarshal(text, &pb); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	p := fromProto(&pb)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Format renders p in protobuf text format, every field spelled out.
func Format(p *Policy) ([]byte, error) {
	return prototext.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(toProto(p))
}

// MarshalBinary encodes p compactly (binary protobuf, every field set): the
// form the broker hands each renderer in its arguments. It implements
// encoding.BinaryMarshaler; Format is the form for people.
func (p *Policy) MarshalBinary() ([]byte, error) { return proto.Marshal(toProto(p)) }

// UnmarshalBinary replaces p with the policy MarshalBinary encoded in b,
// fields b leaves unset keeping their Strict value, and validates it. It
// implements encoding.BinaryUnmarshaler. A renderer decodes its policy
// with it before lockdown, so b is as hostile as a policy file: on error
// p is left unchanged.
func (p *Policy) UnmarshalBinary(b []byte) error {
	var pb policypb.Policy
	if err := proto.Unmarshal(b, &pb); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	q := fromProto(&pb)
	if err := q.Validate(); err != nil {
		return err
	}
	*p = *q
	return nil
}

// fromProto overlays pb on Strict: fields pb leaves unset keep the strict
// default. It does not validate.
func fromProto(pb *policypb.Policy) *Policy {
	p := Strict()
	set := func(dst *bool, src *bool) {
		if src != nil {
			*dst = *src
		}
	}
	setU := func(dst *uint64, src *uint64) {
		if src != nil {
			*dst = *src
		}
	}
	setD := func(dst *time.Duration, src *uint64, unit time.Duration) {
		if src != nil {
			*dst = clampDuration(*src, unit)
		}
	}
	if ns := pb.GetNamespaces(); ns != nil {
		set(&p.Namespaces.User, ns.User)
		set(&p.Namespaces.Mount, ns.Mount)
		set(&p.Namespaces.PID, ns.Pid)
		set(&p.Namespaces.Net, ns.Net)
		set(&p.Namespaces.IPC, ns.Ipc)
		set(&p.Namespaces.UTS, ns.Uts)
		set(&p.Namespaces.Cgroup, ns.Cgroup)
	}
	if fs := pb.GetFilesystem(); fs != nil {
		set(&p.Filesystem.Landlock, fs.Landlock)
		p.Filesystem.ReadOnlyPaths = append([]string(nil), fs.ReadOnlyPaths...)
		p.Filesystem.ExecutablePaths = append([]string(nil), fs.ExecutablePaths...)
		p.Filesystem.Devices = append([]string(nil), fs.Devices...)
		for _, t := range fs.Tmpfs {
			p.Filesystem.Tmpfs = append(p.Filesystem.Tmpfs, Tmpfs{Path: t.GetPath(), Size: t.GetSizeBytes()})
		}
	}
	if n := pb.GetNetwork(); n != nil {
		set(&p.Network.Landlock, n.Landlock)
	}
	if s := pb.GetScope(); s != nil {
		set(&p.Scope.Landlock, s.Landlock)
	}
	if s := pb.GetSeccomp(); s != nil {
		set(&p.Seccomp.Enabled, s.Enabled)
		set(&p.Seccomp.Monitor, s.Monitor)
		set(&p.Seccomp.DenyExecMemory, s.DenyExecMemory)
		set(&p.Seccomp.AllowChildren, s.AllowChildren)
		set(&p.Seccomp.AllowPathStat, s.AllowPathStat)
		set(&p.Seccomp.AllowUnixSockets, s.AllowUnixSockets)
		set(&p.Seccomp.AllowFileLocks, s.AllowFileLocks)
		p.Seccomp.Allow = append([]string(nil), s.Allow...)
	}
	if l := pb.GetLimits(); l != nil {
		setU(&p.Limits.Memory, l.MemoryBytes)
		setU(&p.Limits.OpenFiles, l.OpenFiles)
		setU(&p.Limits.Threads, l.Threads)
		setD(&p.Limits.CPUTime, l.CpuSeconds, time.Second)
		setU(&p.Limits.FileSize, l.FileSizeBytes)
		setU(&p.Limits.LockedMemory, l.LockedMemoryBytes)
		setU(&p.Limits.SharedMemory, l.SharedMemoryBytes)
		setU(&p.Limits.Stack, l.StackBytes)
		setD(&p.Limits.CallTimeout, l.CallTimeoutMs, time.Millisecond)
		setD(&p.Limits.Lifetime, l.LifetimeMs, time.Millisecond)
		setU(&p.Limits.Cgroup.MemoryMax, l.CgroupMemoryMaxBytes)
		setU(&p.Limits.Cgroup.PidsMax, l.CgroupPidsMax)
		setU(&p.Limits.Cgroup.CPUPercent, l.CgroupCpuPercent)
	}
	for _, l := range pb.GetAllowDegraded() {
		p.AllowDegraded = append(p.AllowDegraded, Layer(l))
	}
	return p
}

// clampDuration converts n units to a Duration without overflowing: a
// hostile or careless file must not wrap a limit around to a tiny or
// negative value.
func clampDuration(n uint64, unit time.Duration) time.Duration {
	const maxDuration = time.Duration(1<<63 - 1)
	if n > uint64(maxDuration/unit) {
		return maxDuration
	}
	return time.Duration(n) * unit
}

// toProto converts p to its serialized form, every field set.
func toProto(p *Policy) *policypb.Policy {
	b := proto.Bool
	u := proto.Uint64
	pb := &policypb.Policy{
		Namespaces: &policypb.Namespaces{
			User: b(p.Namespaces.User), Mount: b(p.Namespaces.Mount), Pid: b(p.Namespaces.PID),
			Net: b(p.Namespaces.Net), Ipc: b(p.Namespaces.IPC), Uts: b(p.Namespaces.UTS),
			Cgroup: b(p.Namespaces.Cgroup),
		},
		Filesystem: &policypb.Filesystem{Landlock: b(p.Filesystem.Landlock), ReadOnlyPaths: append([]string(nil), p.Filesystem.ReadOnlyPaths...),
			ExecutablePaths: append([]string(nil), p.Filesystem.ExecutablePaths...), Devices: append([]string(nil), p.Filesystem.Devices...)},
		Network: &policypb.Network{Landlock: b(p.Network.Landlock)},
		Scope:   &policypb.Scope{Landlock: b(p.Scope.Landlock)},
		Seccomp: &policypb.Seccomp{Enabled: b(p.Seccomp.Enabled), Monitor: b(p.Seccomp.Monitor),
			Allow: append([]string(nil), p.Seccomp.Allow...), DenyExecMemory: b(p.Seccomp.DenyExecMemory),
			AllowChildren: b(p.Seccomp.AllowChildren), AllowPathStat: b(p.Seccomp.AllowPathStat),
			AllowUnixSockets: b(p.Seccomp.AllowUnixSockets), AllowFileLocks: b(p.Seccomp.AllowFileLocks)},
		Limits: &policypb.Limits{
			MemoryBytes:          u(p.Limits.Memory),
			OpenFiles:            u(p.Limits.OpenFiles),
			Threads:              u(p.Limits.Threads),
			CpuSeconds:           u(p.Limits.CPUSeconds()),
			FileSizeBytes:        u(p.Limits.FileSize),
			LockedMemoryBytes:    u(p.Limits.LockedMemory),
			SharedMemoryBytes:    u(p.Limits.SharedMemory),
			StackBytes:           u(p.Limits.Stack),
			CallTimeoutMs:        u(uint64(p.Limits.CallTimeout / time.Millisecond)),
			LifetimeMs:           u(uint64(p.Limits.Lifetime / time.Millisecond)),
			CgroupMemoryMaxBytes: u(p.Limits.Cgroup.MemoryMax),
			CgroupPidsMax:        u(p.Limits.Cgroup.PidsMax),
			CgroupCpuPercent:     u(p.Limits.Cgroup.CPUPercent),
		},
	}
	for _, t := range p.Filesystem.Tmpfs {
		pb.Filesystem.Tmpfs = append(pb.Filesystem.Tmpfs, &policypb.Tmpfs{Path: proto.String(t.Path), SizeBytes: u(t.Size)})
	}
	for _, l := range p.AllowDegraded {
		pb.AllowDegraded = append(pb.AllowDegraded, string(l))
	}
	return pb
}
