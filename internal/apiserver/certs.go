package apiserver

// TLS of the routing mesh (ADR 0017): certificates users upload, the
// gateway CA, and the signing of agents' requests for route certificates.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// gatewayCAName is the common name of the gateway CA.
const gatewayCAName = "Berth gateway CA"

// minRSABits is the smallest RSA key accepted for TLS.
const minRSABits = 2048

// checkedCert is what checkUpload learns about an upload.
type checkedCert struct {
	leaf *x509.Certificate
	// dnsNames are the leaf's DNS names, lower-cased.
	dnsNames []string
}

var sanName = regexp.MustCompile(`^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// checkUpload validates an uploaded certificate and key at now. Errors are
// *api.FieldError on cert_pem or key_pem. Key material is never quoted.
func checkUpload(up api.CertificateUpload, now time.Time) (checkedCert, error) {
	var out checkedCert
	if n := len(up.CertPEM) + len(up.KeyPEM); n > api.MaxCertificateBytes {
		return out, invalid("cert_pem", "the certificate and key are %s together; at most %s",
			api.ByteSize(n), api.ByteSize(api.MaxCertificateBytes))
	}
	chain, err := parseChain([]byte(up.CertPEM))
	if err != nil {
		return out, err
	}
	leaf := chain[0]
	if leaf.IsCA {
		return out, invalid("cert_pem", "the first certificate (%s) is a CA: put the server (leaf) certificate first, then its intermediates", leaf.Subject)
	}
	for i := 1; i < len(chain); i++ {
		if err := chain[i-1].CheckSignatureFrom(chain[i]); err != nil {
			return out, invalid("cert_pem", "certificate %d (%s) is not signed by certificate %d (%s): put the leaf first, then each issuer in order",
				i, chain[i-1].Subject, i+1, chain[i].Subject)
		}
	}
	if err := checkPublicKey(leaf.PublicKey); err != nil {
		return out, invalid("cert_pem", "the certificate's key: %s", err)
	}
	key, err := parseKey([]byte(up.KeyPEM))
	if err != nil {
		return out, err
	}
	if err := checkPublicKey(key.Public()); err != nil {
		return out, invalid("key_pem", "%s", err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return out, invalid("key_pem", "the key does not match the certificate (%s): upload the key the certificate was issued for", leaf.Subject)
	}
	// The pair as crypto/tls will load it, as a last check.
	if _, err := tls.X509KeyPair([]byte(up.CertPEM), []byte(up.KeyPEM)); err != nil {
		return out, invalid("key_pem", "the certificate and key do not load as a TLS key pair: %s", firstLineOf(err.Error()))
	}
	switch {
	case now.After(leaf.NotAfter):
		return out, invalid("cert_pem", "the certificate (%s) expired on %s", leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return out, invalid("cert_pem", "the certificate (%s) is not valid before %s", leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if len(leaf.DNSNames) == 0 {
		return out, invalid("cert_pem", "the certificate (%s) has no DNS names (subject alternative names): the gateway chooses certificates by the host name a client asks for", leaf.Subject)
	}
	for _, n := range leaf.DNSNames {
		l := strings.ToLower(strings.TrimSuffix(n, "."))
		if len(l) > 253 || !sanName.MatchString(l) {
			return out, invalid("cert_pem", "the certificate's DNS name %q is not a host name or a one-label wildcard", truncate(n))
		}
		out.dnsNames = append(out.dnsNames, l)
	}
	out.leaf = leaf
	return out, nil
}

// parseChain reads the PEM certificates of cert_pem.
func parseChain(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := data
	for i := 1; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, invalid("cert_pem", "PEM block %d is a %q; cert_pem holds only CERTIFICATE blocks (the key goes in key_pem)", i, truncate(b.Type))
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, invalid("cert_pem", "certificate %d does not parse: %s", i, firstLineOf(err.Error()))
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, invalid("cert_pem", "no PEM certificate found (want -----BEGIN CERTIFICATE-----)")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, invalid("cert_pem", "text after the last PEM certificate is not PEM")
	}
	return chain, nil
}

// parseKey reads the one private key of key_pem.
func parseKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, invalid("key_pem", "no PEM private key found (want -----BEGIN PRIVATE KEY-----)")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, invalid("key_pem", "holds more than one PEM block; upload only the certificate's private key")
	}
	if _, encrypted := b.Headers["DEK-Info"]; encrypted || b.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, invalid("key_pem", "the key is encrypted; upload it without a passphrase")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, invalid("key_pem", "PEM block is a %q, want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", truncate(b.Type))
	}
	if err != nil {
		// The parse error names no key bytes.
		return nil, invalid("key_pem", "the %s does not parse: %s", strings.ToLower(b.Type), firstLineOf(err.Error()))
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, invalid("key_pem", "a %T key cannot sign", k)
	}
	return s, nil
}

// checkPublicKey returns why a key is not fit for TLS 1.2 and later, or nil.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return fmt.Errorf("an RSA key of %d bits is too weak; use at least %d bits, or ECDSA P-256", n, minRSABits)
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not usable for TLS here; use P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("a %T key is not usable for TLS; use RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519", pub)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// certMeta is the key-less view of a stored certificate.
func certMeta(r store.CertRecord) api.Certificate {
	names := r.DNSNames
	if names == nil {
		names = []string{}
	}
	return api.Certificate{Name: r.Name, DNSNames: names, Subject: r.Subject, Issuer: r.Issuer,
		NotBefore: r.NotBefore, NotAfter: r.NotAfter, SHA256: r.SHA256, Created: r.Created, Updated: r.Updated}
}

// putCertificate stores an uploaded certificate after checking it; nothing
// is stored if it is refused. 201 when new, 200 when replaced.
func (s *Server) putCertificate(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := api.CheckCertificateName(name); err != nil {
		return err
	}
	var up api.CertificateUpload
	if err := readJSON(r, &up); err != nil {
		return err
	}
	now := s.now()
	c, err := checkUpload(up, now)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(c.leaf.Raw)
	rec := store.CertRecord{Name: name, CertPEM: up.CertPEM, KeyPEM: up.KeyPEM, DNSNames: c.dnsNames,
		Subject: c.leaf.Subject.String(), Issuer: c.leaf.Issuer.String(),
		NotBefore: c.leaf.NotBefore.UTC(), NotAfter: c.leaf.NotAfter.UTC(),
		SHA256: hex.EncodeToString(sum[:]), Created: now.UTC(), Updated: now.UTC()}
	ctx := r.Context()
	old, err := s.st.Certificates.Get(ctx, name)
	status := http.StatusCreated
	switch {
	case err == nil:
		rec.Created, rec.Revision = old.Created, old.Revision
		err = s.st.Certificates.Update(ctx, &rec)
		status = http.StatusOK
	case errors.Is(err, store.ErrNotFound):
		err = s.st.Certificates.Create(ctx, &rec)
	}
	if err != nil {
		return err
	}
	s.log.Info("certificate stored", "name", name, "dns_names", rec.DNSNames, "sha256", rec.SHA256, "not_after", rec.NotAfter)
	writeJSON(w, status, certMeta(rec))
	return nil
}

func (s *Server) listCertificates(w http.ResponseWriter, r *http.Request) error {
	recs, _, err := s.st.Certificates.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Certificate, len(recs))
	for i, rec := range recs {
		out[i] = certMeta(rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, 200, out)
	return nil
}

func (s *Server) getCertificate(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.st.Certificates.Get(r.Context(), r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no certificate named %q", r.PathValue("name"))
	}
	if err != nil {
		return err
	}
	writeJSON(w, 200, certMeta(rec))
	return nil
}

func (s *Server) deleteCertificate(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	err := s.st.Certificates.Delete(r.Context(), name, 0)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no certificate named %q", name)
	}
	if err != nil {
		return err
	}
	s.log.Info("certificate removed", "name", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// gatewayCA returns the cluster's gateway CA, creating it on first use.
// Managers racing to create it agree on one (store.GatewayCA).
func (s *Server) gatewayCA(ctx context.Context) (store.GatewayCARecord, error) {
	return s.st.GatewayCA(ctx, func() (store.GatewayCARecord, error) {
		ca, err := pki.NewGatewayCA(gatewayCAName)
		if err != nil {
			return store.GatewayCARecord{}, err
		}
		key, err := ca.KeyPEM()
		if err != nil {
			return store.GatewayCARecord{}, err
		}
		return store.GatewayCARecord{CertPEM: string(ca.CertPEM()), KeyPEM: string(key)}, nil
	})
}

func (s *Server) getGatewayCA(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.gatewayCA(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, err = io.WriteString(w, rec.CertPEM)
	return err
}

// signGatewayCSR signs an agent's certificate request for route hosts with
// the gateway CA. Every DNS name in it must be the host of a route of a
// stored service, compared exactly (case aside): a route for
// "*.example.test" allows that wildcard name only. The agent keeps its key.
func (s *Server) signGatewayCSR(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxCSRBytes+1))
	if err != nil {
		return err
	}
	if len(body) > api.MaxCSRBytes {
		return &api.Error{Code: api.CodeTooLarge, Status: http.StatusRequestEntityTooLarge,
			Message: "the certificate request is larger than " + api.ByteSize(api.MaxCSRBytes).String()}
	}
	csr, names, err := parseCSR(body)
	if err != nil {
		return err
	}
	ctx := r.Context()
	svcs, _, err := s.st.Services.List(ctx)
	if err != nil {
		return err
	}
	hosts := map[string]bool{}
	for _, svc := range svcs {
		for _, rt := range svc.Spec.Routes {
			if rt.Host != "" {
				hosts[strings.ToLower(rt.Host)] = true
			}
		}
	}
	for _, n := range names {
		if !hosts[n] {
			return &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Field: "csr",
				Message: fmt.Sprintf("%q is not the host of any service's route: the gateway CA signs route hosts only (upload a certificate with berth cert add for others)", truncate(n))}
		}
	}
	rec, err := s.gatewayCA(ctx)
	if err != nil {
		return err
	}
	chain, err := signLeaf(rec, csr, names, s.now())
	if err != nil {
		return err
	}
	s.log.Info("signed a gateway certificate", "names", names)
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, err = w.Write(chain)
	return err
}

// parseCSR checks a PEM certificate request and returns its DNS names,
// lower-cased.
func parseCSR(data []byte) (*x509.CertificateRequest, []string, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, nil, invalid("csr", "the body is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, nil, invalid("csr", "the certificate request does not parse: %s", firstLineOf(err.Error()))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, invalid("csr", "the certificate request's signature is wrong: %s", firstLineOf(err.Error()))
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, nil, invalid("csr", "%s", err)
	}
	if len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) > 0 {
		return nil, nil, invalid("csr", "the request names IP addresses, e-mail addresses or URIs; only DNS names of routes are signed")
	}
	if len(csr.DNSNames) == 0 {
		return nil, nil, invalid("csr", "the request names no DNS name")
	}
	if len(csr.DNSNames) > api.MaxRoutes {
		return nil, nil, invalid("csr", "the request names %d DNS names; at most %d", len(csr.DNSNames), api.MaxRoutes)
	}
	var names []string
	for _, n := range csr.DNSNames {
		names = append(names, strings.ToLower(n))
	}
	return csr, names, nil
}

// signLeaf issues a server certificate for names and csr's key with the
// stored gateway CA (pki.GatewayCA.SignCSR), and returns it followed by the
// CA certificate.
func signLeaf(rec store.GatewayCARecord, csr *x509.CertificateRequest, names []string, now time.Time) ([]byte, error) {
	ca, err := pki.LoadGatewayCA([]byte(rec.CertPEM), []byte(rec.KeyPEM))
	if err != nil {
		return nil, fmt.Errorf("apiserver: the stored gateway CA does not load: %w", err)
	}
	chain, err := ca.SignCSR(csr, names, now)
	if err != nil {
		return nil, fmt.Errorf("apiserver: sign a gateway certificate: %w", err)
	}
	return chain, nil
}

// streamGatewayCertificates streams every uploaded certificate, keys
// included, as NDJSON to agents: in full at once, then again after every
// change (debounced like the endpoints stream: the first change after a
// quiet spell at once, later ones within AssignmentDebounce batched), until
// the client goes away.
func (s *Server) streamGatewayCertificates(w http.ResponseWriter, r *http.Request) error {
	return s.follow(w, r, func(ctx context.Context, changes chan<- change) (func() any, error) {
		recs, rev, err := s.st.Certificates.List(ctx)
		if err != nil {
			return nil, err
		}
		certs := map[string]store.CertRecord{}
		for _, rec := range recs {
			certs[rec.Name] = rec
		}
		forward(ctx, changes, s.st.Certificates.Watch(ctx, rev), func(ev store.Event[store.CertRecord]) bool {
			rev = max(rev, ev.Revision)
			return mirror(certs, ev)
		})
		return func() any {
			msg := api.GatewayCertificates{Revision: rev, Certificates: []api.GatewayCertificate{}}
			for _, c := range certs {
				msg.Certificates = append(msg.Certificates, api.GatewayCertificate{Name: c.Name, CertPEM: c.CertPEM, KeyPEM: c.KeyPEM})
			}
			sort.Slice(msg.Certificates, func(i, j int) bool { return msg.Certificates[i].Name < msg.Certificates[j].Name })
			return msg
		}, nil
	})
}
