package node

import (
	"io"
	"log/slog"
	"net/http"
	"time"
)

// MaxHeaderBytes bounds a request's header block on every Atoll server
// (S3's SigV4 headers are well under it).
const MaxHeaderBytes = 64 << 10

// NewHTTPServer returns the server every Atoll endpoint runs on (the API,
// and S3 in cmd/atoll and testcluster): bounded headers, a header timeout,
// idle keep-alive connections closed, and a request whose body or response
// makes no progress for idle is cut, so a client that stalls cannot hold a
// connection, an upload slot or a stripe's memory. (Fixed read and write
// timeouts would cut honest multi-GiB transfers.)
func NewHTTPServer(h http.Handler, idle time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           progressDeadlines(h, idle),
		ReadHeaderTimeout: min(idle, 10*time.Second),
		IdleTimeout:       2 * idle,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// progressDeadlines bounds every read of the body and every write of the
// response by idle. The deadline is set around each call and cleared after
// it, so only a client that stalls is cut, never a handler that works long
// between reads or writes.
func progressDeadlines(h http.Handler, idle time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// NB: a shallow copy: net/http inspects its own request's Body after
		// the handler (to discard or refuse an unread body) and must see its
		// own type there.
		r2 := *r
		r2.Body = &progressBody{ReadCloser: r.Body, rc: rc, idle: idle}
		h.ServeHTTP(&progressWriter{ResponseWriter: w, rc: rc, idle: idle}, &r2)
	})
}

type progressBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *progressBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err == nil || err == io.EOF {
		b.rc.SetReadDeadline(time.Time{})
	} // NB: else the deadline stays, so the server's drain of the rest fails too and the connection closes
	return n, err
}

type progressWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (w *progressWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.idle))
	defer w.rc.SetWriteDeadline(time.Time{})
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
