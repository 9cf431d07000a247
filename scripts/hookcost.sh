#!/usr/bin/env bash
# hookcost.sh: what hooks, kprom and kotel cost per record, as the table
# in docs/observability.md ("Cost").
#
#   scripts/hookcost.sh [-r ROUNDS] [-n RECORDS]
#
# Builds the three test binaries once (root, kprom, kotel; go test -c),
# then runs ROUNDS rounds (default 7); each round runs every case of
# BenchmarkSend_Hooks, BenchmarkSend_Kprom and BenchmarkSend_Kotel once,
# each in its own process with -test.benchtime RECORDSx (default 100000),
# the cases in a different (rotated) order each round. It prints, per
# case: the median CPU µs/record; the median over rounds of the ratio to
# the `none` case of the same binary and round, with its interquartile
# range; the median extra CPU µs/record over that `none`; allocs/record;
# and the median extra B/record. The raw benchmark lines go to a log
# whose path is printed on stderr.
set -euo pipefail

rounds=7
records=100000
while getopts "r:n:h" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	n) records=$OPTARG ;;
	*)
		sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done
case $rounds$records in *[!0-9]*) echo "hookcost.sh: -r and -n take positive integers" >&2; exit 2 ;; esac
if [ "$rounds" -lt 1 ] || [ "$records" -lt 1 ]; then
	echo "hookcost.sh: -r and -n take positive integers" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hookcost.XXXXXX")
trap 'rm -f "$tmp"/*.test' EXIT
log=$tmp/bench.log

echo "building test binaries in $tmp ..." >&2
(cd "$root" && go test -c -o "$tmp/root.test" .)
(cd "$root/kprom" && go test -c -o "$tmp/kprom.test" .)
(cd "$root/kotel" && go test -c -o "$tmp/kotel.test" .)

# binary|directory|-test.bench pattern|case label
cases=(
	'root|.|^BenchmarkSend_Hooks$/^C=1000$/^hooks=none$|none'
	'root|.|^BenchmarkSend_Hooks$/^C=1000$/^hooks=record$|no-op record hooks (send, buffered, done)'
	'root|.|^BenchmarkSend_Hooks$/^C=1000$/^hooks=request$|no-op request hooks (written, answered, throttle, retry)'
	'root|.|^BenchmarkSend_Hooks$/^C=1000$/^hooks=conn$|no-op connection/epoch/auth hooks'
	'root|.|^BenchmarkSend_Hooks$/^C=1000$/^hooks=all$|all no-op hooks'
	'kprom|kprom|^BenchmarkSend_Kprom$/^none$|none'
	'kprom|kprom|^BenchmarkSend_Kprom$/^kprom$|kprom collector'
	'kotel|kotel|^BenchmarkSend_Kotel$/^none$|none'
	'kotel|kotel|^BenchmarkSend_Kotel$/^metrics$|kotel metrics'
	'kotel|kotel|^BenchmarkSend_Kotel$/^tracing$|kotel tracing'
	'kotel|kotel|^BenchmarkSend_Kotel$/^tracing\+inject$|kotel tracing + inject'
	'kotel|kotel|^BenchmarkSend_Kotel$/^all$|kotel metrics + tracing + inject'
)
n=${#cases[@]}

for ((r = 0; r < rounds; r++)); do
	echo "round $((r + 1))/$rounds ..." >&2
	for ((j = 0; j < n; j++)); do
		i=$(((j + r) % n))
		IFS='|' read -r bin dir pat label <<<"${cases[$i]}"
		out=$(cd "$root/$dir" && "$tmp/$bin.test" -test.run '^$' -test.bench "$pat" \
			-test.benchtime "${records}x" -test.count 1 2>&1) || {
			echo "$out" >&2
			echo "hookcost.sh: case $i ($bin $label) failed" >&2
			exit 1
		}
		line=$(grep -E '^Benchmark.*cpu-µs/record' <<<"$out" | tail -1)
		if [ -z "$line" ]; then
			echo "$out" >&2
			echo "hookcost.sh: case $i ($bin $label): no result line" >&2
			exit 1
		fi
		echo "$r|$i|$bin|$label|$line" >>"$log"
	done
done
echo "raw results: $log" >&2

awk -F'|' -v rounds="$rounds" -v ncases="$n" '
# field after which the unit u follows in a benchmark line
function metric(line, u,    k, f, m) {
	m = split(line, f, /[ \t]+/)
	for (k = 2; k <= m; k++) if (f[k] == u) return f[k - 1] + 0
	return -1
}
function sortn(a, m,    i, j, v) { # insertion sort of a[1..m]
	for (i = 2; i <= m; i++) {
		v = a[i]
		for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
		a[j + 1] = v
	}
}
function q(a, m, p,    h, lo) { # quantile p of sorted a[1..m], linear interpolation
	h = (m - 1) * p + 1
	lo = int(h)
	if (lo >= m) return a[m]
	return a[lo] + (h - lo) * (a[lo + 1] - a[lo])
}
{
	r = $1; i = $2; bin[i] = $3; label[i] = $4
	cpu[r, i] = metric($5, "cpu-µs/record")
	allocs[r, i] = metric($5, "allocs/op")
	bytes[r, i] = metric($5, "B/op")
	if ($4 == "none") none[$3] = i
}
END {
	print "| C=1000, 100-byte records | CPU µs/record | vs none (IQR) | extra CPU µs/record | allocs/record | extra B/record |"
	print "|---|---|---|---|---|---|"
	for (i = 0; i < ncases; i++) {
		z = none[bin[i]]
		for (r = 0; r < rounds; r++) {
			c[r + 1] = cpu[r, i]; al[r + 1] = allocs[r, i]
			ra[r + 1] = cpu[r, i] / cpu[r, z]
			ex[r + 1] = cpu[r, i] - cpu[r, z]
			eb[r + 1] = bytes[r, i] - bytes[r, z]
		}
		sortn(c, rounds); sortn(al, rounds); sortn(ra, rounds); sortn(ex, rounds); sortn(eb, rounds)
		name = label[i]
		if (name == "none") {
			name = (bin[i] == "root") ? "no hooks (`BenchmarkSend_Hooks` none)" : bin[i] ": none (broker in process)"
			printf "| %s | %.2f | 1 | — | %g | — |\n", name, q(c, rounds, .5), q(al, rounds, .5)
			continue
		}
		printf "| %s | %.2f | %.2f (%.2f–%.2f) | %+.2f | %g | %+.0f |\n", name, q(c, rounds, .5),
			q(ra, rounds, .5), q(ra, rounds, .25), q(ra, rounds, .75), q(ex, rounds, .5), q(al, rounds, .5), q(eb, rounds, .5)
	}
}' "$log"
