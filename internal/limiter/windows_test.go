package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// A slot of two windows: the minute's bucket binds first; once the day's is
// spent, the day's binds, with its own retry, and ratelimit-policy lists both.
func TestSeveralWindowsInOneSlot(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := bucket.NewMemory(bucket.MemoryOptions{Now: func() time.Time { return now }})
	l := New(server(func(s *config.Server) {
		s.PerUser = []config.Bucket{{MaxTokens: 10, RefillPeriod: time.Minute}, {MaxTokens: 25, RefillPeriod: 24 * time.Hour}}
	}), Options{Store: store})
	req := post(call("1", "search"), "x-user-id", "alice")
	const policy = `"user";q=10;w=60, "user#w1";q=25;w=86400`
	allow := func(n int) {
		t.Helper()
		for i := range n {
			if d := l.Decide(context.Background(), req); !d.Allow {
				t.Fatalf("call %d at %s: got rejected (%s), want allowed", i, now.Format(time.TimeOnly), d.Headers)
			}
		}
	}
	deny := func(retry, ratelimit string) {
		t.Helper()
		d := l.Decide(context.Background(), req)
		want := []Header{
			{"content-type", "application/json"},
			{"retry-after", retry},
			{"ratelimit-policy", policy},
			{"ratelimit", ratelimit},
		}
		if diff := cmp.Diff(want, d.Headers); diff != "" {
			t.Errorf("at %s: headers (-want +got):\n%s", now.Format(time.TimeOnly), diff)
		}
		if d.Limit != "server" || d.Scope != "perUser" {
			t.Errorf("got limit %q scope %q, want server perUser", d.Limit, d.Scope)
		}
	}

	allow(10)
	deny("6", `"user";r=0;t=6`) // the minute's bucket: a token every 6s
	now = now.Add(time.Minute)
	allow(10)
	now = now.Add(time.Minute)
	allow(5)
	// The minute's bucket holds 5 more; the day's is spent: it earns a token
	// every 3456s, the first 120s of which have passed.
	deny("3336", `"user#w1";r=0;t=3336`)
	// A denial charges neither bucket.
	now = now.Add(3336 * time.Second)
	allow(1)
}

// Every bucket of every slot that applies is charged in one Take, each
// window under its own key.
func TestSeveralWindowsAreChargedUnderTheirOwnKeys(t *testing.T) {
	p := server(func(s *config.Server) {
		s.Shared = perMinute(100)
		s.Tools["search"] = config.Tool{Name: "search", Cost: 1,
			PerUser: []config.Bucket{{MaxTokens: 10, RefillPeriod: time.Minute}, {MaxTokens: 500, RefillPeriod: 24 * time.Hour}}}
	})
	st := &recordingStore{}
	l := New(p, Options{Store: st})
	if d := l.Decide(context.Background(), post(call("1", "search"), "x-user-id", "alice")); d.Outcome != OutcomeAllowed {
		t.Fatalf("got %q, want allowed", d.Outcome)
	}
	var keys *bucket.Keys
	want := []string{
		keys.Key("github", bucket.ScopeShared, "", ""),
		keys.Key("github", bucket.ScopeUserTool, "search", "header:alice"),
		keys.WindowKey("github", bucket.ScopeUserTool, "search", "header:alice", 1),
	}
	if diff := cmp.Diff(want, st.keys); diff != "" {
		t.Errorf("charged keys (-want +got):\n%s", diff)
	}
}
