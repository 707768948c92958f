package bucket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// unsalted builds the keys of the store tests, which do not depend on how an
// identity is hashed.
var unsalted *Keys

// testIdentityKey is 32 bytes, the shortest key NewKeys accepts.
const testIdentityKey = "0123456789abcdef0123456789abcdef"

func newTestKeys(t testing.TB, secret string) *Keys {
	t.Helper()
	k, err := NewKeys([]byte(secret))
	if err != nil {
		t.Fatalf("NewKeys: %v", err)
	}
	return k
}

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
			if got := unsalted.Key("github", tc.scope, tc.toolName, tc.identity); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKeyWithIdentityKeyIsTheHMACPrefixOfTheIdentity(t *testing.T) {
	k := newTestKeys(t, testIdentityKey)
	// Identities longer than Key's copy buffer take several writes.
	for _, identity := range []string{"", "alice", "203.0.113.7", strings.Repeat("x", 64), strings.Repeat("long identity ", 40)} {
		mac := hmac.New(sha256.New, []byte(testIdentityKey))
		mac.Write([]byte(identity))
		want := "mcprl:v1:{github}:user-tool:search:" + hex.EncodeToString(mac.Sum(nil))[:idLen]
		if got := k.Key("github", ScopeUserTool, "search", identity); got != want {
			t.Errorf("identity %q: got %q, want %q", identity, got, want)
		}
	}
}

func TestKeyWithIdentityKeyDiffersFromWithout(t *testing.T) {
	k := newTestKeys(t, testIdentityKey)
	for _, scope := range []Scope{ScopeUser, ScopeUserTool, ScopeUserMethod} {
		with, without := k.Key("github", scope, "search", "alice"), unsalted.Key("github", scope, "search", "alice")
		if with == without {
			t.Errorf("scope %d: got %q with and without an identity key, want them to differ", scope, with)
		}
		// Only the hash changes: same prefix, same length.
		if len(with) != len(without) || with[:len(with)-idLen] != without[:len(without)-idLen] {
			t.Errorf("scope %d: got %q with an identity key, want the layout of %q", scope, with, without)
		}
	}
}

func TestKeyWithIdentityKeyLeavesSharedKeysAlone(t *testing.T) {
	k := newTestKeys(t, testIdentityKey)
	for _, scope := range []Scope{ScopeShared, ScopeTool, ScopeMethod} {
		if got, want := k.Key("github", scope, "search", "alice"), unsalted.Key("github", scope, "search", "alice"); got != want {
			t.Errorf("scope %d: got %q, want %q as without an identity key", scope, got, want)
		}
	}
}

func TestKeyIsStableForTheSameIdentityAndIdentityKey(t *testing.T) {
	// Two Keys stand for two replicas sharing the key.
	a, b := newTestKeys(t, testIdentityKey), newTestKeys(t, testIdentityKey)
	first := a.Key("github", ScopeUser, "", "alice")
	for i := range 3 {
		if got := a.Key("github", ScopeUser, "", "alice"); got != first {
			t.Errorf("call %d: got %q, want %q", i, got, first)
		}
	}
	if got := b.Key("github", ScopeUser, "", "alice"); got != first {
		t.Errorf("another Keys with the same identity key: got %q, want %q", got, first)
	}
}

func TestKeyDiffersUnderDifferentIdentityKeys(t *testing.T) {
	a := newTestKeys(t, testIdentityKey)
	b := newTestKeys(t, "1"+testIdentityKey[1:])
	if ka, kb := a.Key("github", ScopeUser, "", "alice"), b.Key("github", ScopeUser, "", "alice"); ka == kb {
		t.Errorf("got %q under both identity keys, want different keys", ka)
	}
}

func TestKeyNeverContainsTheIdentity(t *testing.T) {
	k := newTestKeys(t, testIdentityKey)
	for _, keys := range []*Keys{nil, k} {
		for _, identity := range []string{"203.0.113.7", "alice@example.com", "bob"} {
			for _, scope := range []Scope{ScopeUser, ScopeUserTool, ScopeUserMethod} {
				if got := keys.Key("github", scope, "search", identity); strings.Contains(got, identity) {
					t.Errorf("with identity key %v: got %q, want it not to contain %q", keys != nil, got, identity)
				}
			}
		}
	}
}

func TestKeyIsSafeForConcurrentUse(t *testing.T) {
	k := newTestKeys(t, testIdentityKey)
	want := k.Key("github", ScopeUser, "", "alice")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if got := k.Key("github", ScopeUser, "", "alice"); got != want {
					t.Errorf("got %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestNewKeysRejectsAShortIdentityKey(t *testing.T) {
	_, err := NewKeys([]byte(testIdentityKey[:MinIdentityKeyBytes-1]))
	if err == nil || !strings.Contains(err.Error(), "31 bytes, want at least 32") {
		t.Errorf("got error %v, want one saying 31 bytes, want at least 32", err)
	}
}

func TestNewKeysCopiesTheIdentityKey(t *testing.T) {
	secret := []byte(testIdentityKey)
	k := newTestKeys(t, string(secret))
	want := k.Key("github", ScopeUser, "", "alice")
	secret[0] ^= 0xff
	if got := k.Key("github", ScopeUser, "", "alice"); got != want {
		t.Errorf("after the caller changed its slice: got %q, want %q", got, want)
	}
}

func TestKeyAllocatesOnce(t *testing.T) {
	builders := []*Keys{nil}
	if !raceEnabled {
		builders = append(builders, newTestKeys(t, testIdentityKey))
	}
	for _, keys := range builders {
		if n := testing.AllocsPerRun(100, func() { _ = keys.Key("github", ScopeUserTool, "search", "alice") }); n != 1 {
			t.Errorf("with identity key %v: got %v allocations, want 1", keys != nil, n)
		}
	}
}

func BenchmarkKey(b *testing.B) {
	for _, bc := range []struct {
		name string
		keys *Keys
	}{
		{"without-identity-key", nil},
		{"with-identity-key", newTestKeys(b, testIdentityKey)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = bc.keys.Key("github", ScopeUserTool, "search", "alice")
			}
		})
	}
}

func TestWindowKeyLayout(t *testing.T) {
	const alice = "2bd806c97f0e00af1a1fc3328fa763a9"
	for _, tc := range []struct {
		scope    Scope
		toolName string
		plan     string
		window   int
		want     string
		policy   string
	}{
		{ScopeShared, "", "", 0, "mcprl:v1:{github}:shared", "shared"},
		{ScopeShared, "", "", 1, "mcprl:v1:{github}:shared#w1", "shared#w1"},
		{ScopeTool, "search", "", 2, "mcprl:v1:{github}:tool#w2:search", "tool#w2:search"},
		{ScopeMethod, "resources/read", "", 7, "mcprl:v1:{github}:method#w7:resources/read", "method#w7:resources/read"},
		{ScopeUser, "", "", 1, "mcprl:v1:{github}:user#w1:" + alice, "user#w1"},
		{ScopeUserTool, "search", "", 0, "mcprl:v1:{github}:user-tool:search:" + alice, "user-tool:search"},
		{ScopeUserTool, "search", "", 1, "mcprl:v1:{github}:user-tool#w1:search:" + alice, "user-tool#w1:search"},
		{ScopeUserMethod, "prompts/get", "", 12, "mcprl:v1:{github}:user-method#w12:prompts/get:" + alice, "user-method#w12:prompts/get"},
		{ScopeUser, "", "", -1, "", ""},
		{ScopeTenant, "", "", 0, "mcprl:v1:{github}:tenant:" + alice, "tenant"},
		{ScopeTenantTool, "search", "", 1, "mcprl:v1:{github}:tenant-tool#w1:search:" + alice, "tenant-tool#w1:search"},
		{ScopeTenantMethod, "prompts/get", "", 0, "mcprl:v1:{github}:tenant-method:prompts/get:" + alice, "tenant-method:prompts/get"},
		{ScopeUser, "", "pro", 0, "mcprl:v1:{github}:user@pro:" + alice, "user@pro"},
		{ScopeUserTool, "search", "free.v2", 1, "mcprl:v1:{github}:user-tool@free.v2#w1:search:" + alice, "user-tool@free.v2#w1:search"},
		{ScopeTenant, "", "enterprise", 2, "mcprl:v1:{github}:tenant@enterprise#w2:" + alice, "tenant@enterprise#w2"},
		{Scope(42), "search", "", 1, "", ""},
	} {
		if got := unsalted.PlanKey("github", tc.scope, tc.toolName, "alice", tc.plan, tc.window); got != tc.want {
			t.Errorf("PlanKey(%d, %q, %q, %d) = %q, want %q", tc.scope, tc.toolName, tc.plan, tc.window, got, tc.want)
		}
		if tc.plan == "" {
			if got := unsalted.WindowKey("github", tc.scope, tc.toolName, "alice", tc.window); got != tc.want {
				t.Errorf("WindowKey(%d, %q, %d) = %q, want %q", tc.scope, tc.toolName, tc.window, got, tc.want)
			}
		}
		if got := PolicyName(tc.scope, tc.toolName, tc.plan, tc.window); got != tc.policy {
			t.Errorf("PolicyName(%d, %q, %q, %d) = %q, want %q", tc.scope, tc.toolName, tc.plan, tc.window, got, tc.policy)
		}
	}
}

// A tool named like another tool's second window has a key of its own.
func TestWindowKeyNeverCollidesWithAToolName(t *testing.T) {
	for _, scope := range []Scope{ScopeTool, ScopeUserTool} {
		w1 := unsalted.WindowKey("github", scope, "search", "alice", 1)
		named := unsalted.Key("github", scope, "search#w1", "alice")
		if w1 == named {
			t.Errorf("scope %d: window 1 of search and tool search#w1 share key %q", scope, w1)
		}
	}
}

func TestWindowKeyAllocatesOnce(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = unsalted.WindowKey("github", ScopeUserTool, "search", "alice", 3) }); n != 1 {
		t.Errorf("WindowKey allocates %v times, want 1", n)
	}
	long := strings.Repeat("p", 64) // the longest plan name
	if n := testing.AllocsPerRun(100, func() { _ = unsalted.PlanKey("github", ScopeTenantTool, "search", "acme", long, 7) }); n != 1 {
		t.Errorf("PlanKey allocates %v times, want 1", n)
	}
}

// A user's and a tenant's buckets, and a plan's and the policy's own, never
// share a key, even when the user and the tenant have the same value.
func TestPlanAndTenantKeysAreTheirOwn(t *testing.T) {
	seen := map[string]string{}
	for _, scope := range []Scope{ScopeUser, ScopeUserTool, ScopeUserMethod, ScopeTenant, ScopeTenantTool, ScopeTenantMethod} {
		for _, plan := range []string{"", "pro", "free"} {
			for _, w := range []int{0, 1} {
				k := unsalted.PlanKey("github", scope, "search", "acme", plan, w)
				what := fmt.Sprintf("scope %d plan %q window %d", scope, plan, w)
				if other, dup := seen[k]; dup {
					t.Errorf("%s and %s share key %q", what, other, k)
				}
				seen[k] = what
			}
		}
	}
}
