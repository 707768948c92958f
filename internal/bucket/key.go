package bucket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
)

// Scope names what a bucket counts.
type Scope uint8

const (
	ScopeShared       Scope = iota // every limited call to the server: "shared"
	ScopeTool                      // one tool: "tool:<name>"
	ScopeMethod                    // one method: "method:<name>"
	ScopeUser                      // one user: "user:<id>"
	ScopeUserTool                  // one user's calls of one tool: "user-tool:<name>:<id>"
	ScopeUserMethod                // one user's calls of one method: "user-method:<name>:<id>"
	ScopeTenant                    // one tenant: "tenant:<id>"
	ScopeTenantTool                // one tenant's calls of one tool: "tenant-tool:<name>:<id>"
	ScopeTenantMethod              // one tenant's calls of one method: "tenant-method:<name>:<id>"
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
// Key is WindowKey of window 0, the first (or only) bucket of a slot.
func (k *Keys) Key(server string, scope Scope, name, identity string) string {
	return k.WindowKey(server, scope, name, identity, 0)
}

// WindowKey is Key for the window-th bucket (from 0) of a slot that lists
// several. Window 0 is Key's key; window i >= 1 marks the scope's label with
// "#w<i>": mcprl:v1:{<server>}:user-tool#w1:<name>:<id>. The mark goes on the
// label, not after the name, because a tool may be named "search#w1": its
// key must not be the second window of "search". A negative window yields "".
func (k *Keys) WindowKey(server string, scope Scope, name, identity string, window int) string {
	return k.PlanKey(server, scope, name, identity, "", window)
}

// PlanKey is WindowKey for a bucket of a plan (config.Plans): a non-empty
// plan marks the scope's label with "@<plan>", before any window mark:
// mcprl:v1:{<server>}:user-tool@pro#w1:<name>:<id>. Plan names hold no ':',
// '@' or '#' (the policy checks), so no plan's key is another's. A user whose
// plan changes is charged other keys: they start on full buckets of the new
// plan, and the old plan's keys expire once full.
//
// PlanKey is the only place keys are built. It runs for every bucket of
// every request, hence one allocation and no fmt.
func (k *Keys) PlanKey(server string, scope Scope, name, identity, plan string, window int) string {
	label, withName, withID := scopeLabel(scope)
	if label == "" || window < 0 {
		return ""
	}
	var mark [96]byte // "@", a plan name (at most 64 bytes), "#w" and a decimal int
	m := windowMark(planMark(mark[:0], plan), window)

	n := len(keyPrefix) + len(server) + len("}:") + len(label) + len(m)
	if withName || withID {
		n += len(":")
	}
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
	b.Write(m)
	if withName || withID {
		b.WriteByte(':')
	}
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

// PolicyName is the readable name of a bucket: the scope part of its key
// without the hashed identity, e.g. "user-tool:search", for window 1
// "user-tool#w1:search", and for plan pro "user-tool@pro:search". "" for an
// undefined scope or a negative window.
func PolicyName(scope Scope, name, plan string, window int) string {
	label, withName, _ := scopeLabel(scope)
	if label == "" || window < 0 {
		return ""
	}
	var mark [96]byte
	s := label + string(windowMark(planMark(mark[:0], plan), window))
	if withName {
		s += ":" + name
	}
	return s
}

// scopeLabel returns the label of scope and whether its keys carry a name
// and an identity; label is "" for an undefined scope.
func scopeLabel(scope Scope) (label string, withName, withID bool) {
	switch scope {
	case ScopeShared:
		return "shared", false, false
	case ScopeTool:
		return "tool", true, false
	case ScopeMethod:
		return "method", true, false
	case ScopeUser:
		return "user", false, true
	case ScopeUserTool:
		return "user-tool", true, true
	case ScopeUserMethod:
		return "user-method", true, true
	case ScopeTenant:
		return "tenant", false, true
	case ScopeTenantTool:
		return "tenant-tool", true, true
	case ScopeTenantMethod:
		return "tenant-method", true, true
	}
	return "", false, false
}

// windowMark appends "#w<window>" to b, nothing for window 0.
func windowMark(b []byte, window int) []byte {
	if window == 0 {
		return b
	}
	return strconv.AppendInt(append(b, "#w"...), int64(window), 10)
}

// planMark appends "@<plan>" to b, nothing for no plan.
func planMark(b []byte, plan string) []byte {
	if plan == "" {
		return b
	}
	return append(append(b, '@'), plan...)
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
