package agent

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/logstamp"
)

// logServer serves task logs over HTTPS to the manager. Its certificate is
// self-signed and made at start; the manager pins its SHA-256 and presents a
// bearer secret, both sent in the node registration.
type logServer struct {
	a           *Agent
	srv         *http.Server
	url         string
	fingerprint string
	secret      string
	served      chan struct{}
}

func newLogServer(a *Agent) (*logServer, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("agent: log server secret: %w", err)
	}
	ln, err := net.Listen("tcp", a.cfg.LogListen)
	if err != nil {
		return nil, fmt.Errorf("agent: log server: %w", err)
	}
	host := advertiseHost(a.cfg.LogListen, a.cfg.Address, a.cfg.Hostname)
	cert, fp, err := selfSignedCert(a.cfg.Hostname, host, time.Now())
	if err != nil {
		ln.Close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	s := &logServer{
		a:           a,
		url:         "https://" + net.JoinHostPort(host, port),
		fingerprint: fp,
		secret:      hex.EncodeToString(secret),
		served:      make(chan struct{}),
	}
	s.srv = &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		},
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		_ = s.srv.ServeTLS(ln, "", "")
	}()
	a.log.Info("log server listening", "url", s.url)
	return s, nil
}

func (s *logServer) close() {
	_ = s.srv.Close()
	<-s.served
}

// advertiseHost is the host the manager should call: the listen address when
// it names one, else the node's address, else its hostname.
func advertiseHost(listen, address, hostname string) string {
	h, _, err := net.SplitHostPort(listen)
	if err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			return h
		}
	}
	if address != "" {
		if ah, _, err := net.SplitHostPort(address); err == nil {
			return ah
		}
		return address
	}
	return hostname
}

// selfSignedCert makes an ECDSA P-256 certificate for the log server and
// returns it with the hex SHA-256 of its DER.
func selfSignedCert(hostname, host string, now time.Time) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("agent: log server key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("agent: log server serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "berth-agent " + hostname},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range []string{hostname, host} {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("agent: log server certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, hex.EncodeToString(sum[:]), nil
}

func (s *logServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/tasks/{id}/logs", s.logs)
	mux.HandleFunc("GET /v1/tasks/{id}/stats", s.stats)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no such route")
	})
	return s.auth(mux)
}

// auth lets through only requests with the bearer secret.
func (s *logServer) auth(next http.Handler) http.Handler {
	want := []byte(s.secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="berth-agent"`)
			writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// stats answers a running task's resource use: GET /v1/tasks/{id}/stats.
func (s *logServer) stats(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var h driver.Handle
	if validTaskID(id) {
		h = s.a.taskHandle(id)
	}
	if h == nil {
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no running task %q on this node", id))
		return
	}
	st, ok := h.(driver.Statser)
	if !ok {
		writeError(w, http.StatusNotImplemented, "not_implemented", "the task's driver does not measure resource use")
		return
	}
	sample, err := st.Stats(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(api.ResourceStats{
		Time: sample.Time, CPUNanos: sample.CPUNanos, MemoryBytes: sample.MemoryBytes, Pids: sample.Pids,
		NetRxBytes: sample.NetRxBytes, NetTxBytes: sample.NetTxBytes,
		BlkReadBytes: sample.BlkReadBytes, BlkWriteBytes: sample.BlkWriteBytes,
	})
}

// logs streams a task's output:
// GET /v1/tasks/{id}/logs?tail=N&follow=1&timestamps=1&since=RFC3339.
// With timestamps every line starts with the time it was written and a
// space; since leaves out older lines and tail counts after it (ADR 0034).
func (s *logServer) logs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	tail := -1
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("tail %q is not a number", v))
			return
		}
		tail = n
	}
	follow, err := flagParam(q.Get("follow"))
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeInvalid, "follow "+err.Error())
		return
	}
	stamps, err := flagParam(q.Get("timestamps"))
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeInvalid, "timestamps "+err.Error())
		return
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			writeError(w, http.StatusBadRequest, api.CodeInvalid, fmt.Sprintf("since %q: want an RFC 3339 time", v))
			return
		}
	}
	timed := stamps || !since.IsZero()
	drvName, ok := "", false
	if validTaskID(id) {
		drvName, ok = s.a.taskDriver(id)
	}
	if !ok {
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no task %q on this node", id))
		return
	}
	drv := s.a.cfg.Drivers[drvName]
	lg, ok := drv.(driver.Logger)
	if !ok {
		writeError(w, http.StatusNotImplemented, "not_implemented", fmt.Sprintf("driver %q does not keep logs", drvName))
		return
	}
	opts := driver.LogOptions{Tail: tail, Since: since, Follow: follow, Timestamps: stamps}
	var rc io.ReadCloser
	if tl, ok := drv.(driver.TimedLogger); ok && timed {
		rc, err = tl.TimedLogs(r.Context(), id, opts)
	} else if timed {
		// A driver without times: lines are stamped as they are read.
		rc, err = lg.Logs(r.Context(), id, -1, follow)
		if err == nil {
			rc = stampOnRead(rc, opts)
		}
	} else {
		rc, err = lg.Logs(r.Context(), id, tail, follow)
	}
	if err != nil && errors.Is(err, driver.ErrGone) && s.a.taskEnded(id) {
		// A driver forgets ended tasks when the agent restarts; their log
		// files are still on disk.
		if timed {
			rc, err = readTimedLogFiles(s.a.store.logsDir(), id, opts)
		} else {
			rc, err = readLogFiles(s.a.store.logsDir(), id, tail)
		}
	}
	if err != nil {
		if errors.Is(err, driver.ErrGone) || errors.Is(err, os.ErrNotExist) {
			writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no logs of task %q on this node", id))
			return
		}
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ctl := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if follow {
				_ = ctl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.Error{Code: code, Message: msg})
}

// readLogFiles returns the last tail lines (all when tail < 0) of a task's
// log files as drivers write them: <dir>/<id>.log.1 (the rotated part), then
// <dir>/<id>.log. It returns an error wrapping os.ErrNotExist if neither
// exists.
func readLogFiles(dir, id string, tail int) (io.ReadCloser, error) {
	var all []byte
	found := false
	for _, p := range []string{filepath.Join(dir, id+".log.1"), filepath.Join(dir, id+".log")} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("agent: read logs: %w", err)
		}
		found = true
		all = append(all, b...)
	}
	if !found {
		return nil, fmt.Errorf("agent: no log files of task %s: %w", id, os.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(driver.LastLines(all, tail))), nil
}

// flagParam parses a boolean query parameter: empty, 0 or false; 1 or true.
func flagParam(v string) (bool, error) {
	switch v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	}
	return false, fmt.Errorf("%q: use 1 or 0", v)
}

// readTimedLogFiles is readLogFiles with the times of the files' indexes
// (ADR 0034); lines they do not cover get their file's modification time.
func readTimedLogFiles(dir, id string, opts driver.LogOptions) (io.ReadCloser, error) {
	// Streamed, not read whole: the task controls the log's size and line
	// count, and the read must not grow with them.
	p := filepath.Join(dir, id+".log")
	h, found, err := logstamp.OpenHistory([]string{p + ".1", p}, logstamp.HistoryOptions{Since: opts.Since, Tail: opts.Tail, Stamp: opts.Timestamps})
	if err != nil {
		return nil, fmt.Errorf("agent: read logs: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("agent: no log files of task %s: %w", id, os.ErrNotExist)
	}
	return h.Reader(), nil
}

// stampOnRead stamps the lines of rc with the time they are read, for a
// driver that keeps no times: exact when following, the read time for
// history. Tail is applied here.
func stampOnRead(rc io.ReadCloser, opts driver.LogOptions) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		defer rc.Close()
		sc := bufio.NewScanner(rc)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var hist []logstamp.Line
		for sc.Scan() {
			l := logstamp.Line{Time: time.Now(), Text: append([]byte(nil), sc.Bytes()...)}
			if !opts.Follow {
				hist = append(hist, l)
				continue
			}
			if ls := logstamp.Filter([]logstamp.Line{l}, opts.Since, -1); len(ls) > 0 {
				if _, err := pw.Write(logstamp.AppendLine(nil, l, opts.Timestamps)); err != nil {
					return
				}
			}
		}
		if !opts.Follow {
			_, _ = pw.Write(logstamp.Format(logstamp.Filter(hist, opts.Since, opts.Tail), opts.Timestamps))
		}
		pw.CloseWithError(sc.Err())
	}()
	return pr
}
