package main

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"reflect"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// defaultPollInterval is how often the policy file is read to notice changes; a
// change applies after two polls that agree. Polling the content, not watching
// inodes, also catches Kubernetes ConfigMap updates, which swap a symlink above
// the file and leave its own mtime alone.
const defaultPollInterval = 2 * time.Second

// policyWatcher reloads the policy file when its content changes, or at once when
// told to (SIGHUP). A file that does not validate keeps the policy in force.
type policyWatcher struct {
	path     string
	interval time.Duration
	trigger  <-chan os.Signal // a value reloads now; nil: polling only
	current  *config.Policy   // the policy in force, last applied
	apply    func(*config.Policy)
	reloaded func(ok bool) // counts each attempt
	log      *slog.Logger
	last     [sha256.Size]byte // hash of the content last loaded or rejected
	// pending is a new content seen once; it is loaded when the next poll sees it
	// unchanged, so that a file caught half-written by an editor is not reported.
	pending [sha256.Size]byte
}

// contentHash reads the file for change detection; a file that cannot be read
// hashes as empty, so that its return is seen as a change.
func contentHash(path string) [sha256.Size]byte {
	b, _ := os.ReadFile(path)
	return sha256.Sum256(b)
}

// run polls until ctx is done.
func (w *policyWatcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			switch h := contentHash(w.path); {
			case h == w.last:
			case h == w.pending:
				w.reload(h)
			default:
				w.pending = h
			}
		case <-w.trigger:
			w.reload(contentHash(w.path))
		}
	}
}

func (w *policyWatcher) reload(h [sha256.Size]byte) {
	w.last = h
	p, err := config.Load(w.path)
	if err != nil {
		w.reloaded(false)
		w.log.Error("policy reload failed; keeping the policy in force",
			"file", w.path, "problems", config.Problems(err))
		return
	}
	prev := w.current
	w.apply(p)
	w.current = p
	w.reloaded(true)
	w.log.Info("policy reloaded", "file", w.path, "summary", summary(p))
	if redisConnectionChanged(prev.Redis, p.Redis) {
		// The store is built once; swapping it under in-flight decisions is not worth
		// the risk for a setting that changes with the deployment.
		w.log.Warn("the redis connection settings changed; they apply at the next restart", "file", w.path)
	}
}

// redisConnectionChanged compares what the store was built from. redis.timeout
// is not part of it: every decision reads it from the policy in force.
func redisConnectionChanged(a, b config.Redis) bool {
	a.Timeout, b.Timeout = 0, 0
	return !reflect.DeepEqual(a, b)
}
