package fuzz

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
)

// TestHostileRenderer runs many compromised renderers, one after another,
// against one real broker across the real process boundary: each is
// fully locked down and then sends a sequence of messages generated from
// a seeded PRNG (see hostile). The broker must stay healthy — a renderer
// of another origin answers throughout — every renderer must end with a
// classified ExitError — a bad message for every sequence with an
// invalid message in it, released by the test for the all-valid ones —
// and no descriptor, goroutine or child
// process may leak in the broker.
func TestHostileRenderer(t *testing.T) {
	renderers, msgs := 200, 40
	if testing.Short() {
		renderers = 20
	}
	granted, _ := grantedTree(t)
	b, err := broker.New(context.Background(), broker.Config{Policy: strictPolicy(), CallTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const origin = "https://hostile.example"
	if err := b.GrantDir(origin, granted); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bystander, err := b.Acquire(ctx, bystanderOrigin, "")
	if err != nil {
		t.Fatal(err)
	}
	ping := func() {
		t.Helper()
		resp, _, err := broker.Call(ctx, bystander, testrenderer.Ping, wrapperspb.Bytes([]byte("ping")))
		if err != nil || string(resp.GetValue()) != "ping" {
			t.Fatalf("the bystander renderer stopped answering: %v", err)
		}
	}
	run := func(seed uint64) (broker.ExitReason, uint32) {
		t.Helper()
		r, err := b.Acquire(ctx, origin, "")
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		req := binary.BigEndian.AppendUint64(nil, seed)
		resp, _, err := broker.Call(ctx, r, mHostile, wrapperspb.Bytes(append(req, byte(msgs))))
		var ee *broker.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("seed %d: call failed without an ExitError: %v", seed, err)
		}
		r.Close() // released if it survived; a no-op otherwise
		<-r.Done()
		return r.Err().Reason, resp.GetValue()
	}
	ping()
	run(0) // warm up before taking the baseline
	fds, gs := openFDs(t), goroutines()
	start := time.Now()
	reasons := map[broker.ExitReason]int{}
	var sent uint32
	for seed := uint64(1); seed <= uint64(renderers); seed++ {
		reason, n := run(seed)
		reasons[reason]++
		sent += n
		// Every sequence ends with a message the broker must kill
		// for, unless it is all valid: then the renderer survives
		// and the test releases it.
		switch {
		case reason == broker.ExitBadMessage, reason == broker.ExitBrokerLimit:
		case reason == broker.ExitReleased && n == uint32(msgs):
		default:
			t.Fatalf("seed %d: renderer ended with %q after %d messages", seed, reason, n)
		}
		if seed%10 == 0 {
			ping()
		}
	}
	ping()
	t.Logf("%d hostile renderers in %v (%d messages reported by survivors): %v", renderers, time.Since(start).Round(time.Millisecond), sent, reasons)
	if reasons[broker.ExitBadMessage] == 0 {
		t.Fatal("no renderer was killed for a bad message: the generator is not hostile")
	}
	settle(t, "goroutines", gs, goroutines)
	settle(t, "descriptors", fds, func() int { return openFDs(t) })
	if kids := children(t); len(kids) != 1 {
		t.Fatalf("child processes: %v, want only the bystander", kids)
	}
}

// children lists the processes whose parent is this one.
func children(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			out = append(out, pid)
		}
	}
	return out
}
