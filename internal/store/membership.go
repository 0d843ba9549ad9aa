package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPeerPort is the port an embedded member that other managers may join
// listens on for its peers (the API is on 7443).
const DefaultPeerPort = 7444

// PeerConfig makes an embedded member reachable by other members.
type PeerConfig struct {
	// Name is the member's name in the cluster; default "berth" (the name
	// every single-member data dir has).
	Name string
	// ListenHost is the address the peer listener binds; default 127.0.0.1.
	// Use 0.0.0.0 to listen on every interface.
	ListenHost string
	// AdvertiseHost is the host in the peer URL the other members dial;
	// default 127.0.0.1. The member's certificate must name it.
	AdvertiseHost string
	// Port is the peer port. 0 keeps the port of the last run, or picks a
	// free one on loopback.
	Port int
	// InitialCluster, when set, joins an existing cluster instead of
	// starting a new one: "name=peerURL,..." as AddMember returned it,
	// including this member. It is ignored once the member has data.
	InitialCluster string
}

// Member is one member of the etcd cluster.
type Member struct {
	// ID is etcd's member id.
	ID uint64
	// Name is empty for a member that was added but never started.
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// Started reports whether the member ever joined (it has published its name).
func (m Member) Started() bool { return m.Name != "" }

// Errors of membership changes.
var (
	// ErrExternal is returned by membership calls on a store that uses an
	// external etcd: its members are not Berth's to change.
	ErrExternal = errors.New("store: etcd is external; change its members with etcdctl")
	// ErrMemberNotFound is returned for a member id the cluster does not know.
	ErrMemberNotFound = errors.New("store: no such etcd member")
)

// Embedded reports whether this store runs its own etcd member.
func (s *Store) Embedded() bool { return s.etcd != nil }

// MemberID is this store's own member id, 0 with an external etcd.
func (s *Store) MemberID() uint64 {
	if s.etcd == nil {
		return 0
	}
	return uint64(s.etcd.Server.MemberID())
}

// MemberName is this store's own member name, "" with an external etcd.
func (s *Store) MemberName() string {
	if s.etcd == nil {
		return ""
	}
	return s.etcd.Config().Name
}

// PeerURL is the peer URL this member advertises, "" with an external etcd.
func (s *Store) PeerURL() string {
	if s.etcd == nil {
		return ""
	}
	u := s.etcd.Config().AdvertisePeerUrls
	if len(u) == 0 {
		return ""
	}
	return u[0].String()
}

// Members lists the etcd cluster's members (also for an external etcd).
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	resp, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: list etcd members: %w", err)
	}
	out := make([]Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return out, nil
}

// AddMember adds a voting member named name with peerURL to the cluster and
// returns the initial-cluster string the new member must start with
// (PeerConfig.InitialCluster) and its id. The new member must start soon:
// until it does, the cluster needs one more live member for a quorum.
func (s *Store) AddMember(ctx context.Context, name, peerURL string) (initialCluster string, id uint64, err error) {
	if s.etcd == nil {
		return "", 0, ErrExternal
	}
	if err := checkPeerURL(peerURL); err != nil {
		return "", 0, err
	}
	if name == "" || strings.ContainsAny(name, "=,") {
		return "", 0, fmt.Errorf("store: member name %q: want a non-empty name without '=' or ','", name)
	}
	members, err := s.Members(ctx)
	if err != nil {
		return "", 0, err
	}
	for _, m := range members {
		if m.Name == name {
			return "", 0, fmt.Errorf("%w: a member named %s is already in the cluster", ErrExists, name)
		}
		if slices.Contains(m.PeerURLs, peerURL) {
			return "", 0, fmt.Errorf("%w: member %s already has peer URL %s", ErrExists, memberLabel(m), peerURL)
		}
	}
	// etcd refuses a new member until every member has been connected for
	// 5 s (its health interval): right after the last join, wait for that.
	var resp *clientv3.MemberAddResponse
	for {
		resp, err = s.cli.MemberAdd(ctx, []string{peerURL})
		if err == nil {
			break
		}
		if !isUnhealthy(err) {
			return "", 0, fmt.Errorf("store: add etcd member %s (%s): %w", name, peerURL, err)
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("store: add etcd member %s (%s): %w (a member may be down, or one joined less than 5s ago)", name, peerURL, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	var parts []string
	for _, m := range resp.Members {
		n := m.Name
		if m.ID == resp.Member.ID {
			n = name
		}
		if n == "" {
			// Another member added but not yet started: it cannot be named
			// here, and etcd does not need it to be.
			continue
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	s.log.Info("added etcd member", "name", name, "peer", peerURL, "id", strconv.FormatUint(resp.Member.ID, 16))
	return strings.Join(parts, ","), resp.Member.ID, nil
}

// RemoveMember removes the member with id from the cluster.
func (s *Store) RemoveMember(ctx context.Context, id uint64) error {
	if s.etcd == nil {
		return ErrExternal
	}
	// etcd refuses to remove a live member until the others have been
	// connected for 5 s, so that the removal cannot break the quorum.
	for {
		_, err := s.cli.MemberRemove(ctx, id)
		if err == nil {
			break
		}
		if strings.Contains(err.Error(), "member not found") {
			return fmt.Errorf("%w: %x", ErrMemberNotFound, id)
		}
		if !isUnhealthy(err) {
			return fmt.Errorf("store: remove etcd member %x: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: remove etcd member %x: %w (etcd waits until every member has been connected for 5s)", id, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	s.log.Info("removed etcd member", "id", strconv.FormatUint(id, 16))
	return nil
}

// advertisePeerURL makes the cluster's record of this member carry the peer
// URL it was started with: a data dir made by a single-member Berth (peer on
// loopback) that is now started to be joined by others moves its peer URL to
// the advertised address.
func (s *Store) advertisePeerURL(ctx context.Context) error {
	want := s.PeerURL()
	id := s.MemberID()
	members, err := s.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID != id {
			continue
		}
		if slices.Equal(m.PeerURLs, []string{want}) {
			return nil
		}
		if _, err := s.cli.MemberUpdate(ctx, id, []string{want}); err != nil {
			return fmt.Errorf("store: move this member's peer URL from %v to %s: %w", m.PeerURLs, want, err)
		}
		s.log.Info("etcd member's peer URL changed", "from", m.PeerURLs, "to", want)
		return nil
	}
	return fmt.Errorf("%w: this member (%x) is not in the cluster's member list (was it removed?)", ErrMemberNotFound, id)
}

func checkPeerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("store: peer URL %q: want scheme://host:port", raw)
	}
	return nil
}

func memberLabel(m Member) string {
	if m.Name != "" {
		return m.Name
	}
	return strconv.FormatUint(m.ID, 16)
}

// isUnhealthy reports whether etcd refused a membership change because a
// member has not been connected long enough.
func isUnhealthy(err error) bool {
	return errors.Is(err, rpctypes.ErrUnhealthy) || strings.Contains(err.Error(), rpctypes.ErrUnhealthy.Error())
}

// MemberStopped is closed when the embedded etcd member stops, for whatever
// reason: Close, or its removal from the cluster (etcd stops a removed
// member). Nil with an external etcd. Call it before Close.
func (s *Store) MemberStopped() <-chan struct{} {
	if s.etcd == nil {
		return nil
	}
	return s.etcd.Server.StopNotify()
}
