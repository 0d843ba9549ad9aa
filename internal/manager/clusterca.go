package manager

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"

	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// clusterCA makes the store's cluster CA this manager's CA. The first
// manager of a cluster seeds the store with the CA of its data directory,
// so clusters made before the CA moved into the store keep theirs. A
// manager whose data directory holds another CA adopts the stored one: it
// is written over the local one and the API certificate is issued again
// from it (for hosts). It returns the CA and the API certificate to use.
func clusterCA(ctx context.Context, st *store.Store, local *pki.CA, cert tls.Certificate, hosts []string, log *slog.Logger) (*pki.CA, tls.Certificate, error) {
	rec, err := st.ClusterCA(ctx, func() (store.ClusterCARecord, error) {
		key, err := local.KeyPEM()
		if err != nil {
			return store.ClusterCARecord{}, err
		}
		return store.ClusterCARecord{CertPEM: string(local.CertPEM), KeyPEM: string(key)}, nil
	})
	if err != nil {
		return nil, cert, fmt.Errorf("manager: cluster CA: %w", err)
	}
	if rec.CertPEM == string(local.CertPEM) {
		return local, cert, nil
	}
	ca, err := pki.ParseCA([]byte(rec.CertPEM), []byte(rec.KeyPEM), local.Dir())
	if err != nil {
		return nil, cert, fmt.Errorf("manager: the stored cluster CA: %w", err)
	}
	if err := ca.SaveCA(); err != nil {
		return nil, cert, err
	}
	log.Warn("this data directory had another CA than the cluster's: adopted the cluster's", "ca", ca.Digest(), "was", local.Digest())
	cert, err = ca.ServerCertificate(hosts)
	if err != nil {
		return nil, cert, err
	}
	return ca, cert, nil
}

// clusterAdminToken returns the cluster's admin token: the one in the store,
// which the first manager seeds with local (its data directory's). A manager
// whose file holds another one (a second manager sharing an external etcd)
// adopts the cluster's and rewrites its file (0600).
func clusterAdminToken(ctx context.Context, st *store.Store, local, file string, log *slog.Logger) (string, error) {
	tok, err := st.AdminToken(ctx, local)
	if err != nil {
		return "", fmt.Errorf("manager: cluster admin token: %w", err)
	}
	if tok != local {
		if err := pki.WriteFileAtomic(file, []byte(tok+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("manager: cluster admin token: %w", err)
		}
		log.Info("adopted the cluster's admin token", "file", file)
	}
	return tok, nil
}
