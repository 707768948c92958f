package differential

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// pydanticCoreVersion is the pydantic-core that mcp==2.3.0 installs today
// (through pydantic 2.14.4); scripts/test.sh installs it.
const pydanticCoreVersion = "2.50.5"

// call is one call a reader found.
type call struct {
	Method string `json:"method"`
	Name   string `json:"name"`
	// IllFormed: the method or name held what is not text (a lone surrogate
	// in JavaScript, a surrogate in Python); Name then names no tool.
	IllFormed bool `json:"illFormed"`
}

// reading is what one reader made of one body: ok false when it refused it.
type reading struct {
	OK    bool   `json:"ok"`
	Calls []call `json:"calls"`
	Err   string `json:"err"`
}

// nodeAnswer is reader.mjs's answer to one body.
type nodeAnswer struct {
	TextDecoder reading            `json:"textdecoder"`
	Iconv       map[string]reading `json:"iconv"`
}

// pythonAnswer is reader.py's answer to one body.
type pythonAnswer struct {
	JSON     reading `json:"json"`
	Pydantic reading `json:"pydantic"`
}

// process is a reader script answering one JSON line per request line.
type process struct {
	name   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
}

// start runs name with args in dir and returns it with its pipes.
func start(tb testing.TB, dir, name string, args ...string) *process {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	p := &process{name: filepath.Base(args[0]), cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = p.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.name, err)
	}
	p.in, p.out = in, bufio.NewReaderSize(out, 1<<20)
	return p
}

// stop closes the process's input, which ends it, and waits for it.
func (p *process) stop() {
	p.in.Close()
	_ = p.cmd.Wait()
}

// roundTrip sends every request (each one JSON line) and decodes the answers,
// in order, into answers[i]. Requests are written while answers are read, so
// that neither pipe fills up.
func (p *process) roundTrip(requests []any, answer func(i int, line []byte) error) error {
	werr := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(p.in, 1<<20)
		enc := json.NewEncoder(w)
		for _, r := range requests {
			if err := enc.Encode(r); err != nil {
				werr <- err
				return
			}
		}
		werr <- w.Flush()
	}()
	for i := range requests {
		line, err := p.out.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("%s stopped answering after %d of %d bodies: %v\n%s", p.name, i, len(requests), err, p.stderr)
		}
		if err := answer(i, line); err != nil {
			return fmt.Errorf("%s answered %q: %v", p.name, line, err)
		}
	}
	return <-werr
}

// readers holds the reader processes, shared by the tests of this binary.
type readers struct {
	node, python *process
}

var (
	readersOnce sync.Once
	shared      *readers
	sharedErr   string
	// started lists the processes to stop when the tests are done.
	started []*process
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, p := range started {
		p.stop()
	}
	os.Exit(code)
}

// needReaders returns the reader processes, started once per test binary.
// Without node, npm, python3 or pydantic-core the test is skipped, or fails
// under CI.
func needReaders(t *testing.T) *readers {
	t.Helper()
	dir := harness.NodeProject(t, "test/differential")
	if _, err := exec.LookPath("python3"); err != nil {
		missing(t, "python3 not found on PATH; install Python 3.10 or later")
	}
	readersOnce.Do(func() {
		// The processes serve every test of the binary; TestMain stops them.
		r := &readers{
			node:   start(t, dir, "node", "reader.mjs"),
			python: start(t, dir, "python3", "reader.py"),
		}
		started = append(started, r.node, r.python)
		line, err := r.python.out.ReadBytes('\n')
		var ready struct {
			Ready        bool   `json:"ready"`
			Python       string `json:"python"`
			PydanticCore string `json:"pydantic_core"`
		}
		if err == nil {
			err = json.Unmarshal(line, &ready)
		}
		switch {
		case err != nil:
			sharedErr = fmt.Sprintf("reader.py: %v\n%s", err, r.python.stderr)
		case !ready.Ready:
			sharedErr = fmt.Sprintf("python3 %s has no pydantic_core; run python3 -m pip install 'pydantic-core==%s'", ready.Python, pydanticCoreVersion)
		case ready.PydanticCore != pydanticCoreVersion && testtools.InCI():
			sharedErr = fmt.Sprintf("pydantic-core %s installed, the test pins %s (scripts/test.sh installs it)", ready.PydanticCore, pydanticCoreVersion)
		default:
			t.Logf("readers: node reader.mjs, python3 %s with pydantic-core %s", ready.Python, ready.PydanticCore)
			shared = r
		}
	})
	if shared == nil {
		missing(t, sharedErr)
	}
	return shared
}

// missing fails the test under CI, where nothing may pass by skipping, and
// skips it elsewhere.
func missing(t *testing.T, msg string) {
	t.Helper()
	if testtools.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// serverReadings are every server reader's reading of one body: plain by
// reader name, for the readers that ignore the charset, iconv by charset.
type serverReadings struct {
	plain map[string]reading
	iconv map[string]reading
	// node and python are the processes' answers, merged into plain once
	// both have answered (each goroutine writes only its own field).
	node   nodeAnswer
	python pythonAnswer
}

// readAll reads every body with every server reader; charsets are the charset
// parameters the iconv reading decodes each body with.
func (r *readers) readAll(bodies [][]byte, charsets []string) ([]serverReadings, error) {
	out := make([]serverReadings, len(bodies))
	nodeReqs := make([]any, len(bodies))
	pyReqs := make([]any, len(bodies))
	for i, b := range bodies {
		enc := base64.StdEncoding.EncodeToString(b)
		nodeReqs[i] = map[string]any{"body": enc, "charsets": charsets}
		pyReqs[i] = map[string]any{"body": enc}
		out[i] = serverReadings{plain: map[string]reading{
			"go-sdk": readGoSDK(b),
			"mcp-go": readMCPGo(b),
		}}
	}
	var wg sync.WaitGroup
	var nodeErr, pyErr error
	wg.Go(func() {
		nodeErr = r.node.roundTrip(nodeReqs, func(i int, line []byte) error {
			return json.Unmarshal(line, &out[i].node)
		})
	})
	wg.Go(func() {
		pyErr = r.python.roundTrip(pyReqs, func(i int, line []byte) error {
			return json.Unmarshal(line, &out[i].python)
		})
	})
	wg.Wait()
	if nodeErr != nil {
		return nil, nodeErr
	}
	if pyErr != nil {
		return nil, pyErr
	}
	for i := range out {
		o := &out[i]
		o.plain["textdecoder"] = o.node.TextDecoder
		o.plain["py-json"] = o.python.JSON
		o.plain["py-pydantic"] = o.python.Pydantic
		o.iconv = o.node.Iconv
	}
	return out, nil
}

// sdkUnmarshal decodes as the Go SDK's internal/json does: segmentio's decoder
// with member names matched exactly, reading the first value and ignoring
// what follows it.
func sdkUnmarshal(data []byte, v any) error {
	dec := segjson.NewDecoder(bytes.NewReader(data))
	dec.DontMatchCaseInsensitiveStructFields()
	return dec.Decode(v)
}

// readGoSDK reads a body as the Go SDK v1.8.0's Streamable HTTP server does
// (mcp.readBatch): an array of messages if it decodes as one, else a single
// message, each through jsonrpc.DecodeMessage; a tools/call's name as its
// params decode into CallToolParamsRaw.
func readGoSDK(body []byte) reading {
	var raws []json.RawMessage
	if err := sdkUnmarshal(body, &raws); err != nil {
		raws = []json.RawMessage{body}
	} else if len(raws) == 0 {
		return reading{Err: "empty batch"}
	}
	var rd reading
	for _, raw := range raws {
		msg, err := jsonrpc.DecodeMessage(raw)
		if err != nil {
			return reading{Err: err.Error()}
		}
		req, ok := msg.(*jsonrpc.Request)
		if !ok {
			continue
		}
		var params struct {
			Name string `json:"name"`
		}
		// A params that does not decode fails the call in the SDK; it is
		// still counted, unnamed: looser is safe.
		_ = sdkUnmarshal(req.Params, &params)
		rd.Calls = append(rd.Calls, goCall(req.Method, params.Name))
	}
	rd.OK = true
	return rd
}

// mcpGoMessage is what mark3labs/mcp-go decodes a request into (its
// baseMessage, then e.g. CallToolRequest), with encoding/json.
type mcpGoMessage struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	ID      any    `json:"id,omitempty"`
	Params  struct {
		Name string `json:"name"`
	} `json:"params"`
}

// readMCPGo reads a body as mcp-go v1.2.1 does: json.Unmarshal (case-folded
// member names, no trailing data), jsonrpc "2.0". mcp-go refuses batches, and
// a message with a member of the wrong type; this reading decodes each
// element of a batch anyway, and keeps what a type error leaves decoded
// (encoding/json carries on past one): looser is safe.
func readMCPGo(body []byte) reading {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		raws = []json.RawMessage{body}
	}
	var rd reading
	for _, raw := range raws {
		var m mcpGoMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			var typeErr *json.UnmarshalTypeError
			if !errors.As(err, &typeErr) {
				if len(raws) == 1 {
					return reading{Err: err.Error()}
				}
				continue
			}
		}
		if m.JSONRPC == "2.0" {
			rd.Calls = append(rd.Calls, goCall(m.Method, m.Params.Name))
		}
	}
	rd.OK = true
	return rd
}

// goCall is a call a Go decoder read: a string that is not UTF-8 is not text.
func goCall(method, name string) call {
	return call{Method: method, Name: name, IllFormed: !utf8.ValidString(method) || !utf8.ValidString(name)}
}
