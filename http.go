package kagzi

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kagzi/kagzi/api"
	"github.com/kagzi/kagzi/domain"
)

// DefaultTimeouts are the limits on slow clients when Config leaves them
// zero.
var DefaultTimeouts = api.Timeouts{
	ReadHeader: 10 * time.Second,
	ReadBody:   30 * time.Second,
	Idle:       2 * time.Minute,
	Write:      30 * time.Second,
}

// HTTPServer returns the http.Server that serves s's API, as the binary
// runs it, with the timeouts of s's Config: a header or a body that stalls,
// an idle keep-alive connection and an answer the client does not read are
// cut off. Long polls are unaffected: the body deadline ends when the body
// has been read, and the write deadline starts with the answer. Requests'
// contexts derive from ctx but do not end with it: at shutdown, Run ends
// the long polls and http.Server.Shutdown lets their answers out.
func (s *Server) HTTPServer(ctx context.Context, addr string) *http.Server {
	t := s.cfg.Timeouts
	return &http.Server{
		Addr:              addr,
		Handler:           withDeadlines(s.API, t),
		ReadHeaderTimeout: t.ReadHeader,
		IdleTimeout:       t.Idle,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// withTimeoutDefaults fills the zero fields of t.
func withTimeoutDefaults(t api.Timeouts) api.Timeouts {
	d := DefaultTimeouts
	return api.Timeouts{
		ReadHeader: cmp.Or(t.ReadHeader, d.ReadHeader),
		ReadBody:   cmp.Or(t.ReadBody, d.ReadBody),
		Idle:       cmp.Or(t.Idle, d.Idle),
		Write:      cmp.Or(t.Write, d.Write),
	}
}

// withDeadlines sets the connection's deadlines around each request: the
// body must arrive within t.ReadBody of the handler starting (then the
// deadline is lifted, so that a long poll can wait), and the answer must be
// taken within t.Write of its first byte.
func withDeadlines(h http.Handler, t api.Timeouts) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// The previous answer's deadline on this connection no longer applies.
		_ = rc.SetWriteDeadline(time.Time{})
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(t.ReadBody))
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, timeout: t.ReadBody}
		}
		h.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: rc, timeout: t.Write}, r)
	})
}

// deadlineBody lifts the read deadline once the body has been read whole,
// and turns a body that stalled into a client error.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	done    bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var netErr net.Error
	switch {
	case errors.Is(err, io.EOF) && !b.done:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.As(err, &netErr) && netErr.Timeout():
		err = domain.Errorf(domain.CodeInvalidArgument, "the request body did not arrive within %s", b.timeout)
	}
	return n, err
}

// deadlineWriter starts the write deadline with the answer's first byte.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	started bool
}

func (w *deadlineWriter) start() {
	if !w.started {
		w.started = true
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.start()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Serve runs s (Run) and serves hs, from HTTPServer, on ln until ctx ends;
// then it shuts down: waiting claims and run waits answer at once, and
// requests in flight have shutdownTimeout to finish. It returns nil after a
// clean shutdown.
func (s *Server) Serve(ctx context.Context, hs *http.Server, ln net.Listener, shutdownTimeout time.Duration) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Run(gctx) }) // ends long polls at shutdown
	g.Go(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.cfg.Logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	return g.Wait()
}
