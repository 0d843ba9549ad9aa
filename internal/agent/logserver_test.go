package agent

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
)

// pinnedClient trusts only the certificate with the given SHA-256, as the
// manager does.
func pinnedClient(fingerprint string) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if hex.EncodeToString(sum[:]) != fingerprint {
				return errors.New("certificate does not match the pin")
			}
			return nil
		},
	}}}
}

func TestLogServer(t *testing.T) {
	h := newHarness(t)
	nologs := &agenttest.Driver{DriverName: api.DriverDocker}
	h.cfg.Drivers[api.DriverDocker] = nologs
	h.start()
	web := newTask("web-logs")
	ctr := newTask("ctr-logs")
	ctr.Spec.Driver, ctr.Spec.Image, ctr.Spec.Command = api.DriverDocker, "nginx", nil
	h.m.Assign(web, ctr)
	h.waitStatus(web.ID, api.TaskRunning)
	h.waitStatus(ctr.ID, api.TaskRunning)
	h.d.SetLogs(web.ID, "hello\nworld\n")

	reg := h.m.Registrations()[0]
	client := pinnedClient(reg.AgentCertSHA256)
	t.Cleanup(client.CloseIdleConnections)
	get := func(path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, reg.AgentURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	logs := "/v1/tasks/" + web.ID + "/logs?tail=10"
	for _, c := range []struct {
		path, token string
		code        int
		body        string
	}{
		{logs, "", http.StatusUnauthorized, "unauthorized"},
		{logs, "wrong", http.StatusUnauthorized, "unauthorized"},
		{logs, strings.ToUpper(reg.AgentSecret), http.StatusUnauthorized, "unauthorized"},
		{"/v1/tasks/nope/logs", "", http.StatusUnauthorized, "unauthorized"},
		{logs, reg.AgentSecret, http.StatusOK, "hello\nworld\n"},
		{logs + "&follow=1", reg.AgentSecret, http.StatusOK, "hello\nworld\n"},
		{"/v1/tasks/" + web.ID + "/logs?tail=x", reg.AgentSecret, http.StatusBadRequest, "tail"},
		{"/v1/tasks/nope/logs", reg.AgentSecret, http.StatusNotFound, "no task"},
		{"/v1/tasks/..%2f..%2fetc/logs", reg.AgentSecret, http.StatusNotFound, "no task"},
		{"/v1/tasks/" + ctr.ID + "/logs", reg.AgentSecret, http.StatusNotImplemented, "does not keep logs"},
		{"/v1/other", reg.AgentSecret, http.StatusNotFound, "no such route"},
	} {
		code, body := get(c.path, c.token)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("GET %s (token %q): %d %q, want %d containing %q", c.path, c.token, code, body, c.code, c.body)
		}
	}

	// Logs of a task that ended and was forgotten stay readable.
	h.d.Task(web.ID).Exit(driver.Exit{Code: 0})
	h.waitStatus(web.ID, api.TaskComplete)
	eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "agent", "tasks", web.ID+".json"))
		return errors.Is(err, os.ErrNotExist)
	}, "task state removed")
	if code, body := get(logs, reg.AgentSecret); code != http.StatusOK || body != "hello\nworld\n" {
		t.Errorf("logs of an ended task: %d %q", code, body)
	}

	// A client pinning another certificate refuses the server.
	other := pinnedClient(strings.Repeat("0", 64))
	defer other.CloseIdleConnections()
	if _, err := other.Get(reg.AgentURL + logs); err == nil || !strings.Contains(err.Error(), "pin") {
		t.Errorf("a wrong pin was accepted: %v", err)
	}
}

func TestAdvertiseHost(t *testing.T) {
	for _, c := range []struct{ listen, address, hostname, want string }{
		{"127.0.0.1:0", "10.0.0.5", "n1", "127.0.0.1"},
		{"0.0.0.0:7000", "10.0.0.5", "n1", "10.0.0.5"},
		{":7000", "10.0.0.5:9999", "n1", "10.0.0.5"},
		{"[::]:7000", "", "n1", "n1"},
		{"10.1.1.1:7000", "10.0.0.5", "n1", "10.1.1.1"},
	} {
		if got := advertiseHost(c.listen, c.address, c.hostname); got != c.want {
			t.Errorf("advertiseHost(%q, %q, %q) = %q, want %q", c.listen, c.address, c.hostname, got, c.want)
		}
	}
}

func TestSelfSignedCert(t *testing.T) {
	cert, fp, err := selfSignedCert("node-a", "10.0.0.5", testNow)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	if fp != hex.EncodeToString(sum[:]) {
		t.Errorf("fingerprint %s is not the SHA-256 of the DER", fp)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(leaf.DNSNames) != "[localhost node-a]" || fmt.Sprint(leaf.IPAddresses) != "[127.0.0.1 ::1 10.0.0.5]" {
		t.Errorf("names %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("key is %T, want ECDSA", leaf.PublicKey)
	}
}

// After an agent restart the driver no longer knows an ended task; its log
// files on disk are served instead.
func TestLogsOfEndedTaskAfterRestart(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.m.Assign(newTask("ended-task"))
	h.waitStatus("ended-task", api.TaskRunning)
	h.d.Task("ended-task").Exit(driver.Exit{Code: 0})
	h.waitStatus("ended-task", api.TaskComplete)
	eventually(t, func() bool { return h.a.taskEnded("ended-task") }, "ended")
	h.stop()
	logs := filepath.Join(h.dir, "agent", "logs")
	if err := os.WriteFile(filepath.Join(logs, "ended-task.log.1"), []byte("one\ntwo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(logs, "ended-task.log"), []byte("three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.m = &agenttest.Manager{}
	h.d = &agenttest.LogDriver{} // a fresh driver knows no logs
	h.cfg.Drivers = map[string]driver.Driver{"process": h.d}
	h.start()
	eventually(t, func() bool { return len(h.m.Registrations()) == 1 }, "registered")
	reg := h.m.Registrations()[0]
	client := pinnedClient(reg.AgentCertSHA256)
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, reg.AgentURL+"/v1/tasks/ended-task/logs?tail=2", nil)
	req.Header.Set("Authorization", "Bearer "+reg.AgentSecret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "two\nthree\n" {
		t.Errorf("logs: %d %q", resp.StatusCode, b)
	}
}
