package agent

import (
	"context"
	"time"

	"github.com/berth-project/berth/api"
)

// APIManager is the Manager an agent uses in production: the manager's
// HTTPS API through the public Go client.
//
// Two modes: the local mode (`berth up`, or `berth agent` on a manager's
// host) authenticates C with the admin token and leaves Identity nil; a
// joined agent (`berth agent --join`) authenticates C with its node
// certificate (Identity.Client) and sets Identity, so that the manager
// list is fetched again on every reconnect of the assignment stream and C
// fails over through it.
type APIManager struct {
	C        *api.Client
	Identity *Identity
}

// refreshTimeout bounds the manager-list refresh before a reconnect.
const refreshTimeout = 5 * time.Second

// Register implements Manager.
func (m APIManager) Register(ctx context.Context, reg api.NodeRegistration) (api.Node, error) {
	m.refresh(ctx)
	return m.C.RegisterNode(ctx, reg)
}

// Assignments implements Manager. Each call is a (re)connect: a joined
// agent first learns the current managers.
func (m APIManager) Assignments(ctx context.Context, nodeID string) (<-chan api.Assignments, error) {
	m.refresh(ctx)
	return m.C.WatchAssignments(ctx, nodeID)
}

// Report implements Manager.
func (m APIManager) Report(ctx context.Context, nodeID string, rep api.StatusReport) error {
	return m.C.ReportStatus(ctx, nodeID, rep)
}

// refresh updates a joined agent's manager list. A failure only logs at
// debug level: the known list still works, and the call that follows
// reports its own error.
func (m APIManager) refresh(ctx context.Context) {
	if m.Identity == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	if err := m.Identity.RefreshManagers(rctx, m.C); err != nil {
		m.Identity.log.Debug("could not refresh the manager list", "err", err)
	}
}

var _ Manager = APIManager{}
