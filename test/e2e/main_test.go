package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// berthBin is the berth binary TestMain built; repoRoot is the module root.
var berthBin, repoRoot string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// testMain builds the berth binary once into a temporary directory, runs the
// tests and removes the directory.
func testMain(m *testing.M) int {
	// Every test here runs the berth binary: the e2e tier, which -short
	// leaves out (testing.Short needs the flags parsed; m.Run parses them
	// again harmlessly).
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: -short: skips the e2e tier (builds and runs the berth binary)")
		return 0
	}
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "berth-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	berthBin = filepath.Join(dir, "berth")
	build := exec.Command(goTool(), "build", "-o", berthBin, "./cmd/berth")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the berth binary:", err)
		return 1
	}
	return m.Run()
}

// findRepoRoot walks up from the working directory (the package directory
// under go test) to the directory holding go.mod.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// goTool returns the go command that runs these tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// Under "go test" the go command is on PATH; as a last resort, ask for
	// it by name and let the error say what is missing.
	return "go"
}
