package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// printer writes a command's result in the format --output chose. Every
// command prints its result through one, so that --output json means the
// same everywhere: the API's object (or list of objects) as indented JSON,
// nothing else on stdout.
type printer struct {
	json bool
	w    io.Writer
}

// newPrinter returns the printer for format ("text", "json", or "" for
// text); any other format is a usage error.
func newPrinter(format string, w io.Writer) (*printer, error) {
	switch format {
	case "", "text":
		return &printer{w: w}, nil
	case "json":
		return &printer{json: true, w: w}, nil
	}
	return nil, usagef("--output must be text or json, got %q", format)
}

// print writes v as JSON, or else calls text to write the text form.
func (p *printer) print(v any, text func(w io.Writer) error) error {
	if p.json {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(p.w)
}

// table writes v as JSON, or else header and rows as columns aligned by
// spaces (header and rows are tab-separated cells).
func (p *printer) table(v any, header string, rows []string) error {
	return p.print(v, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, r := range rows {
			fmt.Fprintln(tw, r)
		}
		return tw.Flush()
	})
}

// field is one "name: value" line of printer.fields.
type field struct{ name, value string }

// fields writes v as JSON, or else one aligned "name: value" line per field
// that has a value (an empty one says nothing worth a line).
func (p *printer) fields(v any, fs []field) error {
	return p.print(v, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, f := range fs {
			if f.value != "" {
				fmt.Fprintf(tw, "%s:\t%s\n", f.name, f.value)
			}
		}
		return tw.Flush()
	})
}

// row joins cells into one row of printer.table.
func row(cells ...any) string {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, "\t")
}
