package node

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestShapedLink: a shaped link delays each direction by its one-way
// delay without holding the writer, keeps the bytes in order, and paces
// them to its bandwidth.
func TestShapedLink(t *testing.T) {
	client, server := NewNetwork("127.0.0.1"), NewNetwork("127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := server.Listener(ln)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }() // echo
		}
	}()
	const delay = 40 * time.Millisecond
	client.Shape(Link{Delay: delay}, "127.0.0.1")
	server.Shape(Link{Delay: delay}, "127.0.0.1")
	c, err := client.DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping := func(p []byte) time.Duration {
		start := time.Now()
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		if held := time.Since(start); held > delay { // NB: generous for loaded CI machines
			t.Fatalf("a write was held %v: the delay must not block the writer", held)
		}
		got := make([]byte, len(p))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("echo: %v", err)
		}
		return time.Since(start)
	}
	if rtt := ping([]byte("ping")); rtt < 2*delay || rtt > 2*delay+time.Second {
		t.Fatalf("round trip %v, want about %v", rtt, 2*delay)
	}
	// Many writes in flight at once: the round trip is paid once, not per write.
	start := time.Now()
	var sent bytes.Buffer
	for i := range 50 {
		p := bytes.Repeat([]byte{byte(i)}, 1000)
		sent.Write(p)
		c.Write(p)
	}
	got := make([]byte, sent.Len())
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("50 pipelined writes came back out of order or short: %v", err)
	}
	if took := time.Since(start); took > 25*delay { // paid per write: 50 × 2·delay = 4 s

		t.Fatalf("50 pipelined writes took %v: each paid the delay", took)
	}

	// Bandwidth: 1 MB at 10 MB/s takes about 100 ms one way.
	client.Shape(Link{Bandwidth: 10e6}, "127.0.0.1")
	server.Shape(Link{}, "127.0.0.1")
	start = time.Now()
	big := make([]byte, 1e6)
	c.Write(big)
	if _, err := io.ReadFull(c, big); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 90*time.Millisecond || took > 2*time.Second {
		t.Fatalf("1 MB over 10 MB/s took %v", took)
	}
}
