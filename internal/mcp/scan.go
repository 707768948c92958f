package mcp

import (
	"fmt"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner walks a body once, validating it as JSON the way encoding/json does
// (RFC 8259 grammar; invalid UTF-8 inside strings is accepted, as encoding/json,
// JavaScript and the Go SDK accept it and read it as U+FFFD), and accepting the
// values NaN, Infinity and -Infinity too: the Python SDK's parser
// (pydantic_core.from_json) accepts them, so its server runs a tools/call that
// holds one, and a limiter that called such a body not JSON would let it through.
type scanner struct {
	data []byte
	pos  int
	// depth counts the arrays and objects open at pos.
	depth int
	// kinds holds one bit per open level inside skipValue: 1 for an object, 0 for
	// an array, the first inlineLevels levels inline (no allocation for any
	// ordinary body), deeper ones in deep, grown on demand.
	kinds [inlineLevels / 64]uint64
	deep  []uint64
}

// inlineLevels is how many levels of nesting the scanner tracks without
// allocating.
const inlineLevels = 256

// peek returns the byte at pos, or 0 at the end (0 is never valid JSON there).
func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) syntaxError(context string) error {
	if s.pos >= len(s.data) {
		return fmt.Errorf("%w: unexpected end of body %s", ErrNotJSON, context)
	}
	return fmt.Errorf("%w: unexpected byte %q at offset %d %s", ErrNotJSON, s.data[s.pos], s.pos, context)
}

// open enters the array or object at pos.
func (s *scanner) open() error {
	if s.depth >= maxDepth {
		return fmt.Errorf("%w: nesting deeper than %d at offset %d", ErrNotJSON, maxDepth, s.pos)
	}
	s.depth++
	s.pos++
	return nil
}

// skipValue consumes one JSON value starting at pos (no leading space).
func (s *scanner) skipValue() error {
	base := s.depth
	for {
		// A value starts here.
		switch c := s.peek(); c {
		case '{', '[':
			if err := s.open(); err != nil {
				return err
			}
			s.setObject(c == '{')
			s.skipSpace()
			if c == '{' {
				if s.peek() == '}' {
					s.pos++
					s.depth--
					break
				}
				if err := s.skipKey(); err != nil {
					return err
				}
				continue
			}
			if s.peek() == ']' {
				s.pos++
				s.depth--
				break
			}
			continue
		case '"':
			if _, err := s.skipString(); err != nil {
				return err
			}
		case 't', 'f', 'n', 'N', 'I':
			if err := s.skipLiteral(literalFrom(c)); err != nil {
				return err
			}
		default:
			if err := s.skipNumber(); err != nil {
				return err
			}
		}
		// A value ended: close containers until one continues or the value is done.
		for {
			if s.depth == base {
				return nil
			}
			s.skipSpace()
			obj := s.isObject()
			c := s.peek()
			if c == ',' {
				s.pos++
				s.skipSpace()
				if obj {
					if err := s.skipKey(); err != nil {
						return err
					}
				}
				break
			}
			if (obj && c == '}') || (!obj && c == ']') {
				s.pos++
				s.depth--
				continue
			}
			return s.syntaxError("after container element")
		}
	}
}

func (s *scanner) setObject(obj bool) {
	w, bit := s.kindWord(s.depth), uint64(1)<<(s.depth%64)
	if obj {
		*w |= bit
	} else {
		*w &^= bit
	}
}

func (s *scanner) isObject() bool {
	return *s.kindWord(s.depth)&(uint64(1)<<(s.depth%64)) != 0
}

// kindWord returns the word of kinds that holds level depth's bit.
func (s *scanner) kindWord(depth int) *uint64 {
	i := depth / 64
	if i < len(s.kinds) {
		return &s.kinds[i]
	}
	i -= len(s.kinds)
	for len(s.deep) <= i {
		s.deep = append(s.deep, 0)
	}
	return &s.deep[i]
}

// skipKey consumes `"name" :` and the space after it.
func (s *scanner) skipKey() error {
	if s.peek() != '"' {
		return s.syntaxError("looking for object key")
	}
	if _, err := s.skipString(); err != nil {
		return err
	}
	s.skipSpace()
	if s.peek() != ':' {
		return s.syntaxError("after object key")
	}
	s.pos++
	s.skipSpace()
	return nil
}

// literalFrom returns the literal value that starts with c, one of "tfnNI".
func literalFrom(c byte) string {
	switch c {
	case 't':
		return "true"
	case 'f':
		return "false"
	case 'n':
		return "null"
	case 'N':
		return "NaN"
	}
	return "Infinity"
}

func (s *scanner) skipLiteral(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.syntaxError("in literal")
	}
	s.pos += len(lit)
	return nil
}

// skipNumber consumes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, or
// -Infinity.
func (s *scanner) skipNumber() error {
	if s.peek() == '-' {
		s.pos++
		if s.peek() == 'I' {
			return s.skipLiteral("Infinity")
		}
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		s.skipDigits()
	default:
		return s.syntaxError("looking for value")
	}
	if s.peek() == '.' {
		s.pos++
		if !isDigit(s.peek()) {
			return s.syntaxError("after decimal point")
		}
		s.skipDigits()
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !isDigit(s.peek()) {
			return s.syntaxError("in exponent")
		}
		s.skipDigits()
	}
	return nil
}

func (s *scanner) skipDigits() {
	for s.pos < len(s.data) && isDigit(s.data[s.pos]) {
		s.pos++
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipString consumes a string at pos (at '"'). plain reports that it holds no
// escape and no byte >= 0x80, so its bytes are its value.
func (s *scanner) skipString() (plain bool, err error) {
	plain = true
	i := s.pos + 1
	for i < len(s.data) {
		// Fast path over ordinary bytes, which is most of any argument string.
		var high byte
		for i < len(s.data) && !stringSpecial[s.data[i]] {
			high |= s.data[i]
			i++
		}
		if high >= utf8.RuneSelf {
			plain = false
		}
		if i == len(s.data) {
			break
		}
		c := s.data[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return plain, nil
		case c == '\\':
			plain = false
			if i+1 >= len(s.data) {
				s.pos = len(s.data)
				return false, s.syntaxError("in string escape")
			}
			switch s.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s.data) || !isHex4(s.data[i+2:i+6]) {
					s.pos = i
					return false, s.syntaxError("in \\u escape")
				}
				i += 6
			default:
				s.pos = i
				return false, s.syntaxError("in string escape")
			}
		case c < 0x20:
			s.pos = i
			return false, s.syntaxError("in string (control character)")
		}
	}
	s.pos = len(s.data)
	return false, s.syntaxError("in string")
}

// stringSpecial marks the bytes that end the fast path of skipString: the quote,
// the backslash and the control characters JSON forbids in strings.
var stringSpecial = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !isHex(c) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return isDigit(c) || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// isPlain reports whether a validated string body needs no decoding.
func isPlain(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// appendUnquoted appends the value of a validated string body (without its
// quotes) to dst, decoding exactly as encoding/json does: invalid UTF-8 bytes and
// unpaired surrogates become U+FFFD.
func appendUnquoted(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '\\':
			switch e := b[i+1]; e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(b[i+2:])
				i += 6
				if utf16.IsSurrogate(r) {
					if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' && isHex4(b[i+2:]) {
						if d := utf16.DecodeRune(r, hex4(b[i+2:])); d != unicode.ReplacementChar {
							dst = utf8.AppendRune(dst, d)
							i += 6
							continue
						}
					}
					r = unicode.ReplacementChar
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
			i += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, b[i:i+size]...)
			}
			i += size
		}
	}
	return dst
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case isDigit(c):
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
