package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// tcpPort is a published TCP port's listener.
type tcpPort struct {
	port int
	ln   *limitListener
	once sync.Once
}

func (p *tcpPort) close() { p.once.Do(func() { p.ln.Close() }) }

// serveTCP accepts connections on p until it is closed.
func (g *Gateway) serveTCP(p *tcpPort) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		var delay time.Duration
		for {
			c, err := p.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors and the like: back off as
				// net/http does, rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				g.log.Warn("accept failed", "port", p.port, "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-g.ctx.Done():
					return
				}
				continue
			}
			delay = 0
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.handleTCP(p.port, c)
			}()
		}
	}()
}

// handleTCP proxies one client connection to a backend of port, trying
// another backend when one refuses.
func (g *Gateway) handleTCP(port int, c net.Conn) {
	defer c.Close()
	var tried []*backendState
	for attempt := 0; attempt < maxAttempts; attempt++ {
		t := g.acquire()
		b := t.tcp[port].pick(g.now, tried)
		t.release()
		if b == nil {
			return // no backend: the client sees the connection closed
		}
		bc, err := g.dialer.DialContext(b.kill, "tcp", b.Addr)
		if err != nil {
			b.inflight.Add(-1)
			g.ejectBackend(b, err)
			tried = append(tried, b)
			continue
		}
		b.succeeded()
		pipe(c, bc.(*net.TCPConn), b.kill)
		b.inflight.Add(-1)
		return
	}
}

// pipe copies both ways between client and backend until both directions
// end, passing half-closes on. An error in either direction, or the end of
// kill, closes both.
func pipe(client net.Conn, backend *net.TCPConn, kill context.Context) {
	stop := context.AfterFunc(kill, func() {
		client.Close()
		backend.Close()
	})
	defer stop()
	defer backend.Close()
	raw := rawConn(client) // a *net.TCPConn, so io.Copy can splice
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(backend, raw)
		if err != nil {
			client.Close()
			backend.Close()
			return
		}
		backend.CloseWrite()
	}()
	_, err := io.Copy(raw, backend)
	if err != nil {
		client.Close()
		backend.Close()
	} else if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	<-done
}
