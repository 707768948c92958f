package mcp

import (
	"strconv"
	"strings"
)

// Quota is one bucket as the RateLimit headers of
// draft-ietf-httpapi-ratelimit-headers (draft 10) describe it.
type Quota struct {
	// Policy names the bucket, e.g. "user-tool:search".
	Policy string
	// Max is the bucket's size; Window its refill period, whole seconds.
	Max, Window int64
	// Remaining tokens, and whole seconds until a retry can succeed.
	Remaining, Reset int64
}

// RateLimitHeaders returns the values of the ratelimit-policy and ratelimit
// headers for q.
func RateLimitHeaders(q Quota) (policy, ratelimit string) {
	name := SFString(q.Policy)
	policy = name + ";q=" + strconv.FormatInt(q.Max, 10) + ";w=" + strconv.FormatInt(q.Window, 10)
	ratelimit = name + ";r=" + strconv.FormatInt(q.Remaining, 10) + ";t=" + strconv.FormatInt(q.Reset, 10)
	return policy, ratelimit
}

// PolicyHeader returns the value of a ratelimit-policy header listing every
// quota, in order: a comma-separated list of items (RFC 9651), one per bucket
// that applied. For one quota it is RateLimitHeaders' policy.
func PolicyHeader(qs ...Quota) string {
	var b strings.Builder
	for i, q := range qs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(SFString(q.Policy))
		b.WriteString(";q=")
		b.WriteString(strconv.FormatInt(q.Max, 10))
		b.WriteString(";w=")
		b.WriteString(strconv.FormatInt(q.Window, 10))
	}
	return b.String()
}

// SFString renders a structured-field string (RFC 9651) from a policy name,
// replacing what sf-strings cannot carry.
func SFString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
