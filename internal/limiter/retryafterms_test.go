package limiter

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

func TestRetryAfterMsFunc(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int64
	}{{0, 1}, {-time.Second, 1}, {time.Nanosecond, 1}, {time.Millisecond, 1}, {time.Millisecond + 1, 2}, {59999999 * time.Microsecond, 60000}, {time.Minute, 60000}}
	for _, tt := range tests {
		if got := retryAfterMs(tt.in); got != tt.want {
			t.Errorf("retryAfterMs(%v) got %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestRetryAfterMs checks the value the other tests mask: the wait of the
// binding bucket in milliseconds, rounded up, in the error data and in a tool
// result's _meta.
func TestRetryAfterMs(t *testing.T) {
	for _, format := range []config.Format{config.FormatJSONRPCError, config.FormatToolResult} {
		t.Run(string(format), func(t *testing.T) {
			l := New(server(func(s *config.Server) {
				s.Shared = perMinute(1)
				s.Response.Format = format
			}), Options{})
			if d := l.Decide(context.Background(), post(call("1", "a"))); !d.Allow {
				t.Fatalf("first call: got rejected %+v, want allowed", d)
			}
			d := l.Decide(context.Background(), post(call("2", "a")))
			if d.Allow {
				t.Fatal("second call: got allowed, want rejected")
			}
			var got struct {
				Error  struct{ Data map[string]any }
				Result struct {
					Meta map[string]any `json:"_meta"`
				}
			}
			if err := json.Unmarshal(d.Body, &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", d.Body, err)
			}
			hint := got.Error.Data
			if format == config.FormatToolResult {
				hint = got.Result.Meta
			}
			ms, ok := hint["retryAfterMs"].(float64)
			if !ok || ms <= 59000 || ms > 60000 || ms != float64(int64(ms)) {
				t.Errorf("retryAfterMs: got %v in %s, want an integer in (59000, 60000]", hint["retryAfterMs"], d.Body)
			}
			if secs := hint["retryAfterSeconds"]; secs != float64(60) {
				t.Errorf("retryAfterSeconds: got %v, want 60", secs)
			}
		})
	}
}
