package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxDatagram is the largest UDP payload.
const maxDatagram = 64 << 10

// udpPort is a published UDP port: one socket, and a session per client
// address, each with its own connected socket to one backend.
type udpPort struct {
	port int
	pc   *net.UDPConn

	mu       sync.Mutex
	closed   bool
	sessions map[netip.AddrPort]*udpSession
}

// udpSession maps one client address to one backend until idle.
type udpSession struct {
	p       *udpPort
	client  netip.AddrPort
	backend *backendState
	conn    *net.UDPConn
	last    atomic.Int64 // Unix nanoseconds of the last datagram from the client
	once    sync.Once
}

func newUDPPort(port int, pc *net.UDPConn) *udpPort {
	return &udpPort{port: port, pc: pc, sessions: map[netip.AddrPort]*udpSession{}}
}

// close closes the port's socket and every session.
func (p *udpPort) close() {
	p.mu.Lock()
	p.closed = true
	ss := make([]*udpSession, 0, len(p.sessions))
	for _, s := range p.sessions {
		ss = append(ss, s)
	}
	p.mu.Unlock()
	p.pc.Close()
	for _, s := range ss {
		s.close()
	}
}

// serveUDP reads datagrams from clients and forwards each to its session's
// backend, creating sessions as clients appear.
func (g *Gateway) serveUDP(p *udpPort) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, client, err := p.pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				g.log.Debug("udp read", "port", p.port, "err", err)
				continue
			}
			s := g.udpSession(p, client)
			if s == nil {
				continue // no backend, or too many sessions: drop
			}
			s.last.Store(time.Now().UnixNano())
			if _, err := s.conn.Write(buf[:n]); err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					g.ejectBackend(s.backend, err)
				}
				s.close()
			}
		}
	}()
}

// udpSession returns the session of client, creating it if needed.
func (g *Gateway) udpSession(p *udpPort, client netip.AddrPort) *udpSession {
	p.mu.Lock()
	s := p.sessions[client]
	n := len(p.sessions)
	p.mu.Unlock()
	if s != nil {
		return s
	}
	if n >= g.opts.MaxConns {
		return nil
	}
	var tried []*backendState
	for attempt := 0; attempt < maxAttempts; attempt++ {
		t := g.acquire()
		b := t.udp[p.port].pick(g.now, tried)
		t.release()
		if b == nil {
			return nil
		}
		raddr, err := net.ResolveUDPAddr("udp", b.Addr)
		var conn *net.UDPConn
		if err == nil {
			conn, err = net.DialUDP("udp", nil, raddr)
		}
		if err != nil {
			b.inflight.Add(-1)
			g.ejectBackend(b, err)
			tried = append(tried, b)
			continue
		}
		s = &udpSession{p: p, client: client, backend: b, conn: conn}
		s.last.Store(time.Now().UnixNano())
		// At the backend's drain timeout the session ends; until then it
		// stays put: a removed backend keeps its sessions (draining).
		stop := context.AfterFunc(b.kill, s.close)
		p.mu.Lock()
		if p.closed || b.kill.Err() != nil {
			p.mu.Unlock()
			stop()
			s.close()
			return nil
		}
		p.sessions[client] = s
		p.mu.Unlock()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer stop()
			g.udpReplies(s)
		}()
		return s
	}
	return nil
}

// udpReplies forwards the backend's datagrams to the client until the
// session is idle for UDPIdleTimeout or closed.
func (g *Gateway) udpReplies(s *udpSession) {
	defer s.close()
	idle := g.opts.UDPIdleTimeout
	buf := make([]byte, maxDatagram)
	for {
		last := time.Unix(0, s.last.Load())
		if time.Since(last) >= idle {
			return
		}
		s.conn.SetReadDeadline(last.Add(idle))
		n, err := s.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // the loop checks for client datagrams since
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				g.ejectBackend(s.backend, err)
			}
			return
		}
		s.backend.succeeded()
		if _, err := s.p.pc.WriteToUDPAddrPort(buf[:n], s.client); err != nil {
			return
		}
	}
}

// close ends the session once: later datagrams from the client start a new
// one.
func (s *udpSession) close() {
	s.once.Do(func() {
		s.p.mu.Lock()
		if s.p.sessions[s.client] == s {
			delete(s.p.sessions, s.client)
		}
		s.p.mu.Unlock()
		s.conn.Close()
		s.backend.inflight.Add(-1)
	})
}
