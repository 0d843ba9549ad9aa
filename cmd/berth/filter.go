package main

import (
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// filters are the --filter KEY=VALUE flags of a listing: a row is shown when,
// for every key given, it matches one of that key's values (as docker
// does: values of one key are alternatives, different keys all apply).
type filters map[string][]string

// addFilterFlags adds --filter and -q/--quiet to a listing. keys are the
// filter keys it knows; quietWhat says what -q prints.
func addFilterFlags(cmd *cobra.Command, keys []string, quietWhat string) (raw *[]string, quiet *bool) {
	raw = new([]string)
	quiet = new(bool)
	cmd.Flags().StringArrayVar(raw, "filter", nil, "show only rows that match KEY=VALUE (repeatable; keys: "+strings.Join(keys, ", ")+")")
	cmd.Flags().BoolVarP(quiet, "quiet", "q", false, "print only "+quietWhat+", one a line")
	return raw, quiet
}

// parseFilters checks --filter values against the keys a listing knows.
func parseFilters(raw, keys []string) (filters, error) {
	f := filters{}
	for _, r := range raw {
		k, v, ok := strings.Cut(r, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, usageErrorf("--filter %q: want KEY=VALUE, such as state=running", r)
		}
		if !slices.Contains(keys, k) {
			sorted := slices.Clone(keys)
			sort.Strings(sorted)
			msg := "--filter %q: unknown key %q; use %s"
			if s := api.Suggest(k, keys); s != "" {
				return nil, usageErrorf(msg+" (did you mean %q?)", r, k, strings.Join(sorted, ", "), s)
			}
			return nil, usageErrorf(msg, r, k, strings.Join(sorted, ", "))
		}
		f[k] = append(f[k], strings.TrimSpace(v))
	}
	return f, nil
}

// match reports whether a row passes: get returns the row's values for a
// key (a task's node matches by id or host name, so it has two).
func (f filters) match(get func(key string) []string) bool {
	for k, want := range f {
		have := get(k)
		if !slices.ContainsFunc(want, func(w string) bool { return slices.Contains(have, w) }) {
			return false
		}
	}
	return true
}

// checkQuiet refuses -q with -o json: one asks for ids, the other for
// whole objects.
func checkQuiet(quiet bool, output string) error {
	if quiet && output == outputJSON {
		return usageErrorf("-q prints only ids; it does not go with -o json")
	}
	return nil
}
