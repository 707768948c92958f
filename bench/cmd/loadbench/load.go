package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Tools the load generator calls. The flood policy limits toolSearch to a tiny
// bucket and leaves toolEcho unlimited.
const (
	toolEcho   = "echo"
	toolSearch = "search"
)

// loadOptions configure one load run against one URL.
type loadOptions struct {
	URL         string
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// MaxRequests bounds the requests of the measured window (and the memory their
	// latencies take); the window ends early when it is reached.
	MaxRequests int
	// SearchPerTen is how many of every ten calls go to toolSearch; the rest call
	// toolEcho.
	SearchPerTen int
	// Users is how many distinct x-user-id values the requests carry.
	Users int
}

// window is what happens at the start and the end of the measured window: the CPU
// and counter snapshots. It runs on the load generator's control goroutine while the
// workers keep sending.
type window interface {
	begin(ctx context.Context) error
	end(ctx context.Context) error
}

// loadResult is what the workers saw in the measured window.
type loadResult struct {
	Elapsed   time.Duration   // the measured window, snapshot to snapshot
	Latencies []time.Duration // of requests that completed in the window, sorted
	Status    map[int]int     // HTTP status -> count, in the window
	Errors    int             // transport errors and bodies that were not JSON-RPC, in the window
	FirstErr  string
}

// Requests is how many requests completed in the window.
func (r loadResult) Requests() int { return len(r.Latencies) }

// percentile returns the q-quantile (0..1) of sorted by the nearest-rank method.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// workerStats is one worker's record; merged after the run, so workers share nothing.
type workerStats struct {
	lat      []time.Duration
	status   map[int]int
	errors   int
	firstErr string
}

// runLoad sends MCP tools/call POSTs from o.Concurrency workers over keep-alive
// connections: a warm-up, then the measured window bracketed by w.begin and w.end.
func runLoad(ctx context.Context, o loadOptions, w window) (loadResult, error) {
	tr := &http.Transport{
		MaxIdleConns:        o.Concurrency,
		MaxIdleConnsPerHost: o.Concurrency,
		MaxConnsPerHost:     o.Concurrency,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	// The window is [start, stop); workers read them once measuring has begun.
	var (
		mu          sync.Mutex
		start, stop time.Time
		measured    int // requests recorded so far, for MaxRequests
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stats := make([]*workerStats, o.Concurrency)
	var wg sync.WaitGroup
	for i := range o.Concurrency {
		ws := &workerStats{status: map[int]int{}}
		stats[i] = ws
		wg.Go(func() {
			worker(ctx, client, o, i, ws, func(begun, done time.Time) bool {
				mu.Lock()
				defer mu.Unlock()
				if start.IsZero() || begun.Before(start) || (!stop.IsZero() && done.After(stop)) {
					return false
				}
				measured++
				if measured >= o.MaxRequests {
					cancel()
				}
				return true
			})
		})
	}

	res, err := measure(ctx, o, w, func(t time.Time) {
		mu.Lock()
		start = t
		mu.Unlock()
	}, func(t time.Time) {
		mu.Lock()
		stop = t
		mu.Unlock()
	})
	cancel()
	wg.Wait()
	if err != nil {
		return loadResult{}, err
	}
	res.Status = map[int]int{}
	for _, ws := range stats {
		res.Latencies = append(res.Latencies, ws.lat...)
		for k, v := range ws.status {
			res.Status[k] += v
		}
		res.Errors += ws.errors
		if res.FirstErr == "" {
			res.FirstErr = ws.firstErr
		}
	}
	slices.Sort(res.Latencies)
	return res, nil
}

// measure waits out the warm-up, then brackets the window with the snapshots.
func measure(ctx context.Context, o loadOptions, w window, setStart, setStop func(time.Time)) (loadResult, error) {
	if err := sleepCtx(ctx, o.Warmup); err != nil {
		return loadResult{}, fmt.Errorf("warm-up: %w", err)
	}
	if err := w.begin(ctx); err != nil {
		return loadResult{}, err
	}
	t0 := time.Now()
	setStart(t0)
	// Ending early (MaxRequests reached) is not an error: ctx is then cancelled.
	_ = sleepCtx(ctx, o.Duration)
	t1 := time.Now()
	setStop(t1)
	if err := w.end(context.WithoutCancel(ctx)); err != nil {
		return loadResult{}, err
	}
	return loadResult{Elapsed: t1.Sub(t0)}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// worker sends requests one after another until ctx ends; record says whether a
// request falls in the measured window.
func worker(ctx context.Context, client *http.Client, o loadOptions, n int, ws *workerStats, record func(begun, done time.Time) bool) {
	user := "user-" + strconv.Itoa(n%max(o.Users, 1))
	buf := make([]byte, 0, 256)
	for seq := 0; ctx.Err() == nil; seq++ {
		tool := toolEcho
		if seq%10 < o.SearchPerTen {
			tool = toolSearch
		}
		buf = toolsCall(buf[:0], n*1_000_000_000+seq, tool)
		begun := time.Now()
		status, err := post(ctx, client, o.URL, user, buf)
		done := time.Now()
		if ctx.Err() != nil {
			return
		}
		if !record(begun, done) {
			continue
		}
		ws.lat = append(ws.lat, done.Sub(begun))
		if err != nil {
			ws.errors++
			if ws.firstErr == "" {
				ws.firstErr = err.Error()
			}
			continue
		}
		ws.status[status]++
	}
}

// toolsCall appends an MCP tools/call request for tool to b.
func toolsCall(b []byte, id int, tool string) []byte {
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = strconv.AppendInt(b, int64(id), 10)
	b = append(b, `,"method":"tools/call","params":{"name":"`...)
	b = append(b, tool...)
	return append(b, `","arguments":{"text":"hello from loadbench"}}}`...)
}

// post sends one request and reads the whole answer. A 200 must carry a JSON-RPC
// result or error, so that a misrouted request is not counted as a success.
func post(ctx context.Context, client *http.Client, url, user string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("X-User-Id", user)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusOK && !bytes.Contains(b, []byte(`"jsonrpc":"2.0"`)) {
		return 0, fmt.Errorf("200 without a JSON-RPC answer: %.200q", b)
	}
	return resp.StatusCode, nil
}
