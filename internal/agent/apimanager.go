package agent

import (
	"context"

	"github.com/berth-project/berth/api"
)

// APIManager is the Manager an agent uses in production: the manager's
// HTTPS API through the public Go client.
type APIManager struct{ C *api.Client }

// Register implements Manager.
func (m APIManager) Register(ctx context.Context, reg api.NodeRegistration) (api.Node, error) {
	return m.C.RegisterNode(ctx, reg)
}

// Assignments implements Manager.
func (m APIManager) Assignments(ctx context.Context, nodeID string) (<-chan api.Assignments, error) {
	return m.C.WatchAssignments(ctx, nodeID)
}

// Report implements Manager.
func (m APIManager) Report(ctx context.Context, nodeID string, rep api.StatusReport) error {
	return m.C.ReportStatus(ctx, nodeID, rep)
}

var _ Manager = APIManager{}
