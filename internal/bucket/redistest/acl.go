package redistest

import (
	"context"
	"crypto/rand"
	"testing"
)

// StartWithACL starts a redis-server on which user logs in with password and
// may do what rules allow: ACL SETUSER rules, e.g. "~mcprl:*", "+@all". The
// default user requires a random password (Server.Client knows it), so a client
// without valid credentials is refused, as in production. The user is created
// with ACL SETUSER once started: Restart brings the server back without it.
func StartWithACL(tb testing.TB, user, password string, rules ...string) *Server {
	tb.Helper()
	admin := rand.Text()
	s := startServer(tb, serverConfig{
		args:  []string{"--requirepass", admin},
		probe: probe{password: admin},
	})
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := s.Client(tb).Do(context.Background(), args...).Err(); err != nil {
		tb.Fatalf("redistest: ACL SETUSER %s: %v", user, err)
	}
	return s
}
