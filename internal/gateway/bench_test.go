package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// fixedBackend answers every request with the same small response, with as
// little work as it can, so that a benchmark measures the gateway.
func fixedBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok")
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					// Requests have no body: read to the blank line.
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkProxyHTTP1 measures one keep-alive GET through the gateway's
// HTTP/1.1 path, with parallel clients. allocs/op counts the whole process,
// but the clients and the backend above allocate nothing per request.
func BenchmarkProxyHTTP1(b *testing.B) {
	g, err := New(Options{HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	var bs []Backend
	for _, id := range []string{"a", "b", "c"} {
		bs = append(bs, Backend{ID: id, Addr: fixedBackend(b)})
	}
	if err := g.Update(Config{Routes: []Route{{Service: "svc", Path: "/", Backends: bs}}}); err != nil {
		b.Fatal(err)
	}
	req := []byte("GET /some/path?x=1 HTTP/1.1\r\nHost: bench.example.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	// The answer's length is fixed (the request id has a fixed length).
	c0, err := net.Dial("tcp", g.HTTPAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	c0.Write(req)
	var first []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(first, []byte("\r\n\r\nok")) {
		n, err := c0.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		first = append(first, buf[:n]...)
	}
	c0.Close()
	size := len(first)

	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", g.HTTPAddr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		resp := make([]byte, size)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if _, err := io.ReadFull(c, resp); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
