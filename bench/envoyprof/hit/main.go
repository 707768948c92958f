// Command hit sends loadbench's request (an MCP tools/call POST) to a URL from a
// few keep-alive connections, a fixed number of times or for a fixed time. The
// profiling scripts in bench/envoyprof need a load that stops after N requests,
// so that callgrind's counts can be divided by N; loadbench runs by time only.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to POST to")
	conns := flag.Int("c", 8, "connections")
	n := flag.Int64("n", 0, "requests in all (0: send for -d)")
	d := flag.Duration("d", 0, "how long to send when -n is 0")
	flag.Parse()
	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxIdleConns: *conns}
	cl := &http.Client{Transport: tr}
	var sent, bad atomic.Int64
	deadline := time.Now().Add(*d)
	var wg sync.WaitGroup
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				if *n > 0 && sent.Add(1) > *n || *n == 0 && time.Now().After(deadline) {
					return
				}
				body := []byte(`{"jsonrpc":"2.0","id":` + strconv.Itoa(i) +
					`,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello from loadbench"}}}`)
				req, err := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
				if err != nil {
					bad.Add(1)
					return
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
				req.Header.Set("X-User-Id", "user-"+strconv.Itoa(w%16))
				resp, err := cl.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if bad.Load() > 0 {
		fmt.Fprintln(os.Stderr, "hit: failed requests:", bad.Load())
		os.Exit(1)
	}
}
