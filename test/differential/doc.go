// Package differential checks the limiter's body reader (internal/body)
// against the readers of real MCP servers, body by body: whenever a server's
// reader finds a call with method M (and, for tools/call, tool N) in a body,
// the limiter must either refuse the body or charge a call with the same
// method and name. A call the limiter neither charged nor refused is a way
// around every limit.
//
// The server readers are
//   - go-sdk: the official Go SDK v1.8.0 (jsonrpc.DecodeMessage, a batch
//     read as its Streamable HTTP transport reads one), in process;
//   - mcp-go: encoding/json into a struct, member names matched
//     case-insensitively, as mark3labs/mcp-go reads a message, in process;
//   - textdecoder and iconv: the TypeScript SDK 1.32.2 (reader.mjs), the
//     first ignoring the charset, the second decoding with the declared one
//     as Express's JSON parser and the SDK's SSE transport do;
//   - json and pydantic: the Python SDK 2.3.0's two paths (reader.py),
//     json.loads and pydantic_core.from_json.
//
// Each reader is looser than its server (any object with jsonrpc "2.0" and a
// string method is a call, batch elements included), so the test may ask the
// limiter to charge more than a server runs, never less. A call whose method
// is empty runs nothing and is not counted. A call whose name is not text
// (invalid UTF-8, or a surrogate the JavaScript or Python string holds)
// names no tool a policy can configure, so only its method must be charged.
//
// The corpus (testdata/corpus.txt, and bodies built in corpus_test.go) holds
// the tricky bodies; each is also sent with every charset header the limiter
// reads. Then a seeded mutation run derives DIFF_MUTATIONS bodies (default
// 3000) from the corpus; the seed is logged and DIFF_SEED replays a run. For a
// long search, run for hours with
//
//	DIFF_MUTATIONS=1000000 go test -count=1 -timeout 0 -run Differential -v ./test/differential/
//
// Node.js (with npm) and python3 with pydantic-core are needed: without them
// the test is skipped, or fails when CI is set. scripts/test.sh installs the
// pinned pydantic-core; the iconv-lite pin is package.json's.
package differential
