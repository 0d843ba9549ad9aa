package store

import (
	"context"
	"errors"
	"time"
)

// CertRecord is a certificate uploaded for the routing mesh: its chain, its
// key, and facts about the leaf read when it was checked. The key is served
// to agents only, never listed.
type CertRecord struct {
	Name      string    `json:"name"`
	CertPEM   string    `json:"cert_pem"`
	KeyPEM    string    `json:"key_pem"`
	DNSNames  []string  `json:"dns_names"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	Revision  int64     `json:"-"`
}

// String names the record without its key, so that logging one never leaks
// the key.
func (c CertRecord) String() string { return "certificate " + c.Name }

// GatewayCARecord is the routing mesh's certificate authority: a CA of its
// own, apart from the API's, whose key never leaves the managers.
type GatewayCARecord struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// String names the record without its key.
func (GatewayCARecord) String() string { return "gateway CA" }

// gatewayCAKey is where the gateway CA is kept, under the prefix.
const gatewayCAKey = "gateway/ca"

// ErrNoGatewayCA is returned by GatewayCA when none is stored and create is
// nil.
var ErrNoGatewayCA = errors.New("store: no gateway CA")

// GatewayCA returns the stored gateway CA. If there is none and create is
// not nil, it stores the one create makes, unless another manager stored one
// meanwhile: then that one is returned, so that every manager agrees on one
// CA. Writes are not fenced: any manager may create it.
func (s *Store) GatewayCA(ctx context.Context, create func() (GatewayCARecord, error)) (GatewayCARecord, error) {
	rec, _, err := getOrCreateJSON(ctx, s, gatewayCAKey, create, ErrNoGatewayCA)
	return rec, err
}
