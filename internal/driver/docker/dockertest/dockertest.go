// Package dockertest is test support for code that needs a real Docker
// Engine: it finds the engine (skipping the test when there is none, except
// in CI, where that is a failure) and builds small images locally, FROM
// scratch, since no registry is reachable. Production code must not import
// it.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/berth-project/berth/internal/testutil"
)

// InCI reports whether the tests run in CI (CI=true), where a missing engine
// is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Client returns a client of the engine (DOCKER_HOST or the default socket)
// with its API version negotiated, closed when tb ends. Without an engine
// it skips tb, or fails it in CI. Under go test -short it skips tb before
// looking: the Docker tier is left out of the short inner loop.
func Client(tb testing.TB) *client.Client {
	tb.Helper()
	testutil.SkipIfShort(tb, "Docker Engine")
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tb.Cleanup(func() { _ = c.Close() })
		if _, err = c.Ping(ctx); err == nil {
			c.NegotiateAPIVersion(ctx)
			return c
		}
	}
	msg := fmt.Sprintf("no Docker Engine reachable (%v): start dockerd (.ci/run installs and starts one)", err)
	if InCI() {
		tb.Fatal(msg + "; in CI (CI=true) this is a failure")
	}
	tb.Skip(msg)
	return nil
}

// File is a file of an image built by BuildImage.
type File struct {
	Data []byte
	Mode int64
}

// BuildImage builds an image tagged tag from dockerfile and files (paths
// relative to the build context) with the engine's classic builder, and
// removes it when tb ends.
func BuildImage(tb testing.TB, c *client.Client, tag, dockerfile string, files map[string]File) {
	tb.Helper()
	if err := Build(context.Background(), c, tag, dockerfile, files); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { RemoveImage(c, tag) })
}

// Build builds an image as BuildImage does, without removing it.
func Build(ctx context.Context, c *client.Client, tag, dockerfile string, files map[string]File) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte, mode int64) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("Dockerfile", []byte(dockerfile), 0o644); err != nil {
		return err
	}
	for name, f := range files {
		if err := add(name, f.Data, f.Mode); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := c.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true,
		Version: build.BuilderV1})
	if err != nil {
		return fmt.Errorf("building image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("building image %s: %w", tag, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("building image %s: %s", tag, msg.Error)
		}
	}
}

// RemoveImage removes an image, ignoring errors (it may be gone).
func RemoveImage(c *client.Client, tag string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = c.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
}

// StaticBerth builds the berth binary statically (CGO_ENABLED=0), so it
// runs in an image FROM scratch, into dir, and returns its path.
func StaticBerth(tb testing.TB, dir string) string {
	tb.Helper()
	out := filepath.Join(dir, "berth")
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("building berth needs the go command on PATH: %v", err)
	}
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/berth-project/berth/cmd/berth")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building a static berth: %v\n%s", err, b)
	}
	return out
}

// WhoamiDockerfile is an image holding only the static berth binary, whose
// entrypoint serves the whoami app on ${PORT} on every address.
const WhoamiDockerfile = `FROM scratch
COPY berth /berth
ENTRYPOINT ["/berth", "whoami", "--listen-addr", "0.0.0.0", "--port", "${PORT}"]
`

// WhoamiImage builds WhoamiDockerfile with a static berth as tag, removed
// when tb ends.
func WhoamiImage(tb testing.TB, c *client.Client, tag string) {
	tb.Helper()
	bin := StaticBerth(tb, tb.TempDir())
	data, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	BuildImage(tb, c, tag, WhoamiDockerfile, map[string]File{"berth": {Data: data, Mode: 0o755}})
}
