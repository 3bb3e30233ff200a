package fuzz

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/policy"
	"github.com/sandkit/sandkit/policy/policypb"
)

// checkAccepted holds a policy that Parse or UnmarshalBinary accepted to
// what acceptance promises: it validates, it survives Format → Parse and
// MarshalBinary → UnmarshalBinary unchanged (compared in the binary form,
// which sets every field and has no maps, so it is deterministic), its
// serialized limits do not wrap around, and no escape-surface syscall is
// allowed.
func checkAccepted(t *testing.T, p *policy.Policy) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("accepted policy does not validate: %v", err)
	}
	text, err := policy.Format(p)
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	again, err := policy.Parse(text)
	if err != nil {
		t.Fatalf("Format's output does not parse: %v\n%s", err, text)
	}
	wire, err := p.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	if w, err := again.MarshalBinary(); err != nil || !bytes.Equal(w, wire) {
		t.Fatalf("Format → Parse changed the policy (%v):\n%v\n%v", err, p, again)
	}
	again = new(policy.Policy)
	if err := again.UnmarshalBinary(wire); err != nil {
		t.Fatalf("MarshalBinary → UnmarshalBinary: %v", err)
	}
	if w, err := again.MarshalBinary(); err != nil || !bytes.Equal(w, wire) {
		t.Fatalf("MarshalBinary → UnmarshalBinary changed the policy (%v):\n%v\n%v", err, p, again)
	}
	var pb policypb.Policy
	if err := proto.Unmarshal(wire, &pb); err != nil {
		t.Fatalf("MarshalBinary's output is not a policypb.Policy: %v", err)
	}
	// The serialized CPU limit is what a reader of the formatted file
	// sees (and what the renderer turns into RLIMIT_CPU the same way):
	// whole seconds, rounded up, with no overflow on the way.
	want := uint64(p.Limits.CPUTime / time.Second)
	if p.Limits.CPUTime%time.Second != 0 {
		want++
	}
	if got := pb.GetLimits().GetCpuSeconds(); got != want {
		t.Fatalf("CPU limit %v serialized as %d seconds, want %d", p.Limits.CPUTime, got, want)
	}
	allowed := map[string]bool{}
	for _, r := range p.SyscallRules() {
		if r.Errno == 0 { // an errno rule makes the call fail: not allowed
			allowed[r.Name] = true
		}
	}
	for _, name := range policy.EscapeSurface() {
		if allowed[name] || slices.Contains(p.Seccomp.Allow, name) {
			t.Fatalf("accepted policy allows escape-surface syscall %s", name)
		}
	}
}

// FuzzPolicyParse feeds policy.Parse arbitrary text: no panic, and
// whatever it accepts holds to checkAccepted.
func FuzzPolicyParse(f *testing.F) {
	strict, err := policy.Format(policy.Strict())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(strict)
	for _, s := range []string{
		``,
		`seccomp { allow: "ptrace" }`,
		`seccomp { allow: "pread64" allow: "getcwd" }`,
		`seccomp { allow: "getcwd" allow: "getcwd" }`,
		`seccomp { enabled: false monitor: false }`,
		`filesystem { read_only_paths: "/usr/share/fonts" read_only_paths: "/proc/x" }`,
		`namespaces { user: false }`,
		`limits { cpu_seconds: 9223372035 call_timeout_ms: 9223372036855 lifetime_ms: 1 }`,
		`limits { memory_bytes: 1 open_files: 7 threads: 15 cgroup_cpu_percent: 102401 }`,
		`allow_degraded: "landlock-scope" allow_degraded: "user-namespace" allow_degraded: "nope"`,
		`unknown_field: 1`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		p, err := policy.Parse(text)
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a policy with its error")
			}
			return
		}
		if len(text) > policy.MaxTextSize {
			t.Fatalf("Parse accepted %d bytes, over MaxTextSize", len(text))
		}
		checkAccepted(t, p)
	})
}

// FuzzPolicyUnmarshal feeds Policy.UnmarshalBinary — what every renderer
// decodes from its argv — arbitrary bytes: no panic, and whatever it
// accepts holds to checkAccepted.
func FuzzPolicyUnmarshal(f *testing.F) {
	for _, p := range []*policy.Policy{policy.Strict(), {}} {
		b, err := p.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x2a, 0x07, 0x1a, 0x05, 'c', 'h', 'r', 'o', 'o'})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := new(policy.Policy)
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		checkAccepted(t, p)
	})
}
