package api

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExamplesAreValid keeps examples/ deployable as they are: every spec
// there parses and validates.
func TestExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ParseServiceSpec(b)
		if err == nil {
			s.Normalize()
			err = s.Validate()
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
