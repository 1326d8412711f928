package postgres

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Listener holds the process's one LISTEN connection, on Channel, whatever
// the number of waiters and queues. It reconnects with backoff, and after
// every reconnect it tells its subscribers, because notifications sent while
// it was away are lost and whoever relies on them must look again: it calls
// OnReconnect and wakes every run watcher.
type Listener struct {
	url    string
	logger *slog.Logger

	// OnQueue is called, on the listener's goroutine, when work may have
	// become claimable on a queue. It must not block.
	OnQueue func(namespace, queue string)
	// OnFinished is called, on the listener's goroutine, when a run of a
	// queue became terminal. It must not block.
	OnFinished func(namespace, queue string)
	// OnReconnect is called after each reconnect that follows a lost connection.
	OnReconnect func()

	connected     atomic.Bool
	reconnects    prometheus.Counter
	notifications prometheus.Counter

	mu       sync.Mutex
	watchers map[string]map[*runWatch]struct{}
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

// Run listens until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
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
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, err
	}
	l.connected.Store(true)
	defer l.connected.Store(false)
	l.logger.Debug("listening", "channel", Channel)
	if !first {
		l.reconnects.Inc()
		if l.OnReconnect != nil {
			l.OnReconnect()
		}
	}
	// Watchers of runs may have missed their notification too.
	l.wakeAllRuns()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		l.notifications.Inc()
		l.dispatch(n.Payload)
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
	}
}

// WatchRun returns a channel that is closed when runID may have become
// terminal (or notifications may have been missed), and a function that
// stops watching.
func (l *Listener) WatchRun(runID string) (<-chan struct{}, func()) {
	w := &runWatch{ch: make(chan struct{})}
	l.mu.Lock()
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
