package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/policy"
)

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	br, err := broker.New(context.Background(), broker.Config{Policy: policy.Strict(), Path: os.Args[1], MaxRenderers: 4, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	var lat []time.Duration
	for i := 0; i < n; i++ {
		st := time.Now()
		r, err := br.Acquire(ctx, "o"+strconv.Itoa(i), "")
		if err != nil {
			panic(err)
		}
		fmt.Fprintln(os.Stderr, "TT b-acquired", tmono())
		if _, _, err := broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes(nil)); err != nil {
			panic(err)
		}
		fmt.Fprintln(os.Stderr, "TT b-pinged", tmono())
		lat = append(lat, time.Since(st))
		r.Close()
		<-r.Done()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Println("median", lat[len(lat)/2])
	br.Close()
}

func tmono() int64 { var t unix.Timespec; unix.ClockGettime(unix.CLOCK_MONOTONIC, &t); return t.Nano() }
