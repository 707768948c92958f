package bucket

import "testing"

func TestKeyLayout(t *testing.T) {
	const alice = "2bd806c97f0e00af1a1fc3328fa763a9" // first 32 hex of SHA-256("alice")
	for _, tc := range []struct {
		name     string
		scope    Scope
		toolName string
		identity string
		want     string
	}{
		{"shared ignores name and identity", ScopeShared, "search", "alice", "mcprl:v1:{github}:shared"},
		{"tool", ScopeTool, "search", "alice", "mcprl:v1:{github}:tool:search"},
		{"method", ScopeMethod, "resources/read", "", "mcprl:v1:{github}:method:resources/read"},
		{"user hashes the identity", ScopeUser, "search", "alice", "mcprl:v1:{github}:user:" + alice},
		{"user-tool", ScopeUserTool, "search", "alice", "mcprl:v1:{github}:user-tool:search:" + alice},
		{"user-method", ScopeUserMethod, "resources/read", "alice", "mcprl:v1:{github}:user-method:resources/read:" + alice},
		{"empty identity is hashed too", ScopeUser, "", "", "mcprl:v1:{github}:user:e3b0c44298fc1c149afbf4c8996fb924"},
		{"identity cannot inject key parts", ScopeUser, "", "bob@example.com}:shared", "mcprl:v1:{github}:user:cb8ca743f531be0964134f306c8514b3"},
		{"undefined scope", Scope(42), "search", "alice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Key("github", tc.scope, tc.toolName, tc.identity); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKeyAllocatesOnce(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Key("github", ScopeUserTool, "search", "alice") }); n != 1 {
		t.Errorf("got %v allocations, want 1", n)
	}
}

func BenchmarkKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Key("github", ScopeUserTool, "search", "alice")
	}
}
