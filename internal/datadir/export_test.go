package datadir

import (
	"os"
	"testing"
)

// LockFileForTest exposes a lock's open file to tests.
func LockFileForTest(t *testing.T, l *Lock) *os.File {
	t.Helper()
	return l.f
}
