#!/usr/bin/env bash
# Runs every native Go fuzz target of the main module, one after another,
# each for the given time (default 10s), and prints a summary table:
# package, target, status, time, execs, execs/s (average over the run),
# new interesting inputs. The Makefile's fuzz and fuzz-smoke targets call
# it; see docs/fuzzing.md.
#
#   fuzz/run.sh [FUZZTIME]        e.g. fuzz/run.sh 10m
#
# Environment: GO (default go); FUZZPARALLEL, when set, is passed as
# -parallel (go test -fuzz uses every core by default); FUZZFLAGS, extra
# go test flags (e.g. -fuzzminimizetime=5s: the broker targets run tens
# of inputs a second, and the default minute spent minimizing each new
# input is a large share of a short run).
set -euo pipefail

t="${1:-10s}"
GO="${GO:-go}"
cd "$(dirname "$0")/.."

# go test -list prints a package's matching test names, then its "ok"
# line; pair each name with that package.
mapfile -t targets < <("$GO" test -list '^Fuzz' ./... | awk '
	/^Fuzz/ { names[n++] = $1; next }
	/^ok/   { for (i = 0; i < n; i++) print $2, names[i]; n = 0 }')
if [ "${#targets[@]}" -eq 0 ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi

extra=()
if [ -n "${FUZZPARALLEL:-}" ]; then
	extra=(-parallel "$FUZZPARALLEL")
fi
if [ -n "${FUZZFLAGS:-}" ]; then
	read -r -a flags <<<"$FUZZFLAGS"
	extra+=("${flags[@]}")
fi

# seconds converts a Go duration as the fuzzer prints it (1m2s, 10s,
# 1h0m3s) to whole seconds.
seconds() {
	awk -v d="$1" 'BEGIN {
		s = 0
		while (match(d, /^[0-9.]+[hms]/)) {
			v = substr(d, 1, RLENGTH - 1); u = substr(d, RLENGTH, 1)
			s += v * (u == "h" ? 3600 : u == "m" ? 60 : 1)
			d = substr(d, RLENGTH + 1)
		}
		print int(s)
	}'
}

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
rows=()
failed=0
for entry in "${targets[@]}"; do
	pkg="${entry% *}"
	name="${entry#* }"
	log="$log_dir/$name.log"
	echo "=== $pkg $name ($t)"
	status=ok
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" ${extra[@]+"${extra[@]}"} "$pkg" 2>&1 | tee "$log"; then
		if ! grep -q 'Failing input written to' "$log" && grep -q '^    context deadline exceeded$' "$log"; then
			# Go's fuzz coordinator can report its own -fuzztime
			# deadline as a failure (golang/go#75804, fixed in Go
			# 1.27): no input failed, so it is not one of ours.
			status=flake
		else
			status=FAIL
			failed=1
		fi
	fi
	# The last progress line has the totals:
	# fuzz: elapsed: 10s, execs: 12345 (1234/sec), new interesting: 3 (total: 40)
	last="$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1 || true)"
	elapsed="$(sed -nE 's/^fuzz: elapsed: ([^,]+),.*/\1/p' <<<"$last")"
	execs="$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")"
	newi="$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")"
	secs="$(seconds "${elapsed:-0s}")"
	rate=-
	if [ -n "$execs" ] && [ "$secs" -gt 0 ]; then
		rate=$((execs / secs))
	fi
	rows+=("$(printf '%-54s %-22s %-5s %8s %12s %9s %6s' "$pkg" "$name" "$status" "${elapsed:--}" "${execs:--}" "$rate" "${newi:--}")")
done

echo
printf '%-54s %-22s %-5s %8s %12s %9s %6s\n' package target status time execs execs/s new
for row in "${rows[@]}"; do
	echo "$row"
done
exit "$failed"
