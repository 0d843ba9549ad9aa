package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// Output formats of listings.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// addOutputFlag adds -o/--output to a listing command.
func addOutputFlag(cmd *cobra.Command) *string {
	var o string
	cmd.Flags().StringVarP(&o, "output", "o", outputTable, "output format: table or json")
	return &o
}

// checkOutput rejects an unknown output format as a usage error.
func checkOutput(o string) error {
	switch o {
	case outputTable, outputJSON:
		return nil
	}
	return usageErrorf("unknown output format %q: use table or json", o)
}

// listRunE returns the RunE of a listing command: it checks -o, fetches the
// rows through the API, and prints them as a JSON array with -o json, else
// through table. e may be nil for commands made without one: then the
// command's own env is used.
func listRunE[T any](e *env, out *string, fetch func(ctx context.Context, c *api.Client, args []string) ([]T, error),
	table func(e *env, rows []T) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		e := e
		if e == nil {
			e = envOf(cmd)
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		rows, err := fetch(cmd.Context(), c, args)
		if err != nil {
			return err
		}
		if *out == outputJSON {
			return writeJSONList(e.stdout, rows)
		}
		return table(e, rows)
	}
}

// writeJSON pretty-prints v.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// writeJSONList pretty-prints items as a JSON array: [] when empty, never
// null.
func writeJSONList[T any](w io.Writer, items []T) error {
	if items == nil {
		items = []T{}
	}
	return writeJSON(w, items)
}

// table writes aligned columns. Cells are cleaned of control characters so
// that text from the server cannot break the layout or the terminal.
type table struct {
	tw *tabwriter.Writer
	// wideLast lets the last column (an error, a reason) run to twice
	// the usual width: nothing follows it to push off the screen.
	wideLast bool
	// colored are the columns whose cells get a colour by their value
	// (see colorColumns); the header row gets the plain colour, so that
	// every cell of the column has the same invisible length.
	colored map[int]bool
	header  []string // written before the first row, once the columns are set up
	rows    int
}

func newTable(w io.Writer, header ...string) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 0, 3, ' ', 0), header: header}
}

func (t *table) row(cells ...string) {
	if t.header != nil {
		h := t.header
		t.header = nil
		t.row(h...)
	}
	for i, c := range cells {
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		text := cell(c)
		if t.wideLast && i == len(cells)-1 {
			text = cellOf(c, 2*maxCell)
		}
		if t.colored[i] {
			code := ansiPlain
			if t.rows > 0 {
				code = stateColor(text)
			}
			text = code + text + ansiReset
		}
		_, _ = io.WriteString(t.tw, text)
	}
	_, _ = io.WriteString(t.tw, "\n")
	t.rows++
}

func (t *table) flush() error {
	if t.header != nil { // no rows: the header alone
		h := t.header
		t.header = nil
		t.row(h...)
	}
	return t.tw.Flush()
}

// maxCell is the widest a table cell gets.
const maxCell = 60

// cell makes s safe and short for a table: control characters become
// spaces, an empty value becomes "-".
func cell(s string) string { return cellOf(s, maxCell) }

// cellOf is cell with a width of its own.
func cellOf(s string, width int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > width {
		s = string(r[:width-1]) + "…"
	}
	return s
}

// shortID returns the first 12 characters of an id.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ago says how long before now t was, in its largest unit: "5 seconds
// ago", "3 hours ago". A zero t gives "".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit + " ago"
		}
		return strconv.FormatInt(n, 10) + " " + unit + "s ago"
	}
	switch {
	case d < time.Minute:
		return plural(int64(d/time.Second), "second")
	case d < time.Hour:
		return plural(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int64(d/time.Hour), "hour")
	}
	return plural(int64(d/(24*time.Hour)), "day")
}

// formatPorts writes name:port pairs sorted by name.
func formatPorts(ports map[string]int) string {
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ":" + strconv.Itoa(ports[n])
	}
	return strings.Join(parts, ",")
}

// humanBytes formats a size with a binary unit and at most one decimal:
// "512MiB", "15.5GiB".
func humanBytes(n int64) string {
	if n <= 0 {
		return ""
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + units[i]
}
