package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ctl's output formats (-w), as etcdctl names them: simple is etcdctl's
// line format, json the response as JSON, table a bordered table.
const (
	outputSimple = "simple"
	outputJSON   = "json"
	outputTable  = "table"
)

func checkOutput(format string) error {
	switch format {
	case outputSimple, outputJSON, outputTable:
		return nil
	}
	return fmt.Errorf("--write-out %q: want simple, json or table", format)
}

// table is a bordered table, etcdctl's -w table:
//
//	+-----+-------+
//	| KEY | VALUE |
//	+-----+-------+
//	| a   | 1     |
//	+-----+-------+
type table struct {
	header []string
	rows   [][]string
}

func newTable(header ...string) *table { return &table{header: header} }

// add appends a row; each cell is printed with %v.
func (t *table) add(cells ...any) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = fmt.Sprint(c)
	}
	t.rows = append(t.rows, row)
}

func (t *table) write(w io.Writer) error {
	widths := make([]int, len(t.header))
	for i, h := range t.header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	rule := func() {
		for _, w := range widths {
			b.WriteString("+")
			b.WriteString(strings.Repeat("-", w+2))
		}
		b.WriteString("+\n")
	}
	line := func(cells []string) {
		for i, c := range cells {
			fmt.Fprintf(&b, "| %s%s ", c, strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
		}
		b.WriteString("|\n")
	}
	rule()
	line(t.header)
	rule()
	for _, r := range t.rows {
		line(r)
	}
	if len(t.rows) > 0 {
		rule()
	}
	_, err := io.WriteString(w, b.String())
	return err
}
