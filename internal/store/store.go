// Package store keeps Berth's cluster state in etcd: it starts an embedded
// etcd member (or connects to external endpoints through the same clientv3
// code), offers typed collections with compare-and-swap on mod revision,
// batched transactions, watches from a revision, and leader election.
//
// It knows nothing of HTTP, scheduling or agents; the agent must never import
// it (agents talk to the API only).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Errors returned by the store. Wrap-checked with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrConflict = errors.New("store: changed concurrently")
	// ErrNotLeader means a fenced write was refused because its manager no
	// longer holds the leadership.
	ErrNotLeader = errors.New("store: not the leader any more")
	// ErrCompacted is sent on a watch whose start revision was compacted:
	// the watcher must list again.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrFutureRevision means a read asked for a revision the store has
	// not reached.
	ErrFutureRevision = errors.New("store: revision not reached yet")
)

// Config says where the state lives.
type Config struct {
	// DataDir holds the embedded member's data in DataDir/etcd.
	DataDir string
	// Endpoints, when set, are an external etcd cluster's client URLs and no
	// member is embedded.
	Endpoints []string
	// Prefix is the key prefix of every Berth key. Default "/berth/".
	Prefix string
	// Logger receives the store's own messages.
	Logger *slog.Logger
	// TLS secures the embedded member: its peer and client listeners take
	// only connections with a certificate from CAFile, and this store
	// connects with CertFile/KeyFile. Without it the member listens in
	// plain text on loopback (tests only).
	TLS *TLSFiles
	// Peer, when set, makes the embedded member one of several: its peer
	// URL is on an address other managers reach, and it may join an
	// existing cluster. Nil keeps the single-member default (peer and
	// client on loopback).
	Peer *PeerConfig
}

// TLSFiles are PEM files for mutual TLS with etcd.
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
}

// Store is an open connection to the state, with the embedded member if any.
type Store struct {
	cli    *clientv3.Client
	etcd   *embed.Etcd
	prefix string
	log    *slog.Logger
	// fence, when set, guards every transaction (see Fenced).
	fence []clientv3.Cmp

	Services *Collection[api.Service]
	Tasks    *Collection[api.Task]
	Nodes    *Collection[api.Node]
	// Agents holds what the manager needs to call a node's agent (its URL,
	// pinned certificate and secret); never served by the API.
	Agents *Collection[AgentRecord]
	// Versions keeps the last versions of every service's spec, keyed by
	// VersionKey.
	Versions *Collection[api.ServiceVersion]
	// Certificates holds the certificates users upload for the routing
	// mesh, with their keys; the API serves their keys to agents only.
	Certificates *Collection[CertRecord]
}

// VersionKey is the key of a service version in Versions: the service name
// and the zero-padded version, so that a prefix list is in version order.
func VersionKey(service string, version uint64) string {
	return fmt.Sprintf("%s/%020d", service, version)
}

// VersionPrefix is the key prefix of every kept version of a service.
func VersionPrefix(service string) string { return service + "/" }

// AgentRecord is the private part of a node's registration.
type AgentRecord struct {
	NodeID     string `json:"node_id"`
	URL        string `json:"url"`
	CertSHA256 string `json:"cert_sha256"`
	Secret     string `json:"secret"`
	Revision   int64  `json:"-"`
}

// MemberCN is the CommonName of the certificate embedded etcd members present
// to each other and use as clients (pki.CA.MemberCertificate issues it with
// this name; a test there keeps the two equal); the members accept no other.
const MemberCN = "berth-etcd"

// Open starts the embedded member (unless cfg.Endpoints is set) and connects
// to it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "/berth/"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{prefix: cfg.Prefix, log: cfg.Logger}
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		e, err := startEmbedded(ctx, cfg.DataDir, cfg.TLS, cfg.Peer, cfg.Logger)
		if err != nil {
			return nil, err
		}
		s.etcd = e
		endpoints = []string{e.Clients[0].Addr().String()}
	}
	ccfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
	}
	if cfg.TLS != nil && s.etcd != nil {
		tc, err := (transport.TLSInfo{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, TrustedCAFile: cfg.TLS.CAFile}).ClientConfig()
		if err != nil {
			s.closeEmbedded()
			return nil, fmt.Errorf("store: etcd client TLS: %w", err)
		}
		ccfg.TLS = tc
		for i, ep := range ccfg.Endpoints {
			ccfg.Endpoints[i] = "https://" + ep
		}
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		s.closeEmbedded()
		return nil, fmt.Errorf("store: connect to etcd %v: %w", endpoints, err)
	}
	s.cli = cli
	// Fail fast on an unreachable external cluster.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(sctx, s.prefix+"probe"); err != nil {
		s.Close()
		return nil, fmt.Errorf("store: etcd %v does not answer: %w", endpoints, err)
	}
	if s.etcd != nil && cfg.Peer != nil {
		if err := s.advertisePeerURL(sctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.collections()
	return s, nil
}

func (s *Store) collections() {
	s.Services = newCollection(s, "services/", serviceKey, serviceRev)
	s.Tasks = newCollection(s, "tasks/", taskKey, taskRev)
	s.Nodes = newCollection(s, "nodes/", nodeKey, nodeRev)
	s.Agents = newCollection(s, "agents/", func(a *AgentRecord) string { return a.NodeID },
		func(a *AgentRecord) *int64 { return &a.Revision })
	s.Versions = newCollection(s, "versions/", func(v *api.ServiceVersion) string { return VersionKey(v.Service, v.Version) },
		func(v *api.ServiceVersion) *int64 { return &v.Revision })
	s.Certificates = newCollection(s, "certificates/", func(c *CertRecord) string { return c.Name },
		func(c *CertRecord) *int64 { return &c.Revision })
}

// Fenced returns a view of the store whose every write also checks that l
// still holds the leadership, so that a manager that lost it (paused, cut
// off) cannot write after another took over: such writes fail with
// ErrNotLeader. Controllers write through it. Do not Close the view.
func (s *Store) Fenced(l *Leadership) *Store {
	f := &Store{cli: s.cli, prefix: s.prefix, log: s.log,
		fence: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.election.Key()), "=", l.election.Rev())}}
	f.collections()
	return f
}

// MaxRequestBytes is the largest request the embedded member accepts.
const MaxRequestBytes = 8 << 20

// etcdPorts is what the embedded member keeps between runs so that its URLs
// stay the same.
type etcdPorts struct {
	Client int `json:"client"`
	Peer   int `json:"peer"`
}

func startEmbedded(ctx context.Context, dataDir string, tlsFiles *TLSFiles, peer *PeerConfig, log *slog.Logger) (*embed.Etcd, error) {
	// The member's ports are picked free, then bound by etcd: another
	// process (a test running beside this one) may take one in between.
	// Then pick again, a few times.
	for attempt := 1; ; attempt++ {
		e, err := startEmbeddedOnce(ctx, dataDir, tlsFiles, peer, log)
		if err == nil || attempt == 5 || !addrInUse(err) {
			return e, err
		}
		log.Warn("a port picked for the embedded etcd was taken meanwhile; picking again", "err", err)
		if rerr := os.Remove(filepath.Join(dataDir, "etcd-ports.json")); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("store: %w", rerr)
		}
	}
}

// addrInUse reports whether err is a listener's "address already in use",
// however etcd wrapped it.
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

func startEmbeddedOnce(ctx context.Context, dataDir string, tlsFiles *TLSFiles, peer *PeerConfig, log *slog.Logger) (*embed.Etcd, error) {
	if dataDir == "" {
		return nil, errors.New("store: no data dir for the embedded etcd")
	}
	dir := filepath.Join(dataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	portsFile := filepath.Join(dataDir, "etcd-ports.json")
	var ports etcdPorts
	if b, err := os.ReadFile(portsFile); err == nil {
		_ = json.Unmarshal(b, &ports)
	}
	// A member that existed before keeps its data (and its membership); an
	// initial cluster only matters to a member that was never started.
	_, statErr := os.Stat(filepath.Join(dir, "member"))
	fresh := errors.Is(statErr, os.ErrNotExist)
	peerListen := "127.0.0.1"
	if peer != nil {
		if peer.Port > 0 {
			ports.Peer = peer.Port
		}
		if peer.ListenHost != "" {
			peerListen = peer.ListenHost
		}
	}
	for _, p := range []*int{&ports.Client, &ports.Peer} {
		if peer != nil && peer.Port > 0 && p == &ports.Peer {
			continue // asked for: a busy port is an error from etcd, not a surprise move
		}
		if *p == 0 || !portFree(*p) {
			n, err := freePort()
			if err != nil {
				return nil, fmt.Errorf("store: no free port for etcd: %w", err)
			}
			*p = n
		}
	}
	b, _ := json.Marshal(ports)
	if err := os.WriteFile(portsFile, b, 0o600); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	scheme := "http"
	if tlsFiles != nil {
		scheme = "https"
	}
	curl := mustURL(scheme + "://127.0.0.1:" + strconv.Itoa(ports.Client))
	purl := mustURL(scheme + "://127.0.0.1:" + strconv.Itoa(ports.Peer))
	lpurl := mustURL(scheme + "://" + net.JoinHostPort(peerListen, strconv.Itoa(ports.Peer)))
	name := "berth"
	if peer != nil {
		if peer.Name != "" {
			name = peer.Name
		}
		if peer.AdvertiseHost != "" {
			purl = mustURL(scheme + "://" + net.JoinHostPort(peer.AdvertiseHost, strconv.Itoa(ports.Peer)))
		}
	}
	cfg := embed.NewConfig()
	if tlsFiles != nil {
		// Any local user can reach a loopback port: only holders of a
		// certificate from the cluster CA may talk to the member.
		// The cluster CA also signs node certificates (every joined
		// worker has one): only the members' own certificate, by its
		// CommonName, may talk to etcd, on the client and the peer port.
		info := transport.TLSInfo{CertFile: tlsFiles.CertFile, KeyFile: tlsFiles.KeyFile,
			TrustedCAFile: tlsFiles.CAFile, ClientCertAuth: true, AllowedCNs: []string{MemberCN}}
		cfg.ClientTLSInfo = info
		cfg.PeerTLSInfo = info
	}
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{curl}
	cfg.AdvertiseClientUrls = []url.URL{curl}
	cfg.ListenPeerUrls = []url.URL{lpurl}
	cfg.AdvertisePeerUrls = []url.URL{purl}
	cfg.InitialCluster = cfg.Name + "=" + purl.String()
	if peer != nil && peer.InitialCluster != "" && fresh {
		cfg.InitialCluster = peer.InitialCluster
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.MaxTxnOps = 4096
	// A spec may be 1 MiB and a transaction carries at least one task.
	cfg.MaxRequestBytes = MaxRequestBytes
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	cfg.Metrics = "basic"
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store: embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("store: embedded etcd did not become ready in 60s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	log.Info("embedded etcd ready", "dir", dir, "name", name, "client", curl.String(), "peer", purl.String())
	return e, nil
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Client returns the etcd client, for what the typed access does not cover.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.prefix }

// Close disconnects and stops the embedded member.
func (s *Store) Close() error {
	var err error
	if s.cli != nil {
		err = s.cli.Close()
	}

	s.closeEmbedded()
	return err
}

func (s *Store) closeEmbedded() {
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}
