#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs envoy and redis-server when
# missing (scripts/install-tools.sh), checks formatting and static analysis, runs
# every test with the race detector (unit, store conformance against a real
# redis-server, real Envoy integration), then a short fuzz of the MCP parser, of
# grpclite's connection handling and of the ext_proc request decoder.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
echo "== go test -race"
go test -race -count=1 -timeout 20m ./...
echo "== fuzz the MCP parser (${FUZZTIME:=20s})"
go test -run='^$' -fuzz=FuzzParse -fuzztime="$FUZZTIME" ./internal/mcp/
echo "== fuzz grpclite's connection handling ($FUZZTIME)"
go test -run='^$' -fuzz=FuzzConn -fuzztime="$FUZZTIME" ./internal/grpclite/
echo "== fuzz the ext_proc request decoder against proto.Unmarshal ($FUZZTIME)"
go test -run='^$' -fuzz=FuzzDecodeRequest -fuzztime="$FUZZTIME" ./internal/processor/
