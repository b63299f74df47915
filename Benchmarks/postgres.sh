#!/usr/bin/env bash
# PostgresLock against a raw pg_advisory_lock/pg_advisory_unlock loop on one PostgresNIO
# connection, measured in one run against a throw-away PostgreSQL server (initdb in a temporary
# folder, run as the postgres user when root), on its Unix socket. Run by hand:
#   ROUNDS=5 CYCLES=5000 WAKES=200 bash Benchmarks/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
CYCLES=${CYCLES:-5000}
WAKES=${WAKES:-200}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; }
swift build -c release --product postgres-benchmark >/dev/null
bench=$(swift build -c release --show-bin-path)/postgres-benchmark

work=$(mktemp -d /tmp/filelock-pgbench-XXXXXX)
chmod 755 "$work"
as_server=()
if [ "$(id -u)" -eq 0 ]; then
  user=postgres; id postgres >/dev/null 2>&1 || user=nobody
  chown "$user" "$work"
  as_server=(runuser -u "$user" --)
fi
port=$((20000 + RANDOM % 40000))
"${as_server[@]}" "$bin/initdb" -D "$work/data" -U postgres --auth=trust --no-sync >/dev/null
"${as_server[@]}" "$bin/pg_ctl" -D "$work/data" -o "-k $work -p $port -c listen_addresses='' -c fsync=off" \
  -l "$work/server.log" -w start >/dev/null
trap '"${as_server[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1; rm -rf "$work"' EXIT
url="postgres://postgres@:$port/postgres?host=$work"

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
us() { awk -v n="$1" 'BEGIN { printf "%.1f µs", n / 1000 }'; }

# Interleave the rounds so a slow moment of the shared machine hits every contender alike.
raw=(); lock=(); async=(); wake_raw=(); wake_lock=()
for _ in $(seq "$ROUNDS"); do
  raw+=("$("$bench" cycle-raw "$url" "$CYCLES")")
  lock+=("$("$bench" cycle-lock "$url" "$CYCLES")")
  async+=("$("$bench" cycle-async "$url" "$CYCLES")")
done
for _ in $(seq "$ROUNDS"); do
  wake_raw+=("$("$bench" wake-raw "$url" "$WAKES")")
  wake_lock+=("$("$bench" wake-lock "$url" "$WAKES")")
done
r=$(printf '%s\n' "${raw[@]}" | median)
l=$(printf '%s\n' "${lock[@]}" | median)
a=$(printf '%s\n' "${async[@]}" | median)

echo "PostgresLock benchmark: median of $ROUNDS rounds, $CYCLES cycles each ($(nproc) cores, $("$bin/postgres" --version), Unix socket)"
echo
printf '%-56s %12s %10s\n' "acquire + release, one process" "per cycle" "vs raw"
printf '%-56s %12s %10s\n' "raw pg_advisory_lock + pg_advisory_unlock, one connection" "$(us "$r")" "1.00x"
printf '%-56s %12s %10s\n' "PostgresLock acquire + release (synchronous)" "$(us "$l")" "$(ratio "$l" "$r")"
printf '%-56s %12s %10s\n' "PostgresLock withLock { } (async)" "$(us "$a")" "$(ratio "$a" "$r")"
echo
printf '%-56s %10s %10s %10s\n' "wake-up after release, holder in another process" "p50" "p99" "p50 vs raw"
rp50=$(printf '%s\n' "${wake_raw[@]}" | awk '{ print $1 }' | median)
rp99=$(printf '%s\n' "${wake_raw[@]}" | awk '{ print $2 }' | median)
lp50=$(printf '%s\n' "${wake_lock[@]}" | awk '{ print $1 }' | median)
lp99=$(printf '%s\n' "${wake_lock[@]}" | awk '{ print $2 }' | median)
printf '%-56s %10s %10s %10s\n' "raw pg_advisory_lock waiter" "$(us "$rp50")" "$(us "$rp99")" "1.00x"
printf '%-56s %10s %10s %10s\n' "PostgresLock waiter (async acquire)" "$(us "$lp50")" "$(us "$lp99")" "$(ratio "$lp50" "$rp50")"
