package integration

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// jwtIssuer is the iss of every token the tests sign and the one Envoy expects.
const jwtIssuer = "https://issuer.integration.test"

// signer signs RS256 JWTs with the standard library only, and publishes its key as
// a JWKS for Envoy's jwt_authn filter.
type signer struct {
	kid string
	key *rsa.PrivateKey
}

func newSigner(t *testing.T, kid string) *signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, key: key}
}

var b64 = base64.RawURLEncoding

// jwks is the JSON Web Key Set holding the signer's public key.
func (s *signer) jwks(t *testing.T) string {
	t.Helper()
	e := big.NewInt(int64(s.key.E)).Bytes()
	b, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": s.kid,
		"n": b64.EncodeToString(s.key.N.Bytes()), "e": b64.EncodeToString(e),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// token signs claims (iss and exp are added) as header.payload.signature.
func (s *signer) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	all := map[string]any{"iss": jwtIssuer, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		all[k] = v
	}
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": s.kid})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	signingInput := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(nil, s.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signingInput + "." + b64.EncodeToString(sig)
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// jwtClaim reads the payload Envoy's jwt_authn filter verified and forwarded as
// metadata: the nested org.id when the token has one, else sub.
func TestJWTClaimIdentityFromEnvoyJWTAuthn(t *testing.T) {
	s := newSigner(t, "k1")
	env := start(t, `server: it
rateLimiting:
  perUser: {maxTokens: 2, refillPeriod: 1h}
identity:
  - jwtClaim: org.id
  - jwtClaim: sub
`, harness.Options{JWTAuthn: &envoyconfig.JWTAuthn{Issuer: jwtIssuer, JWKS: s.jwks(t)}})
	// initialize without a token: jwt_authn's allow_missing lets it through.
	raw := newRawClient(t, env.URL)
	alice := bearer(s.token(t, map[string]any{"sub": "alice"}))
	bob := bearer(s.token(t, map[string]any{"sub": "bob"}))
	// Two users of one organisation share its bucket: org.id comes first.
	carol := bearer(s.token(t, map[string]any{"sub": "carol", "org": map[string]any{"id": "acme"}}))
	dave := bearer(s.token(t, map[string]any{"sub": "dave", "org": map[string]any{"id": "acme"}}))
	id := 0
	call := func(hdr map[string]string) (string, reply) {
		id++
		ids := strconv.Itoa(id)
		return ids, raw.post(callBody(ids, demo.ToolEcho), hdr)
	}

	t.Run("a user's bucket limits that user after maxTokens", func(t *testing.T) {
		raw.t = t
		for i := range 2 {
			_, r := call(alice)
			checkPassed(t, "alice call "+strconv.Itoa(i+1), r)
		}
		ids, r := call(alice)
		checkRejected(t, r, ids, "server", "perUser")
	})
	t.Run("another user has a bucket of their own", func(t *testing.T) {
		raw.t = t
		for i := range 2 {
			_, r := call(bob)
			checkPassed(t, "bob call "+strconv.Itoa(i+1), r)
		}
	})
	t.Run("no token: perUser buckets are skipped", func(t *testing.T) {
		raw.t = t
		for i := range 5 {
			_, r := call(nil)
			checkPassed(t, "anonymous call "+strconv.Itoa(i+1), r)
		}
	})
	t.Run("nested claim org.id: one bucket for the organisation", func(t *testing.T) {
		raw.t = t
		for i := range 2 {
			_, r := call(carol)
			checkPassed(t, "carol call "+strconv.Itoa(i+1), r)
		}
		ids, r := call(dave)
		checkRejected(t, r, ids, "server", "perUser")
	})
	t.Run("invalid token: jwt_authn answers 401 before the limiter", func(t *testing.T) {
		raw.t = t
		forged := newSigner(t, "k1").token(t, map[string]any{"sub": "mallory"})
		parts := strings.Split(s.token(t, map[string]any{"sub": "mallory"}), ".")
		expired := s.token(t, map[string]any{"sub": "mallory", "exp": time.Now().Add(-time.Hour).Unix()})
		for name, tok := range map[string]string{
			"signed by another key": forged,
			"signature cut off":     parts[0] + "." + parts[1] + ".",
			"expired":               expired,
		} {
			if _, r := call(bearer(tok)); r.Status != http.StatusUnauthorized {
				t.Errorf("%s: got %d %q, want Envoy's 401", name, r.Status, r.Body)
			}
		}
	})
	// alice 2 + bob 2 + anonymous 5 + carol 2; nothing else reached the server.
	if got, want := env.Upstream.Calls(demo.ToolEcho), 11; got != want {
		t.Errorf("upstream echo calls: got %d, want %d", got, want)
	}
	// Identities are hashed into keys: no claim value is stored in Redis.
	for _, k := range redisKeys(t, env) {
		for _, who := range []string{"alice", "bob", "acme", "carol"} {
			if strings.Contains(k, who) {
				t.Errorf("redis key %q holds the identity %q, want it hashed", k, who)
			}
		}
	}
}
