package bucket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync"
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
	// identity's hash, enough to make collisions between users negligible while
	// keeping keys short.
	idLen = 32
)

// MinIdentityKeyBytes is the shortest identity key NewKeys accepts: 256 bits,
// SHA-256's own strength, so that guessing the key is never easier than
// guessing a hash.
const MinIdentityKeyBytes = 32

// Keys builds bucket keys. Its identity key is a secret that turns the hash of
// a user's identity into an HMAC: without it, anyone who can list the Redis
// keys can recover a low-entropy identity, such as a client IP, by hashing
// every candidate until one matches.
//
// A nil *Keys hashes identities with plain SHA-256 (the keys of releases
// without an identity key). Every replica sharing a store must use the same
// identity key, or each builds its own key, so its own bucket, for one user.
type Keys struct {
	// macs holds HMAC states keyed once each. Keying hashes the padded key
	// into an inner and an outer state; crypto/hmac saves both at the first
	// Reset and later Resets only restore them, so a pooled state costs Key
	// just the compressions of the identity and of the inner digest.
	macs sync.Pool // of *keyMAC
}

// keyMAC is one pooled HMAC state with the scratch space Key needs, so that
// hashing allocates nothing.
type keyMAC struct {
	h hash.Hash
	// chunk carries the identity into h: converting the string with
	// []byte(identity) for a call through the hash.Hash interface would
	// allocate a copy on every call.
	chunk [64]byte
	sum   [sha256.Size]byte
}

// NewKeys returns Keys hashing identities with HMAC-SHA-256 under identityKey,
// which must be at least MinIdentityKeyBytes long. The key is copied.
func NewKeys(identityKey []byte) (*Keys, error) {
	if len(identityKey) < MinIdentityKeyBytes {
		return nil, fmt.Errorf("identity key is %d bytes, want at least %d", len(identityKey), MinIdentityKeyBytes)
	}
	secret := append([]byte(nil), identityKey...)
	k := &Keys{}
	k.macs.New = func() any {
		m := &keyMAC{h: hmac.New(sha256.New, secret)}
		// The first Reset saves the keyed states that later ones restore.
		m.h.Reset()
		return m
	}
	return k, nil
}

// Key returns the Redis key of a bucket: mcprl:v1:{<server>}:<scope>. name is
// the tool or method (ignored for shared and user scopes); identity is the raw
// user identity (ignored for non-user scopes), stored only as the hex prefix of
// its HMAC under the identity key (of its SHA-256 when k is nil).
//
// server should be non-empty (the policy defaults it to "default"): Redis Cluster
// hashes a whole key whose tag is "{}", which would scatter a request's keys over
// slots. An undefined scope yields "", which every store rejects as ErrInvalidCharge.
//
// Key is the only place keys are built. It runs for every bucket of every request,
// hence one allocation and no fmt.
func (k *Keys) Key(server string, scope Scope, name, identity string) string {
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
		k.hashIdentity(&id, identity)
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

// hashIdentity writes the hex prefix of identity's hash to id.
func (k *Keys) hashIdentity(id *[idLen]byte, identity string) {
	if k == nil {
		sum := sha256.Sum256([]byte(identity))
		hex.Encode(id[:], sum[:idLen/2])
		return
	}
	m := k.macs.Get().(*keyMAC)
	m.h.Reset()
	for s := identity; len(s) > 0; {
		c := copy(m.chunk[:], s)
		m.h.Write(m.chunk[:c])
		s = s[c:]
	}
	sum := m.h.Sum(m.sum[:0])
	hex.Encode(id[:], sum[:idLen/2])
	k.macs.Put(m)
}
