package cluster

import (
	"fmt"
	"os"
	"testing"
)

// berthBin is the berth binary TestMain built.
var berthBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if Available() != nil {
		return m.Run() // every test skips itself with the reason
	}
	bin, cleanup, err := BuildBerth()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	berthBin = bin
	return m.Run()
}
