#!/usr/bin/env bash
# Runs every benchmark that docs/benchmarks.md reports on — the framework's
# (ipc, broker), the examples' (imageparser, docviewer) and the comparisons
# with bubblewrap, fork+exec, a raw socket, gRPC and a plain Go process
# (this module) — then summarizes them with benchstat and rewrites the
# generated section of docs/benchmarks.md (internal/bench/report).
#
# Raw output goes to out/bench/raw-*.txt, benchstat's summary to
# out/bench/benchstat.txt. A package that does not build yet is skipped
# with a warning, not fatal: the report marks its rows "not measured".
#
# Environment:
#   COUNT        runs of each benchmark (default 6); medians are taken over them
#   QUIET_WAIT   seconds to wait, at most, for the 1-minute load average to
#                drop below QUIET_LOAD before starting (default 0: no wait).
#                Spawn and round-trip times on a 2-core machine follow its load.
#   QUIET_LOAD   see QUIET_WAIT (default 2)
#   GO           the go command (default go)
#
# About 8-12 minutes on the 2-core development VM with COUNT=6.
set -euo pipefail

GO=${GO:-go}
COUNT=${COUNT:-6}
QUIET_WAIT=${QUIET_WAIT:-0}
QUIET_LOAD=${QUIET_LOAD:-2}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$root/out/bench"
mkdir -p "$out"
rm -f "$out"/raw-*.txt "$out"/raw-*.err

if ! command -v bwrap >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing bubblewrap for the comparison" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; } ||
			echo "could not install bubblewrap: the bwrap comparison will be skipped" >&2
	else
		echo "bubblewrap is missing: the bwrap comparison will be skipped; install it with" >&2
		echo "  sudo apt-get install -y bubblewrap" >&2
	fi
fi

load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
if [ "$QUIET_WAIT" -gt 0 ]; then
	while awk -v l="$(load1)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l >= q) }' && [ "$waited" -lt "$QUIET_WAIT" ]; do
		[ $((waited % 60)) -eq 0 ] && echo "load $(load1), waiting for < $QUIET_LOAD ($waited/$QUIET_WAIT s)" >&2
		sleep 10
		waited=$((waited + 10))
	done
fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
echo "load average at start: $load_start" >&2

# bench NAME DIR GO-TEST-ARGS...: one go test run, its output in raw-NAME.txt.
bench() {
	local name=$1 dir=$2
	shift 2
	echo "== $name: (cd $dir && go test -run '^\$' -count $COUNT $*)" >&2
	if (cd "$root/$dir" && "$GO" test -run '^$' -count "$COUNT" -timeout 30m "$@") >"$out/raw-$name.txt" 2>"$out/raw-$name.err"; then
		grep -E '^Benchmark' "$out/raw-$name.txt" | sed 's/^/    /' >&2 || true
	else
		echo "WARNING: $name failed or did not build; its rows will read 'not measured' (see out/bench/raw-$name.err and .txt)" >&2
		tail -5 "$out/raw-$name.err" "$out/raw-$name.txt" >&2 || true
	fi
}

# The comparisons first, while the machine is as quiet as it will be. Each
# comparison's peers run in one process, one after the other, so each
# ratio compares numbers measured side by side.
# The spawn and density benchmarks start the test binary itself as the
# renderer and its peers; -tags nogrpc keeps gRPC's initialization out of
# it (see grpc_test.go).
bench spawn internal/bench -tags nogrpc -bench 'Spawn' .
bench calls internal/bench -bench 'RoundTrip64|Bulk8MiB' .
bench density internal/bench -tags nogrpc -bench 'Density' -benchtime 1x .
# Where a cold spawn's time goes (diagnostic, no target).
bench lockdown internal/bench -tags nogrpc -bench 'LockdownSteps' -benchtime 20x .
bench ipc . -bench . -benchtime 0.5s ./ipc/
# Spawn-sized operations: a fixed number of each, not a second's worth.
bench broker . -bench 'SpawnToReady|WarmAcquire|IdleRSS' -benchtime 20x ./broker/
bench broker-call . -bench 'Call' ./broker/
bench imageparser . -bench . -benchtime 5x ./examples/imageparser/...
bench docviewer examples/docviewer -bench . ./...

cat "$out"/raw-*.txt >"$out/all.txt"
if ! (cd "$root/internal/bench" && "$GO" run golang.org/x/perf/cmd/benchstat@latest "$out/all.txt") >"$out/benchstat.txt" 2>"$out/benchstat.err"; then
	echo "WARNING: benchstat failed (see out/bench/benchstat.err); the report does not need it" >&2
fi

note="Whole run: $(($(date +%s) - start)) s, COUNT=$COUNT; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
if [ "$waited" -gt 0 ]; then
	note="$note Waited $waited s for the load to drop below $QUIET_LOAD first."
fi
cd "$root/internal/bench"
"$GO" run ./report -doc "$root/docs/benchmarks.md" -load "$load_start" -note "$note" \
	-cmd "make bench   # = COUNT=$COUNT internal/bench/run.sh; raw output in out/bench/" "$out"/raw-*.txt
