package gateway

import (
	"net"
	"sync"
	"sync/atomic"
)

// limitListener accepts at most max connections at once. A connection over
// the limit is accepted and reset at once, so that a client sees an error
// rather than waiting in the kernel's backlog behind a slow attacker.
type limitListener struct {
	net.Listener
	max      int64
	active   atomic.Int64
	rejected atomic.Int64
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{Listener: ln, max: int64(max)}
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.active.Add(1) > l.max {
			l.active.Add(-1)
			l.rejected.Add(1)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // reset: do not keep the slot in TIME_WAIT
			}
			c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l}, nil
	}
}

// limitConn frees its slot when closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

// Close closes the connection and frees its slot once.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.active.Add(-1) })
	return err
}

// rawConn returns the connection under a limitConn, so that io.Copy between
// two TCP connections can use splice.
func rawConn(c net.Conn) net.Conn {
	if lc, ok := c.(*limitConn); ok {
		return lc.Conn
	}
	return c
}
