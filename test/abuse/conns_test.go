package abuse

import (
	"flag"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// How long the connection tests watch the server. The defaults keep the
// package short; a longer run watches past the server's handshake or
// keepalive timeouts, e.g. go test ./test/abuse -run NoPreface
// -preface-wait=130s, or -run IdleConnections -idle-observe=50s.
var (
	prefaceWait = flag.Duration("preface-wait", 15*time.Second,
		"how long TestNoPreface waits for the server to close connections that never sent the client preface")
	idleObserve = flag.Duration("idle-observe", 5*time.Second,
		"how long TestIdleConnections keeps 5,000 idle connections open before counting them")
)

const (
	// noPrefaceRSSBound: 500 connections that never said a word are owed no
	// more than their socket and a goroutine or two.
	noPrefaceRSSBound = 96 << 20
	// idleConnsRSSBound: 5,000 connections past the handshake but carrying no
	// stream; what the server keeps for each must be small.
	idleConnsRSSBound = 256 << 20
)

// rawConn is a TCP connection on which the attacker writes what it likes and
// reads until the server closes it, noting when.
type rawConn struct {
	c           net.Conn
	opened      time.Time
	done        chan struct{} // closed when the server closed the connection
	closedAfter time.Duration // set before done is closed
}

func dialRaw(addr string, first []byte) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	r := &rawConn{c: c, opened: time.Now(), done: make(chan struct{})}
	if len(first) > 0 {
		if _, err := c.Write(first); err != nil {
			c.Close()
			return nil, err
		}
	}
	go func() {
		defer close(r.done)
		_, _ = io.Copy(io.Discard, c)
		r.closedAfter = time.Since(r.opened)
	}()
	return r, nil
}

// dialMany runs dial n times on a few workers at once (an accept backlog
// holds only so many) and returns what succeeded and the first error.
func dialMany[C any](n int, dial func(i int) (C, error)) ([]C, int, error) {
	const workers = 32
	var mu sync.Mutex
	var out []C
	var failed int
	var first error
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				c, err := dial(i)
				mu.Lock()
				if err != nil {
					failed++
					if first == nil {
						first = err
					}
				} else {
					out = append(out, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out, failed, first
}

// TestNoPreface opens connections that never send the HTTP/2 client preface:
// half send nothing at all, half the first 16 of its 24 bytes. The server
// must close them; the test reports when.
func TestNoPreface(t *testing.T) {
	const conns = 500
	e := startExtproc(t)
	var open []*rawConn
	var waited time.Duration
	underAttack(t, e, noPrefaceRSSBound, func() {
		var failed int
		var err error
		open, failed, err = dialMany(conns, func(i int) (*rawConn, error) {
			if i%2 == 0 {
				return dialRaw(e.GRPCAddr, nil)
			}
			return dialRaw(e.GRPCAddr, []byte(http2.ClientPreface[:16]))
		})
		if failed > 0 {
			t.Errorf("%d of %d connections failed to open: %v", failed, conns, err)
		}
		start := time.Now()
		all := make(chan struct{})
		go func() {
			for _, r := range open {
				<-r.done
			}
			close(all)
		}()
		select {
		case <-all:
		case <-time.After(*prefaceWait):
		}
		waited = time.Since(start)
	})
	var closedAfter []time.Duration
	for _, r := range open {
		select {
		case <-r.done:
			closedAfter = append(closedAfter, r.closedAfter)
		default:
		}
		r.c.Close()
	}
	slices.Sort(closedAfter)
	t.Logf("%d connections without a preface: %d closed by the server within %v of the last one opening (%d still open)",
		len(open), len(closedAfter), waited.Round(time.Millisecond), len(open)-len(closedAfter))
	if len(closedAfter) > 0 {
		t.Logf("closed after: first %v, median %v, last %v", closedAfter[0].Round(time.Millisecond),
			quantile(closedAfter, 0.5).Round(time.Millisecond), closedAfter[len(closedAfter)-1].Round(time.Millisecond))
	}
	if len(closedAfter) < len(open) {
		t.Errorf("%d of %d connections that never sent the preface were still open after %v; want the server to close them",
			len(open)-len(closedAfter), len(open), *prefaceWait)
	}
}

// TestIdleConnections opens 5,000 connections that complete the HTTP/2
// handshake and then carry nothing, keeps them for idleObserve and reports
// how many the server closed. Whether it should close them that soon is the
// transport's choice; the test asserts only that the server stays up, small
// and answering.
func TestIdleConnections(t *testing.T) {
	const conns = 5000
	raiseNoFile(t, conns+1000)
	e := startExtproc(t)
	var open []*h2conn
	underAttack(t, e, idleConnsRSSBound, func() {
		var failed int
		var err error
		open, failed, err = dialMany(conns, func(int) (*h2conn, error) { return dialH2(e.GRPCAddr, true) })
		t.Logf("opened %d idle connections (%d failed to open; first error: %v)", len(open), failed, err)
		holdOpen(*idleObserve)
	})
	fc := &floodConns{all: open}
	fc.report(t)
	fc.closeAll()
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least n if it is lower.
// Setting it explicitly also makes the extproc started afterwards inherit it
// (os/exec otherwise restores the limit the test binary started with).
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors the test needs", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}
