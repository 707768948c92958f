package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Problem is one thing wrong with a policy file. Parse returns every Problem it
// finds, joined with errors.Join.
type Problem struct {
	// Path is the field path, e.g. "rateLimiting.tools[1].shared.maxTokens"; empty
	// when the problem concerns the whole file (empty file, YAML syntax error).
	Path string
	// Line is the 1-based line of the offending YAML node; 0 when unknown.
	Line int
	// Msg says what is wrong and, where it helps, how to fix it.
	Msg string

	column int // only to keep problems on one line in document order
}

// Error formats the problem as "path (line N): msg". Without a path it reads
// "line N: msg"; without a line it drops the line part.
func (p *Problem) Error() string {
	switch {
	case p.Path != "" && p.Line > 0:
		return p.Path + " (line " + strconv.Itoa(p.Line) + "): " + p.Msg
	case p.Path != "":
		return p.Path + ": " + p.Msg
	case p.Line > 0:
		return "line " + strconv.Itoa(p.Line) + ": " + p.Msg
	default:
		return p.Msg
	}
}

// Problems returns one line per problem found in err, in document order: the
// messages of every *Problem in err's tree (errors.Join and %w wrapping are
// followed). An error holding no Problem (a read error from Load) yields its own
// message; nil yields nil. It is what `extproc check-config` prints.
func Problems(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	var walk func(error)
	walk = func(e error) {
		if p, ok := e.(*Problem); ok {
			out = append(out, p.Error())
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			if inner := u.Unwrap(); inner != nil {
				walk(inner)
			}
		}
	}
	walk(err)
	if len(out) == 0 {
		return []string{err.Error()}
	}
	return out
}

// problems collects Problems while the file is walked. Checks that compare fields
// (duplicates, costs against buckets, shadowed servers) run after the walk, so the
// list is sorted by position before it is returned.
type problems struct {
	list []*Problem
}

func (ps *problems) add(line, column int, path, format string, args ...any) {
	ps.list = append(ps.list, &Problem{Path: path, Line: line, Msg: fmt.Sprintf(format, args...), column: column})
}

// err returns the joined problems in document order, or nil.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	slices.SortStableFunc(ps.list, func(a, b *Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.column, b.column))
	})
	errs := make([]error, len(ps.list))
	for i, p := range ps.list {
		errs[i] = p
	}
	return errors.Join(errs...)
}
