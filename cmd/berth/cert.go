package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// newCertCmd is the group of commands about the routing mesh's TLS
// certificates.
func newCertCmd() *cobra.Command {
	cmd := newGroupCmd("cert", "Manage the TLS certificates the routing mesh serves", "certs", "certificate")
	cmd.Long = `Manage the TLS certificates the routing mesh's HTTPS entrypoint serves.

A route host gets a certificate from the cluster's gateway CA unless an
uploaded certificate covers it: uploaded certificates are chosen by the host
name the client asks for (SNI) and take effect on every node without a
restart. 'berth cert ca' prints the gateway CA for clients to trust.`
	cmd.AddCommand(newCertAddCmd(), newCertLsCmd(), newCertInspectCmd(), newCertRmCmd(), newCertCACmd())
	return cmd
}

func newCertAddCmd() *cobra.Command {
	var certFile, keyFile string
	cmd := &cobra.Command{
		Use:   "add NAME --cert FILE --key FILE",
		Short: "Upload a certificate chain (leaf first) and its key, or replace the one named NAME",
		Args:  exactArgs(1),
	}
	cmd.Flags().StringVar(&certFile, "cert", "", "PEM file of the certificate chain, leaf first (required)")
	cmd.Flags().StringVar(&keyFile, "key", "", "PEM file of the certificate's private key, not encrypted (required)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		e := envOf(cmd)
		if certFile == "" || keyFile == "" {
			return usageErrorf("cert add needs --cert FILE and --key FILE; usage: %s", usageLine(cmd))
		}
		certPEM, err := readPEMFile("--cert", certFile)
		if err != nil {
			return err
		}
		keyPEM, err := readPEMFile("--key", keyFile)
		if err != nil {
			return err
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		cert, created, err := c.PutCertificate(cmd.Context(), args[0], api.CertificateUpload{CertPEM: string(certPEM), KeyPEM: string(keyPEM)})
		if err != nil {
			return certError(err, certFile, keyFile)
		}
		verb := "replaced"
		if created {
			verb = "added"
		}
		_, err = fmt.Fprintf(e.stdout, "certificate %s %s: %s, valid until %s\n", cert.Name, verb,
			strings.Join(cert.DNSNames, ", "), cert.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
		return err
	}
	return cmd
}

// readPEMFile reads a PEM file given to flag, refusing a huge one.
func readPEMFile(flag, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, api.MaxCertificateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if len(b) > api.MaxCertificateBytes {
		return nil, fmt.Errorf("%s %s: larger than %s", flag, path, api.ByteSize(api.MaxCertificateBytes))
	}
	return b, nil
}

// certError names the file an upload error is about.
func certError(err error, certFile, keyFile string) error {
	switch api.FieldOf(err) {
	case "cert_pem":
		return fmt.Errorf("%s: %s", certFile, messageOf(err))
	case "key_pem":
		return fmt.Errorf("%s: %s", keyFile, messageOf(err))
	}
	return err
}

// messageOf is the message of an API error without its field.
func messageOf(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}

func newCertLsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List uploaded certificates",
		Args:    noArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = listRunE(nil, out, func(ctx context.Context, c *api.Client, _ []string) ([]api.Certificate, error) {
		return c.ListCertificates(ctx)
	}, func(e *env, certs []api.Certificate) error {
		now := e.now()
		tb := newTable(e.stdout, "NAME", "DNS NAMES", "NOT AFTER", "ISSUER", "SHA256")
		for _, ct := range certs {
			until := ct.NotAfter.UTC().Format("2006-01-02")
			if now.After(ct.NotAfter) {
				until += " (expired)"
			}
			tb.row(ct.Name, strings.Join(ct.DNSNames, ","), until, ct.Issuer, shortID(ct.SHA256))
		}
		return tb.flush()
	})
	return cmd
}

func newCertInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show an uploaded certificate as JSON (never its key)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e := envOf(cmd)
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			cert, err := c.GetCertificate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return writeJSON(e.stdout, cert)
		},
	}
}

func newCertRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove uploaded certificates",
		Args:    minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e := envOf(cmd)
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.RemoveCertificate(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "certificate %s removed\n", name)
			}
			return nil
		},
	}
}

func newCertCACmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ca",
		Short: "Print the gateway CA certificate (PEM), for clients of the mesh to trust",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e := envOf(cmd)
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			pem, err := c.GatewayCA(cmd.Context())
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(pem)
			return err
		},
	}
}
