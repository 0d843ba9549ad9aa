package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestDocsCoverEveryCommandAndFlag walks the command tree and fails when
// docs/cli.md does not name a command or one of its flags, so that the page
// cannot drift from the binary. A command must appear as "berth PATH" in
// the page; a flag as "--name" in the section of its command (the "## berth
// …" heading with the longest matching path), the global flags in the page's
// global table.
func TestDocsCoverEveryCommandAndFlag(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	sections := docSections(doc)
	list := doc[strings.Index(doc, "```text\n")+len("```text\n"):]
	list = list[:strings.Index(list, "```")]
	root := newRootCmd(osEnv())
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()

	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			path := sub.CommandPath()
			// The list at the top names every command that runs; the
			// shells of completion are named as "completion SHELL".
			listed := path
			if c.Name() == "completion" {
				listed = c.CommandPath()
			}
			if !sub.HasSubCommands() && !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(listed)+`\b`).MatchString(list) {
				t.Errorf("the command list at the top of docs/cli.md does not name %q", path)
			}
			if !strings.Contains(doc, path) && !strings.Contains(doc, listed) {
				t.Errorf("docs/cli.md does not mention %q", path)
			}
			text := sectionFor(sections, path)
			sub.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
				if f.Hidden || f.Name == "help" {
					return
				}
				long := regexp.MustCompile("--" + regexp.QuoteMeta(f.Name) + `\b`)
				short := regexp.MustCompile(`(^|[^-\w])-` + regexp.QuoteMeta(f.Shorthand) + `\b`)
				if !long.MatchString(text) && (f.Shorthand == "" || !short.MatchString(text)) {
					t.Errorf("docs/cli.md: the section for %q does not mention its flag --%s", path, f.Name)
				}
			})
			walk(sub)
		}
	}
	walk(root)
	global := sections["berth"]
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(global, "--"+f.Name) {
			t.Errorf("docs/cli.md: the global flags do not mention --%s", f.Name)
		}
	})
}

// docSections splits the page at its "## berth …" headings: command path →
// text of its section. The text before the first such heading is "berth".
func docSections(doc string) map[string]string {
	out := map[string]string{}
	cur := "berth"
	for _, line := range strings.SplitAfter(doc, "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok && strings.HasPrefix(h, "berth ") {
			cur = strings.TrimSpace(h)
		}
		out[cur] += line
	}
	return out
}

// sectionFor returns the section of the longest heading path that path
// starts with.
func sectionFor(sections map[string]string, path string) string {
	for p := path; ; {
		if s, ok := sections[p]; ok {
			return s
		}
		i := strings.LastIndex(p, " ")
		if i < 0 {
			return ""
		}
		p = p[:i]
	}
}
