package abuse

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// floodConns is the set of connections an attack opened, for the report.
type floodConns struct {
	mu    sync.Mutex
	all   []*h2conn
	dials []error // failed dials
}

func (f *floodConns) add(h *h2conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = append(f.all, h)
}

// flood runs attack on n connections at once until each is done. The server
// closing a connection does not stop the attacker: it dials a new one and
// goes on (attack returns true to ask for that), until the deadline passes.
// With read false the connections are never read (a client that stopped
// reading); a closed connection then shows as a failed write.
func flood(t *testing.T, addr string, n int, read bool, deadline time.Time, attack func(h *h2conn) (again bool)) *floodConns {
	t.Helper()
	fc := &floodConns{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				h, err := dialH2(addr, read)
				if err != nil {
					fc.mu.Lock()
					fc.dials = append(fc.dials, err)
					fc.mu.Unlock()
					return
				}
				fc.add(h)
				again := attack(h)
				if !again {
					return
				}
				fc.mu.Lock()
				h.writeFailed = true
				fc.mu.Unlock()
				h.Close()
			}
		})
	}
	wg.Wait()
	return fc
}

// closeAll closes every connection and waits for their read loops.
func (f *floodConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.all {
		h.Close()
		<-h.done
	}
}

// report logs how the connections ended: how many the server closed, and how
// (GOAWAY code and debug data), when, and the grpc-status of streams it ended.
// Call it before closeAll, which ends them all.
func (f *floodConns) report(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	reasons := map[string]int{}
	statuses := map[string]int{}
	var closedAfter []time.Duration
	var rsts, settingsAcks, pingAcks int64
	for _, h := range f.all {
		rsts += h.rsts.Load()
		settingsAcks += h.settingsAcks.Load()
		pingAcks += h.pingAcks.Load()
		for k, v := range h.trailerStatuses() {
			statuses[k] += v
		}
		if !h.read {
			if h.writeFailed {
				reasons["never read, a write failed (closed by the server)"]++
			} else {
				reasons["never read, writable to the end"]++
			}
			continue
		}
		if !h.closed() {
			reasons["open"]++
			continue
		}
		closedAfter = append(closedAfter, h.closedAfter)
		h.mu.Lock()
		r := "closed"
		if h.goAway != nil {
			r = fmt.Sprintf("GOAWAY %v %q", h.goAway.ErrCode, h.goAway.DebugData())
		}
		h.mu.Unlock()
		reasons[r]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d connections", len(f.all))
	for _, k := range slices.Sorted(maps.Keys(reasons)) {
		fmt.Fprintf(&b, "; %d %s", reasons[k], k)
	}
	if len(closedAfter) > 0 {
		slices.Sort(closedAfter)
		fmt.Fprintf(&b, "; closed after %v to %v", closedAfter[0].Round(time.Millisecond), closedAfter[len(closedAfter)-1].Round(time.Millisecond))
	}
	if len(f.dials) > 0 {
		fmt.Fprintf(&b, "; %d dials failed (first: %v)", len(f.dials), f.dials[0])
	}
	fmt.Fprintf(&b, "; received %d RST_STREAM, %d SETTINGS acks, %d PING acks, stream ends by grpc-status %v", rsts, settingsAcks, pingAcks, statuses)
	t.Log(b.String())
}
