package apiserver

import (
	"encoding/json"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestServiceLogsParametersAreValidated(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ query, field string }{
		{"tail=-2", "tail"},
		{"tail=x", "tail"},
		{"follow=maybe", "follow"},
		{"timestamps=maybe", "timestamps"},
		{"since=10m", "since"},
		{"since=2026-12-08", "since"},
	} {
		resp, body := f.do("GET", "/api/v1/services/hello/logs?"+c.query, "", testToken, nil)
		var e api.Error
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Field != c.field {
			t.Errorf("?%s: %d %s, want 400 with field %q", c.query, resp.StatusCode, body, c.field)
		}
	}
	if resp, body := f.do("GET", "/api/v1/services/hello/logs?timestamps=true&since=2026-12-08T10:00:00Z", "", testToken, nil); resp.StatusCode != 404 {
		t.Errorf("good parameters, no service: %d %s, want 404", resp.StatusCode, body)
	}
}
