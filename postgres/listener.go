package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Listener holds the process's one LISTEN connection, on Channel, whatever
// the number of waiters and queues. It reconnects with backoff, and every
// time it is listening, the first time included, it tells its subscribers,
// because notifications sent before it listened are lost and whoever relies
// on them must look again: it calls OnReconnect and wakes every run watcher.
// A connection that stays silent for PingInterval is checked with a
// statement, so that a half-open one is replaced within seconds rather than
// when TCP keepalive gives up. When Run returns, every run watcher is woken
// and later ones are woken at once: waits end at shutdown.
type Listener struct {
	url    string
	logger *slog.Logger

	// OnQueue is called, on the listener's goroutine, when work may have
	// become claimable on a queue. It must not block.
	OnQueue func(namespace, queue string)
	// OnFinished is called, on the listener's goroutine, when a run of a
	// queue became terminal. It must not block.
	OnFinished func(namespace, queue string)
	// OnKeys is called, on the listener's goroutine, when an API key was
	// created or revoked. It must not block.
	OnKeys func()
	// OnReconnect is called each time the connection is listening: after
	// the first connect and after each reconnect.
	OnReconnect func()
	// PingInterval is how long the connection may stay silent before it is
	// checked; PingTimeout bounds the check. Defaults 15s and 5s. Set them
	// before Run.
	PingInterval, PingTimeout time.Duration

	connected     atomic.Bool
	reconnects    prometheus.Counter
	notifications prometheus.Counter

	mu       sync.Mutex
	watchers map[string]map[*runWatch]struct{}
	stopped  bool // Run has returned: watchers are woken at once
}

// ListenerApplicationName is the application_name of the LISTEN
// connection, so operators (and tests) can find it in pg_stat_activity.
const ListenerApplicationName = "kagzi-listener"

type runWatch struct{ ch chan struct{} }

// NewListener returns a listener for the database at url. It does no I/O
// until Run. reg, when not nil, receives its metrics.
func NewListener(url string, logger *slog.Logger, reg prometheus.Registerer) *Listener {
	l := &Listener{
		url:      url,
		logger:   logger.With("component", "listener"),
		watchers: map[string]map[*runWatch]struct{}{},
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_listener_reconnects_total", Help: "Times the LISTEN connection was re-established after a loss.",
		}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kagzi_notifications_total", Help: "Notifications received on the LISTEN connection.",
		}),
	}
	if reg != nil {
		reg.MustRegister(l.reconnects, l.notifications)
	}
	return l
}

// Ready reports whether the LISTEN connection is up.
func (l *Listener) Ready() error {
	if !l.connected.Load() {
		return errors.New("the LISTEN connection is down")
	}
	return nil
}

// Run listens until ctx ends. When it returns, every run watcher has been
// woken, and later ones are woken at once.
func (l *Listener) Run(ctx context.Context) error {
	defer l.stop()
	backoff := 50 * time.Millisecond
	for first := true; ; first = false {
		wasUp, err := l.listen(ctx, first)
		if ctx.Err() != nil {
			return nil
		}
		if wasUp {
			backoff = 50 * time.Millisecond
		}
		l.logger.Warn("listen connection lost; reconnecting", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff + rand.N(backoff/2+1)):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// listen holds one connection until it fails, and reports whether it got
// as far as listening.
func (l *Listener) listen(ctx context.Context, first bool) (wasUp bool, err error) {
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return false, err
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		// Bounded: the connection may be half-open.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, err
	}
	l.connected.Store(true)
	defer l.connected.Store(false)
	l.logger.Debug("listening", "channel", Channel)
	if !first {
		l.reconnects.Inc()
	}
	// What became claimable before this connection listened was notified to
	// nobody, on the first connect as after a loss: subscribers look again.
	if l.OnReconnect != nil {
		l.OnReconnect()
	}
	// Watchers of runs may have missed their notification too.
	l.wakeAllRuns()
	interval, timeout := cmp.Or(l.PingInterval, 15*time.Second), cmp.Or(l.PingTimeout, 5*time.Second)
	for {
		wctx, cancel := context.WithTimeout(ctx, interval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.notifications.Inc()
			l.dispatch(n.Payload)
		case ctx.Err() != nil || !pgconn.Timeout(err):
			return true, err
		default:
			// Silent for a while: a half-open connection would stay silent
			// for good, so it must answer a statement.
			pctx, cancel := context.WithTimeout(ctx, timeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("the LISTEN connection did not answer a ping within %s: %w", timeout, err)
			}
		}
	}
}

func (l *Listener) dispatch(payload string) {
	kind, rest, _ := strings.Cut(payload, ":")
	switch kind {
	case "q":
		ns, queue, ok := strings.Cut(rest, "/")
		if ok && l.OnQueue != nil {
			l.OnQueue(ns, queue)
		}
	case "f":
		ns, rest, _ := strings.Cut(rest, "/")
		queue, runIDs, ok := strings.Cut(rest, "/")
		if !ok {
			return
		}
		for runID := range strings.SplitSeq(runIDs, ",") {
			l.wakeRun(runID)
		}
		if l.OnFinished != nil {
			l.OnFinished(ns, queue)
		}
	case "k":
		if l.OnKeys != nil {
			l.OnKeys()
		}
	}
}

// WatchRun returns a channel that is closed when runID may have become
// terminal (or notifications may have been missed), and a function that
// stops watching.
func (l *Listener) WatchRun(runID string) (<-chan struct{}, func()) {
	w := &runWatch{ch: make(chan struct{})}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		close(w.ch)
		return w.ch, func() {}
	}
	set := l.watchers[runID]
	if set == nil {
		set = map[*runWatch]struct{}{}
		l.watchers[runID] = set
	}
	set[w] = struct{}{}
	l.mu.Unlock()
	return w.ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if set, ok := l.watchers[runID]; ok {
			delete(set, w)
			if len(set) == 0 {
				delete(l.watchers, runID)
			}
		}
	}
}

func (l *Listener) wakeRun(runID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w := range l.watchers[runID] {
		close(w.ch)
	}
	delete(l.watchers, runID)
}

// stop wakes every run watcher and makes later ones wake at once.
func (l *Listener) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.wakeAllRuns()
}

func (l *Listener) wakeAllRuns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, set := range l.watchers {
		for w := range set {
			close(w.ch)
		}
	}
	clear(l.watchers)
}
