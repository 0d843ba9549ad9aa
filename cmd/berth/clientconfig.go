package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/berth-project/berth/api"
)

// Files in the data directory that tell clients where the API is. `berth
// up` and `berth server` write them.
const (
	addrFile  = "api.addr"    // one line: https://127.0.0.1:7443
	tokenFile = "admin.token" // the admin bearer token, mode 0600
	caFile    = "ca.pem"      // the cluster CA certificate
)

// Environment variables the client reads.
const (
	envAddr    = "BERTH_ADDR"
	envToken   = "BERTH_TOKEN"
	envCA      = "BERTH_CA"
	envDataDir = "BERTH_DATA_DIR"
)

// errNoAddr is returned when no layer names the API.
var errNoAddr = errors.New("no API address: start 'berth up', or set BERTH_ADDR (or --addr)")

// DefaultDataDir returns the data directory used when --data-dir is not
// given: $BERTH_DATA_DIR, else /var/lib/berth when running as root, else
// $XDG_DATA_HOME/berth or ~/.local/share/berth.
func DefaultDataDir() string { return defaultDataDir(os.Getenv, os.Geteuid()) }

func defaultDataDir(getenv func(string) string, euid int) string {
	if d := getenv(envDataDir); d != "" {
		return d
	}
	if euid == 0 {
		return "/var/lib/berth"
	}
	if x := getenv("XDG_DATA_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "berth")
	}
	home := getenv("HOME")
	if home == "" {
		if u, err := user.Current(); err == nil {
			home = u.HomeDir
		}
	}
	return filepath.Join(home, ".local", "share", "berth")
}

// dataDir returns --data-dir, else the default.
func (e *env) dataDir() string {
	if e.flags.dataDir != "" {
		return e.flags.dataDir
	}
	return defaultDataDir(e.getenv, e.euid)
}

// clientConfig resolves where the API is and how to authenticate, each
// setting on its own: flags, then the environment, then the data directory.
func (e *env) clientConfig() (api.ClientConfig, error) {
	var cfg api.ClientConfig
	dir := e.dataDir()

	addr, err := layered(e.flags.addr, e.getenv(envAddr), filepath.Join(dir, addrFile))
	if err != nil {
		return cfg, err
	}
	addrs := splitAddrs(addr)
	if len(addrs) == 0 {
		return cfg, errNoAddr
	}
	// Several managers of one cluster: the client tries them in turn (see
	// api.ClientConfig.Addrs).
	cfg.Addr, cfg.Addrs = addrs[0], addrs[1:]
	addr = strings.Join(addrs, ",")

	token, err := layered(e.flags.token, e.getenv(envToken), filepath.Join(dir, tokenFile))
	if err != nil {
		return cfg, err
	}
	if token == "" {
		return cfg, fmt.Errorf("no API token for %s: set BERTH_TOKEN (or --token), or let this user read %s", addr, filepath.Join(dir, tokenFile))
	}
	cfg.Token = token

	caPath := e.flags.ca
	if caPath == "" {
		caPath = e.getenv(envCA)
	}
	if caPath != "" {
		b, err := os.ReadFile(caPath)
		if err != nil {
			return cfg, fmt.Errorf("reading the CA certificate: %w", err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return cfg, fmt.Errorf("the CA certificate file %s is empty", caPath)
		}
		cfg.CACertPEM = b
	} else {
		b, err := os.ReadFile(filepath.Join(dir, caFile))
		switch {
		case err == nil:
			cfg.CACertPEM = b
		case !errors.Is(err, fs.ErrNotExist):
			return cfg, fmt.Errorf("reading the CA certificate: %w", err)
		}
	}
	if len(cfg.CACertPEM) == 0 {
		for _, a := range addrs {
			if !strings.HasPrefix(a, "http://") {
				return cfg, fmt.Errorf("no CA certificate to check %s: set BERTH_CA (or --ca) to the cluster's ca.pem", a)
			}
		}
	}
	return cfg, nil
}

// splitAddrs splits a list of API addresses separated by commas (or
// spaces), as BERTH_ADDR and --addr take them, dropping empty entries.
func splitAddrs(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// layered returns flag, else env, else the first line of file; a missing
// file gives "" and no error.
func layered(flag, env, file string) (string, error) {
	if v := strings.TrimSpace(flag); v != "" {
		return v, nil
	}
	if v := strings.TrimSpace(env); v != "" {
		return v, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strings.TrimSpace(string(line)), nil
}

// apiClient returns the API client, made from the resolved configuration on
// first use.
func (e *env) apiClient() (*api.Client, error) {
	if e.client != nil {
		return e.client, nil
	}
	cfg, err := e.clientConfig()
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	e.client = c
	return c, nil
}
