package node

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/raftstore"
	"github.com/hashicorp/memberlist"
)

// Network is a node's view of which peers it can reach. By default every
// peer is reachable; testcluster blocks addresses to cut a region off. A
// blocked peer is unreachable in both directions on every channel — HTTP,
// raft and gossip — including connections that were already open: each
// read and write checks, so pooled connections fail too. A blocked peer
// fails fast (like a refused connection); a blackholed one hangs until the
// caller's deadline (like a firewall that drops packets).
//
// Outgoing connections are bound to the node's own IP, so the peer sees
// (and can filter on) the real source.
type Network struct {
	local string // IP outgoing connections are bound to

	mu      sync.RWMutex
	blocked map[string]linkState // peer IPs
	links   map[string]Link      // peer IPs: WAN emulation (wan.go)
}

type linkState int

const (
	linkUp linkState = iota
	linkRefused
	linkDropped
)

// NewNetwork returns a Network whose outgoing connections come from localIP.
func NewNetwork(localIP string) *Network {
	return &Network{local: localIP, blocked: map[string]linkState{}, links: map[string]Link{}}
}

// errBlocked is what traffic to a blocked peer fails with.
var errBlocked = errors.New("network: peer unreachable (partitioned)")

// Block makes the peers with these IPs unreachable: traffic fails at once.
func (n *Network) Block(ips ...string) { n.set(linkRefused, ips) }

// Blackhole makes traffic to and from these IPs vanish: calls hang until
// their deadline.
func (n *Network) Blackhole(ips ...string) { n.set(linkDropped, ips) }

func (n *Network) set(st linkState, ips []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ip := range ips {
		n.blocked[ip] = st
	}
}

// Heal makes every peer reachable again.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
}

func (n *Network) state(addr string) linkState {
	st, _ := n.peer(addr)
	return st
}

// peer returns whether addr's host is cut off, and the shaping of the
// link to it (wan.go).
func (n *Network) peer(addr string) (linkState, Link) {
	if n == nil {
		return linkUp, Link{}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.blocked[host], n.links[host]
}

// DialContext dials addr from the node's IP unless addr is blocked.
func (n *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch n.state(addr) {
	case linkRefused:
		return nil, &net.OpError{Op: "dial", Net: network, Err: errBlocked}
	case linkDropped:
		<-ctx.Done() // the SYN is never answered
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	}
	d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	if n != nil && n.local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(n.local)}
	}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return n.wrap(c), nil
}

func (n *Network) wrap(c net.Conn) net.Conn {
	if n == nil {
		return c
	}
	return &filteredConn{Conn: c, net: n, closed: make(chan struct{})}
}

// Listener wraps l so that accepted connections from blocked peers fail.
func (n *Network) Listener(l net.Listener) net.Listener {
	if n == nil {
		return l
	}
	return &filteredListener{Listener: l, net: n}
}

type filteredListener struct {
	net.Listener
	net *Network
}

func (l *filteredListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.net.wrap(c), nil
}

type filteredConn struct {
	net.Conn
	net       *Network
	closeOnce sync.Once
	closed    chan struct{}

	mu                sync.Mutex
	readDue, writeDue time.Time
	delay             *delayLine // once the link to the peer is shaped
}

// check fails or stalls an operation on a link in state st. A stalled one
// returns a timeout at its deadline, or an error when the conn is closed.
func (c *filteredConn) check(st linkState, write bool) error {
	switch st {
	case linkRefused:
		c.Close()
		return &net.OpError{Op: "read", Net: "tcp", Err: errBlocked}
	case linkDropped:
		c.mu.Lock()
		due := c.readDue
		if write {
			due = c.writeDue
		}
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !due.IsZero() {
			timeout = time.After(time.Until(due))
		}
		select {
		case <-timeout:
			return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
		case <-c.closed:
			return net.ErrClosed
		}
	}
	return nil
}

func (c *filteredConn) Read(p []byte) (int, error) {
	if err := c.check(c.net.state(c.RemoteAddr().String()), false); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *filteredConn) Write(p []byte) (int, error) {
	st, l := c.net.peer(c.RemoteAddr().String())
	if err := c.check(st, true); err != nil {
		return 0, err
	}
	c.mu.Lock()
	d := c.delay
	if l.shaped() {
		if d == nil {
			d = newDelayLine(c.Conn)
			c.delay = d
		}
		c.mu.Unlock()
		return d.write(p, l)
	}
	c.mu.Unlock()
	if d != nil { // shaped before: keep the order of what is queued
		return d.write(p, Link{})
	}
	return c.Conn.Write(p)
}

func (c *filteredConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	c.mu.Lock()
	d := c.delay
	c.mu.Unlock()
	if d != nil {
		d.close()
	}
	return c.Conn.Close()
}

func (c *filteredConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDue, c.writeDue = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *filteredConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDue = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *filteredConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDue = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// raftLayer is raft's StreamLayer over a filtered listener and dialer.
type raftLayer struct {
	net.Listener
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// RaftStreamLayer listens on bind for raft traffic through n (which may be
// nil: no filter). With creds, raft runs over mutual TLS between nodes
// only: a client certificate, or none, cannot speak raft.
func (n *Network) RaftStreamLayer(bind string, creds *pki.Creds) (raftstore.StreamLayer, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	rl := &raftLayer{Listener: n.Listener(l), dial: n.DialContext}
	if creds != nil {
		rl.Listener, rl.dial = creds.Listener(rl.Listener, pki.NodesOnly), creds.DialTLS(n.DialContext)
	}
	return rl, nil
}

func (l *raftLayer) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.dial(ctx, "tcp", addr)
}

// filteredTransport is memberlist's NetTransport with blocked peers
// dropped. Both sides filter, so a cut is symmetric.
type filteredTransport struct {
	*memberlist.NetTransport
	net *Network
}

func (t *filteredTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *filteredTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	st, l := t.net.peer(a.Addr)
	if st != linkUp {
		return time.Now(), nil // a lost datagram, as on a cut link
	}
	if l.shaped() {
		b = append([]byte(nil), b...)
		time.AfterFunc(l.Delay+jitter(l), func() { t.NetTransport.WriteToAddress(b, a) })
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *filteredTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *filteredTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	switch t.net.state(a.Addr) {
	case linkRefused:
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errBlocked}
	case linkDropped:
		time.Sleep(timeout)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return t.net.wrap(c), nil
}
