package node

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Link describes a network path for WAN emulation (testcluster, `atoll
// dev --wan`): what the sender's bytes go through before the peer sees
// them. Tests on one machine have no real latency (tc netem is not
// available), so a Network can add it in user space.
type Link struct {
	Delay     time.Duration // one way: half the round-trip time
	Jitter    time.Duration // up to this much more, at random (order kept)
	Bandwidth int64         // bytes per second; 0: unlimited
}

func (l Link) shaped() bool { return l.Delay > 0 || l.Jitter > 0 || l.Bandwidth > 0 }

// Shape makes traffic to the peers with these IPs go through link (a zero
// Link removes the shaping). Each side shapes what it sends, so set it on
// both sides for a symmetric path.
func (n *Network) Shape(link Link, ips ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ip := range ips {
		if link.shaped() {
			n.links[ip] = link
		} else {
			delete(n.links, ip)
		}
	}
}

// delayLine delivers a connection's writes after the link's delay, paced
// to its bandwidth, without blocking the writer for the delay (bytes in
// flight, as on a real path) — up to maxInFlight bytes, like a socket's
// send buffer.
type delayLine struct {
	conn net.Conn

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []pending
	inFlight int
	lastDue  time.Time
	err      error // from the underlying conn; returned by later writes
	closing  bool
	done     chan struct{}
}

type pending struct {
	due time.Time
	b   []byte
}

const maxInFlight = 8 << 20

func newDelayLine(c net.Conn) *delayLine {
	d := &delayLine{conn: c, done: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	go d.run()
	return d
}

// write queues p (copied) for delivery at now + the link's delay.
func (d *delayLine) write(p []byte, l Link) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.inFlight+len(p) > maxInFlight && d.inFlight > 0 && d.err == nil && !d.closing {
		d.cond.Wait()
	}
	if d.err != nil {
		return 0, d.err
	}
	if d.closing {
		return 0, net.ErrClosed
	}
	due := time.Now().Add(l.Delay)
	if l.Jitter > 0 {
		due = due.Add(jitter(l))
	}
	if l.Bandwidth > 0 { // the link is busy until the bytes before have gone out
		due = due.Add(time.Duration(int64(len(p)) * int64(time.Second) / l.Bandwidth))
		if busy := d.lastDue.Add(time.Duration(int64(len(p)) * int64(time.Second) / l.Bandwidth)); busy.After(due) {
			due = busy
		}
	}
	if due.Before(d.lastDue) {
		due = d.lastDue // a link does not reorder
	}
	d.lastDue = due
	d.queue = append(d.queue, pending{due: due, b: append([]byte(nil), p...)})
	d.inFlight += len(p)
	d.cond.Broadcast()
	return len(p), nil
}

func (d *delayLine) run() {
	defer close(d.done)
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closing && d.err == nil {
			d.cond.Wait()
		}
		if len(d.queue) == 0 || d.err != nil {
			d.mu.Unlock()
			return
		}
		next := d.queue[0]
		d.mu.Unlock()
		time.Sleep(time.Until(next.due))
		_, err := d.conn.Write(next.b)
		d.mu.Lock()
		d.queue = d.queue[1:]
		d.inFlight -= len(next.b)
		if err != nil {
			d.err = err
		}
		d.cond.Broadcast()
		d.mu.Unlock()
	}
}

// close delivers what is queued (as TCP does after close), then stops.
func (d *delayLine) close() {
	d.mu.Lock()
	d.closing = true
	d.cond.Broadcast()
	d.mu.Unlock()
	<-d.done
}

func jitter(l Link) time.Duration {
	if l.Jitter <= 0 {
		return 0
	}
	return rand.N(l.Jitter)
}
