package policy_test

import (
	"fmt"

	"github.com/sandkit/sandkit/policy"
)

// A renderer that needs fonts and one extra syscall starts from Strict and
// says so, in two reviewable lines.
func ExampleStrict() {
	p := policy.Strict()
	p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"}
	p.Limits.Memory = 512 << 20
	if err := p.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(p.Requested()), "layers requested")
	// Output: 15 layers requested
}

// Operators keep policies as text files and review them like code.
func ExampleParse() {
	p, err := policy.Parse([]byte(`limits { cpu_seconds: 5 } seccomp { allow: "ptrace" }`))
	fmt.Println(p, err)
	// Output: <nil> invalid policy: seccomp: "ptrace" is escape surface and cannot be allowed
}
