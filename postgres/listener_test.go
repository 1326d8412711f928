package postgres_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagzi/kagzi/postgres"
	"github.com/kagzi/kagzi/postgres/pgtest"
)

// runListener runs l until the test ends and returns a channel that
// receives once each time l calls OnReconnect.
func runListener(t *testing.T, l *postgres.Listener) <-chan struct{} {
	t.Helper()
	connects := make(chan struct{}, 16)
	l.OnReconnect = func() { connects <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return connects
}

func receiveWithin(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("no %s within %s", what, within)
	}
}

// waitUntil polls cond, for states that offer no event to wait on (the
// listener's readiness), failing the test after within.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestListenerLooksAgainOnFirstConnect: what was notified before the first
// LISTEN reached nobody, so the first connect tells the subscribers to look
// again, as a reconnect does.
func TestListenerLooksAgainOnFirstConnect(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewPool(t)
	l := postgres.NewListener(dbURL, slog.New(slog.DiscardHandler), nil)
	connects := runListener(t, l)
	receiveWithin(t, connects, 10*time.Second, "OnReconnect after the first connect")
	if err := l.Ready(); err != nil {
		t.Fatalf("after the first connect: %v", err)
	}
}

// TestListenerReplacesHalfOpenConnection freezes the LISTEN connection
// without closing it, as a lost peer or a dropped route does: the listener
// must notice by its ping, report itself down, reconnect and look again.
func TestListenerReplacesHalfOpenConnection(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	p := newFreezingProxy(t, dbURL)
	l := postgres.NewListener(p.url, slog.New(slog.DiscardHandler), nil)
	l.PingInterval, l.PingTimeout = 200*time.Millisecond, 300*time.Millisecond
	queues := make(chan string, 16)
	l.OnQueue = func(ns, queue string) { queues <- ns + "/" + queue }
	connects := runListener(t, l)
	receiveWithin(t, connects, 10*time.Second, "first connect")

	p.freeze()
	waitUntil(t, 5*time.Second, "the listener to report the frozen connection down", func() bool { return l.Ready() != nil })
	receiveWithin(t, connects, 10*time.Second, "reconnect after the frozen connection")
	waitUntil(t, 5*time.Second, "the listener to be up again", func() bool { return l.Ready() == nil })

	// The new connection delivers notifications.
	if _, err := pool.Exec(context.Background(), "SELECT pg_notify($1, 'q:default/after')", postgres.Channel); err != nil {
		t.Fatal(err)
	}
	select {
	case q := <-queues:
		if q != "default/after" {
			t.Fatalf("notified queue %q, want default/after", q)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification on the new connection")
	}
}

// TestListenerWakesWatchersWhenStopped: a wait for a run ends when the
// listener stops (at shutdown), and one that starts afterwards ends at once.
func TestListenerWakesWatchersWhenStopped(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewPool(t)
	l := postgres.NewListener(dbURL, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	waitUntil(t, 10*time.Second, "the listener to be up", func() bool { return l.Ready() == nil })
	before, stop := l.WatchRun("r1")
	defer stop()
	select {
	case <-before:
		t.Fatal("the watch ended while the listener runs and nothing happened to the run")
	default:
	}
	cancel()
	receiveWithin(t, before, 2*time.Second, "end of the watch when the listener stopped")
	receiveWithin(t, done, 2*time.Second, "return of Run")
	after, stop2 := l.WatchRun("r2")
	defer stop2()
	receiveWithin(t, after, time.Second, "end of a watch started after the listener stopped")
}

// freezingProxy forwards TCP connections to the database and can freeze
// them: bytes are then swallowed in both directions and the connections
// stay open, as with a peer that vanished without closing.
type freezingProxy struct {
	url string
	mu  sync.Mutex
	all []*atomic.Bool // one per proxied connection
}

func newFreezingProxy(t *testing.T, dbURL string) *freezingProxy {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	u.Host = ln.Addr().String()
	p := &freezingProxy{url: u.String()}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, client, server)
			connsMu.Unlock()
			frozen := &atomic.Bool{}
			p.mu.Lock()
			p.all = append(p.all, frozen)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 && !frozen.Load() {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						if err != io.EOF {
							return
						}
						if !frozen.Load() {
							dst.Close()
						}
						return
					}
				}
			}
			wg.Add(2)
			go pipe(server, client)
			go pipe(client, server)
		}
	}()
	return p
}

// freeze freezes every connection proxied so far; later ones flow.
func (p *freezingProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.all {
		f.Store(true)
	}
}
