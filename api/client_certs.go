package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// MaxPEMResponseBytes caps the PEM text GatewayCA and SignGatewayCertificate
// read.
const MaxPEMResponseBytes = 256 << 10

// MaxCertificatesMessageBytes is the largest message of the agents'
// certificate stream the client accepts.
const MaxCertificatesMessageBytes = 64 << 20

// PutCertificate uploads a certificate and its key under name, replacing
// one of that name. created reports whether the name is new. A certificate
// that is malformed, expired, not yet valid, without DNS names, or that does
// not match its key is refused with an *Error whose Field is cert_pem or
// key_pem, and nothing is stored.
func (c *Client) PutCertificate(ctx context.Context, name string, up CertificateUpload) (cert Certificate, created bool, err error) {
	b, err := json.Marshal(up)
	if err != nil {
		return cert, false, fmt.Errorf("api: encoding certificate: %w", err)
	}
	path := "/certificates/" + url.PathEscape(name)
	resp, err := c.do(ctx, http.MethodPut, path, nil, bytes.NewReader(b), "application/json")
	if err != nil {
		return cert, false, err
	}
	defer drainClose(resp.Body)
	if err := decodeBody(resp, &cert); err != nil {
		return cert, false, fmt.Errorf("api: PUT %s: %w", path, err)
	}
	return cert, resp.StatusCode == http.StatusCreated, nil
}

// ListCertificates returns the uploaded certificates (without keys), sorted
// by name.
func (c *Client) ListCertificates(ctx context.Context) ([]Certificate, error) {
	var out []Certificate
	err := c.doJSON(ctx, http.MethodGet, "/certificates", nil, nil, &out)
	return out, err
}

// GetCertificate returns one uploaded certificate (without its key).
func (c *Client) GetCertificate(ctx context.Context, name string) (Certificate, error) {
	var out Certificate
	err := c.doJSON(ctx, http.MethodGet, "/certificates/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// RemoveCertificate deletes an uploaded certificate; gateways stop serving
// it.
func (c *Client) RemoveCertificate(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/certificates/"+url.PathEscape(name), nil, nil, nil)
}

// GatewayCA returns the PEM certificate of the cluster's gateway CA, which
// signs the certificates of routes that have no uploaded certificate. Clients
// of the routing mesh trust it.
func (c *Client) GatewayCA(ctx context.Context) ([]byte, error) {
	return c.pem(ctx, http.MethodGet, "/gateway/ca", nil)
}

// SignGatewayCertificate sends a PEM certificate signing request for route
// host names and returns the signed certificate chain (leaf, then the
// gateway CA) in PEM. The manager signs only names that are the host of a
// route of a stored service.
func (c *Client) SignGatewayCertificate(ctx context.Context, csrPEM []byte) ([]byte, error) {
	return c.pem(ctx, http.MethodPost, "/agent/gateway/certificates", csrPEM)
}

// pem sends body (if not nil) as PEM and returns the PEM response.
func (c *Client) pem(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var r io.Reader
	ctype := ""
	if body != nil {
		r, ctype = bytes.NewReader(body), "application/x-pem-file"
	}
	resp, err := c.do(ctx, method, path, nil, r, ctype)
	if err != nil {
		return nil, err
	}
	defer drainClose(resp.Body)
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxPEMResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if len(b) > MaxPEMResponseBytes {
		return nil, fmt.Errorf("%w: %s %s: over %d bytes", ErrResponse, method, path, MaxPEMResponseBytes)
	}
	return b, nil
}

// WatchGatewayCertificates follows GET /api/v1/agent/certificates: every
// uploaded certificate with its key, in full, again after every change. The
// channel holds only the newest message not yet taken, and is closed when
// the stream ends; the caller reconnects. Keys are never logged.
func (c *Client) WatchGatewayCertificates(ctx context.Context) (<-chan GatewayCertificates, error) {
	resp, err := c.do(ctx, http.MethodGet, "/agent/certificates", nil, nil, "")
	if err != nil {
		return nil, err
	}
	ch := make(chan GatewayCertificates, 1)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		err := readNDJSON(resp.Body, MaxCertificatesMessageBytes, func(line []byte) error {
			var m GatewayCertificates
			if err := json.Unmarshal(line, &m); err != nil {
				// Do not wrap the JSON error: it could quote key material.
				return fmt.Errorf("%w: malformed certificates message", ErrResponse)
			}
			select {
			case <-ch:
			default:
			}
			ch <- m
			return nil
		})
		switch {
		case ctx.Err() != nil:
		case err != nil:
			c.log.Warn("certificates stream broke", "err", err)
		default:
			c.log.Info("certificates stream closed by the server")
		}
	}()
	return ch, nil
}
