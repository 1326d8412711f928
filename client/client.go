package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls the Kagzi API of one server (or load balancer) for one
// namespace. It is safe for concurrent use; create one per process and
// share it, with its connection pool, among goroutines and workers.
type Client struct {
	base      string // scheme://host[/prefix], without a trailing slash
	namespace string
	nsPath    string // "/v1/namespaces/{ns}"
	http      *http.Client
	header    http.Header
	retry     CallRetry
	timeout   time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithNamespace sets the namespace every call acts in (default "default").
func WithNamespace(ns string) Option {
	return func(c *Client) { c.namespace = ns }
}

// WithHTTPClient makes the Client send its requests through hc. The
// default is a client of its own with keep-alive connections, enough idle
// connections per host for many concurrent workers, and no overall
// timeout (long polls set their own).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// WithHeader adds a header to every request, such as an Authorization
// header for a proxy in front of the server.
func WithHeader(key, value string) Option {
	return func(c *Client) { c.header.Add(key, value) }
}

// WithAPIKey sends key with every request, as the header
// Authorization: Bearer <key>, for a server with authentication on. An
// empty key sends none, so that a key read from the environment
// (KAGZI_API_KEY) may be passed whether it is set or not.
func WithAPIKey(key string) Option {
	return func(c *Client) {
		if key != "" {
			c.header.Set("Authorization", "Bearer "+key)
		}
	}
}

// WithCallRetry sets how idempotent calls are retried (see CallRetry).
func WithCallRetry(r CallRetry) Option {
	return func(c *Client) { c.retry = r }
}

// WithRequestTimeout bounds each request whose context has no deadline of
// its own (default 30s). Long polls get this much on top of their wait.
func WithRequestTimeout(d time.Duration) Option {
	return func(c *Client) { c.timeout = d }
}

// CallRetry bounds the retries of idempotent calls (GETs, Cancel, a
// Start with an ExternalID, and a worker's calls, which the server fences
// by lease) after a 503 or a connection error. Non-idempotent calls (a
// Start without an ExternalID, for instance) are retried only when the
// connection could not be made at all, since then nothing was sent.
// Backoffs grow from Initial, doubling up to Max, and are jittered.
type CallRetry struct {
	// MaxAttempts counts every try, the first included; 1 disables retries.
	MaxAttempts int
	Initial     time.Duration
	Max         time.Duration
}

// DefaultCallRetry is the retry of a Client created without
// WithCallRetry: five tries over about three seconds.
var DefaultCallRetry = CallRetry{MaxAttempts: 5, Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// New returns a Client for the server at baseURL, such as
// "http://localhost:8080". It does no I/O.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base:      strings.TrimRight(baseURL, "/"),
		namespace: "default",
		header:    http.Header{},
		retry:     DefaultCallRetry,
		timeout:   30 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Transport: newTransport()}
	}
	if c.retry.MaxAttempts < 1 {
		c.retry.MaxAttempts = 1
	}
	c.nsPath = "/v1/namespaces/" + url.PathEscape(c.namespace)
	return c
}

// newTransport is the default transport: HTTP keep-alive with room for
// many idle connections to one host, because a worker holds a long poll,
// a heartbeat and one call per running workflow at once.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 1024
	t.IdleConnTimeout = 90 * time.Second
	return t
}

// Namespace returns the namespace the Client acts in.
func (c *Client) Namespace() string { return c.namespace }

// request is one API call.
type request struct {
	method string
	path   string // from the root: "/v1/…"
	query  url.Values
	body   any
	// idempotent calls are retried after a 503 or a connection error.
	idempotent bool
	// wait is the time the server may hold the request (a long poll).
	wait time.Duration
	// clock, when set, is filled from the answer, to read the server's
	// times in it on the local clock.
	clock *answerClock
	// header holds the request's own headers (Idempotency-Key).
	header http.Header
}

// answerClock is the server's time when it answered (its Date header) and
// the local time the answer arrived, so that the worker knows when a lease
// ends by its own clock, whatever the clocks' skew.
type answerClock struct {
	server time.Time // zero when the answer had no Date
	local  time.Time
}

// localTime returns the local time of the server's time t. The Date header
// is in whole seconds, and the answer took time to arrive: the result is
// late by up to a second and the answer's transit, never early.
func (a answerClock) localTime(t time.Time) time.Time {
	if a.server.IsZero() {
		return t
	}
	return a.local.Add(t.Sub(a.server))
}

// do performs r and decodes a 2xx answer into out (when not nil). It
// returns the HTTP status of the answer it decoded.
func (c *Client) do(ctx context.Context, r request, out any) (int, error) {
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			return 0, fmt.Errorf("kagzi: encode %s %s: %w", r.method, r.path, err)
		}
	}
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout+r.wait)
		defer cancel()
	}
	for attempt := 1; ; attempt++ {
		status, err := c.once(ctx, r.method, u, body, out, r.clock, r.header)
		if err == nil {
			return status, nil
		}
		if attempt >= c.retry.MaxAttempts || !c.retryable(ctx, r, err) {
			return status, err
		}
		if werr := sleepCtx(ctx, backoff(c.retry.Initial, c.retry.Max, attempt)); werr != nil {
			return status, err
		}
	}
}

// retryable says whether a failed try of r may be tried again.
func (c *Client) retryable(ctx context.Context, r request, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return r.idempotent && apiErr.Status == http.StatusServiceUnavailable
	}
	if r.idempotent {
		return true // a connection error: nothing was answered
	}
	// Nothing was sent when the connection could not be made.
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// once sends one request and reads its answer.
func (c *Client) once(ctx context.Context, method, u string, body []byte, out any, clock *answerClock, header http.Header) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, fmt.Errorf("kagzi: %s %s: %w", method, u, err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("kagzi: %s %s: %w", method, u, err)
	}
	if clock != nil {
		clock.local = time.Now()
		clock.server, _ = http.ParseTime(resp.Header.Get("Date"))
	}
	defer func() {
		// Read to the end so that the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, errorFromResponse(resp.StatusCode, b)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("kagzi: %s %s: decode the answer: %w", method, u, err)
	}
	return resp.StatusCode, nil
}

// backoff is the jittered wait before try n+1: half of min(max,
// initial*2^(n-1)) plus a random part of the other half.
func backoff(initial, max time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits for d or until ctx ends, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runPath is the path of a run, or of something below it.
func (c *Client) runPath(runID string, rest ...string) string {
	p := c.nsPath + "/workflows/" + url.PathEscape(runID)
	for _, s := range rest {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// Info returns the server's version and limits.
func (c *Client) Info(ctx context.Context) (*ServerInfo, error) {
	var info ServerInfo
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/info", idempotent: true}, &info); err != nil {
		return nil, err
	}
	return &info, nil
}
