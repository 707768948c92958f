#!/bin/bash
# Profiles Envoy under loadbench's configurations (a), (n) and (r) with -upstream fixed:
# instructions per request (callgrind), CPU per request by component (perf record -g)
# and system calls per request (perf stat). Run from the repository root:
#
#   go run ./bench/cmd/loadbench -configs a,n,r -duration 1s -warmup 1s -upstream fixed -keep
#   bash bench/envoyprof/profile.sh /tmp/loadbench-NNN [OUT]    # the kept run directory
#
# It starts loadbench's fixed upstream, null processor and null rate-limit service on
# the ports written in the kept Envoy configs, then one Envoy per configuration at a
# time. Needs valgrind, perf, c++filt and python3; run it as root (perf -p).
set -euo pipefail
keep=$1
out=${2:-/tmp/envoyprof}
envoy=$(readlink -f "${ENVOY_BIN:-.tools/bin/envoy}")
mkdir -p "$out"
rm -f "$out"/cg-*.out* "$out/components.args"
go build -o "$out/loadbench" ./bench/cmd/loadbench
go build -o "$out/hit" ./bench/envoyprof/hit
python3 bench/envoyprof/envoysyms.py "$envoy" "$out/syms.pkl"

port() { grep -o 'port_value: [0-9]*' "$1" | sed -n "$2p" | cut -d' ' -f2; }
cfg() { ls "$keep"/envoy-*-"$1".yaml | head -1; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$out/loadbench" upstream -kind fixed -addr 127.0.0.1:"$(port "$(cfg a)" 3)" >"$out/upstream.log" 2>&1 & pids+=($!)
"$out/loadbench" nullproc -addr 127.0.0.1:"$(port "$(cfg n)" 4)" >"$out/nullproc.log" 2>&1 & pids+=($!)
"$out/loadbench" nullrls -addr 127.0.0.1:"$(port "$(cfg r)" 4)" >"$out/nullrls.log" 2>&1 & pids+=($!)

# ready ADMIN_PORT PID: Envoy answers /ready; fails at once if it exited (a port taken).
ready() {
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "envoy exited: see $out" >&2; return 1; }
    sleep 0.2
  done
  return 1
}
requests() { curl -s "http://127.0.0.1:$1/stats" | awk '/^http.mcp.downstream_rq_total:/{print $2}'; }

n=2000
for c in a n r; do
  y=$(cfg $c); admin=$(port "$y" 1); listen=$(port "$y" 2); url=http://127.0.0.1:$listen/mcp
  # Instructions: one worker, 200 requests of warm-up uncounted, then n counted.
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/cg-$c.out" \
    "$envoy" -c "$y" --disable-hot-restart --concurrency 1 --log-level warning >"$out/cg-$c.log" 2>&1 &
  vp=$!
  ready "$admin" $vp
  "$out/hit" -url "$url" -c 4 -n 200
  callgrind_control -i on $vp >/dev/null; callgrind_control -z $vp >/dev/null
  "$out/hit" -url "$url" -c 4 -n $n
  callgrind_control -d $vp >/dev/null
  kill $vp; wait $vp || true
  ir=$(grep -h '^summary' "$out"/cg-$c.out.* | awk '{print $2}')
  echo "$c: $((ir / n)) instructions per request (callgrind, $n requests)"

  # CPU and system calls: two workers, 32 connections, 10 s of perf record, then 5 s of perf stat.
  "$envoy" -c "$y" --disable-hot-restart --concurrency 2 --log-level warning >"$out/envoy-$c.log" 2>&1 &
  ep=$!
  ready "$admin" $ep
  "$out/hit" -url "$url" -c 32 -d 22s & hp=$!
  sleep 3
  r0=$(requests "$admin"); t0=$(awk '{print $14+$15}' /proc/$ep/stat)
  perf record -F 1999 -g -p $ep -o "$out/perf-$c.data" -- sleep 10 >/dev/null 2>&1
  t1=$(awk '{print $14+$15}' /proc/$ep/stat); r1=$(requests "$admin")
  ms=$(echo "scale=4; ($t1-$t0)*1000/$(getconf CLK_TCK)/($r1-$r0)" | bc)
  echo "$c: $ms ms Envoy CPU per request ($((r1 - r0)) requests under perf)"
  echo "$c=$out/perf-$c.txt:$ms" >>"$out/components.args"
  r0=$(requests "$admin")
  perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_readv,syscalls:sys_enter_epoll_wait \
    -p $ep -o "$out/syscalls-$c.csv" -- sleep 5
  r1=$(requests "$admin")
  awk -F, -v n=$((r1 - r0)) -v c=$c '/sys_enter/{printf "%s: %s %.2f per request\n", c, $3, $1/n}' "$out/syscalls-$c.csv"
  wait $hp
  kill $ep; wait $ep || true
  perf script -i "$out/perf-$c.data" -F ip,sym,dso --no-demangle >"$out/perf-$c.txt" 2>/dev/null
done
python3 bench/envoyprof/components.py "$out/syms.pkl" $(cat "$out/components.args")
echo "callee trees: python3 bench/envoyprof/calltree.py $out/syms.pkl $out/cg-n.out.1 $n --top 40 'ExternalProcessing|Grpc'"
