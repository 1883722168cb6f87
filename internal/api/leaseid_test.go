package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/servertest"
)

// ULIDs are case-insensitive: a lease id sent in lower case finds the lease.
func TestLeaseIDsAreCaseInsensitive(t *testing.T) {
	srv := servertest.Start(t, t.TempDir())
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	send := func(method, path, body string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	send("PUT", "/v1/limits/case", `{"capacity": 1}`).Body.Close()
	resp := send("POST", "/v1/limits/case/acquire", `{}`)
	var l limitd.Lease
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err, string(data))
	}
	lower := strings.ToLower(l.ID)
	for _, c := range []struct {
		method string
		want   int
	}{{"GET", http.StatusOK}, {"DELETE", http.StatusNoContent}} {
		r := send(c.method, "/v1/leases/"+lower, "")
		r.Body.Close()
		if r.StatusCode != c.want {
			t.Fatalf("%s with a lower-case id: %d, want %d", c.method, r.StatusCode, c.want)
		}
	}
}
