package broker_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// New fails closed: a policy that does not validate, or that asks for a
// layer the kernel lacks and does not allow degraded, is refused before
// any renderer exists. A program widens Strict one field at a time.
func ExampleNew() {
	p := policy.Strict()
	p.Seccomp.Allow = []string{"ptrace"} // escape surface: no policy may allow it
	_, err := broker.New(context.Background(), broker.Config{Policy: p})
	fmt.Println(errors.Is(err, policy.ErrInvalid))

	p = policy.Strict()
	p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"} // fonts, read-only, nothing else
	b, err := broker.New(context.Background(), broker.Config{Policy: p, Model: broker.PerDocument})
	var unavailable *policy.UnavailableError
	if errors.As(err, &unavailable) {
		fmt.Println("this kernel lacks", unavailable.Layer)
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	fmt.Println(b.Policy().Filesystem.ReadOnlyPaths)
	// Output:
	// true
	// [/usr/share/fonts]
}

// A call fails with a *broker.ExitError when its renderer is gone; the
// reason says why, and a sandbox violation names the syscall the monitor
// caught. The renderer is dead either way: the program acquires a fresh
// one, or gives up on that input.
func ExampleExitError() {
	report := func(err error) {
		var exit *broker.ExitError
		switch {
		case errors.As(err, &exit) && exit.Reason == broker.ExitViolation:
			fmt.Printf("hostile input: the renderer tried %s%v\n", exit.Syscall, exit.Args)
		case errors.As(err, &exit):
			fmt.Printf("renderer gone: %s (%s)\n", exit.Reason, exit.Detail)
		case err != nil:
			fmt.Println("call failed:", err)
		}
	}
	// What broker.Call returns when the monitor kills a renderer that
	// tried to open a socket.
	report(&broker.ExitError{Reason: broker.ExitViolation, Syscall: "socket", Args: []uint64{2, 1, 0, 0, 0, 0}})
	report(&broker.ExitError{Reason: broker.ExitCPULimit, Detail: "used 5s of CPU, limit 5s"})
	// Output:
	// hostile input: the renderer tried socket[2 1 0 0 0 0]
	// renderer gone: cpu limit (used 5s of CPU, limit 5s)
}
