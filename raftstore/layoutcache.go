package raftstore

import (
	"slices"
	"sync"
)

// layoutCache keeps the decoded layout: every shard transfer and every
// node handshake consults it (revocation), as do puts (placement, shard
// format) and writes (tenancy), so reading and decoding it from badger
// each time would be the hot path's biggest metadata cost. The FSM
// invalidates it after applying a command that changes the layout, and
// after a restore; a reader that started before an invalidation never
// stores what it read (the generation tells).
type layoutCache struct {
	mu  sync.Mutex
	gen uint64
	l   *Layout
}

func (c *layoutCache) get() (Layout, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.l == nil {
		return Layout{}, c.gen, false
	}
	return c.l.clone(), c.gen, true
}

// put caches l, read at generation gen, unless invalidated since.
func (c *layoutCache) put(gen uint64, l Layout) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.gen {
		l = l.clone()
		c.l = &l
	}
}

func (c *layoutCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.l = nil
}

// clone copies l deeply enough that callers may modify the copy.
func (l Layout) clone() Layout {
	l.Nodes, l.Removed = slices.Clone(l.Nodes), slices.Clone(l.Removed)
	return l
}
