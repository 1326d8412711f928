package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kagzi/kagzi/client"
)

// flaky is a server that fails its first n requests (503 or a dropped
// connection) and then answers with a run.
type flaky struct {
	mu       sync.Mutex
	failures int
	drop     bool // drop the connection instead of answering 503
	requests int
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	fail := f.requests <= f.failures
	f.mu.Unlock()
	switch {
	case fail && f.drop:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	case fail:
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"type":"about:blank","title":"Service Unavailable","status":503,"code":"unavailable","detail":"the service is unavailable; try again"}`))
	default:
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		w.Write([]byte(`{"run_id":"r1","status":"pending","already_exists":false}`))
	}
}

func (f *flaky) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// fastRetry keeps the tests quick.
var fastRetry = client.WithCallRetry(client.CallRetry{MaxAttempts: 4, Initial: time.Millisecond, Max: 5 * time.Millisecond})

func TestRetriesOnlyIdempotentCalls(t *testing.T) {
	t.Parallel()
	for _, drop := range []bool{false, true} {
		name := map[bool]string{false: "503", true: "dropped connection"}[drop]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cases := []struct {
				name     string
				call     func(*client.Client) error
				failures int
				requests int
				ok       bool
			}{
				{"get", func(c *client.Client) error { _, err := c.Get(context.Background(), "r1"); return err }, 2, 3, true},
				{"get gives up", func(c *client.Client) error { _, err := c.Get(context.Background(), "r1"); return err }, 10, 4, false},
				{"cancel", func(c *client.Client) error { _, err := c.Cancel(context.Background(), "r1"); return err }, 2, 3, true},
				{"start with an external ID", func(c *client.Client) error {
					_, err := c.Start(context.Background(), client.StartRequest{WorkflowType: "w", ExternalID: "e"})
					return err
				}, 2, 3, true},
				{"plain start", func(c *client.Client) error {
					_, err := c.Start(context.Background(), client.StartRequest{WorkflowType: "w"})
					return err
				}, 2, 1, false},
				{"batch with an item without external ID", func(c *client.Client) error {
					_, err := c.StartBatch(context.Background(), []client.StartRequest{{WorkflowType: "w", ExternalID: "e"}, {WorkflowType: "w"}})
					return err
				}, 2, 1, false},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					f := &flaky{failures: tc.failures, drop: drop}
					srv := httptest.NewServer(f)
					t.Cleanup(srv.Close)
					err := tc.call(client.New(srv.URL, fastRetry))
					if got := f.count(); got != tc.requests {
						t.Errorf("%d requests, want %d", got, tc.requests)
					}
					if (err == nil) != tc.ok {
						t.Errorf("err = %v, want success %v", err, tc.ok)
					}
					if err != nil && !drop && !errors.Is(err, client.ErrUnavailable) {
						t.Errorf("err = %v, want unavailable", err)
					}
				})
			}
		})
	}
}

// A call whose connection cannot even be made sent nothing, so it is
// retried whatever it is, even a start without an external ID.
func TestRetriesRefusedConnections(t *testing.T) {
	t.Parallel()
	var dials atomic.Int64
	refuse := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}}
	c := client.New("http://kagzi.invalid", client.WithHTTPClient(&http.Client{Transport: refuse}),
		client.WithCallRetry(client.CallRetry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Millisecond}))
	_, err := c.Start(context.Background(), client.StartRequest{WorkflowType: "w"})
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		t.Errorf("Start with connections refused = %v, want a dial error", err)
	}
	if got := dials.Load(); got != 3 {
		t.Errorf("dials: got %d, want 3 (every attempt)", got)
	}
}

// The backoff ends with the call's context.
func TestRetryStopsWithTheContext(t *testing.T) {
	t.Parallel()
	f := &flaky{failures: 1 << 30}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, client.WithCallRetry(client.CallRetry{MaxAttempts: 1000, Initial: time.Hour, Max: time.Hour}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(ctx, "r1")
	if !errors.Is(err, client.ErrUnavailable) || time.Since(start) > 10*time.Second {
		t.Errorf("Get = %v after %s, want unavailable soon after the deadline", err, time.Since(start))
	}
	if f.count() != 1 {
		t.Errorf("%d requests, want 1", f.count())
	}
}

// An answer that is not a problem document still gets a code.
func TestErrorWithoutProblemDocument(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>not here</html>", http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	_, err := client.New(srv.URL).Get(context.Background(), "r1")
	var apiErr *client.Error
	if !errors.Is(err, client.ErrNotFound) || !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Detail != "<html>not here</html>" {
		t.Errorf("Get = %#v, want not_found from the status", err)
	}
}
