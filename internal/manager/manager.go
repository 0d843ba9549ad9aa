// Package manager assembles a Berth manager: the store (embedded etcd or
// external), the TLS API server, and the controllers that only the elected
// leader runs. It is wiring only; the logic lives in the packages it starts.
package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/internal/apiserver"
	"github.com/berth-project/berth/internal/ids"
	"github.com/berth-project/berth/internal/nodemonitor"
	"github.com/berth-project/berth/internal/orchestrator"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/scheduler/worker"
	"github.com/berth-project/berth/internal/store"
)

// Files a manager writes into its data directory for clients.
const (
	AddrFile  = "api.addr"
	TokenFile = "admin.token"
	CAFile    = "ca.pem"
)

// DefaultListen is where the API listens unless told otherwise: loopback
// only, so nothing is exposed by default.
const DefaultListen = "127.0.0.1:7443"

// Config is a manager's configuration.
type Config struct {
	DataDir string
	// Listen is the API's address (host:port); port 0 picks a free one.
	Listen string
	// EtcdEndpoints selects an external etcd instead of the embedded member.
	EtcdEndpoints []string
	// AdvertiseHosts are extra names and addresses for the API certificate.
	AdvertiseHosts []string
	// VersionHistory is how many versions of each service are kept
	// (default api.DefaultVersionHistory).
	VersionHistory int
	Version        string
	Logger         *slog.Logger
}

// Manager is a running manager.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	store  *store.Store
	http   *http.Server
	ln     net.Listener
	addr   string
	token  string
	caPEM  []byte
	leader atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start opens the store, starts serving the API and campaigns for leadership.
func Start(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("manager: data dir: %w", err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "pki"), "Berth cluster CA")
	if err != nil {
		return nil, err
	}
	token, err := pki.LoadOrCreateToken(filepath.Join(cfg.DataDir, TokenFile))
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("manager: --listen %q: %w", cfg.Listen, err)
	}
	hosts := append([]string{"127.0.0.1", "::1", "localhost"}, cfg.AdvertiseHosts...)
	if host != "" && host != "0.0.0.0" && host != "::" {
		hosts = append(hosts, host)
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	cert, err := ca.ServerCertificate(hosts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("manager: listen on %s: %w (is another Berth running? use --listen)", cfg.Listen, err)
	}
	certFile, keyFile, err := ca.MemberCertificate([]string{"127.0.0.1", "localhost"})
	if err != nil {
		ln.Close()
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{DataDir: cfg.DataDir, Endpoints: cfg.EtcdEndpoints, Logger: cfg.Logger,
		TLS: &store.TLSFiles{CertFile: certFile, KeyFile: keyFile, CAFile: ca.CAFilePath()}})
	if err != nil {
		ln.Close()
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.WithGroup("manager"), store: st, ln: ln, token: token, caPEM: ca.CertPEM}
	srv := apiserver.New(apiserver.Config{Store: st, Token: token, Logger: cfg.Logger, Version: cfg.Version, IsLeader: m.leader.Load,
		VersionHistory: cfg.VersionHistory})
	m.http = &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	// Streams (agent assignments, followed logs) never end by themselves:
	// end them when the server shuts down, so Shutdown does not wait on them.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	m.http.BaseContext = func(net.Listener) context.Context { return baseCtx }
	m.http.RegisterOnShutdown(cancelBase)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	adHost := host
	if adHost == "" || adHost == "0.0.0.0" || adHost == "::" {
		adHost = "127.0.0.1"
	}
	m.addr = "https://" + net.JoinHostPort(adHost, port)
	if err := m.writeClientFiles(); err != nil {
		m.closeNow()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		if err := m.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("API server stopped", "err", err)
		}
	}()
	go func() {
		defer m.wg.Done()
		m.lead(runCtx)
	}()
	m.log.Info("API listening", "addr", m.addr)
	return m, nil
}

func (m *Manager) writeClientFiles() error {
	if err := pki.WriteFileAtomic(filepath.Join(m.cfg.DataDir, CAFile), m.caPEM, 0o644); err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(m.cfg.DataDir, AddrFile), []byte(m.addr+"\n"), 0o644)
}

// lead campaigns for leadership and runs the controllers while leader.
func (m *Manager) lead(ctx context.Context) {
	id, err := m.managerID()
	if err != nil {
		m.log.Error("manager id", "err", err)
		id = ids.New()
	}
	// A manager on the same data dir is the same manager: a session it left
	// behind when it died is certainly dead.
	if err := m.store.ReleaseStale(ctx, id); err != nil {
		m.log.Warn("could not release a stale leadership", "err", err)
	}
	for ctx.Err() == nil {
		l, err := m.store.Campaign(ctx, id, 5*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("leader election failed; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		m.log.Info("became leader; starting controllers")
		m.leader.Store(true)
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, c := range m.controllers(m.store.Fenced(l)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.Run(lctx); err != nil {
					m.log.Error("controller stopped", "err", err)
				}
			}()
		}
		select {
		case <-l.Done():
			m.log.Warn("lost leadership; stopping controllers")
		case <-ctx.Done():
		}
		cancel()
		wg.Wait()
		m.leader.Store(false)
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = l.Resign(rctx)
		rcancel()
	}
}

// managerID returns this manager's stable id, kept in the data dir.
func (m *Manager) managerID() (string, error) {
	path := filepath.Join(m.cfg.DataDir, "manager-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	id := ids.New()
	return id, pki.WriteFileAtomic(path, []byte(id+"\n"), 0o600)
}

type runner interface{ Run(context.Context) error }

// controllers are what the leader runs; they write through st, which is
// fenced by the leadership.
func (m *Manager) controllers(st *store.Store) []runner {
	return []runner{
		orchestrator.New(orchestrator.Config{Store: st, Logger: m.cfg.Logger}),
		worker.New(worker.Config{Store: st, Logger: m.cfg.Logger}),
		nodemonitor.New(nodemonitor.Config{Store: st, Logger: m.cfg.Logger}),
	}
}

// Addr is the API's base URL (https://host:port).
func (m *Manager) Addr() string { return m.addr }

// Token is the admin token.
func (m *Manager) Token() string { return m.token }

// CAPEM is the cluster CA certificate that signs the API's certificate.
func (m *Manager) CAPEM() []byte { return m.caPEM }

// IsLeader reports whether this manager runs the controllers now.
func (m *Manager) IsLeader() bool { return m.leader.Load() }

// Close stops serving, stops the controllers and closes the store.
func (m *Manager) Close(ctx context.Context) error {
	err := m.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = m.http.Close()
	}
	m.cancel()
	m.wg.Wait()
	if cerr := m.store.Close(); err == nil {
		err = cerr
	}
	return err
}

func (m *Manager) closeNow() {
	m.ln.Close()
	m.store.Close()
}
