package cluster

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// berthBin is the berth binary TestMain built.
var berthBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	flag.Parse() // testing.Short needs the flags; m.Run parses them again
	if testing.Short() || Available() != nil {
		return m.Run() // every test skips itself (RequireAvailable) with the reason
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
