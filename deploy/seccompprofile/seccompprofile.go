// Package seccompprofile generates deploy/seccomp.json: the container
// runtime's default seccomp profile (moby's DefaultProfile, which Docker,
// Podman and containerd ship in equivalent forms) plus exactly the
// syscalls the document viewer's nested sandbox needs and the default
// refuses to a container without CAP_SYS_ADMIN.
//
// Seccomp filters stack: every filter a process carries is evaluated and
// the strictest answer wins. A renderer inside a container therefore runs
// under the container's profile AND its own allowlist, so the outer
// profile must allow (a) every syscall of the renderer's allowlist and (b)
// what the broker and the renderer's lockdown call before the renderer's
// own filter is in place. Additions lists both, each with the reason, and
// the generator refuses to produce a profile whose additions are not all
// needed (a name the default already allows is not added).
package seccompprofile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	moby "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandkit/sandkit/policy"
)

// Addition is one syscall the profile allows beyond the default.
type Addition struct {
	Name string
	// Why says who calls it and why, for the profile's comment and the
	// docs.
	Why string
	// Cost says what allowing it to the whole container gives up; empty
	// when the nested sandbox's own filter forbids it again to renderers
	// and it only widens what the broker itself could do.
	Cost string
}

// Lockdown lists the syscalls the broker and the renderer make before the
// renderer's own seccomp filter is installed and that the runtime's default
// refuses without CAP_SYS_ADMIN. Found by reading broker/spawn.go,
// broker/vfork.go, broker/userns.go, renderer/early.go,
// renderer/early_lockdown.c and renderer/lockdown.go; every other call there (prctl, capset, setrlimit,
// landlock_*, seccomp, close_range, pidfd_*, waitid, chdir) is allowed by
// the default profile, which the tests check.
//
// clone3 is not among them: the default answers it ENOSYS, which glibc
// and the Go runtime fall back from, and only Go's os/exec spawning
// straight into a per-renderer cgroup (broker.Config.CgroupDir, which the
// document viewer does not set) needs it. A deployment that sets
// CgroupDir must allow clone3 as well; seccomp cannot inspect its flags.
func Lockdown() []Addition {
	return []Addition{
		{
			Name: "clone",
			Why: "broker: spawns each renderer into new user, mount, pid, net, ipc, uts and cgroup namespaces " +
				"(broker/vfork.go clone(CLONE_VM|CLONE_VFORK|CLONE_NEW*), broker/spawn.go SysProcAttr.Cloneflags) and probes " +
				"user-namespace support the same way (broker/userns.go); the default allows clone only without CLONE_NEW* flags",
			Cost: "any process in the container can create namespaces; inside a user namespace it holds capabilities over " +
				"namespaced resources, which exposes more kernel code (the reason the default forbids it)",
		},
		{
			Name: "mount",
			Why:  "renderer lockdown, in its own user and mount namespace: makes / rprivate, mounts the empty tmpfs root (no /proc), bind-mounts read-only paths, remounts the root read-only (renderer/early_lockdown.c empty_root, run in the ELF constructor)",
			Cost: "mounts are possible only in a mount namespace owned by a user namespace the caller created; the kernel refuses them in the container's own namespaces without CAP_SYS_ADMIN there",
		},
		{
			Name: "umount2",
			Why:  "renderer lockdown: detaches the old root after pivot_root (renderer/early_lockdown.c empty_root)",
			Cost: "as mount",
		},
		{
			Name: "pivot_root",
			Why:  "renderer lockdown: makes the empty tmpfs the renderer's root (renderer/early_lockdown.c empty_root)",
			Cost: "as mount",
		},
		{
			Name: "sethostname",
			Why:  "renderer lockdown: sets the hostname of its own UTS namespace to \"sandkit\" (renderer/early_lockdown.c)",
			Cost: "only in a UTS namespace the caller owns; the container's hostname stays out of reach without CAP_SYS_ADMIN",
		},
	}
}

// Renderer lists the names of the renderer's allowlist (p.Seccomp plus
// policy.BaseSyscalls) that the default profile does not allow
// unconditionally to a container without capabilities. The renderer's own
// filter still restricts their arguments.
func Renderer(p *policy.Policy, def *moby.Seccomp) []Addition {
	why := map[string]string{}
	for _, r := range policy.BaseSyscalls() {
		if r.Errno != 0 {
			// The renderer's filter fails it with an errno itself
			// (clone3: ENOSYS): the outer profile need not allow it.
			// Where both filters answer with an errno, the renderer's,
			// installed last, is the one the caller sees.
			continue
		}
		why[r.Name] = "renderer allowlist (policy.BaseSyscalls): " + r.Why
	}
	for _, name := range p.Seccomp.Allow {
		if _, ok := why[name]; !ok {
			why[name] = "renderer allowlist (the document viewer's policy, Seccomp.Allow)"
		}
	}
	var out []Addition
	for _, name := range sortedKeys(why) {
		if !allowsUnconditionally(def, name) {
			out = append(out, Addition{Name: name, Why: why[name]})
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// allowsUnconditionally reports whether def allows name, with any
// arguments, to a container without capabilities on amd64 or arm64: a
// rule with action allow, no argument conditions, and no inclusion
// condition on capabilities or on other architectures.
func allowsUnconditionally(def *moby.Seccomp, name string) bool {
	for _, s := range def.Syscalls {
		if s.Action != specs.ActAllow || len(s.Args) > 0 || !slices.Contains(s.Names, name) {
			continue
		}
		if in := s.Includes; in != nil && (len(in.Caps) > 0 || (len(in.Arches) > 0 && !slices.Contains(in.Arches, "amd64") && !slices.Contains(in.Arches, "arm64"))) {
			continue
		}
		return true
	}
	return false
}

// Additions returns everything added to the default for a renderer
// under p: Lockdown, then Renderer's names that Lockdown does not already
// add. It fails if an entry of Lockdown is already allowed by def, so the
// list cannot go stale silently when the default changes.
func Additions(p *policy.Policy, def *moby.Seccomp) ([]Addition, error) {
	out := Lockdown()
	for _, a := range out {
		if allowsUnconditionally(def, a.Name) {
			return nil, fmt.Errorf("seccompprofile: %s is already allowed by the default profile: drop it from Lockdown", a.Name)
		}
	}
	for _, a := range Renderer(p, def) {
		if !slices.ContainsFunc(out, func(b Addition) bool { return b.Name == a.Name }) {
			out = append(out, a)
		}
	}
	return out, nil
}

// Profile returns the default profile with adds applied: each name is
// removed from the default's rules that apply to a container without
// CAP_SYS_ADMIN (clone's flag condition) and added back
// as an unconditional allow rule whose comment is the reason.
func Profile(adds []Addition) *moby.Seccomp {
	p := moby.DefaultProfile()
	names := make([]string, len(adds))
	for i, a := range adds {
		names[i] = a.Name
	}
	var kept []*moby.Syscall
	for _, s := range p.Syscalls {
		if s.Excludes != nil && slices.Contains(s.Excludes.Caps, "CAP_SYS_ADMIN") {
			s.Names = slices.DeleteFunc(s.Names, func(n string) bool { return slices.Contains(names, n) })
			if len(s.Names) == 0 {
				continue
			}
		}
		kept = append(kept, s)
	}
	for _, a := range adds {
		kept = append(kept, &moby.Syscall{
			LinuxSyscall: specs.LinuxSyscall{Names: []string{a.Name}, Action: specs.ActAllow},
			Comment:      "sandkit: " + a.Why,
		})
	}
	p.Syscalls = kept
	return p
}

// Generate returns the JSON of deploy/seccomp.json for a renderer under p.
func Generate(p *policy.Policy) ([]byte, error) {
	adds, err := Additions(p, moby.DefaultProfile())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(Profile(adds)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Markdown is the generated section of docs/deploying-containers.md: one
// table row per addition.
func Markdown(p *policy.Policy) (string, error) {
	adds, err := Additions(p, moby.DefaultProfile())
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| syscall | why the sandbox needs it | what allowing it to the container costs |\n| --- | --- | --- |\n")
	for _, a := range adds {
		cost := a.Cost
		if cost == "" {
			cost = "nothing for renderers (their own filter restricts it again); the broker process may call it"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", a.Name, escape(a.Why), escape(cost))
	}
	return b.String(), nil
}

func escape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
