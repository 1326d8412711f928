package kagzi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagzi/kagzi"
	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// statementProxy sits between a Kagzi server and PostgreSQL and counts, on
// the wire, the statements the server has PostgreSQL execute: every simple
// query ('Q') and every execution of a prepared statement ('E'), on every
// connection (the pool's and the LISTEN connection alike). The pool's
// liveness pings ("-- ping", empty queries) are counted apart.
type statementProxy struct {
	addr     string
	upstream string

	mu         sync.Mutex
	statements int
	pings      int
	texts      map[string]int // statement text -> executions, for failure messages
}

func newStatementProxy(t *testing.T, upstream string) *statementProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &statementProxy{addr: ln.Addr().String(), upstream: upstream, texts: map[string]int{}}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, nil)
			conns.Store(up, nil)
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, up)
				c.Close()
			}()
			go func() {
				defer wg.Done()
				_ = p.forward(up, c)
				up.Close()
			}()
		}
	}()
	return p
}

// forward copies the client's messages to the server, counting them.
func (p *statementProxy) forward(dst io.Writer, src io.Reader) error {
	r := bufio.NewReader(src)
	// The startup message has no type byte.
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return err
	}
	startup := make([]byte, n)
	binary.BigEndian.PutUint32(startup, n)
	if _, err := io.ReadFull(r, startup[4:]); err != nil {
		return err
	}
	if _, err := dst.Write(startup); err != nil {
		return err
	}
	prepared := map[string]string{} // statement name -> text
	portal := ""
	for {
		head := make([]byte, 5)
		if _, err := io.ReadFull(r, head); err != nil {
			return err
		}
		msg := make([]byte, 1+binary.BigEndian.Uint32(head[1:]))
		copy(msg, head)
		if _, err := io.ReadFull(r, msg[5:]); err != nil {
			return err
		}
		body := msg[5:]
		cstring := func(b []byte) (string, []byte) {
			i := bytes.IndexByte(b, 0)
			if i < 0 {
				return string(b), nil
			}
			return string(b[:i]), b[i+1:]
		}
		switch head[0] {
		case 'Q':
			q, _ := cstring(body)
			p.count(q)
		case 'P':
			name, rest := cstring(body)
			prepared[name], _ = cstring(rest)
		case 'B':
			_, rest := cstring(body)
			stmt, _ := cstring(rest)
			portal = prepared[stmt]
		case 'E':
			p.count(portal)
		}
		if _, err := dst.Write(msg); err != nil {
			return err
		}
	}
}

func (p *statementProxy) count(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if strings.TrimSpace(text) == "-- ping" {
		p.pings++
		return
	}
	p.statements++
	p.texts[strings.Join(strings.Fields(text), " ")]++
}

func (p *statementProxy) snapshot() (statements, pings int, texts map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	texts = make(map[string]int, len(p.texts))
	for k, v := range p.texts {
		texts[k] = v
	}
	return p.statements, p.pings, texts
}

// url returns dbURL pointed at the proxy.
func (p *statementProxy) url(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.addr
	return u.String()
}

// TestIdleServerCostsAboutOneStatementPerSecond runs the server as the
// binary assembles it (kagzi.NewServer, its maintainer and scheduler at
// their default intervals, retention on), parks 100 long-poll claims over
// HTTP, and counts on the wire every statement PostgreSQL executes for it
// while nothing happens: with no schedule, with an enabled schedule that
// fires far in the future, and with a disabled one. (It replaces a test
// that counted the distributor's calls through a wrapper and could not see
// the scheduler polling 50 times a second.)
func TestIdleServerCostsAboutOneStatementPerSecond(t *testing.T) {
	t.Parallel()
	const (
		window = 15 * time.Second
		budget = 1.5 // statements per second, in all
		claims = 100
	)
	for _, tc := range []struct {
		name      string
		schedules []string
	}{
		{"no schedule", nil},
		{"an enabled schedule far in the future", []string{`{"workflow_type":"wf","cron":"0 0 1 1 *"}`}},
		{"a disabled schedule", []string{`{"workflow_type":"wf","cron":"* * * * * *","enabled":false}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDatabase(t)
			u, err := url.Parse(dbURL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := newStatementProxy(t, u.Host)
			proxied := proxy.url(t, dbURL)
			pool, err := postgres.NewPool(context.Background(), proxied, 20)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			srv := kagzi.NewServer(kagzi.Config{
				DatabaseURL: proxied,
				Pool:        pool,
				Limits: api.Limits{ // cmd/kagzi's defaults
					Payload:           domain.PayloadLimits{MaxBytes: domain.DefaultPayloadMaxBytes, WarnBytes: domain.DefaultPayloadWarnBytes},
					MaxBatch:          1000,
					MaxBatchBytes:     32 << 20,
					MaxWait:           time.Minute,
					LeaseDuration:     30 * time.Second,
					HeartbeatInterval: 10 * time.Second,
				},
				Retention: 7 * 24 * time.Hour,
				Logger:    slog.New(slog.DiscardHandler),
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			hs := httptest.NewServer(srv.API)
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				hs.Close()
			})
			waitUntil(t, 10*time.Second, "the listener to be up", func() bool { return srv.Listener.Ready() == nil })
			for _, body := range tc.schedules {
				resp, err := http.Post(hs.URL+"/v1/namespaces/default/schedules", "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					t.Fatalf("create schedule %s: %s", body, resp.Status)
				}
			}

			answered := make(chan error, claims)
			for range claims {
				go func() {
					resp, err := http.Post(hs.URL+"/v1/namespaces/default/task-queues/q/claim", "application/json",
						strings.NewReader(`{"wait_ms":60000}`))
					if err == nil {
						resp.Body.Close()
						err = errors.New(resp.Status)
					}
					answered <- err
				}()
			}
			waitUntil(t, 10*time.Second, "the claims to park", func() bool { return srv.Distributor.Waiting("default", "q") == claims })

			before, pingsBefore, textsBefore := proxy.snapshot()
			select {
			case err := <-answered:
				t.Fatalf("a parked claim ended during the idle window: %v", err)
			case <-time.After(window):
			}
			after, pingsAfter, textsAfter := proxy.snapshot()
			if got := srv.Distributor.Waiting("default", "q"); got != claims {
				t.Fatalf("%d claims parked after the window, want %d", got, claims)
			}
			rate := float64(after-before) / window.Seconds()
			var lines []string
			for text, n := range textsAfter {
				if d := n - textsBefore[text]; d > 0 {
					lines = append(lines, fmt.Sprintf("%6d  %.160s", d, text))
				}
			}
			sort.Sort(sort.Reverse(sort.StringSlice(lines)))
			t.Logf("idle for %s: %d statements (%.2f/s), and %d pool pings:\n%s", window, after-before, rate,
				pingsAfter-pingsBefore, strings.Join(lines, "\n"))
			if rate > budget {
				t.Errorf("an idle server ran %.1f statements per second, want at most %.1f", rate, budget)
			}
		})
	}
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
