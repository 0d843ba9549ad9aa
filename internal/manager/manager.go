// Package manager assembles a Berth manager: the store (embedded etcd or
// external), the TLS API server, and the controllers that only the elected
// leader runs. It is wiring only; the logic lives in the packages it starts.
package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	// HeartbeatTimeout is how long a node may go without a heartbeat before
	// it is down and its tasks are replaced elsewhere (default
	// nodemonitor.DefaultDownAfter).
	HeartbeatTimeout time.Duration
	// Join, when set, makes a manager whose data dir holds no cluster yet
	// join the cluster of the manager at Join.URL: its embedded etcd becomes
	// a member of that cluster. Ignored once the data dir has one.
	Join *JoinConfig
	// EtcdPeerPort is the port of the embedded member's peer listener, on
	// the advertised address. 0: store.DefaultPeerPort when the manager
	// advertises a non-loopback address or joins, else (the single-machine
	// default) a loopback port of its own.
	EtcdPeerPort int
	Version      string
	Logger       *slog.Logger
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
	id     string
	apiURL string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// closing is set by Close: the store stopping after it is expected.
	closing atomic.Bool
	// failed holds why the manager cannot serve any more (its etcd member
	// stopped: it was removed from the cluster); done closes then.
	failed   atomic.Pointer[error]
	done     chan struct{}
	doneOnce sync.Once
}

// ErrMemberStopped means the manager's embedded etcd member stopped while
// the manager ran: most often because it was removed from the cluster
// (`berth manager rm`), after which it cannot serve anything.
var ErrMemberStopped = errors.New("manager: this manager's etcd member stopped (removed from the cluster with `berth manager rm`?); the manager stops")

// Done is closed when the manager can no longer serve (see Err); Close does
// not close it.
func (m *Manager) Done() <-chan struct{} { return m.done }

// Err says why Done closed, nil while the manager serves.
func (m *Manager) Err() error {
	if p := m.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// health is the API's /healthz check of the manager itself.
func (m *Manager) health() error { return m.Err() }

// watchMember fails the manager when its etcd member stops unasked: a
// removed manager must not go on answering /healthz with ok.
func (m *Manager) watchMember(ctx context.Context, stopped <-chan struct{}) {
	select {
	case <-ctx.Done():
		return
	case <-stopped:
	}
	if m.closing.Load() {
		return
	}
	err := ErrMemberStopped
	m.failed.Store(&err)
	m.log.Error("this manager's etcd member stopped; it is unhealthy and stops", "err", err)
	m.doneOnce.Do(func() { close(m.done) })
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
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("manager: --listen %q: %w", cfg.Listen, err)
	}
	id, err := managerID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// The listener comes first: a joining manager tells the others its
	// API URL, port included.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("manager: listen on %s: %w (is another Berth running? use --listen)", cfg.Listen, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	adHost := host
	if adHost == "" || adHost == "0.0.0.0" || adHost == "::" {
		adHost = "127.0.0.1"
	}
	apiURL := "https://" + net.JoinHostPort(adHost, port)
	if len(cfg.AdvertiseHosts) > 0 {
		apiURL = "https://" + net.JoinHostPort(cfg.AdvertiseHosts[0], port)
	}
	_, statErr := os.Stat(filepath.Join(cfg.DataDir, "etcd", "member"))
	fresh := errors.Is(statErr, os.ErrNotExist)
	peer := peerConfig(cfg, host, id, fresh)
	if cfg.Join != nil {
		switch {
		case !fresh || (len(cfg.EtcdEndpoints) > 0 && fileExists(filepath.Join(cfg.DataDir, memberNameFile))):
			cfg.Logger.Info("this data dir is already a manager of a cluster; --join is ignored", "dir", cfg.DataDir)
		default:
			peerURL := ""
			if peer != nil {
				if peer.Port == 0 {
					if peer.Port, err = freePort(peer.ListenHost); err != nil {
						ln.Close()
						return nil, err
					}
				}
				peerURL = "https://" + net.JoinHostPort(peer.AdvertiseHost, strconv.Itoa(peer.Port))
			}
			initial, err := join(ctx, *cfg.Join, cfg.DataDir, id, apiURL, peerURL)
			if err != nil {
				ln.Close()
				return nil, err
			}
			if peer != nil {
				peer.Name, peer.InitialCluster = id, initial
			}
			cfg.Logger.Info("joined the cluster", "via", cfg.Join.URL, "member", id, "peer", peerURL)
		}
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "pki"), "Berth cluster CA")
	if err != nil {
		ln.Close()
		return nil, err
	}
	token, err := pki.LoadOrCreateToken(filepath.Join(cfg.DataDir, TokenFile))
	if err != nil {
		ln.Close()
		return nil, err
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
		ln.Close()
		return nil, err
	}
	memberHosts := []string{"127.0.0.1", "localhost"}
	if peer != nil && !slices.Contains(memberHosts, peer.AdvertiseHost) {
		memberHosts = append(memberHosts, peer.AdvertiseHost)
	}
	certFile, keyFile, err := ca.MemberCertificate(memberHosts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{DataDir: cfg.DataDir, Endpoints: cfg.EtcdEndpoints, Logger: cfg.Logger,
		TLS: &store.TLSFiles{CertFile: certFile, KeyFile: keyFile, CAFile: ca.CAFilePath()}, Peer: peer})
	if err != nil {
		ln.Close()
		if cfg.Join != nil && fresh {
			err = fmt.Errorf("%w (this manager's etcd member was added to the cluster but did not start: fix the cause and start again, or remove it with `berth manager rm %s` on another manager)", err, id)
		}
		return nil, err
	}
	// The cluster's CA is the one in the store (contract: shared by every
	// manager); the first manager seeds it with its own.
	ca, cert, err = clusterCA(ctx, st, ca, cert, hosts, cfg.Logger.WithGroup("manager"))
	if err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	// Every manager of the cluster accepts the same admin token: the first
	// seeds the store with its own, the others adopt it (and write it where
	// the CLI on their host finds it).
	if token, err = clusterAdminToken(ctx, st, token, filepath.Join(cfg.DataDir, TokenFile), cfg.Logger.WithGroup("manager")); err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	// Joining managers pin the CA whose digest their token carries: the
	// chain the API presents includes it.
	if len(cert.Certificate) == 1 {
		cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.WithGroup("manager"), store: st, ln: ln, token: token, caPEM: ca.CertPEM,
		id: id, apiURL: apiURL, done: make(chan struct{})}
	srv := apiserver.New(apiserver.Config{Store: st, Token: token, Logger: cfg.Logger, Version: cfg.Version, IsLeader: m.leader.Load,
		VersionHistory: cfg.VersionHistory, CA: ca, Health: m.health})
	// Node certificates of the cluster CA authenticate agents (mTLS); a
	// client without one (the CLI, a joining node) is let through to the
	// bearer-token and join checks of the API server.
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca.Cert)
	m.http = &http.Server{
		Handler: srv.Handler(),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.WithCA(cert, ca)},
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs},
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
	m.addr = "https://" + net.JoinHostPort(adHost, port)
	if err := m.writeClientFiles(); err != nil {
		m.closeNow()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	if stopped := st.MemberStopped(); stopped != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.watchMember(runCtx, stopped)
		}()
	}
	m.wg.Add(3)
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
	go func() {
		defer m.wg.Done()
		rec := store.ManagerRecord{ID: id, MemberName: st.MemberName(), MemberID: st.MemberID(), APIURL: apiURL,
			PeerURL: st.PeerURL(), Started: time.Now()}
		_ = st.KeepManagerRecord(runCtx, rec, store.ManagerTTL)
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
	id := m.id
	// A manager on the same data dir is the same manager: a session it left
	// behind when it died is certainly dead.
	if err := m.store.ReleaseStale(ctx, id); err != nil {
		m.log.Warn("could not release a stale leadership", "err", err)
	}
	for ctx.Err() == nil {
		l, err := m.store.Campaign(ctx, id, store.LeaderTTL)
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
func managerID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "manager-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	id := ids.New()
	if err := pki.WriteFileAtomic(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("manager: id: %w", err)
	}
	return id, nil
}

// ID is this manager's stable id (its etcd member name when it joined).
func (m *Manager) ID() string { return m.id }

// APIURL is the API URL this manager advertises to the other managers and
// to agents.
func (m *Manager) APIURL() string { return m.apiURL }

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// freePort returns a free TCP port on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("manager: no free port for etcd peers on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type runner interface{ Run(context.Context) error }

// controllers are what the leader runs; they write through st, which is
// fenced by the leadership.
func (m *Manager) controllers(st *store.Store) []runner {
	return []runner{
		orchestrator.New(orchestrator.Config{Store: st, Logger: m.cfg.Logger}),
		worker.New(worker.Config{Store: st, Logger: m.cfg.Logger}),
		nodemonitor.New(nodemonitor.Config{Store: st, Logger: m.cfg.Logger, DownAfter: m.cfg.HeartbeatTimeout}),
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
	m.closing.Store(true)
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
