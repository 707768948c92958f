package bucket

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Scope names what a bucket counts.
type Scope uint8

const (
	ScopeShared     Scope = iota // every limited call to the server: "shared"
	ScopeTool                    // one tool: "tool:<name>"
	ScopeMethod                  // one method: "method:<name>"
	ScopeUser                    // one user: "user:<id>"
	ScopeUserTool                // one user's calls of one tool: "user-tool:<name>:<id>"
	ScopeUserMethod              // one user's calls of one method: "user-method:<name>:<id>"
)

const (
	keyPrefix = "mcprl:v1:{"
	// idLen is the length of <id>: 32 hex characters, the first 128 bits of the
	// identity's SHA-256, enough to make collisions between users negligible while
	// keeping keys short.
	idLen = 32
)

// Key returns the Redis key of a bucket (SPEC §4):
// mcprl:v1:{<server>}:<scope>. name is the tool or method (ignored for shared and
// user scopes); identity is the raw user identity (ignored for non-user scopes),
// stored only as a hex SHA-256 prefix.
//
// server should be non-empty (the policy defaults it to "default"): Redis Cluster
// hashes a whole key whose tag is "{}", which would scatter a request's keys over
// slots. An undefined scope yields "", which every store rejects as ErrInvalidCharge.
//
// Key is the only place keys are built. It runs for every bucket of every request,
// hence one allocation and no fmt.
func Key(server string, scope Scope, name, identity string) string {
	var label string
	withName, withID := false, false
	switch scope {
	case ScopeShared:
		label = "shared"
	case ScopeTool:
		label, withName = "tool:", true
	case ScopeMethod:
		label, withName = "method:", true
	case ScopeUser:
		label, withID = "user:", true
	case ScopeUserTool:
		label, withName, withID = "user-tool:", true, true
	case ScopeUserMethod:
		label, withName, withID = "user-method:", true, true
	default:
		return ""
	}

	n := len(keyPrefix) + len(server) + len("}:") + len(label)
	if withName {
		n += len(name)
	}
	if withName && withID {
		n += len(":")
	}
	var id [idLen]byte
	if withID {
		sum := sha256.Sum256([]byte(identity))
		hex.Encode(id[:], sum[:idLen/2])
		n += idLen
	}

	var b strings.Builder
	b.Grow(n)
	b.WriteString(keyPrefix)
	b.WriteString(server)
	b.WriteString("}:")
	b.WriteString(label)
	if withName {
		b.WriteString(name)
		if withID {
			b.WriteByte(':')
		}
	}
	if withID {
		b.Write(id[:])
	}
	return b.String()
}
