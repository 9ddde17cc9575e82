package pki

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// HandshakeTimeout bounds a TLS handshake on a Listener.
const HandshakeTimeout = 10 * time.Second

// maxHandshakes bounds the handshakes a Listener runs at once; past it,
// new connections are closed at once (a flood cannot pile up goroutines).
const maxHandshakes = 64

// Listener serves TLS under p on l for a protocol that has no handshake
// deadline of its own (raft): each connection is handshaken in the
// background within HandshakeTimeout, and Accept returns only connections
// whose peer passed. A peer that stalls or fails never blocks Accept.
func (c *Creds) Listener(l net.Listener, p Policy) net.Listener {
	hl := &handshakeListener{Listener: l, cfg: c.ServerTLS(p), ready: make(chan net.Conn), done: make(chan struct{}), slots: make(chan struct{}, maxHandshakes)}
	go hl.loop()
	return hl
}

type handshakeListener struct {
	net.Listener
	cfg   *tls.Config
	ready chan net.Conn
	slots chan struct{}

	closeOnce sync.Once
	done      chan struct{}
	mu        sync.Mutex
	err       error // why the loop stopped
}

func (l *handshakeListener) loop() {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.Close()
			return
		}
		select {
		case l.slots <- struct{}{}:
		default:
			raw.Close()
			continue
		}
		go l.handshake(raw)
	}
}

func (l *handshakeListener) handshake(raw net.Conn) {
	defer func() { <-l.slots }()
	tc := tls.Server(raw, l.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *handshakeListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}
